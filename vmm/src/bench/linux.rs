//! `k42vmm bench --suite linux`: Linux programs through the K42
//! personality next to host Linux running the same static binary, pinned
//! to the same host CPU, in the same invocation.
//!
//! ```text
//! image: /bin/k42-lbench (bench/linux/k42-lbench.c, gcc -static),
//!        /bin/busybox, /etc/k42-sdet.sh
//!   guest, per sample: k42vmm run --vcpus 1 --pin C IMAGE -- busybox sh -c
//!        'k42-lbench bare N && … getppid N && … spawn S /bin/true
//!         && … pipe M && … sdet /bin/busybox /etc/k42-sdet.sh'
//!   host, per sample:  the same bytes, copied out of the image into
//!        DIR/host (busybox's applets linked there, `true` among them),
//!        each k42-lbench run pinned to C (sched_setaffinity)
//!   split: one more guest run of the script, traced (syscall, sched,
//!        idle), its events inside the script's interval summed up
//! ```
//!
//! Every figure is a `lbench NAME iterations=N ns=T …` line the program
//! printed (CLOCK_MONOTONIC on both sides); the host computes medians and
//! ratios and judges nothing but prints the null call's ratio to the
//! bare `syscall` round trip beside the 1.3x aim.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::command::SweepOptions;
use super::driver::fmt_ns;
use super::results::{GitInfo, GuestInfo, HostInfo};
use super::{BenchError, median, provenance, write_atomically};
use crate::trace::ctf;

/// The suite's name.
pub const SUITE: &str = "linux";

/// One line for `k42vmm bench list`.
pub const DESCRIPTION: &str = "Linux programs through the personality vs host Linux running the same static k42-lbench, pinned to the same host CPU: getppid, the bare syscall round trip, fork+exec+wait of busybox true and of one empty program static and dynamically linked, pipe throughput, an SDET-like busybox script with its guest time split";

/// The `kind` of a linux-suite results file.
pub const LINUX_RESULTS_KIND: &str = "k42vmm-bench-linux-results";

/// Version of that schema.
pub const LINUX_RESULTS_SCHEMA: u32 = 1;

/// The personality's null call may cost at most this many bare `syscall`
/// round trips (issue 15's aim; printed, never asserted).
pub const NULL_CALL_AIM: f64 = 1.3;

/// The image modules the suite runs, and where the guest sees them.
const LBENCH_MODULE: &str = "fs/bin/k42-lbench";
const BUSYBOX_MODULE: &str = "fs/bin/busybox";
const SDET_MODULE: &str = "fs/etc/k42-sdet.sh";
const TRUE_STATIC_MODULE: &str = "fs/bin/k42-true-static";
const TRUE_DYNAMIC_MODULE: &str = "fs/bin/k42-true-dynamic";

/// How much each measurement does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    /// getppid calls and bare `syscall`s per sample.
    pub syscalls: u64,
    /// fork+exec+wait cycles per sample.
    pub spawns: u64,
    /// MiB through the pipe per sample.
    pub pipe_mib: u64,
}

/// Figures worth having.
pub const FULL: Sizes = Sizes {
    syscalls: 100_000,
    spawns: 20,
    pipe_mib: 16,
};

/// `--quick`: that everything runs, not figures.
pub const QUICK: Sizes = Sizes {
    syscalls: 1000,
    spawns: 2,
    pipe_mib: 1,
};

/// One k42-lbench measurement.
struct Measure {
    /// k42-lbench's name for it (the `lbench NAME` of its line).
    name: &'static str,
    description: &'static str,
    /// What one operation is.
    op: &'static str,
}

const MEASURES: [Measure; 7] = [
    Measure {
        name: "bare",
        description: "a bare `syscall` round trip: the guest's personality answers call 0x4b42 at once (the hypervisor's cost of syscall plus a jump back); host Linux answers it ENOSYS",
        op: "syscall round trip",
    },
    Measure {
        name: "getppid",
        description: "the null Linux system call, getppid (served in the personality on K42)",
        op: "getppid call",
    },
    Measure {
        name: "spawn",
        description: "fork + execve of busybox `true` (through a link) + wait",
        op: "fork+exec+wait",
    },
    Measure {
        name: "exec-static",
        description: "fork + execve of an empty C program built with gcc -static (bench/linux/k42-true.c) + wait",
        op: "fork+exec+wait",
    },
    Measure {
        name: "exec-dynamic",
        description: "fork + execve of the same empty program dynamically linked (plain gcc: ld.so, libc.so.6 and ld.so.cache, the host's own files, loaded and relocated) + wait",
        op: "fork+exec+wait",
    },
    Measure {
        name: "pipe",
        description: "one MiB from a child process to its parent through a pipe (64 KiB writes and reads)",
        op: "MiB through a pipe",
    },
    Measure {
        name: "sdet",
        description: "one run of the SDET-like busybox script (bench/linux/sdet.sh: files made, copied, listed, grepped, sorted, found, removed)",
        op: "script run",
    },
];

/// A linux-suite results file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinuxResults {
    /// [`LINUX_RESULTS_SCHEMA`].
    pub schema: u32,
    /// [`LINUX_RESULTS_KIND`].
    pub kind: String,
    pub provenance: LinuxProvenance,
    pub benchmarks: Vec<LinuxBenchmark>,
    pub null_call: NullCall,
    pub sdet_split: SdetSplit,
}

/// Where, when and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinuxProvenance {
    pub started: String,
    pub finished: String,
    pub command_line: Vec<String>,
    pub k42vmm_version: String,
    pub git: GitInfo,
    pub guest: GuestInfo,
    pub host: HostInfo,
    /// The host CPU the vCPU was pinned to and host Linux ran on.
    pub host_cpu: u32,
    /// The vCPU thread's affinity as the first guest run read it back.
    pub vcpu_affinity: Vec<String>,
    pub samples: u32,
    pub quick: bool,
    pub sizes: Sizes,
    /// How the figures were taken, in words.
    pub method: String,
}

/// One measurement on both sides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinuxBenchmark {
    /// `linux.getppid` etc.
    pub name: String,
    pub description: String,
    pub op: String,
    /// Always `ns/op`.
    pub unit: String,
    /// `k42` (the guest) and `linux` (the host).
    pub series: Vec<LinuxSeries>,
    /// median(k42) / median(linux).
    pub ratio_k42_over_linux: f64,
}

/// One side's samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinuxSeries {
    pub label: String,
    pub samples: Vec<LbenchLine>,
    pub median_ns_per_op: f64,
    pub min_ns_per_op: f64,
    pub max_ns_per_op: f64,
}

/// One `lbench` line as k42-lbench printed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbenchLine {
    pub name: String,
    pub iterations: u64,
    pub ns: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl LbenchLine {
    /// Parse `lbench NAME iterations=N ns=T start_ns=S end_ns=E`.
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        if words.next()? != "lbench" {
            return None;
        }
        let name = words.next()?.to_string();
        let mut field = BTreeMap::new();
        for w in words {
            let (k, v) = w.split_once('=')?;
            field.insert(k, v.parse::<u64>().ok()?);
        }
        let l = Self {
            name,
            iterations: *field.get("iterations")?,
            ns: *field.get("ns")?,
            start_ns: *field.get("start_ns")?,
            end_ns: *field.get("end_ns")?,
        };
        (l.iterations > 0).then_some(l)
    }

    pub fn ns_per_op(&self) -> f64 {
        self.ns as f64 / self.iterations as f64
    }
}

/// The personality's null call beside the bare `syscall` round trip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NullCall {
    /// Guest medians, ns.
    pub k42_getppid_ns: f64,
    pub k42_bare_syscall_ns: f64,
    /// k42_getppid_ns / k42_bare_syscall_ns.
    pub ratio: f64,
    /// [`NULL_CALL_AIM`].
    pub aim: f64,
    pub within_aim: bool,
    /// Host Linux's own getppid, ns (median).
    pub linux_getppid_ns: f64,
}

/// The SDET-like script's guest time, split by a traced run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SdetSplit {
    /// The traced run's wall time of the script (tracing slows the
    /// emulated kernel: compare with the untraced median).
    pub traced_wall_ns: u64,
    /// The untraced guest median, for comparison.
    pub untraced_wall_ns: f64,
    /// Kernel system calls other than PPC: entry to exit, or to the
    /// switch or halt that ended the call on its CPU.
    pub syscalls: u64,
    pub syscall_ns: u64,
    /// PPC calls from outside a server: from the caller's PpcCall entry
    /// to the server's return (the path back to the caller excluded),
    /// the server's own work and system calls included.
    pub ppc_calls: u64,
    pub ppc_ns: u64,
    /// Resolved user page faults (every one, servers' included).
    pub page_faults: u64,
    /// From taking to resolving the page faults outside PPC (the trap
    /// path before the kernel logs the fault, and the return to user
    /// mode, fall in the rest).
    pub page_fault_ns: u64,
    /// Page faults taken inside a PPC call (their time is PPC time).
    pub ppc_page_faults: u64,
    /// Resolved faults whose taking was not traced (none when the trace
    /// is whole).
    pub page_faults_untimed: u64,
    /// Time the vCPU was halted (idle) inside the interval.
    pub idle_ns: u64,
    /// The interval less the above: user mode (programs and the
    /// personality, Linux calls served there included) and the kernel's
    /// entry and exit paths around what is traced.
    pub rest_ns: u64,
    /// Kernel system calls by name: count and ns (PPC excluded).
    pub by_call: BTreeMap<String, CallFigures>,
    /// Events lost by the trace (the split is incomplete if not zero).
    pub lost_events: u64,
    /// What the split can and cannot say.
    pub notes: Vec<String>,
}

/// Calls of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallFigures {
    pub count: u64,
    pub ns: u64,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Check the options that make sense for this suite.
fn check(opts: &SweepOptions) -> Result<u32, BenchError> {
    let bad = |option: &'static str, value: &str, why: &str| BenchError::BadOption {
        option,
        value: value.into(),
        why: why.into(),
    };
    if opts.vcpus.trim() != "auto" {
        return Err(bad(
            "--vcpus",
            &opts.vcpus,
            "the linux suite runs on one vCPU, pinned beside host Linux",
        ));
    }
    super::command::parse_samples(&opts.samples).map_err(|why| BenchError::BadOption {
        option: "--samples",
        value: opts.samples.clone(),
        why,
    })
}

/// The bytes of image module `name`.
fn module(image: &k42_image::Image, path: &Path, name: &str) -> Result<Vec<u8>, BenchError> {
    image
        .modules()
        .find(|m| m.name == name)
        .map(|m| m.data.to_vec())
        .ok_or_else(|| BenchError::ImageLacks(path.to_path_buf(), name.into()))
}

/// DIR/host: the image's k42-lbench, busybox (with its applets linked in
/// DIR/host/bin, `true` among them) and script, for host Linux.
struct HostFiles {
    lbench: PathBuf,
    busybox: PathBuf,
    bin: PathBuf,
    script: PathBuf,
    true_static: PathBuf,
    true_dynamic: PathBuf,
    tmp: PathBuf,
}

fn host_files(image: &k42_image::Image, path: &Path, dir: &Path) -> Result<HostFiles, BenchError> {
    // Absolute: the host runs start in DIR/host/tmp.
    let host = std::path::absolute(dir.join("host"))
        .map_err(|e| BenchError::OutDir(dir.to_path_buf(), e.to_string()))?;
    let _ = std::fs::remove_dir_all(&host);
    let bin = host.join("bin");
    let tmp = host.join("tmp");
    let io = |p: &Path, e: std::io::Error| BenchError::Write(p.to_path_buf(), e);
    std::fs::create_dir_all(&bin).map_err(|e| io(&bin, e))?;
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let put = |name: &str, module_name: &str, mode: u32| -> Result<PathBuf, BenchError> {
        let p = host.join(name);
        std::fs::write(&p, module(image, path, module_name)?).map_err(|e| io(&p, e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io(&p, e))?;
        Ok(p)
    };
    let f = HostFiles {
        lbench: put("k42-lbench", LBENCH_MODULE, 0o755)?,
        busybox: put("busybox", BUSYBOX_MODULE, 0o755)?,
        script: put("sdet.sh", SDET_MODULE, 0o644)?,
        true_static: put("k42-true-static", TRUE_STATIC_MODULE, 0o755)?,
        true_dynamic: put("k42-true-dynamic", TRUE_DYNAMIC_MODULE, 0o755)?,
        bin,
        tmp,
    };
    let out = Command::new(&f.busybox)
        .arg("--install")
        .arg("-s")
        .arg(&f.bin)
        .output()
        .map_err(|e| BenchError::Host(format!("cannot run {}: {e}", f.busybox.display())))?;
    if !out.status.success() || !f.bin.join("true").exists() {
        return Err(BenchError::Host(format!(
            "{} --install -s {} failed: {}",
            f.busybox.display(),
            f.bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(f)
}

/// The `lbench` lines in `text`, checked against `want` (names in order).
fn lines(text: &str, want: &[&str], what: &str) -> Result<Vec<LbenchLine>, BenchError> {
    let got: Vec<LbenchLine> = text
        .lines()
        .filter_map(|l| LbenchLine::parse(l.trim()))
        .collect();
    let names: Vec<&str> = got.iter().map(|l| l.name.as_str()).collect();
    if names != want {
        return Err(BenchError::BadRecords {
            what: what.into(),
            why: format!(
                "k42-lbench printed {:?}, expected {:?}",
                names.join(" "),
                want.join(" ")
            ),
        });
    }
    Ok(got)
}

/// k42-lbench's argument lists for one sample, with the guest's or the
/// host's paths.
fn invocations(sizes: Sizes, paths: &Paths) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let spawns = sizes.spawns.to_string();
    vec![
        s(&["bare", &sizes.syscalls.to_string()]),
        s(&["getppid", &sizes.syscalls.to_string()]),
        s(&["spawn", &spawns, paths.busybox_true]),
        s(&["spawn", &spawns, paths.true_static, "exec-static"]),
        s(&["spawn", &spawns, paths.true_dynamic, "exec-dynamic"]),
        s(&["pipe", &sizes.pipe_mib.to_string()]),
        s(&["sdet", paths.busybox, paths.script]),
    ]
}

/// Where the programs k42-lbench runs are, in the guest or on the host.
struct Paths<'a> {
    busybox_true: &'a str,
    true_static: &'a str,
    true_dynamic: &'a str,
    busybox: &'a str,
    script: &'a str,
}

/// Quote `s` for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The guest's job for one sample: every measurement, in order.
fn guest_script(sizes: Sizes, only_sdet: bool) -> String {
    let mut runs = invocations(
        sizes,
        &Paths {
            busybox_true: "/bin/true",
            true_static: "/bin/k42-true-static",
            true_dynamic: "/bin/k42-true-dynamic",
            busybox: "/bin/busybox",
            script: "/etc/k42-sdet.sh",
        },
    );
    if only_sdet {
        runs.retain(|r| r[0] == "sdet");
    }
    let cmds: Vec<String> = runs
        .iter()
        .map(|r| {
            let args: Vec<String> = r.iter().map(|a| quote(a)).collect();
            format!("/bin/k42-lbench {}", args.join(" "))
        })
        .collect();
    format!("cd /tmp && {}", cmds.join(" && "))
}

/// One guest run: k42vmm run pinned to `cpu`, the report in DIR/runs.
fn guest_run(
    k42vmm: &Path,
    opts: &SweepOptions,
    cpu: u32,
    timeout_s: u64,
    report: &Path,
    extra: &[&str],
    script: &str,
) -> Result<(String, serde_json::Value), BenchError> {
    let what = format!("guest run {}", report.display());
    let out = Command::new(k42vmm)
        .args(["run", "--vcpus", "1", "--pin", &cpu.to_string()])
        .args(["--timeout", &format!("{timeout_s}s")])
        .arg("--report")
        .arg(report)
        .args(extra)
        .arg(&opts.image)
        .args(["--", "/bin/busybox", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError::Host(format!("cannot start {}: {e}", k42vmm.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let console = report.with_extension("console");
        let _ = std::fs::write(&console, &out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(BenchError::RunFailed {
            what,
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
    let raw = std::fs::read_to_string(report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok((stdout, raw))
}

/// One k42-lbench run on the host, pinned to `cpu`.
fn host_run(f: &HostFiles, cpu: u32, args: &[String]) -> Result<String, BenchError> {
    let path = format!(
        "{}:{}",
        f.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(&f.lbench);
    cmd.args(args)
        .current_dir(&f.tmp)
        .env("PATH", path)
        .env("TMPDIR", &f.tmp)
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec and
    // calls only sched_setaffinity, which is async-signal-safe, on a
    // mask on the child's own stack.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd
        .output()
        .map_err(|e| BenchError::Host(format!("cannot run {}: {e}", f.lbench.display())))?;
    if !out.status.success() {
        return Err(BenchError::RunFailed {
            what: format!("host k42-lbench {}", args.join(" ")),
            status: format!("{}", out.status),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Median, min and max ns per operation of `samples`.
fn series(label: &str, samples: Vec<LbenchLine>) -> LinuxSeries {
    let mut v: Vec<f64> = samples.iter().map(LbenchLine::ns_per_op).collect();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    LinuxSeries {
        label: label.into(),
        median_ns_per_op: median(&mut v),
        min_ns_per_op: min,
        max_ns_per_op: max,
        samples,
    }
}

/// Sum up a traced run's events inside `[start, end]` (guest ns).
pub fn split(trace: &ctf::TraceData, start: u64, end: u64) -> Result<SdetSplit, String> {
    use k42_abi::syscall::Syscall;
    let khz = trace.meta.tsc_khz;
    let ppc_call = Syscall::PpcCall as u64;
    let mut s = SdetSplit {
        traced_wall_ns: end.saturating_sub(start),
        ..Default::default()
    };
    for stream in &trace.streams {
        s.lost_events += stream.discarded();
        // The open kernel call (number, start), PPC nesting and start,
        // idle start.
        let mut call: Option<(u64, u64)> = None;
        let mut ppc_depth = 0u32;
        let mut ppc_start = 0u64;
        let mut idle_start: Option<u64> = None;
        let mut idle_in_ppc = 0u64;
        let mut fault_start: Option<u64> = None;
        let end_call = |call: &mut Option<(u64, u64)>, s: &mut SdetSplit, at: u64| {
            if let Some((nr, t0)) = call.take() {
                let ns = at.saturating_sub(t0);
                s.syscall_ns += ns;
                let name =
                    Syscall::from_raw(nr).map_or_else(|| format!("#{nr}"), |c| c.name().into());
                let f = s.by_call.entry(name).or_default();
                f.ns += ns;
            }
        };
        for p in &stream.packets {
            for e in p.events() {
                let e =
                    e.map_err(|at| format!("vCPU {}: malformed event at word {at}", stream.vcpu))?;
                let d = crate::trace::decode::describe(&e).map_err(|x| x.to_string())?;
                let ns = crate::trace::ticks_to_ns(e.tsc, khz);
                if ns < start || ns > end {
                    continue;
                }
                match d.name {
                    "syscall:enter" => {
                        let nr = e.payload[0];
                        if ppc_depth > 0 {
                            if nr == ppc_call {
                                ppc_depth += 1;
                            }
                        } else if nr == ppc_call {
                            end_call(&mut call, &mut s, ns);
                            ppc_depth = 1;
                            ppc_start = ns;
                            idle_in_ppc = 0;
                            s.ppc_calls += 1;
                        } else {
                            end_call(&mut call, &mut s, ns);
                            call = Some((nr, ns));
                            s.syscalls += 1;
                            let name = Syscall::from_raw(nr)
                                .map_or_else(|| format!("#{nr}"), |c| c.name().into());
                            s.by_call.entry(name).or_default().count += 1;
                        }
                    }
                    "syscall:exit" => {
                        let nr = e.payload[0];
                        if ppc_depth > 0 {
                            // A PPC call that failed returns here.
                            if nr == ppc_call {
                                ppc_depth -= 1;
                                if ppc_depth == 0 {
                                    s.ppc_ns += ns.saturating_sub(ppc_start + idle_in_ppc);
                                }
                            }
                        } else if call.is_some_and(|(c, _)| c == nr) {
                            end_call(&mut call, &mut s, ns);
                        }
                    }
                    "sched:ppc_return" if ppc_depth > 0 => {
                        ppc_depth -= 1;
                        if ppc_depth == 0 {
                            s.ppc_ns += ns.saturating_sub(ppc_start + idle_in_ppc);
                        }
                    }
                    "sched:switch" if ppc_depth == 0 => end_call(&mut call, &mut s, ns),
                    "sched:fault_taken" => {
                        if ppc_depth == 0 {
                            end_call(&mut call, &mut s, ns);
                        }
                        fault_start = Some(ns);
                    }
                    "sched:fault" => {
                        s.page_faults += 1;
                        match fault_start.take() {
                            Some(t0) if ppc_depth == 0 => s.page_fault_ns += ns.saturating_sub(t0),
                            Some(_) => s.ppc_page_faults += 1,
                            None => s.page_faults_untimed += 1,
                        }
                    }
                    "idle:enter" => {
                        end_call(&mut call, &mut s, ns);
                        idle_start = Some(ns);
                    }
                    "idle:exit" => {
                        if let Some(t0) = idle_start.take() {
                            let idle = ns.saturating_sub(t0);
                            s.idle_ns += idle;
                            if ppc_depth > 0 {
                                idle_in_ppc += idle;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        end_call(&mut call, &mut s, end);
    }
    let counted = s.syscall_ns + s.ppc_ns + s.idle_ns + s.page_fault_ns;
    s.rest_ns = s.traced_wall_ns.saturating_sub(counted);
    s.notes = vec![
        "measured in a separate traced guest run (classes syscall, sched, idle): every kernel event costs tens of microseconds in the emulated kernel, so kernel shares are inflated; compare traced_wall_ns with untraced_wall_ns".into(),
        "system calls: kernel entries other than PPC, from entry to exit, or to the thread switch or halt that ended the call on its CPU".into(),
        "PPC: from the caller's PpcCall entry to the server's return, the server's work and its own calls included; the path back to the caller is not traced and falls in the rest".into(),
        "page faults: from the kernel taking the fault (sched:fault_taken) to its resolution (sched:fault); the trap entry before and the return to user mode after are not traced and fall in the rest; faults inside a PPC call count as PPC time".into(),
        "the rest: user mode — the programs and the personality, whose Linux calls served without the kernel (getppid, descriptors, signals) are not traced — and the untraced kernel entry and exit paths".into(),
    ];
    if s.page_faults_untimed > 0 {
        s.notes.push(format!(
            "{} page faults were resolved without a traced start: their time is in the rest",
            s.page_faults_untimed
        ));
    }
    if s.lost_events > 0 {
        s.notes.push(format!(
            "{} trace events were lost: the split undercounts",
            s.lost_events
        ));
    }
    Ok(s)
}

/// `k42vmm bench --suite linux`.
pub fn run(opts: &SweepOptions) -> Result<u8, BenchError> {
    let samples = check(opts)?;
    let threshold = super::command::option(
        "--threshold",
        &opts.threshold,
        super::command::parse_threshold,
    )?;
    // A bad baseline is refused before anything boots.
    let baseline = opts
        .baseline
        .as_deref()
        .map(|p| super::linux_compare::load(p).map(|r| (p, r)))
        .transpose()?;
    let sizes = if opts.quick { QUICK } else { FULL };
    let image = k42_image::Image::open(&opts.image)?;
    for m in [
        LBENCH_MODULE,
        BUSYBOX_MODULE,
        SDET_MODULE,
        TRUE_STATIC_MODULE,
        TRUE_DYNAMIC_MODULE,
    ] {
        module(&image, &opts.image, m)?;
    }
    let guest = provenance::guest(&opts.image, &image)
        .map_err(|e| BenchError::Host(format!("cannot read {}: {e}", opts.image.display())))?;
    let mut host = provenance::host();
    let cpu = crate::topology::pin::current_affinity()
        .ok()
        .and_then(|v| v.first().copied())
        .ok_or_else(|| BenchError::Host("cannot read this process's CPU affinity".into()))?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(super::sweep::default_out_dir);
    let runs = out.join("runs");
    if out.exists() && !out.is_dir() {
        return Err(BenchError::OutDir(
            out.clone(),
            "exists and is not a directory".into(),
        ));
    }
    std::fs::create_dir_all(&runs)
        .map_err(|e| BenchError::OutDir(out.clone(), format!("cannot create it: {e}")))?;
    let files = host_files(&image, &opts.image, &out)?;
    let k42vmm = std::env::current_exe()
        .map_err(|e| BenchError::Host(format!("cannot find the k42vmm executable: {e}")))?;
    let timeout_s = if opts.quick { 300 } else { 600 };
    let names: Vec<&str> = MEASURES.iter().map(|m| m.name).collect();
    let (busybox_true, true_static, true_dynamic, busybox, script) = (
        files.bin.join("true").display().to_string(),
        files.true_static.display().to_string(),
        files.true_dynamic.display().to_string(),
        files.busybox.display().to_string(),
        files.script.display().to_string(),
    );
    let host_runs = invocations(
        sizes,
        &Paths {
            busybox_true: &busybox_true,
            true_static: &true_static,
            true_dynamic: &true_dynamic,
            busybox: &busybox,
            script: &script,
        },
    );

    let started = now();
    eprintln!(
        "k42vmm bench: linux suite, {samples} samples, 1 vCPU and host Linux on host CPU {cpu}; results in {}",
        out.display()
    );
    let mut k42: Vec<Vec<LbenchLine>> = vec![Vec::new(); MEASURES.len()];
    let mut linux: Vec<Vec<LbenchLine>> = vec![Vec::new(); MEASURES.len()];
    let mut vcpu_affinity = Vec::new();
    for sample in 1..=samples {
        eprintln!("k42vmm bench: [{sample}/{samples}] guest");
        let report = runs.join(format!("guest-s{sample}.json"));
        let (text, raw) = guest_run(
            &k42vmm,
            opts,
            cpu,
            timeout_s,
            &report,
            &[],
            &guest_script(sizes, false),
        )?;
        if sample == 1 {
            vcpu_affinity = raw
                .get("vcpu_affinity")
                .and_then(|a| serde_json::from_value(a.clone()).ok())
                .unwrap_or_default();
            host.supervisor_mode = raw
                .pointer("/platform/supervisor_mode")
                .and_then(|v| v.as_str())
                .map(str::to_string);
        }
        for (i, l) in lines(&text, &names, &format!("guest sample {sample}"))?
            .into_iter()
            .enumerate()
        {
            k42[i].push(l);
        }
        eprintln!("k42vmm bench: [{sample}/{samples}] host Linux");
        for (i, args) in host_runs.iter().enumerate() {
            let text = host_run(&files, cpu, args)?;
            let mut got = lines(&text, &[names[i]], &format!("host sample {sample}"))?;
            linux[i].push(got.remove(0));
        }
    }
    eprintln!("k42vmm bench: traced guest run of the script (the split)");
    let trace_dir = out.join("trace");
    let _ = std::fs::remove_dir_all(&trace_dir);
    let trace_arg = trace_dir.display().to_string();
    let (text, _) = guest_run(
        &k42vmm,
        opts,
        cpu,
        timeout_s,
        &runs.join("guest-traced.json"),
        &[
            "--trace",
            &trace_arg,
            "--trace-mask",
            "syscall,sched,idle",
            "--cmdline",
            "test=none init=linux-run trace.subbuf=1M trace.subbufs=16",
        ],
        &guest_script(sizes, true),
    )?;
    let traced = lines(&text, &["sdet"], "traced guest run")?.remove(0);
    let data = ctf::read_trace(&trace_dir).map_err(|e| BenchError::Host(e.to_string()))?;
    let mut sdet_split =
        split(&data, traced.start_ns, traced.end_ns).map_err(|why| BenchError::BadRecords {
            what: format!("trace {}", trace_dir.display()),
            why,
        })?;

    let benchmarks: Vec<LinuxBenchmark> = MEASURES
        .iter()
        .zip(k42.into_iter().zip(linux))
        .map(|(m, (k, l))| {
            let k = series("k42", k);
            let l = series("linux", l);
            LinuxBenchmark {
                name: format!("linux.{}", m.name),
                description: m.description.into(),
                op: m.op.into(),
                unit: "ns/op".into(),
                ratio_k42_over_linux: k.median_ns_per_op / l.median_ns_per_op,
                series: vec![k, l],
            }
        })
        .collect();
    let med = |name: &str, label: &str| {
        benchmarks
            .iter()
            .find(|b| b.name == name)
            .and_then(|b| b.series.iter().find(|s| s.label == label))
            .map_or(f64::NAN, |s| s.median_ns_per_op)
    };
    let (getppid, bare) = (med("linux.getppid", "k42"), med("linux.bare", "k42"));
    let null_call = NullCall {
        k42_getppid_ns: getppid,
        k42_bare_syscall_ns: bare,
        ratio: getppid / bare,
        aim: NULL_CALL_AIM,
        within_aim: getppid / bare <= NULL_CALL_AIM,
        linux_getppid_ns: med("linux.getppid", "linux"),
    };
    sdet_split.untraced_wall_ns = med("linux.sdet", "k42");
    let results = LinuxResults {
        schema: LINUX_RESULTS_SCHEMA,
        kind: LINUX_RESULTS_KIND.into(),
        provenance: LinuxProvenance {
            started,
            finished: now(),
            command_line: opts.command_line.clone(),
            k42vmm_version: env!("CARGO_PKG_VERSION").into(),
            git: provenance::git(),
            guest,
            host,
            host_cpu: cpu,
            vcpu_affinity,
            samples,
            quick: opts.quick,
            sizes,
            method: format!(
                "per sample: one guest boot (k42vmm run --vcpus 1 --pin {cpu} IMAGE -- busybox sh -c '…') running every k42-lbench measurement, then the same k42-lbench, busybox and script copied out of the image run on host Linux pinned to host CPU {cpu}; figures are k42-lbench's CLOCK_MONOTONIC lines; medians over samples; the script's split comes from one more, traced, guest run"
            ),
        },
        benchmarks,
        null_call,
        sdet_split,
    };
    let json = serde_json::to_string_pretty(&results).expect("results serialise") + "\n";
    write_atomically(&out.join("results.json"), &json)?;
    let report = out.join("report.md");
    let cmp = baseline.map(|(path, base)| {
        super::linux_compare::LinuxComparison::new(
            &path.display().to_string(),
            &base,
            &results,
            threshold,
        )
    });
    let mut md = markdown(&results);
    if let Some(c) = &cmp {
        md = md + "\n" + &c.render(true);
    }
    write_atomically(&report, &md)?;
    print!("{}", table(&results));
    match cmp {
        Some(c) => {
            print!("{}", c.render(false));
            Ok(c.conclude(&report))
        }
        None => {
            println!("report: {}", report.display());
            Ok(0)
        }
    }
}

/// A time per operation, or a pipe's rate.
fn figure(b: &LinuxBenchmark, ns: f64) -> String {
    if is_rate(b) {
        format!("{:.1} MiB/s", 1e9 / ns)
    } else {
        fmt_ns(ns)
    }
}

/// Whether `b` is shown as a rate (MiB/s), whose range runs from the
/// slowest sample (the largest time) up.
fn is_rate(b: &LinuxBenchmark) -> bool {
    b.name == "linux.pipe"
}

/// A series' range, low figure first.
fn range(b: &LinuxBenchmark, x: &LinuxSeries) -> String {
    let (lo, hi) = if is_rate(b) {
        (x.max_ns_per_op, x.min_ns_per_op)
    } else {
        (x.min_ns_per_op, x.max_ns_per_op)
    };
    format!("{}..{}", figure(b, lo), figure(b, hi))
}

fn pct(part: u64, whole: u64) -> String {
    format!("{:.1}%", 100.0 * part as f64 / whole.max(1) as f64)
}

/// The terminal summary.
pub fn table(r: &LinuxResults) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<14} {:<20} {:>30} {:>30} {:>10}  n",
        "benchmark", "op", "k42 median (min..max)", "linux median (min..max)", "k42/linux"
    );
    for b in &r.benchmarks {
        let cell = |x: &LinuxSeries| format!("{} ({})", figure(b, x.median_ns_per_op), range(b, x));
        let _ = writeln!(
            s,
            "{:<14} {:<20} {:>30} {:>30} {:>9.2}x  {}",
            b.name,
            b.op,
            cell(&b.series[0]),
            cell(&b.series[1]),
            b.ratio_k42_over_linux,
            b.series[0].samples.len()
        );
    }
    let n = &r.null_call;
    let _ = writeln!(
        s,
        "null call: personality getppid {} vs bare syscall round trip {} on the same host: {:.2}x (aim <= {:.1}x: {}); host Linux getppid {}",
        fmt_ns(n.k42_getppid_ns),
        fmt_ns(n.k42_bare_syscall_ns),
        n.ratio,
        n.aim,
        if n.within_aim { "met" } else { "not met" },
        fmt_ns(n.linux_getppid_ns)
    );
    let x = &r.sdet_split;
    let w = x.traced_wall_ns;
    let _ = writeln!(
        s,
        "sdet split (traced run {}, untraced median {}): system calls {} ({}, {} calls), page faults {} ({}, {} faults), PPC {} ({}, {} calls), idle {} ({}), rest {} ({}; user mode and untraced kernel paths)",
        fmt_ns(w as f64),
        fmt_ns(x.untraced_wall_ns),
        fmt_ns(x.syscall_ns as f64),
        pct(x.syscall_ns, w),
        x.syscalls,
        fmt_ns(x.page_fault_ns as f64),
        pct(x.page_fault_ns, w),
        x.page_faults - x.ppc_page_faults,
        fmt_ns(x.ppc_ns as f64),
        pct(x.ppc_ns, w),
        x.ppc_calls,
        fmt_ns(x.idle_ns as f64),
        pct(x.idle_ns, w),
        fmt_ns(x.rest_ns as f64),
        pct(x.rest_ns, w),
    );
    s
}

/// DIR/report.md.
pub fn markdown(r: &LinuxResults) -> String {
    let p = &r.provenance;
    let mut s = String::from("# k42vmm bench --suite linux\n\n");
    let _ = writeln!(
        s,
        "- when: {} to {}\n- k42vmm {} at {} (tree dirty: {:?})\n- image: {} ({})\n- host: {} ({}), kernel {}, {}; guest supervisor mode {}\n- vCPU pinned to host CPU {} (affinity read back: {}); host Linux pinned to the same CPU\n- samples: {}{}; sizes: {} calls, {} fork+exec+wait, {} MiB\n- method: {}\n",
        p.started,
        p.finished,
        p.k42vmm_version,
        p.git.revision,
        p.git.tree_dirty,
        p.guest.image,
        p.guest.image_sha256,
        p.host.class,
        p.host.cpu_model,
        p.host.kernel,
        p.host.kvm,
        p.host.supervisor_mode.as_deref().unwrap_or("unknown"),
        p.host_cpu,
        p.vcpu_affinity.join(" "),
        p.samples,
        if p.quick {
            " (--quick: not figures)"
        } else {
            ""
        },
        p.sizes.syscalls,
        p.sizes.spawns,
        p.sizes.pipe_mib,
        p.method
    );
    s += "| benchmark | op | k42 median | k42 min..max | linux median | linux min..max | k42/linux | samples |\n|---|---|---|---|---|---|---|---|\n";
    for b in &r.benchmarks {
        let (k, l) = (&b.series[0], &b.series[1]);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.2}x | {} |",
            b.name,
            b.op,
            figure(b, k.median_ns_per_op),
            range(b, k),
            figure(b, l.median_ns_per_op),
            range(b, l),
            b.ratio_k42_over_linux,
            k.samples.len()
        );
    }
    let n = &r.null_call;
    let _ = writeln!(
        s,
        "\n## The null call\n\nThe personality's getppid: {}; the bare `syscall` round trip on the same host: {}; ratio {:.2}x against the aim of {:.1}x: **{}**. Host Linux's own getppid: {}.\n",
        fmt_ns(n.k42_getppid_ns),
        fmt_ns(n.k42_bare_syscall_ns),
        n.ratio,
        n.aim,
        if n.within_aim { "met" } else { "not met" },
        fmt_ns(n.linux_getppid_ns)
    );
    let x = &r.sdet_split;
    let w = x.traced_wall_ns;
    let _ = writeln!(
        s,
        "## The SDET-like script's guest time\n\nTraced run: {} (untraced median {}).\n\n| part | time | share | count |\n|---|---|---|---|\n| kernel system calls (not PPC) | {} | {} | {} |\n| page faults (outside PPC) | {} | {} | {} |\n| PPC (server work and its faults included) | {} | {} | {} |\n| idle | {} | {} | |\n| rest: user mode (programs, personality), untraced kernel paths | {} | {} | |\n",
        fmt_ns(w as f64),
        fmt_ns(x.untraced_wall_ns),
        fmt_ns(x.syscall_ns as f64),
        pct(x.syscall_ns, w),
        x.syscalls,
        fmt_ns(x.page_fault_ns as f64),
        pct(x.page_fault_ns, w),
        x.page_faults - x.ppc_page_faults,
        fmt_ns(x.ppc_ns as f64),
        pct(x.ppc_ns, w),
        x.ppc_calls,
        fmt_ns(x.idle_ns as f64),
        pct(x.idle_ns, w),
        fmt_ns(x.rest_ns as f64),
        pct(x.rest_ns, w),
    );
    s += "Kernel system calls by name:\n\n| call | count | time |\n|---|---|---|\n";
    let mut calls: Vec<_> = x.by_call.iter().collect();
    calls.sort_by_key(|(_, f)| std::cmp::Reverse(f.ns));
    for (name, f) in calls {
        let _ = writeln!(s, "| {name} | {} | {} |", f.count, fmt_ns(f.ns as f64));
    }
    s += "\nWhat the split can and cannot say:\n\n";
    for note in &x.notes {
        let _ = writeln!(s, "- {note}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lbench_lines() {
        let l =
            LbenchLine::parse("lbench getppid iterations=10 ns=35 start_ns=1 end_ns=36").unwrap();
        assert_eq!((l.name.as_str(), l.iterations, l.ns), ("getppid", 10, 35));
        assert_eq!(l.ns_per_op(), 3.5);
        for bad in [
            "lbench getppid iterations=0 ns=1 start_ns=1 end_ns=2",
            "lbench getppid iterations=x ns=1 start_ns=1 end_ns=2",
            "lbench getppid ns=1 start_ns=1 end_ns=2",
            "k42: lbench",
            "",
        ] {
            assert!(LbenchLine::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn guest_commands_quote_their_arguments() {
        let s = guest_script(QUICK, false);
        assert!(
            s.starts_with("cd /tmp && /bin/k42-lbench 'bare' '1000' && "),
            "{s}"
        );
        assert!(
            s.ends_with("'sdet' '/bin/busybox' '/etc/k42-sdet.sh'"),
            "{s}"
        );
        assert_eq!(
            guest_script(QUICK, true),
            "cd /tmp && /bin/k42-lbench 'sdet' '/bin/busybox' '/etc/k42-sdet.sh'"
        );
        assert!(
            s.contains("'spawn' '2' '/bin/k42-true-dynamic' 'exec-dynamic'"),
            "{s}"
        );
        assert_eq!(quote("a'b"), r"'a'\''b'");
    }
}
