//! The clustered-object core on std threads: translation and misses,
//! quiescence, hot swap under a storm of calls, interposition and
//! destruction.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use k42_cobj::objects::counter::{self, Counter};
use k42_cobj::{CpuEnv, Rep, Root, SwapError};

#[test]
fn each_cpu_misses_once_then_hits_its_own_rep() {
    let sys = system(4);
    let c = sys.create(counter::partitioned(4, 1)).unwrap();
    on_cpus(&sys, move |cpu| {
        for _ in 0..1000 {
            let r = cpu.request();
            c.call(&r, |rep| rep.add(1));
        }
    });
    assert_eq!(sys.misses(), 4, "one miss per CPU, then local hits");
    // SAFETY: this thread stands in for CPU 0 now that the others ended.
    let cpu = unsafe { sys.cpu(0) };
    cpu.online();
    assert_eq!(c.call(&cpu.request(), |rep| rep.value()), 4000);
    assert_eq!(sys.root_name(c), "partitioned");
    cpu.destroy(c).unwrap();
}

#[test]
fn clustered_reps_serve_groups_of_cpus() {
    let sys = system(8);
    let c = sys.create(counter::partitioned(8, 4)).unwrap();
    let reps: Vec<usize> = on_cpus(&sys, move |cpu| {
        let r = cpu.request();
        c.call(&r, |rep| rep.add(1));
        c.call(&r, |rep| rep as *const dyn Counter as *const () as usize)
    });
    assert_eq!(reps[0], reps[3], "CPUs 0-3 share a rep");
    assert_eq!(reps[4], reps[7], "CPUs 4-7 share a rep");
    assert_ne!(reps[0], reps[4]);
    // SAFETY: on_cpus has joined its threads, so this thread alone stands in for CPU 0.
    let cpu = unsafe { sys.cpu(0) };
    cpu.online();
    assert_eq!(c.call(&cpu.request(), |rep| rep.value()), 8);
    cpu.destroy(c).unwrap();
}

/// Storm of adds from every CPU while CPU 0 swaps the counter back and
/// forth: nothing lost, nothing counted twice.
#[test]
fn swap_under_a_storm_loses_and_duplicates_nothing() {
    const CPUS: usize = 6;
    const ADDS: i64 = 20_000;
    let sys = system(CPUS);
    let c = sys.create(counter::shared(None)).unwrap();
    let swaps = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (s2, d2) = (swaps.clone(), done.clone());
    on_cpus(&sys, move |cpu| {
        if cpu.id() == 0 {
            // CPU 0 swaps while the others add.
            let mut to_partitioned = true;
            while d2.load(Ordering::Acquire) < (CPUS - 1) as u64 {
                let root = if to_partitioned {
                    counter::partitioned(CPUS, 1)
                } else {
                    counter::shared(None)
                };
                let stats = cpu.swap(c, root).expect("swap");
                assert_eq!(stats.format, Some(counter::FORMAT_TOTAL));
                to_partitioned = !to_partitioned;
                s2.fetch_add(1, Ordering::Relaxed);
                cpu.quiescent();
            }
        } else {
            for i in 0..ADDS {
                let r = cpu.request();
                c.call(&r, |rep| rep.add(1 + (i & 1)));
            }
            d2.fetch_add(1, Ordering::Release);
        }
    });
    // SAFETY: on_cpus has joined its threads, so this thread alone stands in for CPU 0.
    let cpu = unsafe { sys.cpu(0) };
    cpu.online();
    let per_cpu: i64 = (0..ADDS).map(|i| 1 + (i & 1)).sum();
    assert_eq!(
        c.call(&cpu.request(), |rep| rep.value()),
        per_cpu * (CPUS as i64 - 1)
    );
    assert!(
        swaps.load(Ordering::Relaxed) >= 2,
        "the storm saw {} swaps",
        swaps.load(Ordering::Relaxed)
    );
    cpu.destroy(c).unwrap();
}

struct NoFormats;

impl Root<dyn Counter> for NoFormats {
    fn rep_for(&self, _: usize, _: &dyn CpuEnv) -> &Rep<dyn Counter> {
        unreachable!("never installed")
    }
    fn name(&self) -> &'static str {
        "no-formats"
    }
}

#[test]
fn swap_without_a_common_format_is_refused() {
    let sys = system(1);
    // SAFETY: the test's only thread stands in for CPU 0 and holds no other token.
    let cpu = unsafe { sys.cpu(0) };
    let c = sys.create(counter::shared(None)).unwrap();
    c.call(&cpu.request(), |rep| rep.add(5));
    assert_eq!(
        cpu.swap(c, Box::new(NoFormats)),
        Err(SwapError::Incompatible {
            from: "shared",
            to: "no-formats"
        })
    );
    assert_eq!(
        c.call(&cpu.request(), |rep| rep.value()),
        5,
        "the object is untouched"
    );
    let r = cpu.request();
    assert_eq!(
        cpu.swap(c, counter::partitioned(1, 1)),
        Err(SwapError::InsideRequest)
    );
    drop(r);
    cpu.destroy(c).unwrap();
}

#[test]
fn interposition_counts_every_call() {
    let sys = system(3);
    let c = sys.create(counter::partitioned(3, 1)).unwrap();
    let calls = Arc::new(AtomicI64::new(0));
    {
        // SAFETY: no other thread runs yet; this token is dropped at the end of the
        // block, before on_cpus hands CPU 0 to its own thread.
        let cpu = unsafe { sys.cpu(0) };
        c.call(&cpu.request(), |rep| rep.add(10));
        let calls2 = calls.clone();
        cpu.interpose(c, |old| counter::counting(3, old, calls2))
            .unwrap();
    }
    on_cpus(&sys, move |cpu| {
        for _ in 0..100 {
            c.call(&cpu.request(), |rep| rep.add(1));
        }
    });
    // SAFETY: on_cpus has joined its threads, so this thread alone stands in for CPU 0.
    let cpu = unsafe { sys.cpu(0) };
    cpu.online();
    assert_eq!(calls.load(Ordering::Relaxed), 300);
    assert_eq!(c.call(&cpu.request(), |rep| rep.value()), 310);
    assert_eq!(sys.root_name(c), "counting");
    cpu.destroy(c).unwrap();
}

/// A counter whose rep notes when it is dropped.
struct Watched {
    dropped: Arc<AtomicBool>,
    rep: Rep<dyn Counter>,
}

struct WatchedRep(Arc<AtomicBool>);

impl Counter for WatchedRep {
    fn add(&self, _: i64) {
        // A long call: the rep must stay alive throughout.
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !self.0.load(Ordering::SeqCst),
            "rep freed while a call was running"
        );
    }
    fn value(&self) -> i64 {
        0
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl Root<dyn Counter> for Watched {
    fn rep_for(&self, _: usize, _: &dyn CpuEnv) -> &Rep<dyn Counter> {
        &self.rep
    }
    fn name(&self) -> &'static str {
        "watched"
    }
}

#[test]
fn destruction_waits_for_calls_in_progress() {
    let sys = system(2);
    let dropped = Arc::new(AtomicBool::new(false));
    let root = Watched {
        dropped: dropped.clone(),
        rep: Rep::new(Box::new(WatchedRep(dropped.clone()))),
    };
    let c = sys
        .create(Box::new(root) as Box<dyn Root<dyn Counter>>)
        .unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let (st, dr) = (started.clone(), dropped.clone());
    on_cpus(&sys, move |cpu| {
        if cpu.id() == 1 {
            let r = cpu.request();
            c.call(&r, |rep| rep.add(0)); // installs the rep (50 ms)
            st.store(true, Ordering::SeqCst);
            c.call(&r, |rep| rep.add(0)); // a call in flight during destroy
        } else {
            while !st.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            cpu.destroy(c).unwrap();
            assert!(dr.load(Ordering::SeqCst));
        }
    });
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn a_destroyed_entry_is_reused() {
    let sys = system(1);
    // SAFETY: the test's only thread stands in for CPU 0 and holds no other token.
    let cpu = unsafe { sys.cpu(0) };
    let mut refs = Vec::new();
    for _ in 0..64 {
        refs.push(sys.create(counter::shared(None)).unwrap());
    }
    assert!(
        sys.create(counter::shared(None)).is_none(),
        "the table holds 64"
    );
    cpu.destroy(refs.pop().unwrap()).unwrap();
    let again = sys.create(counter::shared(None)).unwrap();
    assert_eq!(again.call(&cpu.request(), |r| r.value()), 0);
    refs.push(again);
    for r in refs {
        cpu.destroy(r).unwrap();
    }
    let _ = relax;
}
