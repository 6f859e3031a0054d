//! Multiprocessor support: bringing the other CPUs online, waiting without
//! spinning, running work on other CPUs, and barriers.
//!
//! Waiting is always "check with interrupts masked, then `sti; hlt`": the
//! CPU costs the host nothing while it waits, and whoever changes the
//! condition sends a wakeup IPI. This is what lets 64 or 255 vCPUs share
//! two host cores.
//!
//! Cross-CPU calls: each CPU has a one-slot mailbox. A requester puts a
//! [`CallRequest`] in each target's mailbox, sends wakeup IPIs, and waits
//! until the request's pending count drops to zero; the last target to
//! finish wakes the requester. Targets run the work from their idle loop
//! with interrupts enabled, not in the IPI handler.

use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use k42_abi::Hypercall;
use k42_abi::trace::ev;

use crate::arch::{self, VECTOR_WAKEUP};
use crate::{percpu, trace};

static ONLINE: AtomicU32 = AtomicU32::new(0);
static NCPUS: AtomicU32 = AtomicU32::new(1);

/// Number of CPUs the VM has (all of them come online at boot).
pub fn ncpus() -> u32 {
    NCPUS.load(Ordering::Relaxed)
}

/// CPUs that have finished their bring-up.
pub fn online() -> u32 {
    ONLINE.load(Ordering::Acquire)
}

/// Install the wakeup handler and record the CPU count (boot CPU, once).
pub fn init(ncpus: u32) {
    NCPUS.store(ncpus, Ordering::Relaxed);
    arch::set_handler(VECTOR_WAKEUP, |_| {
        crate::mm::tlb::service();
        percpu::current().wakeups.fetch_add(1, Ordering::Relaxed);
        trace::log(ev::ipi::wakeup());
    });
}

/// Ask k42vmm to start every application processor, all at once.
pub fn start_aps() {
    let r = arch::hypercall(Hypercall::start_aps());
    assert!(r == 0, "the StartAps hypercall failed with {r}");
}

/// This CPU has finished its bring-up: tell k42vmm and count it; the last
/// CPU to arrive wakes the boot CPU.
pub fn mark_online() {
    let me = percpu::cpu_id();
    trace::log(ev::boot::cpu_online(me as u64));
    let r = arch::hypercall(Hypercall::cpu_online(me));
    assert!(r == 0, "the CpuOnline hypercall failed with {r}");
    if ONLINE.fetch_add(1, Ordering::AcqRel) + 1 == ncpus() && me != 0 {
        arch::send_ipi(0, VECTOR_WAKEUP);
    }
}

/// Halt until `cond` holds. Must be called with interrupts enabled (any
/// normal kernel context); returns with them enabled.
pub fn wait_until(mut cond: impl FnMut() -> bool) {
    loop {
        arch::disable_interrupts();
        if cond() {
            arch::enable_interrupts();
            return;
        }
        halt();
    }
}

/// Halt until an interrupt arrives (called with interrupts masked, after
/// the last check; returns with them enabled), logging the idle period.
#[inline]
fn halt() {
    trace::log(ev::idle::enter());
    arch::enable_and_halt();
    trace::log(ev::idle::exit());
}

/// Work posted to other CPUs; lives on the requester's stack until every
/// target has run it.
pub struct CallRequest {
    func: *const (dyn Fn(u32) + Sync),
    pending: AtomicU32,
    requester: u32,
}

/// Run `f(cpu)` on every CPU (this one included) and return when all have
/// finished.
pub fn run_on_all<F: Fn(u32) + Sync>(f: F) {
    run_on_first(ncpus(), f);
}

/// Run `f(cpu)` on CPUs `0..n` (which must include this one) and return
/// when all have finished.
pub fn run_on_first<F: Fn(u32) + Sync>(n: u32, f: F) {
    let n = n.min(ncpus());
    let me = percpu::cpu_id();
    assert!(me < n, "run_on_first({n}) from CPU {me}");
    let func: &(dyn Fn(u32) + Sync) = &f;
    // SAFETY: only the lifetime is erased; `f` outlives every use because
    // this function waits until `pending` reaches zero, i.e. until every
    // target has returned from it, before `f` goes out of scope.
    let func: *const (dyn Fn(u32) + Sync) = unsafe { core::mem::transmute(func) };
    let req = CallRequest {
        func,
        pending: AtomicU32::new(n - 1),
        requester: me,
    };
    let req_ptr = &req as *const CallRequest as *mut CallRequest;
    for cpu in (0..n).filter(|&c| c != me) {
        let slot: &AtomicPtr<CallRequest> = &percpu::of(cpu).mailbox;
        wait_until(|| {
            slot.compare_exchange(
                core::ptr::null_mut(),
                req_ptr,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        });
    }
    if n == ncpus() && n > 1 {
        arch::broadcast_ipi(VECTOR_WAKEUP);
    } else {
        for cpu in (0..n).filter(|&c| c != me) {
            arch::send_ipi(cpu, VECTOR_WAKEUP);
        }
    }
    f(me);
    wait_until(|| {
        // A quiescent point while waiting (safe even inside a request:
        // the two-generation scheme cannot advance past a live one), so
        // that a CPU destroying an object used here is not held up.
        crate::cobj::quiescent();
        req.pending.load(Ordering::Acquire) == 0
    });
}

/// Run a request taken from this CPU's mailbox.
fn run_request(req: *const CallRequest) {
    // SAFETY: the requester keeps the request alive until `pending`
    // reaches zero, which happens only after this CPU's decrement below.
    let req = unsafe { &*req };
    let requester = req.requester;
    // SAFETY: see run_on_all: the closure outlives this call.
    (unsafe { &*req.func })(percpu::cpu_id());
    if req.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
        arch::send_ipi(requester, VECTOR_WAKEUP);
    }
}

/// The idle loop of an application processor: serve the mailbox, halt
/// otherwise.
pub fn idle_loop() -> ! {
    let me = percpu::current();
    loop {
        arch::disable_interrupts();
        let req = me.mailbox.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !req.is_null() {
            arch::enable_interrupts();
            run_request(req);
            continue;
        }
        halt();
        // Woken: outside any request, so a clustered-object quiescent
        // point (a swap or destruction may be waiting for this CPU).
        crate::cobj::quiescent();
    }
}

/// A reusable barrier for `n` CPUs; waiters halt, the last arrival wakes
/// them all with one broadcast IPI.
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

    /// Wait until `n` CPUs have called `wait` (for this generation).
    pub fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::AcqRel);
            if self.n > 1 {
                arch::broadcast_ipi(VECTOR_WAKEUP);
            }
        } else {
            wait_until(|| self.generation.load(Ordering::Acquire) != generation);
        }
    }
}
