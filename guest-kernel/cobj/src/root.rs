//! Roots and representatives.
//!
//! Every clustered object has one *root* (global: knows all reps, owns
//! policy and the object's shared state) and one or more *reps*, each
//! serving a group of CPUs. The root decides which rep serves a CPU and
//! creates it on first use ([`Root::rep_for`], called on a miss).
//! [`RepSet`] does the bookkeeping for the three kinds K42 had: one rep for
//! all CPUs (group size = CPU count), one per CPU (group size 1), or one
//! per cluster of CPUs (any group size, e.g. a NUMA node).
//!
//! Hot swap moves state between roots in a negotiated [`Format`]: each
//! root says which formats it can export and import; the swap picks one
//! both sides know, or refuses.

use alloc::boxed::Box;
use core::any::Any;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::env::CpuEnv;

/// A representative: one implementation object serving a group of CPUs.
pub struct Rep<I: ?Sized> {
    obj: Box<I>,
}

impl<I: ?Sized> Rep<I> {
    pub fn new(obj: Box<I>) -> Self {
        Self { obj }
    }

    /// The implementation object.
    #[inline]
    pub fn get(&self) -> &I {
        &self.obj
    }
}

/// A state-transfer format, an index into a [`Formats`] set. Each object
/// family defines its own (e.g. "the counter's total as an `i64`").
pub type Format = u32;

/// A set of state-transfer formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Formats(pub u64);

impl Formats {
    pub const NONE: Formats = Formats(0);

    /// The set holding just `f`.
    pub const fn of(f: Format) -> Self {
        Formats(1 << f)
    }

    /// This set plus `f`.
    pub const fn with(self, f: Format) -> Self {
        Formats(self.0 | (1 << f))
    }

    /// The lowest-numbered format in both sets.
    pub fn common(self, other: Formats) -> Option<Format> {
        let both = self.0 & other.0;
        (both != 0).then(|| both.trailing_zeros())
    }
}

/// Object state in transit between two roots during a swap.
pub type TransferState = Box<dyn Any + Send>;

/// A clustered object's root.
pub trait Root<I: ?Sized>: Send + Sync {
    /// The rep that serves `cpu`, created on its first use. The reference
    /// must stay valid, and the rep must stay the one serving `cpu`, for
    /// as long as the root lives.
    fn rep_for(&self, cpu: usize, env: &dyn CpuEnv) -> &Rep<I>;

    /// A short name of this implementation ("shared", "partitioned"...).
    fn name(&self) -> &'static str;

    /// Formats this root can export its state in.
    fn export_formats(&self) -> Formats {
        Formats::NONE
    }

    /// Formats this root can import state from.
    fn import_formats(&self) -> Formats {
        Formats::NONE
    }

    /// The object's whole state in `format` (only called with a format of
    /// [`export_formats`](Self::export_formats), when no call is running).
    fn export(&self, format: Format) -> Option<TransferState> {
        let _ = format;
        None
    }

    /// Take over `state` (only called with a format of
    /// [`import_formats`](Self::import_formats), before any call).
    fn import(&self, format: Format, state: TransferState) -> bool {
        let _ = (format, state);
        false
    }
}

/// Reps for groups of `group_size` CPUs, created lazily and kept until the
/// set drops.
pub struct RepSet<I: ?Sized> {
    group_size: usize,
    reps: Box<[AtomicPtr<Rep<I>>]>,
}

// SAFETY: the reps are only shared as &Rep<I>, which is Sync when I is;
// each is published once with a compare-and-swap (Release).
unsafe impl<I: ?Sized + Sync + Send> Sync for RepSet<I> {}
// SAFETY: the set owns its reps.
unsafe impl<I: ?Sized + Send> Send for RepSet<I> {}

impl<I: ?Sized> RepSet<I> {
    /// Reps for `ncpus` CPUs in groups of `group_size` (clamped to
    /// `1..=ncpus`).
    pub fn new(ncpus: usize, group_size: usize) -> Self {
        let group_size = group_size.clamp(1, ncpus.max(1));
        let groups = ncpus.max(1).div_ceil(group_size);
        Self {
            group_size,
            reps: (0..groups)
                .map(|_| AtomicPtr::new(core::ptr::null_mut()))
                .collect(),
        }
    }

    /// CPUs per group.
    pub fn group_size(&self) -> usize {
        self.group_size
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.reps.len()
    }

    /// The group `cpu` belongs to.
    pub fn group_of(&self, cpu: usize) -> usize {
        (cpu / self.group_size).min(self.reps.len() - 1)
    }

    /// The rep of `cpu`'s group, made by `make(group)` if it does not
    /// exist yet. Takes no lock: CPUs of one group that miss at once may
    /// each make a rep; one wins, the others' are dropped unused, so
    /// making a rep must have no other effect.
    pub fn get_or_create(&self, cpu: usize, make: impl FnOnce(usize) -> Box<I>) -> &Rep<I> {
        let group = self.group_of(cpu);
        let slot = &self.reps[group];
        let mut p = slot.load(Ordering::Acquire);
        if p.is_null() {
            let new = Box::into_raw(Box::new(Rep::new(make(group))));
            p = match slot.compare_exchange(
                core::ptr::null_mut(),
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => new,
                Err(existing) => {
                    // SAFETY: `new` came from Box::into_raw just above and
                    // was never published.
                    drop(unsafe { Box::from_raw(new) });
                    existing
                }
            };
        }
        // SAFETY: non-null pointers were published by the compare-and-swap
        // above and stay valid until the set drops.
        unsafe { &*p }
    }

    /// The reps created so far, with their group numbers.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &I)> {
        self.reps.iter().enumerate().filter_map(|(g, slot)| {
            let p = slot.load(Ordering::Acquire);
            // SAFETY: as in get_or_create.
            (!p.is_null()).then(|| (g, unsafe { (*p).get() }))
        })
    }
}

impl<I: ?Sized> Drop for RepSet<I> {
    fn drop(&mut self) {
        for slot in self.reps.iter() {
            let p = slot.load(Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: created by Box::into_raw in get_or_create; the set
                // is being dropped, so no reference to the rep remains.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_negotiate() {
        let a = Formats::of(1).with(3);
        let b = Formats::of(3).with(5);
        assert_eq!(a.common(b), Some(3));
        assert_eq!(a.common(Formats::of(2)), None);
        assert_eq!(Formats::NONE.common(a), None);
    }

    #[test]
    fn groups_cover_all_cpus() {
        let s: RepSet<u32> = RepSet::new(10, 4);
        assert_eq!(s.groups(), 3);
        assert_eq!(s.group_of(9), 2);
        let one: RepSet<u32> = RepSet::new(10, 100);
        assert_eq!((one.groups(), one.group_size()), (1, 10));
    }
}
