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
use crate::root::{Rep, RepSet, Root};
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

/// Counts contention events (failed compare-and-swaps; failed try-locks,
/// rounds waited and frequent hand-offs of a [`WatchedLock`]) and raises a flag once
/// they pass a threshold. Only contended operations touch it, so it costs
/// nothing when there is no contention.
pub struct Contention {
    events: AtomicU64,
    threshold: u64,
    flag: AtomicBool,
    ncpus: usize,
}

impl Contention {
    /// A detector for an object used on `ncpus` CPUs that trips after
    /// `threshold` events.
    pub fn new(threshold: u64, ncpus: usize) -> Arc<Self> {
        Arc::new(Self {
            events: AtomicU64::new(0),
            threshold,
            flag: AtomicBool::new(false),
            ncpus: ncpus.max(1),
        })
    }

    /// CPUs the watched object is used on.
    pub fn ncpus(&self) -> usize {
        self.ncpus
    }

    /// Record one contention event.
    #[inline]
    pub fn record(&self) {
        self.record_n(1);
    }

    /// Record `n` contention events.
    pub fn record_n(&self, n: u64) {
        let before = self.events.fetch_add(n, Ordering::Relaxed);
        if before < self.threshold && before + n >= self.threshold {
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

/// Acquisitions per window of a [`WatchedLock`]'s hand-off count.
const HANDOFF_WINDOW: u32 = 64;
/// Hand-offs in one window that count as contention (one in eight).
const HANDOFF_HOT: u32 = HANDOFF_WINDOW / 8;

/// A shared implementation's lock that reports contention to a
/// [`Contention`]: a failed try-lock, every round then spent waiting, and
/// the lock changing CPU often.
///
/// Failed try-locks alone miss most contention. A waiter that gives its
/// CPU away (the platform's relax) leaves the holder to run alone, so the
/// object runs at one CPU's speed while few acquisitions fail; the rounds
/// waited show it. And a lock held for a few nanoseconds is seldom found
/// taken even when every CPU uses it, yet its cache line moves at nearly
/// every acquisition; so the holder notes which CPU took the lock, and a
/// window of 64 acquisitions in which it changed CPU at least 8 times
/// reports those changes. The count lives inside the lock, on the line its
/// holder already owns, and only when watched.
pub struct WatchedLock<T> {
    lock: SpinLock<Watched<T>>,
    contention: Option<Arc<Contention>>,
    relax: Relax,
}

struct Watched<T> {
    value: T,
    last_cpu: usize,
    taken: u32,
    moves: u32,
}

/// Access to a [`WatchedLock`]'s value; unlocks on drop.
pub struct WatchedGuard<'a, T>(Guard<'a, Watched<T>>);

impl<T> WatchedLock<T> {
    /// A lock around `value`, reporting to `contention` if given.
    pub fn new(value: T, contention: Option<Arc<Contention>>, relax: Relax) -> Self {
        Self {
            lock: SpinLock::new(Watched {
                value,
                last_cpu: 0,
                taken: 0,
                moves: 0,
            }),
            contention,
            relax,
        }
    }

    /// Whether contention is reported (then callers pass their real CPU).
    pub fn watched(&self) -> Option<&Arc<Contention>> {
        self.contention.as_ref()
    }

    /// Take the lock outside any CPU's calls (state transfer, say),
    /// without counting a hand-off.
    pub fn lock_uncounted(&self) -> WatchedGuard<'_, T> {
        WatchedGuard(self.lock.lock_with(self.relax))
    }

    /// Take the lock on `cpu`.
    #[inline]
    pub fn lock(&self, cpu: usize) -> WatchedGuard<'_, T> {
        let mut g = self
            .lock
            .try_lock()
            .unwrap_or_else(|| match &self.contention {
                // Every round spent waiting is an event: a waiter that gives
                // its CPU away (the platform's relax) may find the lock free
                // only rarely, yet the object runs at one CPU's speed.
                Some(c) => {
                    c.record();
                    self.lock.lock_with(|round| {
                        c.record();
                        (self.relax)(round)
                    })
                }
                None => self.lock.lock_with(self.relax),
            });
        if let Some(c) = &self.contention {
            let w = &mut *g;
            if w.last_cpu != cpu {
                w.last_cpu = cpu;
                w.moves += 1;
            }
            w.taken += 1;
            if w.taken == HANDOFF_WINDOW {
                if w.moves >= HANDOFF_HOT {
                    c.record_n(u64::from(w.moves));
                }
                w.taken = 0;
                w.moves = 0;
            }
        }
        WatchedGuard(g)
    }
}

impl<T> core::ops::Deref for WatchedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T> core::ops::DerefMut for WatchedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0.value
    }
}

/// The reps of a shared implementation. Unwatched, one rep serves every
/// CPU (K42's single-rep root); watched, each CPU gets a thin rep that
/// only knows its CPU number, for the [`WatchedLock`]'s hand-off count.
pub struct SharedReps<I: ?Sized>(RepSet<I>);

impl<I: ?Sized> SharedReps<I> {
    /// Reps for an object watched by `contention`, if given.
    pub fn new(contention: Option<&Arc<Contention>>) -> Self {
        Self(RepSet::new(contention.map_or(1, |c| c.ncpus()), 1))
    }

    /// The rep for `cpu`, made by `make(cpu)` (`make(0)` for the single
    /// rep) if it does not exist yet.
    pub fn get(&self, cpu: usize, make: impl FnOnce(usize) -> Box<I>) -> &Rep<I> {
        self.0.get_or_create(cpu, make)
    }
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
