//! Helpers shared by the benchmark drivers (`k42vmm-bench-boot`,
//! `k42vmm-bench-platform`): medians, and running k42vmm to collect a
//! report.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::report::Report;

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
