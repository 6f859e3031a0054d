//! The platform findings (issue 3): the PVM probe runs and reports, the
//! run report says how guest supervisor code ran, and the platform
//! benchmark gets results from supervisor mode and from a user program on
//! every vCPU.

mod common;

use common::*;

#[test]
fn pvm_probe_reports_every_finding() {
    let (out, r) = boot(1, &["--cmdline", "test=none probe=pvm"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    for needle in [
        "probe: cpuid 0x40000000:",
        "probe: cpuid 0x40000200:",
        "MSRs in 0x4b564d00-0x4b564d3f and 0x4b564df0-0x4b564dff are readable",
        "probe: supervisor spin loop:",
        "probe: upstream PVM interface (CPUID signature or MSRs):",
    ] {
        assert!(
            text.contains(needle),
            "probe output lacks '{needle}':\n{text}"
        );
    }
    // The probe's verdict and the measured speed agree with the report.
    let mode = r["platform"]["supervisor_mode"].as_str().unwrap();
    let per = r["platform"]["supervisor_ns_per_spin"].as_f64().unwrap();
    let host = r["platform"]["host_ns_per_spin"].as_f64().unwrap();
    assert_eq!(
        mode == "emulated",
        per > k42vmm::platform::EMULATED_FACTOR * host,
        "{}",
        r["platform"]
    );
    if r["platform"]["host_kvm"] == "kvm_pvm" {
        // On KVM-PVM an ordinary ring-0 kernel cannot run natively, and the
        // probe finds no upstream PVM interface that would let it.
        assert_eq!(mode, "emulated");
        assert!(
            text.contains("upstream PVM interface (CPUID signature or MSRs): absent"),
            "{text}"
        );
    }
}

#[test]
fn platform_benchmark_reports_user_and_supervisor_results() {
    let (out, r) = boot(2, &["--cmdline", "test=none bench=platform"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let bench = r["bench"].as_array().unwrap();
    let find = |name: &str, mode: &str, cpu: u64| {
        bench.iter().any(|b| {
            b["name"] == name
                && b["mode"] == mode
                && b["cpu"] == cpu
                && b["iterations"].as_u64() > Some(0)
        })
    };
    for name in [
        "platform.spin",
        "platform.hypercall",
        "platform.timer_irq",
        "platform.page_zero",
    ] {
        assert!(
            find(name, "supervisor", 0),
            "no supervisor {name} result: {bench:?}"
        );
    }
    for cpu in 0..2 {
        for name in ["platform.spin", "platform.syscall"] {
            assert!(
                find(name, "user", cpu),
                "no user {name} result from vCPU {cpu}: {bench:?}"
            );
        }
    }
}
