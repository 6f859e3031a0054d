//! `proc-bench`: process benchmarks, one record per vCPU each (run by
//! init: `init.run=proc-bench`, which `bench=proc` on the kernel command
//! line sets up).
//!
//! | record | what each vCPU measures |
//! |--------|-------------------------|
//! | `proc.syscall` | null system calls from a process thread kept on that vCPU (all threads of one process) |
//! | `proc.fault.shared` / `proc.fault.replicated` | first-touch faults on anonymous pages of one region of one process, a thread per vCPU, with the shared or the replicated Process object |
//! | `proc.forkwait` | fork + child exit + wait cycles by a process kept on that vCPU |
//!
//! `proc-bench [SYSCALLS [PAGES [FORKS]]]` sizes the three (defaults
//! 2000, 64, 20 per vCPU).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use k42_abi::bench::{BenchMode, BenchRecord};
use k42_rt::process::{self, ArgBlock, Ended, Regions};
use k42_rt::sync::wait_until;
use k42_rt::{Start, bench_record, println, rdtsc};

k42_rt::main!(run);

const PAGE: u64 = 4096;
const STACK: u64 = 16 * PAGE;

fn run(start: Start) -> u8 {
    let mut args = process::args(start.info).skip(1);
    let first = args.next().unwrap_or("");
    let num = |s: Option<&str>, d: u64| s.and_then(|s| s.parse().ok()).unwrap_or(d);
    let tsc_khz = start.info.tsc_khz;
    match first {
        "faultwork" => {
            let pages = num(args.next(), 64);
            let name = if args.next() == Some("replicated") {
                "proc.fault.replicated"
            } else {
                "proc.fault.shared"
            };
            return u8::from(!on_every_cpu(name, pages, tsc_khz, Kind::Fault));
        }
        "forkwork" => return u8::from(!forkwork(num(args.next(), 20), tsc_khz)),
        _ => {}
    }
    let syscalls = first.parse().unwrap_or(2000);
    let pages = num(args.next(), 64);
    let forks = num(args.next(), 20);
    let mut ok = on_every_cpu("proc.syscall", syscalls, tsc_khz, Kind::Syscall);
    for regions in [Regions::Shared, Regions::Replicated] {
        ok &= fault_child(pages, regions);
    }
    ok &= forks_everywhere(forks);
    println!("proc-bench: {}", if ok { "done" } else { "FAILED" });
    u8::from(!ok)
}

/// What the workers measure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Syscall = 0,
    Fault = 1,
}

/// What every worker thread needs.
static KIND: AtomicU32 = AtomicU32::new(0);
static GO: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);
static COUNT: AtomicU64 = AtomicU64::new(0);
static BASE: AtomicU64 = AtomicU64::new(0);
static NAME: AtomicU64 = AtomicU64::new(0);
static NAME_LEN: AtomicU64 = AtomicU64::new(0);
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

fn report(ops: u64, ticks: u64) {
    // SAFETY: NAME/NAME_LEN were set from a &'static str before GO.
    let name = unsafe {
        core::str::from_utf8_unchecked(core::slice::from_raw_parts(
            NAME.load(Ordering::Relaxed) as *const u8,
            NAME_LEN.load(Ordering::Relaxed) as usize,
        ))
    };
    let ns = (ticks as u128 * 1_000_000 / TSC_KHZ.load(Ordering::Relaxed).max(1) as u128) as u64;
    // The kernel fills in the CPU the record comes from.
    if bench_record(&BenchRecord::new(name, 0, BenchMode::User, ops, ns.max(1))) != 0 {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Run `worker(i)` on a thread kept on each CPU i (the caller is CPU 0's)
/// and wait for all; each reports one `name` record.
fn on_every_cpu(name: &'static str, count: u64, tsc_khz: u64, kind: Kind) -> bool {
    let cpus = process::cpus() as u64;
    NAME.store(name.as_ptr() as u64, Ordering::Relaxed);
    NAME_LEN.store(name.len() as u64, Ordering::Relaxed);
    TSC_KHZ.store(tsc_khz, Ordering::Relaxed);
    COUNT.store(count, Ordering::Relaxed);
    KIND.store(kind as u32, Ordering::Relaxed);
    GO.store(0, Ordering::Relaxed);
    DONE.store(0, Ordering::Relaxed);
    if kind == Kind::Fault {
        match process::map_anon(cpus * count * PAGE) {
            Ok(b) => BASE.store(b, Ordering::Release),
            Err(e) => {
                println!(
                    "proc-bench: {name}: cannot map {} pages: {}",
                    cpus * count,
                    e.describe()
                );
                return false;
            }
        }
    }
    if let Err(e) = process::threads_on_cpus(cpus, worker, STACK, |i| i) {
        println!("proc-bench: {name}: threads: {}", e.describe());
        return false;
    }
    GO.store(1, Ordering::Release);
    body(0);
    wait_until(|| DONE.load(Ordering::Acquire) >= cpus as u32);
    FAILED.load(Ordering::Relaxed) == 0
}

/// The measured part of worker `i`.
fn body(i: u64) {
    wait_until(|| GO.load(Ordering::Acquire) != 0);
    let n = COUNT.load(Ordering::Relaxed);
    if KIND.load(Ordering::Relaxed) == Kind::Syscall as u32 {
        let t0 = rdtsc();
        for _ in 0..n {
            k42_rt::null();
        }
        report(n, rdtsc() - t0);
    } else {
        let base = BASE.load(Ordering::Acquire) + i * n * PAGE;
        let t0 = rdtsc();
        for j in 0..n {
            // SAFETY: thread i's slice of the region just mapped.
            unsafe { core::ptr::write_volatile((base + j * PAGE) as *mut u64, j) };
        }
        report(n, rdtsc() - t0);
    }
    DONE.fetch_add(1, Ordering::AcqRel);
}

extern "C" fn worker(i: u64) -> ! {
    body(i);
    process::thread_exit(0)
}

/// A child process with the Process object `regions` whose threads
/// fault `pages` pages each.
fn fault_child(pages: u64, regions: Regions) -> bool {
    let mut a = ArgBlock::new();
    a.arg("proc-bench").arg("faultwork").arg_num(pages);
    a.arg(if regions == Regions::Replicated {
        "replicated"
    } else {
        "shared"
    });
    let got = process::spawn("proc-bench", &mut a, regions).and_then(|p| process::wait(Some(p)));
    let ok = matches!(got, Ok((_, Ended::Exited(0))));
    if !ok {
        println!("proc-bench: fault child ({regions:?}) ended {got:?}");
    }
    ok
}

/// A process kept on each CPU doing `forks` fork+exit+wait cycles.
fn forks_everywhere(forks: u64) -> bool {
    let cpus = process::cpus();
    let mut pids = [0u32; 256];
    let mut ok = true;
    for c in 0..cpus.min(256) {
        let mut a = ArgBlock::new();
        a.arg("proc-bench").arg("forkwork").arg_num(forks);
        match process::spawn_on("proc-bench", &mut a, Regions::Shared, Some(c)) {
            Ok(p) => pids[c as usize] = p,
            Err(e) => {
                println!("proc-bench: fork worker on CPU {c}: {}", e.describe());
                ok = false;
            }
        }
    }
    for &p in pids.iter().take(cpus as usize).filter(|&&p| p != 0) {
        let got = process::wait(Some(p));
        if !matches!(got, Ok((_, Ended::Exited(0)))) {
            println!("proc-bench: fork worker {p} ended {got:?}");
            ok = false;
        }
    }
    ok
}

fn forkwork(n: u64, tsc_khz: u64) -> bool {
    let name = "proc.forkwait";
    NAME.store(name.as_ptr() as u64, Ordering::Relaxed);
    NAME_LEN.store(name.len() as u64, Ordering::Relaxed);
    TSC_KHZ.store(tsc_khz, Ordering::Relaxed);
    let t0 = rdtsc();
    for _ in 0..n {
        match process::fork() {
            Ok(0) => k42_rt::exit(0),
            Ok(pid) => {
                if !matches!(process::wait(Some(pid)), Ok((_, Ended::Exited(0)))) {
                    return false;
                }
            }
            Err(e) => {
                println!("proc-bench: fork: {}", e.describe());
                return false;
            }
        }
    }
    report(n, rdtsc() - t0);
    FAILED.load(Ordering::Relaxed) == 0
}
