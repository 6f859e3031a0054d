//! The nightly history: every run of a host class kept as one row of
//! `bench/history/<class>.csv` (`k42vmm bench history add`), and change
//! points in it found by Apache Otava (`k42vmm bench history analyze`).
//!
//! The CSV has fixed columns ([`FIXED_COLUMNS`]: time, git revision,
//! whether the tree was dirty, k42vmm version, shared-abi version, image
//! SHA-256), then one column per benchmark, series and vCPU count
//! (`platform.spin/user/2vcpu`) holding that point's median throughput
//! (ops/s). A point a run did not measure is an empty cell, so a new
//! benchmark or vCPU count adds a column and leaves older rows readable.
//! Each run's full statistics (median, min, max, samples) go beside it,
//! one JSON object a line, in `<class>.jsonl`.
//!
//! Otava reads CSV but not empty cells, so `analyze` writes one small CSV
//! per column (the runs that measured it) and an Otava configuration
//! naming them, runs `otava analyze --output json`, and maps each change
//! point back to its benchmark, series, vCPU count and revision.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use super::results::Results;
use super::{BenchError, write_atomically};

/// Where `make nightly` keeps the histories, one CSV per host class.
pub const HISTORY_DIR: &str = "bench/history";

/// The columns every history starts with, in this order.
pub const FIXED_COLUMNS: [&str; 6] = [
    "time",
    "revision",
    "tree_dirty",
    "k42vmm_version",
    "abi_version",
    "image_sha256",
];

/// Runs a history needs before Otava's verdict decides the exit status;
/// before that the baseline rule does ([`analyze`]).
pub const DEFAULT_MIN_RUNS: usize = 10;

/// A change point counts as new when its first run after the change is
/// one of the last this many runs.
pub const DEFAULT_RECENT_RUNS: usize = 5;

/// One benchmark, series and vCPU count: a metric column.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Metric {
    pub benchmark: String,
    pub series: String,
    pub vcpus: u32,
}

impl Metric {
    /// The column name: `benchmark/series/Nvcpu`.
    pub fn column(&self) -> String {
        format!("{}/{}/{}vcpu", self.benchmark, self.series, self.vcpus)
    }

    /// Parse a column name made by [`Metric::column`].
    pub fn parse(column: &str) -> Option<Metric> {
        let mut parts = column.split('/');
        let (b, s, n) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || b.is_empty() || s.is_empty() {
            return None;
        }
        let vcpus = n.strip_suffix("vcpu")?.parse().ok().filter(|&v| v > 0)?;
        Some(Metric {
            benchmark: b.into(),
            series: s.into(),
            vcpus,
        })
    }
}

/// A history file in memory: its header and rows, every row as long as
/// the header.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn bad(path: &Path, why: impl Into<String>) -> BenchError {
    BenchError::BadHistory {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// A CSV field as the history writes it: no separators, quotes or line
/// ends (benchmark names, revisions, versions and numbers never need them).
fn check_field(path: &Path, field: &str) -> Result<(), BenchError> {
    if field.contains([',', '"', '\n', '\r']) {
        return Err(bad(
            path,
            format!("the value '{field}' holds a comma, quote or line end"),
        ));
    }
    Ok(())
}

impl History {
    /// An empty history: the fixed columns only.
    pub fn new() -> History {
        History {
            header: FIXED_COLUMNS.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Parse a history's text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<History, BenchError> {
        let mut lines = text.lines().enumerate();
        let Some((_, head)) = lines.next() else {
            return Err(bad(path, "empty file (no header line)"));
        };
        let header: Vec<String> = head.split(',').map(str::to_string).collect();
        if header.len() < FIXED_COLUMNS.len()
            || header[..FIXED_COLUMNS.len()]
                .iter()
                .zip(FIXED_COLUMNS)
                .any(|(a, b)| a != b)
        {
            return Err(bad(
                path,
                format!("bad header: it must start with {}", FIXED_COLUMNS.join(",")),
            ));
        }
        for (i, c) in header.iter().enumerate().skip(FIXED_COLUMNS.len()) {
            if Metric::parse(c).is_none() {
                return Err(bad(
                    path,
                    format!(
                        "bad header: column {} '{c}' is not benchmark/series/Nvcpu",
                        i + 1
                    ),
                ));
            }
            if header[..i].contains(c) {
                return Err(bad(path, format!("bad header: column '{c}' appears twice")));
            }
        }
        let mut rows = Vec::new();
        for (n, line) in lines {
            if line.is_empty() {
                continue;
            }
            let row: Vec<String> = line.split(',').map(str::to_string).collect();
            if row.len() != header.len() {
                return Err(bad(
                    path,
                    format!(
                        "line {}: {} fields, but the header has {}",
                        n + 1,
                        row.len(),
                        header.len()
                    ),
                ));
            }
            if row[0].is_empty() || humantime::parse_rfc3339_weak(&row[0]).is_err() {
                return Err(bad(
                    path,
                    format!("line {}: time '{}' is not an RFC 3339 time", n + 1, row[0]),
                ));
            }
            for (c, cell) in header.iter().zip(&row).skip(FIXED_COLUMNS.len()) {
                if !cell.is_empty() && !cell.parse::<f64>().is_ok_and(|v| v.is_finite() && v >= 0.0)
                {
                    return Err(bad(
                        path,
                        format!(
                            "line {}: column '{c}' holds '{cell}', not a throughput",
                            n + 1
                        ),
                    ));
                }
            }
            rows.push(row);
        }
        Ok(History { header, rows })
    }

    /// Read a history; `None` when the file does not exist.
    pub fn load(path: &Path) -> Result<Option<History>, BenchError> {
        match std::fs::read_to_string(path) {
            Ok(text) => History::parse(path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(bad(path, format!("cannot read it: {e}"))),
        }
    }

    /// The CSV text.
    pub fn to_csv(&self) -> String {
        let mut out = self.header.join(",");
        out.push('\n');
        for r in &self.rows {
            out.push_str(&r.join(","));
            out.push('\n');
        }
        out
    }

    /// The metric columns, by index into the header.
    pub fn metrics(&self) -> impl Iterator<Item = (usize, Metric)> + '_ {
        self.header
            .iter()
            .enumerate()
            .skip(FIXED_COLUMNS.len())
            .filter_map(|(i, c)| Metric::parse(c).map(|m| (i, m)))
    }

    /// Add one run: the fixed fields and a median per metric. Metrics the
    /// history lacks become new columns (sorted, after the existing
    /// ones), empty in older rows; metrics this run lacks are empty in it.
    pub fn append(&mut self, fixed: [String; 6], medians: &[(Metric, f64)]) {
        let mut new: Vec<String> = medians
            .iter()
            .map(|(m, _)| m.column())
            .filter(|c| !self.header.contains(c))
            .collect();
        new.sort();
        new.dedup();
        for c in new {
            self.header.push(c);
            for r in &mut self.rows {
                r.push(String::new());
            }
        }
        let mut row = vec![String::new(); self.header.len()];
        for (i, f) in fixed.into_iter().enumerate() {
            row[i] = f;
        }
        for (m, v) in medians {
            let i = self
                .header
                .iter()
                .position(|c| *c == m.column())
                .expect("every metric has a column now");
            row[i] = format!("{v}");
        }
        self.rows.push(row);
    }
}

/// One run's statistics, a line of `<class>.jsonl`.
#[derive(Serialize)]
struct RunStats<'a> {
    time: &'a str,
    revision: &'a str,
    host_class: &'a str,
    points: Vec<PointStats<'a>>,
}

#[derive(Serialize)]
struct PointStats<'a> {
    benchmark: &'a str,
    series: &'a str,
    vcpus: u32,
    overcommitted: bool,
    median: f64,
    min: f64,
    max: f64,
    samples: usize,
}

/// The history file of a host class in `dir`.
pub fn history_path(dir: &Path, class: &str) -> PathBuf {
    dir.join(format!("{class}.csv"))
}

/// `k42vmm bench history add RESULTS --history DIR`: append RESULTS as a
/// row of DIR/<host class>.csv (and its statistics to .jsonl). A run
/// already there (same start time and revision) is refused.
pub fn add(results: &Path, dir: &Path) -> Result<u8, BenchError> {
    let r = Results::load(results)?;
    let p = &r.provenance;
    let class = &p.host.class;
    let path = history_path(dir, class);
    let mut history = History::load(&path)?.unwrap_or_else(History::new);
    if history
        .rows
        .iter()
        .any(|row| row[0] == p.started && row[1] == p.git.revision)
    {
        return Err(bad(
            &path,
            format!(
                "already holds the run of {} at revision {} ({})",
                p.started,
                p.git.revision,
                results.display()
            ),
        ));
    }
    let fixed = [
        p.started.clone(),
        p.git.revision.clone(),
        match p.git.tree_dirty {
            Some(true) => "dirty".into(),
            Some(false) => "clean".into(),
            None => "unknown".into(),
        },
        p.k42vmm_version.clone(),
        p.guest.abi_version.to_string(),
        p.guest.image_sha256.clone(),
    ];
    for f in &fixed {
        check_field(&path, f)?;
    }
    let mut medians = Vec::new();
    let mut stats = Vec::new();
    for (b, s, pt) in r.points() {
        let m = Metric {
            benchmark: b.name.clone(),
            series: s.label.clone(),
            vcpus: pt.vcpus,
        };
        check_field(&path, &m.column())?;
        if m.benchmark.contains('/') || m.series.contains('/') {
            return Err(bad(
                &path,
                format!(
                    "{}: a benchmark or series name holds '/'",
                    results.display()
                ),
            ));
        }
        if pt.median.is_finite() {
            medians.push((m, pt.median));
        }
        stats.push(PointStats {
            benchmark: &b.name,
            series: &s.label,
            vcpus: pt.vcpus,
            overcommitted: pt.overcommitted,
            median: pt.median,
            min: pt.min,
            max: pt.max,
            samples: pt.samples.len(),
        });
    }
    if medians.is_empty() {
        return Err(BenchError::Malformed {
            path: results.to_path_buf(),
            why: "no point has a median".into(),
        });
    }
    history.append(fixed, &medians);
    std::fs::create_dir_all(dir).map_err(|e| BenchError::Write(dir.to_path_buf(), e))?;
    let jsonl = path.with_extension("jsonl");
    let mut lines = match std::fs::read_to_string(&jsonl) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(bad(&jsonl, format!("cannot read it: {e}"))),
    };
    if !lines.is_empty() && !lines.ends_with('\n') {
        lines.push('\n');
    }
    lines.push_str(
        &serde_json::to_string(&RunStats {
            time: &p.started,
            revision: &p.git.revision,
            host_class: class,
            points: stats,
        })
        .expect("statistics always serialise"),
    );
    lines.push('\n');
    write_atomically(&jsonl, &lines)?;
    write_atomically(&path, &history.to_csv())?;
    println!(
        "added the run of {} (revision {}) to {}: {} runs, {} metrics",
        p.started,
        p.git.revision,
        path.display(),
        history.rows.len(),
        history.header.len() - FIXED_COLUMNS.len()
    );
    Ok(0)
}

/// A change point Otava found, mapped back to the history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChangePoint {
    pub metric: String,
    /// The first run after the change: its index in the history's rows,
    /// time and revision.
    pub row: usize,
    pub time: String,
    pub revision: String,
    pub mean_before: f64,
    pub mean_after: f64,
    /// Otava's p-value: the chance that the change is a coincidence.
    pub pvalue: f64,
    /// Throughput fell.
    pub regression: bool,
    /// Among the last `recent` runs.
    pub new: bool,
}

/// What `analyze` was asked to do.
#[derive(Clone, Debug)]
pub struct AnalyzeOptions {
    pub history: PathBuf,
    /// The `otava` executable.
    pub otava: PathBuf,
    /// Append the change points to this report (created if missing).
    pub report: Option<PathBuf>,
    pub min_runs: usize,
    pub recent: usize,
    /// The baseline rule found a regression in the newest run.
    pub baseline_regressed: bool,
}

/// Run Otava on every metric of `history` (one CSV per metric in `work`).
pub fn otava_change_points(
    history: &History,
    otava: &Path,
    work: &Path,
    recent: usize,
) -> Result<Vec<ChangePoint>, BenchError> {
    std::fs::create_dir_all(work).map_err(|e| BenchError::Write(work.to_path_buf(), e))?;
    let mut config = String::from("tests:\n");
    let mut tests: Vec<(String, String, Vec<usize>)> = Vec::new();
    for (col, m) in history.metrics() {
        let rows: Vec<usize> = (0..history.rows.len())
            .filter(|&r| !history.rows[r][col].is_empty())
            .collect();
        if rows.len() < 2 {
            continue;
        }
        let name = format!("m{col}");
        let file = work.join(format!("{name}.csv"));
        let mut csv = String::from("time,revision,throughput\n");
        for &r in &rows {
            let row = &history.rows[r];
            csv.push_str(&format!("{},{},{}\n", row[0], row[1], row[col]));
        }
        write_atomically(&file, &csv)?;
        // JSON strings are YAML strings: no quoting rules to get wrong.
        config.push_str(&format!(
            "  {name}:\n    type: csv\n    file: {}\n    time_column: time\n    attributes: [revision]\n    metrics:\n      throughput:\n        column: throughput\n        direction: 1\n",
            serde_json::to_string(&file.display().to_string()).expect("a string serialises"),
        ));
        tests.push((name, m.column(), rows));
    }
    if tests.is_empty() {
        return Ok(Vec::new());
    }
    let config_path = work.join("otava.yaml");
    write_atomically(&config_path, &config)?;
    let out = Command::new(otava)
        .arg("analyze")
        .arg("--config-file")
        .arg(&config_path)
        .args(["--output", "json"])
        .args(tests.iter().map(|t| &t.0))
        .output()
        .map_err(|e| BenchError::Host(format!("cannot run {}: {e}", otava.display())))?;
    if !out.status.success() {
        return Err(BenchError::Host(format!(
            "{} analyze failed ({}): {}",
            otava.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let otava_bad = |why: String| {
        BenchError::Host(format!(
            "{} analyze: unexpected output ({why}): {}",
            otava.display(),
            stdout.trim()
        ))
    };
    let mut found = Vec::new();
    let mut answered = 0;
    for line in stdout.lines().filter(|l| l.trim_start().starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| otava_bad(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| otava_bad("not an object".into()))?;
        for (test, groups) in obj {
            let (_, column, rows) = tests
                .iter()
                .find(|t| t.0 == *test)
                .ok_or_else(|| otava_bad(format!("unknown test {test}")))?;
            answered += 1;
            for group in groups.as_array().into_iter().flatten() {
                for c in group["changes"].as_array().into_iter().flatten() {
                    let num = |k: &str| -> Result<f64, BenchError> {
                        let x = &c[k];
                        x.as_f64()
                            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
                            .ok_or_else(|| otava_bad(format!("no number {k}")))
                    };
                    let index = c["index"]
                        .as_u64()
                        .ok_or_else(|| otava_bad("no index".into()))?
                        as usize;
                    let &row = rows
                        .get(index)
                        .ok_or_else(|| otava_bad(format!("index {index} out of range")))?;
                    let (before, after) = (num("mean_before")?, num("mean_after")?);
                    found.push(ChangePoint {
                        metric: column.clone(),
                        row,
                        time: history.rows[row][0].clone(),
                        revision: history.rows[row][1].clone(),
                        mean_before: before,
                        mean_after: after,
                        pvalue: num("pvalue")?,
                        regression: after < before,
                        new: row + recent >= history.rows.len(),
                    });
                }
            }
        }
    }
    if answered != tests.len() {
        return Err(otava_bad(format!(
            "{answered} of {} metrics answered",
            tests.len()
        )));
    }
    found.sort_by(|a, b| a.row.cmp(&b.row).then(a.metric.cmp(&b.metric)));
    Ok(found)
}

/// "1 run", "2 runs".
fn runs_text(n: usize) -> String {
    if n == 1 {
        "1 run".into()
    } else {
        format!("{n} runs")
    }
}

/// The change points as a markdown section.
pub fn markdown(history: &Path, runs: usize, points: &[ChangePoint], verdict: &str) -> String {
    let mut s = format!(
        "\n## Change points (Apache Otava)\n\nHistory: `{}`, {}.\n\n",
        history.display(),
        runs_text(runs)
    );
    if points.is_empty() {
        s.push_str("Otava found no change point.\n");
    } else {
        s.push_str("| benchmark/series/vCPUs | first run after | revision | before | after | change | p-value | kind |\n|---|---|---|---|---|---|---|---|\n");
        for c in points {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:+.1}% | {:.4} | {}{} |\n",
                c.metric,
                c.time,
                c.revision.chars().take(12).collect::<String>(),
                super::plot::si(c.mean_before),
                super::plot::si(c.mean_after),
                (c.mean_after / c.mean_before - 1.0) * 100.0,
                c.pvalue,
                if c.regression {
                    "regression"
                } else {
                    "improvement"
                },
                if c.new { ", new" } else { "" }
            ));
        }
    }
    s.push_str(&format!("\nVerdict: {verdict}\n"));
    s
}

/// `k42vmm bench history analyze HISTORY`: Otava's change points, printed
/// and appended to the report. Exit 1 when the history has at least
/// `min_runs` runs and a new change point is a regression, or when it
/// has fewer and the baseline rule found a regression; else 0.
pub fn analyze(opts: &AnalyzeOptions) -> Result<u8, BenchError> {
    if opts.min_runs < 2 {
        return Err(BenchError::BadOption {
            option: "--min-runs",
            value: opts.min_runs.to_string(),
            why: "Otava needs at least 2 runs".into(),
        });
    }
    if opts.recent == 0 {
        return Err(BenchError::BadOption {
            option: "--recent",
            value: "0".into(),
            why: "give at least 1 run".into(),
        });
    }
    let history = History::load(&opts.history)?
        .ok_or_else(|| BenchError::NoSuchFile(opts.history.clone()))?;
    if !opts.otava.exists() {
        return Err(BenchError::BadOption {
            option: "--otava",
            value: opts.otava.display().to_string(),
            why: "no such file (make nightly installs Otava into target/otava)".into(),
        });
    }
    let work = std::env::temp_dir().join(format!("k42vmm-otava-{}", std::process::id()));
    let found = otava_change_points(&history, &opts.otava, &work, opts.recent);
    let _ = std::fs::remove_dir_all(&work);
    let found = found?;
    let runs = history.rows.len();
    let new_regressions: Vec<&ChangePoint> =
        found.iter().filter(|c| c.new && c.regression).collect();
    let (code, verdict) = if runs >= opts.min_runs {
        if new_regressions.is_empty() {
            (
                0,
                format!(
                    "no new regressing change point in the last {} runs (Otava decides from {} runs)",
                    opts.recent, opts.min_runs
                ),
            )
        } else {
            (
                1,
                format!(
                    "REGRESSION: new change point{} in {}",
                    if new_regressions.len() == 1 { "" } else { "s" },
                    new_regressions
                        .iter()
                        .map(|c| format!("{} at {}", c.metric, c.revision))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        }
    } else if opts.baseline_regressed {
        (
            1,
            format!(
                "REGRESSION by the baseline rule ({} in the history: Otava decides from {})",
                runs_text(runs),
                opts.min_runs
            ),
        )
    } else {
        (
            0,
            format!(
                "no regression by the baseline rule ({} in the history: Otava decides from {})",
                runs_text(runs),
                opts.min_runs
            ),
        )
    };
    let section = markdown(&opts.history, runs, &found, &verdict);
    print!("{section}");
    if let Some(report) = &opts.report {
        let mut text = match std::fs::read_to_string(report) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(BenchError::Write(report.clone(), e)),
        };
        text.push_str(&section);
        write_atomically(report, &text)?;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(b: &str, n: u32) -> Metric {
        Metric {
            benchmark: b.into(),
            series: "user".into(),
            vcpus: n,
        }
    }

    fn fixed(t: &str) -> [String; 6] {
        [t, "abc", "clean", "0.1.0", "13", "00"].map(String::from)
    }

    #[test]
    fn metric_columns_round_trip() {
        let x = m("platform.spin", 2);
        assert_eq!(x.column(), "platform.spin/user/2vcpu");
        assert_eq!(Metric::parse(&x.column()), Some(x));
        for bad in ["a/b", "a/b/2", "a/b/0vcpu", "a//2vcpu", "a/b/2vcpu/x"] {
            assert_eq!(Metric::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_new_column_keeps_old_rows_readable() {
        let mut h = History::new();
        h.append(fixed("2026-01-01T00:00:00Z"), &[(m("a", 1), 10.0)]);
        h.append(
            fixed("2026-01-02T00:00:00Z"),
            &[(m("a", 1), 11.0), (m("a", 2), 20.0)],
        );
        let text = h.to_csv();
        let back = History::parse(Path::new("h.csv"), &text).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.rows[0][7], "", "{text}");
        assert_eq!(back.rows[1][7], "20", "{text}");
    }

    #[test]
    fn bad_histories_are_refused_naming_the_problem() {
        let p = Path::new("h.csv");
        let head = FIXED_COLUMNS.join(",");
        for (text, needle) in [
            ("".to_string(), "empty file"),
            ("when,revision\n".to_string(), "bad header"),
            (format!("{head},nonsense\n"), "not benchmark/series/Nvcpu"),
            (format!("{head},a/u/1vcpu,a/u/1vcpu\n"), "appears twice"),
            (format!("{head},a/u/1vcpu\nx,1\n"), "2 fields"),
            (
                format!("{head},a/u/1vcpu\nyesterday,r,clean,0,13,00,1\n"),
                "not an RFC 3339 time",
            ),
            (
                format!("{head},a/u/1vcpu\n2026-01-01T00:00:00Z,r,clean,0,13,00,fast\n"),
                "not a throughput",
            ),
        ] {
            let e = History::parse(p, &text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
