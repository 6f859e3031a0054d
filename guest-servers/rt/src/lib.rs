//! The user runtime for k42 programs.
//!
//! A program is a `no_std`, `no_main` binary that names its entry with
//! [`main!`]. The kernel starts it on one CPU, or on every CPU at once
//! sharing its memory, passing the read-only [`ProgramInfo`] and the CPU
//! index; `_start` aligns the stack and calls the entry, and the program
//! ends (on that CPU) with the entry's return value as its exit status.
//!
//! [`trace`] logs events into the kernel's per-CPU trace buffers.
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! k42_rt::main!(run);
//! fn run(start: k42_rt::Start) -> u8 { k42_rt::println!("hello"); 0 }
//! ```
//!
//! `alloc` works when the kernel gave the program a heap ([`heap`]);
//! [`sync`] has a lock and a barrier that wait politely across CPUs.
#![no_std]

extern crate alloc;

pub mod fs;
pub mod heap;
pub mod ppc;
pub mod process;
pub mod sync;
pub mod sys;
pub mod trace;

use core::fmt::{self, Write};

pub use k42_abi::syscall::ProgramInfo;
pub use sys::*;

/// What a program starts with on one CPU.
#[derive(Clone, Copy, Debug)]
pub struct Start {
    /// The kernel's program information (arguments, CPU count, TSC rate).
    pub info: &'static ProgramInfo,
    /// The CPU this instance runs on.
    pub cpu: u32,
}

impl Start {
    /// Program argument `i`.
    pub fn arg(&self, i: usize) -> u64 {
        self.info.args[i]
    }

    /// Nanoseconds in `ticks` of the TSC.
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        (ticks as u128 * 1_000_000 / self.info.tsc_khz.max(1) as u128) as u64
    }
}

/// Name the program's entry function, `fn(Start) -> u8`.
#[macro_export]
macro_rules! main {
    ($entry:path) => {
        #[unsafe(no_mangle)]
        extern "C" fn k42_user_main(info: u64, cpu: u64) -> ! {
            let f: fn($crate::Start) -> u8 = $entry;
            $crate::exit(f($crate::start(info, cpu)))
        }
    };
}

#[doc(hidden)]
pub fn start(info: u64, cpu: u64) -> Start {
    // SAFETY: the kernel maps a ProgramInfo at `info` (USER_INFO),
    // read-only, for the program's whole life.
    let info = unsafe { &*(info as *const ProgramInfo) };
    if info.magic != k42_abi::syscall::PROGRAM_INFO_MAGIC {
        exit(120);
    }
    heap::init(info);
    Start {
        info,
        cpu: cpu as u32,
    }
}

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    and rsp, -16
    xor ebp, ebp
    call k42_user_main
    ud2
"#
);

/// Console output, formatted on the stack and written with one system
/// call per 256 bytes.
pub struct Console {
    buf: [u8; 256],
    len: usize,
}

impl Console {
    pub const fn new() -> Self {
        Self {
            buf: [0; 256],
            len: 0,
        }
    }

    pub fn flush(&mut self) {
        if self.len > 0 {
            // SAFETY: only whole UTF-8 strings are copied in.
            write(unsafe { core::str::from_utf8_unchecked(&self.buf[..self.len]) });
            self.len = 0;
        }
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > self.buf.len() {
            self.flush();
        }
        if s.len() > self.buf.len() {
            write(s);
        } else {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let mut c = Console::new();
    let _ = c.write_fmt(args);
    c.flush();
}

/// Print to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::_print(format_args!($($arg)*)) };
}

/// Print a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut c = Console::new();
    let _ = write!(c, "user program panicked: {}", info.message());
    if let Some(l) = info.location() {
        let _ = write!(c, " at {}:{}", l.file(), l.line());
    }
    let _ = c.write_str("\n");
    c.flush();
    exit(101)
}

/// The time-stamp counter (native speed in user mode).
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}
