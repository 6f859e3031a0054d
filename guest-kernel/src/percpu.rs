//! Per-CPU data, reached through the GS base: `gs:0` holds a pointer to
//! this CPU's [`PerCpu`], so finding it costs one load, and a field can be
//! read with one GS-relative load ([`node_id`]: this CPU's NUMA node, for
//! clustered objects and the frame allocator).
//!
//! The kernel has no preemption and no migration yet: code that reads its
//! CPU's data stays on that CPU until it returns, so a plain reference is
//! safe to hold. Fields written by other CPUs (the mailbox) are atomics.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use ::x86_64::registers::model_specific::GsBase;
use k42_abi::MAX_VCPUS;

use crate::arch::ArchPerCpu;
use crate::smp::CallRequest;

/// One CPU's kernel-private state.
#[repr(C, align(64))]
pub struct PerCpu {
    /// Points at this struct; read through `gs:0`.
    self_ptr: AtomicPtr<PerCpu>,
    /// This CPU's index (0 is the boot CPU).
    id: AtomicU32,
    /// State the architecture's entry paths reach at fixed offsets.
    pub arch: ArchPerCpu,
    /// This CPU's guest NUMA node (set from the topology at boot).
    node: AtomicU32,
    /// Work posted by another CPU (see `smp`).
    pub mailbox: AtomicPtr<CallRequest>,
    /// Timer interrupts taken on this CPU.
    pub timer_interrupts: AtomicU64,
    /// TSC when the last timer interrupt was taken.
    pub last_timer_tsc: AtomicU64,
    /// The deadline the timer was last armed for.
    pub timer_deadline: AtomicU64,
    /// Wakeup IPIs taken on this CPU.
    pub wakeups: AtomicU64,
    /// Set while this CPU is panicking, to stop recursive panics.
    pub panicking: AtomicBool,
    /// This CPU's trace buffer area (null until tracing is registered).
    pub trace_area: AtomicPtr<u8>,
}

impl PerCpu {
    const fn new() -> Self {
        Self {
            self_ptr: AtomicPtr::new(core::ptr::null_mut()),
            id: AtomicU32::new(0),
            arch: ArchPerCpu::new(),
            node: AtomicU32::new(0),
            mailbox: AtomicPtr::new(core::ptr::null_mut()),
            timer_interrupts: AtomicU64::new(0),
            last_timer_tsc: AtomicU64::new(0),
            timer_deadline: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
            panicking: AtomicBool::new(false),
            trace_area: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// This CPU's index.
    pub fn id(&self) -> u32 {
        self.id.load(Ordering::Relaxed)
    }

    /// Record this CPU's node (boot CPU, before the CPU starts).
    pub fn set_node(&self, node: u32) {
        self.node.store(node, Ordering::Relaxed);
    }
}

static PERCPU: [PerCpu; MAX_VCPUS] = [const { PerCpu::new() }; MAX_VCPUS];

/// Point this CPU's GS base at its `PerCpu` (after the GDT is loaded,
/// which clears the GS base).
pub fn init(cpu: u32) {
    let me = &PERCPU[cpu as usize];
    me.id.store(cpu, Ordering::Relaxed);
    me.self_ptr
        .store(me as *const PerCpu as *mut PerCpu, Ordering::Relaxed);
    GsBase::write(::x86_64::VirtAddr::from_ptr(me));
}

/// This CPU's per-CPU data.
#[inline]
pub fn current() -> &'static PerCpu {
    let p: *const PerCpu;
    // SAFETY: gs:0 is `self_ptr` of this CPU's PerCpu, set by `init` before
    // any caller runs; the struct is a static.
    unsafe {
        asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags));
        &*p
    }
}

/// The `AtomicU32` field at byte `OFFSET` of this CPU's [`PerCpu`],
/// read with one GS-relative load (no load of the struct's address first:
/// these are on every system call's path, where each emulated instruction
/// counts). Only for `offset_of!` an `AtomicU32` field.
#[inline(always)]
fn this_cpu_u32<const OFFSET: usize>() -> u32 {
    let value: u32;
    // SAFETY: GS points at this CPU's PerCpu (set by `init` before any
    // caller runs); the callers pass the offset of an AtomicU32 field, and
    // an aligned 32-bit load is a relaxed atomic load on x86.
    unsafe {
        asm!(
            "mov {:e}, gs:[{off}]",
            out(reg) value,
            off = const OFFSET,
            options(nostack, readonly, preserves_flags),
        );
    }
    value
}

/// This CPU's index.
#[inline]
pub fn cpu_id() -> u32 {
    this_cpu_u32::<{ core::mem::offset_of!(PerCpu, id) }>()
}

/// This CPU's NUMA node.
#[inline]
pub fn node_id() -> u32 {
    this_cpu_u32::<{ core::mem::offset_of!(PerCpu, node) }>()
}

/// Another CPU's per-CPU data.
pub fn of(cpu: u32) -> &'static PerCpu {
    &PERCPU[cpu as usize]
}

/// Proof that the holder stays on this CPU, not preempted by other
/// kernel code, until the token goes: what [`CpuLocal`] access needs.
///
/// The kernel has no preemption and no migration: kernel code runs from
/// a trap or a CPU's own boot path to its end on one CPU, and an
/// interrupt taken in the kernel never switches to other kernel code. So
/// today the token is free to get ([`NoPreempt::here`]); it is the one
/// place to turn into a guard that disables preemption if the kernel
/// ever becomes preemptible. It is not `Send`: it cannot move to another
/// CPU.
pub struct NoPreempt(core::marker::PhantomData<*const ()>);

impl NoPreempt {
    /// This CPU, until the token is dropped (see the type).
    #[inline(always)]
    pub fn here() -> Self {
        Self(core::marker::PhantomData)
    }
}

/// A value per CPU that only its own CPU touches ("only this CPU touches
/// it" state: the scheduler's current thread, the kernel-run program).
/// Like a `Cell` per CPU: values move in and out whole ([`CpuLocal::replace`],
/// [`CpuLocal::take`], [`CpuLocal::set`], [`CpuLocal::get_clone`]), no
/// reference into the slot is ever handed out, so nothing — not an
/// interrupt handler on the same CPU — can hold one while another access
/// runs. Each access needs a [`NoPreempt`]: the caller stays on this CPU.
pub struct CpuLocal<T> {
    slots: [core::cell::UnsafeCell<T>; MAX_VCPUS],
}

// SAFETY: slot `i` is touched only by CPU `i` (every access indexes by
// this CPU's id and runs on it, pinned by the NoPreempt token), and each
// access is one whole move in or out with no reference kept (see the
// type), so no two accesses to a slot overlap; values move between CPUs
// only by being sent (`T: Send`).
unsafe impl<T: Send> Sync for CpuLocal<T> {}

impl<T> CpuLocal<Option<T>> {
    /// Every CPU's value starts as `None`.
    pub const fn none() -> Self {
        Self {
            slots: [const { core::cell::UnsafeCell::new(None) }; MAX_VCPUS],
        }
    }

    /// Take this CPU's value, leaving `None`.
    #[inline]
    pub fn take(&self, proof: &NoPreempt) -> Option<T> {
        self.replace(proof, None)
    }
}

impl<U> CpuLocal<Option<alloc::sync::Arc<U>>> {
    /// Another reference to this CPU's `Arc`, if it has one.
    #[inline]
    pub fn get_clone(&self, proof: &NoPreempt) -> Option<alloc::sync::Arc<U>> {
        let slot = self.slot(proof);
        // SAFETY: this CPU's slot (see the Sync impl); the shared
        // reference lives only while `Arc::clone` runs, which increments
        // a count and calls no other code, so no other access to the slot
        // can overlap it.
        unsafe { (*slot).clone() }
    }
}

impl<T> CpuLocal<T> {
    #[inline(always)]
    fn slot(&self, _proof: &NoPreempt) -> *mut T {
        self.slots[cpu_id() as usize].get()
    }

    /// Put `value` in this CPU's slot; the old value.
    #[inline]
    pub fn replace(&self, proof: &NoPreempt, value: T) -> T {
        // SAFETY: this CPU's slot, with no reference into it live (see
        // the type): a plain move in and out.
        unsafe { core::ptr::replace(self.slot(proof), value) }
    }

    /// Put `value` in this CPU's slot, dropping the old value.
    #[inline]
    pub fn set(&self, proof: &NoPreempt, value: T) {
        drop(self.replace(proof, value));
    }
}
