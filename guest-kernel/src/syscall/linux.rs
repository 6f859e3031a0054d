//! The kernel's part of the Linux personality: exec of a Linux program,
//! the FS base, memory mappings, and counting the Linux calls the
//! personality does not implement (`proc::linux`, `proc::memory`), and
//! logging the personality's `linux` trace events.

use k42_abi::linux::{
    MAP_FILE_FIXED, MAP_FILE_SHARED, MAP_FIXED, MAX_CARRY, MAX_EXEC_STRINGS, MAX_KEEP,
};
use k42_abi::syscall::SyscallError;
use k42_abi::syscall::file::{RIGHT_READ, RIGHT_WRITE};
use k42_abi::trace::{class, ev};

use super::{Context, Done, SysResult, value};
use crate::mm::user;
use crate::proc;

/// The largest exec block: header, strings and carried state.
const MAX_BLOCK: u64 = 24 + MAX_EXEC_STRINGS + MAX_CARRY + 8 * MAX_KEEP as u64;

/// `LinuxExec`: replace the program; returns only on failure.
pub fn exec(cx: &mut Context, [handle, interp, block, len]: [u64; 4]) -> SysResult {
    let t = cx.thread()?;
    if len > MAX_BLOCK {
        return Err(SyscallError::TooLong);
    }
    let block = user::copy_in(t.memory(), block, len, MAX_BLOCK)?;
    proc::linux::exec(&t, handle, interp, &block, cx.frame)?;
    Ok(Done::Switched)
}

/// `SetFsBase`.
pub fn set_fs_base(cx: &mut Context, [base]: [u64; 1]) -> SysResult {
    let t = cx.thread()?;
    proc::linux::set_fs_base(&t, base)?;
    value(0)
}

/// `MemMap`: anonymous memory.
pub fn map(cx: &mut Context, [addr, len, prot, flags]: [u64; 4]) -> SysResult {
    let t = cx.thread()?;
    if prot > u64::from(u32::MAX) || flags & !MAP_FIXED != 0 {
        return Err(SyscallError::InvalidArgument);
    }
    value(
        t.memory()
            .map_at(addr, len, prot as u32, flags & MAP_FIXED != 0)?,
    )
}

/// `MemMapFile`: a file's pages, private or shared, at an offset.
pub fn map_file(cx: &mut Context, [addr, len, prot_flags, handle, offset]: [u64; 5]) -> SysResult {
    let t = cx.thread()?;
    if prot_flags & !(7 | MAP_FILE_FIXED | MAP_FILE_SHARED) != 0 {
        return Err(SyscallError::InvalidArgument);
    }
    let prot = (prot_flags & 7) as u32;
    let shared = prot_flags & MAP_FILE_SHARED != 0;
    let need = if shared && prot & proc::memory::PROT_WRITE != 0 {
        RIGHT_READ | RIGHT_WRITE
    } else {
        RIGHT_READ
    };
    let file = proc::files::object(&t.process, handle, need)?;
    value(t.memory().map_file_at(
        addr,
        len,
        prot,
        prot_flags & MAP_FILE_FIXED != 0,
        shared,
        file,
        offset,
    )?)
}

/// `MemDiscard`.
pub fn discard(cx: &mut Context, [addr, len]: [u64; 2]) -> SysResult {
    cx.thread()?.memory().discard(addr, len)?;
    value(0)
}

/// `MemUnmap`.
pub fn unmap(cx: &mut Context, [addr, len]: [u64; 2]) -> SysResult {
    cx.thread()?.memory().unmap(addr, len)?;
    value(0)
}

/// `MemProtect`.
pub fn protect(cx: &mut Context, [addr, len, prot]: [u64; 3]) -> SysResult {
    if prot > 7 {
        return Err(SyscallError::InvalidArgument);
    }
    cx.thread()?.memory().protect(addr, len, prot as u32)?;
    value(0)
}

/// `LinuxUnimplemented`: count and trace Linux call `nr`.
pub fn unimplemented(cx: &mut Context, [nr]: [u64; 1]) -> SysResult {
    let t = cx.thread()?;
    proc::linux::unimplemented(nr)?;
    crate::trace::log(ev::syscall::unimplemented(t.process.pid as u64, nr));
    value(0)
}

/// `LinuxTrace`: log `linux` event `minor` for the caller, its pid
/// first, the other fields from the words at `words`. Done here because
/// the personality cannot write the per-CPU buffers itself: its thread
/// may move to another CPU between choosing a CPU's buffers and
/// committing the event, and those buffers' writers use unlocked
/// read-modify-writes (`k42_trace::Local`). The kernel runs a call to
/// its end on one CPU.
pub fn trace(cx: &mut Context, [minor, words]: [u64; 2]) -> SysResult {
    let t = cx.thread()?;
    if !crate::trace::enabled(class::linux) {
        return value(0);
    }
    let pid = t.process.pid as u64;
    let mem = t.memory();
    let logged = match minor {
        1 => {
            let [nr, a0, a1, a2, a3, a4, a5] = user::read_val::<[u64; 7]>(mem, words)?;
            crate::trace::log(ev::linux::enter(pid, nr, a0, a1, a2, a3, a4, a5))
        }
        2 => {
            let [nr, result] = user::read_val::<[u64; 2]>(mem, words)?;
            crate::trace::log(ev::linux::exit(pid, nr, result as i64))
        }
        3 => {
            let [sig, handler] = user::read_val::<[u64; 2]>(mem, words)?;
            crate::trace::log(ev::linux::signal(pid, sig, handler))
        }
        _ => return Err(SyscallError::InvalidArgument),
    };
    value(u64::from(logged))
}

/// `Signal`: send Linux signal `sig` to Linux process `pid`.
/// A signal that ends the caller ends it here, before it runs on.
pub fn signal(cx: &mut Context, [pid, sig]: [u64; 2]) -> SysResult {
    let t = cx.thread()?;
    let pid = u32::try_from(pid).map_err(|_| SyscallError::NoSuchProcess)?;
    let sig = u32::try_from(sig).map_err(|_| SyscallError::InvalidArgument)?;
    let target = proc::lookup(pid).ok_or(SyscallError::NoSuchProcess)?;
    proc::signal::send(&target, sig)?;
    if t.process.killed() {
        drop(t);
        proc::end_current(cx.frame);
        return Ok(Done::Switched);
    }
    value(0)
}

/// `SignalWait`: until a signal the caller does not block is pending.
pub fn signal_wait(cx: &mut Context, []: [u64; 0]) -> SysResult {
    let t = cx.thread()?;
    if proc::signal::wait(&t, cx.frame)? {
        value(0)
    } else {
        Ok(Done::Switched)
    }
}

/// `TtyRead`.
pub fn tty_read(cx: &mut Context, [buf, len, flags]: [u64; 3]) -> SysResult {
    let t = cx.thread()?;
    if flags & !1 != 0 {
        return Err(SyscallError::InvalidArgument);
    }
    match proc::tty::read(&t, buf, len, flags & 1 != 0, cx.frame)? {
        proc::tty::Read::Done(n) => value(n),
        proc::tty::Read::Blocked => Ok(Done::Switched),
    }
}

/// `TtyControl`.
pub fn tty_control(cx: &mut Context, [op, arg]: [u64; 2]) -> SysResult {
    let t = cx.thread()?;
    value(proc::tty::control(&t, op, arg)?)
}

/// `SetPgid`.
pub fn set_pgid(cx: &mut Context, [pid, pgid]: [u64; 2]) -> SysResult {
    let t = cx.thread()?;
    let pid = u32::try_from(pid).map_err(|_| SyscallError::NoSuchProcess)?;
    let pgid = u32::try_from(pgid).map_err(|_| SyscallError::InvalidArgument)?;
    proc::set_pgid(&t.process, pid, pgid)?;
    value(0)
}

/// `GetPgid`.
pub fn get_pgid(cx: &mut Context, [pid]: [u64; 1]) -> SysResult {
    let t = cx.thread()?;
    let pid = u32::try_from(pid).map_err(|_| SyscallError::NoSuchProcess)?;
    value(u64::from(proc::get_pgid(&t.process, pid)?))
}

/// `SignalGroup`.
pub fn signal_group(cx: &mut Context, [pgid, sig]: [u64; 2]) -> SysResult {
    let t = cx.thread()?;
    let pgid = u32::try_from(pgid).map_err(|_| SyscallError::NoSuchProcess)?;
    let sig = u32::try_from(sig).map_err(|_| SyscallError::InvalidArgument)?;
    proc::signal::send_group(pgid, sig)?;
    if t.process.killed() {
        drop(t);
        proc::end_current(cx.frame);
        return Ok(Done::Switched);
    }
    value(0)
}

/// `LinuxClone`: a thread of the caller's process from the
/// [`k42_abi::linux::ThreadStart`] at `start`; its thread id.
pub fn clone(cx: &mut Context, [start]: [u64; 1]) -> SysResult {
    let t = cx.thread()?;
    let start: k42_abi::linux::ThreadStart = user::read_val(t.memory(), start)?;
    value(u64::from(proc::linux_clone(&t, &start)?))
}

/// `FutexWait`: block while the word at `addr` holds `val`.
pub fn futex_wait(cx: &mut Context, [addr, val, bitset, timeout_ns]: [u64; 4]) -> SysResult {
    let t = cx.thread()?;
    let val = u32::try_from(val).map_err(|_| SyscallError::InvalidArgument)?;
    let bitset = u32::try_from(bitset).map_err(|_| SyscallError::InvalidArgument)?;
    proc::futex::wait(&t, addr, val, bitset, timeout_ns, cx.frame)?;
    Ok(Done::Switched)
}

/// `FutexWake`: wake at most `n` waiters on `addr`.
pub fn futex_wake(cx: &mut Context, [addr, n, bitset]: [u64; 3]) -> SysResult {
    let t = cx.thread()?;
    let bitset = u32::try_from(bitset).map_err(|_| SyscallError::InvalidArgument)?;
    value(proc::futex::wake(t.memory(), addr, n, bitset)?)
}

/// `LinuxThreadExit`: end the calling thread; then, unless it was the
/// last, clear (and wake) the child-tid word and clear the personality's
/// stack word. After the thread is counted out, so that whoever the wake
/// lets go (pthread_join) finds the process without it (a fork then is
/// not refused as multithreaded).
pub fn thread_exit(cx: &mut Context, [code, clear_tid, stack_word]: [u64; 3]) -> SysResult {
    let t = cx.thread()?;
    let mem = t.memory_arc();
    let last = t.process.thread_count() == 1;
    t.process.thread_exiting(code);
    drop(t);
    proc::end_current(cx.frame);
    // User memory is reached through its own page tables, whichever
    // address space this CPU has loaded now. Bad addresses are skipped,
    // as Linux skips a bad clear_child_tid.
    if !last {
        if clear_tid != 0 && user::copy_out(&*mem, clear_tid, &0u32.to_le_bytes()).is_ok() {
            let _ = proc::futex::wake(&mem, clear_tid, 1, u32::MAX);
        }
        if stack_word != 0 {
            let _ = user::copy_out(&*mem, stack_word, &0u64.to_le_bytes());
        }
    }
    Ok(Done::Switched)
}

/// `SetGsBase`: the calling thread's user GS base.
pub fn set_gs_base(cx: &mut Context, [base]: [u64; 1]) -> SysResult {
    let t = cx.thread()?;
    if base >= k42_abi::syscall::USER_TOP {
        return Err(SyscallError::InvalidArgument);
    }
    t.set_gs_base(base);
    value(0)
}
