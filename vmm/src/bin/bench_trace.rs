//! `k42vmm-bench-trace [--image IMAGE] [--samples K] [--vcpus N]`
//!
//! What logging a trace event costs (`make bench-trace`). Boots the image
//! K times at 1 vCPU and K times at N vCPUs (default: the host's CPUs)
//! with `bench=trace`, k42vmm collecting into a scratch `--trace`
//! directory and buffers large enough that nothing is dropped, and prints
//! medians over boots and vCPUs, each next to the empty loop measured in
//! the same run:
//!
//! - user mode (native on KVM-PVM hosts; the figures that matter): an
//!   empty loop (baseline), RDTSC alone, a disabled event (one mask
//!   test), an enabled three-word event; each the median of 16 rounds, so
//!   that rounds in which the host preempted a vCPU do not count;
//! - supervisor mode (emulated on KVM-PVM hosts): the same loops.

use std::path::Path;
use std::process::ExitCode;

use k42vmm::bench::driver::{DriverArgs, fmt_ns};
use k42vmm::bench::{median, run_for_report};
use k42vmm::report::Report;

/// Each vCPU's buffers: 8 sub-buffers of 2 MiB, room for 512 Ki events.
const CMDLINE: &str = "test=none bench=trace trace.subbuf=2M trace.subbufs=8";
const PER_VCPU_MIB: u64 = 16;

fn per_op(reports: &[Report], name: &str, mode: &str) -> Vec<f64> {
    reports
        .iter()
        .flat_map(|r| r.bench.iter())
        .filter(|b| b.name == name && b.mode == mode)
        .map(|b| b.ns_per_op())
        .collect()
}

fn total(reports: &[Report], name: &str, mode: &str) -> u64 {
    reports
        .iter()
        .flat_map(|r| r.bench.iter())
        .filter(|b| b.name == name && b.mode == mode)
        .map(|b| b.iterations)
        .sum()
}

fn boots(k42vmm: &Path, image: &Path, vcpus: u32, samples: usize) -> Result<Vec<Report>, String> {
    let n = vcpus.to_string();
    let memory = format!("{}M", (256 + vcpus as u64 * 2 * PER_VCPU_MIB).max(512));
    let mut reports = Vec::new();
    for i in 0..samples {
        let dir =
            std::env::temp_dir().join(format!("k42vmm-bench-trace-{}-{n}-{i}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let r = run_for_report(
            k42vmm,
            &[
                "--vcpus",
                &n,
                "--memory",
                &memory,
                "--timeout",
                "300s",
                "--trace",
                dir.to_str().ok_or("temporary directory is not UTF-8")?,
                // The buffers hold the whole loop: the collector need not
                // compete with the vCPUs for the host's CPUs meanwhile.
                "--trace-read-interval",
                "100ms",
                "--cmdline",
                CMDLINE,
            ],
            image,
        );
        let _ = std::fs::remove_dir_all(&dir);
        reports.push(r?);
    }
    Ok(reports)
}

fn main() -> ExitCode {
    let args = match DriverArgs::from_env("k42vmm-bench-trace", 5) {
        Ok(a) => a,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let (dir, image, samples, vcpus) = (args.bin_dir, args.image, args.samples, args.vcpus);
    let counts: Vec<u32> = if vcpus == 1 { vec![1] } else { vec![1, vcpus] };
    let mut runs = Vec::new();
    for &n in &counts {
        match boots(&dir.join("k42vmm"), &image, n, samples) {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("k42vmm-bench-trace: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "tracing benchmark: ns per event, medians over {samples} boots and all vCPUs ({} host CPUs)",
        k42vmm::config::host_cpus()
    );
    let mut header = format!("{:<44}", "measurement");
    for n in &counts {
        header.push_str(&format!(
            " {:>14}",
            format!("{n} vCPU{}", if *n == 1 { "" } else { "s" })
        ));
    }
    println!("{header}");
    for mode in ["user", "supervisor"] {
        println!(
            "guest {mode} mode{}",
            if mode == "user" {
                " (native here)"
            } else {
                " (emulated on KVM-PVM)"
            }
        );
        for (label, name) in [
            ("  empty loop iteration (baseline)", "trace.empty_loop"),
            (
                "  RDTSC alone (timed right before the events)",
                "trace.rdtsc",
            ),
            ("  disabled event (mask test)", "trace.disabled"),
            ("  enabled 3-word event", "trace.event3"),
        ] {
            let mut row = format!("{label:<44}");
            let mut any = false;
            for reports in &runs {
                let mut v = per_op(reports, name, mode);
                if v.is_empty() {
                    row.push_str(&format!(" {:>14}", "-"));
                } else {
                    any = true;
                    row.push_str(&format!(" {:>14}", fmt_ns(median(&mut v))));
                }
            }
            if any {
                println!("{row}");
            }
        }
        let mut row = format!("{:<44}", "  events dropped (all boots, all vCPUs)");
        for reports in &runs {
            row.push_str(&format!(" {:>14}", total(reports, "trace.dropped", mode)));
        }
        println!("{row}");
        for reports in &runs {
            if per_op(reports, "trace.event3", mode).is_empty() {
                eprintln!("k42vmm-bench-trace: the guest reported no trace.event3 ({mode}) result");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
