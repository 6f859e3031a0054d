//! Protected procedure calls (`k42_abi::syscall::ppc`): serving calls
//! and making them.
//!
//! A server maps stacks and message buffers for every CPU and parks its
//! main thread in [`serve`]; each call then runs `entry(caller, method,
//! arg, message, len)` on the caller's CPU, which ends with [`reply`].

use core::arch::asm;

use k42_abi::syscall::ppc::{MAX_MESSAGE, names};
use k42_abi::syscall::{Syscall, SyscallError};

use crate::sys::sys_result;

/// A server's entry: `(caller pid, method, argument, message, length)`.
pub type Entry = extern "C" fn(u64, u64, u64, *mut u8, u64) -> !;

/// Become a server: calls run `entry` on CPU c's stack (`stack_size`
/// bytes below `stacks + (c + 1) * stack_size`) with CPU c's message
/// buffer (`MAX_MESSAGE` bytes at `msgs + c * MAX_MESSAGE`). Parks the
/// calling thread for good; returns only an error.
pub fn serve(entry: Entry, stacks: u64, stack_size: u64, msgs: u64) -> SyscallError {
    serve_flags(entry, stacks, stack_size, msgs, 0)
}

/// [`serve`] with `PpcServe` flags (`SERVE_NAME_SERVER`).
pub fn serve_flags(
    entry: Entry,
    stacks: u64,
    stack_size: u64,
    msgs: u64,
    flags: u64,
) -> SyscallError {
    let r =
        crate::sys::raw::PpcServe::call([entry as usize as u64, stacks, stack_size, msgs, flags]);
    sys_result(r).err().unwrap_or(SyscallError::InvalidArgument)
}

/// The name server's handle.
pub fn name_server() -> Result<u64, SyscallError> {
    sys_result(crate::sys::raw::PpcLookup::call([0]))
}

/// Register `name` for `handle` with the name server.
pub fn register(name: &str, handle: u64) -> Result<(), SyscallError> {
    let ns = name_server()?;
    let mut msg = [0u8; MAX];
    let n = name.len().min(names::MAX_NAME);
    msg[..n].copy_from_slice(&name.as_bytes()[..n]);
    call(ns, names::REGISTER, handle, &mut msg, n).map(|_| ())
}

/// The handle registered under `name`.
pub fn resolve(name: &str) -> Result<u64, SyscallError> {
    let ns = name_server()?;
    let mut msg = [0u8; MAX];
    let n = name.len().min(names::MAX_NAME);
    msg[..n].copy_from_slice(&name.as_bytes()[..n]);
    call(ns, names::LOOKUP, 0, &mut msg, n).map(|(h, _)| h)
}

/// The handle registered under `name`, waiting (about `rounds` polite
/// waits at most) while it is not registered yet or the name server is
/// not serving yet — both may still be starting in the background.
pub fn wait_for_name(name: &str, rounds: u32) -> Result<u64, SyscallError> {
    let mut round = 0;
    loop {
        match resolve(name) {
            Err(SyscallError::NoSuchName | SyscallError::NoSuchProcess) if round < rounds => {
                crate::sync::relax(round);
                round += 1;
            }
            r => return r,
        }
    }
}

/// Call the server behind `handle`: `method`, `arg`, and the first `len`
/// bytes of `msg` as the message, replaced by the reply (which may fill
/// `msg`, up to [`MAX`] bytes). Returns the server's result and the
/// reply's length.
pub fn call(
    handle: u64,
    method: u64,
    arg: u64,
    msg: &mut [u8],
    len: usize,
) -> Result<(u64, usize), SyscallError> {
    let (ret, reply) = call_raw(handle, method, arg, msg, len);
    sys_result(ret).map(|r| (r, reply))
}

/// [`call`] with the raw result (a server's own negative codes kept).
///
/// The kernel runs one call per server per CPU; a call that finds the
/// server's worker for this CPU busy (preempted in another thread's
/// call) waits its turn, yielding, instead of failing with `Busy`.
pub fn call_raw(handle: u64, method: u64, arg: u64, msg: &mut [u8], len: usize) -> (i64, usize) {
    let mut round = 0;
    loop {
        let (ret, reply) = call_once_raw(handle, method, arg, msg, len);
        if ret != SyscallError::Busy as i64 {
            return (ret, reply);
        }
        crate::yield_now(round);
        round += 1;
    }
}

/// One `PpcCall`: [`call_raw`] that returns `Busy` rather than waiting.
pub fn call_once_raw(
    handle: u64,
    method: u64,
    arg: u64,
    msg: &mut [u8],
    len: usize,
) -> (i64, usize) {
    let len = len.min(msg.len()) as u64;
    let cap = msg.len().min(MAX) as u64;
    let (ret, reply): (i64, u64);
    // SAFETY: the system-call site as in `sys::syscall3_raw`; PpcCall
    // returns the reply length in rdx and may rewrite `msg[..cap]`.
    unsafe {
        asm!(
            "ud2",
            ".byte 0x6b, 0x34, 0x32, 0x73",
            inlateout("rax") Syscall::PpcCall as u64 => ret,
            in("rdi") handle,
            in("rsi") method,
            inlateout("rdx") arg => reply,
            in("r10") msg.as_mut_ptr() as u64,
            in("r8") len | cap << 32,
            options(nostack),
        );
    }
    (ret, reply as usize)
}

/// A call with a raw message length, unchecked here (for tests of the
/// kernel's limit); the raw result.
pub fn call_raw_len(handle: u64, method: u64, msg: &mut [u8], len: u64) -> i64 {
    crate::sys::raw::PpcCall::call([handle, method, 0, msg.as_mut_ptr() as u64, len])
}

/// End the call this thread serves with `result` (≥ 0, or a negated
/// `SyscallError` such as `NoSuchMethod`) and the first `len` bytes of
/// its message buffer as the reply.
pub fn reply(result: i64, len: usize) -> ! {
    let r = crate::sys::raw::PpcReturn::call([result as u64, len as u64]);
    // Refused (a reply longer than the caller has room for): the caller
    // gets the error instead.
    crate::sys::raw::PpcReturn::call([r as u64, 0]);
    // PpcReturn never comes back to a worker that served a call.
    crate::exit(102)
}

/// The handle of process `pid`'s server (a stand-in for the name
/// server).
pub fn lookup(pid: u32) -> Result<u64, SyscallError> {
    sys_result(crate::sys::raw::PpcLookup::call([pid as u64]))
}

/// Longest message.
pub const MAX: usize = MAX_MESSAGE as usize;

/// The name and the report of [`register_when_serving`] (one per process).
type Registration = (&'static str, fn(Result<(), SyscallError>));
static REGISTRATION: crate::sync::SpinLock<Option<Registration>> = crate::sync::SpinLock::new(None);

/// Start a thread (on the stack whose top is `stack_top`) that waits
/// until this process serves — call [`serve`] next — then registers
/// `name` for its handle with the name server (waiting for the name
/// server too, should it still be starting), and calls `done` with the
/// outcome. Once per process.
pub fn register_when_serving(
    name: &'static str,
    stack_top: u64,
    done: fn(Result<(), SyscallError>),
) -> Result<(), SyscallError> {
    *REGISTRATION.lock() = Some((name, done));
    crate::process::thread_create(registrar, stack_top, 0, None).map(|_| ())
}

extern "C" fn registrar(_: u64) -> ! {
    let Some((name, done)) = *REGISTRATION.lock() else {
        crate::process::thread_exit(1)
    };
    let pid = crate::process::getpid();
    let mut handle = 0;
    crate::sync::wait_until(|| match lookup(pid) {
        Ok(h) => {
            handle = h;
            true
        }
        Err(_) => false,
    });
    let mut result = Err(SyscallError::NoSuchProcess);
    let mut tries = 0u32;
    crate::sync::wait_until(|| {
        result = register(name, handle);
        tries += 1;
        result != Err(SyscallError::NoSuchProcess) || tries > 100_000
    });
    done(result);
    crate::process::thread_exit(0)
}
