//! Linux futexes: wait queues keyed by (address space, user address), in
//! a fixed table of hashed buckets, each behind its own lock.
//!
//! ```text
//! FutexWait(addr, val, bits, timeout) ─► bucket lock; read the word
//!    (under the lock: a waker stores, then takes the lock to wake, so it
//!    finds this waiter or this read sees its store) ─► differs: WouldBlock
//!    ─► a signal is deliverable: Interrupted ─► else park in the bucket
//! FutexWake(addr, n, bits) ─► bucket lock; up to n matching waiters get
//!    0 and are queued to run
//! a deadline passes ─► [`expire`] (every CPU's timer tick from user
//!    mode and idle wake-up) gives the waiter TimedOut
//! a signal or a kill ─► [`release_process`] ends every wait of it
//! ```
//!
//! A waiter is a parked thread (its registers saved, off every CPU):
//! idle CPUs halt, nothing spins. The earliest deadline is kept in one
//! word that the scheduler arms the timer from.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::syscall::SyscallError;

use super::Process;
use super::memory::Memory;
use super::sched::{self, Thread};
use crate::arch::{self, TrapFrame};
use crate::mm::user;
use crate::sync::SpinLock;

/// Buckets in the table (a power of two).
const BUCKETS: usize = 64;

/// A thread blocked in `FutexWait`.
struct Waiter {
    /// Its address space (the key's first half; compared, never
    /// dereferenced).
    space: usize,
    addr: u64,
    bitset: u32,
    /// TSC deadline (`u64::MAX`: none).
    deadline: u64,
    thread: Arc<Thread>,
}

static QUEUES: [SpinLock<Vec<Waiter>>; BUCKETS] = [const { SpinLock::new(Vec::new()) }; BUCKETS];

/// Waiters in all buckets (a release with none skips the scan).
static WAITERS: AtomicU64 = AtomicU64::new(0);

/// The earliest deadline of a waiter (`u64::MAX`: none); may be early
/// (a waiter woken before it), never late.
static EARLIEST: AtomicU64 = AtomicU64::new(u64::MAX);

fn space_key(mem: &Memory) -> usize {
    mem as *const Memory as usize
}

fn bucket(space: usize, addr: u64) -> &'static SpinLock<Vec<Waiter>> {
    let h = (addr >> 2) ^ (space as u64 >> 4);
    let h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58;
    &QUEUES[h as usize % BUCKETS]
}

/// `FutexWait` for thread `t`: `Ok(())` when it parked (this CPU
/// switched to another thread; the waker sets its result).
pub fn wait(
    t: &Arc<Thread>,
    addr: u64,
    val: u32,
    bitset: u32,
    timeout_ns: u64,
    frame: &mut TrapFrame,
) -> Result<(), SyscallError> {
    if !addr.is_multiple_of(4) || bitset == 0 {
        return Err(SyscallError::InvalidArgument);
    }
    let deadline = match timeout_ns {
        u64::MAX => u64::MAX,
        ns => arch::read_tsc().saturating_add(crate::time::ns_to_ticks(ns)),
    };
    let mem = t.memory();
    let space = space_key(mem);
    let mut q = bucket(space, addr).lock();
    // The word is read under the bucket's lock (see the module doc).
    let now: u32 = user::read_val(mem, addr)?;
    if now != val {
        return Err(SyscallError::WouldBlock);
    }
    if super::signal::deliverable(&t.process) || t.process.killed() {
        return Err(SyscallError::Interrupted);
    }
    if timeout_ns == 0 {
        return Err(SyscallError::TimedOut);
    }
    // Woken by `wake`: 0.
    frame.rax = 0;
    let me = sched::take_current(frame);
    WAITERS.fetch_add(1, Ordering::AcqRel);
    q.push(Waiter {
        space,
        addr,
        bitset,
        deadline,
        thread: me,
    });
    if deadline != u64::MAX {
        EARLIEST.fetch_min(deadline, Ordering::AcqRel);
    }
    drop(q);
    sched::switch_to_next(frame);
    Ok(())
}

/// `FutexWake` in `mem`: wake at most `n` waiters on `addr` whose bit
/// set meets `bitset`; how many were woken.
pub fn wake(mem: &Memory, addr: u64, n: u64, bitset: u32) -> Result<u64, SyscallError> {
    if !addr.is_multiple_of(4) || bitset == 0 {
        return Err(SyscallError::InvalidArgument);
    }
    let space = space_key(mem);
    let mut woken = Vec::new();
    {
        let mut q = bucket(space, addr).lock();
        let mut i = 0;
        while i < q.len() && (woken.len() as u64) < n {
            let w = &q[i];
            if w.space == space && w.addr == addr && w.bitset & bitset != 0 {
                woken.push(q.remove(i).thread);
            } else {
                i += 1;
            }
        }
    }
    let count = woken.len() as u64;
    WAITERS.fetch_sub(count, Ordering::AcqRel);
    for t in woken {
        sched::enqueue(t);
    }
    Ok(count)
}

/// Take out of every bucket the waiters `take` picks, setting each one's
/// result to what `take` returns; queue them to run.
fn release(mut take: impl FnMut(&Waiter) -> Option<u64>) {
    if WAITERS.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut freed = Vec::new();
    let mut earliest = u64::MAX;
    for b in &QUEUES {
        let mut q = b.lock();
        let mut i = 0;
        while i < q.len() {
            match take(&q[i]) {
                Some(result) => {
                    let w = q.swap_remove(i);
                    WAITERS.fetch_sub(1, Ordering::AcqRel);
                    w.thread.set_result(result);
                    freed.push(w.thread);
                }
                None => {
                    earliest = earliest.min(q[i].deadline);
                    i += 1;
                }
            }
        }
    }
    EARLIEST.fetch_min(earliest, Ordering::AcqRel);
    for t in freed {
        sched::enqueue(t);
    }
}

/// The earliest deadline of a waiter, if any (for the timer).
pub fn next_deadline() -> Option<u64> {
    let d = EARLIEST.load(Ordering::Acquire);
    (d != u64::MAX).then_some(d)
}

/// Give every waiter whose deadline has passed `TimedOut` (called on
/// timer ticks and idle wake-ups; cheap when none is due).
pub fn expire() {
    let now = arch::read_tsc();
    if EARLIEST.load(Ordering::Acquire) > now {
        return;
    }
    EARLIEST.store(u64::MAX, Ordering::Release);
    release(|w| (w.deadline <= now).then_some(SyscallError::TimedOut as i64 as u64));
}

/// End every futex wait of `p`'s threads (a signal for it, or it was
/// killed): they return `Interrupted`.
pub fn release_process(p: &Process) {
    release(|w| {
        core::ptr::eq(Arc::as_ptr(&w.thread.process), p)
            .then_some(SyscallError::Interrupted as i64 as u64)
    });
}
