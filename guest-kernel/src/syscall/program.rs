//! The calls every user program has, kernel-run or a process: console
//! output, benchmark records, the CPU, the null call, backing off, the
//! trace view.

use k42_abi::bench::{BenchMode, BenchRecord};
use k42_abi::hypercall::MAX_CONSOLE_WRITE;
use k42_abi::hypercall::Stream;
use k42_abi::syscall::{SyscallError, WRITE_STDERR, WRITE_STDOUT};

use super::{Caller, Context, Done, SysResult, value};
use crate::mm::user;
use crate::{arch, percpu, proc};

/// `Write`: bytes to the console's stdout or stderr stream (at most the
/// console hypercall's limit at once).
pub fn write(cx: &mut Context, [ptr, len, stream]: [u64; 3]) -> SysResult {
    if len > MAX_CONSOLE_WRITE {
        return Err(SyscallError::InvalidArgument);
    }
    let stream = match stream {
        WRITE_STDOUT => Stream::Stdout,
        WRITE_STDERR => Stream::Stderr,
        _ => return Err(SyscallError::InvalidArgument),
    };
    let text = cx.with_user(|space| user::copy_in(space, ptr, len, MAX_CONSOLE_WRITE))?;
    crate::console::write_bytes_to(stream, &text);
    value(len)
}

/// `BenchRecord`: forward a benchmark record to k42vmm, with the CPU and
/// mode set by the kernel, not the program.
pub fn bench_record(cx: &mut Context, [ptr, len]: [u64; 2]) -> SysResult {
    if len != core::mem::size_of::<BenchRecord>() as u64 {
        return Err(SyscallError::InvalidArgument);
    }
    let mut rec: BenchRecord = cx.with_user(|space| user::read_val(space, ptr))?;
    if rec.name().is_none() {
        return Err(SyscallError::InvalidArgument);
    }
    rec.cpu = percpu::cpu_id();
    rec.mode = BenchMode::User as u32;
    crate::bench::report(&rec);
    value(0)
}

/// `GetCpu`: the caller's CPU.
pub fn get_cpu(_: &mut Context, []: [u64; 0]) -> SysResult {
    value(percpu::cpu_id() as u64)
}

/// `Null`: nothing (the system-call round trip's benchmark).
pub fn null(_: &mut Context, []: [u64; 0]) -> SysResult {
    value(0)
}

/// `Yield`: a process thread gives its CPU to the next thread queued
/// here, if any; otherwise (or for a kernel-run program) the host CPU is
/// given away for a while, longer as `round` grows.
pub fn yield_now(cx: &mut Context, [round]: [u64; 1]) -> SysResult {
    if let Caller::Process(_) = cx.caller() {
        cx.frame.rax = 0;
        if proc::sched::yield_current(cx.frame) {
            // The yielding thread gets 0 when it next runs.
            return Ok(Done::Switched);
        }
    }
    arch::backoff(round.min(u32::MAX as u64) as u32);
    value(0)
}

/// `TraceView`: where the trace region is mapped for a kernel-run
/// program, or 0.
pub fn trace_view(_: &mut Context, []: [u64; 0]) -> SysResult {
    value(crate::user::trace_view())
}
