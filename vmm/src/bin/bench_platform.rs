//! `k42vmm-bench-platform [--image IMAGE] [--samples K] [--vcpus N]`
//!
//! What this host's virtualisation costs the guest (`make bench-platform`).
//! In one invocation it times the `k42-loops` spin loop in a host thread
//! (the baseline), then boots the image K times with `bench=platform` and
//! prints, as medians over boots (and over vCPUs for user-mode figures):
//!
//! - the same spin loop in guest user mode and guest supervisor mode, with
//!   their ratios to the host;
//! - a k42vmm port-I/O hypercall round trip;
//! - a timer interrupt (arm the TSC deadline, take it, return);
//! - a system call round trip from user mode;
//! - zeroing a 4 KiB page in the kernel.

use std::process::ExitCode;
use std::time::Instant;

use k42vmm::bench::driver::{DriverArgs, fmt_ns};
use k42vmm::bench::{median, run_for_report};
use k42vmm::report::Report;

/// Host spin iterations per timing (the guest's user-mode count).
const HOST_SPINS: u64 = 20_000_000;

fn host_ns_per_spin() -> f64 {
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            std::hint::black_box(k42_loops::spin(HOST_SPINS));
            t0.elapsed().as_nanos() as f64 / HOST_SPINS as f64
        })
        .collect();
    median(&mut v)
}

/// Per-op nanoseconds of every record named `name` in `mode`.
fn per_op(reports: &[Report], name: &str, mode: &str) -> Vec<f64> {
    reports
        .iter()
        .flat_map(|r| r.bench.iter())
        .filter(|b| b.name == name && b.mode == mode)
        .map(|b| b.ns_per_op())
        .collect()
}

fn main() -> ExitCode {
    let args = match DriverArgs::from_env("k42vmm-bench-platform", 3) {
        Ok(a) => a,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let (dir, image, samples, vcpus) = (args.bin_dir, args.image, args.samples, args.vcpus);
    let host = host_ns_per_spin();
    let n = vcpus.to_string();
    let mut reports = Vec::new();
    for _ in 0..samples {
        match run_for_report(
            &dir.join("k42vmm"),
            &[
                "--vcpus",
                &n,
                "--timeout",
                "300s",
                "--cmdline",
                "test=none bench=platform",
            ],
            &image,
        ) {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!("k42vmm-bench-platform: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let p = &reports[0].platform;
    println!(
        "platform benchmark: KVM {}, guest supervisor mode {}, {vcpus} vCPUs, medians of {samples} boots",
        p.host_kvm,
        p.supervisor_mode.as_deref().unwrap_or("unknown")
    );
    println!("{:<46} {:>12} {:>12}", "measurement", "per op", "vs host");
    println!(
        "{:<46} {:>12} {:>11.2}x",
        "spin loop, host thread (baseline)",
        fmt_ns(host),
        1.0
    );
    for (label, name, mode, ratio) in [
        ("spin loop, guest user mode", "platform.spin", "user", true),
        (
            "spin loop, guest supervisor mode",
            "platform.spin",
            "supervisor",
            true,
        ),
        (
            "hypercall round trip (port I/O exit)",
            "platform.hypercall",
            "supervisor",
            false,
        ),
        (
            "timer interrupt (arm, deliver, return)",
            "platform.timer_irq",
            "supervisor",
            false,
        ),
        (
            "system call round trip from user mode",
            "platform.syscall",
            "user",
            false,
        ),
        (
            "zero a 4 KiB page in the kernel",
            "platform.page_zero",
            "supervisor",
            false,
        ),
    ] {
        let mut v = per_op(&reports, name, mode);
        if v.is_empty() {
            eprintln!("k42vmm-bench-platform: the guest reported no {name} ({mode}) result");
            return ExitCode::FAILURE;
        }
        let m = median(&mut v);
        let vs = if ratio {
            format!("{:.2}x", m / host)
        } else {
            "-".into()
        };
        println!("{label:<46} {:>12} {vs:>12}", fmt_ns(m));
    }
    ExitCode::SUCCESS
}
