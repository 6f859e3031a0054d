//! Linux signals, the kernel's part: each Linux process's signal page
//! (one frame the process owns, mapped at `LINUX_SIGNALS` and shared with
//! its personality), sending a signal, and interrupting a blocking call.
//!
//! The personality delivers signals (handlers, masks, `rt_sigreturn`) in
//! user mode at the end of each Linux system call; the kernel only
//! decides what a sent signal does, from the words the personality keeps
//! in the page:
//!
//! ```text
//! Signal(pid, sig) ─► SIGKILL, or not caught and its default ends the
//!                     process and it is not blocked ─► end it (SIGNALED)
//!                  ─► ignored (SIG_IGN, or default ignore/stop) ─► drop
//!                  ─► else pending |= bit; not blocked ─► interrupt:
//!                     a thread parked in a pipe call or SignalWait makes
//!                     its call again (which now sees the signal), one in
//!                     Wait returns Interrupted
//! ```
//!
//! A blocking call checks for a deliverable signal under the lock that
//! parks it, and a sender sets the bit before taking that lock, so no
//! wake-up is lost.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::linux::{DefaultAction, MAX_SIGNAL, SignalPage, default_action, signal_bit};
use k42_abi::syscall::{SyscallError, status};
use linux_raw_sys::general::SIGKILL;

use super::{Process, sched, wake_parked};
use crate::arch::TrapFrame;
use crate::mm::pages;

/// A signal page's words, as [`SignalPage`] lays them out.
struct Words<'a> {
    pending: &'a AtomicU64,
    blocked: &'a AtomicU64,
    caught: &'a AtomicU64,
    ignored: &'a AtomicU64,
    /// `[start, end, fixup]` of the personality's user-access routines.
    uaccess: [&'a AtomicU64; 3],
}

/// Run `f` on signal frame `pa` (held by the caller).
fn on_frame<R>(pa: u64, f: impl FnOnce(&Words) -> R) -> R {
    use core::mem::offset_of;
    pages::with_frame_words(pa, |w| {
        f(&Words {
            pending: &w[offset_of!(SignalPage, pending) / 8],
            blocked: &w[offset_of!(SignalPage, blocked) / 8],
            caught: &w[offset_of!(SignalPage, caught) / 8],
            ignored: &w[offset_of!(SignalPage, ignored) / 8],
            uaccess: core::array::from_fn(|i| &w[offset_of!(SignalPage, uaccess) / 8 + i]),
        })
    })
}

/// Run `f` on `p`'s signal page; `None` when `p` runs no Linux program.
/// The frame is held while the lock is (see [`process_ended`]).
fn with_page<R>(p: &Process, f: impl FnOnce(&Words) -> R) -> Option<R> {
    let pa = p.signals.lock();
    (*pa != 0).then(|| on_frame(*pa, f))
}

/// `p`'s signal page for a Linux exec: a new zeroed frame if it has
/// none yet. Returns the frame.
pub fn page_for_exec(p: &Process) -> Result<u64, SyscallError> {
    let mut pa = p.signals.lock();
    if *pa == 0 {
        *pa = pages::alloc_zeroed().ok_or(SyscallError::NoMemory)?;
    }
    Ok(*pa)
}

/// `p` exec'd a Linux program: handlers do not survive exec (pending
/// signals, the mask and ignored signals do).
pub fn exec_done(p: &Process) {
    with_page(p, |s| s.caught.store(0, Ordering::Release));
}

/// A forked child's signal page: a copy of `parent`'s with nothing
/// pending (`None` when the parent has none).
pub fn page_for_child(parent: &Process) -> Result<Option<u64>, SyscallError> {
    let Some(words) = with_page(parent, |s| {
        [
            s.blocked.load(Ordering::Acquire),
            s.caught.load(Ordering::Acquire),
            s.ignored.load(Ordering::Acquire),
            s.uaccess[0].load(Ordering::Acquire),
            s.uaccess[1].load(Ordering::Acquire),
            s.uaccess[2].load(Ordering::Acquire),
        ]
    }) else {
        return Ok(None);
    };
    let pa = pages::alloc_zeroed().ok_or(SyscallError::NoMemory)?;
    on_frame(pa, |s| {
        s.blocked.store(words[0], Ordering::Relaxed);
        s.caught.store(words[1], Ordering::Relaxed);
        s.ignored.store(words[2], Ordering::Relaxed);
        for (w, &v) in s.uaccess.iter().zip(&words[3..]) {
            w.store(v, Ordering::Relaxed);
        }
    });
    Ok(Some(pa))
}

/// Where `p` resumes after a fault it cannot resolve taken at `rip`:
/// the fixup of its personality's user-access routines when `rip` is
/// among them (`SignalPage::uaccess`, Linux's exception table), so that
/// the Linux call the personality serves fails with EFAULT; `None`
/// otherwise (the fault ends the process).
pub fn uaccess_fixup(p: &Process, rip: u64) -> Option<u64> {
    with_page(p, |s| {
        let [start, end, fixup] = s.uaccess.map(|w| w.load(Ordering::Acquire));
        (start <= rip && rip < end).then_some(fixup)
    })
    .flatten()
}

/// `p` ended: let go of its signal page.
pub fn process_ended(p: &Process) {
    let pa = core::mem::take(&mut *p.signals.lock());
    if pa != 0 {
        super::fcm::release(pa);
    }
}

/// Whether `p` has a pending signal it does not block.
pub fn deliverable(p: &Process) -> bool {
    with_page(p, |s| {
        s.pending.load(Ordering::Acquire) & !s.blocked.load(Ordering::Acquire) != 0
    })
    .unwrap_or(false)
}

/// What a sent signal does.
enum Outcome {
    End,
    Drop,
    Pend { interrupt: bool },
}

/// Send Linux signal `sig` to `target` (see the module doc).
pub fn send(target: &Arc<Process>, sig: u32) -> Result<(), SyscallError> {
    if sig > MAX_SIGNAL {
        return Err(SyscallError::InvalidArgument);
    }
    if sig == 0 {
        // Only whether it could be sent one.
        return with_page(target, |_| ()).ok_or(SyscallError::NotPermitted);
    }
    let bit = signal_bit(sig);
    let outcome = with_page(target, |s| {
        if sig == SIGKILL {
            return Outcome::End;
        }
        let caught = s.caught.load(Ordering::Acquire) & bit != 0;
        let blocked = s.blocked.load(Ordering::Acquire) & bit != 0;
        if !caught {
            if s.ignored.load(Ordering::Acquire) & bit != 0 {
                return Outcome::Drop;
            }
            match default_action(sig) {
                DefaultAction::Ignore | DefaultAction::Stop => return Outcome::Drop,
                DefaultAction::Terminate if !blocked => return Outcome::End,
                DefaultAction::Terminate => {}
            }
        }
        s.pending.fetch_or(bit, Ordering::AcqRel);
        Outcome::Pend {
            interrupt: !blocked,
        }
    })
    .ok_or(SyscallError::NotPermitted)?;
    match outcome {
        Outcome::End => super::terminate(target, status::SIGNALED | u64::from(sig)),
        Outcome::Drop | Outcome::Pend { interrupt: false } => {}
        Outcome::Pend { interrupt: true } => interrupt(target),
    }
    Ok(())
}

/// Send `sig` to every Linux process of group `pgid` (the others are
/// not signalled); `NoSuchProcess` when the group has none.
pub fn send_group(pgid: u32, sig: u32) -> Result<(), SyscallError> {
    let members = super::group(pgid);
    let mut any = false;
    for p in &members {
        if p.killed() {
            continue;
        }
        match send(p, sig) {
            Ok(()) => any = true,
            Err(SyscallError::NotPermitted) => {}
            Err(e) => return Err(e),
        }
    }
    if any {
        Ok(())
    } else {
        Err(SyscallError::NoSuchProcess)
    }
}

/// A deliverable signal is pending for `p`: end its blocking call.
fn interrupt(p: &Process) {
    wake_parked(p);
    super::futex::release_process(p);
    let waiter = p.state.lock().waiter.take();
    if let Some((t, _)) = waiter {
        t.set_result(SyscallError::Interrupted as i64 as u64);
        sched::enqueue(t);
    }
}

/// `SignalWait` for thread `t`: `Ok(true)` when a deliverable signal is
/// pending; `Ok(false)` when the thread parked (its call to be made again
/// when a signal comes; this CPU switched to another thread).
pub fn wait(t: &Arc<sched::Thread>, frame: &mut TrapFrame) -> Result<bool, SyscallError> {
    let p = &t.process;
    let mut slot = p.parked.lock();
    match with_page(p, |s| {
        s.pending.load(Ordering::Acquire) & !s.blocked.load(Ordering::Acquire) != 0
    }) {
        None => return Err(SyscallError::NotPermitted),
        Some(true) => return Ok(true),
        Some(false) => {}
    }
    if slot.is_some() {
        return Err(SyscallError::WouldBlock);
    }
    frame.rip -= k42_abi::syscall::SYSCALL_SITE.len() as u64;
    *slot = Some(sched::take_current(frame));
    drop(slot);
    sched::switch_to_next(frame);
    Ok(false)
}
