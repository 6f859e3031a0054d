//! `sigaltstack`: the alternate signal stack, where handlers installed
//! with `SA_ONSTACK` run (a stack overflow's SIGSEGV handler needs one).
//!
//! The state is the thread's; a process has one thread here, so it is
//! kept once per personality (threads will keep one each). Linux's rules
//! (`kernel/signal.c`, `arch/x86/kernel/signal.c`):
//!
//! ```text
//! sigaltstack(ss, oss): oss ← { sp, size, SS_DISABLE | SS_ONSTACK | 0, SS_AUTODISARM };
//!   ss while running on the stack ─► EPERM; mode not 0/SS_ONSTACK/SS_DISABLE ─► EINVAL
//!   SS_DISABLE ─► none; size < MINSIGSTKSZ ─► ENOMEM
//! delivery, SA_ONSTACK and a stack set and not on it: the frame at its top
//!   (on it already: below the interrupted sp); a frame that would leave
//!   it ─► SIGSEGV; uc_stack ← the state as set; SS_AUTODISARM: disarmed
//! rt_sigreturn: the state from uc_stack (errors ignored)
//! ```

use k42_rt::sync::SpinLock;
use linux_raw_sys::errno as e;
use linux_raw_sys::general as g;

use crate::LinuxResult;

/// The thread's alternate stack: `size == 0` when there is none; `flags`
/// is what `sigaltstack` last set (SS_DISABLE at start, as Linux's
/// `sas_ss_reset` leaves it).
#[derive(Clone, Copy)]
pub struct AltStack {
    pub sp: u64,
    pub size: u64,
    pub flags: u32,
}

/// No alternate stack.
const NONE: AltStack = AltStack {
    sp: 0,
    size: 0,
    flags: g::SS_DISABLE,
};

static STACK: SpinLock<AltStack> = SpinLock::new(NONE);

/// Linux's `stack_t` as the program passes it.
#[derive(Clone, Copy, Default, zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)]
#[repr(C)]
pub struct StackT {
    pub sp: u64,
    pub flags: u32,
    pub pad: u32,
    pub size: u64,
}

// SAFETY: three plain fields, the padding named (IntoBytes: none left).
unsafe impl crate::uaccess::Plain for StackT {}

/// Whether `sp` is on the alternate stack `s` (never with SS_AUTODISARM,
/// Linux's `on_sig_stack`).
fn on(s: &AltStack, sp: u64) -> bool {
    s.flags & g::SS_AUTODISARM == 0 && sp > s.sp && sp - s.sp <= s.size
}

/// Linux's `sas_ss_flags`: SS_DISABLE without a stack, SS_ONSTACK when
/// `sp` is on it, else 0.
fn mode(s: &AltStack, sp: u64) -> u32 {
    if s.size == 0 {
        g::SS_DISABLE
    } else if on(s, sp) {
        g::SS_ONSTACK
    } else {
        0
    }
}

/// Change the state to `new` as `sigaltstack` would with the program at
/// `sp`.
fn set(new: &StackT, sp: u64) -> Result<(), u32> {
    let mut s = STACK.lock();
    if on(&s, sp) {
        return Err(e::EPERM);
    }
    let mode = new.flags & !g::SS_FLAG_BITS;
    if mode != g::SS_DISABLE && mode != g::SS_ONSTACK && mode != 0 {
        return Err(e::EINVAL);
    }
    *s = if mode == g::SS_DISABLE {
        // Linux keeps the flags as given (SS_AUTODISARM included).
        AltStack {
            sp: 0,
            size: 0,
            flags: new.flags,
        }
    } else {
        if new.size < u64::from(g::MINSIGSTKSZ) {
            return Err(e::ENOMEM);
        }
        AltStack {
            sp: new.sp,
            size: new.size,
            flags: new.flags,
        }
    };
    Ok(())
}

/// The state as `oss` shows it with the program at `sp`.
fn current(sp: u64) -> StackT {
    let s = *STACK.lock();
    StackT {
        sp: s.sp,
        flags: mode(&s, sp) | (s.flags & g::SS_FLAG_BITS),
        pad: 0,
        size: s.size,
    }
}

/// `sigaltstack(ss, oss)` for the program at `sp`.
pub fn sigaltstack(ss: u64, oss: u64, sp: u64) -> LinuxResult {
    let old = current(sp);
    if ss != 0 {
        let new: StackT = crate::uaccess::read(ss)?;
        set(&new, sp)?;
    }
    if oss != 0 {
        crate::uaccess::write(oss, &old)?;
    }
    Ok(0)
}

/// The state as a signal frame's `uc_stack` saves it (what was set).
pub fn saved() -> StackT {
    let s = *STACK.lock();
    StackT {
        sp: s.sp,
        flags: s.flags,
        pad: 0,
        size: s.size,
    }
}

/// Where a handler's frame goes for the program at `original_sp`, `sp`
/// being below its red zone: the alternate stack's top when the handler
/// has `SA_ONSTACK` and the program is not on it already. Also the stack
/// the frame must lie on when it goes there or the program is on it
/// already (Linux's overflow check).
pub fn frame_top(sp: u64, onstack: bool, original_sp: u64) -> (u64, Option<AltStack>) {
    let s = *STACK.lock();
    let nested = on(&s, original_sp);
    if onstack && mode(&s, sp) == 0 {
        return (s.sp.wrapping_add(s.size), Some(s));
    }
    (sp, nested.then_some(s))
}

/// A handler was entered: an `SS_AUTODISARM` stack is disarmed (its
/// frame's `uc_stack` brings it back at `rt_sigreturn`).
pub fn delivered() {
    let mut s = STACK.lock();
    if s.flags & g::SS_AUTODISARM != 0 {
        *s = NONE;
    }
}

/// Whether a frame from `low` up lies on `stack` (Linux's
/// `__on_sig_stack` of the frame's lowest address).
pub fn holds(stack: &AltStack, low: u64) -> bool {
    low > stack.sp && low - stack.sp <= stack.size
}

/// `rt_sigreturn`: the state from the frame's `uc_stack`, the program
/// back at `sp` (Linux's `restore_altstack`; an error leaves it as it is).
pub fn restore(saved: &StackT, sp: u64) {
    let _ = set(saved, sp);
}
