//! `cobj-bench`: K42's shared-vs-distributed results, measured in guest
//! user mode (native on KVM-PVM hosts), on every vCPU at once.
//!
//! The kernel starts this program on all CPUs in one address space
//! (`bench=cobj`). CPU 0 builds a clustered-object system and the objects;
//! then, for each case, every CPU runs the same operation loop between two
//! barriers and reports `ops` and elapsed nanoseconds as a BenchRecord
//! (k42vmm sums throughput over CPUs). Cases:
//!
//! | record | operation |
//! |---|---|
//! | `cobj.counter.{shared,partitioned,adaptive}` | `add(1)` |
//! | `cobj.pagemgr.{shared,distributed,adaptive}` | `alloc` + `free` |
//! | `cobj.dhash.{shared,distributed,adaptive}` | `lookup` of a shared key; every 64th op updates one of the CPU's own keys |
//! | `cobj.process.{shared,replicated,adaptive}` | `find_region` (a fault); every 1024th op adds and removes a region of the CPU's own |
//! | `cobj.call.{direct,ref}` | an `add` on a private counter: direct call vs through a reference |
//! | `cobj.miss` | the first call on each of 32 objects (a miss into the root) |
//! | `cobj.swap.blocked` | CPU 0 swaps a counter every CPU is hammering; how long calls were blocked, per swap |
//!
//! Operations run in requests of 64. Adaptive objects start shared and
//! poll between requests; they swap once their shared root reports
//! contention. Argument 0: operations per CPU per case (default 2 000 000).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, Ordering};

use k42_abi::bench::{BenchMode, BenchRecord};
use k42_cobj::objects::counter::{self, Counter};
use k42_cobj::objects::dhash::{self, HashTable};
use k42_cobj::objects::pagemgr::{self, PageManager};
use k42_cobj::objects::process::{self, Process, Region};
use k42_cobj::objects::{Adaptive, Contention};
use k42_cobj::{Cpu, CpuEnv, ObjRef, Root, System};
use k42_rt::sync::Barrier;
use k42_rt::{Start, bench_record, rdtsc};

k42_rt::main!(run);

/// Calls per request.
const BATCH: u64 = 64;
/// Contention events before an adaptive object swaps.
const ADAPT_AFTER: u64 = 64;
/// Keys every CPU looks up in the hash table.
const SHARED_KEYS: u64 = 1024;
/// Regions in the process object.
const REGIONS: u64 = 64;
/// Objects the miss case creates.
const MISS_OBJECTS: usize = 32;
/// Swaps the swap-latency case makes.
const SWAPS: usize = 8;

struct UserEnv {
    cpus: usize,
    tsc_khz: u64,
}

impl CpuEnv for UserEnv {
    fn ncpus(&self) -> usize {
        self.cpus
    }
    fn now_ns(&self) -> u64 {
        (rdtsc() as u128 * 1_000_000 / self.tsc_khz.max(1) as u128) as u64
    }
    fn relax(&self, round: u32) {
        k42_rt::sync::relax(round);
    }
}

/// An object under test: its reference, the adaptive policy if any.
struct Case<I: ?Sized> {
    name: &'static str,
    obj: ObjRef<I>,
    adaptive: Option<Adaptive<I>>,
}

/// Everything CPU 0 builds and every CPU uses.
struct Bench {
    sys: System<UserEnv>,
    barrier: Barrier,
    counters: Vec<Case<dyn Counter>>,
    pagemgrs: Vec<Case<dyn PageManager>>,
    tables: Vec<Case<dyn HashTable>>,
    processes: Vec<Case<dyn Process>>,
    call_ref: ObjRef<dyn Counter>,
    miss: Vec<ObjRef<dyn Counter>>,
    swap_target: ObjRef<dyn Counter>,
    stop: AtomicBool,
}

static BENCH: AtomicPtr<Bench> = AtomicPtr::new(core::ptr::null_mut());

fn relax(round: u32) {
    k42_rt::sync::relax(round);
}

fn region(i: u64) -> Region {
    Region {
        start: 0x100_0000 + i * 0x1_0000,
        end: 0x100_0000 + i * 0x1_0000 + 0x8000,
        prot: 1,
    }
}

fn private_region(cpu: u32) -> Region {
    Region {
        start: 0x8000_0000 + cpu as u64 * 0x1_0000,
        end: 0x8000_0000 + cpu as u64 * 0x1_0000 + 0x1000,
        prot: 3,
    }
}

fn adaptive_case<I: ?Sized + 'static>(
    sys: &System<UserEnv>,
    shared: impl FnOnce(Arc<Contention>) -> Box<dyn Root<I>>,
    distributed: fn(usize) -> Box<dyn Root<I>>,
) -> Case<I> {
    let contention = Contention::new(ADAPT_AFTER);
    let obj = sys
        .create(shared(contention.clone()))
        .expect("object table room");
    Case {
        name: "adaptive",
        obj,
        adaptive: Some(Adaptive::new(obj, contention, distributed)),
    }
}

fn plain<I: ?Sized + 'static>(
    sys: &System<UserEnv>,
    name: &'static str,
    root: Box<dyn Root<I>>,
) -> Case<I> {
    Case {
        name,
        obj: sys.create(root).expect("object table room"),
        adaptive: None,
    }
}

fn pages(n: u64) -> Vec<u64> {
    (0..n).map(|i| i * 4096).collect()
}

fn build(start: &Start) -> Bench {
    let n = start.info.cpus as usize;
    let sys = System::new(
        UserEnv {
            cpus: n,
            tsc_khz: start.info.tsc_khz,
        },
        64,
    );
    let page_count = 256 * n as u64;
    let counters = alloc::vec![
        plain(&sys, "shared", counter::shared(None)),
        plain(&sys, "partitioned", counter::partitioned(n, 1)),
        adaptive_case(
            &sys,
            |c| counter::shared(Some(c)),
            |n| counter::partitioned(n, 1)
        ),
    ];
    let pagemgrs = alloc::vec![
        plain(
            &sys,
            "shared",
            pagemgr::shared(pages(page_count), None, None, relax)
        ),
        plain(
            &sys,
            "distributed",
            pagemgr::distributed(n, 1, 16, pages(page_count), None, relax)
        ),
        adaptive_case(
            &sys,
            |c| pagemgr::shared(pages(page_count), None, Some(c), relax),
            |n| { pagemgr::distributed(n, 1, 16, Vec::new(), None, relax) }
        ),
    ];
    let tables = alloc::vec![
        plain(&sys, "shared", dhash::shared(None, relax)),
        plain(&sys, "distributed", dhash::distributed(n, 1, 64, relax)),
        adaptive_case(
            &sys,
            |c| dhash::shared(Some(c), relax),
            |n| dhash::distributed(n, 1, 64, relax)
        ),
    ];
    let processes = alloc::vec![
        plain(&sys, "shared", process::shared(None, relax)),
        plain(&sys, "replicated", process::replicated(n, 1, relax)),
        adaptive_case(
            &sys,
            |c| process::shared(Some(c), relax),
            |n| process::replicated(n, 1, relax)
        ),
    ];
    let call_ref = sys.create(counter::partitioned(n, 1)).expect("room");
    let miss = (0..MISS_OBJECTS)
        .map(|_| sys.create(counter::partitioned(n, 1)).expect("room"))
        .collect();
    let swap_target = sys.create(counter::shared(None)).expect("room");
    Bench {
        sys,
        barrier: Barrier::new(n as u32),
        counters,
        pagemgrs,
        tables,
        processes,
        call_ref,
        miss,
        swap_target,
        stop: AtomicBool::new(false),
    }
}

/// Fill the tables and region lists every CPU will read (CPU 0).
fn populate(b: &Bench, cpu: &Cpu<'_, UserEnv>) {
    let r = cpu.request();
    for c in &b.tables {
        for k in 0..SHARED_KEYS {
            c.obj.call(&r, |t| t.insert(k, k * 10));
        }
    }
    for c in &b.processes {
        for i in 0..REGIONS {
            c.obj.call(&r, |p| p.add_region(region(i)));
        }
    }
}

fn report(name: &str, cpu: u32, ops: u64, ns: u64) -> bool {
    bench_record(&BenchRecord::new(name, cpu, BenchMode::User, ops, ns)) == 0
}

/// Run `op(i)` `ops` times on this CPU in requests of BATCH, between two
/// barriers; returns the elapsed nanoseconds.
fn timed<I: ?Sized + 'static>(
    b: &Bench,
    cpu: &Cpu<'_, UserEnv>,
    start: &Start,
    case: &Case<I>,
    ops: u64,
    op: impl Fn(&I, u64),
) -> u64 {
    b.barrier.wait_with(|| cpu.quiescent());
    let t0 = rdtsc();
    let mut i = 0;
    while i < ops {
        {
            let r = cpu.request();
            case.obj.call(&r, |rep| {
                for j in i..(i + BATCH).min(ops) {
                    op(rep, j);
                }
            });
        }
        i += BATCH;
        if let Some(a) = &case.adaptive
            && let Some(Err(e)) = a.poll(cpu)
        {
            k42_rt::println!("cobj-bench: adaptive swap of {} failed: {e:?}", case.name);
        }
    }
    let ns = start.ticks_to_ns(rdtsc() - t0);
    b.barrier.wait_with(|| cpu.quiescent());
    ns
}

#[inline(never)]
fn direct_add(c: &AtomicI64, n: i64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn run(start: Start) -> u8 {
    let me = start.cpu;
    let ops = match start.arg(0) {
        0 => 2_000_000,
        n => n,
    };
    if me == 0 {
        BENCH.store(Box::into_raw(Box::new(build(&start))), Ordering::Release);
    }
    let mut round = 0;
    let b: &Bench = loop {
        let p = BENCH.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: CPU 0 published a leaked Bench that lives until the
            // program ends.
            break unsafe { &*p };
        }
        relax(round);
        round += 1;
    };
    // SAFETY: the kernel runs exactly one instance of this program per CPU,
    // and this instance stays on CPU `me`.
    let cpu = unsafe { b.sys.cpu(me as usize) };
    if me == 0 {
        populate(b, &cpu);
    }
    let mut ok = true;
    for c in &b.counters {
        let ns = timed(b, &cpu, &start, c, ops, |k, _| k.add(1));
        ok &= report(&alloc::format!("cobj.counter.{}", c.name), me, ops, ns);
    }
    for c in &b.pagemgrs {
        let ns = timed(b, &cpu, &start, c, ops, |p, _| {
            if let Some(page) = p.alloc() {
                p.free(page);
            }
        });
        ok &= report(&alloc::format!("cobj.pagemgr.{}", c.name), me, ops, ns);
    }
    let mine = 1_000_000 + me as u64;
    for c in &b.tables {
        let ns = timed(b, &cpu, &start, c, ops, |t, i| {
            if i % 64 == 63 {
                t.insert(mine, i);
            } else {
                core::hint::black_box(t.lookup(i % SHARED_KEYS));
            }
        });
        ok &= report(&alloc::format!("cobj.dhash.{}", c.name), me, ops, ns);
    }
    for c in &b.processes {
        let ns = timed(b, &cpu, &start, c, ops, |p, i| {
            if i % 1024 == 1023 {
                p.add_region(private_region(me));
                p.remove_region(private_region(me).start);
            } else {
                core::hint::black_box(p.find_region(region(i % REGIONS).start + 0x100));
            }
        });
        ok &= report(&alloc::format!("cobj.process.{}", c.name), me, ops, ns);
    }

    // A call through a reference vs a direct call, on private data.
    let direct = AtomicI64::new(0);
    // Through black_box, so the compiler cannot see which function runs or
    // drop the calls: the same indirect call the reference path makes.
    let add: fn(&AtomicI64, i64) = core::hint::black_box(direct_add);
    b.barrier.wait_with(|| cpu.quiescent());
    let t0 = rdtsc();
    for _ in 0..ops {
        add(core::hint::black_box(&direct), 1);
    }
    let direct_ns = start.ticks_to_ns(rdtsc() - t0);
    let r = cpu.request();
    b.call_ref.call(&r, |k| k.add(0)); // take the miss outside the timing
    let t0 = rdtsc();
    for _ in 0..ops {
        b.call_ref.call(&r, |k| k.add(1));
    }
    let ref_ns = start.ticks_to_ns(rdtsc() - t0);
    drop(r);
    ok &= report("cobj.call.direct", me, ops, direct_ns);
    ok &= report("cobj.call.ref", me, ops, ref_ns);

    // Misses: the first call on each of MISS_OBJECTS objects.
    b.barrier.wait_with(|| cpu.quiescent());
    let r = cpu.request();
    let t0 = rdtsc();
    for o in &b.miss {
        o.call(&r, |k| k.add(1));
    }
    let miss_ns = start.ticks_to_ns(rdtsc() - t0);
    drop(r);
    ok &= report("cobj.miss", me, MISS_OBJECTS as u64, miss_ns);

    // Swap latency: CPU 0 swaps a counter the others keep hitting.
    b.barrier.wait_with(|| cpu.quiescent());
    let mut adds = 0u64;
    if me == 0 {
        for s in 0..SWAPS {
            let root = if s % 2 == 0 {
                counter::partitioned(b.sys.ncpus(), 1)
            } else {
                counter::shared(None)
            };
            match cpu.swap(b.swap_target, root) {
                Ok(stats) => ok &= report("cobj.swap.blocked", me, 1, stats.blocked_ns),
                Err(e) => {
                    k42_rt::println!("cobj-bench: swap failed: {e:?}");
                    ok = false;
                }
            }
        }
        b.stop.store(true, Ordering::Release);
    } else {
        while !b.stop.load(Ordering::Acquire) {
            let r = cpu.request();
            b.swap_target.call(&r, |k| k.add(1));
            adds += 1;
        }
    }
    // Nothing lost across the swaps: every add is in the total.
    SWAP_ADDS.fetch_add(adds as i64, Ordering::AcqRel);
    b.barrier.wait_with(|| cpu.quiescent());
    if me == 0 {
        let r = cpu.request();
        let total = b.swap_target.call(&r, |k| k.value());
        drop(r);
        if total != SWAP_ADDS.load(Ordering::Acquire) {
            k42_rt::println!(
                "cobj-bench: swapped counter holds {total}, {} adds were made",
                SWAP_ADDS.load(Ordering::Acquire)
            );
            ok = false;
        }
    }
    cpu.offline();
    if ok { 0 } else { 1 }
}

/// Adds made during the swap case, summed over CPUs.
static SWAP_ADDS: AtomicI64 = AtomicI64::new(0);
