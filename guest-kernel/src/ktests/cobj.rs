//! Clustered objects in the kernel, on every CPU at once: each object
//! pair gives the same observable results, a swap under load keeps exact
//! counts, and the kernel's page manager hands out zeroed frames.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

use k42_cobj::objects::counter;
use k42_cobj::objects::dhash;
use k42_cobj::objects::pagemgr;
use k42_cobj::objects::process::{self, Region};
use k42_cobj::{ObjRef, Root};

use crate::cobj::{self, relax};
use crate::ktest::TestResult;
use crate::mm::pages;
use crate::smp::{self, Barrier};
use crate::{arch, check, kernel_test};

/// Operations per CPU: kernel code runs emulated here, so keep it small.
const OPS: i64 = 8;
/// CPUs that take part: all of them up to 64 (the largest test
/// size), so that a 255-vCPU boot on two host cores stays quick.
const MAX_CPUS: u32 = 64;

/// The CPUs taking part.
fn cpus() -> usize {
    smp::ncpus().min(MAX_CPUS) as usize
}

/// Run `f` on the CPUs taking part.
fn on_cpus(f: impl Fn(u32) + Sync) {
    smp::run_on_first(cpus() as u32, f);
}

fn create<I: ?Sized + 'static>(
    root: alloc::boxed::Box<dyn Root<I>>,
) -> Result<ObjRef<I>, alloc::string::String> {
    cobj::system()
        .create(root)
        .ok_or_else(|| "the kernel's object table is full".into())
}

fn destroy<I: ?Sized + 'static>(obj: ObjRef<I>) -> TestResult {
    cobj::cpu()
        .destroy(obj)
        .map_err(|e| alloc::format!("destroy failed: {e:?}"))
}

fn counters() -> TestResult {
    let n = cpus();
    for root in [
        counter::shared(None),
        counter::partitioned(n, 1),
        counter::partitioned(n, 4),
    ] {
        let c = create(root)?;
        on_cpus(|_| {
            let cpu = cobj::cpu();
            for _ in 0..OPS {
                c.call(&cpu.request(), |k| k.add(2));
            }
        });
        let total = c.call(&cobj::cpu().request(), |k| k.value());
        check!(
            total == 2 * OPS * n as i64,
            "counter {} holds {total}",
            cobj::system().root_name(c)
        );
        destroy(c)?;
    }
    Ok(())
}
kernel_test!("cobj.counter", counters);

/// CPU 0 swaps a counter back and forth while every other CPU adds.
fn swap_under_load() -> TestResult {
    let n = cpus();
    let c = create(counter::shared(None))?;
    let adders_done = AtomicU32::new(0);
    let failed = AtomicBool::new(false);
    on_cpus(|me| {
        let cpu = cobj::cpu();
        if me == 0 {
            let mut to_partitioned = true;
            let mut swaps = 0;
            while swaps < 4 || adders_done.load(Ordering::Acquire) < n as u32 - 1 {
                let root = if to_partitioned {
                    counter::partitioned(n, 1)
                } else {
                    counter::shared(None)
                };
                if cpu.swap(c, root).is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                to_partitioned = !to_partitioned;
                swaps += 1;
            }
        } else {
            for _ in 0..OPS {
                c.call(&cpu.request(), |k| k.add(1));
            }
            adders_done.fetch_add(1, Ordering::Release);
        }
    });
    check!(!failed.load(Ordering::Relaxed), "a swap failed");
    let total = c.call(&cobj::cpu().request(), |k| k.value());
    check!(
        total == OPS * (n as i64 - 1),
        "after swaps under load the counter holds {total}, expected {}",
        OPS * (n as i64 - 1)
    );
    destroy(c)
}
kernel_test!("cobj.swap_under_load", swap_under_load);

fn page_managers() -> TestResult {
    let n = cpus();
    let total = 4 * n as u64;
    let pool = || (0..total).collect::<Vec<u64>>();
    for root in [
        pagemgr::shared(pool(), None, None, relax),
        pagemgr::distributed(n, 1, 2, pool(), None, relax),
    ] {
        let pm = create(root)?;
        let seen: Vec<AtomicU64> = (0..total.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        let dup = AtomicBool::new(false);
        let barrier = Barrier::new(n as u32);
        on_cpus(|_| {
            let cpu = cobj::cpu();
            let mine: Vec<u64> = (0..4)
                .filter_map(|_| pm.call(&cpu.request(), |p| p.alloc()))
                .collect();
            for &p in &mine {
                if seen[(p / 64) as usize].fetch_or(1 << (p % 64), Ordering::Relaxed)
                    & (1 << (p % 64))
                    != 0
                {
                    dup.store(true, Ordering::Relaxed);
                }
            }
            barrier.wait();
            for p in mine {
                pm.call(&cpu.request(), |m| m.free(p));
            }
        });
        check!(
            !dup.load(Ordering::Relaxed),
            "a page was handed to two CPUs"
        );
        let handed: u32 = seen
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones())
            .sum();
        check!(
            handed as u64 == total,
            "{handed} of {total} pages handed out"
        );
        let free = pm.call(&cobj::cpu().request(), |p| p.free_pages());
        check!(
            free as u64 == total,
            "{free} of {total} pages free afterwards"
        );
        destroy(pm)?;
    }
    Ok(())
}
kernel_test!("cobj.pagemgr", page_managers);

fn hash_tables() -> TestResult {
    let n = cpus();
    for root in [
        dhash::shared(None, relax),
        dhash::distributed(n, 1, 8, relax),
    ] {
        let t = create(root)?;
        let barrier = Barrier::new(n as u32);
        let stale = AtomicU32::new(0);
        on_cpus(|me| {
            let cpu = cobj::cpu();
            let me = me as u64;
            t.call(&cpu.request(), |h| h.insert(me, me + 100));
            barrier.wait();
            // Every CPU reads a neighbour's key (filling a replica)...
            let other = (me + 1) % n as u64;
            if t.call(&cpu.request(), |h| h.lookup(other)) != Some(other + 100) {
                stale.fetch_add(1, Ordering::Relaxed);
            }
            barrier.wait();
            // ... then its owner updates it, and the replica must follow.
            t.call(&cpu.request(), |h| h.insert(me, me + 200));
            barrier.wait();
            if t.call(&cpu.request(), |h| h.lookup(other)) != Some(other + 200) {
                stale.fetch_add(1, Ordering::Relaxed);
            }
        });
        check!(
            stale.load(Ordering::Relaxed) == 0,
            "{} stale lookups",
            stale.load(Ordering::Relaxed)
        );
        check!(
            t.call(&cobj::cpu().request(), |h| h.len()) == n,
            "wrong entry count"
        );
        destroy(t)?;
    }
    Ok(())
}
kernel_test!("cobj.dhash", hash_tables);

fn region(i: u64) -> Region {
    Region {
        start: 0x40_0000 + i * 0x1_0000,
        end: 0x40_0000 + i * 0x1_0000 + 0x4000,
        prot: 1,
    }
}

fn processes() -> TestResult {
    let n = cpus();
    for root in [
        process::shared(None, relax),
        process::replicated(n, 1, relax),
    ] {
        let p = create(root)?;
        for i in 0..8 {
            p.call(&cobj::cpu().request(), |pr| pr.add_region(region(i)));
        }
        let barrier = Barrier::new(n as u32);
        let wrong = AtomicU32::new(0);
        on_cpus(|me| {
            let cpu = cobj::cpu();
            for i in 0..8 {
                if p.call(&cpu.request(), |pr| pr.find_region(region(i).start + 8))
                    != Some(region(i))
                {
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
            }
            barrier.wait();
            if me == 0 {
                for i in 0..4 {
                    p.call(&cpu.request(), |pr| pr.remove_region(region(i).start));
                }
            }
            barrier.wait();
            for i in 0..8 {
                let found = p.call(&cpu.request(), |pr| pr.find_region(region(i).start + 8));
                if found != if i < 4 { None } else { Some(region(i)) } {
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        check!(
            wrong.load(Ordering::Relaxed) == 0,
            "{} wrong region lookups",
            wrong.load(Ordering::Relaxed)
        );
        destroy(p)?;
    }
    Ok(())
}
kernel_test!("cobj.process", processes);

/// The kernel's own page manager: zeroed frames from every CPU, and all
/// of them back afterwards.
fn kernel_pages() -> TestResult {
    let before = pages::free_pages();
    let nonzero = AtomicI64::new(0);
    on_cpus(|_| {
        let mut mine = Vec::new();
        for _ in 0..2 {
            let Some(pa) = pages::alloc_zeroed() else {
                nonzero.fetch_add(1000, Ordering::Relaxed);
                return;
            };
            // SAFETY: our frame, mapped in the direct map.
            unsafe {
                let w = arch::phys_to_virt(pa) as *mut u64;
                if w.read_volatile() != 0 || w.add(511).read_volatile() != 0 {
                    nonzero.fetch_add(1, Ordering::Relaxed);
                }
                // Dirty it: the next user must get it cleared.
                w.write_volatile(0x42);
            }
            mine.push(pa);
        }
        mine.into_iter().for_each(pages::free);
    });
    let bad = nonzero.load(Ordering::Relaxed);
    check!(bad == 0, "{bad} frames were not zero (or ran out)");
    let after = pages::free_pages();
    check!(
        after >= before,
        "{before} frames free before, {after} after"
    );
    Ok(())
}
kernel_test!("cobj.kernel_pages", kernel_pages);
