//! The `k42vmm bench` subcommands, from parsed options to exit code:
//! `bench` (sweep, write, plot, compare), `bench compare`, `bench accept`,
//! `bench list` and `bench host-class`.
//!
//! A sweep checks every input before the first boot — benchmark and
//! suite names, vCPU counts against the host, the baseline file, the
//! image, the output directory — so a mistake costs a one-line error
//! (exit 2), never a finished sweep that cannot be compared.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::catalog::{self, Benchmark};
use super::compare::{Comparison, MIN_SAMPLES, Verdict};
use super::results::{
    BenchmarkResults, PlacementRecord, Point, Provenance, Results, Rules, Sample, Selection,
    SeriesResults,
};
use super::sweep::{self, BootResult, Group, Progress, VcpuSpec};
use super::{BenchError, linux_compare, plot, provenance, summary, write_atomically};

/// Where `make nightly` keeps accepted baselines, one per host class.
pub const BASELINES_DIR: &str = "bench/baselines";

/// What `k42vmm bench` was asked to do. The option values are as given
/// on the command line; [`sweep`] checks them before anything boots.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub suite: Option<String>,
    pub benchmarks: Vec<String>,
    /// `--vcpus`: `auto` or a list ([`VcpuSpec::parse`]).
    pub vcpus: String,
    /// `--samples`: 1 to [`MAX_SAMPLES`].
    pub samples: String,
    /// `None`: [`sweep::default_out_dir`].
    pub out: Option<PathBuf>,
    pub baseline: Option<PathBuf>,
    /// `--threshold`, in percent ([`parse_threshold`]).
    pub threshold: String,
    pub allow_overcommit: bool,
    /// `--quick`: small sizes (the linux suite only).
    pub quick: bool,
    pub image: PathBuf,
    /// The whole command line, for the provenance.
    pub command_line: Vec<String>,
}

/// Samples per point when `--samples` is not given.
pub const DEFAULT_SAMPLES: u32 = 5;

/// The most samples per point a sweep takes.
pub const MAX_SAMPLES: u32 = 1000;

/// Check an option's value with `parse`, naming the option in the error.
pub fn option<T>(
    option: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, BenchError> {
    parse(value).map_err(|why| BenchError::BadOption {
        option,
        value: value.into(),
        why,
    })
}

/// Parse `--samples`: 1 to [`MAX_SAMPLES`].
pub fn parse_samples(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(k) if (1..=MAX_SAMPLES).contains(&k) => Ok(k),
        _ => Err(format!(
            "give a number of boots per point from 1 to {MAX_SAMPLES}"
        )),
    }
}

/// Parse `--threshold`: a percentage such as `5` or `2.5%`.
pub fn parse_threshold(text: &str) -> Result<f64, String> {
    let t = text.trim().trim_end_matches('%');
    match t.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 100.0 => Ok(v),
        _ => Err("give a percentage between 0 and 100, such as 5 or 2.5%".into()),
    }
}

/// The benchmarks to run: those named, else the suite's (default
/// [`catalog::DEFAULT_SUITE`]); not both.
pub fn select(
    suite: Option<&str>,
    names: &[String],
) -> Result<(Option<String>, Vec<&'static Benchmark>), BenchError> {
    if let (Some(s), false) = (suite, names.is_empty()) {
        return Err(BenchError::SuiteAndBenchmarks(s.into()));
    }
    if !names.is_empty() {
        let mut out: Vec<&'static Benchmark> = Vec::new();
        for n in names {
            let b = catalog::benchmark(n).ok_or_else(|| BenchError::UnknownBenchmark(n.clone()))?;
            if out.iter().any(|x| x.name == b.name) {
                return Err(BenchError::DuplicateBenchmark(n.clone()));
            }
            out.push(b);
        }
        return Ok((None, out));
    }
    let name = suite.unwrap_or(catalog::DEFAULT_SUITE);
    let s = catalog::suite(name).ok_or_else(|| {
        BenchError::UnknownSuite(
            name.into(),
            catalog::SUITES
                .iter()
                .map(|s| s.name)
                .chain([super::linux::SUITE])
                .collect::<Vec<_>>()
                .join(", "),
        )
    })?;
    let benches = s
        .benchmarks
        .iter()
        .map(|b| catalog::benchmark(b).expect("suites name catalogued benchmarks"))
        .collect();
    Ok((Some(s.name.into()), benches))
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Create the output directory (and `runs/`), clearing the run reports
/// and consoles an earlier sweep left there.
fn prepare_out(dir: &Path) -> Result<(), BenchError> {
    if dir.exists() && !dir.is_dir() {
        return Err(BenchError::OutDir(
            dir.to_path_buf(),
            "exists and is not a directory".into(),
        ));
    }
    let runs = dir.join("runs");
    std::fs::create_dir_all(&runs)
        .map_err(|e| BenchError::OutDir(dir.to_path_buf(), format!("cannot create it: {e}")))?;
    for entry in std::fs::read_dir(&runs)
        .map_err(|e| BenchError::OutDir(dir.to_path_buf(), e.to_string()))?
        .flatten()
    {
        let p = entry.path();
        if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("json" | "console")
        ) {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(())
}

/// Turn the boots' records into each benchmark's curves.
fn assemble(
    benches: &[&'static Benchmark],
    groups: &[Group],
    counts: &[u32],
    host_cpus: u32,
    boots: &[BootResult],
) -> Result<Vec<BenchmarkResults>, BenchError> {
    let mut out = Vec::new();
    for bench in benches {
        let gi = groups
            .iter()
            .position(|g| g.cmdline == bench.cmdline)
            .expect("every benchmark is in a group");
        let mut series = Vec::new();
        for s in bench.series {
            let mut points = Vec::new();
            for &n in counts {
                let samples = boots
                    .iter()
                    .filter(|b| b.boot.group == gi && b.boot.vcpus == n)
                    .map(|b| {
                        let (throughput, records) =
                            super::results::throughput(s, n, &b.report.bench).map_err(|why| {
                                BenchError::BadRecords {
                                    what: format!(
                                        "{} {} at {n} vCPUs, sample {} ({})",
                                        bench.name, s.label, b.boot.sample, b.report_file
                                    ),
                                    why,
                                }
                            })?;
                        Ok(Sample {
                            run_report: b.report_file.clone(),
                            throughput,
                            records,
                        })
                    })
                    .collect::<Result<Vec<_>, BenchError>>()?;
                points.push(Point::new(n, n > host_cpus, samples));
            }
            series.push(SeriesResults::new(s, points));
        }
        out.push(BenchmarkResults::describe(bench, series));
    }
    Ok(out)
}

/// Where the vCPUs ran at each count, from the first boot at that count.
fn placement(counts: &[u32], host_cpus: u32, boots: &[BootResult]) -> Vec<PlacementRecord> {
    counts
        .iter()
        .map(|&n| {
            let raw = boots.iter().find(|b| b.boot.vcpus == n).map(|b| &b.raw);
            let plan = raw
                .and_then(|r| r.get("placement"))
                .filter(|p| !p.is_null())
                .cloned();
            let vcpu_affinity = raw
                .and_then(|r| r.get("vcpu_affinity"))
                .and_then(|a| serde_json::from_value(a.clone()).ok());
            let note = if plan.is_some() {
                "the placement plan k42vmm run applied (its run report's placement and vcpu_affinity)"
                    .to_string()
            } else {
                format!(
                    "the run report has no placement plan: where the {n} vCPU threads ran among the {host_cpus} usable host CPUs is unknown"
                )
            };
            PlacementRecord {
                vcpus: n,
                overcommitted: n > host_cpus,
                host_cpus_usable: host_cpus,
                plan,
                vcpu_affinity,
                note,
            }
        })
        .collect()
}

/// Write the report, print the table and the verdict; the exit code.
fn conclude(
    results: &Results,
    cmp: Option<&Comparison>,
    report_path: &Path,
) -> Result<u8, BenchError> {
    write_atomically(report_path, &summary::markdown(results, cmp))?;
    print!("{}", summary::table(results, cmp));
    let Some(c) = cmp else {
        println!("report: {}", report_path.display());
        return Ok(0);
    };
    let list = |v: Verdict| {
        c.with(v)
            .map(|p| {
                format!(
                    "{} {} at {} vCPUs ({:.3}x)",
                    p.benchmark,
                    p.series,
                    p.vcpus,
                    p.ratio.unwrap_or(f64::NAN)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if c.count(Verdict::Improved) > 0 {
        println!("improved: {}", list(Verdict::Improved));
    }
    if c.has_regression() {
        println!(
            "REGRESSION against {}: {}; report: {}",
            c.baseline,
            list(Verdict::Regressed),
            report_path.display()
        );
        Ok(1)
    } else {
        println!(
            "no regression against {} ({}); report: {}",
            c.baseline,
            c.tally(),
            report_path.display()
        );
        Ok(0)
    }
}

/// `k42vmm bench`: sweep, write DIR/results.json, DIR/<bench>.svg and
/// DIR/report.md, print the summary, compare with the baseline.
pub fn sweep(opts: &SweepOptions) -> Result<u8, BenchError> {
    if opts.suite.as_deref() == Some(super::linux::SUITE) {
        if !opts.benchmarks.is_empty() {
            return Err(BenchError::SuiteAndBenchmarks(super::linux::SUITE.into()));
        }
        return super::linux::run(opts);
    }
    if opts.quick {
        return Err(BenchError::QuickWithoutLinux);
    }
    let (suite, benches) = select(opts.suite.as_deref(), &opts.benchmarks)?;
    let vcpus = option("--vcpus", &opts.vcpus, VcpuSpec::parse)?;
    let samples = option("--samples", &opts.samples, parse_samples)?;
    let threshold = option("--threshold", &opts.threshold, parse_threshold)?;
    let mut host = provenance::host();
    let counts = vcpus.counts(host.cpus_usable, opts.allow_overcommit)?;
    let baseline = opts
        .baseline
        .as_deref()
        .map(|p| Results::load(p).map(|r| (p, r)))
        .transpose()?;
    let image = k42_image::Image::open(&opts.image)?;
    let guest = provenance::guest(&opts.image, &image)
        .map_err(|e| BenchError::Host(format!("cannot read {}: {e}", opts.image.display())))?;
    let out = opts.out.clone().unwrap_or_else(sweep::default_out_dir);
    prepare_out(&out)?;
    let k42vmm = std::env::current_exe()
        .map_err(|e| BenchError::Host(format!("cannot find the k42vmm executable: {e}")))?;

    let started = now();
    let groups = sweep::groups(&benches);
    let plan = sweep::schedule(groups.len(), &counts, samples);
    eprintln!(
        "k42vmm bench: {} at {} vCPUs, {} samples: {} boots; results in {}",
        benches
            .iter()
            .map(|b| b.name)
            .collect::<Vec<_>>()
            .join(", "),
        counts
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(","),
        samples,
        plan.len(),
        out.display()
    );
    let mut progress = Progress::new(plan.len());
    let mut boots = Vec::with_capacity(plan.len());
    for b in plan {
        let g = &groups[b.group];
        progress.start(&format!(
            "{} at {} vCPUs, sample {}/{}",
            g.name(),
            b.vcpus,
            b.sample,
            samples
        ));
        let t0 = Instant::now();
        match sweep::run_boot(&k42vmm, &opts.image, &out, g, b) {
            Ok(r) => boots.push(r),
            Err(e) => {
                progress.finish();
                return Err(e);
            }
        }
        progress.finish_one(t0.elapsed());
    }
    progress.finish();

    let benchmarks = assemble(&benches, &groups, &counts, host.cpus_usable, &boots)?;
    host.supervisor_mode = boots
        .first()
        .and_then(|b| b.report.platform.supervisor_mode.clone());
    let results = Results::new(
        Provenance {
            started,
            finished: now(),
            command_line: opts.command_line.clone(),
            k42vmm_version: env!("CARGO_PKG_VERSION").into(),
            git: provenance::git(),
            guest,
            placement: placement(&counts, host.cpus_usable, &boots),
            host,
            selection: Selection {
                suite,
                benchmarks: benches.iter().map(|b| b.name.to_string()).collect(),
                vcpus: counts,
                samples,
                allow_overcommit: opts.allow_overcommit,
            },
            rules: Rules::default(),
        },
        benchmarks,
    );
    results.write(&out.join("results.json"))?;
    for b in &results.benchmarks {
        let svg = plot::svg(b, results.provenance.host.cpus_usable).map_err(BenchError::Host)?;
        write_atomically(&out.join(format!("{}.svg", b.name)), &svg)?;
    }
    let cmp = baseline.map(|(path, base)| {
        Comparison::new(&path.display().to_string(), &base, &results, threshold)
    });
    conclude(&results, cmp.as_ref(), &out.join("report.md"))
}

/// `k42vmm bench compare RESULTS --baseline FILE`: compare two results
/// files without booting; the report goes to `out` (default: next to
/// RESULTS).
pub fn compare(
    results: &Path,
    baseline: &Path,
    threshold: &str,
    out: Option<&Path>,
) -> Result<u8, BenchError> {
    let threshold_pct = option("--threshold", threshold, parse_threshold)?;
    let linux = std::fs::read_to_string(results).is_ok_and(|t| linux_compare::is_linux_results(&t));
    let dir = match out {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| {
                BenchError::OutDir(d.to_path_buf(), format!("cannot create it: {e}"))
            })?;
            d.to_path_buf()
        }
        None => results
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    };
    if linux {
        let new = linux_compare::load(results)?;
        let base = linux_compare::load(baseline)?;
        let cmp = linux_compare::LinuxComparison::new(
            &baseline.display().to_string(),
            &base,
            &new,
            threshold_pct,
        );
        let report = dir.join("report.md");
        write_atomically(
            &report,
            &(super::linux::markdown(&new) + "\n" + &cmp.render(true)),
        )?;
        print!("{}", cmp.render(false));
        return Ok(cmp.conclude(&report));
    }
    let new = Results::load(results)?;
    let base = Results::load(baseline)?;
    let cmp = Comparison::new(&baseline.display().to_string(), &base, &new, threshold_pct);
    conclude(&new, Some(&cmp), &dir.join("report.md"))
}

/// `k42vmm bench accept RESULTS`: make RESULTS the baseline of its host
/// class in `dir`.
pub fn accept(results: &Path, dir: &Path) -> Result<u8, BenchError> {
    if std::fs::read_to_string(results).is_ok_and(|t| linux_compare::is_linux_results(&t)) {
        return accept_linux(results, dir);
    }
    let r = Results::load(results)?;
    let thin: Vec<String> = r
        .points()
        .filter(|(_, _, p)| p.samples.len() < MIN_SAMPLES)
        .map(|(b, s, p)| format!("{} {} at {} vCPUs", b.name, s.label, p.vcpus))
        .collect();
    if !thin.is_empty() {
        eprintln!(
            "k42vmm bench: warning: fewer than {MIN_SAMPLES} samples, so never judged against this baseline: {}",
            thin.join(", ")
        );
    }
    std::fs::create_dir_all(dir).map_err(|e| BenchError::Write(dir.to_path_buf(), e))?;
    let path = dir.join(format!("{}.json", r.provenance.host.class));
    r.write(&path)?;
    println!(
        "accepted {} (revision {}, run {}) as the baseline for host class {}: {}",
        results.display(),
        r.provenance.git.revision,
        r.provenance.started,
        r.provenance.host.class,
        path.display()
    );
    Ok(0)
}

/// `k42vmm bench accept` of a linux-suite results file: it becomes
/// `DIR/<host class>.linux.json`, beside the sweeps' baseline.
fn accept_linux(results: &Path, dir: &Path) -> Result<u8, BenchError> {
    let r = linux_compare::load(results)?;
    if r.provenance.quick {
        return Err(BenchError::BadOption {
            option: "accept",
            value: results.display().to_string(),
            why: "a --quick run has no figures to judge against".into(),
        });
    }
    if (r.provenance.samples as usize) < MIN_SAMPLES {
        eprintln!(
            "k42vmm bench: warning: {} samples (fewer than {MIN_SAMPLES}), so never judged against this baseline",
            r.provenance.samples
        );
    }
    std::fs::create_dir_all(dir).map_err(|e| BenchError::Write(dir.to_path_buf(), e))?;
    let path = linux_baseline(dir, &r.provenance.host.class);
    let json = serde_json::to_string_pretty(&r).expect("results serialise") + "\n";
    write_atomically(&path, &json)?;
    println!(
        "accepted {} (revision {}, run {}) as the linux-suite baseline for host class {}: {}",
        results.display(),
        r.provenance.git.revision,
        r.provenance.started,
        r.provenance.host.class,
        path.display()
    );
    Ok(0)
}

/// Where `bench accept` puts host class `class`'s linux-suite baseline.
pub fn linux_baseline(dir: &Path, class: &str) -> PathBuf {
    dir.join(format!("{class}.linux.json"))
}

/// `k42vmm bench list`.
pub fn list() -> u8 {
    print!("{}", catalog::listing());
    0
}

/// `k42vmm bench host-class`: this host's class, the baseline file name.
pub fn host_class() -> u8 {
    println!("{}", provenance::host().class);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(parse_threshold("5"), Ok(5.0));
        assert_eq!(parse_threshold("2.5%"), Ok(2.5));
        for bad in ["0", "100", "-3", "five", ""] {
            assert!(parse_threshold(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_samples("3"), Ok(3));
        for bad in ["0", "1001", "-1", "x", ""] {
            assert!(parse_samples(bad).is_err(), "{bad}");
        }
        let e = option("--samples", "0", parse_samples).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--samples 0: give a number of boots per point from 1 to 1000"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn selections() {
        let (suite, b) = select(None, &[]).unwrap();
        assert_eq!(suite.as_deref(), Some(catalog::DEFAULT_SUITE));
        assert!(!b.is_empty());
        let (suite, b) = select(None, &["platform.syscall".into()]).unwrap();
        assert_eq!((suite, b[0].name), (None, "platform.syscall"));
        let e = select(None, &["nope".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown benchmark 'nope' (k42vmm bench list shows them)"
        );
        assert_eq!(e.exit_code(), 2);
        let e = select(Some("nope"), &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unknown suite 'nope' (known: nightly")
        );
        let e = select(Some("nightly"), &["platform.spin".into()]).unwrap_err();
        assert!(matches!(e, BenchError::SuiteAndBenchmarks(_)), "{e}");
        let twice = ["platform.spin".into(), "platform.spin".into()];
        assert!(matches!(
            select(None, &twice),
            Err(BenchError::DuplicateBenchmark(_))
        ));
    }
}
