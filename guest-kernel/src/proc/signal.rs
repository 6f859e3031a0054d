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
//! Signal(pid, sig) ─► SIGCONT: pending stop signals dropped; a stopped
//!                     process continues (job.rs), whatever its action
//!                  ─► a stop signal: a pending SIGCONT dropped
//!                  ─► SIGKILL, or not caught and its default ends the
//!                     process and it is not blocked ─► end it (SIGNALED)
//!                  ─► SIGSTOP, or not caught and its default stops the
//!                     process and it is not blocked ─► stop it (job.rs)
//!                  ─► ignored (SIG_IGN, or default ignore) ─► drop
//!                  ─► else pending |= bit; not blocked ─► interrupt:
//!                     a thread parked in a pipe call or SignalWait makes
//!                     its call again (which now sees the signal), one in
//!                     Wait returns Interrupted
//! ```
//!
//! A fault the program takes that the kernel cannot resolve (a page fault
//! outside its regions or against their protection, a general protection
//! fault, an invalid opcode, a divide error) ends the process, unless the
//! program catches its signal (SIGSEGV, SIGILL, SIGFPE) and does not block
//! it: then the kernel writes the fault into the page and resumes the
//! program at the personality's fault entry ([`fault_to_handler`]), which
//! delivers it to the handler with the fault's `siginfo`.
//!
//! A blocking call checks for a deliverable signal under the lock that
//! parks it, and a sender sets the bit before taking that lock, so no
//! wake-up is lost.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::linux::{
    DefaultAction, FAULT_ADDR, FAULT_CODE, FAULT_RIP, FAULT_SIGNAL, MAX_SIGNAL, PERSONALITY_BASE,
    SIGNAL_NOCLDSTOP, SignalPage, default_action, signal_bit,
};
use k42_abi::syscall::{SyscallError, status};
use k42_abi::trace::USER_VIEW_BASE;
use linux_raw_sys::general::{self as g, SIGKILL};

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
    flags: &'a AtomicU64,
    sigchld: [&'a AtomicU64; 2],
    /// The personality's fault entry, and the fault to deliver.
    fault_entry: &'a AtomicU64,
    fault: [&'a AtomicU64; 4],
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
            flags: &w[offset_of!(SignalPage, flags) / 8],
            sigchld: core::array::from_fn(|i| &w[offset_of!(SignalPage, sigchld) / 8 + i]),
            fault_entry: &w[offset_of!(SignalPage, fault_entry) / 8],
            fault: core::array::from_fn(|i| &w[offset_of!(SignalPage, fault) / 8 + i]),
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
    with_page(p, |s| {
        s.caught.store(0, Ordering::Release);
        s.flags.store(0, Ordering::Release);
    });
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
            s.flags.load(Ordering::Acquire),
            s.fault_entry.load(Ordering::Acquire),
        ]
    }) else {
        return Ok(None);
    };
    let pa = pages::alloc_zeroed().ok_or(SyscallError::NoMemory)?;
    on_frame(pa, |s| {
        s.blocked.store(words[0], Ordering::Relaxed);
        s.caught.store(words[1], Ordering::Relaxed);
        s.ignored.store(words[2], Ordering::Relaxed);
        for (w, &v) in s.uaccess.iter().zip(&words[3..6]) {
            w.store(v, Ordering::Relaxed);
        }
        s.flags.store(words[6], Ordering::Relaxed);
        s.fault_entry.store(words[7], Ordering::Relaxed);
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

/// A fault the kernel cannot resolve, taken by `p`'s program at
/// `frame.rip`, that raises Linux signal `sig` with `si_code` `code` and
/// `si_addr` `addr`: when the program catches `sig` and does not block
/// it, and the personality has a fault entry, record the fault in the
/// signal page and resume the program there (every other register as it
/// was); true if so. A fault inside the personality is never the
/// program's to catch.
pub fn fault_to_handler(
    p: &Process,
    frame: &mut TrapFrame,
    sig: u32,
    code: u32,
    addr: u64,
) -> bool {
    if (PERSONALITY_BASE..USER_VIEW_BASE).contains(&frame.rip) {
        return false;
    }
    with_page(p, |s| {
        let bit = signal_bit(sig);
        let entry = s.fault_entry.load(Ordering::Acquire);
        if entry == 0
            || s.caught.load(Ordering::Acquire) & bit == 0
            || s.blocked.load(Ordering::Acquire) & bit != 0
        {
            return false;
        }
        s.fault[FAULT_SIGNAL].store(u64::from(sig), Ordering::Relaxed);
        s.fault[FAULT_CODE].store(u64::from(code), Ordering::Relaxed);
        s.fault[FAULT_ADDR].store(addr, Ordering::Relaxed);
        s.fault[FAULT_RIP].store(frame.rip, Ordering::Release);
        frame.rip = entry;
        true
    })
    .unwrap_or(false)
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
    Stop,
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
        if sig == g::SIGCONT {
            s.pending.fetch_and(!STOP_SIGNALS, Ordering::AcqRel);
        } else if STOP_SIGNALS & bit != 0 {
            s.pending
                .fetch_and(!signal_bit(g::SIGCONT), Ordering::AcqRel);
        }
        if sig == g::SIGSTOP {
            return Outcome::Stop;
        }
        let caught = s.caught.load(Ordering::Acquire) & bit != 0;
        let blocked = s.blocked.load(Ordering::Acquire) & bit != 0;
        if !caught {
            if s.ignored.load(Ordering::Acquire) & bit != 0 {
                return Outcome::Drop;
            }
            match default_action(sig) {
                DefaultAction::Ignore => return Outcome::Drop,
                DefaultAction::Terminate if !blocked => return Outcome::End,
                DefaultAction::Stop if !blocked => return Outcome::Stop,
                DefaultAction::Terminate | DefaultAction::Stop => {}
            }
        }
        s.pending.fetch_or(bit, Ordering::AcqRel);
        Outcome::Pend {
            interrupt: !blocked,
        }
    })
    .ok_or(SyscallError::NotPermitted)?;
    if sig == g::SIGCONT {
        // Continued first: a handler for it runs once it has.
        super::job::resume(target);
    }
    match outcome {
        Outcome::End => super::terminate(target, status::SIGNALED | u64::from(sig)),
        Outcome::Stop => super::job::stop(target, sig),
        Outcome::Drop | Outcome::Pend { interrupt: false } => {}
        Outcome::Pend { interrupt: true } => interrupt(target),
    }
    Ok(())
}

/// The stop signals (their default action stops the process).
const STOP_SIGNALS: u64 = signal_bit(g::SIGSTOP)
    | signal_bit(g::SIGTSTP)
    | signal_bit(g::SIGTTIN)
    | signal_bit(g::SIGTTOU);

/// Whether `p` ignores or blocks `sig` (a background read then fails
/// with EIO rather than stopping it with SIGTTIN, as on Linux).
pub fn ignores_or_blocks(p: &Process, sig: u32) -> bool {
    let bit = signal_bit(sig);
    with_page(p, |s| {
        (s.ignored.load(Ordering::Acquire) | s.blocked.load(Ordering::Acquire)) & bit != 0
    })
    .unwrap_or(true)
}

/// The SIGCHLD `si_code` and `si_status` of a child's end, status word
/// `word` (a fault as the signal Linux sends for it).
pub fn child_end(word: u64) -> (u32, u32) {
    match word {
        w if w <= status::EXITED_MAX => (g::CLD_EXITED, w as u32),
        w if w & !0xff == status::SIGNALED => (g::CLD_KILLED, (w & 0xff) as u32),
        w if w & !0xff == status::FAULT => (
            g::CLD_KILLED,
            match w & 0xff {
                0 => g::SIGFPE,
                1 | 3 => g::SIGTRAP,
                6 => g::SIGILL,
                _ => g::SIGSEGV,
            },
        ),
        _ => (g::CLD_KILLED, SIGKILL),
    }
}

/// Send SIGCHLD to `parent` for child `pid`'s change `code` (a Linux
/// `CLD_*`) with `child_status`, its `siginfo` in the page unless a
/// SIGCHLD is pending already; none for a stop or continue when the
/// parent's SIGCHLD action has `SA_NOCLDSTOP`.
pub fn send_child_changed(parent: &Arc<Process>, code: u32, pid: u32, child_status: u32) {
    let stop_or_continue = code == g::CLD_STOPPED || code == g::CLD_CONTINUED;
    let send_it = with_page(parent, |s| {
        if stop_or_continue && s.flags.load(Ordering::Acquire) & SIGNAL_NOCLDSTOP != 0 {
            return false;
        }
        if s.pending.load(Ordering::Acquire) & signal_bit(g::SIGCHLD) == 0 {
            s.sigchld[0].store(u64::from(code) | u64::from(pid) << 32, Ordering::Release);
            s.sigchld[1].store(u64::from(child_status), Ordering::Release);
        }
        true
    });
    if send_it == Some(true) {
        let _ = send(parent, g::SIGCHLD);
    }
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
