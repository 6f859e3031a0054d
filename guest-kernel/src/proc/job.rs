//! Job control: a Linux process stopped by a stop signal (SIGSTOP,
//! SIGTSTP, SIGTTIN, SIGTTOU whose action is the default) until SIGCONT,
//! and what its parent learns of it (SIGCHLD, and `Wait` with
//! [`k42_abi::syscall::wait`] options).
//!
//! ```text
//! stop(p, sig): p.stopped; report STOPPED|sig; IPI every CPU
//!   each of p's threads, at its next trap's end (finish_trap) or when a
//!   CPU picks it from a queue, is parked in p's job instead of running:
//!   a stopped process takes no CPU (an idle vCPU halts)
//!   parent: a waiter with wait::STOPPED gets the report; SIGCHLD
//!   (CLD_STOPPED) unless its SIGCHLD action has SA_NOCLDSTOP
//! resume(p) (SIGCONT): threads back to the run queues; report CONTINUED;
//!   parent told as above (wait::CONTINUED, CLD_CONTINUED)
//! kill of a stopped process: its threads are queued so that they end
//! ```
//!
//! A thread blocked in the kernel (a pipe read, a wait) stays where it
//! is; when woken it is parked by the scheduler until the process
//! continues. Each change is reported to a wait once; a later change
//! replaces one not yet reported (as Linux's stopped/continued flags do).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use k42_abi::syscall::{status, wait};
use linux_raw_sys::general as g;

use super::sched::{self, Thread};
use super::{Process, lookup, signal};

/// A process's job-control state (under its own lock; taken after its
/// parent's `state` lock, never before it).
#[derive(Default)]
pub struct Job {
    /// The signal that stopped it, while it is stopped.
    stopped_by: Option<u32>,
    /// Its threads parked while it is stopped.
    parked: Vec<Arc<Thread>>,
    /// A change not yet reported by a wait: `status::STOPPED | sig` or
    /// `status::CONTINUED`.
    report: Option<u64>,
}

/// Processes stopped now: the scheduler's check costs one load while
/// there are none.
static STOPPED_PROCESSES: AtomicU32 = AtomicU32::new(0);

/// Whether any process is stopped.
pub fn any_stopped() -> bool {
    STOPPED_PROCESSES.load(Ordering::Acquire) != 0
}

/// The `Wait` option that reports status word `word` (0 for an end).
fn option_for(word: u64) -> u64 {
    match word & !0xff {
        status::STOPPED => wait::STOPPED,
        status::CONTINUED => wait::CONTINUED,
        _ => 0,
    }
}

/// Stop `p` by signal `sig` (nothing if it is stopped already or
/// killed).
pub fn stop(p: &Arc<Process>, sig: u32) {
    {
        let mut j = p.job.lock();
        if j.stopped_by.is_some() || p.killed() {
            return;
        }
        j.stopped_by = Some(sig);
        j.report = Some(status::STOPPED | u64::from(sig));
        p.stopped.store(true, Ordering::Release);
        STOPPED_PROCESSES.fetch_add(1, Ordering::AcqRel);
    }
    // Its threads running on other CPUs park at the interrupt.
    sched::poke_all();
    tell_parent(p, status::STOPPED | u64::from(sig), g::CLD_STOPPED, sig);
}

/// Continue `p` if it is stopped (SIGCONT); whether it was.
pub fn resume(p: &Arc<Process>) -> bool {
    let threads = {
        let mut j = p.job.lock();
        if j.stopped_by.take().is_none() {
            return false;
        }
        p.stopped.store(false, Ordering::Release);
        STOPPED_PROCESSES.fetch_sub(1, Ordering::AcqRel);
        j.report = Some(status::CONTINUED);
        core::mem::take(&mut j.parked)
    };
    for t in threads {
        sched::enqueue(t);
    }
    tell_parent(p, status::CONTINUED, g::CLD_CONTINUED, g::SIGCONT);
    true
}

/// `p` was killed: its parked threads are queued so that they end.
pub fn killed(p: &Process) {
    let threads = {
        let mut j = p.job.lock();
        if j.stopped_by.take().is_some() {
            p.stopped.store(false, Ordering::Release);
            STOPPED_PROCESSES.fetch_sub(1, Ordering::AcqRel);
        }
        j.report = None;
        core::mem::take(&mut j.parked)
    };
    for t in threads {
        sched::enqueue(t);
    }
}

/// Park thread `t` if its process is stopped; otherwise (or if it
/// continued or was killed meanwhile) give it back to be run.
pub fn park_if_stopped(t: Arc<Thread>) -> Option<Arc<Thread>> {
    if !t.process.stopped.load(Ordering::Acquire) {
        return Some(t);
    }
    let p = t.process.clone();
    let mut j = p.job.lock();
    if j.stopped_by.is_none() || p.killed() {
        drop(j);
        return Some(t);
    }
    j.parked.push(t);
    None
}

/// A change (`word`) of child `c` its parent's wait with `options` for
/// `want` (0: any child) reports, taken.
pub fn take_report(c: &Process, want: u32, options: u64) -> Option<u64> {
    if want != 0 && want != c.pid {
        return None;
    }
    let mut j = c.job.lock();
    let word = j.report.filter(|&w| options & option_for(w) != 0)?;
    j.report = None;
    Some(word)
}

/// Tell `child`'s parent of change `word`: a waiter that wants it gets
/// it, and SIGCHLD with `code` and `child_status`.
fn tell_parent(child: &Arc<Process>, word: u64, code: u32, child_status: u32) {
    let parent = child.parent.load(Ordering::Acquire);
    let Some(pp) = (parent != 0).then(|| lookup(parent)).flatten() else {
        return;
    };
    let woken = {
        let mut s = pp.state.lock();
        let options = s.wait_options;
        match s.waiter.take() {
            Some((t, want)) => match take_report(child, want, options) {
                Some(w) => Some((t, w)),
                None => {
                    s.waiter = Some((t, want));
                    None
                }
            },
            None => None,
        }
    };
    debug_assert!(option_for(word) != 0);
    // SIGCHLD before the waiter runs: a parent that waited sees it pending.
    signal::send_child_changed(&pp, code, child.pid, child_status);
    if let Some((t, w)) = woken {
        t.set_result(u64::from(child.pid) << 16 | w);
        sched::enqueue(t);
    }
}
