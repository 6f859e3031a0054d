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
    // No Linux program ran: where `syscall` lands is not known.
    assert!(
        r["platform"]["linux_syscall"].is_null(),
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

/// The first Linux system call shows where `syscall` lands, and the
/// report says it: on KVM-PVM in user mode (the personality is entered
/// directly; docs/PLATFORM.md), on VT-x/SVM in the kernel, which
/// reflects it. Either way the program runs.
#[test]
fn the_report_says_where_a_linux_syscall_lands() {
    let (out, r) = boot_command(2, &[], &["/bin/busybox", "sh", "-c", "echo $((6*7))"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stdout(&out).contains("42\n"), "{}", describe(&out));
    let p = &r["platform"];
    let path = p["linux_syscall"].as_str().unwrap_or_else(|| panic!("{p}"));
    match (p["host_kvm"].as_str(), p["supervisor_mode"].as_str()) {
        (Some("kvm_pvm"), _) => {
            assert_eq!(path, "user-mode", "{p}");
            assert!(
                stderr(&out).contains("a Linux syscall stays in user mode"),
                "{}",
                describe(&out)
            );
        }
        (_, Some("native")) => assert_eq!(path, "kernel-reflects", "{p}"),
        _ => assert!(["user-mode", "kernel-reflects"].contains(&path), "{p}"),
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
