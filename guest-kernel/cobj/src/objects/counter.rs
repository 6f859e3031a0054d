//! The counter (K42's intctr): `add` from every CPU, `value` now and then.
//!
//! - [`shared`]: one atomic, updated with compare-and-swap so that
//!   contention is visible (failed CASes feed a [`Contention`] detector).
//! - [`partitioned`]: one cell per CPU (a rep per CPU), `value` sums them.
//!
//! State-transfer format [`FORMAT_TOTAL`]: the total as an `i64`.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicI64, Ordering};

use super::{Contention, Padded};
use crate::env::CpuEnv;
use crate::root::{Format, Formats, Rep, RepSet, Root, TransferState};

/// The counter interface.
pub trait Counter: Send + Sync {
    fn add(&self, n: i64);
    fn value(&self) -> i64;
}

/// The total, as an `i64`.
pub const FORMAT_TOTAL: Format = 0;

struct SharedRep {
    value: Arc<Padded<AtomicI64>>,
    contention: Option<Arc<Contention>>,
}

impl Counter for SharedRep {
    #[inline]
    fn add(&self, n: i64) {
        let mut cur = self.value.load(Ordering::Relaxed);
        loop {
            match self.value.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(v) => {
                    cur = v;
                    if let Some(c) = &self.contention {
                        c.record();
                    }
                }
            }
        }
    }

    fn value(&self) -> i64 {
        self.value.load(Ordering::Acquire)
    }
}

/// One atomic shared by every CPU (one rep for all).
pub struct SharedRoot {
    value: Arc<Padded<AtomicI64>>,
    rep: Rep<dyn Counter>,
}

/// A shared counter; `contention`, if given, counts failed updates.
pub fn shared(contention: Option<Arc<Contention>>) -> Box<dyn Root<dyn Counter>> {
    let value = Arc::new(Padded(AtomicI64::new(0)));
    let rep = Rep::new(Box::new(SharedRep {
        value: value.clone(),
        contention,
    }) as Box<dyn Counter>);
    Box::new(SharedRoot { value, rep })
}

impl Root<dyn Counter> for SharedRoot {
    fn rep_for(&self, _cpu: usize, _env: &dyn CpuEnv) -> &Rep<dyn Counter> {
        &self.rep
    }
    fn name(&self) -> &'static str {
        "shared"
    }
    fn export_formats(&self) -> Formats {
        Formats::of(FORMAT_TOTAL)
    }
    fn import_formats(&self) -> Formats {
        Formats::of(FORMAT_TOTAL)
    }
    fn export(&self, _: Format) -> Option<TransferState> {
        Some(Box::new(self.value.load(Ordering::Acquire)))
    }
    fn import(&self, _: Format, state: TransferState) -> bool {
        state
            .downcast::<i64>()
            .map(|v| self.value.store(*v, Ordering::Release))
            .is_ok()
    }
}

struct PartitionedRep {
    cells: Arc<[Padded<AtomicI64>]>,
    me: usize,
}

impl Counter for PartitionedRep {
    #[inline]
    fn add(&self, n: i64) {
        // Only this group's CPUs touch this cell.
        self.cells[self.me].fetch_add(n, Ordering::Relaxed);
    }

    fn value(&self) -> i64 {
        self.cells.iter().map(|c| c.load(Ordering::Acquire)).sum()
    }
}

/// One cell per group of `group_size` CPUs (1: per CPU).
pub struct PartitionedRoot {
    cells: Arc<[Padded<AtomicI64>]>,
    reps: RepSet<dyn Counter>,
}

/// A partitioned counter for `ncpus` CPUs with one cell per `group_size`
/// CPUs.
pub fn partitioned(ncpus: usize, group_size: usize) -> Box<dyn Root<dyn Counter>> {
    let reps = RepSet::new(ncpus, group_size);
    let cells: Vec<Padded<AtomicI64>> = (0..reps.groups())
        .map(|_| Padded(AtomicI64::new(0)))
        .collect();
    Box::new(PartitionedRoot {
        cells: cells.into(),
        reps,
    })
}

impl Root<dyn Counter> for PartitionedRoot {
    fn rep_for(&self, cpu: usize, _env: &dyn CpuEnv) -> &Rep<dyn Counter> {
        self.reps.get_or_create(cpu, |group| {
            Box::new(PartitionedRep {
                cells: self.cells.clone(),
                me: group,
            })
        })
    }
    fn name(&self) -> &'static str {
        "partitioned"
    }
    fn export_formats(&self) -> Formats {
        Formats::of(FORMAT_TOTAL)
    }
    fn import_formats(&self) -> Formats {
        Formats::of(FORMAT_TOTAL)
    }
    fn export(&self, _: Format) -> Option<TransferState> {
        Some(Box::new(
            self.cells
                .iter()
                .map(|c| c.load(Ordering::Acquire))
                .sum::<i64>(),
        ))
    }
    fn import(&self, _: Format, state: TransferState) -> bool {
        match state.downcast::<i64>() {
            Ok(v) => {
                for c in self.cells.iter() {
                    c.store(0, Ordering::Relaxed);
                }
                self.cells[0].store(*v, Ordering::Release);
                true
            }
            Err(_) => false,
        }
    }
}

/// An interposer that counts every `add` on its way to the real counter.
pub struct CountingRoot {
    // Dropped before `inner`, whose reps these point at.
    reps: RepSet<dyn Counter>,
    inner: Box<dyn Root<dyn Counter>>,
    calls: Arc<AtomicI64>,
}

struct CountingRep {
    inner: *const Rep<dyn Counter>,
    calls: Arc<AtomicI64>,
}

// SAFETY: `inner` points at a rep owned by the CountingRoot's inner root,
// which outlives this rep (the root's `reps` field drops first); reps are
// Sync.
unsafe impl Send for CountingRep {}
// SAFETY: as above.
unsafe impl Sync for CountingRep {}

impl Counter for CountingRep {
    fn add(&self, n: i64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        // SAFETY: see the Send impl.
        unsafe { (*self.inner).get() }.add(n)
    }
    fn value(&self) -> i64 {
        // SAFETY: see the Send impl.
        unsafe { (*self.inner).get() }.value()
    }
}

/// Wrap `inner` so that every `add` is counted in `calls`.
pub fn counting(
    ncpus: usize,
    inner: Box<dyn Root<dyn Counter>>,
    calls: Arc<AtomicI64>,
) -> Box<dyn Root<dyn Counter>> {
    Box::new(CountingRoot {
        reps: RepSet::new(ncpus, 1),
        inner,
        calls,
    })
}

impl Root<dyn Counter> for CountingRoot {
    fn rep_for(&self, cpu: usize, env: &dyn CpuEnv) -> &Rep<dyn Counter> {
        let inner: *const Rep<dyn Counter> = self.inner.rep_for(cpu, env);
        self.reps.get_or_create(cpu, |_| {
            Box::new(CountingRep {
                inner,
                calls: self.calls.clone(),
            })
        })
    }
    fn name(&self) -> &'static str {
        "counting"
    }
}
