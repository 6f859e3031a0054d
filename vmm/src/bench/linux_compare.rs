//! A linux-suite results file against a baseline (`k42vmm bench compare`,
//! `k42vmm bench --suite linux --baseline FILE`).
//!
//! Each benchmark's guest (`k42`) samples are judged by the suite-wide
//! rule ([`judge`]) as operations per second, so a slower guest is a
//! regression only with enough samples, separate ranges and a change
//! beyond the threshold. Host Linux ran beside the guest in both
//! invocations: its change is shown next to the guest's, so that a
//! regression that is really a slower host reads as one (both fall), but
//! it is not judged — it is the yardstick, not the product.

use std::fmt::Write as _;
use std::path::Path;

use super::BenchError;
use super::compare::{MIN_SAMPLES, Verdict, judge};
use super::driver::fmt_ns;
use super::linux::{LINUX_RESULTS_KIND, LINUX_RESULTS_SCHEMA, LinuxResults, LinuxSeries};

/// One benchmark against the baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct LinuxPoint {
    pub benchmark: String,
    pub verdict: Verdict,
    /// Guest medians, ns per operation (baseline, new).
    pub old_ns: Option<f64>,
    pub new_ns: f64,
    /// Host Linux medians, ns per operation (baseline, new).
    pub old_linux_ns: Option<f64>,
    pub new_linux_ns: f64,
}

impl LinuxPoint {
    /// The guest's new speed over the old (above 1: faster).
    pub fn speedup(&self) -> Option<f64> {
        self.old_ns.map(|o| o / self.new_ns)
    }

    /// Host Linux's new speed over the old.
    pub fn linux_speedup(&self) -> Option<f64> {
        self.old_linux_ns.map(|o| o / self.new_linux_ns)
    }
}

/// A linux-suite results file against a baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct LinuxComparison {
    pub baseline: String,
    pub baseline_revision: String,
    pub threshold_pct: f64,
    pub points: Vec<LinuxPoint>,
    /// Benchmarks of the baseline the new results lack.
    pub not_measured: Vec<String>,
}

/// Operations per second of each sample.
fn rates(s: &LinuxSeries) -> Vec<f64> {
    s.samples.iter().map(|l| 1e9 / l.ns_per_op()).collect()
}

/// The series labelled `label`.
fn series<'a>(r: &'a LinuxResults, bench: &str, label: &str) -> Option<&'a LinuxSeries> {
    r.benchmarks
        .iter()
        .find(|b| b.name == bench)?
        .series
        .iter()
        .find(|s| s.label == label)
}

impl LinuxComparison {
    /// Compare `new` with `base` (read from `baseline_path`).
    pub fn new(
        baseline_path: &str,
        base: &LinuxResults,
        new: &LinuxResults,
        threshold_pct: f64,
    ) -> Self {
        let points = new
            .benchmarks
            .iter()
            .filter_map(|b| {
                let k = series(new, &b.name, "k42")?;
                let l = series(new, &b.name, "linux")?;
                let (old_k, old_l) = (series(base, &b.name, "k42"), series(base, &b.name, "linux"));
                let verdict = match old_k {
                    None => Verdict::New,
                    Some(o) => judge(&rates(o), &rates(k), threshold_pct),
                };
                Some(LinuxPoint {
                    benchmark: b.name.clone(),
                    verdict,
                    old_ns: old_k.map(|o| o.median_ns_per_op),
                    new_ns: k.median_ns_per_op,
                    old_linux_ns: old_l.map(|o| o.median_ns_per_op),
                    new_linux_ns: l.median_ns_per_op,
                })
            })
            .collect();
        let not_measured = base
            .benchmarks
            .iter()
            .filter(|b| series(new, &b.name, "k42").is_none())
            .map(|b| b.name.clone())
            .collect();
        Self {
            baseline: baseline_path.into(),
            baseline_revision: base.provenance.git.revision.clone(),
            threshold_pct,
            points,
            not_measured,
        }
    }

    pub fn count(&self, v: Verdict) -> usize {
        self.points.iter().filter(|p| p.verdict == v).count()
    }

    pub fn has_regression(&self) -> bool {
        self.count(Verdict::Regressed) > 0
    }

    /// The benchmarks with verdict `v` and the guest's new/old speed.
    pub fn list(&self, v: Verdict) -> String {
        self.points
            .iter()
            .filter(|p| p.verdict == v)
            .map(|p| format!("{} ({:.3}x)", p.benchmark, p.speedup().unwrap_or(f64::NAN)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line: how many benchmarks regressed, improved, and so on.
    pub fn tally(&self) -> String {
        format!(
            "{} regressed, {} improved, {} unchanged, {} with too few samples, {} new",
            self.count(Verdict::Regressed),
            self.count(Verdict::Improved),
            self.count(Verdict::Unchanged),
            self.count(Verdict::TooFewSamples),
            self.count(Verdict::New)
        )
    }

    /// The comparison as a table (terminal) or markdown (`markdown`).
    pub fn render(&self, markdown: bool) -> String {
        let mut s = String::new();
        let ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.3}x"));
        let ns = |v: Option<f64>| v.map_or("-".to_string(), fmt_ns);
        if markdown {
            let _ = writeln!(
                s,
                "## Against the baseline\n\nBaseline: {} (revision {}); the guest's samples judged as operations per second (at least {MIN_SAMPLES} a side, separate ranges, a median change beyond {}%); host Linux's change shown beside, not judged.\n\n| benchmark | k42 baseline | k42 new | k42 new/old speed | linux new/old speed | verdict |\n|---|---|---|---|---|---|",
                self.baseline, self.baseline_revision, self.threshold_pct
            );
        } else {
            let _ = writeln!(
                s,
                "{:<14} {:>12} {:>12} {:>17} {:>19}  verdict",
                "benchmark", "k42 baseline", "k42 new", "k42 new/old speed", "linux new/old speed"
            );
        }
        for p in &self.points {
            let cells = [
                ns(p.old_ns),
                fmt_ns(p.new_ns),
                ratio(p.speedup()),
                ratio(p.linux_speedup()),
            ];
            if markdown {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    p.benchmark,
                    cells[0],
                    cells[1],
                    cells[2],
                    cells[3],
                    p.verdict.name()
                );
            } else {
                let _ = writeln!(
                    s,
                    "{:<14} {:>12} {:>12} {:>17} {:>19}  {}",
                    p.benchmark,
                    cells[0],
                    cells[1],
                    cells[2],
                    cells[3],
                    p.verdict.name()
                );
            }
        }
        if !self.not_measured.is_empty() {
            let _ = writeln!(
                s,
                "{}not measured now (in the baseline): {}",
                if markdown { "\n" } else { "" },
                self.not_measured.join(", ")
            );
        }
        s
    }

    /// Print the verdict line; the exit status (1 on a regression).
    pub fn conclude(&self, report: &Path) -> u8 {
        if self.count(Verdict::Improved) > 0 {
            println!("improved: {}", self.list(Verdict::Improved));
        }
        if self.has_regression() {
            println!(
                "REGRESSION against {}: {}; report: {}",
                self.baseline,
                self.list(Verdict::Regressed),
                report.display()
            );
            1
        } else {
            println!(
                "no regression against {} ({}); report: {}",
                self.baseline,
                self.tally(),
                report.display()
            );
            0
        }
    }
}

/// Whether the JSON text is a linux-suite results file (by its `kind`).
pub fn is_linux_results(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("kind")?.as_str().map(|k| k == LINUX_RESULTS_KIND))
        .unwrap_or(false)
}

/// Read and check a linux-suite results file.
pub fn load(path: &Path) -> Result<LinuxResults, BenchError> {
    let malformed = |why: String| BenchError::Malformed {
        path: path.to_path_buf(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BenchError::NoSuchFile(path.to_path_buf()),
        _ => malformed(format!("cannot read it: {e}")),
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| malformed(format!("not JSON ({e})")))?;
    if value.get("kind").and_then(|k| k.as_str()) != Some(LINUX_RESULTS_KIND) {
        return Err(malformed(format!(
            "it has no \"kind\": \"{LINUX_RESULTS_KIND}\" field (a linux-suite file is compared only with another)"
        )));
    }
    match value.get("schema").and_then(|s| s.as_u64()) {
        Some(v) if v == u64::from(LINUX_RESULTS_SCHEMA) => {}
        Some(v) => {
            return Err(BenchError::SchemaMismatch {
                path: path.to_path_buf(),
                found: v,
                want: LINUX_RESULTS_SCHEMA,
            });
        }
        None => return Err(malformed("it has no numeric \"schema\" field".into())),
    }
    serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::linux::{LbenchLine, LinuxBenchmark};

    fn line(ns_per_op: f64) -> LbenchLine {
        LbenchLine {
            name: "x".into(),
            iterations: 1000,
            ns: (ns_per_op * 1000.0) as u64,
            start_ns: 0,
            end_ns: 0,
        }
    }

    fn series(label: &str, ns: &[f64]) -> LinuxSeries {
        let mut sorted = ns.to_vec();
        sorted.sort_by(f64::total_cmp);
        LinuxSeries {
            label: label.into(),
            samples: ns.iter().map(|&n| line(n)).collect(),
            median_ns_per_op: sorted[sorted.len() / 2],
            min_ns_per_op: sorted[0],
            max_ns_per_op: sorted[sorted.len() - 1],
        }
    }

    /// Results with `linux.getppid` (guest `k42` ns, host `linux` ns).
    fn results(k42: &[f64], linux: &[f64]) -> LinuxResults {
        let text = include_str!("testdata/linux-results.json");
        let mut r: LinuxResults = serde_json::from_str(text).expect("the sample parses");
        r.benchmarks = vec![LinuxBenchmark {
            name: "linux.getppid".into(),
            description: String::new(),
            op: "getppid".into(),
            unit: "ns/op".into(),
            series: vec![series("k42", k42), series("linux", linux)],
            ratio_k42_over_linux: 1.0,
        }];
        r
    }

    #[test]
    fn a_slower_guest_is_a_regression_and_host_linux_is_shown_not_judged() {
        let base = results(&[100.0, 101.0, 102.0], &[10.0, 10.0, 10.0]);
        let slower = results(&[130.0, 131.0, 132.0], &[10.0, 10.0, 10.0]);
        let c = LinuxComparison::new("b", &base, &slower, 5.0);
        assert_eq!(c.points[0].verdict, Verdict::Regressed);
        assert!(c.has_regression());
        assert!((c.points[0].speedup().unwrap() - 101.0 / 131.0).abs() < 1e-9);
        // Host Linux slower only: the guest is unchanged.
        let host_slower = results(&[100.0, 101.0, 102.0], &[20.0, 20.0, 20.0]);
        let c = LinuxComparison::new("b", &base, &host_slower, 5.0);
        assert_eq!(c.points[0].verdict, Verdict::Unchanged);
        assert!((c.points[0].linux_speedup().unwrap() - 0.5).abs() < 1e-9);
        let faster = results(&[50.0, 51.0, 52.0], &[10.0, 10.0, 10.0]);
        let c = LinuxComparison::new("b", &base, &faster, 5.0);
        assert_eq!(c.points[0].verdict, Verdict::Improved);
        assert!(c.render(true).contains("| linux.getppid |"));
    }

    #[test]
    fn too_few_samples_and_missing_benchmarks_are_said() {
        let base = results(&[100.0, 101.0, 102.0], &[10.0, 10.0, 10.0]);
        let two = results(&[300.0, 301.0], &[10.0, 10.0]);
        let c = LinuxComparison::new("b", &base, &two, 5.0);
        assert_eq!(c.points[0].verdict, Verdict::TooFewSamples);
        let mut none = base.clone();
        none.benchmarks.clear();
        let c = LinuxComparison::new("b", &base, &none, 5.0);
        assert_eq!(c.not_measured, vec!["linux.getppid".to_string()]);
        let c = LinuxComparison::new("b", &none, &base, 5.0);
        assert_eq!(c.points[0].verdict, Verdict::New);
    }

    #[test]
    fn the_kind_tells_the_two_kinds_of_results_apart() {
        assert!(is_linux_results(include_str!(
            "testdata/linux-results.json"
        )));
        assert!(!is_linux_results(r#"{"kind": "k42vmm-bench-results"}"#));
        assert!(!is_linux_results("not json"));
    }
}
