//! Processes and threads: arguments and environment, spawn, fork, exec,
//! wait, kill, threads, anonymous memory (`k42_abi::syscall`).
//!
//! Calls return `Result<_, SyscallError>`; the kernel's error codes
//! become [`SyscallError`] values.

use k42_abi::syscall::{
    ARGS_OFFSET, ProgramInfo, SPAWN_PIN, SPAWN_REPLICATED, SyscallError, status,
};

use crate::sys::sys_result;

/// The argument-and-environment block the kernel gave this process.
fn block(info: &'static ProgramInfo) -> &'static [u8] {
    let base = info as *const ProgramInfo as usize + ARGS_OFFSET as usize;
    // SAFETY: the kernel wrote `args_len` bytes at USER_INFO + ARGS_OFFSET,
    // in the read-only information page mapped for the process's life.
    unsafe { core::slice::from_raw_parts(base as *const u8, info.args_len as usize) }
}

fn strings(b: &'static [u8]) -> impl Iterator<Item = &'static str> {
    b.split(|&c| c == 0)
        .take_while(|s| !s.is_empty())
        .map(|s| core::str::from_utf8(s).unwrap_or(""))
}

/// The process's arguments (`argv[0]` is the program name).
pub fn args(info: &'static ProgramInfo) -> impl Iterator<Item = &'static str> {
    strings(block(info))
}

/// The process's environment, `KEY=VALUE` strings.
pub fn env(info: &'static ProgramInfo) -> impl Iterator<Item = &'static str> {
    let b = block(info);
    let n: usize = strings(b).map(|s| s.len() + 1).sum();
    strings(b.get(n + 1..).unwrap_or(&[]))
}

/// An argument block being built: arguments, then environment.
pub struct ArgBlock {
    buf: [u8; 1024],
    len: usize,
    env: bool,
}

impl ArgBlock {
    pub const fn new() -> Self {
        Self {
            buf: [0; 1024],
            len: 0,
            env: false,
        }
    }

    fn push_str(&mut self, s: &str) -> &mut Self {
        let n = s.len().min(self.buf.len().saturating_sub(self.len + 2));
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        self.buf[self.len] = 0;
        self.len += 1;
        self
    }

    /// Add an argument.
    pub fn arg(&mut self, a: &str) -> &mut Self {
        assert!(!self.env, "arguments come before the environment");
        self.push_str(a)
    }

    /// Add a number as a decimal argument.
    pub fn arg_num(&mut self, mut n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // SAFETY: ASCII digits.
        self.arg(unsafe { core::str::from_utf8_unchecked(&digits[i..]) })
    }

    /// Add an environment string `KEY=VALUE`.
    pub fn env(&mut self, kv: &str) -> &mut Self {
        if !self.env {
            self.buf[self.len] = 0;
            self.len += 1;
            self.env = true;
        }
        self.push_str(kv)
    }

    /// The block in the kernel's format.
    pub fn bytes(&mut self) -> &[u8] {
        if !self.env {
            self.buf[self.len] = 0;
            return &self.buf[..self.len + 1];
        }
        &self.buf[..self.len]
    }
}

impl Default for ArgBlock {
    fn default() -> Self {
        Self::new()
    }
}

/// Which Process object a spawned process gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regions {
    Shared,
    Replicated,
}

/// Start program `name` with the arguments in `args`; its pid.
pub fn spawn(name: &str, args: &mut ArgBlock, regions: Regions) -> Result<u32, SyscallError> {
    spawn_on(name, args, regions, None)
}

/// Start program `name` with the arguments in `args`, its first thread
/// kept on `cpu` if given; its pid.
pub fn spawn_on(
    name: &str,
    args: &mut ArgBlock,
    regions: Regions,
    cpu: Option<u32>,
) -> Result<u32, SyscallError> {
    let b = args.bytes();
    let mut flags = if regions == Regions::Replicated {
        SPAWN_REPLICATED
    } else {
        0
    };
    if let Some(c) = cpu {
        flags |= SPAWN_PIN | (c as u64) << 32;
    }
    sys_result(crate::sys::raw::Spawn::call([
        name.as_ptr() as u64,
        name.len() as u64,
        b.as_ptr() as u64,
        b.len() as u64,
        flags,
    ]))
    .map(|p| p as u32)
}

/// Copy this process: the child's pid in the parent, 0 in the child.
pub fn fork() -> Result<u32, SyscallError> {
    sys_result(crate::sys::raw::Fork::call([])).map(|p| p as u32)
}

/// Replace this process's program; returns only on failure.
pub fn exec(name: &str, args: &mut ArgBlock) -> SyscallError {
    let b = args.bytes();
    let r = crate::sys::raw::Exec::call([
        name.as_ptr() as u64,
        name.len() as u64,
        b.as_ptr() as u64,
        b.len() as u64,
    ]);
    sys_result(r).err().unwrap_or(SyscallError::InvalidArgument)
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(u8),
    /// Killed by a user-mode exception with this vector.
    Fault(u8),
    Killed,
    OutOfMemory,
    /// Ended by this Linux signal (its default action).
    Signaled(u8),
}

impl Ended {
    fn from_word(w: u64) -> Self {
        match w {
            0..=status::EXITED_MAX => Self::Exited(w as u8),
            w if w & !0xff == status::FAULT => Self::Fault(w as u8),
            status::OUT_OF_MEMORY => Self::OutOfMemory,
            w if w & !0xff == status::SIGNALED => Self::Signaled(w as u8),
            _ => Self::Killed,
        }
    }
}

/// Wait for child `pid` (or any child with `None`) to end.
pub fn wait(pid: Option<u32>) -> Result<(u32, Ended), SyscallError> {
    let r = sys_result(crate::sys::raw::Wait::call([
        pid.map_or(u64::MAX, u64::from),
        0,
    ]))?;
    Ok(((r >> 16) as u32, Ended::from_word(r & 0xffff)))
}

/// End child `pid` (or this process).
pub fn kill(pid: u32) -> Result<(), SyscallError> {
    sys_result(crate::sys::raw::Kill::call([pid as u64])).map(|_| ())
}

/// This process's id.
pub fn getpid() -> u32 {
    crate::sys::raw::GetPid::call([]) as u32
}

/// Start a thread at `entry(arg)` on the stack whose top is `stack_top`,
/// kept on `cpu` if given; its thread id.
pub fn thread_create(
    entry: extern "C" fn(u64) -> !,
    stack_top: u64,
    arg: u64,
    cpu: Option<u32>,
) -> Result<u32, SyscallError> {
    sys_result(crate::sys::raw::ThreadCreate::call([
        entry as usize as u64,
        stack_top,
        arg,
        cpu.map_or(0, |c| c as u64 + 1),
    ]))
    .map(|t| t as u32)
}

/// Start threads `1..n`, thread `i` running `worker(arg(i))` kept on
/// CPU `i % cpus()` with `stack` bytes of stack (all from one new
/// region), and keep the caller on CPU 0 as thread 0: how a program puts
/// a thread on every CPU.
pub fn threads_on_cpus(
    n: u64,
    worker: extern "C" fn(u64) -> !,
    stack: u64,
    arg: impl Fn(u64) -> u64,
) -> Result<(), SyscallError> {
    let cpus = cpus() as u64;
    pin(Some(0))?;
    let stacks = map_anon(n.max(1) * stack)?;
    for i in 1..n {
        let top = stacks + (i + 1) * stack - 8;
        thread_create(worker, top, arg(i), Some((i % cpus) as u32))?;
    }
    Ok(())
}

/// Keep the calling thread on `cpu` (moving it there), or let it run
/// anywhere with `None`.
pub fn pin(cpu: Option<u32>) -> Result<(), SyscallError> {
    sys_result(crate::sys::raw::Pin::call(
        [cpu.map_or(u64::MAX, u64::from)],
    ))
    .map(|_| ())
}

/// End the calling thread (the process, with `status`, if it was the
/// last).
pub fn thread_exit(status: u8) -> ! {
    crate::sys::raw::ThreadExit::call([status as u64]);
    loop {
        core::hint::spin_loop();
    }
}

/// Map `len` bytes of zero-filled memory; its address.
pub fn map_anon(len: u64) -> Result<u64, SyscallError> {
    sys_result(crate::sys::raw::MapAnon::call([len]))
}

/// CPUs in the machine.
pub fn cpus() -> u32 {
    // SAFETY: the kernel maps the ProgramInfo at USER_INFO for the
    // process's whole life.
    let info = unsafe { &*(k42_abi::syscall::USER_INFO as *const ProgramInfo) };
    info.cpus
}

/// Free page frames in the machine.
pub fn free_frames() -> u64 {
    crate::sys::raw::FreeFrames::call([]) as u64
}
