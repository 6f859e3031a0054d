//! `platform-bench`: what guest user mode costs on this host.
//!
//! Arguments (from the kernel): spin iterations, system calls to time,
//! the TSC frequency in kHz. Reports, through the kernel to k42vmm:
//!
//! - `platform.spin`: the `k42-loops` spin loop, the same instructions the
//!   kernel and the host time;
//! - `platform.syscall`: null system-call round trips.
#![no_std]
#![no_main]

use k42_abi::bench::{BenchMode, BenchRecord};
use k42_rt::{Args, bench_record, get_cpu, null, rdtsc};

k42_rt::main!(run);

fn ns(ticks: u64, tsc_khz: u64) -> u64 {
    (ticks as u128 * 1_000_000 / tsc_khz.max(1) as u128) as u64
}

fn run(args: Args) -> u8 {
    let [spins, syscalls, tsc_khz, _] = args.0;
    let cpu = get_cpu();

    let t0 = rdtsc();
    core::hint::black_box(k42_loops::spin(spins));
    let spin_ticks = rdtsc() - t0;

    let t0 = rdtsc();
    for _ in 0..syscalls {
        null();
    }
    let syscall_ticks = rdtsc() - t0;

    for (name, n, ticks) in [
        ("platform.spin", spins, spin_ticks),
        ("platform.syscall", syscalls, syscall_ticks),
    ] {
        if bench_record(&BenchRecord::new(
            name,
            cpu,
            BenchMode::User,
            n,
            ns(ticks, tsc_khz),
        )) != 0
        {
            return 1;
        }
    }
    0
}
