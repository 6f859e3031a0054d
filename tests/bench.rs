//! `k42vmm bench` end to end: a short sweep of the platform benchmarks
//! (vCPUs 1 and 2, 3 samples) writes results, plots and a report; a
//! baseline edited to be 20% better makes the comparison exit 1 with a
//! report naming that point; the sweep compares with a baseline it is
//! given and marks overcommitted points; accepted baselines land under
//! their host class; a boot that fails stops the sweep with exit 1; every
//! catalogued benchmark gets its records from the guest; every bad input
//! is one line and exit 2; `--suite linux --quick` writes both series
//! (guest and host Linux) for every measurement and the script's split.
//!
//! No assertion depends on how fast anything ran: the regression is made
//! by editing the baseline, and the sweep that compares with a baseline
//! takes one sample, which the rule never judges.

mod common;

use std::path::Path;

use common::*;
use k42vmm::bench::plot::si;
use k42vmm::bench::results::{RESULTS_SCHEMA, Results};

/// The two benchmarks the short suite runs (both from `bench=platform`).
const BENCHES: [&str; 2] = ["platform.spin", "platform.syscall"];

fn bench(args: &[&str]) -> std::process::Output {
    let mut v = vec!["bench"];
    v.extend_from_slice(args);
    run(&v)
}

fn svg_texts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect()
}

#[test]
fn bench_list_names_suites_and_benchmarks() {
    let out = bench(&["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    for b in k42vmm::bench::catalog::BENCHMARKS {
        assert!(
            text.contains(b.name) && text.contains(b.description),
            "{text}"
        );
    }
    for s in k42vmm::bench::catalog::SUITES {
        assert!(
            text.contains(s.name) && text.contains(s.description),
            "{text}"
        );
    }
    assert!(
        text.contains("nightly") && text.contains("[default]"),
        "{text}"
    );
}

#[test]
fn short_sweep_runs_end_to_end_and_a_better_baseline_fails_it() {
    require_kvm();
    let image = default_image();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let out = bench(&[
        "--bench",
        BENCHES[0],
        "--bench",
        BENCHES[1],
        "--vcpus",
        "1,2",
        "--samples",
        "3",
        "--out",
        run_dir.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // The summary table: a header and one row per benchmark and vCPU count.
    let table = stdout(&out);
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| BENCHES.iter().any(|b| l.starts_with(b)))
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        table.lines().next().unwrap().contains("efficiency"),
        "{table}"
    );
    // Not a terminal: progress comes as plain lines with an ETA.
    let err = stderr(&out);
    assert!(err.contains("[6/6]") && err.contains("ETA"), "{err}");

    // results.json: schema, provenance, every sample with its records.
    let results_path = run_dir.join("results.json");
    let r = Results::load(&results_path).expect("results.json loads");
    assert_eq!(r.schema, RESULTS_SCHEMA);
    let pv = &r.provenance;
    assert!(!pv.host.cpu_model.is_empty() && pv.host.cpus_online >= 1);
    assert!(pv.host.nodes >= 1 && !pv.host.kernel.is_empty());
    assert!(pv.host.supervisor_mode.is_some(), "{:?}", pv.host);
    assert_eq!(pv.guest.image_sha256.len(), 64);
    assert_eq!(pv.guest.abi_version, k42_abi::ABI_VERSION);
    assert!(!pv.git.revision.is_empty());
    assert!(pv.command_line.iter().any(|a| a == "--samples"));
    assert_eq!(pv.selection.vcpus, [1, 2]);
    assert_eq!(
        pv.placement.iter().map(|p| p.vcpus).collect::<Vec<_>>(),
        [1, 2]
    );
    // The placement plan each count ran under, from its run reports.
    for p in &pv.placement {
        let plan = p
            .plan
            .as_ref()
            .expect("the run report has a placement plan");
        assert_eq!(plan["vcpus"], p.vcpus, "{plan}");
        assert_eq!(plan["vcpu"].as_array().unwrap().len(), p.vcpus as usize);
        assert_eq!(
            p.vcpu_affinity.as_ref().map(Vec::len),
            Some(p.vcpus as usize)
        );
    }
    assert_eq!(
        r.benchmarks
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>(),
        BENCHES
    );
    for b in &r.benchmarks {
        assert_eq!(b.series.len(), 1);
        let s = &b.series[0];
        assert_eq!(
            (s.record.as_str(), s.mode.as_str()),
            (b.name.as_str(), "user")
        );
        assert_eq!(s.points.iter().map(|p| p.vcpus).collect::<Vec<_>>(), [1, 2]);
        for p in &s.points {
            assert_eq!(p.samples.len(), 3, "{} at {}", b.name, p.vcpus);
            assert!(!p.overcommitted);
            assert!(p.min <= p.median && p.median <= p.max && p.min > 0.0);
            for sample in &p.samples {
                // The throughput is recomputable from the kept records.
                let cpus: Vec<u32> = sample.records.iter().map(|r| r.cpu).collect();
                assert_eq!(cpus, (0..p.vcpus).collect::<Vec<_>>());
                let ops: u64 = sample.records.iter().map(|r| r.iterations).sum();
                let slowest = sample.records.iter().map(|r| r.elapsed_ns).max().unwrap();
                assert_eq!(sample.throughput, ops as f64 / slowest as f64 * 1e9);
                assert!(run_dir.join(&sample.run_report).is_file());
            }
        }
        assert_eq!(s.points[0].efficiency, Some(1.0));
        let e2 = s.points[1].efficiency.unwrap();
        assert_eq!(e2, s.points[1].median / (2.0 * s.points[0].median));

        // The plot: valid SVG naming the benchmark, axes and both lines.
        let texts = svg_texts(&run_dir.join(format!("{}.svg", b.name)));
        for want in [
            format!("{}: throughput vs vCPUs", b.name),
            "vCPUs".into(),
            format!("throughput ({} per second)", b.op),
            "user (median of samples, min..max bars)".into(),
            k42vmm::bench::plot::ideal_label("user", 1),
        ] {
            assert!(
                texts.contains(&want),
                "{}.svg lacks '{want}': {texts:?}",
                b.name
            );
        }
    }
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains("No baseline given"), "{report}");
    assert!(report.contains("- placement at 2 vCPUs: pin "), "{report}");
    assert!(report.contains(&pv.host.class), "{report}");

    // A baseline 20% better than the best sample of platform.spin at 2
    // vCPUs, everything else as measured.
    let mut base = r.clone();
    let p = &mut base.benchmarks[0].series[0].points[1];
    let better = p.max * 1.2;
    for (i, s) in p.samples.iter_mut().enumerate() {
        s.throughput = better * (1.0 + i as f64 / 100.0);
    }
    let old_median = better * 1.01;
    (p.median, p.min, p.max) = (old_median, better, better * 1.02);
    let base_path = dir.path().join("better.json");
    base.write(&base_path).unwrap();

    let cmp_dir = dir.path().join("cmp");
    let out = bench(&[
        "compare",
        results_path.to_str().unwrap(),
        "--baseline",
        base_path.to_str().unwrap(),
        "--out",
        cmp_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("REGRESSION against") && text.contains("platform.spin user at 2 vCPUs"),
        "{text}"
    );
    let report = std::fs::read_to_string(cmp_dir.join("report.md")).unwrap();
    let new = &r.benchmarks[0].series[0].points[1];
    let row = format!(
        "| platform.spin | user | 2 | {} | {} | {:.3}x |",
        si(old_median),
        si(new.median),
        new.median / old_median
    );
    assert!(
        report.contains("**REGRESSION: 1 point(s) regressed**"),
        "{report}"
    );
    assert!(
        report
            .split("## Regressions")
            .nth(1)
            .unwrap()
            .contains(&row),
        "report lacks {row}:\n{report}"
    );
    assert!(!report.contains("## Improvements"), "{report}");

    // Accepting the run files it under this host's class.
    let class = stdout(&bench(&["host-class"])).trim().to_string();
    assert_eq!(class, pv.host.class);
    let baselines = dir.path().join("baselines");
    let out = bench(&[
        "accept",
        results_path.to_str().unwrap(),
        "--baselines",
        baselines.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let accepted = Results::load(&baselines.join(format!("{class}.json"))).unwrap();
    assert_eq!(accepted, r);

    // A sweep given a baseline compares with it. One sample per point is
    // never judged, so the verdict does not depend on the machine's
    // speed; a vCPU count past the host's CPUs is marked overcommitted.
    let host = std::thread::available_parallelism().unwrap().get() as u32;
    let over = (host + 1).to_string();
    let counts = format!("1,{over}");
    let again = dir.path().join("again");
    let out = bench(&[
        "--bench",
        "platform.spin",
        "--vcpus",
        &counts,
        "--allow-overcommit",
        "--samples",
        "1",
        "--baseline",
        results_path.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("too few samples") && text.contains("new"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{over}*")) && text.contains("* overcommitted"),
        "{text}"
    );
    let r2 = Results::load(&again.join("results.json")).unwrap();
    let p = r2.point("platform.spin", "user", host + 1).unwrap();
    assert!(p.overcommitted);
    let placed = &r2.provenance.placement[1];
    assert!(placed.overcommitted);
    assert_eq!(placed.plan.as_ref().unwrap()["overcommitted"], true);
    let report = std::fs::read_to_string(again.join("report.md")).unwrap();
    assert!(report.contains("**No regression**"), "{report}");
    assert!(
        report.contains("platform.syscall user at 2 vCPUs"),
        "the baseline's unmeasured points are listed:\n{report}"
    );
    let texts = svg_texts(&again.join("platform.spin.svg"));
    assert!(
        texts
            .iter()
            .any(|t| t.contains("points beyond are overcommitted")),
        "{texts:?}"
    );
}

#[test]
fn every_catalogued_benchmark_gets_its_records_from_the_guest() {
    require_kvm();
    // One sample at 1 and 2 vCPUs of everything: a series whose record
    // name or mode the guest does not report (or not from every vCPU)
    // fails the sweep.
    let names: Vec<&str> = k42vmm::bench::catalog::BENCHMARKS
        .iter()
        .map(|b| b.name)
        .collect();
    let all = names.join(",");
    let dir = tempfile::tempdir().unwrap();
    let image = default_image();
    let out = bench(&[
        "--bench",
        &all,
        "--vcpus",
        "1,2",
        "--samples",
        "1",
        "--out",
        dir.path().to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r = Results::load(&dir.path().join("results.json")).unwrap();
    for b in k42vmm::bench::catalog::BENCHMARKS {
        for s in b.series {
            for n in [1, 2] {
                let p = r
                    .point(b.name, s.label, n)
                    .unwrap_or_else(|| panic!("no {} {} point at {n} vCPUs", b.name, s.label));
                assert_eq!(p.samples[0].records.len(), n as usize);
                assert!(p.median > 0.0);
            }
        }
        assert!(dir.path().join(format!("{}.svg", b.name)).is_file());
    }
}

#[test]
fn a_failing_boot_stops_the_sweep_naming_the_point() {
    require_kvm();
    // The default kernel without its user programs: bench=platform fails
    // once it looks for platform-bench, and the guest exits 1.
    let image = k42_image::Image::open(&default_image()).unwrap();
    let mut manifest = image.manifest.clone();
    manifest.name = "no-user-programs".into();
    manifest.modules.clear();
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.img");
    let mut bytes = Vec::new();
    k42_image::write_image(&mut bytes, &manifest, image.kernel(), &[]).unwrap();
    std::fs::write(&bare, bytes).unwrap();
    let out_dir = dir.path().join("out");
    let out = bench(&[
        "--bench",
        "platform.spin",
        "--vcpus",
        "1",
        "--samples",
        "1",
        "--out",
        out_dir.to_str().unwrap(),
        bare.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with(
            "k42vmm: bench: platform.spin at 1 vCPUs, sample 1: k42vmm run failed (exit 1)"
        ),
        "{err}"
    );
    let console = out_dir.join("runs/platform.spin-1vcpu-s1.console");
    assert!(last.contains(console.to_str().unwrap()), "{err}");
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(text.contains("platform benchmark failed"), "{text}");
    assert!(!out_dir.join("results.json").exists());
}

/// `k42vmm bench ARGS` exits 2 with one line on stderr that names the
/// problem.
fn expect_bench_error(args: &[&str], needle: &str) {
    let out = bench(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", describe(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line:\n{err}");
    assert!(
        err.starts_with("k42vmm: bench: ") && err.contains(needle),
        "{args:?}: stderr lacks '{needle}':\n{err}"
    );
}

#[test]
fn bad_bench_inputs_exit_2_with_one_line() {
    let image = default_image();
    let img = image.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out_dir = d.join("out");
    let o = out_dir.to_str().unwrap();
    expect_bench_error(
        &["--vcpus", "1,,2", "--out", o, img],
        "--vcpus 1,,2: '' is not a vCPU count",
    );
    expect_bench_error(
        &["--vcpus", "two", "--out", o, img],
        "--vcpus two: 'two' is not a vCPU count",
    );
    expect_bench_error(
        &["--vcpus", "0,1", "--out", o, img],
        "--vcpus 0,1: 0 is not between 1 and 255",
    );
    expect_bench_error(
        &["--vcpus", "1,2,1", "--out", o, img],
        "--vcpus 1,2,1: 1 appears twice",
    );
    let host = std::thread::available_parallelism().unwrap().get();
    let many = (host * 2).to_string();
    expect_bench_error(
        &["--vcpus", &many, "--out", o, img],
        &format!("{many} is more than the {host} usable host CPUs; pass --allow-overcommit"),
    );
    expect_bench_error(
        &["--bench", "nope", "--out", o, img],
        "unknown benchmark 'nope' (k42vmm bench list shows them)",
    );
    expect_bench_error(
        &["--suite", "nope", "--out", o, img],
        "unknown suite 'nope'",
    );
    expect_bench_error(
        &[
            "--suite",
            "nightly",
            "--bench",
            "platform.spin",
            "--out",
            o,
            img,
        ],
        "--suite nightly and --bench: give one or the other",
    );
    expect_bench_error(
        &["--samples", "0", "--out", o, img],
        "--samples 0: give a number of boots per point from 1 to 1000",
    );
    expect_bench_error(
        &["--threshold", "0", "--out", o, img],
        "--threshold 0: give a percentage between 0 and 100",
    );

    let missing = d.join("missing.json");
    expect_bench_error(
        &["--baseline", missing.to_str().unwrap(), "--out", o, img],
        "missing.json: no such file",
    );
    let garbled = d.join("garbled.json");
    std::fs::write(&garbled, "{\"schema\": 1, \"kind\": ").unwrap();
    expect_bench_error(
        &["--baseline", garbled.to_str().unwrap(), "--out", o, img],
        "garbled.json: not a k42vmm bench results file: not JSON",
    );
    let other = d.join("other.json");
    std::fs::write(&other, "{\"exit_code\": 0}").unwrap();
    expect_bench_error(
        &["--baseline", other.to_str().unwrap(), "--out", o, img],
        "other.json: not a k42vmm bench results file",
    );
    let future = d.join("future.json");
    std::fs::write(
        &future,
        "{\"schema\": 99, \"kind\": \"k42vmm-bench-results\"}",
    )
    .unwrap();
    expect_bench_error(
        &["--baseline", future.to_str().unwrap(), "--out", o, img],
        &format!(
            "future.json: results schema version 99, but this k42vmm reads version {RESULTS_SCHEMA}"
        ),
    );
    expect_bench_error(
        &["--out", o, d.join("no.img").to_str().unwrap()],
        "no such file",
    );
    let file = d.join("a-file");
    std::fs::write(&file, "").unwrap();
    expect_bench_error(
        &["--out", file.to_str().unwrap(), img],
        "exists and is not a directory",
    );
    expect_bench_error(
        &[
            "compare",
            missing.to_str().unwrap(),
            "--baseline",
            other.to_str().unwrap(),
        ],
        "missing.json: no such file",
    );
    expect_bench_error(
        &[
            "compare",
            garbled.to_str().unwrap(),
            "--baseline",
            other.to_str().unwrap(),
        ],
        "garbled.json: not a k42vmm bench results file",
    );
    expect_bench_error(
        &["accept", future.to_str().unwrap()],
        "results schema version 99",
    );
    // All of these were refused before anything booted or was written.
    assert!(!out_dir.exists());
}

/// `k42vmm bench --suite linux --quick`: one guest boot and host Linux
/// running the same k42-lbench, then a traced boot of the script.
/// Checks that results.json and report.md are well formed with both
/// series for every measurement, never how fast anything ran.
#[test]
fn linux_suite_quick_writes_both_series_and_the_split() {
    require_kvm();
    let image = default_image();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("linux");
    let out = bench(&[
        "--suite",
        "linux",
        "--quick",
        "--samples",
        "1",
        "--out",
        out_dir.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("null call: personality getppid"), "{text}");
    assert!(text.contains("sdet split"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(json["kind"], "k42vmm-bench-linux-results");
    assert_eq!(json["schema"], 1);
    assert_eq!(json["provenance"]["quick"], true);
    let names: Vec<&str> = json["benchmarks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "linux.bare",
            "linux.getppid",
            "linux.spawn",
            "linux.exec-static",
            "linux.exec-dynamic",
            "linux.pipe",
            "linux.sdet"
        ]
    );
    for b in json["benchmarks"].as_array().unwrap() {
        let labels: Vec<&str> = b["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["label"].as_str().unwrap())
            .collect();
        assert_eq!(labels, ["k42", "linux"], "{b}");
        for s in b["series"].as_array().unwrap() {
            let samples = s["samples"].as_array().unwrap();
            assert_eq!(samples.len(), 1, "{b}");
            assert!(samples[0]["iterations"].as_u64().unwrap() > 0, "{b}");
            assert!(s["median_ns_per_op"].as_f64().is_some(), "{b}");
        }
        assert!(b["ratio_k42_over_linux"].as_f64().is_some(), "{b}");
    }
    assert!(json["null_call"]["ratio"].as_f64().is_some());
    assert_eq!(json["null_call"]["aim"], 1.3);
    let split = &json["sdet_split"];
    assert!(split["traced_wall_ns"].as_u64().unwrap() > 0, "{split}");
    // The script forks, execs and names files: the trace saw kernel calls.
    assert!(split["syscalls"].as_u64().unwrap() > 0, "{split}");
    assert!(!split["notes"].as_array().unwrap().is_empty());
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    for needle in ["linux.getppid", "linux.sdet", "## The null call", "| PPC ("] {
        assert!(
            report.contains(needle),
            "report.md lacks {needle}:\n{report}"
        );
    }
    let img = image.to_str().unwrap();
    let o = out_dir.to_str().unwrap();
    expect_bench_error(
        &["--suite", "linux", "--vcpus", "2", "--out", o, img],
        "--vcpus 2: the linux suite runs on one vCPU",
    );
    expect_bench_error(&["--quick", "--out", o, img], "--quick: only --suite linux");
    // Compared with itself: judged by the sweeps' rule, one sample too few.
    let results = out_dir.join("results.json");
    let r = results.to_str().unwrap();
    let cmp_dir = dir.path().join("cmp");
    let out = bench(&[
        "compare",
        r,
        "--baseline",
        r,
        "--out",
        cmp_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("linux.getppid"), "{text}");
    assert!(text.contains("7 with too few samples"), "{text}");
    let report = std::fs::read_to_string(cmp_dir.join("report.md")).unwrap();
    assert!(report.contains("## Against the baseline"), "{report}");
    // Only another linux-suite file is a baseline for it; a quick run is
    // no baseline.
    let other = dir.path().join("other.json");
    std::fs::write(&other, r#"{"kind": "k42vmm-bench-results", "schema": 1}"#).unwrap();
    expect_bench_error(
        &["compare", r, "--baseline", other.to_str().unwrap()],
        "compared only with another",
    );
    expect_bench_error(
        &[
            "--suite",
            "linux",
            "--baseline",
            other.to_str().unwrap(),
            "--out",
            o,
            img,
        ],
        "compared only with another",
    );
    expect_bench_error(
        &[
            "accept",
            r,
            "--baselines",
            dir.path().join("bl").to_str().unwrap(),
        ],
        "a --quick run has no figures",
    );
}
