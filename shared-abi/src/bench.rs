//! Benchmark result records: how the guest (kernel or user program, via
//! the kernel) reports a measurement to k42vmm, which keeps them in the
//! run report for the bench tools to analyse.
//!
//! A record carries raw counts (iterations and elapsed nanoseconds), not
//! derived figures: the guest kernel has no floating point, and the host
//! computes rates and ratios.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Longest benchmark name, in bytes.
pub const MAX_BENCH_NAME: usize = 48;

/// Where a measurement ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum BenchMode {
    /// Guest kernel (supervisor) code.
    Supervisor = 1,
    /// Guest user-mode code.
    User = 2,
}

impl BenchMode {
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Supervisor),
            2 => Some(Self::User),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Supervisor => "supervisor",
            Self::User => "user",
        }
    }
}

/// One measurement: `iterations` operations took `elapsed_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BenchRecord {
    /// Benchmark name, NUL-padded UTF-8 (e.g. `platform.spin`).
    pub name: [u8; MAX_BENCH_NAME],
    /// The vCPU it ran on.
    pub cpu: u32,
    /// A [`BenchMode`] value.
    pub mode: u32,
    /// Operations performed.
    pub iterations: u64,
    /// Time they took, in nanoseconds.
    pub elapsed_ns: u64,
}

const _: () = assert!(core::mem::size_of::<BenchRecord>() == 72);

impl BenchRecord {
    /// A record named `name` (truncated to [`MAX_BENCH_NAME`] bytes at a
    /// character boundary).
    pub fn new(name: &str, cpu: u32, mode: BenchMode, iterations: u64, elapsed_ns: u64) -> Self {
        let mut n = [0u8; MAX_BENCH_NAME];
        let mut len = name.len().min(MAX_BENCH_NAME);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        n[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self {
            name: n,
            cpu,
            mode: mode as u32,
            iterations,
            elapsed_ns,
        }
    }

    /// The name, or `None` when it is empty or not UTF-8.
    pub fn name(&self) -> Option<&str> {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(MAX_BENCH_NAME);
        core::str::from_utf8(&self.name[..end])
            .ok()
            .filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_truncate() {
        let r = BenchRecord::new("platform.spin", 3, BenchMode::User, 10, 20);
        assert_eq!(r.name(), Some("platform.spin"));
        let long = "é".repeat(40);
        let r = BenchRecord::new(&long, 0, BenchMode::User, 0, 0);
        assert_eq!(r.name().unwrap().len(), 48);
        assert_eq!(BenchRecord::new("", 0, BenchMode::User, 0, 0).name(), None);
    }
}
