//! The nightly history, Apache Otava's change points and the exports,
//! without booting anything: synthetic results files and histories are
//! the inputs.
//!
//! - `k42vmm bench history add` appends rows; a run with a new column
//!   keeps the older rows readable; a run added twice is refused.
//! - `k42vmm bench history analyze` runs the real Otava (`make setup`
//!   installs it into target/otava) on a history with a known step, on one
//!   with noise only, and on a short one, and the verdict becomes the exit
//!   status and a section of the report.
//! - `k42vmm bench export` writes Bencher Metric Format and
//!   github-action-benchmark JSON, checked against their published
//!   schema and format.
//! - Every bad input is one line and exit 2.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use k42vmm::bench::history::{FIXED_COLUMNS, History, Metric};
use k42vmm::bench::results::*;
use serde_json::Value;

/// Otava as `make setup` installs it.
fn otava() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/otava/bin/otava");
    assert!(
        p.is_file(),
        "{} is missing: run `make setup` (or `make test`, which runs it) first",
        p.display()
    );
    p
}

fn bench(args: &[&str]) -> std::process::Output {
    let mut v = vec!["bench"];
    v.extend_from_slice(args);
    run(&v)
}

/// A results document of the platform.spin benchmark, series `user`,
/// with the given samples per vCPU count.
fn results(started: &str, revision: &str, points: &[(u32, &[f64])]) -> Results {
    let b = k42vmm::bench::catalog::benchmark("platform.spin").unwrap();
    let series = SeriesResults {
        label: "user".into(),
        record: "platform.spin".into(),
        mode: "user".into(),
        points: points
            .iter()
            .map(|&(n, ts)| {
                Point::new(
                    n,
                    false,
                    ts.iter()
                        .enumerate()
                        .map(|(i, &t)| Sample {
                            run_report: format!("runs/x-{n}vcpu-s{}.json", i + 1),
                            throughput: t,
                            records: vec![],
                        })
                        .collect(),
                )
            })
            .collect(),
    };
    Results::new(
        Provenance {
            started: started.into(),
            finished: started.into(),
            command_line: vec!["k42vmm".into(), "bench".into()],
            k42vmm_version: "0.1.0".into(),
            git: GitInfo {
                revision: revision.into(),
                source: "git".into(),
                tree_dirty: Some(false),
            },
            guest: GuestInfo {
                image: "target/images/default.img".into(),
                image_name: "default".into(),
                image_sha256: "ab".repeat(32),
                abi_version: k42_abi::ABI_VERSION,
                modules: vec![],
            },
            host: HostInfo {
                class: "test-cpu.2cpu.kvm".into(),
                cpu_model: "Test CPU".into(),
                cpus_online: 2,
                cpus_usable: 2,
                cores: Some(2),
                nodes: 1,
                kernel: "6.1".into(),
                kvm: "kvm".into(),
                supervisor_mode: Some("native".into()),
            },
            selection: Selection {
                suite: None,
                benchmarks: vec!["platform.spin".into()],
                vcpus: points.iter().map(|p| p.0).collect(),
                samples: 3,
                allow_overcommit: false,
            },
            rules: Rules::default(),
            placement: vec![],
        },
        vec![BenchmarkResults::describe(b, vec![series])],
    )
}

fn write_results(dir: &Path, name: &str, r: &Results) -> PathBuf {
    let p = dir.join(name);
    r.write(&p).unwrap();
    p
}

#[test]
fn history_add_appends_rows_and_a_new_column_keeps_old_rows_readable() {
    let dir = tempfile::tempdir().unwrap();
    let hist = dir.path().join("history");
    let r1 = write_results(
        dir.path(),
        "r1.json",
        &results("2026-01-01T03:00:00Z", "rev1", &[(1, &[10.0, 12.0, 11.0])]),
    );
    let r2 = write_results(
        dir.path(),
        "r2.json",
        &results(
            "2026-01-02T03:00:00Z",
            "rev2",
            &[(1, &[20.0, 21.0, 22.0]), (2, &[40.0, 41.0, 39.0])],
        ),
    );
    for r in [&r1, &r2] {
        let out = bench(&[
            "history",
            "add",
            r.to_str().unwrap(),
            "--history",
            hist.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    let csv = hist.join("test-cpu.2cpu.kvm.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let h = History::parse(&csv, &text).unwrap();
    let mut want: Vec<String> = FIXED_COLUMNS.iter().map(|c| c.to_string()).collect();
    want.extend([
        "platform.spin/user/1vcpu".into(),
        "platform.spin/user/2vcpu".into(),
    ]);
    assert_eq!(h.header, want, "{text}");
    assert_eq!(h.rows.len(), 2, "{text}");
    assert_eq!(
        h.rows[0][..3],
        ["2026-01-01T03:00:00Z", "rev1", "clean"],
        "{text}"
    );
    assert_eq!(
        h.rows[0][6..],
        ["11", ""],
        "the old row keeps its median and an empty new cell: {text}"
    );
    assert_eq!(h.rows[1][6..], ["21", "40"], "{text}");
    assert_eq!(h.rows[1][4], k42_abi::ABI_VERSION.to_string());

    // The statistics beside it: one line per run.
    let jsonl = std::fs::read_to_string(hist.join("test-cpu.2cpu.kvm.jsonl")).unwrap();
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{jsonl}");
    assert_eq!(lines[1]["revision"], "rev2");
    let p2 = &lines[1]["points"][1];
    assert_eq!(
        (
            p2["vcpus"].as_u64(),
            p2["min"].as_f64(),
            p2["max"].as_f64(),
            p2["samples"].as_u64()
        ),
        (Some(2), Some(39.0), Some(41.0), Some(3)),
        "{jsonl}"
    );

    // The same run again is refused and changes nothing.
    let out = bench(&[
        "history",
        "add",
        r2.to_str().unwrap(),
        "--history",
        hist.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("already holds the run of 2026-01-02T03:00:00Z"),
        "{}",
        describe(&out)
    );
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), text);
}

/// A deterministic noise source (a linear congruential generator): the
/// same history every run.
struct Noise(u64);

impl Noise {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// A history of `runs` runs of two metrics: `stepped` at 1000 ops/s ±5%,
/// multiplied by `factor` from run `step` on; `steady` at 500 ops/s ±5%.
fn history(runs: usize, step: usize, factor: f64) -> History {
    let mut noise = Noise(42);
    let m = |n| Metric {
        benchmark: "platform.spin".into(),
        series: "user".into(),
        vcpus: n,
    };
    let mut h = History::new();
    for i in 0..runs {
        let level = if i >= step { 1000.0 * factor } else { 1000.0 };
        h.append(
            [
                format!("2026-01-{:02}T03:00:00Z", i + 1),
                format!("rev{i}"),
                "clean".into(),
                "0.1.0".into(),
                "13".into(),
                "00".into(),
            ],
            &[
                (m(1), level * (1.0 + 0.05 * noise.next())),
                (m(2), 500.0 * (1.0 + 0.05 * noise.next())),
            ],
        );
    }
    h
}

fn analyze(h: &History, extra: &[&str]) -> (std::process::Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("h.csv");
    std::fs::write(&csv, h.to_csv()).unwrap();
    let report = dir.path().join("report.md");
    std::fs::write(&report, "# nightly\n").unwrap();
    let otava = otava();
    let mut args = vec![
        "history",
        "analyze",
        csv.to_str().unwrap(),
        "--otava",
        otava.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = bench(&args);
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(
        text.starts_with("# nightly\n"),
        "the report keeps what it had: {text}"
    );
    (out, text)
}

#[test]
fn a_step_in_the_history_is_a_change_point_otava_finds_and_fails_the_nightly() {
    // 20 runs; from run 16 on (4 runs ago) the 1-vCPU spin is 30% slower.
    let h = history(20, 16, 0.7);
    let (out, report) = analyze(&h, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = stdout(&out);
    for t in [&text, &report] {
        assert!(t.contains("## Change points (Apache Otava)"), "{t}");
        let line = t
            .lines()
            .find(|l| l.starts_with("| platform.spin/user/1vcpu |"))
            .unwrap_or_else(|| panic!("no change point for the stepped metric: {t}"));
        assert!(
            line.contains("| rev16 |") && line.contains("regression, new"),
            "{line}"
        );
        assert!(
            !t.contains("platform.spin/user/2vcpu |"),
            "the steady metric has no change point: {t}"
        );
        assert!(
            t.contains("REGRESSION: new change point in platform.spin/user/1vcpu at rev16"),
            "{t}"
        );
    }

    // Counted as new only within --recent runs: 2 runs back, it is old news.
    let (out, report) = analyze(&h, &["--recent", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        report.contains("| platform.spin/user/1vcpu |") && report.contains("| regression |"),
        "{report}"
    );

    // A step up is an improvement: reported, never a failure.
    let (out, report) = analyze(&history(20, 16, 1.4), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(report.contains("improvement, new"), "{report}");
}

#[test]
fn a_history_of_noise_only_has_no_change_point() {
    let (out, report) = analyze(&history(20, usize::MAX, 1.0), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(report.contains("Otava found no change point."), "{report}");
    assert!(
        report.contains("no new regressing change point"),
        "{report}"
    );
}

#[test]
fn a_short_history_leaves_the_verdict_to_the_baseline_rule() {
    // Two runs, as after the first two nightlies of a new host class.
    let h = history(2, usize::MAX, 1.0);
    let (out, report) = analyze(&h, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        report.contains("2 runs") && report.contains("no regression by the baseline rule"),
        "{report}"
    );
    let (out, report) = analyze(&h, &["--baseline-regressed"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        report.contains("REGRESSION by the baseline rule"),
        "{report}"
    );
    // A step in a history long enough for Otava but below --min-runs is
    // reported without failing.
    let (out, report) = analyze(&history(20, 16, 0.7), &["--min-runs", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(report.contains("regression, new"), "{report}");
}

#[test]
fn bmf_export_follows_bencher_metric_format() {
    let dir = tempfile::tempdir().unwrap();
    let r = results(
        "2026-01-01T03:00:00Z",
        "rev1",
        &[(1, &[10.0, 12.0, 11.0]), (2, &[30.0, 20.0, 25.0])],
    );
    let path = write_results(dir.path(), "r.json", &r);
    let out_file = dir.path().join("bmf.json");
    let out = bench(&[
        "export",
        "--format",
        "bmf",
        path.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    // https://bencher.dev/bmf.json: an object of benchmarks (any
    // non-empty name), each an object of measures (a non-empty slug of at
    // most 64 characters), each an object with a number "value" and
    // optional number "lower_value" and "upper_value".
    let benches = v.as_object().expect("BMF is an object");
    assert_eq!(benches.len(), 2, "{v}");
    for (name, measures) in benches {
        assert!(!name.is_empty() && name.len() <= 1024, "{name}");
        for (measure, metric) in measures.as_object().expect("measures are an object") {
            assert!(!measure.is_empty() && measure.len() <= 64, "{measure}");
            let m = metric.as_object().expect("a metric is an object");
            assert!(m["value"].is_number(), "{v}");
            for k in m.keys() {
                assert!(
                    ["value", "lower_value", "upper_value"].contains(&k.as_str()),
                    "{k}"
                );
                assert!(m[k].is_number(), "{k}: {v}");
            }
        }
    }
    let m = &v["platform.spin/user/2vcpu"]["throughput"];
    assert_eq!(
        (
            m["value"].as_f64(),
            m["lower_value"].as_f64(),
            m["upper_value"].as_f64()
        ),
        (Some(25.0), Some(20.0), Some(30.0)),
        "{v}"
    );
}

#[test]
fn github_action_benchmark_export_is_custom_bigger_is_better() {
    let dir = tempfile::tempdir().unwrap();
    let r = results("2026-01-01T03:00:00Z", "rev1", &[(1, &[10.0, 12.0, 11.0])]);
    let path = write_results(dir.path(), "r.json", &r);
    let out = bench(&[
        "export",
        "--format",
        "github-action-benchmark",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    // The action's custom tools read an array of {name: string, unit:
    // string, value: number, range?: string, extra?: string}.
    let a = v.as_array().expect("an array");
    assert_eq!(a.len(), 1, "{v}");
    for e in a {
        let o = e.as_object().unwrap();
        for k in o.keys() {
            assert!(
                ["name", "unit", "value", "range", "extra"].contains(&k.as_str()),
                "{k}"
            );
        }
        assert!(
            o["name"].is_string() && o["unit"].is_string() && o["value"].is_number(),
            "{e}"
        );
        assert!(o["range"].is_string() && o["extra"].is_string(), "{e}");
    }
    assert_eq!(a[0]["name"], "platform.spin/user/1vcpu");
    assert_eq!(a[0]["unit"], "ops/s");
    assert_eq!(a[0]["value"].as_f64(), Some(11.0));
    assert_eq!(a[0]["range"], "10..12");
    assert!(
        a[0]["extra"]
            .as_str()
            .unwrap()
            .contains("3 samples; revision rev1"),
        "{v}"
    );
}

fn expect_error(args: &[&str], needle: &str) {
    let out = bench(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn bad_history_and_export_inputs_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let missing = format!("{d}/missing.json");
    let garbage = format!("{d}/garbage.json");
    std::fs::write(&garbage, "not json").unwrap();
    let bad_hist = format!("{d}/bad.csv");
    std::fs::write(&bad_hist, "when,what\n1,2\n").unwrap();
    let good = write_results(
        dir.path(),
        "r.json",
        &results("2026-01-01T03:00:00Z", "rev1", &[(1, &[1.0, 2.0, 3.0])]),
    );
    let good = good.to_str().unwrap();
    expect_error(
        &["history", "add", &missing, "--history", d],
        "missing.json: no such file",
    );
    expect_error(
        &["history", "add", &garbage, "--history", d],
        "not a k42vmm bench results file",
    );
    // A history with a bad header is refused and left as it was.
    std::fs::write(format!("{d}/test-cpu.2cpu.kvm.csv"), "when,what\n").unwrap();
    expect_error(&["history", "add", good, "--history", d], "bad header");
    assert_eq!(
        std::fs::read_to_string(format!("{d}/test-cpu.2cpu.kvm.csv")).unwrap(),
        "when,what\n"
    );
    let otava = otava();
    let otava = otava.to_str().unwrap();
    expect_error(
        &["history", "analyze", &bad_hist, "--otava", otava],
        "bad.csv: not a k42vmm bench history: bad header",
    );
    expect_error(
        &[
            "history",
            "analyze",
            &format!("{d}/none.csv"),
            "--otava",
            otava,
        ],
        "none.csv: no such file",
    );
    std::fs::write(format!("{d}/ok.csv"), FIXED_COLUMNS.join(",") + "\n").unwrap();
    expect_error(
        &[
            "history",
            "analyze",
            &format!("{d}/ok.csv"),
            "--otava",
            &format!("{d}/no-otava"),
        ],
        "--otava",
    );
    expect_error(
        &["export", "--format", "csv", good],
        "unknown format (known: bmf, github-action-benchmark)",
    );
    expect_error(&["export", "--format", "bmf", &missing], "no such file");
}
