//! Waiting across CPUs in user mode: a spin lock and a barrier.
//!
//! A user program cannot halt, and with more vCPUs than host CPUs the one
//! it waits for may not be running. So every wait spins briefly with
//! `pause` and then gives the host CPU away with the yield system call,
//! backing off as the wait grows ([`relax`]).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Spins before a wait starts yielding.
const SPINS: u32 = 64;

/// One round of waiting: `pause` for the first rounds, then yield.
#[inline]
pub fn relax(round: u32) {
    if round < SPINS {
        core::hint::spin_loop();
    } else {
        crate::yield_now(round - SPINS);
    }
}

/// Wait politely (see [`relax`]) until `ready()` holds.
pub fn wait_until(mut ready: impl FnMut() -> bool) {
    let mut round = 0;
    while !ready() {
        relax(round);
        round += 1;
    }
}

/// A test-and-test-and-set lock.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises every access to `value`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

/// Access to a [`SpinLock`]'s value; unlocks on drop.
pub struct Guard<'a, T>(&'a SpinLock<T>);

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    pub fn lock(&self) -> Guard<'_, T> {
        let mut round = 0;
        while self.locked.swap(true, Ordering::Acquire) {
            while self.locked.load(Ordering::Relaxed) {
                relax(round);
                round += 1;
            }
        }
        Guard(self)
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.0.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held exclusively.
        unsafe { &mut *self.0.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.0.locked.store(false, Ordering::Release);
    }
}

/// A reusable barrier for `n` CPUs.
pub struct Barrier {
    n: u32,
    arrived: AtomicU32,
    generation: AtomicU32,
}

impl Barrier {
    pub const fn new(n: u32) -> Self {
        Self {
            n,
            arrived: AtomicU32::new(0),
            generation: AtomicU32::new(0),
        }
    }

    /// Wait for all `n` CPUs, calling `idle` while waiting (e.g. to pass
    /// clustered-object quiescent points).
    pub fn wait_with(&self, mut idle: impl FnMut()) {
        let g = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut round = 0;
        while self.generation.load(Ordering::Acquire) == g {
            idle();
            relax(round);
            round += 1;
        }
    }

    /// Wait for all `n` CPUs.
    pub fn wait(&self) {
        self.wait_with(|| {});
    }
}
