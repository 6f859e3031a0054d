//! Tracing Linux calls: the `linux` trace class (`k42vmm trace strace`).
//!
//! The personality cannot write the per-CPU trace buffers itself, as a
//! kernel-run program does (`k42_rt::trace::Tracer`): a process's thread
//! may be moved to another CPU at any preemption, between choosing a
//! CPU's buffers and committing its event, and those buffers' writers
//! (the kernel on that CPU) use unlocked read-modify-writes, which a
//! writer on another CPU would race. So an event goes through the kernel
//! (`LinuxTrace`, which also stamps the caller's pid, right after a fork
//! too) — but only while the class is on: the kernel maps the trace
//! region's header page read-only in every Linux process and says where
//! in the information page (`k42_abi::linux::INFO_TRACE_VIEW`), and each
//! call first loads the mask word there. With the class off, or tracing
//! not registered (the mask is then a zero word of our own), that load
//! is all a call pays.

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use k42_abi::linux::INFO_TRACE_VIEW;
use k42_abi::syscall::ProgramInfo;
use k42_abi::trace::{MASK_OFFSET, class, ev};
use k42_rt::sys::raw;

/// The mask word when tracing is not registered.
static NO_CLASSES: AtomicU64 = AtomicU64::new(0);
/// The mask word this process tests: the region header's, or
/// [`NO_CLASSES`].
static MASK: AtomicPtr<AtomicU64> = AtomicPtr::new(&NO_CLASSES as *const AtomicU64 as *mut _);

/// Find the mask word from the information page (at every start: exec
/// gives a new address space; a forked child keeps the parent's).
pub fn start(info: &ProgramInfo) {
    let view = info.args[INFO_TRACE_VIEW];
    if view != 0 {
        MASK.store((view + MASK_OFFSET) as *mut AtomicU64, Ordering::Relaxed);
    }
}

/// Whether Linux calls are being traced.
#[inline(always)]
fn on() -> bool {
    // SAFETY: MASK points at a static, or at the mask word of the header
    // page the kernel maps read-only for the life of this address space.
    let mask = unsafe { &*MASK.load(Ordering::Relaxed) };
    mask.load(Ordering::Relaxed) & class::linux.bit() != 0
}

/// Log event `minor` of the `linux` class with `words` (its fields after
/// the pid).
#[cold]
fn log<const N: usize>(minor: u16, words: [u64; N]) {
    raw::LinuxTrace::call([u64::from(minor), words.as_ptr() as u64]);
}

/// The minor numbers of the catalogue's `linux` events.
const ENTER: u16 = minor_of(ev::linux::enter(0, 0, 0, 0, 0, 0, 0, 0).id);
const EXIT: u16 = minor_of(ev::linux::exit(0, 0, 0).id);
const SIGNAL: u16 = minor_of(ev::linux::signal(0, 0, 0).id);

const fn minor_of(id: u16) -> u16 {
    id & ((1 << k42_abi::trace::MINOR_BITS) - 1)
}

/// Call `nr` starts with arguments `a`.
#[inline(always)]
pub fn enter(nr: u64, a: &[u64; 6]) {
    if on() {
        log(ENTER, [nr, a[0], a[1], a[2], a[3], a[4], a[5]]);
    }
}

/// Call `nr` returns `result` (the raw `rax`: an errno negated).
#[inline(always)]
pub fn exit(nr: u64, result: u64) {
    if on() {
        log(EXIT, [nr, result]);
    }
}

/// Signal `sig` is delivered to its handler at `handler`.
#[inline(always)]
pub fn signal(sig: u32, handler: u64) {
    if on() {
        log(SIGNAL, [u64::from(sig), handler]);
    }
}
