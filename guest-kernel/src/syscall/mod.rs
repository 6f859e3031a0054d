//! System calls: the one dispatch, generated from the ABI's table
//! ([`k42_abi::for_each_syscall`]), and the handlers, one module per area
//! of the table (`program`, `process`, `ppc`, `file`, `linux`).
//!
//! Every caller goes through [`entry`]: a process's thread and a
//! kernel-run program are two kinds of caller of the same table
//! ([`Context::caller`]); a call that needs a process answers
//! `NotAProcess` to a kernel-run program. A handler gets its arguments as
//! an `[u64; N]` with `N` the table's argument count (a handler missing
//! from its area, or with another count, does not compile), and user
//! memory only through `mm::user`.
//!
//! Adding a system call: its line in `shared-abi/src/syscall.rs`'s table
//! and its handler `fn name(cx: &mut Context, args: [u64; N]) ->
//! SysResult` in this folder's module for its area. Nothing else.
//!
//! With the `syscall` trace class on, every call logs `syscall:enter`
//! (number, first three arguments) and, when it returns to its caller,
//! `syscall:exit` (number, result).
#![deny(unsafe_code)]

mod file;
mod linux;
mod ppc;
mod process;
mod program;

use alloc::sync::Arc;

use k42_abi::syscall::{SYSCALL_SITE, Syscall, SyscallError};
use k42_abi::trace::ev;

use crate::arch::TrapFrame;
use crate::mm::user::UserSpace;
use crate::proc::sched::{self, Thread};

/// What a handler did.
pub enum Done {
    /// Return this value to the caller (in `rax`).
    Value(i64),
    /// The CPU now runs another thread (or the caller with registers
    /// already set): `frame` holds its state, leave it as it is.
    Switched,
}

/// A handler's result: `Err` returns the error to the caller.
pub type SysResult = Result<Done, SyscallError>;

/// Return `v` to the caller.
fn value(v: u64) -> SysResult {
    Ok(Done::Value(v as i64))
}

/// Who made the call.
pub enum Caller {
    /// A thread of a process.
    Process(Arc<Thread>),
    /// A program the kernel runs directly (`user::run`, the in-kernel
    /// tests and benchmarks).
    Program,
}

/// A system call in progress on this CPU.
pub struct Context<'a> {
    /// The caller's registers; the result goes into `rax` after the
    /// handler, unless it switched threads.
    pub frame: &'a mut TrapFrame,
}

impl Context<'_> {
    /// Who made the call.
    pub fn caller(&self) -> Caller {
        match sched::current() {
            Some(t) => Caller::Process(t),
            None => Caller::Program,
        }
    }

    /// The calling thread, or `NotAProcess` for a kernel-run program.
    pub fn thread(&self) -> Result<Arc<Thread>, SyscallError> {
        sched::current().ok_or(SyscallError::NotAProcess)
    }

    /// Run `f` on the caller's user memory.
    pub fn with_user<R>(
        &self,
        f: impl FnOnce(&dyn UserSpace) -> Result<R, SyscallError>,
    ) -> Result<R, SyscallError> {
        match sched::current() {
            Some(t) => f(t.memory()),
            None => crate::user::with_program_space(f),
        }
    }
}

/// The first `N` argument registers (`rdi`, `rsi`, `rdx`, `r10`, `r8`).
#[inline(always)]
fn args<const N: usize>(f: &TrapFrame) -> [u64; N] {
    let all = [f.rdi, f.rsi, f.rdx, f.r10, f.r8];
    core::array::from_fn(|i| all[i])
}

macro_rules! dispatch_table {
    ($( $(#[doc = $doc:literal])* $name:ident = $nr:literal => $area:ident :: $handler:ident ($argc:literal); )*) => {
        /// Serve `call` with the handler the table names.
        #[inline(always)]
        fn dispatch(call: Syscall, cx: &mut Context) -> SysResult {
            match call {
                $( Syscall::$name => {
                    let a = args::<$argc>(cx.frame);
                    $area::$handler(cx, a)
                } )*
            }
        }
    };
}

k42_abi::for_each_syscall!(dispatch_table);

/// A system call (the trap at a [`SYSCALL_SITE`]) from user mode on this
/// CPU: resume after the site with the result in `rax`, or with another
/// thread's state if the call switched.
pub fn entry(frame: &mut TrapFrame) {
    frame.rip += SYSCALL_SITE.len() as u64;
    let nr = frame.rax;
    crate::trace::log(ev::syscall::enter(nr, frame.rdi, frame.rsi, frame.rdx));
    let result = match Syscall::from_raw(nr) {
        Some(call) => dispatch(call, &mut Context { frame }),
        None => Err(SyscallError::NoSuchCall),
    };
    let rax = match result {
        Ok(Done::Value(v)) => v,
        Ok(Done::Switched) => return,
        Err(e) => e as i64,
    };
    frame.rax = rax as u64;
    crate::trace::log(ev::syscall::exit(nr, rax));
}
