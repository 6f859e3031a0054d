//! What kind of KVM this is, and how fast the guest's supervisor code
//! runs on it compared with the host.
//!
//! On KVM-PVM hosts (module `kvm_pvm`) an ordinary ring-0 guest kernel
//! runs under KVM's instruction emulator while guest user mode runs
//! natively. The guest times the `k42-loops` spin loop at boot and reports
//! it (`PlatformInfo` hypercall); k42vmm times the same function on the
//! host and calls supervisor mode emulated when it is more than
//! [`EMULATED_FACTOR`] times slower. The same hypercall says where a Linux
//! program's `syscall` lands, which the kernel found out by running one
//! (in user mode at the personality's entry, or in ring 0 and reflected).

use std::time::Instant;

use k42_abi::hypercall::LinuxSyscallPath;
use serde::{Deserialize, Serialize};

/// Slowdown above which supervisor mode counts as emulated. Native guest
/// code runs the loop at host speed (a few percent either way); emulation
/// is three orders of magnitude slower, so any factor in between works.
pub const EMULATED_FACTOR: f64 = 20.0;

/// Iterations of the host's timing of the spin loop (well under 1 ms).
const HOST_SPINS: u64 = 200_000;

/// The host's KVM module: `kvm_pvm`, `kvm_intel`, `kvm_amd` or `unknown`.
pub fn host_kvm() -> &'static str {
    ["kvm_pvm", "kvm_intel", "kvm_amd"]
        .into_iter()
        .find(|m| std::path::Path::new("/sys/module").join(m).exists())
        .unwrap_or("unknown")
}

/// Nanoseconds per iteration of the spin loop on this host thread.
pub fn host_ns_per_spin() -> f64 {
    std::hint::black_box(k42_loops::spin(1000));
    let t0 = Instant::now();
    std::hint::black_box(k42_loops::spin(HOST_SPINS));
    t0.elapsed().as_nanos() as f64 / HOST_SPINS as f64
}

/// The report's words for a [`LinuxSyscallPath`].
fn path_name(path: LinuxSyscallPath) -> &'static str {
    match path {
        LinuxSyscallPath::UserMode => "user-mode",
        LinuxSyscallPath::KernelReflects => "kernel-reflects",
    }
}

/// How guest supervisor code ran, in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlatformReport {
    /// The host's KVM module.
    pub host_kvm: String,
    /// "native" or "emulated"; absent if the guest did not report.
    pub supervisor_mode: Option<String>,
    /// Guest supervisor time per spin-loop iteration.
    pub supervisor_ns_per_spin: Option<f64>,
    /// Host time per spin-loop iteration, measured in the same run.
    pub host_ns_per_spin: f64,
    /// Where a Linux program's `syscall` lands, as the kernel found from
    /// the first one: "user-mode" (at IA32_LSTAR still in user mode,
    /// which is then the personality's entry: no kernel entry) or
    /// "kernel-reflects" (in ring 0, where the kernel returns to user mode
    /// at the personality's entry); absent when no Linux program made a
    /// system call.
    pub linux_syscall: Option<String>,
}

impl PlatformReport {
    /// Combine the guest's calibration (`iterations` in `ns`) and the
    /// `syscall` path it found with the host's speed.
    pub fn new(
        guest: Option<(u64, u64)>,
        linux_syscall: Option<LinuxSyscallPath>,
        host_ns_per_spin: f64,
    ) -> Self {
        let per = guest
            .filter(|&(i, _)| i > 0)
            .map(|(i, ns)| ns as f64 / i as f64);
        Self {
            host_kvm: host_kvm().to_string(),
            supervisor_mode: per.map(|p| {
                if p > EMULATED_FACTOR * host_ns_per_spin {
                    "emulated"
                } else {
                    "native"
                }
                .to_string()
            }),
            supervisor_ns_per_spin: per,
            host_ns_per_spin,
            linux_syscall: linux_syscall.map(|p| path_name(p).to_string()),
        }
    }

    /// The one stderr line every run prints.
    pub fn summary(&self) -> Option<String> {
        let (mode, per) = (self.supervisor_mode.as_ref()?, self.supervisor_ns_per_spin?);
        Some(
            format!(
                "guest supervisor mode ran {mode} ({}): {} per spin-loop iteration vs {:.2} ns on the host ({:.0}x)",
                self.host_kvm,
                if per >= 1000.0 {
                    format!("{:.2} µs", per / 1000.0)
                } else {
                    format!("{per:.2} ns")
                },
                self.host_ns_per_spin,
                per / self.host_ns_per_spin
            ) + match self.linux_syscall.as_deref() {
                Some("user-mode") => "; a Linux syscall stays in user mode (no kernel entry)",
                Some("kernel-reflects") => "; a Linux syscall enters the kernel, which reflects it",
                _ => "",
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let r = PlatformReport::new(Some((100, 300_000)), Some(LinuxSyscallPath::UserMode), 0.5);
        assert_eq!(r.supervisor_mode.as_deref(), Some("emulated"));
        assert_eq!(r.linux_syscall.as_deref(), Some("user-mode"));
        let line = r.summary().unwrap();
        assert!(line.contains("3.00 µs per spin-loop iteration"), "{line}");
        assert!(
            line.ends_with("a Linux syscall stays in user mode (no kernel entry)"),
            "{line}"
        );
        let r = PlatformReport::new(
            Some((1000, 550)),
            Some(LinuxSyscallPath::KernelReflects),
            0.5,
        );
        assert_eq!(r.supervisor_mode.as_deref(), Some("native"));
        assert_eq!(r.linux_syscall.as_deref(), Some("kernel-reflects"));
        let r = PlatformReport::new(Some((1000, 550)), None, 0.5);
        assert_eq!(r.linux_syscall, None);
        assert!(!r.summary().unwrap().contains("syscall"));
        let r = PlatformReport::new(None, None, 0.5);
        assert_eq!(r.supervisor_mode, None);
        assert_eq!(r.summary(), None);
    }

    #[test]
    fn host_loop_is_timed() {
        let ns = host_ns_per_spin();
        assert!(ns > 0.0 && ns < 100.0, "{ns} ns per iteration");
    }
}
