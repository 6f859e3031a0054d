//! The kernel objects on std threads: shared and distributed versions give
//! the same observable results, adaptive objects swap under contention
//! and lose nothing.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use k42_cobj::objects::counter;
use k42_cobj::objects::dhash::{self, HashTable};
use k42_cobj::objects::pagemgr::{self, PageManager};
use k42_cobj::objects::process::{self, Process, Region};
use k42_cobj::objects::{Adaptive, Contention, lock_watched};
use k42_cobj::sync::SpinLock;
use k42_cobj::{ObjRef, Root};

const CPUS: usize = 4;

fn finish<I: ?Sized + 'static>(sys: &std::sync::Arc<k42_cobj::System<ThreadEnv>>, obj: ObjRef<I>) {
    // SAFETY: every caller has let on_cpus join its threads first, so this thread
    // alone stands in for CPU 0.
    let cpu = unsafe { sys.cpu(0) };
    cpu.online();
    cpu.destroy(obj).unwrap();
}

/// Every CPU allocates pages until it holds its share, they check that no
/// page was handed out twice, then free them all.
fn page_manager_hands_out_each_page_once(root: Box<dyn Root<dyn PageManager>>, pages: u64) {
    let sys = system(CPUS);
    let pm = sys.create(root).unwrap();
    let got: Vec<Vec<u64>> = on_cpus(&sys, move |cpu| {
        let mut mine = Vec::new();
        for _ in 0..pages / CPUS as u64 {
            let r = cpu.request();
            mine.push(pm.call(&r, |p| p.alloc()).expect("a page"));
        }
        mine
    });
    let all: Vec<u64> = got.iter().flatten().copied().collect();
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a page was handed out twice");
    // SAFETY: on_cpus has joined its threads, so this thread alone stands in for CPU 0.
    let cpu = unsafe { sys.cpu(0) };
    cpu.online();
    let r = cpu.request();
    assert_eq!(
        pm.call(&r, |p| p.free_pages()),
        (pages - all.len() as u64) as usize
    );
    for p in all {
        pm.call(&r, |m| m.free(p));
    }
    assert_eq!(pm.call(&r, |p| p.free_pages()), pages as usize);
    drop(r);
    cpu.destroy(pm).unwrap();
}

#[test]
fn page_managers_agree() {
    let pages: Vec<u64> = (0..4000).map(|i| i * 4096).collect();
    page_manager_hands_out_each_page_once(pagemgr::shared(pages.clone(), None, None, relax), 4000);
    page_manager_hands_out_each_page_once(
        pagemgr::distributed(CPUS, 1, 32, pages.clone(), None, relax),
        4000,
    );
    page_manager_hands_out_each_page_once(
        pagemgr::distributed(CPUS, 2, 7, pages, None, relax),
        4000,
    );
}

/// Each CPU owns a key range: inserts, looks up everything (others'
/// keys too, filling replicas), updates and removes its own; at the end
/// every CPU sees exactly the surviving values.
fn hash_table_is_coherent(root: Box<dyn Root<dyn HashTable>>) {
    let sys = system(CPUS);
    let t = sys.create(root).unwrap();
    let ok = on_cpus(&sys, move |cpu| {
        let base = cpu.id() as u64 * 1000;
        for k in base..base + 200 {
            t.call(&cpu.request(), |h| h.insert(k, k * 2));
        }
        for k in 0..CPUS as u64 * 1000 {
            let _ = t.call(&cpu.request(), |h| h.lookup(k));
        }
        for k in base..base + 200 {
            let r = cpu.request();
            if k % 2 == 0 {
                assert_eq!(t.call(&r, |h| h.remove(k)), Some(k * 2));
            } else {
                assert_eq!(t.call(&r, |h| h.insert(k, k * 3)), Some(k * 2));
            }
        }
        true
    });
    assert!(ok.iter().all(|&b| b));
    // Every CPU now sees odd keys with value 3k and no even key.
    let views: Vec<bool> = on_cpus(&sys, move |cpu| {
        (0..CPUS as u64).all(|c| {
            (c * 1000..c * 1000 + 200).all(|k| {
                let v = t.call(&cpu.request(), |h| h.lookup(k));
                v == if k % 2 == 0 { None } else { Some(k * 3) }
            })
        })
    });
    assert!(
        views.iter().all(|&b| b),
        "a CPU saw a stale or missing value: {views:?}"
    );
    // SAFETY: on_cpus has joined its threads, so this thread alone stands in for CPU 0.
    let cpu = unsafe { sys.cpu(0) };
    cpu.online();
    assert_eq!(t.call(&cpu.request(), |h| h.len()), CPUS * 100);
    // Every key from CPU 1's range on goes, whatever CPU cached it; the
    // rest stay.
    let mut gone = t.call(&cpu.request(), |h| h.remove_from(1000));
    gone.sort_unstable();
    let mut want: Vec<u64> = (1..CPUS as u64)
        .flat_map(|c| {
            (c * 1000..c * 1000 + 200)
                .filter(|k| k % 2 == 1)
                .map(|k| k * 3)
        })
        .collect();
    want.sort_unstable();
    assert_eq!(gone, want);
    let views: Vec<bool> = on_cpus(&sys, move |cpu| {
        (0..CPUS as u64 * 1000 + 200).all(|k| {
            let v = t.call(&cpu.request(), |h| h.lookup(k));
            v == if k < 200 && k % 2 == 1 {
                Some(k * 3)
            } else {
                None
            }
        })
    });
    assert!(views.iter().all(|&b| b), "a CPU still saw a removed key");
    // SAFETY: on_cpus has joined its threads, so this thread alone stands in for CPU 0.
    let cpu = unsafe { sys.cpu(0) };
    cpu.online();
    assert_eq!(t.call(&cpu.request(), |h| h.len()), 100);
    cpu.destroy(t).unwrap();
}

#[test]
fn hash_tables_agree() {
    hash_table_is_coherent(dhash::shared(None, relax));
    hash_table_is_coherent(dhash::distributed(CPUS, 1, 16, relax));
    hash_table_is_coherent(dhash::distributed(CPUS, 2, 3, relax));
}

fn region(i: u64) -> Region {
    Region {
        start: i * 0x10000,
        end: i * 0x10000 + 0x8000,
        prot: (i % 3) as u32,
    }
}

/// Faults (lookups) from every CPU while CPU 0 adds and removes regions:
/// a lookup never returns a region that was removed before it started.
fn process_regions_are_coherent(root: Box<dyn Root<dyn Process>>) {
    let sys = system(CPUS);
    let p = sys.create(root).unwrap();
    let removed_upto = Arc::new(AtomicU64::new(0));
    let r2 = removed_upto.clone();
    {
        // SAFETY: no other thread runs yet; this token is dropped at the end of the
        // block, before on_cpus hands CPU 0 to its own thread.
        let cpu = unsafe { sys.cpu(0) };
        let r = cpu.request();
        for i in 0..64 {
            assert!(p.call(&r, |pr| pr.add_region(region(i))));
        }
        assert!(
            !p.call(&r, |pr| pr.add_region(Region {
                start: 0x4000,
                end: 0x12000,
                prot: 0
            })),
            "overlap accepted"
        );
        drop(r);
        cpu.offline();
    }
    on_cpus(&sys, move |cpu| {
        if cpu.id() == 0 {
            for i in 0..32 {
                assert_eq!(
                    p.call(&cpu.request(), |pr| pr.remove_region(region(i).start)),
                    Some(region(i))
                );
                r2.store(i + 1, Ordering::Release);
            }
        } else {
            for round in 0..2000u64 {
                let i = (round * 7 + cpu.id() as u64) % 64;
                let gone_before = r2.load(Ordering::Acquire);
                let found = p.call(&cpu.request(), |pr| pr.find_region(region(i).start + 0x100));
                if i < gone_before {
                    assert_eq!(found, None, "region {i} found after its removal");
                } else if i >= 32 {
                    assert_eq!(found, Some(region(i)));
                }
                assert_eq!(
                    p.call(&cpu.request(), |pr| pr
                        .find_region(region(i).start + 0x9000)),
                    None
                );
            }
        }
    });
    // SAFETY: on_cpus has joined its threads, so this thread alone stands in for CPU 0.
    let cpu = unsafe { sys.cpu(0) };
    cpu.online();
    assert_eq!(p.call(&cpu.request(), |pr| pr.regions()), 32);
    cpu.destroy(p).unwrap();
}

#[test]
fn processes_agree() {
    process_regions_are_coherent(process::shared(None, relax));
    process_regions_are_coherent(process::replicated(CPUS, 1, relax));
}

#[test]
fn counters_agree() {
    for root in [
        counter::shared(None),
        counter::partitioned(CPUS, 1),
        counter::partitioned(CPUS, 3),
    ] {
        let sys = system(CPUS);
        let c = sys.create(root).unwrap();
        on_cpus(&sys, move |cpu| {
            for _ in 0..5000 {
                c.call(&cpu.request(), |k| k.add(3));
            }
            c.call(&cpu.request(), |k| k.add(-1));
        });
        // SAFETY: on_cpus has joined its threads, so this thread alone stands in for CPU 0.
        let cpu = unsafe { sys.cpu(0) };
        cpu.online();
        assert_eq!(
            c.call(&cpu.request(), |k| k.value()),
            CPUS as i64 * (15_000 - 1)
        );
        cpu.destroy(c).unwrap();
    }
}

/// An adaptive counter under contention swaps itself to partitioned while
/// every CPU keeps adding, and ends with the exact total.
#[test]
fn adaptive_counter_swaps_under_load_and_counts_exactly() {
    let sys = system(CPUS);
    let contention = Contention::new(50);
    let c = sys
        .create(counter::shared(Some(contention.clone())))
        .unwrap();
    let adaptive = Arc::new(Adaptive::new(c, contention, |n| counter::partitioned(n, 1)));
    let a2 = adaptive.clone();
    on_cpus(&sys, move |cpu| {
        for i in 0..100_000 {
            c.call(&cpu.request(), |k| k.add(1));
            if i % 256 == 0
                && let Some(r) = a2.poll(cpu)
            {
                r.expect("adaptive swap");
            }
        }
    });
    // SAFETY: on_cpus has joined its threads, so this thread alone stands in for CPU 0.
    let cpu = unsafe { sys.cpu(0) };
    cpu.online();
    assert_eq!(c.call(&cpu.request(), |k| k.value()), CPUS as i64 * 100_000);
    if adaptive.swapped() {
        assert_eq!(sys.root_name(c), "partitioned");
    }
    finish(&sys, c);
}

/// The adaptive policy itself: it swaps exactly once, only after the
/// threshold, and the swap happens while other CPUs keep adding.
#[test]
fn adaptive_policy_swaps_once_after_the_threshold() {
    let sys = system(CPUS);
    let contention = Contention::new(3);
    let c = sys
        .create(counter::shared(Some(contention.clone())))
        .unwrap();
    let adaptive = Arc::new(Adaptive::new(c, contention.clone(), |n| {
        counter::partitioned(n, 1)
    }));
    {
        // SAFETY: no other thread runs yet; this token is dropped at the end of the
        // block, before on_cpus hands CPU 0 to its own thread.
        let cpu = unsafe { sys.cpu(0) };
        assert!(adaptive.poll(&cpu).is_none(), "no contention yet");
        contention.record();
        contention.record();
        assert!(adaptive.poll(&cpu).is_none(), "below the threshold");
        contention.record();
        cpu.offline();
    }
    let swaps = Arc::new(AtomicU64::new(0));
    let (a2, s2) = (adaptive.clone(), swaps.clone());
    on_cpus(&sys, move |cpu| {
        for i in 0..20_000 {
            c.call(&cpu.request(), |k| k.add(1));
            if i == 1000 * cpu.id()
                && let Some(r) = a2.poll(cpu)
            {
                r.expect("adaptive swap");
                s2.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    assert_eq!(swaps.load(Ordering::Relaxed), 1);
    assert!(adaptive.swapped());
    assert_eq!(sys.root_name(c), "partitioned");
    // SAFETY: on_cpus has joined its threads, so this thread alone stands in for CPU 0.
    let cpu = unsafe { sys.cpu(0) };
    cpu.online();
    assert_eq!(c.call(&cpu.request(), |k| k.value()), CPUS as i64 * 20_000);
    cpu.destroy(c).unwrap();
}

/// A watched lock reports the time its callers wait, not only failed
/// try-locks: a caller kept waiting adds an event for every round it
/// waits; uncontended locking adds none.
#[test]
fn watched_lock_counts_rounds_waited() {
    let relax: fn(u32) = |_| std::thread::yield_now();
    let lock = Arc::new(SpinLock::new(0u64));
    let contention = Contention::new(1_000_000);
    for _ in 0..10_000 {
        *lock_watched(&lock, Some(&contention), relax) += 1;
    }
    assert_eq!(contention.events(), 0, "nobody ever waited");

    let held = lock.try_lock().unwrap();
    let (l2, c2) = (lock.clone(), contention.clone());
    let waiter = std::thread::spawn(move || *lock_watched(&l2, Some(&c2), relax) += 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while contention.events() < 100 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    let waited = contention.events();
    drop(held);
    waiter.join().unwrap();
    assert!(
        waited >= 100,
        "a caller kept waiting counts its rounds ({waited})"
    );
    assert_eq!(*lock.try_lock().unwrap(), 10_001);
}

#[test]
fn swaps_between_every_pair_keep_state() {
    let sys = system(2);
    // SAFETY: the test's only thread stands in for CPU 0 and holds no other token.
    let cpu = unsafe { sys.cpu(0) };
    let pages: Vec<u64> = (0..100).collect();
    let pm = sys
        .create(pagemgr::shared(pages, None, None, relax))
        .unwrap();
    let taken = pm.call(&cpu.request(), |p| p.alloc()).unwrap();
    cpu.swap(pm, pagemgr::distributed(2, 1, 8, Vec::new(), None, relax))
        .unwrap();
    assert_eq!(pm.call(&cpu.request(), |p| p.free_pages()), 99);
    assert_ne!(pm.call(&cpu.request(), |p| p.alloc()), Some(taken));
    cpu.swap(pm, pagemgr::shared(Vec::new(), None, None, relax))
        .unwrap();
    assert_eq!(pm.call(&cpu.request(), |p| p.free_pages()), 98);
    cpu.destroy(pm).unwrap();

    let t = sys.create(dhash::shared(None, relax)).unwrap();
    t.call(&cpu.request(), |h| h.insert(7, 70));
    cpu.swap(t, dhash::distributed(2, 1, 4, relax)).unwrap();
    assert_eq!(t.call(&cpu.request(), |h| h.lookup(7)), Some(70));
    cpu.swap(t, dhash::shared(None, relax)).unwrap();
    assert_eq!(t.call(&cpu.request(), |h| h.lookup(7)), Some(70));
    cpu.destroy(t).unwrap();

    let p = sys.create(process::shared(None, relax)).unwrap();
    p.call(&cpu.request(), |pr| pr.add_region(region(3)));
    cpu.swap(p, process::replicated(2, 1, relax)).unwrap();
    assert_eq!(
        p.call(&cpu.request(), |pr| pr.find_region(region(3).start)),
        Some(region(3))
    );
    cpu.destroy(p).unwrap();
}

/// A page source that hands out consecutive page numbers and counts calls.
struct CountingSource {
    next: AtomicU64,
    calls: AtomicU64,
    limit: u64,
}

impl pagemgr::PageSource for CountingSource {
    fn take(&self, n: usize, into: &mut Vec<u64>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        for _ in 0..n {
            let p = self.next.fetch_add(1, Ordering::Relaxed);
            if p >= self.limit {
                return;
            }
            into.push(p);
        }
    }
}

#[test]
fn page_managers_refill_from_their_source_in_chunks() {
    for distributed in [false, true] {
        let src = Arc::new(CountingSource {
            next: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            limit: 1000,
        });
        let sys = system(CPUS);
        let root = if distributed {
            pagemgr::distributed(CPUS, 1, 10, Vec::new(), Some(src.clone()), relax)
        } else {
            pagemgr::shared(Vec::new(), Some(src.clone()), None, relax)
        };
        let pm = sys.create(root).unwrap();
        let got: Vec<Vec<u64>> = on_cpus(&sys, move |cpu| {
            (0..250)
                .map(|_| pm.call(&cpu.request(), |p| p.alloc()).unwrap())
                .collect()
        });
        let all: HashSet<u64> = got.iter().flatten().copied().collect();
        assert_eq!(all.len(), 1000, "every source page handed out once");
        let calls = src.calls.load(Ordering::Relaxed);
        assert!(
            calls >= 1000 / 16 && calls <= 1000 / 10 + CPUS as u64 * 2,
            "{calls} source calls"
        );
        finish(&sys, pm);
    }
}
