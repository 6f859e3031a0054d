//! Benchmarks on the host side: `k42vmm bench`, which sweeps the guest's
//! benchmarks over vCPU counts, keeps the results with their provenance,
//! plots the scaling curves and compares them with a baseline; and the
//! helpers the older drivers (`k42vmm-bench-boot`, `k42vmm-bench-platform`)
//! share: medians, running k42vmm to collect a report.
//!
//! ```text
//! command   the `k42vmm bench` subcommands, start to exit code
//!  ├─ catalog     benchmarks and suites, as data
//!  ├─ sweep       vCPU counts, boot order, one child `k42vmm run` per boot, progress
//!  ├─ results     results.json: schema, provenance, throughput and efficiency rules
//!  ├─ provenance  host, host class, git revision, guest image
//!  ├─ compare     the regression rule and the comparison with a baseline
//!  ├─ plot        DIR/<bench>.svg
//!  ├─ summary     the terminal table and DIR/report.md
//!  ├─ history     bench/history/<class>.csv, change points by Apache Otava
//!  ├─ export      Bencher Metric Format, github-action-benchmark JSON
//!  └─ linux       --suite linux: the personality vs host Linux, same binary
//! ```
//!
//! Exit codes of `k42vmm bench`: 0 done (improvements included), 1 a
//! regression against the baseline or a boot or host failure, 2 bad
//! command line or input.

pub mod catalog;
pub mod command;
pub mod compare;
pub mod driver;
pub mod export;
pub mod history;
pub mod linux;
pub mod linux_compare;
pub mod plot;
pub mod provenance;
pub mod results;
pub mod summary;
pub mod sweep;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::report::Report;

/// Why `k42vmm bench` stopped. Every message names the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("unknown benchmark '{0}' (k42vmm bench list shows them)")]
    UnknownBenchmark(String),
    #[error("unknown suite '{0}' (known: {1})")]
    UnknownSuite(String, String),
    #[error("benchmark '{0}' is named twice")]
    DuplicateBenchmark(String),
    #[error("--suite {0} and --bench: give one or the other")]
    SuiteAndBenchmarks(String),
    #[error("{option} {value}: {why}")]
    BadOption {
        option: &'static str,
        value: String,
        why: String,
    },
    #[error(
        "--vcpus: {vcpus} is more than the {host_cpus} usable host CPUs; pass --allow-overcommit to measure overcommitted points"
    )]
    Overcommit { vcpus: u32, host_cpus: u32 },
    #[error("{0}: no such file")]
    NoSuchFile(PathBuf),
    #[error("{path}: not a k42vmm bench results file: {why}")]
    Malformed { path: PathBuf, why: String },
    #[error(
        "{path}: results schema version {found}, but this k42vmm reads version {want}: re-run k42vmm bench with this k42vmm (and accept a new baseline)"
    )]
    SchemaMismatch {
        path: PathBuf,
        found: u64,
        want: u32,
    },
    #[error("{path}: not a k42vmm bench history: {why}")]
    BadHistory { path: PathBuf, why: String },
    #[error("--quick: only --suite linux has a quick mode")]
    QuickWithoutLinux,
    #[error("{0}: the image has no module {1} (rebuild it with make image)")]
    ImageLacks(PathBuf, String),
    #[error(transparent)]
    Image(#[from] k42_image::ImageError),
    #[error("--out {0}: {1}")]
    OutDir(PathBuf, String),
    #[error("{what}: k42vmm run failed ({status}): {detail}")]
    RunFailed {
        what: String,
        status: String,
        detail: String,
    },
    #[error("{what}: {why}")]
    BadRecords { what: String, why: String },
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("{0}")]
    Host(String),
}

impl BenchError {
    /// Exit status for this error: 2 when the user's input is at fault.
    pub fn exit_code(&self) -> u8 {
        match self {
            BenchError::UnknownBenchmark(_)
            | BenchError::UnknownSuite(..)
            | BenchError::DuplicateBenchmark(_)
            | BenchError::SuiteAndBenchmarks(_)
            | BenchError::BadOption { .. }
            | BenchError::Overcommit { .. }
            | BenchError::NoSuchFile(_)
            | BenchError::Malformed { .. }
            | BenchError::SchemaMismatch { .. }
            | BenchError::BadHistory { .. }
            | BenchError::Image(_)
            | BenchError::ImageLacks(..)
            | BenchError::QuickWithoutLinux
            | BenchError::OutDir(..) => 2,
            BenchError::RunFailed { .. }
            | BenchError::BadRecords { .. }
            | BenchError::Write(..)
            | BenchError::Host(_) => 1,
        }
    }
}

/// Write `text` to `path` atomically (temporary file, rename).
pub fn write_atomically(path: &Path, text: &str) -> Result<(), BenchError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            BenchError::Write(path.to_path_buf(), e)
        })
}

/// Median of `v` (which it sorts); NaN for an empty slice.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Run `k42vmm run ARGS... IMAGE` with a report and return the report;
/// an error names the command and its stderr when the run failed.
pub fn run_for_report(k42vmm: &Path, args: &[&str], image: &Path) -> Result<Report, String> {
    let dir = std::env::temp_dir().join(format!("k42vmm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let report = dir.join("report.json");
    let out = Command::new(k42vmm)
        .arg("run")
        .args(args)
        .arg("--report")
        .arg(&report)
        .arg(image)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{}: {e}", k42vmm.display()))?;
    let text = std::fs::read_to_string(&report);
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(format!(
            "k42vmm run {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = text.map_err(|e| format!("no report: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("bad report: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
