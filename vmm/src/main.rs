//! `k42vmm`: the command-line front end. `run` parses arguments, runs the
//! VM, prints how it ended, writes the report, and exits with the code
//! DESIGN.md gives: the guest's shutdown code, 101 guest panic, 102 guest
//! fault, 124 timeout, 130 Ctrl-A x, 2 bad command line or input. `topology` prints the
//! host topology and the placement plan without booting. `bench` sweeps
//! the guest's benchmarks over vCPU counts (`k42vmm::bench`); `trace …`
//! reads traces and watches running VMs.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use k42vmm::bench::command::{self as bench, SweepOptions};
use k42vmm::bench::compare::DEFAULT_THRESHOLD_PCT;
use k42vmm::exit::{EXIT_USAGE, ExitReason};
use k42vmm::topology::{self, NumaPolicy, PinPolicy, PlacementRequest};
use k42vmm::trace::{TraceError, TraceOptions, ctf, live, perfetto, stats, strace};
use k42vmm::{VmConfig, config, vm};

#[derive(Parser)]
#[command(name = "k42vmm", version, about = "Boot and study the K42-style scalable microkernel on KVM", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot an image and run it until the guest shuts down.
    ///
    /// With `-- COMMAND`, k42vmm's stdin is the command's console input
    /// (a terminal, pipe or file). A terminal is put in raw mode for the
    /// run, so keys such as Ctrl-C go to the guest; type Ctrl-A then x to
    /// stop the VM (exit 130), Ctrl-A Ctrl-A to send a Ctrl-A, Ctrl-A h
    /// for these keys. The terminal's settings are restored at exit.
    ///
    /// Exit status: the guest's shutdown code; 101 guest panic; 102 guest
    /// fault (triple fault, unexpected exit); 124 timeout; 130 Ctrl-A x
    /// (or SIGINT); 2 bad command line or input; 1 host failure.
    Run(RunArgs),
    /// Print the host's CPUs and NUMA nodes and the placement plan for a VM
    /// (vCPU → host CPU → host node → guest node; memory per node) without
    /// booting.
    Topology(TopologyArgs),
    /// Sweep benchmarks over vCPU counts: a fresh VM per benchmark, vCPU
    /// count and sample; write DIR/results.json (with provenance),
    /// DIR/<bench>.svg and DIR/report.md; print a summary; compare with a
    /// baseline.
    ///
    /// A point regressed only when both sides have at least 3 samples,
    /// their ranges do not overlap and the medians differ by more than the
    /// threshold. Exit status: 0 done; 1 a regression, or a boot or host
    /// failure; 2 bad command line or input.
    Bench(BenchArgs),
    /// Read traces (`run --trace DIR`) and watch running VMs
    /// (`run --trace-socket PATH`).
    #[command(subcommand)]
    Trace(TraceCommand),
}

// The values of `bench` options are taken as text and checked by
// `k42vmm::bench`, so that a bad one gets the same one-line error (exit 2)
// as every other bad input to a sweep.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchArgs {
    #[command(subcommand)]
    action: Option<BenchAction>,
    #[command(flatten)]
    sweep: SweepArgs,
}

#[derive(Subcommand)]
enum BenchAction {
    /// List the suites and benchmarks with one-line descriptions.
    List,
    /// Compare a results file with a baseline without booting; write
    /// report.md next to RESULTS (or in --out). Exit 1 on a regression.
    Compare(CompareArgs),
    /// Accept RESULTS as the baseline of its host class:
    /// DIR/<host class>.json.
    Accept(AcceptArgs),
    /// Print this host's class (the name of its baseline file).
    HostClass,
    /// The nightly history: add a run, find change points with Apache
    /// Otava.
    #[command(subcommand)]
    History(HistoryAction),
    /// Write RESULTS for a continuous-benchmarking service: Bencher Metric
    /// Format (bmf) or github-action-benchmark's customBiggerIsBetter.
    Export(ExportArgs),
}

#[derive(Subcommand)]
enum HistoryAction {
    /// Append RESULTS as one row of DIR/<host class>.csv (medians; the
    /// other statistics go to DIR/<host class>.jsonl). Exit 2 on a bad
    /// results or history file, or a run already there.
    Add(HistoryAddArgs),
    /// Run Apache Otava on HISTORY and print its change points (and
    /// append them to --report). Exit 1 on a new regressing change point
    /// once the history has --min-runs runs; before that, on
    /// --baseline-regressed.
    Analyze(HistoryAnalyzeArgs),
}

#[derive(Args)]
struct HistoryAddArgs {
    /// The results to add (a results.json).
    #[arg(value_name = "RESULTS")]
    results: PathBuf,
    /// Directory of histories.
    #[arg(long, value_name = "DIR", default_value = k42vmm::bench::history::HISTORY_DIR)]
    history: PathBuf,
}

#[derive(Args)]
struct HistoryAnalyzeArgs {
    /// The history (DIR/<host class>.csv).
    #[arg(value_name = "HISTORY")]
    history: PathBuf,
    /// The otava executable.
    #[arg(long, value_name = "PATH", default_value = "target/otava/bin/otava")]
    otava: PathBuf,
    /// Append the change points to this report.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Runs the history needs before Otava's verdict sets the exit status.
    #[arg(long, value_name = "N", default_value_t = k42vmm::bench::history::DEFAULT_MIN_RUNS)]
    min_runs: usize,
    /// A change point is new when it is in the last N runs.
    #[arg(long, value_name = "N", default_value_t = k42vmm::bench::history::DEFAULT_RECENT_RUNS)]
    recent: usize,
    /// The baseline rule found a regression in the newest run (it decides
    /// while the history is shorter than --min-runs).
    #[arg(long)]
    baseline_regressed: bool,
}

#[derive(Args)]
struct ExportArgs {
    /// bmf or github-action-benchmark.
    #[arg(long, value_name = "FORMAT")]
    format: String,
    /// The results to export (a results.json).
    #[arg(value_name = "RESULTS")]
    results: PathBuf,
    /// Write here instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct SweepArgs {
    /// Run the benchmarks of this suite (k42vmm bench list). [default:
    /// nightly]
    #[arg(long, value_name = "NAME")]
    suite: Option<String>,
    /// Run these benchmarks (repeat the option or separate with commas).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    bench: Vec<String>,
    /// vCPU counts to sweep, e.g. 1,2,4,8; auto: powers of two up to the
    /// usable host CPUs, and that count.
    #[arg(long, value_name = "LIST|auto", default_value = "auto")]
    vcpus: String,
    /// Boots per benchmark and vCPU count (1-1000).
    #[arg(long, value_name = "K", default_value_t = bench::DEFAULT_SAMPLES.to_string())]
    samples: String,
    /// Directory for results.json, the plots, report.md and runs/.
    /// [default: target/bench/<UTC time>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Compare with this results file (an earlier run's results.json or
    /// an accepted baseline).
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Smallest change of the median, in percent, that counts.
    #[arg(long, value_name = "PCT", default_value_t = DEFAULT_THRESHOLD_PCT.to_string())]
    threshold: String,
    /// Allow vCPU counts above the usable host CPUs (marked overcommitted).
    #[arg(long)]
    allow_overcommit: bool,
    /// With --suite linux: small sizes, to check that everything runs
    /// (not figures).
    #[arg(long)]
    quick: bool,
    /// The boot image.
    #[arg(value_name = "IMAGE", default_value = "target/images/default.img")]
    image: PathBuf,
}

#[derive(Args)]
struct CompareArgs {
    /// The results to judge (a results.json).
    #[arg(value_name = "RESULTS")]
    results: PathBuf,
    /// The results to compare with.
    #[arg(long, value_name = "FILE")]
    baseline: PathBuf,
    /// Smallest change of the median, in percent, that counts.
    #[arg(long, value_name = "PCT", default_value_t = DEFAULT_THRESHOLD_PCT.to_string())]
    threshold: String,
    /// Write report.md here. [default: the directory of RESULTS]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct AcceptArgs {
    /// The results to accept (a results.json).
    #[arg(value_name = "RESULTS")]
    results: PathBuf,
    /// Directory of baselines.
    #[arg(long, value_name = "DIR", default_value = bench::BASELINES_DIR)]
    baselines: PathBuf,
}

/// Where the vCPUs and guest memory go; shared by `run` and `topology`.
#[derive(Args)]
struct PlacementArgs {
    /// Number of vCPUs (1-255); more than the usable host CPUs is allowed,
    /// with a warning. [default: as many as --pin or a --numa SPEC gives,
    /// else one per usable host CPU]
    #[arg(long, value_name = "N")]
    vcpus: Option<u32>,
    /// Guest RAM, a multiple of 2 MiB, with an optional K, M or G suffix.
    /// [default: 512M, or the sum of a --numa SPEC's mem= sizes]
    #[arg(long, value_name = "SIZE", value_parser = config::parse_size)]
    memory: Option<u64>,
    /// Pin each vCPU thread to a host CPU: auto (fill one host node's
    /// physical cores, then its SMT siblings, then the next node; spread
    /// evenly when overcommitted), none, a host CPU list (vCPU i on the
    /// i-th CPU: 0-3,8-11) or VCPU@CPU pairs (0@2,1@3). [default: auto
    /// when the vCPUs fit the usable host CPUs, else none]
    #[arg(long, value_name = "auto|none|LIST", value_parser = PinPolicy::parse)]
    pin: Option<PinPolicy>,
    /// Guest NUMA nodes: auto (one per host node the vCPUs run on), off
    /// (one node, memory not bound), N (N nodes of consecutive vCPUs, even
    /// on a host with fewer), or a SPEC like
    /// '0:cpus=0-3,mem=256M;1:cpus=4-7,mem=256M,host=1' (docs/TOPOLOGY.md).
    /// Each node's memory is bound to its host node. [default: auto]
    #[arg(long, value_name = "auto|off|N|SPEC", value_parser = NumaPolicy::parse)]
    numa: Option<NumaPolicy>,
}

impl PlacementArgs {
    fn request(&self) -> PlacementRequest {
        PlacementRequest {
            vcpus: self.vcpus,
            memory: self.memory,
            pin: self.pin.clone(),
            numa: self.numa.clone(),
        }
    }
}

#[derive(Args)]
struct TopologyArgs {
    #[command(flatten)]
    placement: PlacementArgs,
    /// Print JSON: {"host": ..., "plan": ...}.
    #[arg(long)]
    json: bool,
    /// Read the host topology from sys/devices/system below DIR instead of
    /// this host's (to plan for a copy of another machine's sysfs); all of
    /// its online CPUs count as usable.
    #[arg(long, value_name = "DIR", default_value = "/")]
    sysfs_root: PathBuf,
}

#[derive(Subcommand)]
enum TraceCommand {
    /// Events per class per vCPU, lost events and time span of a trace.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// A trace directory written by `k42vmm run --trace`.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// The Linux system calls of a trace written with `--trace-mask linux`,
    /// one line per call, as strace prints them.
    Strace {
        /// A trace directory written by `k42vmm run --trace`.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Convert a trace for another viewer.
    Export {
        /// The output format (perfetto: Chrome JSON, opens in ui.perfetto.dev).
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// The output file.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// A trace directory written by `k42vmm run --trace`.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print a running VM's events as they arrive (Ctrl-C detaches).
    Attach {
        /// Only these classes (comma-separated names, or all).
        #[arg(long, value_name = "CLASSES", default_value = "all", value_parser = parse_classes)]
        class: u64,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// The socket of `k42vmm run --trace-socket PATH`.
        #[arg(value_name = "PATH")]
        socket: PathBuf,
    },
    /// Per-vCPU event rates and idle share of a running VM, each second.
    Top {
        /// Stop after this many refreshes.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// The socket of `k42vmm run --trace-socket PATH`.
        #[arg(value_name = "PATH")]
        socket: PathBuf,
    },
    /// Set which classes a running guest logs.
    Mask {
        /// The socket of `k42vmm run --trace-socket PATH`.
        #[arg(value_name = "PATH")]
        socket: PathBuf,
        /// Comma-separated class names, all, none, or a hex mask (0x…).
        #[arg(value_name = "CLASSES", value_parser = parse_classes)]
        classes: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// Chrome JSON trace format, for ui.perfetto.dev.
    Perfetto,
}

fn parse_classes(s: &str) -> Result<u64, String> {
    k42_abi::trace::parse_mask(s).map_err(|bad| {
        let known: Vec<&str> = k42_abi::trace::CLASSES.iter().map(|(_, n)| *n).collect();
        format!(
            "unknown trace class '{bad}' (known: {}; or all, none, 0xMASK)",
            known.join(", ")
        )
    })
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    placement: PlacementArgs,
    /// Fault in all guest RAM (under its node binding) before boot, so the
    /// guest never waits for a host page fault.
    #[arg(long)]
    prefault: bool,
    /// Kernel command line. [default: the one in the image's manifest]
    #[arg(long, value_name = "STRING")]
    cmdline: Option<String>,
    /// Stop the guest after this long (e.g. 30s, 2m) and exit with 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Write a JSON summary of the run to FILE at exit.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write the guest's trace to DIR (CTF 1.8; a new or empty directory).
    #[arg(long, value_name = "DIR")]
    trace: Option<PathBuf>,
    /// Serve the running guest's trace on a Unix socket for
    /// `k42vmm trace attach|top|mask`.
    #[arg(long, value_name = "PATH")]
    trace_socket: Option<PathBuf>,
    /// Classes the guest logs from boot (comma-separated names, all,
    /// none, or 0xMASK). [default: all, when tracing]
    #[arg(long, value_name = "CLASSES", value_parser = parse_classes)]
    trace_mask: Option<u64>,
    /// How often the collector reads the guest's trace buffers.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10ms")]
    trace_read_interval: Duration,
    /// The boot image (built by `make image`: target/images/default.img).
    #[arg(value_name = "IMAGE")]
    image: PathBuf,
    /// A Linux program in the guest (an absolute path) and its arguments,
    /// after `--`: run it as the guest's job, with the console as its
    /// standard input (k42vmm's stdin, forwarded; a terminal in raw mode,
    /// Ctrl-A x quits) and output, and exit with its status.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 30s or 2m: {e}"))?;
    if d.is_zero() {
        return Err("the timeout must be longer than zero".into());
    }
    Ok(d)
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args, started),
        Command::Topology(args) => show_topology(args),
        Command::Bench(args) => run_bench(args),
        Command::Trace(cmd) => match trace(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e, e.exit_code()),
        },
    }
}

fn run_bench(args: BenchArgs) -> ExitCode {
    let result = match args.action {
        Some(BenchAction::List) => Ok(bench::list()),
        Some(BenchAction::HostClass) => Ok(bench::host_class()),
        Some(BenchAction::Compare(c)) => {
            bench::compare(&c.results, &c.baseline, &c.threshold, c.out.as_deref())
        }
        Some(BenchAction::Accept(a)) => bench::accept(&a.results, &a.baselines),
        Some(BenchAction::History(HistoryAction::Add(a))) => {
            k42vmm::bench::history::add(&a.results, &a.history)
        }
        Some(BenchAction::History(HistoryAction::Analyze(a))) => {
            k42vmm::bench::history::analyze(&k42vmm::bench::history::AnalyzeOptions {
                history: a.history,
                otava: a.otava,
                report: a.report,
                min_runs: a.min_runs,
                recent: a.recent,
                baseline_regressed: a.baseline_regressed,
            })
        }
        Some(BenchAction::Export(e)) => {
            k42vmm::bench::export::export(&e.format, &e.results, e.out.as_deref())
        }
        None => {
            let s = args.sweep;
            bench::sweep(&SweepOptions {
                suite: s.suite,
                benchmarks: s.bench,
                vcpus: s.vcpus,
                samples: s.samples,
                out: s.out,
                baseline: s.baseline,
                threshold: s.threshold,
                allow_overcommit: s.allow_overcommit,
                quick: s.quick,
                image: s.image,
                command_line: std::env::args().collect(),
            })
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(format!("bench: {e}"), e.exit_code()),
    }
}

fn trace(cmd: TraceCommand) -> Result<(), TraceError> {
    match cmd {
        TraceCommand::Stats { json, dir } => {
            let t = ctf::read_trace(&dir)?;
            let s = stats::compute(&t, &dir)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s).expect("stats serialise")
                );
            } else {
                print!("{}", stats::render(&s, &dir));
            }
            Ok(())
        }
        TraceCommand::Strace { dir } => {
            let t = ctf::read_trace(&dir)?;
            let (events, lost) = strace::collect(&t, &dir)?;
            if events.is_empty() {
                eprintln!(
                    "k42vmm: trace {}: no Linux system calls (was it written with --trace-mask linux?)",
                    dir.display()
                );
            }
            let mut out = std::io::stdout().lock();
            for line in strace::render(&events) {
                if writeln!(out, "{line}").is_err() {
                    // A closed pipe (`| head`): stop quietly.
                    return Ok(());
                }
            }
            if lost > 0 {
                eprintln!("k42vmm: the guest lost {lost} trace events: some calls may be missing");
            }
            Ok(())
        }
        TraceCommand::Export {
            format: ExportFormat::Perfetto,
            output,
            dir,
        } => {
            let t = ctf::read_trace(&dir)?;
            let v = perfetto::export(&t, &dir)?;
            let f = std::fs::File::create(&output)
                .map_err(|e| TraceError::Output(output.clone(), e))?;
            let mut w = std::io::BufWriter::new(f);
            serde_json::to_writer(&mut w, &v)
                .map_err(|e| TraceError::Write(output.clone(), e.into()))?;
            std::io::Write::flush(&mut w).map_err(|e| TraceError::Write(output.clone(), e))
        }
        TraceCommand::Attach {
            class,
            count,
            socket,
        } => live::attach(&socket, class, count, &mut std::io::stdout().lock()),
        TraceCommand::Top { count, socket } => {
            live::top(&socket, count, &mut std::io::stdout().lock())
        }
        TraceCommand::Mask { socket, classes } => {
            let m = live::set_mask(&socket, classes)?;
            println!("guest trace mask {m:#x}: {}", live::mask_names(m));
            Ok(())
        }
    }
}

fn show_topology(args: TopologyArgs) -> ExitCode {
    let req = args.placement.request();
    let (host, plan) = match topology::plan_for_host(&args.sysfs_root, &req) {
        Ok(p) => p,
        Err(e) => return fail(&e, e.exit_code()),
    };
    if args.json {
        #[derive(serde::Serialize)]
        struct Doc<'a> {
            host: &'a topology::HostTopology,
            plan: &'a topology::Plan,
        }
        let doc = Doc {
            host: &host,
            plan: &plan,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("the plan serialises")
        );
    } else {
        print!(
            "{}{}",
            host.describe(&plan.usable_host_cpus),
            plan.describe()
        );
    }
    ExitCode::SUCCESS
}

fn fail(msg: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("k42vmm: {msg}");
    ExitCode::from(code)
}

/// A report path whose directory does not exist would lose the report at
/// the end of a long run: refuse it before booting.
fn check_report_path(path: &Path) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!(
            "--report {}: directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(format!("--report {}: is a directory", path.display()));
    }
    Ok(())
}

fn run(args: RunArgs, started: Instant) -> ExitCode {
    if let Some(r) = &args.report
        && let Err(e) = check_report_path(r)
    {
        return fail(e, EXIT_USAGE);
    }
    let config = VmConfig {
        image: args.image,
        vcpus: args.placement.vcpus,
        memory: args.placement.memory,
        pin: args.placement.pin,
        numa: args.placement.numa,
        prefault: args.prefault,
        cmdline: args.cmdline,
        command: args.command,
        timeout: args.timeout,
        report: args.report,
        trace: TraceOptions {
            dir: args.trace,
            socket: args.trace_socket,
            mask: args.trace_mask,
            read_interval: Some(args.trace_read_interval),
        },
    };
    let result = match vm::run(&config, started) {
        Ok(r) => r,
        Err(e) => return fail(&e, e.exit_code()),
    };
    if let Some(line) = result.report.platform.summary() {
        eprintln!("k42vmm: {line}");
    }
    let msg = &result.report.exit_message;
    match &result.reason {
        ExitReason::Shutdown(0) => {}
        ExitReason::TripleFault { dump, .. } | ExitReason::Fault { dump, .. } => {
            eprintln!("k42vmm: {msg}; its registers:\n{}", dump.trim_end());
        }
        _ => eprintln!("k42vmm: {msg}"),
    }
    if let Some(path) = &config.report
        && let Err(e) = result.report.write_to(path)
    {
        return fail(format!("cannot write report {}: {e}", path.display()), 1);
    }
    if let Some(e) = &result.trace_error {
        eprintln!("k42vmm: trace collection failed: {e}");
        if result.reason.code() == 0 {
            return ExitCode::from(1);
        }
    }
    ExitCode::from(result.reason.code())
}
