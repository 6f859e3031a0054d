//! The object table: references, the call and miss paths, hot swap,
//! interposition and destruction.
//!
//! ```text
//! System
//!  ├─ entries[idx]        global: root, state (normal/forward/block/...),
//!  │                      forwarded-call count, which CPUs installed reps
//!  └─ cpus[c]             per CPU: generation counters, local table
//!       └─ local[idx]     cached rep for this CPU, or null (miss)
//! ```
//!
//! Hot swap (Soules et al. 2003), with the mediator built into the miss
//! path so that it works for any interface:
//!
//! 1. negotiate a state-transfer format (refuse the swap if none);
//! 2. FORWARD: empty every CPU's local slot; new calls miss and are
//!    forwarded to the old root's reps, counted;
//! 3. wait for a marker on every CPU that had the object cached, so no
//!    call still holds an old rep from its local slot;
//! 4. BLOCK: new calls wait; wait for forwarded calls to drain;
//! 5. transfer the state old → new, switch the entry to the new root,
//!    let blocked calls go on (they miss and install new reps), and drop
//!    the old root.
//!
//! Interposition (wrap an object to watch every call) and destruction use
//! the same steps.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::env::{CpuEnv, Event};
use crate::quiesce::CpuGeneration;
use crate::root::{Format, Rep, Root};
use crate::sync::SpinLock;

/// Most CPUs a system serves.
pub const MAX_CPUS: usize = 256;

const FREE: u32 = 0;
const NORMAL: u32 = 1;
const FORWARD: u32 = 2;
const BLOCK: u32 = 3;
const DESTROYING: u32 = 4;

/// The root pointer stored (type-erased) in an entry.
type RootBox<I> = Box<dyn Root<I>>;

/// A reference to a clustered object with interface `I`: a small
/// copyable index into the object table.
pub struct ObjRef<I: ?Sized> {
    idx: u32,
    _iface: PhantomData<fn() -> *const I>,
}

impl<I: ?Sized> Clone for ObjRef<I> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<I: ?Sized> Copy for ObjRef<I> {}

impl<I: ?Sized> core::fmt::Debug for ObjRef<I> {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(f, "ObjRef({})", self.idx)
    }
}

/// Why a swap, interposition or destruction could not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapError {
    /// The two roots share no state-transfer format.
    Incompatible {
        from: &'static str,
        to: &'static str,
    },
    /// The new root refused the exported state.
    ImportRefused,
    /// Another swap or a destruction of the object is under way.
    Busy,
    /// Called inside a request on this CPU (it would wait for itself).
    InsideRequest,
}

/// What a swap did and how long it took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapStats {
    /// The negotiated format (none for interposition).
    pub format: Option<Format>,
    /// Time in the forward phase (waiting for quiescence).
    pub forward_ns: u64,
    /// Time callers were blocked (block phase until the switch).
    pub blocked_ns: u64,
}

struct Entry {
    state: AtomicU32,
    /// `*mut RootBox<I>`: the current root.
    root: AtomicPtr<()>,
    /// During FORWARD and BLOCK: the root being replaced.
    old_root: AtomicPtr<()>,
    /// Calls forwarded to the old root and still running.
    in_flight: AtomicU64,
    /// Misses installing a rep of the current root right now (they take
    /// no lock, so that all CPUs can miss at once).
    installing: AtomicU64,
    /// Serialises misses that install reps with swaps and destruction.
    lock: SpinLock<()>,
    /// CPUs whose local table may hold a rep of this object.
    used_by: [AtomicU64; MAX_CPUS / 64],
}

#[repr(C, align(64))]
struct CpuSlots {
    quiesce: CpuGeneration,
    /// The local table (`capacity` slots), made when the CPU first gets its
    /// token, so that a system for many CPUs costs little until they use
    /// it.
    local: AtomicPtr<AtomicPtr<()>>,
}

impl CpuSlots {
    /// The local table, if the CPU has one.
    fn table(&self, capacity: usize) -> Option<&[AtomicPtr<()>]> {
        let p = self.local.load(Ordering::Acquire);
        // SAFETY: a non-null `local` points at `capacity` slots made in
        // `System::cpu` and freed only when the system drops.
        (!p.is_null()).then(|| unsafe { core::slice::from_raw_parts(p, capacity) })
    }
}

/// The clustered-object system: one object table for `ncpus` CPUs.
pub struct System<E: CpuEnv> {
    env: E,
    capacity: usize,
    cpus: Box<[CpuSlots]>,
    entries: Box<[Entry]>,
    free: SpinLock<Vec<u32>>,
    misses: AtomicU64,
}

/// A CPU of a [`System`]: the proof that the code holding it runs on that
/// CPU and stays there. Not `Send`.
pub struct Cpu<'s, E: CpuEnv> {
    sys: &'s System<E>,
    id: usize,
    _pinned: PhantomData<*const ()>,
}

/// An active request on a CPU; calls through references need one.
pub struct Request<'c, E: CpuEnv> {
    sys: &'c System<E>,
    slots: &'c CpuSlots,
    /// This CPU's local table.
    local: *const AtomicPtr<()>,
    id: usize,
    parity: usize,
    _pinned: PhantomData<*const ()>,
}

impl<E: CpuEnv> System<E> {
    /// A system for `env.ncpus()` CPUs with room for `capacity` objects.
    pub fn new(env: E, capacity: usize) -> Self {
        let n = env.ncpus();
        assert!(
            n <= MAX_CPUS,
            "{n} CPUs, more than the {MAX_CPUS} a system serves"
        );
        let cpus = (0..n)
            .map(|_| CpuSlots {
                quiesce: CpuGeneration::new(),
                local: AtomicPtr::new(core::ptr::null_mut()),
            })
            .collect();
        let entries = (0..capacity)
            .map(|_| Entry {
                state: AtomicU32::new(FREE),
                root: AtomicPtr::new(core::ptr::null_mut()),
                old_root: AtomicPtr::new(core::ptr::null_mut()),
                in_flight: AtomicU64::new(0),
                installing: AtomicU64::new(0),
                lock: SpinLock::new(()),
                used_by: [const { AtomicU64::new(0) }; MAX_CPUS / 64],
            })
            .collect();
        Self {
            env,
            capacity,
            cpus,
            entries,
            free: SpinLock::new((0..capacity as u32).rev().collect()),
            misses: AtomicU64::new(0),
        }
    }

    /// The platform.
    pub fn env(&self) -> &E {
        &self.env
    }

    /// Number of CPUs.
    pub fn ncpus(&self) -> usize {
        self.cpus.len()
    }

    /// A quiescent point for CPU `id`, without making its token (or its
    /// local table).
    ///
    /// # Safety
    /// The caller must run on CPU `id`, outside any request there.
    pub unsafe fn quiescent(&self, id: usize) {
        self.cpus[id].quiesce.advance();
    }

    /// The token for CPU `id`.
    ///
    /// # Safety
    /// The caller must run on CPU `id` (or be the one thread standing in
    /// for it) for as long as the token and its requests live, and only
    /// one token per CPU may be in use at a time.
    pub unsafe fn cpu(&self, id: usize) -> Cpu<'_, E> {
        assert!(id < self.cpus.len(), "CPU {id} of {}", self.cpus.len());
        let slots = &self.cpus[id];
        if slots.local.load(Ordering::Acquire).is_null() {
            let table: Box<[AtomicPtr<()>]> = (0..self.capacity)
                .map(|_| AtomicPtr::new(core::ptr::null_mut()))
                .collect();
            let p = Box::into_raw(table) as *mut AtomicPtr<()>;
            if slots
                .local
                .compare_exchange(
                    core::ptr::null_mut(),
                    p,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                // SAFETY: `p` came from Box::into_raw just above and was
                // never shared.
                drop(unsafe {
                    Box::from_raw(core::ptr::slice_from_raw_parts_mut(p, self.capacity))
                });
            }
        }
        Cpu {
            sys: self,
            id,
            _pinned: PhantomData,
        }
    }

    /// Calls so far that missed in their CPU's local table.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Make a new clustered object with `root`; `None` when the table is
    /// full.
    pub fn create<I: ?Sized + 'static>(&self, root: RootBox<I>) -> Option<ObjRef<I>> {
        let idx = self.free.lock(&self.env).pop()?;
        let e = &self.entries[idx as usize];
        e.root
            .store(Box::into_raw(Box::new(root)) as *mut (), Ordering::Release);
        e.state.store(NORMAL, Ordering::Release);
        Some(ObjRef {
            idx,
            _iface: PhantomData,
        })
    }

    /// The name of the root now behind `obj`.
    pub fn root_name<I: ?Sized + 'static>(&self, obj: ObjRef<I>) -> &'static str {
        let e = &self.entries[obj.idx as usize];
        let _g = e.lock.lock(&self.env);
        if e.state.load(Ordering::Acquire) != NORMAL {
            return "(changing)";
        }
        // SAFETY: NORMAL under the entry's lock: `root` is the live
        // RootBox<I> that `create` or `replace` stored, and a swap or a
        // destruction must take this lock to leave NORMAL before it frees
        // it, so it outlives this borrow (which ends with the guard).
        let root = unsafe { root_ref::<I>(e.root.load(Ordering::Acquire)) };
        root.name()
    }

    #[cold]
    fn call_miss<I: ?Sized + 'static, R>(
        &self,
        obj: ObjRef<I>,
        req: &Request<'_, E>,
        f: impl FnOnce(&I) -> R,
    ) -> R {
        let e = &self.entries[obj.idx as usize];
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.env.event(Event::Miss { obj: obj.idx });
        let mut round = 0;
        loop {
            match e.state.load(Ordering::SeqCst) {
                NORMAL => {
                    // Announce the install, then check the state again: a
                    // swap or destruction sets its state first and then
                    // waits for installs to finish before emptying slots.
                    e.installing.fetch_add(1, Ordering::SeqCst);
                    if e.state.load(Ordering::SeqCst) != NORMAL {
                        e.installing.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                    // SAFETY: NORMAL while our install is counted: the root
                    // is current and cannot be replaced or dropped before
                    // `installing` drops back.
                    let root = unsafe { root_ref::<I>(e.root.load(Ordering::Acquire)) };
                    let rep: *const Rep<I> = root.rep_for(req.id, &self.env);
                    // SAFETY: `local` holds `capacity` slots and the index
                    // came from `create`, so it is below `capacity`.
                    unsafe { &*req.local.add(obj.idx as usize) }
                        .store(rep as *mut (), Ordering::Release);
                    e.used_by[req.id / 64].fetch_or(1 << (req.id % 64), Ordering::SeqCst);
                    e.installing.fetch_sub(1, Ordering::SeqCst);
                    // SAFETY: the rep lives as long as its root, which a
                    // swap drops only after this request has ended.
                    return f(unsafe { (*rep).get() });
                }
                FORWARD => {
                    e.in_flight.fetch_add(1, Ordering::SeqCst);
                    if e.state.load(Ordering::SeqCst) != FORWARD {
                        e.in_flight.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                    // SAFETY: while FORWARD holds and our call is counted,
                    // the swap keeps the old root alive.
                    let old = unsafe { root_ref::<I>(e.old_root.load(Ordering::Acquire)) };
                    let r = f(old.rep_for(req.id, &self.env).get());
                    e.in_flight.fetch_sub(1, Ordering::Release);
                    return r;
                }
                BLOCK => {
                    self.env.relax(round);
                    round = round.saturating_add(1);
                }
                _ => panic!("call through {obj:?}, a destroyed clustered object"),
            }
        }
    }

    /// Wait for misses that saw NORMAL to finish installing their rep.
    fn wait_installs(&self, e: &Entry) {
        let mut round = 0;
        while e.installing.load(Ordering::SeqCst) != 0 {
            self.env.relax(round);
            round = round.saturating_add(1);
        }
    }

    /// Empty every local slot of entry `idx`; returns the CPUs that had
    /// the object cached. Caller holds the entry lock.
    fn reset_slots(&self, idx: usize) -> Vec<usize> {
        let e = &self.entries[idx];
        let mut cpus = Vec::new();
        for (w, word) in e.used_by.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::SeqCst);
            while bits != 0 {
                let c = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(t) = self.cpus[c].table(self.capacity) {
                    t[idx].store(core::ptr::null_mut(), Ordering::SeqCst);
                }
                cpus.push(c);
            }
        }
        cpus
    }

    /// Wait until every CPU in `cpus` has passed a quiescent point twice
    /// since now. `me`, the waiting CPU, is outside any request and passes
    /// its own quiescent points as it waits.
    fn wait_quiescent(&self, me: usize, cpus: &[usize]) {
        let markers: Vec<(usize, u64)> = cpus
            .iter()
            .map(|&c| (c, self.cpus[c].quiesce.generation()))
            .collect();
        let mut round = 0;
        for (c, m) in markers {
            while !self.cpus[c].quiesce.elapsed(m) {
                if c == me {
                    self.cpus[me].quiesce.advance();
                    continue;
                }
                self.env.poke(c);
                self.env.relax(round);
                round = round.saturating_add(1);
            }
        }
    }

    /// Replace `obj`'s root with `make(old_root)` by the hot-swap protocol.
    fn replace<I: ?Sized + 'static>(
        &self,
        me: usize,
        obj: ObjRef<I>,
        format: Option<Format>,
        make: impl FnOnce(RootBox<I>) -> Result<RootBox<I>, (RootBox<I>, SwapError)>,
    ) -> Result<SwapStats, SwapError> {
        if self.cpus[me].quiesce.depth() != 0 {
            return Err(SwapError::InsideRequest);
        }
        let e = &self.entries[obj.idx as usize];
        let t0 = self.env.now_ns();
        self.env.event(Event::SwapBegin {
            obj: obj.idx,
            format,
        });
        let cached = {
            let _g = e.lock.lock(&self.env);
            if e.state.load(Ordering::SeqCst) != NORMAL {
                return Err(SwapError::Busy);
            }
            e.old_root
                .store(e.root.load(Ordering::Acquire), Ordering::Release);
            e.state.store(FORWARD, Ordering::SeqCst);
            self.wait_installs(e);
            self.reset_slots(obj.idx as usize)
        };
        self.wait_quiescent(me, &cached);
        let t1 = self.env.now_ns();
        self.env.event(Event::SwapBlock {
            obj: obj.idx,
            forward_ns: t1 - t0,
        });
        e.state.store(BLOCK, Ordering::SeqCst);
        let mut round = 0;
        while e.in_flight.load(Ordering::SeqCst) != 0 {
            self.env.relax(round);
            round = round.saturating_add(1);
        }
        // SAFETY: BLOCK with no forwarded call running: nothing can reach
        // the old root any more (local slots were emptied and quiesced),
        // so we own it.
        let old = unsafe {
            *Box::from_raw(
                e.old_root.swap(core::ptr::null_mut(), Ordering::AcqRel) as *mut RootBox<I>
            )
        };
        let result = match make(old) {
            Ok(new) => Ok(new),
            Err((old, err)) => {
                e.root
                    .store(Box::into_raw(Box::new(old)) as *mut (), Ordering::Release);
                e.state.store(NORMAL, Ordering::SeqCst);
                let blocked_ns = self.env.now_ns() - t1;
                self.env.event(Event::SwapEnd {
                    obj: obj.idx,
                    blocked_ns,
                });
                return Err(err);
            }
        };
        let new = result?;
        e.root
            .store(Box::into_raw(Box::new(new)) as *mut (), Ordering::Release);
        e.state.store(NORMAL, Ordering::SeqCst);
        let t2 = self.env.now_ns();
        self.env.event(Event::SwapEnd {
            obj: obj.idx,
            blocked_ns: t2 - t1,
        });
        Ok(SwapStats {
            format,
            forward_ns: t1 - t0,
            blocked_ns: t2 - t1,
        })
    }
}

impl<E: CpuEnv> Drop for System<E> {
    fn drop(&mut self) {
        for c in self.cpus.iter() {
            let p = c.local.load(Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: made by Box::into_raw in `cpu` with `capacity`
                // slots; the system is going away, so no token remains.
                drop(unsafe {
                    Box::from_raw(core::ptr::slice_from_raw_parts_mut(p, self.capacity))
                });
            }
        }
        // Roots are type-erased; objects must be destroyed before the
        // system. A live one would leak, which is safe; say so in debug.
        debug_assert!(
            self.entries
                .iter()
                .all(|e| e.state.load(Ordering::Relaxed) == FREE),
            "clustered-object system dropped with live objects"
        );
    }
}

/// # Safety
/// `p` must be a live `*mut RootBox<I>` stored by this module.
unsafe fn root_ref<'a, I: ?Sized>(p: *mut ()) -> &'a dyn Root<I> {
    // SAFETY: the caller guarantees `p` is a live RootBox<I>.
    unsafe { &**(p as *const RootBox<I>) }
}

impl<'s, E: CpuEnv> Cpu<'s, E> {
    /// This CPU's index.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The system.
    pub fn system(&self) -> &'s System<E> {
        self.sys
    }

    /// Start a request (see the crate rules); it ends when dropped.
    #[inline]
    pub fn request(&self) -> Request<'_, E> {
        let slots = &self.sys.cpus[self.id];
        let local = slots.local.load(Ordering::Relaxed) as *const AtomicPtr<()>;
        let parity = slots.quiesce.enter();
        Request {
            sys: self.sys,
            slots,
            local,
            id: self.id,
            parity,
            _pinned: PhantomData,
        }
    }

    /// A quiescent point: advance this CPU's generation if it can.
    #[inline]
    pub fn quiescent(&self) {
        self.sys.cpus[self.id].quiesce.advance();
    }

    /// This CPU makes no more requests until [`online`](Self::online):
    /// waiters for quiescence stop waiting for it.
    pub fn offline(&self) {
        self.sys.cpus[self.id].quiesce.set_offline(true);
    }

    /// This CPU makes requests again.
    pub fn online(&self) {
        self.sys.cpus[self.id].quiesce.set_offline(false);
    }

    /// Hot-swap `obj` to `new_root`, moving its state in a format both
    /// roots support. Callers of `obj` never see a lost or repeated
    /// operation; new calls block only while the state moves.
    pub fn swap<I: ?Sized + 'static>(
        &self,
        obj: ObjRef<I>,
        new_root: RootBox<I>,
    ) -> Result<SwapStats, SwapError> {
        let e = &self.sys.entries[obj.idx as usize];
        let format = {
            let _g = e.lock.lock(&self.sys.env);
            if e.state.load(Ordering::SeqCst) != NORMAL {
                return Err(SwapError::Busy);
            }
            // SAFETY: NORMAL under the lock.
            let old = unsafe { root_ref::<I>(e.root.load(Ordering::Acquire)) };
            old.export_formats()
                .common(new_root.import_formats())
                .ok_or(SwapError::Incompatible {
                    from: old.name(),
                    to: new_root.name(),
                })?
        };
        self.sys.replace(self.id, obj, Some(format), move |old| {
            let Some(state) = old.export(format) else {
                return Err((old, SwapError::ImportRefused));
            };
            if new_root.import(format, state) {
                Ok(new_root)
            } else {
                Err((old, SwapError::ImportRefused))
            }
        })
    }

    /// Interpose on `obj`: replace its root by `wrap(old_root)`, which
    /// owns the old root and forwards to it (e.g. counting every call).
    pub fn interpose<I: ?Sized + 'static>(
        &self,
        obj: ObjRef<I>,
        wrap: impl FnOnce(RootBox<I>) -> RootBox<I>,
    ) -> Result<SwapStats, SwapError> {
        self.sys.replace(self.id, obj, None, |old| Ok(wrap(old)))
    }

    /// Destroy `obj` once no CPU can be using it; later calls through it
    /// panic.
    pub fn destroy<I: ?Sized + 'static>(&self, obj: ObjRef<I>) -> Result<(), SwapError> {
        let sys = self.sys;
        if sys.cpus[self.id].quiesce.depth() != 0 {
            return Err(SwapError::InsideRequest);
        }
        let e = &sys.entries[obj.idx as usize];
        let cached = {
            let _g = e.lock.lock(&sys.env);
            if e.state.load(Ordering::SeqCst) != NORMAL {
                return Err(SwapError::Busy);
            }
            e.state.store(DESTROYING, Ordering::SeqCst);
            sys.wait_installs(e);
            sys.reset_slots(obj.idx as usize)
        };
        sys.wait_quiescent(self.id, &cached);
        // SAFETY: DESTROYING, slots emptied and quiesced: no CPU can reach
        // the root any more; calls that arrive now panic before using it.
        drop(unsafe {
            Box::from_raw(e.root.swap(core::ptr::null_mut(), Ordering::AcqRel) as *mut RootBox<I>)
        });
        e.state.store(FREE, Ordering::SeqCst);
        sys.free.lock(&sys.env).push(obj.idx);
        sys.env.event(Event::Destroy { obj: obj.idx });
        Ok(())
    }
}

impl<E: CpuEnv> Request<'_, E> {
    /// The CPU this request runs on.
    #[inline]
    pub fn cpu(&self) -> usize {
        self.id
    }

    /// The system.
    pub fn system(&self) -> &System<E> {
        self.sys
    }
}

impl<E: CpuEnv> Drop for Request<'_, E> {
    #[inline]
    fn drop(&mut self) {
        self.slots.quiesce.exit(self.parity);
    }
}

impl<I: ?Sized + 'static> ObjRef<I> {
    /// Call `f` on the rep that serves this request's CPU: one load from
    /// the CPU's local table, or a miss into the root on first use.
    #[inline]
    pub fn call<E: CpuEnv, R>(self, req: &Request<'_, E>, f: impl FnOnce(&I) -> R) -> R {
        // SAFETY: the token made this CPU's local table (`capacity` slots)
        // before any request, and `idx` < `capacity` (from `create`).
        let p = unsafe { &*req.local.add(self.idx as usize) }.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a non-null local slot holds a rep of this object's
            // current root (only the miss path stores it, for an ObjRef<I>),
            // which is not dropped before this request ends (quiescence).
            return f(unsafe { (*(p as *const Rep<I>)).get() });
        }
        req.sys.call_miss(self, req, f)
    }
}
