//! `ppctest`: protected procedure calls. `ppctest server [NAME]` serves
//! (registering NAME with the name server); `ppctest client` spawns
//! servers and checks calls, identities and every error; `ppctest names`
//! finds a server through the name server (started by init);
//! `ppctest bench [N]` times N calls from a thread kept on each vCPU
//! (record `ppc.call`).
//!
//! Server methods: 0 echo (reverses the message, returns arg + 1), 1 the
//! caller's pid, 2 crash, 3 exit(7) from inside the call, 4 spin for
//! `arg` ms (a long call to preempt); others `NoSuchMethod`.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use k42_abi::bench::{BenchMode, BenchRecord};
use k42_abi::syscall::SyscallError;
use k42_rt::ppc;
use k42_rt::process::{self, ArgBlock, Ended, Regions};
use k42_rt::sync::{relax, wait_until};
use k42_rt::{Start, bench_record, println, rdtsc};

k42_rt::main!(run);

const PAGE: u64 = 4096;
const STACK: u64 = 4 * PAGE;

fn run(start: Start) -> u8 {
    let mut args = process::args(start.info).skip(1);
    match args.next() {
        Some("server") => {
            SERVER_TSC_KHZ.store(start.info.tsc_khz, Ordering::Relaxed);
            serve(args.next())
        }
        Some("names") => u8::from(!names()),
        Some("client") => u8::from(!client()),
        Some("bench") => {
            let n = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
            u8::from(!bench(n, start.info.tsc_khz))
        }
        other => {
            println!("ppctest: unknown mode {other:?}");
            2
        }
    }
}

extern "C" fn entry(caller: u64, method: u64, arg: u64, msg: *mut u8, len: u64) -> ! {
    match method {
        0 => {
            // SAFETY: the kernel put `len` bytes at `msg`, this CPU's
            // buffer, for this call alone.
            let m = unsafe { core::slice::from_raw_parts_mut(msg, len as usize) };
            m.reverse();
            ppc::reply(arg as i64 + 1, len as usize)
        }
        1 => ppc::reply(caller as i64, 0),
        2 => {
            // SAFETY: deliberately not safe: the server dies of it.
            unsafe { core::ptr::write_volatile(0x10 as *mut u64, 1) };
            ppc::reply(0, 0)
        }
        3 => k42_rt::exit(7),
        4 => {
            let end = rdtsc() + arg * SERVER_TSC_KHZ.load(Ordering::Relaxed);
            while rdtsc() < end {
                core::hint::spin_loop();
            }
            ppc::reply(0, 0)
        }
        _ => ppc::reply(SyscallError::NoSuchMethod as i64, 0),
    }
}

/// Serve; with a name, a helper thread registers it with the name
/// server once this process is a server.
fn serve(name: Option<&'static str>) -> u8 {
    let cpus = process::cpus() as u64;
    let (Ok(stacks), Ok(msgs)) = (
        process::map_anon((cpus + 1) * STACK),
        process::map_anon(cpus * ppc::MAX as u64),
    ) else {
        println!("ppctest server: cannot map stacks and buffers");
        return 1;
    };
    if let Some(n) = name {
        // The helper's stack is the one past the CPUs'.
        let top = stacks + (cpus + 1) * STACK - 8;
        if ppc::register_when_serving(n, top, registered).is_err() {
            return 1;
        }
    }
    let e = ppc::serve(entry, stacks, STACK, msgs);
    println!("ppctest server: serve failed: {}", e.describe());
    1
}

fn registered(r: Result<(), SyscallError>) {
    if let Err(e) = r {
        println!("ppctest server: cannot register: {}", e.describe());
    }
}

/// Servers found by name through the name server (which init started).
fn names() -> bool {
    let mut fails = 0;
    let mut check = |what: &str, ok: bool| {
        if !ok {
            println!("ppctest names: {what}: FAILED");
            fails += 1;
        }
    };
    let mut a = ArgBlock::new();
    a.arg("ppctest").arg("server").arg("echo");
    let Ok(pid) = process::spawn("ppctest", &mut a, Regions::Shared) else {
        println!("ppctest names: cannot start the server: FAILED");
        return false;
    };
    // The name server and the echo server may both still be starting.
    let h = match ppc::wait_for_name("echo", 100_000) {
        Ok(h) => Some(h),
        Err(e) => {
            println!("ppctest names: resolving echo: {}", e.describe());
            None
        }
    };
    let mut msg = [0u8; ppc::MAX];
    msg[..3].copy_from_slice(b"abc");
    let echoed = h.map(|h| ppc::call(h, 0, 1, &mut msg, 3));
    check(
        "a call through a resolved name",
        echoed == Some(Ok((2, 3))) && &msg[..3] == b"cba",
    );
    check(
        "an unknown name",
        ppc::resolve("no-such-service") == Err(SyscallError::NoSuchName),
    );
    check(
        "another process's name",
        ppc::register("echo", 1) == Err(SyscallError::InvalidArgument),
    );
    let ns = ppc::name_server().unwrap_or(0);
    check(
        "an unknown name-server method",
        ppc::call(ns, 77, 0, &mut msg, 3) == Err(SyscallError::NoSuchMethod),
    );
    check(
        "a name of our own",
        ppc::register("ppctest-client", 5).is_ok(),
    );
    check("resolving it", ppc::resolve("ppctest-client") == Ok(5));
    // The server dies: its name now leads to a stale handle.
    let _ = process::kill(pid);
    let _ = process::wait(Some(pid));
    if let Some(h) = h {
        check(
            "a dead server's name",
            ppc::resolve("echo") == Ok(h)
                && ppc::call(h, 0, 0, &mut msg, 0) == Err(SyscallError::StaleHandle),
        );
    }
    println!("ppctest names: {fails} failures: {}", verdict(fails == 0));
    fails == 0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAILED" }
}

/// Spawn a server and find its handle.
fn start_server() -> Result<(u32, u64), SyscallError> {
    let mut a = ArgBlock::new();
    a.arg("ppctest").arg("server");
    let pid = process::spawn("ppctest", &mut a, Regions::Shared)?;
    let mut round = 0;
    loop {
        match ppc::lookup(pid) {
            Ok(h) => return Ok((pid, h)),
            Err(SyscallError::NoSuchProcess) if round < 100_000 => {
                relax(round);
                round += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn client() -> bool {
    let mut fails = 0;
    let mut check = |what: &str, ok: bool| {
        if !ok {
            println!("ppctest client: {what}: FAILED");
            fails += 1;
        }
    };
    let Ok((pid, h)) = start_server() else {
        println!("ppctest client: no server: FAILED");
        return false;
    };
    let mut msg = [0u8; ppc::MAX];
    msg[..5].copy_from_slice(b"hello");
    let echo = ppc::call(h, 0, 41, &mut msg, 5);
    check("echo", echo == Ok((42, 5)) && &msg[..5] == b"olleh");
    let me = ppc::call(h, 1, 0, &mut msg, 0);
    check("the caller's pid", me == Ok((process::getpid() as u64, 0)));
    check(
        "a bad method",
        ppc::call(h, 99, 0, &mut msg, 0) == Err(SyscallError::NoSuchMethod),
    );
    let mut big = [0u8; ppc::MAX + 1];
    check(
        "an oversize message",
        ppc::call_raw_len(h, 0, &mut big, ppc::MAX as u64 + 1) == SyscallError::TooLong as i64,
    );
    check(
        "a stale handle",
        ppc::call(h ^ 1, 0, 0, &mut msg, 0) == Err(SyscallError::StaleHandle),
    );
    check(
        "a handle to no slot",
        ppc::call(1 << 40, 0, 0, &mut msg, 0) == Err(SyscallError::StaleHandle),
    );
    check(
        "a message at a bad address",
        k42_rt::syscall5(k42_abi::syscall::Syscall::PpcCall, [h, 0, 0, 0x10, 8])
            == SyscallError::BadAddress as i64,
    );
    check("calls from every CPU at once", every_cpu(h, 50, None));
    check("a call waiting for a busy worker", busy_worker(h));
    // The server dies in a call: the caller gets an error, not a hang.
    check(
        "a server crashing in a call",
        ppc::call(h, 2, 0, &mut msg, 0) == Err(SyscallError::ServerDied),
    );
    check(
        "the crashed server's end",
        matches!(process::wait(Some(pid)), Ok((_, Ended::Fault(14)))),
    );
    check(
        "a dead server's handle",
        ppc::call(h, 0, 0, &mut msg, 0) == Err(SyscallError::StaleHandle),
    );
    match start_server() {
        Ok((pid, h)) => {
            check(
                "a server exiting in a call",
                ppc::call(h, 3, 0, &mut msg, 0) == Err(SyscallError::ServerDied),
            );
            check(
                "the exited server's status",
                matches!(process::wait(Some(pid)), Ok((_, Ended::Exited(7)))),
            );
        }
        Err(_) => check("a second server", false),
    }
    match start_server() {
        Ok((pid, h)) => {
            check("killing a server", process::kill(pid).is_ok());
            check(
                "the killed server's end",
                matches!(process::wait(Some(pid)), Ok((_, Ended::Killed))),
            );
            check(
                "a killed server's handle",
                ppc::call(h, 0, 0, &mut msg, 0) == Err(SyscallError::StaleHandle),
            );
        }
        Err(_) => check("a third server", false),
    }
    println!("ppctest client: {fails} failures: {}", verdict(fails == 0));
    fails == 0
}

/// The server's TSC rate (kHz), for method 4.
static SERVER_TSC_KHZ: AtomicU64 = AtomicU64::new(0);

/// `busy_worker`'s long call: 1 once started, 2 once it returned Ok.
static SLOW: AtomicU32 = AtomicU32::new(0);

extern "C" fn slow_caller(h: u64) -> ! {
    SLOW.store(1, Ordering::Release);
    let ok = ppc::call(h, 4, 300, &mut [0u8; 8], 0) == Ok((0, 0));
    SLOW.store(if ok { 2 } else { 3 }, Ordering::Release);
    process::thread_exit(0)
}

/// Two threads kept on CPU 0: one in a 300 ms call (its worker preempted
/// by the timer), the other calling the same server. The kernel's answer
/// to a single attempt is `Busy`; `ppc::call` waits its turn and
/// succeeds; the long call completes.
fn busy_worker(h: u64) -> bool {
    let Ok(stack) = process::map_anon(4 * PAGE) else {
        return false;
    };
    if process::pin(Some(0)).is_err() {
        return false;
    }
    SLOW.store(0, Ordering::Relaxed);
    if process::thread_create(slow_caller, stack + 4 * PAGE - 8, h, Some(0)).is_err() {
        return false;
    }
    let mut msg = [0u8; ppc::MAX];
    let mut busy = false;
    // Let the other thread start its call, then try once at a time
    // until its worker is found busy (or its call is over).
    wait_until(|| SLOW.load(Ordering::Acquire) != 0);
    while SLOW.load(Ordering::Acquire) == 1 {
        k42_rt::yield_now(0);
        let (r, _) = ppc::call_once_raw(h, 0, 0, &mut msg, 0);
        if r == SyscallError::Busy as i64 {
            busy = true;
            break;
        }
    }
    msg[..2].copy_from_slice(b"ab");
    let waited = ppc::call(h, 0, 9, &mut msg, 2) == Ok((10, 2)) && &msg[..2] == b"ba";
    wait_until(|| SLOW.load(Ordering::Acquire) >= 2);
    let _ = process::pin(None);
    if !busy {
        println!("ppctest client: the long call never found its worker busy");
    }
    busy && waited && SLOW.load(Ordering::Acquire) == 2
}

static HANDLE: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
static GO: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
static BAD: AtomicU32 = AtomicU32::new(0);
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

/// `n` echo calls, checked; with `record`, timed and reported.
fn calls(i: u64, record: bool) {
    let h = HANDLE.load(Ordering::Acquire);
    let n = CALLS.load(Ordering::Relaxed);
    let t0 = rdtsc();
    for j in 0..n {
        let mut msg = (i << 32 | j).to_le_bytes();
        let r = ppc::call(h, 0, j, &mut msg, 8);
        let mut want = (i << 32 | j).to_le_bytes();
        want.reverse();
        if r != Ok((j + 1, 8)) || msg != want {
            BAD.fetch_add(1, Ordering::Relaxed);
        }
    }
    let ticks = rdtsc() - t0;
    if record {
        let ns =
            (ticks as u128 * 1_000_000 / TSC_KHZ.load(Ordering::Relaxed).max(1) as u128) as u64;
        if bench_record(&BenchRecord::new(
            "ppc.call",
            0,
            BenchMode::User,
            n,
            ns.max(1),
        )) != 0
        {
            BAD.fetch_add(1, Ordering::Relaxed);
        }
    }
}

extern "C" fn worker(i: u64) -> ! {
    let mut round = 0;
    while GO.load(Ordering::Acquire) == 0 {
        relax(round);
        round += 1;
    }
    calls(i & 0xffff, i >> 16 != 0);
    DONE.fetch_add(1, Ordering::AcqRel);
    process::thread_exit(0)
}

/// `n` calls to `h` from a thread kept on each CPU (this one on CPU 0);
/// with `tsc_khz`, each reports a `ppc.call` record.
fn every_cpu(h: u64, n: u64, tsc_khz: Option<u64>) -> bool {
    let cpus = process::cpus() as u64;
    HANDLE.store(h, Ordering::Release);
    CALLS.store(n, Ordering::Relaxed);
    TSC_KHZ.store(tsc_khz.unwrap_or(0), Ordering::Relaxed);
    GO.store(0, Ordering::Relaxed);
    DONE.store(0, Ordering::Relaxed);
    BAD.store(0, Ordering::Relaxed);
    let record = u64::from(tsc_khz.is_some()) << 16;
    if process::threads_on_cpus(cpus, worker, 16 * PAGE, |i| i | record).is_err() {
        return false;
    }
    GO.store(1, Ordering::Release);
    calls(0, tsc_khz.is_some());
    let mut round = 0;
    while DONE.load(Ordering::Acquire) < (cpus - 1) as u32 {
        relax(round);
        round += 1;
    }
    let _ = process::pin(None);
    BAD.load(Ordering::Relaxed) == 0
}

fn bench(n: u64, tsc_khz: u64) -> bool {
    let Ok((pid, h)) = start_server() else {
        println!("ppctest bench: no server");
        return false;
    };
    let ok = every_cpu(h, n, Some(tsc_khz));
    let _ = process::kill(pid);
    let _ = process::wait(Some(pid));
    println!("ppctest bench: {}", if ok { "done" } else { "FAILED" });
    ok
}
