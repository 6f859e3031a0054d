//! `fs-bench [ops COUNT] [postmark FILES TRANSACTIONS]`: file-system
//! benchmarks through the file server and the file API, a thread kept
//! on each vCPU, one `BenchRecord` per thread. With no arguments: `ops
//! 2000 postmark 500 500`.
//!
//! - `ops`: every thread reads 4 KiB at pseudo-random page offsets of
//!   one shared 1 MiB file — the page cache's lookups from every CPU at
//!   once — once with the file's page index shared (one lock) and once
//!   distributed (K42's DHashTable): records `fs.ops.shared` and
//!   `fs.ops.distributed`.
//! - `postmark`: Postmark 1.5 with its defaults (files of 500–10,000
//!   bytes, reads and writes in 512-byte blocks, equal biases), one
//!   instance per thread in its own directory: make a pool of FILES
//!   files, run TRANSACTIONS transactions (each a create or a delete,
//!   then a read or an append, of random files), delete what is left.
//!   Record `fs.postmark`: the transactions and the time of the
//!   transaction phase.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use k42_abi::bench::{BenchMode, BenchRecord};
use k42_rt::fs::{self, O_APPEND, O_CREATE, O_DISTRIBUTED_INDEX, O_READ, O_SHARED_INDEX, O_WRITE};
use k42_rt::process;
use k42_rt::sync::wait_until;
use k42_rt::{Start, bench_record, println, rdtsc};

k42_rt::main!(run);

const PAGE: usize = 4096;
const STACK: u64 = 64 * 4096;
/// The shared file of `ops`.
const OPS_PAGES: u64 = 256;

/// Postmark 1.5's defaults.
const PM_MIN: u64 = 500;
const PM_MAX: u64 = 10_000;
const PM_BLOCK: usize = 512;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    Ops = 0,
    Postmark = 1,
}

static JOB: AtomicU32 = AtomicU32::new(0);
static GO: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);
static COUNT: AtomicU64 = AtomicU64::new(0);
static FILES: AtomicU64 = AtomicU64::new(0);
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
/// The `ops` file, and its record's name ("shared" or "distributed").
static PATH: AtomicU64 = AtomicU64::new(0);
static NAME: AtomicU64 = AtomicU64::new(0);

fn run(start: Start) -> u8 {
    TSC_KHZ.store(start.info.tsc_khz, Ordering::Relaxed);
    let args: Vec<&str> = process::args(start.info).skip(1).collect();
    let args = if args.is_empty() {
        vec!["ops", "2000", "postmark", "500", "500"]
    } else {
        args
    };
    if let Err(e) = fs::wait_for_server(100_000) {
        println!("fs-bench: no file server: {e}");
        return 1;
    }
    let num = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok());
    let mut i = 0;
    let mut ok = true;
    while i < args.len() {
        match args[i] {
            "ops" => {
                let Some(count) = num(i + 1) else {
                    println!("fs-bench: ops takes a count");
                    return 2;
                };
                for (flag, name) in [
                    (O_SHARED_INDEX, "fs.ops.shared"),
                    (O_DISTRIBUTED_INDEX, "fs.ops.distributed"),
                ] {
                    ok &= ops(count, flag, name);
                }
                i += 2;
            }
            "postmark" => {
                let (Some(files), Some(tx)) = (num(i + 1), num(i + 2)) else {
                    println!("fs-bench: postmark takes FILES and TRANSACTIONS");
                    return 2;
                };
                ok &= postmark(files, tx);
                i += 3;
            }
            other => {
                println!(
                    "fs-bench: unknown part {other:?} (ops COUNT, postmark FILES TRANSACTIONS)"
                );
                return 2;
            }
        }
    }
    println!("fs-bench: {}", if ok { "done" } else { "FAILED" });
    u8::from(!ok)
}

fn fail(what: &str) {
    println!("fs-bench: {what}");
    FAILED.fetch_add(1, Ordering::Relaxed);
}

fn report(name: &str, ops: u64, ticks: u64) {
    let ns = (ticks as u128 * 1_000_000 / TSC_KHZ.load(Ordering::Relaxed).max(1) as u128) as u64;
    // The kernel fills in the CPU the record comes from.
    if bench_record(&BenchRecord::new(name, 0, BenchMode::User, ops, ns.max(1))) != 0 {
        fail("cannot report a record");
    }
}

/// A string stored for the workers (leaked: one per part).
fn publish(slot: &AtomicU64, s: String) {
    let s: &'static str = s.leak();
    // Pointer and length packed: the length is below 2^16.
    slot.store(
        (s.as_ptr() as u64) << 16 | s.len() as u64,
        Ordering::Release,
    );
}

fn published(slot: &AtomicU64) -> &'static str {
    let v = slot.load(Ordering::Acquire);
    // SAFETY: `publish` stored a leaked &'static str's pointer and length
    // (user addresses fit in 48 bits).
    unsafe {
        core::str::from_utf8_unchecked(core::slice::from_raw_parts(
            (v >> 16) as *const u8,
            (v & 0xffff) as usize,
        ))
    }
}

/// Run the current job on a thread kept on each CPU and wait for all.
fn everywhere(job: Job) -> bool {
    let cpus = process::cpus() as u64;
    JOB.store(job as u32, Ordering::Relaxed);
    GO.store(0, Ordering::Relaxed);
    DONE.store(0, Ordering::Relaxed);
    FAILED.store(0, Ordering::Relaxed);
    if let Err(e) = process::threads_on_cpus(cpus, worker, STACK, |i| i) {
        println!("fs-bench: threads: {}", e.describe());
        return false;
    }
    GO.store(1, Ordering::Release);
    body(0);
    wait_until(|| DONE.load(Ordering::Acquire) >= cpus as u32);
    FAILED.load(Ordering::Relaxed) == 0
}

extern "C" fn worker(i: u64) -> ! {
    body(i);
    process::thread_exit(0)
}

fn body(i: u64) {
    wait_until(|| GO.load(Ordering::Acquire) != 0);
    if JOB.load(Ordering::Relaxed) == Job::Ops as u32 {
        ops_body(i);
    } else {
        postmark_body(i);
    }
    DONE.fetch_add(1, Ordering::AcqRel);
}

/// A small, fast generator (xorshift64*), seeded per thread.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

// ---- ops ----

fn ops(count: u64, index: u32, name: &'static str) -> bool {
    let path = format!("/fs-bench-{}", &name[7..]);
    let made = fs::open(&path, O_READ | O_WRITE | O_CREATE | index).and_then(|fd| {
        let block = vec![0x5au8; PAGE];
        for _ in 0..OPS_PAGES {
            fs::write(fd, &block)?;
        }
        fs::close(fd)
    });
    if let Err(e) = made {
        println!("fs-bench: ops: cannot make {path}: {e}");
        return false;
    }
    COUNT.store(count, Ordering::Relaxed);
    publish(&PATH, path.clone());
    publish(&NAME, String::from(name));
    let ok = everywhere(Job::Ops);
    ok & fs::unlink(&path).is_ok()
}

fn ops_body(i: u64) {
    let (path, name) = (published(&PATH), published(&NAME));
    let fd = match fs::open(path, O_READ) {
        Ok(fd) => fd,
        Err(e) => return fail(&format!("ops: open {path}: {e}")),
    };
    let n = COUNT.load(Ordering::Relaxed);
    let mut rng = Rng::new(i + 1);
    let mut buf = [0u8; PAGE];
    let t0 = rdtsc();
    for _ in 0..n {
        let off = rng.below(OPS_PAGES) * PAGE as u64;
        if fs::pread(fd, &mut buf, off) != Ok(PAGE) {
            return fail("ops: short read");
        }
    }
    let t = rdtsc() - t0;
    if buf[0] != 0x5a {
        fail("ops: the file's contents changed");
    }
    report(name, n, t);
    let _ = fs::close(fd);
}

// ---- postmark ----

fn postmark(files: u64, tx: u64) -> bool {
    FILES.store(files, Ordering::Relaxed);
    COUNT.store(tx, Ordering::Relaxed);
    everywhere(Job::Postmark)
}

/// Write `size` bytes to `fd` in 512-byte blocks, then close it.
fn write_blocks(fd: usize, size: u64, block: &[u8]) -> fs::Result<()> {
    let mut left = size as usize;
    while left > 0 {
        let n = left.min(PM_BLOCK);
        fs::write(fd, &block[..n])?;
        left -= n;
    }
    fs::close(fd)
}

/// A new file of `size` bytes at `path`.
fn pm_create(path: &str, size: u64, block: &[u8]) -> fs::Result<()> {
    write_blocks(fs::open(path, O_READ | O_WRITE | O_CREATE)?, size, block)
}

fn pm_read(path: &str) -> fs::Result<()> {
    let fd = fs::open(path, O_READ)?;
    let mut buf = [0u8; PM_BLOCK];
    while fs::read(fd, &mut buf)? > 0 {}
    fs::close(fd)
}

fn pm_append(path: &str, size: u64, block: &[u8]) -> fs::Result<()> {
    write_blocks(fs::open(path, O_WRITE | O_APPEND)?, size, block)
}

fn postmark_body(i: u64) {
    let (files, tx) = (FILES.load(Ordering::Relaxed), COUNT.load(Ordering::Relaxed));
    let dir = format!("/pm{i}");
    if let Err(e) = fs::mkdir(&dir) {
        return fail(&format!("postmark: mkdir {dir}: {e}"));
    }
    let mut rng = Rng::new(0x9057 + i);
    let block: Vec<u8> = (0..PM_BLOCK).map(|j| (j as u64 ^ i) as u8).collect();
    let mut pool: Vec<u64> = Vec::new();
    let mut next = 0u64;
    let name = |n: u64| format!("{dir}/{n}");
    // The pool.
    for _ in 0..files {
        if let Err(e) = pm_create(&name(next), rng.between(PM_MIN, PM_MAX), &block) {
            return fail(&format!("postmark: create: {e}"));
        }
        pool.push(next);
        next += 1;
    }
    // The transactions (timed).
    let t0 = rdtsc();
    for _ in 0..tx {
        if rng.below(2) == 0 || pool.is_empty() {
            if let Err(e) = pm_create(&name(next), rng.between(PM_MIN, PM_MAX), &block) {
                return fail(&format!("postmark: create: {e}"));
            }
            pool.push(next);
            next += 1;
        } else {
            let k = rng.below(pool.len() as u64) as usize;
            let f = pool.swap_remove(k);
            if let Err(e) = fs::unlink(&name(f)) {
                return fail(&format!("postmark: delete: {e}"));
            }
        }
        if pool.is_empty() {
            continue;
        }
        let f = pool[rng.below(pool.len() as u64) as usize];
        let r = if rng.below(2) == 0 {
            pm_read(&name(f))
        } else {
            pm_append(&name(f), rng.between(PM_MIN, PM_MAX), &block)
        };
        if let Err(e) = r {
            return fail(&format!("postmark: read/append: {e}"));
        }
    }
    let t = rdtsc() - t0;
    // What is left goes.
    for f in pool {
        if let Err(e) = fs::unlink(&name(f)) {
            return fail(&format!("postmark: delete: {e}"));
        }
    }
    if let Err(e) = fs::rmdir(&dir) {
        return fail(&format!("postmark: rmdir: {e}"));
    }
    report("fs.postmark", tx, t);
}
