//! Kernel synchronisation primitives.
//!
//! [`SpinLock`] masks interrupts while held (so a lock may be taken in
//! interrupt context too). A contended waiter does not keep spinning: with
//! many vCPUs on few host CPUs the holder may not be running at all, and
//! under emulation every spin costs microseconds. Instead it records
//! itself in the lock's waiter set and halts; the unlocker wakes one
//! waiter with an IPI, which then competes for the lock again.
//!
//! ```text
//! waiter:   set my bit in `waiters` ─► re-check `locked` ─► halt
//! unlocker: clear `locked` ──────────► read `waiters` ─► clear one bit,
//!                                                        IPI that CPU
//! ```
//!
//! Both sides use sequentially consistent operations in that order, so
//! either the waiter sees the lock free or the unlocker sees the waiter:
//! no wakeup is lost. A waiter that took the lock with interrupts already
//! masked (interrupt context) cannot halt; it backs off through k42vmm
//! instead.
//!
//! [`InitOnce`] holds a value written once at boot and read ever after.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use alloc::sync::Arc;

use crate::{arch, percpu, smp};

/// Spins before a waiter halts (or backs off).
const SPINS_BEFORE_WAIT: u32 = 8;

/// Words in a waiter set: one bit per CPU.
const WAITER_WORDS: usize = k42_abi::MAX_VCPUS.div_ceil(64);

/// A test-and-test-and-set lock with interrupt masking whose contended
/// waiters halt until the unlocker wakes one of them.
pub struct SpinLock<T> {
    locked: AtomicBool,
    /// CPUs registered (or registering) in `waiters`: an unlock with none
    /// skips the scan, the common case and most of an unlock's emulated
    /// instructions.
    waiting: AtomicU32,
    waiters: [AtomicU64; WAITER_WORDS],
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises all access to `value`.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value, which is Send.
unsafe impl<T: Send> Send for SpinLock<T> {}

/// Access to a [`SpinLock`]'s value; unlocks on drop.
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    _irq: arch::IrqGuard,
}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            waiting: AtomicU32::new(0),
            waiters: [const { AtomicU64::new(0) }; WAITER_WORDS],
            value: UnsafeCell::new(value),
        }
    }

    /// The value, through exclusive access (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// Take the lock.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let irq = arch::irq_save();
        if self.locked.swap(true, Ordering::Acquire) {
            self.lock_contended(irq.was_enabled());
        }
        SpinLockGuard {
            lock: self,
            _irq: irq,
        }
    }

    #[cold]
    fn lock_contended(&self, may_halt: bool) {
        let cpu = percpu::cpu_id() as usize;
        let (word, bit) = (&self.waiters[cpu / 64], 1u64 << (cpu % 64));
        let mut round = 0;
        loop {
            for _ in 0..SPINS_BEFORE_WAIT {
                if !self.locked.load(Ordering::Relaxed)
                    && !self.locked.swap(true, Ordering::Acquire)
                {
                    return;
                }
                arch::cpu_relax();
            }
            // The holder may be waiting for this CPU to flush its TLB
            // (interrupts are off here): serve it.
            crate::mm::tlb::service();
            if !may_halt {
                arch::backoff(round);
                round = round.saturating_add(1);
                continue;
            }
            // Counted before the bit is set and the lock tried again: an
            // unlocker that reads no waiters stored `false` before this
            // CPU's try, which then succeeds.
            self.waiting.fetch_add(1, Ordering::SeqCst);
            word.fetch_or(bit, Ordering::SeqCst);
            if !self.locked.swap(true, Ordering::SeqCst) {
                word.fetch_and(!bit, Ordering::Relaxed);
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            // Halt until an unlocker takes our bit (it then IPIs us).
            smp::wait_until(|| word.load(Ordering::SeqCst) & bit == 0);
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            arch::disable_interrupts();
        }
    }

    /// Release the lock and wake one waiter, if any.
    fn unlock(&self) {
        self.locked.store(false, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let me = percpu::cpu_id() as usize;
        // Start after this CPU so that waiters are woken round-robin.
        for i in 0..WAITER_WORDS {
            let w = &self.waiters[(me / 64 + 1 + i) % WAITER_WORDS];
            let mut v = w.load(Ordering::SeqCst);
            while v != 0 {
                let bit = v & v.wrapping_neg();
                let prev = w.fetch_and(!bit, Ordering::SeqCst);
                if prev & bit != 0 {
                    let idx = (me / 64 + 1 + i) % WAITER_WORDS;
                    arch::send_ipi(
                        (idx * 64) as u32 + bit.trailing_zeros(),
                        arch::VECTOR_WAKEUP,
                    );
                    return;
                }
                v = prev & !bit;
            }
        }
    }
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, exclusively.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // Release before `_irq` restores the interrupt flag (fields drop
        // after this body).
        self.lock.unlock();
    }
}

/// A value set once (at boot, before other CPUs look) and then shared.
pub struct InitOnce<T> {
    ready: AtomicBool,
    busy: AtomicBool,
    value: UnsafeCell<core::mem::MaybeUninit<T>>,
}

// SAFETY: the value is written once, before `ready` is published with
// Release, and only read (shared) after `ready` is seen with Acquire.
unsafe impl<T: Sync + Send> Sync for InitOnce<T> {}

impl<T> Drop for InitOnce<T> {
    fn drop(&mut self) {
        if *self.ready.get_mut() {
            // SAFETY: `ready` says the value was fully written, and
            // `&mut self` says no one else can see it any more.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}

impl<T> InitOnce<T> {
    pub const fn new() -> Self {
        Self {
            ready: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(core::mem::MaybeUninit::uninit()),
        }
    }

    /// Initialise the value in place with `init`, which gets a pointer to
    /// uninitialised storage and must fully initialise it (or fail, leaving
    /// the cell unset). Panics if the value was already set. In place,
    /// because copying a large value costs a store per byte when emulated.
    pub fn init_in_place<E>(&self, init: impl FnOnce(*mut T) -> Result<(), E>) -> Result<&T, E> {
        assert!(
            !self.busy.swap(true, Ordering::AcqRel),
            "InitOnce set twice"
        );
        // SAFETY: `busy` makes this the only writer; readers wait for `ready`.
        let slot = unsafe { (*self.value.get()).as_mut_ptr() };
        if let Err(e) = init(slot) {
            self.busy.store(false, Ordering::Release);
            return Err(e);
        }
        self.ready.store(true, Ordering::Release);
        Ok(self.get().expect("just set"))
    }

    /// Store the value; panics if it was already set.
    pub fn set(&self, value: T) -> &T {
        assert!(
            !self.busy.swap(true, Ordering::AcqRel),
            "InitOnce set twice"
        );
        // SAFETY: `busy` makes this the only writer, and no reader looks
        // before `ready`.
        unsafe { (*self.value.get()).write(value) };
        self.ready.store(true, Ordering::Release);
        self.get().expect("just set")
    }

    /// The value, made by `init` on first use (whoever comes first makes
    /// it; others wait for it).
    pub fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
        if let Some(v) = self.get() {
            return v;
        }
        if !self.busy.swap(true, Ordering::AcqRel) {
            // SAFETY: `busy` makes this the only writer; readers wait for
            // `ready`.
            unsafe { (*self.value.get()).write(init()) };
            self.ready.store(true, Ordering::Release);
        }
        loop {
            if let Some(v) = self.get() {
                return v;
            }
            arch::cpu_relax();
        }
    }

    /// Take the value out, leaving the cell unset.
    pub fn take(&mut self) -> Option<T> {
        if !core::mem::replace(self.ready.get_mut(), false) {
            return None;
        }
        *self.busy.get_mut() = false;
        // SAFETY: `ready` said the value was fully written; it is now
        // unset, so the value is moved out exactly once.
        Some(unsafe { self.value.get_mut().assume_init_read() })
    }

    /// The value, once set, to change (the caller is its only user).
    pub fn get_mut_opt(&mut self) -> Option<&mut T> {
        if *self.ready.get_mut() {
            // SAFETY: `ready` says the value was fully written, and
            // `&mut self` says no one else can see it.
            Some(unsafe { self.value.get_mut().assume_init_mut() })
        } else {
            None
        }
    }

    /// The value, once set.
    pub fn get(&self) -> Option<&T> {
        if self.ready.load(Ordering::Acquire) {
            // SAFETY: `ready` is published only after the write completed.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }
}

/// An `Option<Arc<T>>` moved in and out with one atomic swap each, no
/// lock (a lock and unlock cost ~50 µs with the kernel emulated).
pub struct ArcSlot<T>(AtomicPtr<T>);

impl<T> ArcSlot<T> {
    /// An empty slot.
    pub const fn new() -> Self {
        Self(AtomicPtr::new(core::ptr::null_mut()))
    }

    /// Take what the slot holds.
    pub fn take(&self) -> Option<Arc<T>> {
        let p = self.0.swap(core::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: a non-null pointer here came from `Arc::into_raw` in
        // `put`, and the swap took it out: this is its only owner.
        (!p.is_null()).then(|| unsafe { Arc::from_raw(p) })
    }

    /// Put `v` in the slot, dropping what it held.
    pub fn put(&self, v: Arc<T>) {
        let old = self.0.swap(Arc::into_raw(v).cast_mut(), Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: as in `take`: the swap made this the only owner.
            drop(unsafe { Arc::from_raw(old) });
        }
    }
}

impl<T> Default for ArcSlot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for ArcSlot<T> {
    fn drop(&mut self) {
        drop(self.take());
    }
}

// SAFETY: the slot owns an `Arc<T>`; sharing it moves that Arc between
// threads, which `Arc<T>` allows when `T: Send + Sync`.
unsafe impl<T: Send + Sync> Sync for ArcSlot<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Send for ArcSlot<T> {}

/// A value used by one owner at a time, where ownership passes between
/// CPUs by other means (a thread's saved registers: whichever CPU holds
/// the thread). [`ExclusiveCell::borrow`] checks with one atomic swap that
/// nobody else is using it — and panics if someone is, which is a bug —
/// so no lock is needed and no misuse is undefined behaviour.
pub struct ExclusiveCell<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through `borrow`, which hands out one
// guard at a time (the `busy` flag, taken with acquire and released with
// release ordering, so each owner sees the last one's writes); the value
// moves between threads, hence `T: Send`.
unsafe impl<T: Send> Sync for ExclusiveCell<T> {}

impl<T> ExclusiveCell<T> {
    pub const fn new(value: T) -> Self {
        Self {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, for as long as the guard lives.
    ///
    /// # Panics
    /// If the value is borrowed already (two owners at once: a bug).
    #[inline]
    pub fn borrow(&self) -> ExclusiveGuard<'_, T> {
        assert!(
            !self.busy.swap(true, Ordering::Acquire),
            "ExclusiveCell used by two owners at once"
        );
        ExclusiveGuard { cell: self }
    }
}

/// Access to an [`ExclusiveCell`]'s value.
pub struct ExclusiveGuard<'a, T> {
    cell: &'a ExclusiveCell<T>,
}

impl<T> Deref for ExclusiveGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (the `busy` flag).
        unsafe { &*self.cell.value.get() }
    }
}

impl<T> DerefMut for ExclusiveGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard is the only one (the `busy` flag).
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<T> Drop for ExclusiveGuard<'_, T> {
    fn drop(&mut self) {
        self.cell.busy.store(false, Ordering::Release);
    }
}
