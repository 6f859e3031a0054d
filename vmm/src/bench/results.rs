//! `results.json`: what a sweep measured, with the provenance to trust or
//! reproduce it, and the rules that turn the guest's raw records into
//! figures.
//!
//! ```text
//! Results { schema, kind, provenance, benchmarks }
//!   provenance: when, command line, k42vmm version and git revision,
//!               guest image (name, sha256, ABI), host (class, CPU model,
//!               CPUs, cores, nodes, kernel, KVM), selection, rules,
//!               placement per vCPU count
//!   benchmarks[]: name, cmdline, series[]
//!     series: label, record, mode, points[]
//!       point: vCPUs, overcommitted, samples[] (throughput + the raw
//!              records of one boot), median, min, max, efficiency
//! ```
//!
//! Every figure is recomputable from the raw records it keeps. Readers
//! refuse a file whose `schema` is not [`RESULTS_SCHEMA`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BenchError;
use super::catalog::{Benchmark, Series};
use crate::report::BenchResult;

/// Version of the results schema; bump on any incompatible change.
pub const RESULTS_SCHEMA: u32 = 1;

/// The `kind` field every results file carries.
pub const RESULTS_KIND: &str = "k42vmm-bench-results";

/// Unit of every throughput figure.
pub const UNIT: &str = "ops/s";

/// How one boot's records become one throughput figure.
pub const THROUGHPUT_RULE: &str = "throughput of one boot = (sum over its N vCPUs of iterations) / \
     (the largest elapsed_ns of any vCPU) x 1e9, in operations per second: \
     the work all vCPUs did in the time the slowest of them took; every \
     vCPU must report exactly one record";

/// How scaling efficiency is computed from the medians.
pub const EFFICIENCY_RULE: &str = "efficiency at N vCPUs = median(N) / ((N / N0) x median(N0)), \
     N0 the smallest vCPU count swept (normally 1): 1.0 is linear scaling";

/// A whole sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`RESULTS_SCHEMA`].
    pub schema: u32,
    /// [`RESULTS_KIND`].
    pub kind: String,
    pub provenance: Provenance,
    pub benchmarks: Vec<BenchmarkResults>,
}

/// Where, when, with what and how the figures were taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Start and end of the sweep, RFC 3339 UTC.
    pub started: String,
    pub finished: String,
    /// The k42vmm command line, one argument per element.
    pub command_line: Vec<String>,
    pub k42vmm_version: String,
    pub git: GitInfo,
    pub guest: GuestInfo,
    pub host: HostInfo,
    pub selection: Selection,
    pub rules: Rules,
    /// Where the vCPUs ran, per vCPU count swept.
    pub placement: Vec<PlacementRecord>,
}

/// The source revision k42vmm was built from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GitInfo {
    /// Commit id, or "unknown".
    pub revision: String,
    /// `git` (git rev-parse at build time), `env` (K42VMM_GIT_REVISION at
    /// build time) or `none`.
    pub source: String,
    /// Whether the checkout k42vmm was built from had uncommitted changes
    /// to tracked files when the sweep ran; `None` when that checkout is
    /// gone or now at another revision.
    pub tree_dirty: Option<bool>,
}

/// The guest that ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuestInfo {
    /// Image path as given.
    pub image: String,
    /// Name in the image manifest.
    pub image_name: String,
    /// SHA-256 of the image file: identifies the guest build.
    pub image_sha256: String,
    /// The shared-abi version the kernel was built for (k42vmm checks it
    /// equals its own).
    pub abi_version: u32,
    /// Boot modules in the image (user programs).
    pub modules: Vec<String>,
}

/// The host that ran the sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Which baselines this host's figures compare with:
    /// `<cpu model>.<online CPUs>cpu.<kvm module>`, slugged.
    pub class: String,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Online logical CPUs.
    pub cpus_online: u32,
    /// Logical CPUs this process may run on (its affinity mask).
    pub cpus_usable: u32,
    /// Physical cores (distinct package/core pairs), if sysfs says.
    pub cores: Option<u32>,
    /// NUMA nodes (1 when sysfs shows none).
    pub nodes: u32,
    /// Host kernel release and version (/proc/sys/kernel/osrelease, version).
    pub kernel: String,
    /// The KVM module: kvm_pvm, kvm_intel, kvm_amd or unknown.
    pub kvm: String,
    /// How guest supervisor code ran ("native" or "emulated"), as the
    /// first boot measured it.
    pub supervisor_mode: Option<String>,
}

/// What was asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// `--suite`, when the benchmarks came from one.
    pub suite: Option<String>,
    pub benchmarks: Vec<String>,
    pub vcpus: Vec<u32>,
    pub samples: u32,
    pub allow_overcommit: bool,
}

/// The rules behind the figures, in words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    pub throughput: String,
    pub efficiency: String,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            throughput: THROUGHPUT_RULE.into(),
            efficiency: EFFICIENCY_RULE.into(),
        }
    }
}

/// Where the vCPUs of the boots with one vCPU count ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlacementRecord {
    pub vcpus: u32,
    /// More vCPUs than usable host CPUs.
    pub overcommitted: bool,
    pub host_cpus_usable: u32,
    /// The placement plan `k42vmm run` applied (its report's `placement`:
    /// pin and NUMA policy, vCPU → host CPU → host node → guest node,
    /// memory per node), kept as the report has it.
    pub plan: Option<serde_json::Value>,
    /// Each vCPU thread's CPU affinity as read back after pinning (the run
    /// report's `vcpu_affinity`), when reported.
    pub vcpu_affinity: Option<Vec<String>>,
    /// The same in words.
    pub note: String,
}

/// One benchmark's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkResults {
    pub name: String,
    pub description: String,
    pub cmdline: String,
    /// What one operation is.
    pub op: String,
    /// [`UNIT`].
    pub unit: String,
    pub series: Vec<SeriesResults>,
}

/// One implementation's curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesResults {
    pub label: String,
    /// The guest record name it is made of.
    pub record: String,
    /// "user" or "supervisor".
    pub mode: String,
    /// Ascending by vCPU count.
    pub points: Vec<Point>,
}

/// All samples at one vCPU count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub vcpus: u32,
    pub overcommitted: bool,
    pub samples: Vec<Sample>,
    /// Median, smallest and largest sample throughput.
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// By [`EFFICIENCY_RULE`]; `None` when the base point is missing.
    pub efficiency: Option<f64>,
}

/// One boot's figure and the records it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The boot's run report, relative to the results directory.
    pub run_report: String,
    /// By [`THROUGHPUT_RULE`].
    pub throughput: f64,
    /// The guest's records for this series, by vCPU.
    pub records: Vec<RawRecord>,
}

/// One guest record, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    pub cpu: u32,
    pub iterations: u64,
    pub elapsed_ns: u64,
}

/// Median, min and max of a non-empty sample set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: usize,
}

impl Stats {
    /// Statistics of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        let median = super::median(&mut v);
        Some(Self {
            median,
            min: v[0],
            max: v[v.len() - 1],
            samples: v.len(),
        })
    }
}

/// The throughput of one boot for `series` at `vcpus` vCPUs, by
/// [`THROUGHPUT_RULE`], and the records it used.
pub fn throughput(
    series: &Series,
    vcpus: u32,
    all: &[BenchResult],
) -> Result<(f64, Vec<RawRecord>), String> {
    let mut records: Vec<RawRecord> = all
        .iter()
        .filter(|r| r.name == series.record && r.mode == series.mode.name())
        .map(|r| RawRecord {
            cpu: r.cpu,
            iterations: r.iterations,
            elapsed_ns: r.elapsed_ns,
        })
        .collect();
    records.sort_by_key(|r| r.cpu);
    let what = format!("{} ({})", series.record, series.mode.name());
    if let Some(w) = records.windows(2).find(|w| w[0].cpu == w[1].cpu) {
        return Err(format!(
            "the guest reported {what} twice from vCPU {}",
            w[0].cpu
        ));
    }
    if let Some(r) = records.iter().find(|r| r.cpu >= vcpus) {
        return Err(format!(
            "the guest reported {what} from vCPU {}, but the VM had {vcpus}",
            r.cpu
        ));
    }
    if records.len() != vcpus as usize {
        return Err(format!(
            "the guest reported {what} from {} of {vcpus} vCPUs",
            records.len()
        ));
    }
    if let Some(r) = records
        .iter()
        .find(|r| r.iterations == 0 || r.elapsed_ns == 0)
    {
        return Err(format!(
            "the guest reported {what} from vCPU {} with {} iterations in {} ns",
            r.cpu, r.iterations, r.elapsed_ns
        ));
    }
    let ops: u64 = records.iter().map(|r| r.iterations).sum();
    let slowest = records.iter().map(|r| r.elapsed_ns).max().unwrap_or(1);
    Ok((ops as f64 / slowest as f64 * 1e9, records))
}

impl Point {
    /// A point from its samples (at least one); efficiency is filled in
    /// by [`SeriesResults::new`].
    pub fn new(vcpus: u32, overcommitted: bool, samples: Vec<Sample>) -> Self {
        let t: Vec<f64> = samples.iter().map(|s| s.throughput).collect();
        let st = Stats::of(&t).unwrap_or(Stats {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
            samples: 0,
        });
        Self {
            vcpus,
            overcommitted,
            samples,
            median: st.median,
            min: st.min,
            max: st.max,
            efficiency: None,
        }
    }

    /// The sample throughputs.
    pub fn throughputs(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.throughput).collect()
    }

    /// Median, range and count of the samples.
    pub fn stats(&self) -> Option<Stats> {
        Stats::of(&self.throughputs())
    }
}

impl SeriesResults {
    /// A series' curve from its points (any order), with efficiencies.
    pub fn new(series: &Series, mut points: Vec<Point>) -> Self {
        points.sort_by_key(|p| p.vcpus);
        if let Some(base) = points.first().map(|p| (p.vcpus, p.median)) {
            for p in &mut points {
                let ideal = p.vcpus as f64 / base.0 as f64 * base.1;
                p.efficiency = (ideal > 0.0).then(|| p.median / ideal);
            }
        }
        Self {
            label: series.label.into(),
            record: series.record.into(),
            mode: series.mode.name().into(),
            points,
        }
    }
}

impl BenchmarkResults {
    /// An empty entry for `b`.
    pub fn describe(b: &Benchmark, series: Vec<SeriesResults>) -> Self {
        Self {
            name: b.name.into(),
            description: b.description.into(),
            cmdline: b.cmdline.into(),
            op: b.op.into(),
            unit: UNIT.into(),
            series,
        }
    }
}

impl Results {
    /// Results with the current schema.
    pub fn new(provenance: Provenance, benchmarks: Vec<BenchmarkResults>) -> Self {
        Self {
            schema: RESULTS_SCHEMA,
            kind: RESULTS_KIND.into(),
            provenance,
            benchmarks,
        }
    }

    /// The point of `bench`/`series` at `vcpus` vCPUs.
    pub fn point(&self, bench: &str, series: &str, vcpus: u32) -> Option<&Point> {
        self.benchmarks
            .iter()
            .find(|b| b.name == bench)?
            .series
            .iter()
            .find(|s| s.label == series)?
            .points
            .iter()
            .find(|p| p.vcpus == vcpus)
    }

    /// Every point with its benchmark and series, in order.
    pub fn points(&self) -> impl Iterator<Item = (&BenchmarkResults, &SeriesResults, &Point)> {
        self.benchmarks.iter().flat_map(|b| {
            b.series
                .iter()
                .flat_map(move |s| s.points.iter().map(move |p| (b, s, p)))
        })
    }

    /// Parse a results file's text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, BenchError> {
        let malformed = |why: String| BenchError::Malformed {
            path: path.to_path_buf(),
            why,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| malformed(format!("not JSON ({e})")))?;
        if value.get("kind").and_then(|k| k.as_str()) != Some(RESULTS_KIND) {
            return Err(malformed(format!(
                "it has no \"kind\": \"{RESULTS_KIND}\" field"
            )));
        }
        match value.get("schema").and_then(|s| s.as_u64()) {
            Some(v) if v == RESULTS_SCHEMA as u64 => {}
            Some(v) => {
                return Err(BenchError::SchemaMismatch {
                    path: path.to_path_buf(),
                    found: v,
                    want: RESULTS_SCHEMA,
                });
            }
            None => return Err(malformed("it has no numeric \"schema\" field".into())),
        }
        serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
    }

    /// Read and check a results file.
    pub fn load(path: &Path) -> Result<Self, BenchError> {
        if path.is_dir() {
            return Err(BenchError::Malformed {
                path: path.to_path_buf(),
                why: "is a directory, not a results file".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BenchError::NoSuchFile(path.to_path_buf()),
            _ => BenchError::Malformed {
                path: path.to_path_buf(),
                why: format!("cannot read it: {e}"),
            },
        })?;
        Self::parse(path, &text)
    }

    /// Write as pretty JSON, atomically (temporary file, rename).
    pub fn write(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(self).expect("results always serialise");
        super::write_atomically(path, &(text + "\n"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use k42_abi::bench::BenchMode;

    use super::*;

    const SPIN: Series = Series {
        label: "user",
        record: "platform.spin",
        mode: BenchMode::User,
    };

    fn rec(name: &str, cpu: u32, mode: &str, iterations: u64, elapsed_ns: u64) -> BenchResult {
        BenchResult {
            name: name.into(),
            cpu,
            mode: mode.into(),
            iterations,
            elapsed_ns,
        }
    }

    /// A small but complete results document: one benchmark, one series,
    /// points at 1 and 2 vCPUs with `samples` samples each of the given
    /// throughputs (2-vCPU values are `2 * factor` times the 1-vCPU ones).
    pub(crate) fn sample_results(t1: &[f64], factor: f64) -> Results {
        let samples = |n: u32, ts: &[f64], f: f64| -> Vec<Sample> {
            ts.iter()
                .enumerate()
                .map(|(i, t)| Sample {
                    run_report: format!("runs/x-{n}vcpu-s{}.json", i + 1),
                    throughput: t * f,
                    records: (0..n)
                        .map(|cpu| RawRecord {
                            cpu,
                            iterations: 1000,
                            elapsed_ns: 1_000_000,
                        })
                        .collect(),
                })
                .collect()
        };
        let series = SeriesResults::new(
            &SPIN,
            vec![
                Point::new(2, false, samples(2, t1, 2.0 * factor)),
                Point::new(1, false, samples(1, t1, 1.0)),
            ],
        );
        let bench = crate::bench::catalog::benchmark("platform.spin").unwrap();
        Results::new(
            Provenance {
                started: "2026-01-01T00:00:00Z".into(),
                finished: "2026-01-01T00:01:00Z".into(),
                command_line: vec!["k42vmm".into(), "bench".into()],
                k42vmm_version: "0.1.0".into(),
                git: GitInfo {
                    revision: "0123456789abcdef0123456789abcdef01234567".into(),
                    source: "git".into(),
                    tree_dirty: Some(false),
                },
                guest: GuestInfo {
                    image: "target/images/default.img".into(),
                    image_name: "default".into(),
                    image_sha256: "00".repeat(32),
                    abi_version: k42_abi::ABI_VERSION,
                    modules: vec!["platform-bench".into()],
                },
                host: HostInfo {
                    class: "amd-epyc.2cpu.kvm-pvm".into(),
                    cpu_model: "AMD EPYC".into(),
                    cpus_online: 2,
                    cpus_usable: 2,
                    cores: Some(2),
                    nodes: 1,
                    kernel: "6.18 #1 SMP".into(),
                    kvm: "kvm_pvm".into(),
                    supervisor_mode: Some("emulated".into()),
                },
                selection: Selection {
                    suite: None,
                    benchmarks: vec!["platform.spin".into()],
                    vcpus: vec![1, 2],
                    samples: t1.len() as u32,
                    allow_overcommit: false,
                },
                rules: Rules::default(),
                placement: vec![PlacementRecord {
                    vcpus: 2,
                    overcommitted: false,
                    host_cpus_usable: 2,
                    plan: Some(serde_json::json!({
                        "pin": "auto (default)",
                        "numa": "auto (default)",
                        "vcpu": [{"vcpu": 0, "host_cpu": 0}, {"vcpu": 1, "host_cpu": 1}],
                    })),
                    vcpu_affinity: Some(vec!["0".into(), "1".into()]),
                    note: "pinned".into(),
                }],
            },
            vec![BenchmarkResults::describe(bench, vec![series])],
        )
    }

    #[test]
    fn throughput_is_total_work_over_the_slowest_vcpu() {
        let all = [
            rec("platform.spin", 0, "user", 1000, 1_000_000),
            rec("platform.spin", 1, "user", 1000, 2_000_000),
            rec("platform.spin", 0, "supervisor", 5, 5),
            rec("platform.syscall", 0, "user", 7, 7),
        ];
        let (t, used) = throughput(&SPIN, 2, &all).unwrap();
        assert_eq!(t, 2000.0 / 2e-3);
        assert_eq!(used.len(), 2);
        assert_eq!(used[1].elapsed_ns, 2_000_000);
    }

    #[test]
    fn throughput_needs_one_record_from_every_vcpu() {
        let one = [rec("platform.spin", 0, "user", 1000, 1000)];
        let e = throughput(&SPIN, 2, &one).unwrap_err();
        assert!(e.contains("from 1 of 2 vCPUs"), "{e}");
        let twice = [
            rec("platform.spin", 0, "user", 1000, 1000),
            rec("platform.spin", 0, "user", 1000, 1000),
        ];
        assert!(throughput(&SPIN, 2, &twice).unwrap_err().contains("twice"));
        let stray = [rec("platform.spin", 3, "user", 1000, 1000)];
        assert!(
            throughput(&SPIN, 1, &stray)
                .unwrap_err()
                .contains("from vCPU 3")
        );
        let zero = [rec("platform.spin", 0, "user", 1000, 0)];
        assert!(throughput(&SPIN, 1, &zero).unwrap_err().contains("0 ns"));
    }

    #[test]
    fn points_have_statistics_and_efficiency() {
        let r = sample_results(&[100.0, 300.0, 200.0], 0.75);
        let p1 = r.point("platform.spin", "user", 1).unwrap();
        assert_eq!((p1.median, p1.min, p1.max), (200.0, 100.0, 300.0));
        assert_eq!(p1.efficiency, Some(1.0));
        let p2 = r.point("platform.spin", "user", 2).unwrap();
        assert_eq!(p2.median, 300.0);
        assert_eq!(p2.efficiency, Some(0.75));
        assert_eq!(r.points().count(), 2);
    }

    #[test]
    fn results_round_trip_through_json() {
        let r = sample_results(&[100.0, 110.0, 120.0], 0.9);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        r.write(&path).unwrap();
        let back = Results::load(&path).unwrap();
        assert_eq!(back, r);
        let text = std::fs::read_to_string(&path).unwrap();
        for field in [
            "\"schema\": 1",
            "\"kind\": \"k42vmm-bench-results\"",
            "\"cpu_model\"",
            "\"revision\"",
            "\"image_sha256\"",
            "\"efficiency\"",
            "\"elapsed_ns\"",
            "\"placement\"",
        ] {
            assert!(text.contains(field), "results.json lacks {field}");
        }
    }

    #[test]
    fn bad_files_are_named_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        let e = Results::load(&p).unwrap_err();
        assert!(matches!(e, BenchError::NoSuchFile(_)), "{e}");
        std::fs::write(&p, "{ not json").unwrap();
        let e = Results::load(&p).unwrap_err().to_string();
        assert!(e.contains("r.json") && e.contains("not JSON"), "{e}");
        std::fs::write(&p, "{\"schema\": 1}").unwrap();
        let e = Results::load(&p).unwrap_err().to_string();
        assert!(e.contains("kind"), "{e}");
        let mut v = serde_json::to_value(sample_results(&[1.0, 2.0, 3.0], 1.0)).unwrap();
        v["schema"] = serde_json::json!(RESULTS_SCHEMA + 1);
        std::fs::write(&p, v.to_string()).unwrap();
        let e = Results::load(&p).unwrap_err();
        assert!(
            matches!(e, BenchError::SchemaMismatch { found: 2, .. }),
            "{e}"
        );
        v["schema"] = serde_json::json!(RESULTS_SCHEMA);
        v["benchmarks"] = serde_json::json!("lots");
        std::fs::write(&p, v.to_string()).unwrap();
        let e = Results::load(&p).unwrap_err().to_string();
        assert!(e.contains("not a k42vmm bench results file"), "{e}");
        assert!(
            Results::load(dir.path())
                .unwrap_err()
                .to_string()
                .contains("is a directory")
        );
    }
}
