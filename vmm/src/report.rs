//! The JSON run report (`k42vmm run --report FILE`), including the
//! placement plan that was applied.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Schema version of [`Report`]; bump on incompatible changes.
pub const REPORT_SCHEMA: u32 = 1;

/// Summary of one run, written at exit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub k42vmm_version: String,
    pub image: String,
    pub image_name: String,
    pub cmdline: String,
    /// k42vmm's exit code.
    pub exit_code: u8,
    /// shutdown, panic, triple-fault, fault, timeout, signal, quit (Ctrl-A
    /// x) or host-error.
    pub exit_reason: String,
    /// The same in words (panic message, fault description).
    pub exit_message: String,
    pub vcpus: u32,
    pub memory_bytes: u64,
    pub host_cpus: u32,
    pub overcommitted: bool,
    pub tsc_khz: Option<u32>,
    /// From process start until vCPU 0 first entered the guest.
    pub ms_to_kernel_entry: Option<f64>,
    /// From process start until the last vCPU reported itself online.
    pub ms_to_all_online: Option<f64>,
    /// From process start until the VM stopped.
    pub ms_to_exit: f64,
    /// Indices of the vCPUs that came online, ascending.
    pub online_vcpus: Vec<u32>,
    pub vcpus_online: u32,
    /// The host's KVM and how guest supervisor code ran on it.
    pub platform: crate::platform::PlatformReport,
    /// In-kernel test results, in the order they were reported.
    pub tests: Vec<TestRecord>,
    /// Benchmark results the guest reported, in order.
    pub bench: Vec<BenchResult>,
    /// Exits to k42vmm per vCPU, by reason.
    pub vcpu_exits: Vec<VcpuExits>,
    /// Each vCPU thread's CPU affinity as it read it back after pinning
    /// (a CPU list), indexed by vCPU.
    pub vcpu_affinity: Vec<String>,
    /// The placement plan applied: vCPU → host CPU → host node → guest
    /// node, memory per guest node and its binding, distances.
    pub placement: crate::topology::Plan,
    /// What the trace collector saw (with `--trace` or `--trace-socket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::collector::TraceReport>,
    /// Console input (forwarded stdin, with `-- COMMAND`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_input: Option<crate::console::ConsoleReport>,
}

/// One in-kernel test result, as reported by the guest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestRecord {
    pub name: String,
    pub passed: bool,
    pub ms: f64,
    pub vcpu: u32,
}

/// One benchmark measurement from the guest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    pub name: String,
    pub cpu: u32,
    /// "supervisor" or "user".
    pub mode: String,
    pub iterations: u64,
    pub elapsed_ns: u64,
}

impl BenchResult {
    /// Nanoseconds per iteration.
    pub fn ns_per_op(&self) -> f64 {
        self.elapsed_ns as f64 / self.iterations.max(1) as f64
    }
}

/// Exit counts of one vCPU.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VcpuExits {
    pub vcpu: u32,
    pub exits: BTreeMap<String, u64>,
}

impl Report {
    /// Write the report as pretty JSON, atomically (temporary file, rename).
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a report always serialises");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}
