//! A small spin lock that waits through the platform's relax function
//! ([`CpuEnv::relax`], or a plain `fn(u32)` for object implementations,
//! which have no environment at hand), so a waiter on an overcommitted
//! host gives its CPU away instead of spinning against the holder.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::env::CpuEnv;

/// A test-and-test-and-set lock.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises every access to `value`.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value, which is Send.
unsafe impl<T: Send> Send for SpinLock<T> {}

/// Access to a [`SpinLock`]'s value; unlocks on drop.
pub struct Guard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Take the lock, relaxing through `env` while it is held elsewhere.
    pub fn lock(&self, env: &dyn CpuEnv) -> Guard<'_, T> {
        self.lock_with(|round| env.relax(round))
    }

    /// Take the lock, calling `relax(round)` while it is held elsewhere.
    #[inline]
    pub fn lock_with(&self, relax: impl Fn(u32)) -> Guard<'_, T> {
        if self.locked.swap(true, Ordering::Acquire) {
            self.lock_slow(&relax);
        }
        Guard { lock: self }
    }

    #[cold]
    fn lock_slow(&self, relax: &dyn Fn(u32)) {
        let mut round = 0;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                relax(round);
                round = round.saturating_add(1);
            }
            if !self.locked.swap(true, Ordering::Acquire) {
                return;
            }
        }
    }

    /// Take the lock if it is free.
    pub fn try_lock(&self) -> Option<Guard<'_, T>> {
        if self.locked.swap(true, Ordering::Acquire) {
            None
        } else {
            Some(Guard { lock: self })
        }
    }

    /// The value, without locking: the `&mut self` proves exclusivity.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held exclusively.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
