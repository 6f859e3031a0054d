//! Running a sweep: which vCPU counts, which boots in which order, and
//! running each boot as a child `k42vmm run` while showing progress.
//!
//! Every boot is a fresh `k42vmm run --vcpus N --cmdline C --report FILE
//! IMAGE` child process (this same executable), not an in-process VM:
//! it is exactly the path users run (placement, pinning, exit handling,
//! report) with nothing left over from the previous boot — memory
//! mappings, vCPU threads, signal state — and a guest that crashes or
//! hangs ends one child (its `--timeout` stops it), not the sweep. The
//! cost, a few milliseconds of process start per boot, is small next to
//! the boot itself.
//!
//! Benchmarks with the same kernel command line form one *group* and are
//! measured in the same boots: their guest runs are identical, so booting
//! it once per benchmark would only repeat the same work. Boots go
//! sample by sample, and within a sample over every group and vCPU count,
//! so a slow drift in the host's load spreads over all points instead of
//! biasing one.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::BenchError;
use super::catalog::Benchmark;
use crate::report::Report;

/// The most vCPUs a VM can have.
const MAX_VCPUS: u32 = k42_abi::MAX_VCPUS as u32;

/// `--vcpus`: a list of counts, or `auto`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuSpec {
    /// Powers of two up to the usable host CPUs, and that count itself.
    Auto,
    /// These counts, ascending, each once.
    List(Vec<u32>),
}

impl VcpuSpec {
    /// Parse `auto` or a list like `1,2,4,8`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t == "auto" {
            return Ok(Self::Auto);
        }
        let mut counts = Vec::new();
        for part in t.split(',') {
            let part = part.trim();
            let n: u32 = part.parse().map_err(|_| {
                format!(
                    "'{part}' is not a vCPU count (give a list such as 1,2,4, or the word auto)"
                )
            })?;
            if n == 0 || n > MAX_VCPUS {
                return Err(format!("{n} is not between 1 and {MAX_VCPUS} vCPUs"));
            }
            if counts.contains(&n) {
                return Err(format!("{n} appears twice"));
            }
            counts.push(n);
        }
        counts.sort_unstable();
        Ok(Self::List(counts))
    }

    /// The counts to sweep on a host with `host_cpus` usable CPUs. Counts
    /// above it are refused unless `allow_overcommit`; `auto` never goes
    /// above it.
    pub fn counts(&self, host_cpus: u32, allow_overcommit: bool) -> Result<Vec<u32>, BenchError> {
        match self {
            Self::Auto => {
                let host = host_cpus.clamp(1, MAX_VCPUS);
                let mut v: Vec<u32> = (0..8).map(|i| 1u32 << i).filter(|&n| n < host).collect();
                v.push(host);
                Ok(v)
            }
            Self::List(v) => {
                if let Some(&n) = v.iter().find(|&&n| n > host_cpus)
                    && !allow_overcommit
                {
                    return Err(BenchError::Overcommit {
                        vcpus: n,
                        host_cpus,
                    });
                }
                Ok(v.clone())
            }
        }
    }
}

/// Benchmarks measured in the same boots.
#[derive(Clone, Debug)]
pub struct Group {
    pub cmdline: &'static str,
    pub benchmarks: Vec<&'static Benchmark>,
    /// The longest timeout of its benchmarks.
    pub timeout: Duration,
}

impl Group {
    /// How the group is named in progress lines, messages and file names.
    pub fn name(&self) -> String {
        self.benchmarks
            .iter()
            .map(|b| b.name)
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// Group `benchmarks` by command line, keeping their order.
pub fn groups(benchmarks: &[&'static Benchmark]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for &b in benchmarks {
        let timeout = Duration::from_secs(b.timeout_s);
        match out.iter_mut().find(|g| g.cmdline == b.cmdline) {
            Some(g) => {
                g.benchmarks.push(b);
                g.timeout = g.timeout.max(timeout);
            }
            None => out.push(Group {
                cmdline: b.cmdline,
                benchmarks: vec![b],
                timeout,
            }),
        }
    }
    out
}

/// One boot of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boot {
    /// Index into the groups.
    pub group: usize,
    pub vcpus: u32,
    /// 1-based.
    pub sample: u32,
}

/// Every boot of a sweep, in the order they run (module documentation).
pub fn schedule(groups: usize, counts: &[u32], samples: u32) -> Vec<Boot> {
    let mut v = Vec::new();
    for sample in 1..=samples {
        for group in 0..groups {
            for &vcpus in counts {
                v.push(Boot {
                    group,
                    vcpus,
                    sample,
                });
            }
        }
    }
    v
}

/// What one boot produced.
#[derive(Clone, Debug)]
pub struct BootResult {
    pub boot: Boot,
    /// Its run report, parsed.
    pub report: Report,
    /// The same report as JSON, for fields this k42vmm's [`Report`] may
    /// not know (the placement plan).
    pub raw: serde_json::Value,
    /// The report's path relative to the results directory.
    pub report_file: String,
}

/// Run `k42vmm run` for one boot, keeping its report in `dir/runs/`.
pub fn run_boot(
    k42vmm: &Path,
    image: &Path,
    dir: &Path,
    group: &Group,
    boot: Boot,
) -> Result<BootResult, BenchError> {
    let rel = format!(
        "runs/{}-{}vcpu-s{}.json",
        group.name(),
        boot.vcpus,
        boot.sample
    );
    let report = dir.join(&rel);
    let what = || {
        format!(
            "{} at {} vCPUs, sample {}",
            group.name(),
            boot.vcpus,
            boot.sample
        )
    };
    let n = boot.vcpus.to_string();
    let timeout = format!("{}s", group.timeout.as_secs().max(1));
    let out = Command::new(k42vmm)
        .args(["run", "--vcpus", &n, "--timeout", &timeout, "--cmdline"])
        .arg(group.cmdline)
        .arg("--report")
        .arg(&report)
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError::Host(format!("cannot start {}: {e}", k42vmm.display())))?;
    if !out.status.success() {
        // Keep the guest console next to the report for whoever debugs it.
        let console = dir.join(format!("{}.console", rel.trim_end_matches(".json")));
        let _ = std::fs::write(&console, &out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(BenchError::RunFailed {
            what: what(),
            status: out
                .status
                .code()
                .map_or_else(|| out.status.to_string(), |c| format!("exit {c}")),
            detail: format!(
                "{} (guest console in {})",
                tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
                console.display()
            ),
        });
    }
    let text = std::fs::read_to_string(&report).map_err(|e| BenchError::RunFailed {
        what: what(),
        status: "exit 0".into(),
        detail: format!("no run report {}: {e}", report.display()),
    })?;
    let bad = |e: serde_json::Error| BenchError::RunFailed {
        what: what(),
        status: "exit 0".into(),
        detail: format!("unreadable run report {}: {e}", report.display()),
    };
    let raw: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    let parsed: Report = serde_json::from_value(raw.clone()).map_err(bad)?;
    Ok(BootResult {
        boot,
        report: parsed,
        raw,
        report_file: rel,
    })
}

/// Progress of a sweep: a bar with ETA on a terminal, plain lines on
/// stderr otherwise.
pub enum Progress {
    Bar(ProgressBar),
    Lines {
        total: usize,
        done: usize,
        started: Instant,
    },
}

impl Progress {
    /// A bar when stderr is a terminal, lines otherwise.
    pub fn new(total: usize) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} boots, ETA {eta}  {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            Self::Bar(bar)
        } else {
            Self::Lines {
                total,
                done: 0,
                started: Instant::now(),
            }
        }
    }

    /// A boot is starting.
    pub fn start(&mut self, what: &str) {
        match self {
            Self::Bar(bar) => bar.set_message(what.to_string()),
            Self::Lines { total, done, .. } => {
                eprintln!("k42vmm bench: [{}/{total}] {what}", *done + 1)
            }
        }
    }

    /// A boot finished.
    pub fn finish_one(&mut self, took: Duration) {
        match self {
            Self::Bar(bar) => bar.inc(1),
            Self::Lines {
                total,
                done,
                started,
            } => {
                *done += 1;
                let left = *total - *done;
                let eta = started.elapsed().as_secs_f64() / *done as f64 * left as f64;
                eprintln!(
                    "k42vmm bench: [{done}/{total}] done in {:.1} s, ETA {:.0} s",
                    took.as_secs_f64(),
                    eta
                );
            }
        }
    }

    /// The sweep is over (or failed): clear the bar.
    pub fn finish(self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Where to put a sweep's results when `--out` is not given:
/// `target/bench/<UTC time>`.
pub fn default_out_dir() -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "-");
    PathBuf::from("target/bench").join(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::catalog;

    #[test]
    fn vcpu_lists() {
        assert_eq!(VcpuSpec::parse("auto"), Ok(VcpuSpec::Auto));
        assert_eq!(VcpuSpec::parse("4,1,2"), Ok(VcpuSpec::List(vec![1, 2, 4])));
        assert_eq!(VcpuSpec::parse(" 8 "), Ok(VcpuSpec::List(vec![8])));
        for (bad, why) in [
            ("", "not a vCPU count"),
            ("1,,2", "not a vCPU count"),
            ("1,x", "'x' is not a vCPU count"),
            ("0", "not between 1 and 255"),
            ("256", "not between 1 and 255"),
            ("1,2,2", "2 appears twice"),
            ("-1", "not a vCPU count"),
        ] {
            let e = VcpuSpec::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn auto_stays_within_the_host_and_lists_need_permission_to_overcommit() {
        assert_eq!(VcpuSpec::Auto.counts(1, false).unwrap(), vec![1]);
        assert_eq!(VcpuSpec::Auto.counts(2, false).unwrap(), vec![1, 2]);
        assert_eq!(
            VcpuSpec::Auto.counts(16, false).unwrap(),
            vec![1, 2, 4, 8, 16]
        );
        assert_eq!(
            VcpuSpec::Auto.counts(12, false).unwrap(),
            vec![1, 2, 4, 8, 12]
        );
        assert_eq!(
            VcpuSpec::Auto.counts(512, false).unwrap().last(),
            Some(&255)
        );
        let four = VcpuSpec::List(vec![1, 4]);
        let e = four.counts(2, false).unwrap_err();
        assert!(matches!(
            e,
            BenchError::Overcommit {
                vcpus: 4,
                host_cpus: 2
            }
        ));
        assert_eq!(four.counts(2, true).unwrap(), vec![1, 4]);
    }

    #[test]
    fn benchmarks_with_one_command_line_share_boots() {
        let spin = catalog::benchmark("platform.spin").unwrap();
        let sys = catalog::benchmark("platform.syscall").unwrap();
        let g = groups(&[spin, sys]);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].name(), "platform.spin+platform.syscall");
        let s = schedule(2, &[1, 2], 3);
        assert_eq!(s.len(), 12);
        // Sample-major: every point gets its first sample before any gets a second.
        assert_eq!(s[..4].iter().map(|b| b.sample).collect::<Vec<_>>(), [1; 4]);
        assert_eq!(
            s[..4]
                .iter()
                .map(|b| (b.group, b.vcpus))
                .collect::<Vec<_>>(),
            [(0, 1), (0, 2), (1, 1), (1, 2)]
        );
    }
}
