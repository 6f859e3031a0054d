//! Signals: actions, the mask, sending, and delivery with a Linux
//! signal frame.
//!
//! The kernel decides what a sent signal does from the words this module
//! keeps in the process's signal page (`k42_abi::linux::SignalPage`, at
//! `LINUX_SIGNALS`): it ends the process for a signal whose action is to
//! terminate, drops an ignored one, and otherwise sets the signal's
//! `pending` bit and interrupts a blocking call. This module delivers
//! pending signals at the end of every Linux system call
//! ([`at_exit`]): for a handler it builds the frame Linux builds
//! (`rt_sigframe`: return address, `ucontext` with the registers and the
//! mask to restore, `siginfo`, the FP state as `fxsave` writes it) on the
//! program's stack below the red zone and returns into the handler,
//! whose return runs the program's restorer, `rt_sigreturn`.
//!
//! Blocking calls the kernel interrupted end in one of Linux's internal
//! restart codes; [`at_exit`] turns them into EINTR or restarts the call
//! (back over the 2-byte `syscall`, number in `rax`) as Linux does:
//! `ERESTARTSYS` restarts when the handler has `SA_RESTART`,
//! `ERESTARTNOHAND` only when no handler ran.
//!
//! A stop signal whose action is the default, pending because it was
//! blocked when sent, stops the process when it is delivered: the
//! personality sends it to itself, and the kernel stops the process
//! (`proc/job.rs`). A handler with `SA_ONSTACK` gets its frame on the
//! alternate stack ([`crate::altstack`]). SIGCHLD's `siginfo` carries
//! the child's pid, `CLD_*` code and status, which the kernel leaves in
//! the page.
//!
//! A fault the program takes whose signal it catches (SIGSEGV, SIGILL,
//! SIGFPE; see `k42_abi::linux::SignalPage::fault_entry`) comes in
//! through the fault entry: [`linux_fault`] delivers it as the kernel
//! recorded it, with `si_code` and `si_addr`, and a handler that returns
//! resumes the program at the faulting instruction with every register
//! restored.
//!
//! Not yet: delivery to a program that makes no system call (a caught
//! signal waits for its next call; one that terminates does not wait),
//! `siginfo` of a sent signal beyond the signal number for signals other
//! than SIGCHLD.

use core::sync::atomic::Ordering;

use k42_abi::linux::{
    DefaultAction, FAULT_ADDR, FAULT_CODE, FAULT_SIGNAL, LINUX_SIGNALS, MAX_SIGNAL,
    SIGNAL_NOCLDSTOP, SignalPage, default_action, signal_bit,
};
use k42_abi::syscall::SyscallError;
use k42_rt::sync::SpinLock;
use k42_rt::sys::{raw, sys_result};
use linux_raw_sys::errno as e;
use linux_raw_sys::general as g;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::LinuxResult;
use crate::altstack;
use crate::entry::Frame;

/// Linux's internal restart codes (never seen by a program).
pub const ERESTARTSYS: u32 = 512;
pub const ERESTARTNOHAND: u32 = 514;

/// `rt_sigaction`'s `sa_handler` values that are not handlers.
const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;
/// SIGKILL and SIGSTOP: never blocked, caught or ignored.
const UNBLOCKABLE: u64 = signal_bit(g::SIGKILL) | signal_bit(g::SIGSTOP);
/// The flags a program may change in `rt_sigreturn` (Linux's
/// FIX_EFLAGS: CF PF AF ZF SF TF DF OF AC RF).
const USER_FLAGS: u64 = 0x0005_0dd5;
/// Always set in user mode: IF and the reserved bit 1.
const FIXED_FLAGS: u64 = 0x202;

/// The signal page the kernel shares with this process.
fn page() -> &'static SignalPage {
    // SAFETY: the kernel maps the page at LINUX_SIGNALS, read-write, for
    // the life of every Linux process (and of this program); a
    // SignalPage is atomics only, and the kernel writes it atomically.
    unsafe { &*(LINUX_SIGNALS as *const SignalPage) }
}

/// The kernel's `k_sigaction` as `rt_sigaction` passes it.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Action {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

// SAFETY: four 64-bit words (IntoBytes: no padding).
unsafe impl crate::uaccess::Plain for Action {}

/// Each signal's action (index = signal number); SIG_IGN is kept in the
/// page's `ignored` word, which survives exec.
static ACTIONS: SpinLock<[Action; MAX_SIGNAL as usize + 1]> = SpinLock::new(
    [Action {
        handler: SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    }; MAX_SIGNAL as usize + 1],
);

/// The mask `rt_sigsuspend` replaced, to be restored by the handler's
/// return (or at once if no handler runs).
static SUSPEND_MASK: SpinLock<Option<u64>> = SpinLock::new(None);

/// Set the actions up at start: what exec keeps (SIG_IGN) from the page.
pub fn start() {
    let p = page();
    for (w, v) in p.uaccess.iter().zip(crate::uaccess::table()) {
        w.store(v, Ordering::Release);
    }
    p.fault_entry.store(
        crate::entry::linux_fault_entry as *const () as u64,
        Ordering::Release,
    );
    let ignored = page().ignored.load(Ordering::Acquire);
    let mut actions = ACTIONS.lock();
    for (sig, a) in actions.iter_mut().enumerate().skip(1) {
        *a = Action {
            handler: if ignored & signal_bit(sig as u32) != 0 {
                SIG_IGN
            } else {
                SIG_DFL
            },
            ..Action::default()
        };
    }
}

/// Write the page's `caught`/`ignored` bits for `sig` from `a`.
fn publish(sig: u32, a: &Action) {
    let bit = signal_bit(sig);
    let p = page();
    let (caught, ignored) = match a.handler {
        SIG_DFL => (false, false),
        SIG_IGN => (false, true),
        _ => (true, false),
    };
    if caught {
        p.caught.fetch_or(bit, Ordering::AcqRel);
    } else {
        p.caught.fetch_and(!bit, Ordering::AcqRel);
    }
    if sig == g::SIGCHLD {
        if a.flags & u64::from(g::SA_NOCLDSTOP) != 0 {
            p.flags.fetch_or(SIGNAL_NOCLDSTOP, Ordering::AcqRel);
        } else {
            p.flags.fetch_and(!SIGNAL_NOCLDSTOP, Ordering::AcqRel);
        }
    }
    if ignored {
        p.ignored.fetch_or(bit, Ordering::AcqRel);
        // Setting SIG_IGN discards a pending one (as Linux does).
        p.pending.fetch_and(!bit, Ordering::AcqRel);
    } else {
        p.ignored.fetch_and(!bit, Ordering::AcqRel);
    }
}

/// `rt_sigaction`.
pub fn rt_sigaction(sig: u64, act: u64, oact: u64, size: u64) -> LinuxResult {
    if !(1..=u64::from(MAX_SIGNAL)).contains(&sig) || size != 8 {
        return Err(e::EINVAL);
    }
    let sig = sig as u32;
    if act != 0 && (sig == g::SIGKILL || sig == g::SIGSTOP) {
        return Err(e::EINVAL);
    }
    let mut actions = ACTIONS.lock();
    let old = actions[sig as usize];
    if act != 0 {
        let mut new: Action = crate::uaccess::read(act)?;
        new.mask &= !UNBLOCKABLE;
        actions[sig as usize] = new;
        publish(sig, &new);
    }
    if oact != 0 {
        crate::uaccess::write(oact, &old)?;
    }
    Ok(0)
}

/// Set the calling thread's mask to `mask` (SIGKILL and SIGSTOP never
/// blocked). The page's `blocked` word, which the kernel decides by, is
/// what every thread blocks (see [`crate::thread::common_mask`]).
fn set_blocked(mask: u64) {
    crate::thread::set_mask(mask & !UNBLOCKABLE);
    publish_mask();
}

/// Write the signals every thread blocks to the page.
pub fn publish_mask() {
    page()
        .blocked
        .store(crate::thread::common_mask(), Ordering::Release);
}

/// The signals the calling thread blocks.
fn blocked() -> u64 {
    crate::thread::mask()
}

/// The mask in the page (at start: carried over exec or fork).
pub fn page_mask() -> u64 {
    page().blocked.load(Ordering::Acquire)
}

/// `rt_sigprocmask`.
pub fn rt_sigprocmask(how: u64, set: u64, oset: u64, size: u64) -> LinuxResult {
    if size != 8 {
        return Err(e::EINVAL);
    }
    let old = blocked();
    if set != 0 {
        let s: u64 = crate::uaccess::read(set)?;
        set_blocked(match how as u32 {
            g::SIG_BLOCK => old | s,
            g::SIG_UNBLOCK => old & !s,
            g::SIG_SETMASK => s,
            _ => return Err(e::EINVAL),
        });
    }
    if oset != 0 {
        crate::uaccess::write(oset, &old)?;
    }
    Ok(0)
}

/// `rt_sigpending`.
pub fn rt_sigpending(set: u64, size: u64) -> LinuxResult {
    if size != 8 {
        return Err(e::EINVAL);
    }
    let p = page();
    let pending = p.pending.load(Ordering::Acquire) & blocked();
    crate::uaccess::write(set, &pending)?;
    Ok(0)
}

/// Wait in the kernel until a signal this process does not block is
/// pending; the result is the restart code `ERESTARTNOHAND` (EINTR once
/// a handler runs).
fn wait_for_signal() -> LinuxResult {
    loop {
        match sys_result(crate::thread::unlocked(|| raw::SignalWait::call([]))) {
            Ok(_) => return Err(ERESTARTNOHAND),
            // Another thread waits there (one slot per process).
            Err(SyscallError::WouldBlock) => crate::thread::unlocked(|| k42_rt::sys::yield_now(0)),
            Err(s) => return Err(crate::files::sys_errno(s)),
        }
    }
}

/// `rt_sigsuspend`: wait with `*set` as the mask.
pub fn rt_sigsuspend(set: u64, size: u64) -> LinuxResult {
    if size != 8 {
        return Err(e::EINVAL);
    }
    let mask: u64 = crate::uaccess::read(set)?;
    let old = blocked();
    *SUSPEND_MASK.lock() = Some(old);
    set_blocked(mask);
    wait_for_signal()
}

/// Run `f` (a wait: `ppoll`, `pselect6`) with the program's mask at
/// `set` (`size` bytes; NULL: the mask as it is). When the wait ends for
/// a signal, the old mask comes back when its handler returns, as after
/// `rt_sigsuspend`; otherwise at once.
pub fn with_mask(set: u64, size: u64, f: impl FnOnce() -> LinuxResult) -> LinuxResult {
    if set == 0 {
        return f();
    }
    if size != 8 {
        return Err(e::EINVAL);
    }
    let mask: u64 = crate::uaccess::read(set)?;
    let old = blocked();
    set_blocked(mask);
    let r = f();
    if r == Err(ERESTARTNOHAND) {
        *SUSPEND_MASK.lock() = Some(old);
    } else {
        set_blocked(old);
    }
    r
}

/// `pause`.
pub fn pause() -> LinuxResult {
    wait_for_signal()
}

/// Whether a signal this process does not block is pending (a blocking
/// loop in the personality stops waiting).
pub fn interrupted() -> bool {
    let p = page();
    p.pending.load(Ordering::Acquire) & !blocked() != 0
}

/// Send `sig` to process `pid` through the kernel (0 checks that it
/// exists).
fn send(pid: u64, sig: u32) -> LinuxResult {
    sys_result(raw::Signal::call([pid, u64::from(sig)]))
        .map(|_| 0)
        .map_err(|err| match err {
            SyscallError::NotPermitted => e::EPERM,
            SyscallError::InvalidArgument => e::EINVAL,
            _ => e::ESRCH,
        })
}

/// `kill`: a process (pid > 0), the caller's process group (0), or group
/// -pid; -1 (every process) is ESRCH.
pub fn kill(pid: i64, sig: u64) -> LinuxResult {
    if sig > u64::from(MAX_SIGNAL) {
        return Err(e::EINVAL);
    }
    let group = match pid {
        p if p > 0 => return send(p as u64, sig as u32),
        0 => crate::process::getpgid(0)?,
        -1 => return Err(e::ESRCH),
        p => p.unsigned_abs(),
    };
    if sig == 0 {
        return Ok(0);
    }
    sys_result(raw::SignalGroup::call([group, sig]))
        .map(|_| 0)
        .map_err(|err| match err {
            SyscallError::InvalidArgument => e::EINVAL,
            _ => e::ESRCH,
        })
}

/// Send `sig` to this process (SIGPIPE on a write no one reads): its
/// default action ends the process now; a caught one is delivered when
/// the current call returns.
pub fn raise(sig: u32) {
    if let Ok(me) = crate::process::getpid() {
        let _ = send(me, sig);
    }
}

/// End this process by signal `sig`, its default action.
/// The FP state as `fxsave64` stores it (16-byte aligned).
#[repr(C, align(16))]
struct FxArea([u8; FP_STATE as usize]);

/// A signal frame the program's stack cannot hold or give back: end the
/// program with SIGSEGV whatever its action and mask (Linux's
/// `force_sigsegv`).
fn force_segv() -> ! {
    let reset = Action::default();
    ACTIONS.lock()[g::SIGSEGV as usize] = reset;
    publish(g::SIGSEGV, &reset);
    set_blocked(blocked() & !signal_bit(g::SIGSEGV));
    terminate(g::SIGSEGV)
}

fn terminate(sig: u32) -> ! {
    if let Ok(me) = crate::process::getpid() {
        let _ = send(me, sig);
    }
    // The kernel ends the thread at its next interrupt; should it not
    // (a signal the kernel thinks caught), end it as a shell reports it.
    for round in 0..64 {
        k42_rt::sys::yield_now(round);
    }
    k42_rt::exit((128 + sig) as u8)
}

/// `ucontext.uc_mcontext`: Linux's x86_64 `struct sigcontext`.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct SigContext {
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    rdi: u64,
    rsi: u64,
    rbp: u64,
    rbx: u64,
    rdx: u64,
    rax: u64,
    rcx: u64,
    rsp: u64,
    rip: u64,
    eflags: u64,
    /// cs, gs, fs, ss (16 bits each).
    segments: u64,
    err: u64,
    trapno: u64,
    oldmask: u64,
    cr2: u64,
    /// Where the FP state is (`fxsave` format).
    fpstate: u64,
    reserved: [u64; 8],
}

/// Linux's `struct ucontext` (the kernel's, with a 64-bit mask).
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct UContext {
    flags: u64,
    link: u64,
    stack_sp: u64,
    stack_flags: u64,
    stack_size: u64,
    mcontext: SigContext,
    sigmask: u64,
}

/// Linux's x86_64 `struct rt_sigframe`: what the handler's stack
/// pointer points at.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct RtSigframe {
    /// The handler's return address: the restorer.
    pretcode: u64,
    uc: UContext,
    /// `siginfo` (128 bytes): signo, errno, code, then the fields.
    info: [u32; 32],
}

const _: () = assert!(core::mem::size_of::<SigContext>() == 256);
const _: () = assert!(core::mem::size_of::<UContext>() == 304);
const _: () = assert!(core::mem::size_of::<RtSigframe>() == 440);

/// Bytes of FP state (`fxsave64`'s area).
const FP_STATE: u64 = 512;

core::arch::global_asm!(
    r#"
    .section .text
    .global linux_sigreturn_trampoline
linux_sigreturn_trampoline:
    mov eax, {sigreturn}
    syscall
    ud2
"#,
    sigreturn = const g::__NR_rt_sigreturn,
);

unsafe extern "C" {
    /// Returns from a handler installed without `SA_RESTORER` (glibc
    /// always gives one).
    fn linux_sigreturn_trampoline();
}

/// Deliver what is pending at the end of Linux call `nr`, whose result
/// is in `frame.rax` (see the module doc).
pub fn at_exit(frame: &mut Frame, nr: u64) {
    let p = page();
    let mut restart = match (frame.rax as i64).checked_neg().map(|r| r as u64) {
        Some(r) if r == u64::from(ERESTARTSYS) || r == u64::from(ERESTARTNOHAND) => Some(r as u32),
        _ => None,
    };
    loop {
        let ready = p.pending.load(Ordering::Acquire) & !blocked();
        if ready == 0 {
            break;
        }
        let sig = ready.trailing_zeros() + 1;
        // SIGCHLD's siginfo before its bit goes (the kernel writes it
        // only while the bit is clear).
        let info = siginfo(sig);
        p.pending.fetch_and(!signal_bit(sig), Ordering::AcqRel);
        let action = ACTIONS.lock()[sig as usize];
        match action.handler {
            SIG_IGN => continue,
            SIG_DFL => match default_action(sig) {
                DefaultAction::Terminate => terminate(sig),
                DefaultAction::Stop => {
                    // Stopped until SIGCONT (the kernel parks this thread
                    // as the call returns); then delivery goes on.
                    raise(sig);
                    continue;
                }
                DefaultAction::Ignore => continue,
            },
            _ => {}
        }
        if let Some(code) = restart.take() {
            if code == ERESTARTSYS && action.flags & u64::from(g::SA_RESTART) != 0 {
                restart_call(frame, nr);
            } else {
                frame.rax = -(e::EINTR as i64) as u64;
            }
        }
        enter_handler(frame, sig, &action, info);
        return;
    }
    if let Some(old) = SUSPEND_MASK.lock().take() {
        set_blocked(old);
    }
    if restart.is_some() {
        restart_call(frame, nr);
    }
}

/// Make the call again when the program resumes.
fn restart_call(frame: &mut Frame, nr: u64) {
    frame.rip -= 2;
    frame.rax = nr;
}

/// Signal `sig`'s `siginfo` (128 bytes as 32 words): signo, errno, code,
/// then for SIGCHLD pid, uid, status (from the page); SI_USER otherwise.
fn siginfo(sig: u32) -> [u32; 32] {
    let mut info = [0u32; 32];
    info[0] = sig;
    info[2] = g::SI_USER;
    if sig == g::SIGCHLD {
        let p = page();
        let [what, status] = [&p.sigchld[0], &p.sigchld[1]].map(|w| w.load(Ordering::Acquire));
        if what != 0 {
            info[2] = what as u32;
            info[4] = (what >> 32) as u32;
            info[6] = status as u32;
        }
    }
    info
}

/// The fault the kernel resumed the program at the fault entry for
/// (see the module doc): deliver its signal to the handler with the
/// fault's `si_code` and `si_addr`. Should the handler have gone or the
/// signal been blocked meanwhile, the signal's default action ends the
/// program, as Linux forces a fault's signal.
#[unsafe(no_mangle)]
extern "C" fn linux_fault(frame: &mut Frame) {
    // As for a system call: the personality's state is one thread's at
    // a time.
    crate::thread::lock();
    let p = page();
    let sig = p.fault[FAULT_SIGNAL].load(Ordering::Acquire) as u32;
    let code = p.fault[FAULT_CODE].load(Ordering::Acquire) as u32;
    let addr = p.fault[FAULT_ADDR].load(Ordering::Acquire);
    if !(1..=MAX_SIGNAL).contains(&sig) {
        terminate(g::SIGSEGV);
    }
    let action = ACTIONS.lock()[sig as usize];
    let caught = !matches!(action.handler, SIG_DFL | SIG_IGN);
    if !caught || blocked() & signal_bit(sig) != 0 {
        let reset = Action::default();
        ACTIONS.lock()[sig as usize] = reset;
        publish(sig, &reset);
        set_blocked(blocked() & !signal_bit(sig));
        terminate(sig);
    }
    // Linux's siginfo: si_signo, si_errno, si_code, then the union at
    // byte 16 (si_addr).
    let mut info = [0u32; 32];
    info[0] = sig;
    info[2] = code;
    info[4] = addr as u32;
    info[5] = (addr >> 32) as u32;
    enter_handler(frame, sig, &action, info);
    crate::thread::unlock();
}

/// Whether the MXCSR in FP state `fx` (bytes 24–27) sets only bits
/// this CPU supports: its MXCSR_MASK from a save of the current state
/// (bytes 28–31; 0 means the default 0xffbf).
fn mxcsr_valid(fx: &FxArea) -> bool {
    let mut now = FxArea([0; FP_STATE as usize]);
    // SAFETY: `fxsave64` stores 512 bytes at a 16-byte-aligned address.
    unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) now.0.as_mut_ptr(), options(nostack)) };
    let word = |a: &FxArea, at: usize| {
        u32::from_le_bytes([a.0[at], a.0[at + 1], a.0[at + 2], a.0[at + 3]])
    };
    let mask = match word(&now, 28) {
        0 => 0xffbf,
        m => m,
    };
    word(fx, 24) & !mask == 0
}

/// Build the signal frame for `sig` and resume in its handler.
fn enter_handler(frame: &mut Frame, sig: u32, action: &Action, info: [u32; 32]) {
    crate::trace::signal(sig, action.handler);
    let blocked = blocked();
    let saved_mask = SUSPEND_MASK.lock().take().unwrap_or(blocked);
    // Below the red zone, or the alternate stack's top: the FP state
    // (64-byte aligned), then the frame, placed so that the handler
    // starts as if called (rsp + 8 aligned).
    let onstack = action.flags & u64::from(g::SA_ONSTACK) != 0;
    let (top, alt) = altstack::frame_top(frame.rsp.wrapping_sub(128), onstack, frame.rsp);
    let fp = top.wrapping_sub(FP_STATE) & !63;
    let sp = (fp.wrapping_sub(core::mem::size_of::<RtSigframe>() as u64) & !15).wrapping_sub(8);
    if alt.is_some_and(|a| !altstack::holds(&a, sp)) {
        // The frame would leave the alternate stack (Linux: "overflowed
        // sigaltstack").
        force_segv();
    }
    let mut fx = FxArea([0; FP_STATE as usize]);
    // SAFETY: `fxsave64` stores 512 bytes at a 16-byte-aligned address,
    // `fx`. The personality itself uses no FP or vector registers, so
    // they hold the program's state.
    unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) fx.0.as_mut_ptr(), options(nostack)) };
    if crate::uaccess::copy_out(fp, &fx.0).is_err() {
        // No room for the frame: SIGSEGV, as Linux forces it.
        force_segv();
    }
    let restorer = if action.flags & u64::from(g::SA_RESTORER) != 0 {
        action.restorer
    } else {
        linux_sigreturn_trampoline as *const () as u64
    };
    let uc_stack = altstack::saved();
    let sigframe = RtSigframe {
        pretcode: restorer,
        uc: UContext {
            stack_sp: uc_stack.sp,
            stack_flags: u64::from(uc_stack.flags),
            stack_size: uc_stack.size,
            mcontext: SigContext {
                r8: frame.r8,
                r9: frame.r9,
                r10: frame.r10,
                r12: frame.r12,
                r13: frame.r13,
                r14: frame.r14,
                r15: frame.r15,
                rdi: frame.rdi,
                rsi: frame.rsi,
                rbp: frame.rbp,
                rbx: frame.rbx,
                rdx: frame.rdx,
                rax: frame.rax,
                rcx: frame.rcx,
                r11: frame.r11,
                rsp: frame.rsp,
                rip: frame.rip,
                eflags: frame.rflags,
                fpstate: fp,
                ..SigContext::default()
            },
            sigmask: saved_mask,
            ..UContext::default()
        },
        info,
    };
    if crate::uaccess::copy_out(sp, sigframe.as_bytes()).is_err() {
        force_segv();
    }
    altstack::delivered();
    let mut mask = blocked | action.mask;
    if action.flags & u64::from(g::SA_NODEFER) == 0 {
        mask |= signal_bit(sig);
    }
    set_blocked(mask);
    if action.flags & u64::from(g::SA_RESETHAND) != 0 {
        let reset = Action::default();
        ACTIONS.lock()[sig as usize] = reset;
        publish(sig, &reset);
    }
    let base = sp + core::mem::offset_of!(RtSigframe, uc) as u64;
    frame.rdi = u64::from(sig);
    frame.rsi = sp + core::mem::offset_of!(RtSigframe, info) as u64;
    frame.rdx = base;
    frame.rax = 0;
    frame.rsp = sp;
    frame.rip = action.handler;
    // DF and TF clear in the handler, as Linux starts it.
    frame.rflags &= !0x0000_0500;
}

/// `rt_sigreturn`: the registers, mask and FP state from the frame the
/// handler returns from (its restorer popped the return address), `rcx`
/// and `r11` included (a fault's handler returns to code that keeps
/// values there).
pub fn rt_sigreturn(frame: &mut Frame) {
    let sp = frame.rsp.wrapping_sub(8);
    // The program's stack, where `enter_handler` put the frame (a
    // program that moved it gets what it wrote, as on Linux).
    let mut sf = <RtSigframe as zerocopy::FromZeros>::new_zeroed();
    if crate::uaccess::copy_in(sf.as_mut_bytes(), sp).is_err() {
        force_segv();
    }
    let m = &sf.uc.mcontext;
    frame.r8 = m.r8;
    frame.r9 = m.r9;
    frame.r10 = m.r10;
    frame.r12 = m.r12;
    frame.r13 = m.r13;
    frame.r14 = m.r14;
    frame.r15 = m.r15;
    frame.rdi = m.rdi;
    frame.rsi = m.rsi;
    frame.rbp = m.rbp;
    frame.rbx = m.rbx;
    frame.rdx = m.rdx;
    frame.rax = m.rax;
    frame.rcx = m.rcx;
    frame.r11 = m.r11;
    frame.rsp = m.rsp;
    frame.rip = m.rip;
    frame.rflags = (frame.rflags & !USER_FLAGS) | (m.eflags & USER_FLAGS) | FIXED_FLAGS;
    if m.fpstate != 0 {
        let mut fx = FxArea([0; FP_STATE as usize]);
        if crate::uaccess::copy_in(&mut fx.0, m.fpstate).is_err() || !mxcsr_valid(&fx) {
            // Linux refuses such a frame with SIGSEGV.
            force_segv();
        }
        // SAFETY: 512 bytes of FP state, 16-byte aligned, as
        // `enter_handler` saved them, MXCSR checked (fxrstor faults on
        // its reserved bits).
        unsafe { core::arch::asm!("fxrstor64 [{}]", in(reg) fx.0.as_ptr(), options(nostack)) };
    }
    set_blocked(sf.uc.sigmask);
    let uc_stack = altstack::StackT {
        sp: sf.uc.stack_sp,
        flags: sf.uc.stack_flags as u32,
        pad: 0,
        size: sf.uc.stack_size,
    };
    altstack::restore(&uc_stack, frame.rsp);
}
