//! Kernel objects built as clustered objects, each one interface with a
//! shared and a distributed implementation (the pairs of the seed talk):
//!
//! | object | shared | distributed |
//! |---|---|---|
//! | [`counter`] (K42's intctr) | one atomic | per-CPU cells, summed on read |
//! | [`pagemgr`] (PMRoot) | one free list under a lock | per-CPU caches refilled from and spilled to the root in chunks |
//! | [`dhash`] (DHashTable) | one locked table | master table plus per-CPU local tables with replica sets |
//! | [`process`] (Process) | one region list under a lock | root list plus per-CPU cached regions |
//!
//! Each shared implementation can report contention ([`Contention`]); an
//! [`Adaptive`] object starts shared and hot-swaps itself to the
//! distributed implementation when contention shows up.

pub mod counter;
pub mod dhash;
pub mod pagemgr;
pub mod process;

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::env::CpuEnv;
use crate::root::Root;
use crate::sync::{Guard, SpinLock};
use crate::system::{Cpu, ObjRef, SwapError, SwapStats};

/// How object implementations wait for a lock held elsewhere: called with
/// the number of rounds waited so far (the platform's relax function).
pub type Relax = fn(u32);

/// A value alone on its cache line, so per-CPU data does not false-share.
#[derive(Default)]
#[repr(align(64))]
pub struct Padded<T>(pub T);

impl<T> core::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Counts contention events (failed compare-and-swaps; failed try-locks
/// and rounds waited, see [`lock_watched`])
/// and raises a flag once they pass a threshold. Only contended operations
/// touch it, so it costs nothing when there is no contention.
pub struct Contention {
    events: AtomicU64,
    threshold: u64,
    flag: AtomicBool,
}

impl Contention {
    /// A detector that trips after `threshold` events.
    pub fn new(threshold: u64) -> Arc<Self> {
        Arc::new(Self {
            events: AtomicU64::new(0),
            threshold,
            flag: AtomicBool::new(false),
        })
    }

    /// Record one contention event.
    #[inline]
    pub fn record(&self) {
        if self.events.fetch_add(1, Ordering::Relaxed) + 1 == self.threshold {
            self.flag.store(true, Ordering::Release);
        }
    }

    /// Whether the threshold was passed.
    pub fn tripped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Events so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
}

/// Take a shared implementation's lock, reporting contention to
/// `contention` if given: a failed try-lock, and every round then spent
/// waiting.
///
/// Failed try-locks alone miss most contention: a waiter that gives its
/// CPU away (the platform's relax) leaves the holder to run alone, so the
/// object runs at one CPU's speed while few acquisitions fail (the shared
/// hash table at 2 vCPUs saw 11 in 4 million). The rounds waited show it.
#[inline]
pub fn lock_watched<'a, T>(
    lock: &'a SpinLock<T>,
    contention: Option<&Contention>,
    relax: Relax,
) -> Guard<'a, T> {
    lock.try_lock().unwrap_or_else(|| match contention {
        Some(c) => {
            c.record();
            lock.lock_with(|round| {
                c.record();
                relax(round)
            })
        }
        None => lock.lock_with(relax),
    })
}

/// Start shared, swap to distributed under contention (K42's FCM swapped
/// itself the first time its lock's try-acquire failed).
pub struct Adaptive<I: ?Sized> {
    pub obj: ObjRef<I>,
    contention: Arc<Contention>,
    distributed: fn(ncpus: usize) -> Box<dyn Root<I>>,
    swapped: AtomicBool,
}

impl<I: ?Sized + 'static> Adaptive<I> {
    /// An adaptive object around `obj` (created with a shared root that
    /// reports to `contention`); `distributed` makes the root to swap to.
    pub fn new(
        obj: ObjRef<I>,
        contention: Arc<Contention>,
        distributed: fn(usize) -> Box<dyn Root<I>>,
    ) -> Self {
        Self {
            obj,
            contention,
            distributed,
            swapped: AtomicBool::new(false),
        }
    }

    /// Call outside any request, now and then: swaps once contention has
    /// been seen. Returns the swap's statistics when this call did it.
    pub fn poll<E: CpuEnv>(&self, cpu: &Cpu<'_, E>) -> Option<Result<SwapStats, SwapError>> {
        // Read before writing: every CPU polls often, and a write to the
        // shared flag on each poll would itself be contention.
        if !self.contention.tripped()
            || self.swapped.load(Ordering::Acquire)
            || self.swapped.swap(true, Ordering::AcqRel)
        {
            return None;
        }
        let root = (self.distributed)(cpu.system().ncpus());
        Some(cpu.swap(self.obj, root))
    }

    /// Whether the swap has happened.
    pub fn swapped(&self) -> bool {
        self.swapped.load(Ordering::Acquire)
    }
}
