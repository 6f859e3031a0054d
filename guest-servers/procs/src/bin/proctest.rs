//! `proctest`: the process tests. `proctest MODE [ARGS]`; each mode
//! prints one `proctest MODE: ...` result line and exits 0 when its check
//! passed.
//!
//! | mode | checks |
//! |------|--------|
//! | `exit N` | exits with N (a child for the other modes) |
//! | `spin` | loops forever (a child to kill) |
//! | `readkernel` | reads kernel memory: must be killed (a child) |
//! | `hog` | touches memory until killed for it (a child) |
//! | `divide`, `ud`, `recurse` | a divide error, an invalid opcode, a stack overflow (children) |
//! | `faults-kill` | each of those, and a kernel-memory read, kills only its child with the right exception |
//! | `kernelread` | a `readkernel` child is killed by #PF, then `hello` still runs |
//! | `oom` | a `hog` child is killed for running out of memory |
//! | `forkbomb` | every process forks until the process limit stops it; all reaped |
//! | `cycles N [W]` | N spawn+exit+wait cycles, by W processes at once, leave the free frame count unchanged |
//! | `fork` | fork is copy-on-write; exec replaces the program; exec of a missing program fails |
//! | `kill` | a spinning child is killed |
//! | `syscalls` | bad pointers, pids and programs get the right errors |
//! | `faults T P shared\|replicated` | a child whose T threads each fault in P pages of one region at once, then check them all |
//! | `fpu T` | T threads keep their SSE registers across preemption |
//! | `threadexit` | a child whose second thread calls exit(5) ends with 5 |
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use k42_abi::syscall::{Syscall, SyscallError};
use k42_rt::process::{self, ArgBlock, Ended, Regions};
use k42_rt::sync::relax;
use k42_rt::{Start, get_cpu, println, syscall3};

k42_rt::main!(run);

const PAGE: u64 = 4096;

fn run(start: Start) -> u8 {
    let mut args = process::args(start.info).skip(1);
    let mode = args.next().unwrap_or("");
    let num = |s: Option<&str>, d: u64| s.and_then(|s| s.parse().ok()).unwrap_or(d);
    let ok = match mode {
        "exit" => return num(args.next(), 0) as u8,
        "spin" => loop {
            core::hint::spin_loop();
        },
        "readkernel" => {
            // SAFETY: deliberately not safe: the kernel half is mapped
            // supervisor-only, so this read must fault.
            let v = unsafe { core::ptr::read_volatile(0xffff_ffff_8020_0000 as *const u64) };
            println!("proctest readkernel: read kernel memory {v:#x}!");
            return 10;
        }
        "hog" => hog(),
        "divide" => {
            let zero = core::hint::black_box(0u64);
            // SAFETY: deliberately raises #DE (a plain `/` would panic
            // in Rust before dividing).
            unsafe {
                core::arch::asm!("div {z}", z = in(reg) zero, inout("rax") 1u64 => _, inout("rdx") 0u64 => _)
            };
            return 10;
        }
        "ud" => {
            // SAFETY: deliberately raises #UD (not at a system-call site).
            unsafe { core::arch::asm!("ud2") };
            return 10;
        }
        "recurse" => return recurse(core::hint::black_box(1)) as u8,
        "faults-kill" => faults_kill(),
        "kernelread" => kernelread(),
        "oom" => expect_child(&["hog"], Regions::Shared, Ended::OutOfMemory, "oom"),
        "forkbomb" => return forkbomb(),
        "cycles" => {
            let n = num(args.next(), 1000);
            cycles(n, num(args.next(), 1).clamp(1, 64))
        }
        "cyclework" => cycle_loop(num(args.next(), 1)),
        "fork" => fork(),
        "kill" => kill(),
        "syscalls" => syscalls(),
        "faults" => {
            let t = num(args.next(), start.info.cpus as u64);
            let p = num(args.next(), 16);
            let regions = match args.next() {
                Some("replicated") => Regions::Replicated,
                _ => Regions::Shared,
            };
            faults(t, p, regions)
        }
        "faultchild" => {
            let t = num(args.next(), 1);
            let p = num(args.next(), 16);
            return faultchild(t, p);
        }
        "fpu" => fpu(num(args.next(), 2 * start.info.cpus as u64), start),
        "threadexit" => expect_child(
            &["threadexit-child"],
            Regions::Shared,
            Ended::Exited(5),
            "threadexit",
        ),
        "threadexit-child" => threadexit_child(),
        _ => {
            println!("proctest: unknown mode {mode:?}");
            false
        }
    };
    u8::from(!ok)
}

fn spawn(words: &[&str], regions: Regions) -> Result<u32, SyscallError> {
    let mut a = ArgBlock::new();
    a.arg("proctest");
    for w in words {
        a.arg(w);
    }
    process::spawn("proctest", &mut a, regions)
}

/// Spawn `proctest MODE N...`.
fn spawn_nums(mode: &str, nums: &[u64], regions: Regions) -> Result<u32, SyscallError> {
    let mut a = ArgBlock::new();
    a.arg("proctest").arg(mode);
    for &n in nums {
        a.arg_num(n);
    }
    process::spawn("proctest", &mut a, regions)
}

/// Spawn `proctest WORDS...`, wait, and check it ended as `want`.
fn expect_child(words: &[&str], regions: Regions, want: Ended, name: &str) -> bool {
    let got = spawn(words, regions).and_then(|pid| process::wait(Some(pid)));
    let ok = matches!(got, Ok((_, e)) if e == want);
    println!(
        "proctest {name}: child ended {got:?}, expected {want:?}: {}",
        verdict(ok)
    );
    ok
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAILED" }
}

/// Map and touch memory in 256 KiB regions until killed for it.
fn hog() -> bool {
    let len = 256 << 10;
    let mut touched = 0u64;
    while let Ok(base) = process::map_anon(len) {
        for off in (0..len).step_by(PAGE as usize) {
            // SAFETY: inside the region just mapped.
            unsafe { core::ptr::write_volatile((base + off) as *mut u64, off) };
        }
        touched += len;
    }
    println!(
        "proctest hog: touched {} KiB and was not stopped",
        touched >> 10
    );
    false
}

/// Endless recursion: runs off the bottom of the stack region.
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let mut pad = [n; 64];
    core::hint::black_box(&mut pad);
    recurse(n + 1) + pad[3]
}

/// A divide error, an invalid opcode and a stack overflow each end only
/// their own process, with the exception that caused it.
fn faults_kill() -> bool {
    let mut ok = true;
    for (mode, vector) in [
        ("divide", 0),
        ("ud", 6),
        ("recurse", 14),
        ("readkernel", 14),
    ] {
        ok &= expect_child(&[mode], Regions::Shared, Ended::Fault(vector), mode);
    }
    ok
}

fn kernelread() -> bool {
    let killed = expect_child(
        &["readkernel"],
        Regions::Shared,
        Ended::Fault(14),
        "kernelread",
    );
    let mut a = ArgBlock::new();
    a.arg("hello").arg("after-the-fault");
    let after =
        process::spawn("hello", &mut a, Regions::Shared).and_then(|p| process::wait(Some(p)));
    let ok = killed && matches!(after, Ok((_, Ended::Exited(0))));
    println!(
        "proctest kernelread: the system carried on: {}",
        verdict(ok)
    );
    ok
}

/// Fork until the process limit refuses; each child does the same. A
/// process exits 1 if it or a descendant met the limit, else 0; other
/// errors exit 2.
fn forkbomb() -> u8 {
    let root = process::getpid();
    let mut forks = 0u32;
    let mut limited = false;
    let mut other = None;
    loop {
        match process::fork() {
            Ok(0) => {
                forks = 0;
                continue;
            }
            Ok(_) => forks += 1,
            Err(SyscallError::ProcessLimit) => {
                limited = true;
                break;
            }
            Err(e) => {
                println!(
                    "proctest forkbomb: process {}: fork: {}",
                    process::getpid(),
                    e.describe()
                );
                other = Some(e);
                break;
            }
        }
    }
    let mut reaped = 0;
    while let Ok((_, how)) = process::wait(None) {
        reaped += 1;
        match how {
            Ended::Exited(1) => limited = true,
            Ended::Exited(0) => {}
            e => {
                println!(
                    "proctest forkbomb: process {} had a child end {e:?}",
                    process::getpid()
                );
                other = other.or(Some(SyscallError::InvalidArgument));
            }
        }
    }
    if process::getpid() != root {
        return if other.is_some() {
            2
        } else {
            u8::from(limited)
        };
    }
    let ok = limited && other.is_none() && reaped == forks;
    println!(
        "proctest forkbomb: {forks} direct children, stopped by the process limit: {limited}, other errors: {other:?}, all reaped: {}: {}",
        reaped == forks,
        verdict(ok)
    );
    u8::from(!ok)
}

/// `n` spawn+exit+wait cycles split over `workers` processes running at
/// once; the machine's free frames must be the same before and after.
fn cycles(n: u64, workers: u64) -> bool {
    // One cycle first, so that lazily made kernel state is made.
    if !cycle_loop(1) {
        println!("proctest cycles: the first child failed");
        return false;
    }
    let before = process::free_frames();
    let t0 = k42_rt::rdtsc();
    let each = n / workers;
    let mut ok = true;
    let mut pids = [0u32; 64];
    for p in pids.iter_mut().take(workers as usize) {
        match spawn_nums("cyclework", &[each], Regions::Shared) {
            Ok(pid) => *p = pid,
            Err(e) => {
                println!("proctest cycles: cannot start a worker: {}", e.describe());
                ok = false;
            }
        }
    }
    for &p in pids.iter().take(workers as usize).filter(|&&p| p != 0) {
        let r = process::wait(Some(p));
        if !matches!(r, Ok((_, Ended::Exited(0)))) {
            println!("proctest cycles: worker {p} ended {r:?}");
            ok = false;
        }
    }
    let t1 = k42_rt::rdtsc();
    let after = process::free_frames();
    ok &= before == after;
    println!(
        "proctest cycles: {} create/exit cycles by {workers} processes at once in {} ticks, free frames {before} before, {after} after: {}",
        each * workers,
        t1 - t0,
        verdict(ok)
    );
    ok
}

/// `n` cycles of spawning `proctest exit 0` and waiting for it.
fn cycle_loop(n: u64) -> bool {
    for i in 0..n {
        let r = spawn(&["exit", "0"], Regions::Shared).and_then(|p| process::wait(Some(p)));
        if !matches!(r, Ok((_, Ended::Exited(0)))) {
            println!("proctest cyclework: cycle {i} ended {r:?}: FAILED");
            return false;
        }
    }
    true
}

static mut COW_VALUE: u64 = 1;

fn fork() -> bool {
    let p = &raw mut COW_VALUE;
    // SAFETY: single-threaded process; plain reads and writes of a static.
    unsafe { p.write_volatile(5) };
    let child = match process::fork() {
        Ok(0) => {
            // SAFETY: as above, in the child's own copy.
            unsafe { p.write_volatile(7) };
            // SAFETY: as above: the child is single-threaded too, and `p`
            // points at its own copy of the static.
            let value = unsafe { p.read_volatile() };
            process_exit(value as u8);
        }
        Ok(pid) => pid,
        Err(e) => {
            println!("proctest fork: fork failed: {}", e.describe());
            return false;
        }
    };
    let got = process::wait(Some(child));
    // SAFETY: as above.
    let mine = unsafe { p.read_volatile() };
    let cow = matches!(got, Ok((_, Ended::Exited(7)))) && mine == 5;
    println!(
        "proctest fork: child saw its own copy ({got:?}), parent kept {mine}: {}",
        verdict(cow)
    );
    // fork + exec hello.
    let execd = match process::fork() {
        Ok(0) => {
            let mut a = ArgBlock::new();
            a.arg("hello").arg("from-exec").env("K42=1");
            let e = process::exec("hello", &mut a);
            println!("proctest fork: exec failed: {}", e.describe());
            process_exit(9);
        }
        Ok(pid) => process::wait(Some(pid)),
        Err(e) => Err(e),
    };
    let exec_ok = matches!(execd, Ok((_, Ended::Exited(0))));
    println!(
        "proctest fork: fork+exec hello ended {execd:?}: {}",
        verdict(exec_ok)
    );
    let missing = match process::fork() {
        Ok(0) => {
            let mut a = ArgBlock::new();
            a.arg("no-such-program");
            let e = process::exec("no-such-program", &mut a);
            process_exit(if e == SyscallError::NoSuchProgram {
                3
            } else {
                4
            });
        }
        Ok(pid) => process::wait(Some(pid)),
        Err(e) => Err(e),
    };
    let missing_ok = matches!(missing, Ok((_, Ended::Exited(3))));
    println!(
        "proctest fork: exec of a missing program refused: {}",
        verdict(missing_ok)
    );
    cow && exec_ok && missing_ok
}

fn process_exit(status: u8) -> ! {
    k42_rt::exit(status)
}

fn kill() -> bool {
    let got = spawn(&["spin"], Regions::Shared).and_then(|pid| {
        process::kill(pid)?;
        process::wait(Some(pid))
    });
    let ok = matches!(got, Ok((_, Ended::Killed)));
    println!(
        "proctest kill: spinning child ended {got:?}: {}",
        verdict(ok)
    );
    ok
}

fn syscalls() -> bool {
    let bad = SyscallError::BadAddress as i64;
    let mut fails = 0;
    let mut check = |what: &str, ok: bool| {
        if !ok {
            println!("proctest syscalls: {what}: FAILED");
            fails += 1;
        }
    };
    check(
        "kernel pointer",
        syscall3(Syscall::Write, 0xffff_ffff_8020_0000, 8, 0) == bad,
    );
    check(
        "unmapped pointer",
        syscall3(Syscall::Write, 0x3000_0000, 8, 0) == bad,
    );
    check(
        "wrapping range",
        syscall3(Syscall::Write, u64::MAX - 4, 8, 0) == bad,
    );
    check(
        "bad program name pointer",
        k42_rt::syscall5(Syscall::Spawn, [0x10, 4, 0, 0, 0]) == bad,
    );
    let mut a = ArgBlock::new();
    a.arg("x");
    check(
        "missing program",
        process::spawn("no-such-program", &mut a, Regions::Shared)
            == Err(SyscallError::NoSuchProgram),
    );
    check(
        "wait without children",
        process::wait(None) == Err(SyscallError::NoChildren),
    );
    check(
        "wait for a stranger",
        process::wait(Some(1)) == Err(SyscallError::NoSuchProcess),
    );
    check(
        "kill a stranger",
        process::kill(1) == Err(SyscallError::NoSuchProcess),
    );
    check(
        "kill a missing pid",
        process::kill(999_999) == Err(SyscallError::NoSuchProcess),
    );
    check(
        "map nothing",
        process::map_anon(0) == Err(SyscallError::InvalidArgument),
    );
    check(
        "unknown call",
        k42_rt::sys::syscall3_raw(9999, 0, 0, 0) == SyscallError::NoSuchCall as i64,
    );
    // Memory from map_anon is zero and usable by system calls.
    let m = process::map_anon(3 * PAGE);
    check("map_anon", m.is_ok());
    if let Ok(base) = m {
        // SAFETY: inside the region just mapped.
        let z = unsafe { core::ptr::read_volatile((base + PAGE) as *const u64) };
        check("anonymous memory is zero", z == 0);
        let msg = b"proctest syscalls: writing from anonymous memory\n";
        // SAFETY: inside the region.
        unsafe {
            core::ptr::copy_nonoverlapping(
                msg.as_ptr(),
                (base + 2 * PAGE - 10) as *mut u8,
                msg.len(),
            )
        };
        check(
            "write across pages",
            syscall3(Syscall::Write, base + 2 * PAGE - 10, msg.len() as u64, 0) == msg.len() as i64,
        );
    }
    println!(
        "proctest syscalls: {fails} failures: {}",
        verdict(fails == 0)
    );
    fails == 0
}

fn faults(t: u64, p: u64, regions: Regions) -> bool {
    let name = if regions == Regions::Replicated {
        "replicated"
    } else {
        "shared"
    };
    let got = spawn_nums("faultchild", &[t, p], regions).and_then(|pid| process::wait(Some(pid)));
    let ok = matches!(got, Ok((_, Ended::Exited(0))));
    println!(
        "proctest faults: {t} threads x {p} pages, {name} Process: child ended {got:?}: {}",
        verdict(ok)
    );
    ok
}

static GO: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
static BASE: AtomicU64 = AtomicU64::new(0);
static PAGES: AtomicU64 = AtomicU64::new(0);
static CPUS_SEEN: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];
static FAULT_TICKS: AtomicU64 = AtomicU64::new(0);

fn touch_slice(i: u64) {
    let (base, p) = (BASE.load(Ordering::Acquire), PAGES.load(Ordering::Relaxed));
    CPUS_SEEN[get_cpu() as usize % 256].store(1, Ordering::Relaxed);
    let t0 = k42_rt::rdtsc();
    for j in 0..p {
        let a = base + (i * p + j) * PAGE;
        // SAFETY: inside the region faultchild mapped for all slices.
        unsafe { core::ptr::write_volatile(a as *mut u64, i << 32 | j) };
    }
    FAULT_TICKS.fetch_add(k42_rt::rdtsc() - t0, Ordering::Relaxed);
}

extern "C" fn fault_worker(i: u64) -> ! {
    let mut round = 0;
    while GO.load(Ordering::Acquire) == 0 {
        relax(round);
        round += 1;
    }
    touch_slice(i);
    DONE.fetch_add(1, Ordering::AcqRel);
    process::thread_exit(0)
}

/// Stack size of each extra thread.
const STACK: u64 = 16 * PAGE;

/// Stacks for threads `1..t`, in one region: the stack top of thread
/// `i` is `stack_top(base, i)`.
fn stacks(t: u64) -> Result<u64, SyscallError> {
    process::map_anon(t.max(1) * STACK)
}

fn stack_top(base: u64, i: u64) -> u64 {
    base + i * STACK - 8
}

fn faultchild(t: u64, p: u64) -> u8 {
    let Ok(base) = process::map_anon(t * p * PAGE) else {
        println!("proctest faultchild: cannot map {t} x {p} pages");
        return 1;
    };
    BASE.store(base, Ordering::Release);
    PAGES.store(p, Ordering::Release);
    // Thread i on CPU i (mod the CPU count), so that every vCPU faults.
    if let Err(e) = process::threads_on_cpus(t, fault_worker, STACK, |i| i) {
        println!("proctest faultchild: threads: {}", e.describe());
        return 1;
    }
    GO.store(1, Ordering::Release);
    touch_slice(0);
    let mut round = 0;
    while DONE.load(Ordering::Acquire) < (t - 1) as u32 {
        relax(round);
        round += 1;
    }
    let mut bad = 0;
    for i in 0..t {
        for j in 0..p {
            let a = base + (i * p + j) * PAGE;
            // SAFETY: inside the region.
            if unsafe { core::ptr::read_volatile(a as *const u64) } != i << 32 | j {
                bad += 1;
            }
        }
    }
    let cpus = CPUS_SEEN
        .iter()
        .filter(|c| c.load(Ordering::Relaxed) != 0)
        .count();
    println!(
        "proctest faultchild: {t} threads on {cpus} CPUs faulted {} pages, {} ticks of faulting, {bad} wrong",
        t * p,
        FAULT_TICKS.load(Ordering::Relaxed)
    );
    u8::from(bad != 0)
}

static FPU_BAD: AtomicU32 = AtomicU32::new(0);
static FPU_GAPS: AtomicU64 = AtomicU64::new(0);
static FPU_SPIN: AtomicU64 = AtomicU64::new(0);

fn set_xmm(v: u64) {
    // SAFETY: writes only xmm0 and xmm1, which the soft-float program
    // never uses otherwise.
    unsafe {
        core::arch::asm!("movq xmm0, {v}", "movq xmm1, {w}", v = in(reg) v, w = in(reg) !v, out("xmm0") _, out("xmm1") _);
    }
}

fn get_xmm() -> (u64, u64) {
    let (a, b): (u64, u64);
    // SAFETY: reads xmm0 and xmm1 only.
    unsafe { core::arch::asm!("movq {a}, xmm0", "movq {b}, xmm1", a = out(reg) a, b = out(reg) b) };
    (a, b)
}

/// Keep a thread-unique value in xmm0/xmm1 while spinning; count
/// changes and gaps (time off the CPU).
fn fpu_spin(id: u64) {
    let v = 0x5eed_0000_0000_0000 | id;
    set_xmm(v);
    let spin = FPU_SPIN.load(Ordering::Relaxed);
    let start = k42_rt::rdtsc();
    let mut last = start;
    let gap = spin / 20;
    while last - start < spin {
        let now = k42_rt::rdtsc();
        if now - last > gap {
            FPU_GAPS.fetch_add(1, Ordering::Relaxed);
        }
        last = now;
        if get_xmm() != (v, !v) {
            FPU_BAD.fetch_add(1, Ordering::Relaxed);
            set_xmm(v);
        }
    }
}

extern "C" fn fpu_worker(i: u64) -> ! {
    fpu_spin(i);
    DONE.fetch_add(1, Ordering::AcqRel);
    process::thread_exit(0)
}

fn fpu(t: u64, start: Start) -> bool {
    // Each thread spins 100 ms: several 10 ms slices when threads
    // outnumber CPUs.
    FPU_SPIN.store(start.info.tsc_khz * 100, Ordering::Relaxed);
    let Ok(st) = stacks(t) else {
        println!("proctest fpu: cannot map stacks");
        return false;
    };
    for i in 1..t {
        if let Err(e) = process::thread_create(fpu_worker, stack_top(st, i), i, None) {
            println!("proctest fpu: thread {i}: {}", e.describe());
            return false;
        }
    }
    fpu_spin(0);
    let mut round = 0;
    while DONE.load(Ordering::Acquire) < (t - 1) as u32 {
        relax(round);
        round += 1;
    }
    let (bad, gaps) = (
        FPU_BAD.load(Ordering::Relaxed),
        FPU_GAPS.load(Ordering::Relaxed),
    );
    let ok = bad == 0;
    println!(
        "proctest fpu: {t} threads, {gaps} times off the CPU, {bad} SSE registers lost: {}",
        verdict(ok)
    );
    ok
}

extern "C" fn exit5(_: u64) -> ! {
    k42_rt::exit(5)
}

fn threadexit_child() -> bool {
    if stacks(2)
        .and_then(|s| process::thread_create(exit5, stack_top(s, 1), 0, None))
        .is_err()
    {
        return false;
    }
    let mut round = 0;
    loop {
        relax(round);
        round = round.saturating_add(1);
    }
}
