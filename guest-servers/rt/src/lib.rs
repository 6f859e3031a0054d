//! The user runtime for k42 programs.
//!
//! A program is a `no_std`, `no_main` binary that names its entry with
//! [`main!`]. The kernel starts it with up to four `u64` arguments in
//! registers; `_start` aligns the stack and calls the entry, and the
//! program ends with the entry's return value as its exit status.
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! k42_rt::main!(run);
//! fn run(args: k42_rt::Args) -> u8 { k42_rt::println!("hello"); 0 }
//! ```
#![no_std]

pub mod sys;

use core::fmt::{self, Write};

pub use sys::*;

/// The four arguments the kernel passes (`rdi`, `rsi`, `rdx`, `rcx`).
#[derive(Clone, Copy, Debug)]
pub struct Args(pub [u64; 4]);

/// Name the program's entry function, `fn(Args) -> u8`.
#[macro_export]
macro_rules! main {
    ($entry:path) => {
        #[unsafe(no_mangle)]
        extern "C" fn k42_user_main(a0: u64, a1: u64, a2: u64, a3: u64) -> ! {
            let f: fn($crate::Args) -> u8 = $entry;
            $crate::exit(f($crate::Args([a0, a1, a2, a3])))
        }
    };
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
