//! `platform-bench`: what guest user mode costs on this host.
//!
//! Arguments: spin iterations, system calls to time. Reports, through the
//! kernel to k42vmm:
//!
//! - `platform.spin`: the `k42-loops` spin loop, the same instructions the
//!   kernel and the host time;
//! - `platform.syscall`: null system-call round trips.
#![no_std]
#![no_main]

use k42_abi::bench::{BenchMode, BenchRecord};
use k42_rt::{Start, bench_record, null, rdtsc};

k42_rt::main!(run);

fn run(start: Start) -> u8 {
    let (spins, syscalls, cpu) = (start.arg(0), start.arg(1), start.cpu);

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
            start.ticks_to_ns(ticks),
        )) != 0
        {
            return 1;
        }
    }
    0
}
