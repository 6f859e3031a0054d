//! The kernel console: `print!`/`println!`.
//!
//! Output goes to COM1 until boot info has been read, then through the
//! console hypercall (one VM exit per message instead of one per byte),
//! unless the command line says `console=serial`. A message is formatted
//! into a buffer on the stack and written in one piece, so lines from
//! different CPUs do not interleave.

use core::fmt::{self, Write};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

use k42_abi::Hypercall;
use k42_abi::hypercall::Stream;

use crate::arch;

static USE_HYPERCALL: AtomicBool = AtomicBool::new(false);

/// Route output through the console hypercall from now on.
pub fn use_hypercall(yes: bool) {
    USE_HYPERCALL.store(yes, Ordering::Release);
}

/// Write `s` to the console as one piece.
pub fn write_str(s: &str) {
    write_bytes(s.as_bytes());
}

/// Write `s` (any bytes: a program's output) to the console as one piece.
pub fn write_bytes(s: &[u8]) {
    write_bytes_to(Stream::Stdout, s);
}

/// Write `s` to k42vmm's `stream` as one piece (stderr goes to the serial
/// port with everything else before the hypercall console is up).
pub fn write_bytes_to(stream: Stream, s: &[u8]) {
    if s.is_empty() {
        return;
    }
    if USE_HYPERCALL.load(Ordering::Acquire) {
        let pa = arch::virt_to_phys(s.as_ptr() as u64).expect("console text in kernel memory");
        arch::hypercall(Hypercall::console_write(pa, s.len() as u64, stream));
    } else {
        arch::serial_write(s);
    }
}

/// A fixed-size text buffer on the stack; text beyond its capacity is
/// dropped (and the buffer marked truncated).
///
/// The buffer starts uninitialised: zeroing it would cost a store per
/// byte, which under emulation is a visible part of every `println!`.
pub struct FixedBuf<const N: usize> {
    buf: [MaybeUninit<u8>; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> FixedBuf<N> {
    pub const fn new() -> Self {
        Self {
            buf: [MaybeUninit::uninit(); N],
            len: 0,
            truncated: false,
        }
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: the first `len` bytes were written by `write_str`, which
        // copies only whole UTF-8 sequences (it cuts at a char boundary).
        unsafe {
            core::str::from_utf8_unchecked(core::slice::from_raw_parts(
                self.buf.as_ptr().cast(),
                self.len,
            ))
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }
}

impl<const N: usize> Default for FixedBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        for (dst, &b) in self.buf[self.len..self.len + take]
            .iter_mut()
            .zip(&s.as_bytes()[..take])
        {
            dst.write(b);
        }
        self.len += take;
        if take < s.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

/// A console writer that flushes whenever its buffer fills, so long
/// messages still come out whole when they fit and in order when not.
struct ConsoleWriter {
    buf: FixedBuf<512>,
}

impl Write for ConsoleWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while !rest.is_empty() {
            let before = self.buf.len;
            self.buf.write_str(rest)?;
            let taken = self.buf.len - before;
            rest = &rest[taken..];
            if self.buf.truncated || !rest.is_empty() {
                write_str(self.buf.as_str());
                self.buf.clear();
            }
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let mut w = ConsoleWriter {
        buf: FixedBuf::new(),
    };
    let _ = w.write_fmt(args);
    write_str(w.buf.as_str());
}

/// Print to the kernel console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Print a line to the kernel console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
