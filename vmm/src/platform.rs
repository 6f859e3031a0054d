//! What kind of KVM this is, and how fast the guest's supervisor code
//! runs on it compared with the host.
//!
//! On KVM-PVM hosts (module `kvm_pvm`) an ordinary ring-0 guest kernel
//! runs under KVM's instruction emulator while guest user mode runs
//! natively. The guest times the `k42-loops` spin loop at boot and reports
//! it (`PlatformInfo` hypercall); k42vmm times the same function on the
//! host and calls supervisor mode emulated when it is more than
//! [`EMULATED_FACTOR`] times slower.

use std::time::Instant;

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
}

impl PlatformReport {
    /// Combine the guest's calibration (`iterations` in `ns`) with the
    /// host's speed.
    pub fn new(guest: Option<(u64, u64)>, host_ns_per_spin: f64) -> Self {
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
        }
    }

    /// The one stderr line every run prints.
    pub fn summary(&self) -> Option<String> {
        let (mode, per) = (self.supervisor_mode.as_ref()?, self.supervisor_ns_per_spin?);
        Some(format!(
            "guest supervisor mode ran {mode} ({}): {} per spin-loop iteration vs {:.2} ns on the host ({:.0}x)",
            self.host_kvm,
            if per >= 1000.0 {
                format!("{:.2} µs", per / 1000.0)
            } else {
                format!("{per:.2} ns")
            },
            self.host_ns_per_spin,
            per / self.host_ns_per_spin
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let r = PlatformReport::new(Some((100, 300_000)), 0.5);
        assert_eq!(r.supervisor_mode.as_deref(), Some("emulated"));
        assert!(
            r.summary()
                .unwrap()
                .contains("3.00 µs per spin-loop iteration"),
            "{:?}",
            r.summary()
        );
        let r = PlatformReport::new(Some((1000, 550)), 0.5);
        assert_eq!(r.supervisor_mode.as_deref(), Some("native"));
        let r = PlatformReport::new(None, 0.5);
        assert_eq!(r.supervisor_mode, None);
        assert_eq!(r.summary(), None);
    }

    #[test]
    fn host_loop_is_timed() {
        let ns = host_ns_per_spin();
        assert!(ns > 0.0 && ns < 100.0, "{ns} ns per iteration");
    }
}
