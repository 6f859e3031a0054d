//! What a run is asked to do, and the parsers for the CLI's value syntax
//! (sizes like `512M`).

use std::path::PathBuf;
use std::time::Duration;

use crate::topology::{NumaPolicy, PinPolicy, PlacementRequest};

/// Everything `vm::run` needs to boot one VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Path of the boot image.
    pub image: PathBuf,
    /// Number of vCPUs (1..=k42_abi::MAX_VCPUS); `None`: as the placement
    /// options imply, else one per usable host CPU.
    pub vcpus: Option<u32>,
    /// Guest RAM in bytes; `None`: [`DEFAULT_MEMORY`] (or the sum of a
    /// `--numa` SPEC's sizes).
    pub memory: Option<u64>,
    /// `--pin`; `None`: auto when the vCPUs fit the usable host CPUs.
    pub pin: Option<PinPolicy>,
    /// `--numa`; `None`: auto.
    pub numa: Option<NumaPolicy>,
    /// Touch all guest RAM before boot.
    pub prefault: bool,
    /// Kernel command line; `None` uses the image manifest's default (or,
    /// with a `command`, [`LINUX_CMDLINE`]).
    pub cmdline: Option<String>,
    /// A Linux program and its arguments to run as the guest's only job
    /// (`k42vmm run IMAGE -- COMMAND…`); empty: the image's own job.
    pub command: Vec<String>,
    /// Stop the guest with exit code 124 after this long.
    pub timeout: Option<Duration>,
    /// Write the JSON run report here at exit.
    pub report: Option<PathBuf>,
    /// What to do with the guest's trace.
    pub trace: crate::trace::TraceOptions,
}

/// The kernel command line for a run with a Linux command: no in-kernel
/// tests, and `linux-run` as process 1 (it starts the servers, runs the
/// command from the `linux.argv` module and exits with its status).
pub const LINUX_CMDLINE: &str = "test=none init=linux-run";
/// The boot module holding a run's Linux command: its arguments, each
/// NUL-terminated.
pub const LINUX_ARGV_MODULE: &str = "linux.argv";

impl VmConfig {
    /// The placement part of the configuration.
    pub fn placement(&self) -> PlacementRequest {
        PlacementRequest {
            vcpus: self.vcpus,
            memory: self.memory,
            pin: self.pin.clone(),
            numa: self.numa.clone(),
        }
    }
}

/// Default guest RAM.
pub const DEFAULT_MEMORY: u64 = 512 << 20;

/// Largest guest RAM k42vmm accepts, in GiB (bounded by the boot page
/// tables' room in the boot-data area, and the ABI's limit: every RAM
/// address has a hypercall port value).
pub const MAX_MEMORY_GIB: u64 = k42_abi::layout::MAX_RAM_GIB;

/// Host CPUs this process may use (the benchmarks' default vCPU count;
/// `k42vmm run` counts usable CPUs from the host topology instead).
pub fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Parse a size such as `512M`, `2G`, `65536K` or `1048576` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("'{text}' is not a size (expected a number with an optional K, M or G suffix)")
    })?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "'{text}': unknown size suffix '{suffix}' (use K, M or G)"
            ));
        }
    };
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").unwrap_err().contains("suffix"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(
            parse_size("17179869184G")
                .unwrap_err()
                .contains("too large")
        );
    }
}
