//! `k42vmm-bench-boot [--image IMAGE] [--samples K] [--vcpus 1,8,64,255]`
//!
//! Boot-time benchmark (`make bench-boot`). For each vCPU count it runs,
//! interleaved, K times each:
//!
//! - `k42vmm run --cmdline test=none IMAGE`: process start to every vCPU
//!   online and a clean exit;
//! - `k42vmm-boot-baseline`: the same VM and vCPUs, each doing one port
//!   write — the floor;
//!
//! and prints the median whole-process wall time of each and their ratio.
//! The aim is k42vmm within 2x of the baseline.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use k42vmm::bench::median;

fn time_ms(cmd: &mut Command) -> Result<f64, String> {
    let t0 = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(ms)
}

fn main() -> ExitCode {
    let me = std::env::current_exe().expect("own path");
    let dir = me.parent().expect("binary directory").to_path_buf();
    let mut image = PathBuf::from("target/images/default.img");
    let mut samples = 7usize;
    let mut counts = vec![1u32, 8, 64, 255];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(v) = it.next() else {
            eprintln!("k42vmm-bench-boot: {a} needs a value");
            return ExitCode::from(2);
        };
        match a.as_str() {
            "--image" => image = PathBuf::from(v),
            "--samples" => match v.parse() {
                Ok(k) if k > 0 => samples = k,
                _ => {
                    eprintln!("k42vmm-bench-boot: --samples {v}: give a positive number");
                    return ExitCode::from(2);
                }
            },
            "--vcpus" => match v
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
            {
                Ok(c) if !c.is_empty() => counts = c,
                _ => {
                    eprintln!("k42vmm-bench-boot: --vcpus {v}: give a list like 1,8,64");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("k42vmm-bench-boot: unknown option {a}");
                return ExitCode::from(2);
            }
        }
    }
    let vmm = dir.join("k42vmm");
    let baseline = dir.join("k42vmm-boot-baseline");
    println!(
        "boot time, median of {samples} runs (whole process: start to all vCPUs online and exit)"
    );
    println!(
        "{:>6}  {:>12}  {:>12}  {:>7}",
        "vCPUs", "k42vmm ms", "baseline ms", "ratio"
    );
    for n in counts {
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            let run = time_ms(
                Command::new(&vmm)
                    .args([
                        "run",
                        "--vcpus",
                        &n.to_string(),
                        "--timeout",
                        "120s",
                        "--cmdline",
                        "test=none",
                    ])
                    .arg(&image),
            );
            let floor = time_ms(Command::new(&baseline).args(["--vcpus", &n.to_string()]));
            match (run, floor) {
                (Ok(a), Ok(b)) => {
                    ours.push(a);
                    base.push(b);
                }
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("k42vmm-bench-boot: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let (a, b) = (median(&mut ours), median(&mut base));
        println!("{n:>6}  {a:>12.1}  {b:>12.1}  {:>6.2}x", a / b);
    }
    ExitCode::SUCCESS
}
