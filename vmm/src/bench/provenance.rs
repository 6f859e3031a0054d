//! Where results come from: the host (CPU model, CPUs, cores, nodes,
//! kernel, KVM), its *host class*, the git revision k42vmm was built from,
//! and the guest image.
//!
//! The host class names the machines whose figures may be compared with
//! each other: `<cpu model>.<online CPUs>cpu.<kvm module>`, lower-case,
//! with runs of other characters turned into `-` and the `(R)`/`(TM)`,
//! `CPU` and `Processor` noise dropped — e.g. `amd-epyc.2cpu.kvm-pvm`.
//! The KVM module is part of it because whether the guest kernel runs
//! natively or emulated changes every figure that enters the kernel.
//! Baselines are kept per host class (`bench/baselines/<class>.json`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use super::results::{GitInfo, GuestInfo, HostInfo};
use crate::topology::HostTopology;

/// The revision this k42vmm was built from (see build.rs).
pub const GIT_REVISION: &str = env!("K42VMM_GIT_REVISION");
/// How build.rs found it: `git`, `env` or `none`.
pub const GIT_REVISION_SOURCE: &str = env!("K42VMM_GIT_REVISION_SOURCE");

/// The host class of a machine with this CPU model, online CPU count and
/// KVM module (see the module documentation).
pub fn host_class(cpu_model: &str, cpus_online: u32, kvm: &str) -> String {
    let mut model = cpu_model.to_string();
    for noise in ["(R)", "(r)", "(TM)", "(tm)"] {
        model = model.replace(noise, " ");
    }
    let words: Vec<&str> = model
        .split_whitespace()
        .filter(|w| !matches!(w.to_ascii_lowercase().as_str(), "cpu" | "processor"))
        .collect();
    format!("{}.{cpus_online}cpu.{}", slug(&words.join(" ")), slug(kvm))
}

/// Lower-case ASCII letters and digits, other runs as one `-`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let t = out.trim_matches('-');
    if t.is_empty() {
        "unknown".into()
    } else {
        t.into()
    }
}

/// `model name` of the first CPU in /proc/cpuinfo.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Logical CPUs this process may run on (its affinity mask): the CPUs
/// `k42vmm run` plans vCPUs onto, and so where overcommit starts.
pub fn cpus_usable() -> u32 {
    crate::topology::pin::current_affinity()
        .map(|cpus| cpus.len() as u32)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        })
}

/// Online CPUs, physical cores (distinct SMT sibling groups) and NUMA
/// nodes from the host topology the placement plan uses; when sysfs
/// cannot be read, the usable CPUs, no core count and one node.
fn cpus_cores_nodes() -> (u32, Option<u32>, u32) {
    match HostTopology::discover(Path::new("/")) {
        Ok(t) => {
            let cores: BTreeSet<u32> = t.cpus.iter().map(|c| c.core).collect();
            (
                t.cpus.len() as u32,
                Some(cores.len() as u32),
                (t.nodes.len() as u32).max(1),
            )
        }
        Err(_) => (cpus_usable(), None, 1),
    }
}

/// Kernel release and version, e.g. `6.18.4 #1 SMP PREEMPT_DYNAMIC`.
fn kernel() -> String {
    let read = |f: &str| {
        std::fs::read_to_string(Path::new("/proc/sys/kernel").join(f))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    };
    format!("{} {}", read("osrelease"), read("version"))
}

/// This host, as far as it can be seen without booting a guest
/// (`supervisor_mode` is filled in from the first boot's report).
pub fn host() -> HostInfo {
    let cpu_model = cpu_model();
    let (cpus_online, cores, nodes) = cpus_cores_nodes();
    let kvm = crate::platform::host_kvm().to_string();
    HostInfo {
        class: host_class(&cpu_model, cpus_online, &kvm),
        cpu_model,
        cpus_online,
        cpus_usable: cpus_usable(),
        cores,
        nodes,
        kernel: kernel(),
        kvm,
        supervisor_mode: None,
    }
}

/// The revision k42vmm was built from, and whether the checkout it was
/// built from now has uncommitted changes to tracked files.
pub fn git() -> GitInfo {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(checkout)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let tree_dirty = (GIT_REVISION_SOURCE == "git"
        && git(&["rev-parse", "HEAD"]).as_deref() == Some(GIT_REVISION))
    .then(|| git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()))
    .flatten();
    GitInfo {
        revision: GIT_REVISION.into(),
        source: GIT_REVISION_SOURCE.into(),
        tree_dirty,
    }
}

/// The guest image: name, modules, ABI version and a hash of the file.
pub fn guest(path: &Path, image: &k42_image::Image) -> std::io::Result<GuestInfo> {
    let bytes = std::fs::read(path)?;
    let hash = Sha256::digest(&bytes);
    Ok(GuestInfo {
        image: path.display().to_string(),
        image_name: image.manifest.name.clone(),
        image_sha256: hash.iter().map(|b| format!("{b:02x}")).collect(),
        abi_version: k42_abi::ABI_VERSION,
        modules: image.modules().map(|m| m.name.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_classes_are_stable_slugs() {
        assert_eq!(
            host_class("AMD EPYC", 2, "kvm_pvm"),
            "amd-epyc.2cpu.kvm-pvm"
        );
        assert_eq!(
            host_class(
                "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
                16,
                "kvm_intel"
            ),
            "intel-xeon-platinum-8375c-2-90ghz.16cpu.kvm-intel"
        );
        assert_eq!(
            host_class("AMD Ryzen 9 7950X 16-Core Processor", 32, "kvm_amd"),
            "amd-ryzen-9-7950x-16-core.32cpu.kvm-amd"
        );
        assert_eq!(host_class("", 1, "unknown"), "unknown.1cpu.unknown");
    }

    #[test]
    fn this_host_is_described() {
        let h = host();
        assert!(h.cpus_online >= 1 && h.cpus_usable >= 1 && h.nodes >= 1);
        assert!(h.cpus_usable <= h.cpus_online);
        assert!(h.cores.is_some_and(|c| c >= 1 && c <= h.cpus_online));
        assert!(
            h.class
                .ends_with(&format!("{}cpu.{}", h.cpus_online, slug(&h.kvm)))
        );
        assert!(!h.kernel.starts_with("unknown"), "{}", h.kernel);
        let g = git();
        assert_eq!(g.revision, GIT_REVISION);
        if g.source == "git" {
            assert_eq!(g.revision.len(), 40, "{}", g.revision);
        }
    }
}
