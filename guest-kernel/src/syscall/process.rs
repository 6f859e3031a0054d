//! Process calls: exit, spawn, fork, exec, wait, kill, threads, memory,
//! pinning. Only `Exit` is also a kernel-run program's call.

use k42_abi::syscall::{MAX_ARGS_LEN, MAX_NAME_LEN, SyscallError, status};

use super::{Caller, Context, Done, SysResult, value};
use crate::mm::user;
use crate::{proc, smp};
use zerocopy::IntoBytes;

/// `Exit`: end the process (or the kernel-run program) with `status`.
pub fn exit(cx: &mut Context, [code]: [u64; 1]) -> SysResult {
    match cx.caller() {
        Caller::Process(t) => {
            t.process.exit_with(code.min(status::EXITED_MAX));
            drop(t);
            proc::end_current(cx.frame);
            Ok(Done::Switched)
        }
        Caller::Program => crate::user::exit_program(code.min(255)),
    }
}

/// `ThreadExit`: end the calling thread (the process, with `status`, if
/// it was the last).
pub fn thread_exit(cx: &mut Context, [code]: [u64; 1]) -> SysResult {
    let t = cx.thread()?;
    if t.process.thread_count() == 1 {
        t.process.exit_with(code.min(status::EXITED_MAX));
    }
    drop(t);
    proc::end_current(cx.frame);
    Ok(Done::Switched)
}

/// `GetPid`.
pub fn get_pid(cx: &mut Context, []: [u64; 0]) -> SysResult {
    value(cx.thread()?.process.pid as u64)
}

/// `Spawn`: a new process running program `name` with argument block
/// `block`.
pub fn spawn(cx: &mut Context, [name, name_len, block, block_len, flags]: [u64; 5]) -> SysResult {
    let t = cx.thread()?;
    let mem = t.memory();
    let name = user::copy_in(mem, name, name_len, MAX_NAME_LEN)?;
    let name = core::str::from_utf8(&name).map_err(|_| SyscallError::InvalidArgument)?;
    let block = user::copy_in(mem, block, block_len, MAX_ARGS_LEN)?;
    value(proc::spawn(t.process.pid, name, &block, flags)? as u64)
}

/// `Fork`.
pub fn fork(cx: &mut Context, []: [u64; 0]) -> SysResult {
    let t = cx.thread()?;
    value(proc::fork(&t, cx.frame)? as u64)
}

/// `Exec`: replace the program; returns only on failure.
pub fn exec(cx: &mut Context, [name, name_len, block, block_len]: [u64; 4]) -> SysResult {
    let t = cx.thread()?;
    let mem = t.memory();
    let name = user::copy_in(mem, name, name_len, MAX_NAME_LEN)?;
    let name = core::str::from_utf8(&name).map_err(|_| SyscallError::InvalidArgument)?;
    let block = user::copy_in(mem, block, block_len, MAX_ARGS_LEN)?;
    proc::exec(&t, name, &block, cx.frame)?;
    Ok(Done::Switched)
}

/// `Wait`: for child `which` (any with `u64::MAX`); blocks until one
/// ends.
pub fn wait(cx: &mut Context, [which, options]: [u64; 2]) -> SysResult {
    let t = cx.thread()?;
    match proc::wait(&t, which, options, cx.frame)? {
        Some(word) => value(word),
        None => Ok(Done::Switched),
    }
}

/// `TryWait`: for child `which` (any with `u64::MAX`); 0 when none has
/// ended yet.
pub fn try_wait(cx: &mut Context, [which, options]: [u64; 2]) -> SysResult {
    let t = cx.thread()?;
    value(proc::try_wait(&t, which, options)?)
}

/// `Kill`: a child, or the caller's own process.
pub fn kill(cx: &mut Context, [pid]: [u64; 1]) -> SysResult {
    proc::kill(&cx.thread()?.process, pid)?;
    value(0)
}

/// `ThreadCreate`: a thread at `entry` with stack `stack` and argument
/// `arg`, kept on CPU `pin - 1` unless `pin` is 0.
pub fn thread_create(cx: &mut Context, [entry, stack, arg, pin]: [u64; 4]) -> SysResult {
    let t = cx.thread()?;
    value(proc::thread_create(&t.process, t.memory_arc(), entry, stack, arg, pin)? as u64)
}

/// `MapAnon`: `len` bytes of zero-filled memory.
pub fn map_anon(cx: &mut Context, [len]: [u64; 1]) -> SysResult {
    value(cx.thread()?.memory().map_anon(len)?)
}

/// `FreeFrames`: free page frames in the machine.
pub fn free_frames(cx: &mut Context, []: [u64; 0]) -> SysResult {
    cx.thread()?;
    value(proc::memory::free_frames())
}

/// `SystemInfo`: the machine's memory and process count to `out`.
pub fn system_info(cx: &mut Context, [out]: [u64; 1]) -> SysResult {
    let t = cx.thread()?;
    let info = k42_abi::syscall::SystemInfo {
        total_frames: crate::mm::frame::total_frames(),
        free_frames: proc::memory::free_frames(),
        processes: u64::from(proc::live_processes()),
    };
    user::copy_out(t.memory(), out, info.as_bytes())?;
    value(0)
}

/// `Pin`: keep the calling thread on CPU `cpu` (moving it there), or
/// let it run anywhere with `u64::MAX`.
pub fn pin(cx: &mut Context, [cpu]: [u64; 1]) -> SysResult {
    let t = cx.thread()?;
    match cpu {
        u64::MAX => {
            t.set_pin(None);
            value(0)
        }
        c if c < smp::ncpus() as u64 => {
            drop(t);
            cx.frame.rax = 0;
            proc::sched::pin_current(cx.frame, Some(c as u32));
            Ok(Done::Switched)
        }
        _ => Err(SyscallError::InvalidArgument),
    }
}
