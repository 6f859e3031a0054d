//! `k42vmm`: the command-line front end. Parses arguments, runs the VM,
//! prints how it ended, writes the report, and exits with the code
//! DESIGN.md gives: the guest's shutdown code, 101 guest panic, 102 guest
//! fault, 124 timeout, 2 bad command line or input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use k42vmm::exit::{EXIT_USAGE, ExitReason};
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
    /// Exit status: the guest's shutdown code; 101 guest panic; 102 guest
    /// fault (triple fault, unexpected exit); 124 timeout; 2 bad command
    /// line or input; 1 host failure.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Number of vCPUs (1-255); more than the host's CPUs is allowed, with a
    /// warning. [default: the number of online host CPUs]
    #[arg(long, value_name = "N")]
    vcpus: Option<u32>,
    /// Guest RAM, a multiple of 2 MiB, with an optional K, M or G suffix.
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = config::parse_size)]
    memory: u64,
    /// Kernel command line. [default: the one in the image's manifest]
    #[arg(long, value_name = "STRING")]
    cmdline: Option<String>,
    /// Stop the guest after this long (e.g. 30s, 2m) and exit with 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Write a JSON summary of the run to FILE at exit.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The boot image (built by `make image`: target/images/default.img).
    #[arg(value_name = "IMAGE")]
    image: PathBuf,
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
    }
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
        vcpus: args.vcpus.unwrap_or_else(config::host_cpus),
        memory: args.memory,
        cmdline: args.cmdline,
        timeout: args.timeout,
        report: args.report,
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
    ExitCode::from(result.reason.code())
}
