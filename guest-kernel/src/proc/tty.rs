//! The console as a Linux terminal: the input k42vmm forwards (its stdin)
//! through a line discipline — canonical lines with echo, erase and kill,
//! end of file, and the signal characters sent to the foreground process
//! group — with the `termios` settings and the foreground group Linux
//! programs read and set.
//!
//! ```text
//! k42vmm stdin ─► ConsoleRead hypercall ◄─ pump (the input interrupt on
//!                 vCPU 0, and every TtyRead)
//!   ISIG  ^C ^\ ^Z ─► SIGINT/SIGQUIT/SIGTSTP to the foreground group
//!   the host terminal resized ─► window size, SIGWINCH to that group
//!   ICANON line editing (erase, kill, ^D) ─► complete lines ─► ready
//!   else  each byte ─► ready
//!   ECHO  ─► the console
//! TtyRead ─► bytes from ready (a line at most when canonical); parks
//!            while none, like a pipe read; end of file after ^D on an
//!            empty line, or when k42vmm's stdin has ended
//! ```
//!
//! When k42vmm's stdin is a pipe or a file, the discipline starts raw
//! (no echo, no editing, no signals) and the console is not a terminal
//! (`TtyControl` says `NotPermitted`: ENOTTY to Linux programs), as on
//! Linux with a redirected stdin. Output is not processed here (k42vmm
//! leaves the host terminal's own output processing on).

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use k42_abi::Hypercall;
use k42_abi::hypercall::{CONSOLE_END, CONSOLE_INPUT_VECTOR, CONSOLE_RESIZE, MAX_CONSOLE_READ};
use k42_abi::syscall::SyscallError;
use linux_raw_sys::general as g;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::sched::{self, Thread};
use super::{Process, signal, wake_parked};
use crate::arch::{self, TrapFrame};
use crate::mm::user;
use crate::sync::SpinLock;

/// Linux's `struct termios` (as `TCGETS` passes it).
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Termios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    pub cc: [u8; 19],
}

const _: () = assert!(core::mem::size_of::<Termios>() == core::mem::size_of::<g::termios>());

/// A terminal's settings as Linux starts a console.
const TERMINAL: Termios = {
    let mut cc = [0u8; 19];
    cc[g::VINTR as usize] = 0x03;
    cc[g::VQUIT as usize] = 0x1c;
    cc[g::VERASE as usize] = 0x7f;
    cc[g::VKILL as usize] = 0x15;
    cc[g::VEOF as usize] = 0x04;
    cc[g::VMIN as usize] = 1;
    cc[g::VSTART as usize] = 0x11;
    cc[g::VSTOP as usize] = 0x13;
    cc[g::VSUSP as usize] = 0x1a;
    cc[g::VREPRINT as usize] = 0x12;
    cc[g::VDISCARD as usize] = 0x0f;
    cc[g::VWERASE as usize] = 0x17;
    cc[g::VLNEXT as usize] = 0x16;
    Termios {
        iflag: g::ICRNL | g::IXON,
        oflag: g::OPOST | g::ONLCR,
        cflag: g::B38400 | g::CS8 | g::CREAD | g::HUPCL,
        lflag: g::ISIG
            | g::ICANON
            | g::ECHO
            | g::ECHOE
            | g::ECHOK
            | g::ECHOCTL
            | g::ECHOKE
            | g::IEXTEN,
        line: 0,
        cc,
    }
};

/// `TtyControl` operations.
pub use k42_abi::syscall::tty_op as op;

/// The window size when k42vmm does not know the terminal's.
const DEFAULT_WINSIZE: (u32, u32) = (24, 80);

struct Tty {
    /// k42vmm forwards input; `terminal`: that input is a terminal.
    enabled: bool,
    terminal: bool,
    termios: Termios,
    /// The canonical line being edited.
    line: Vec<u8>,
    /// Bytes a read may take.
    ready: VecDeque<u8>,
    /// ^D on an empty line: the next read that finds nothing ready
    /// returns end of file.
    eof: bool,
    /// k42vmm's input has ended (every byte read).
    ended: bool,
    /// The foreground process group (0: none).
    fg: u32,
    /// Rows and columns (k42vmm's terminal's at start; TIOCSWINSZ).
    winsize: (u32, u32),
    /// Processes with a thread parked in a read.
    waiting: Vec<Arc<Process>>,
}

static TTY: SpinLock<Tty> = SpinLock::new(Tty {
    enabled: false,
    terminal: false,
    termios: TERMINAL,
    line: Vec::new(),
    ready: VecDeque::new(),
    eof: false,
    ended: false,
    fg: 0,
    winsize: DEFAULT_WINSIZE,
    waiting: Vec::new(),
});

/// Set while a CPU pumps input (one at a time keeps bytes in order).
static PUMPING: AtomicBool = AtomicBool::new(false);

/// Set the console up from boot info: whether k42vmm forwards input and
/// whether it is a terminal; the input interrupt's handler.
pub fn init(input: bool, terminal: bool, (rows, cols): (u32, u32)) {
    let mut t = TTY.lock();
    t.enabled = input;
    t.terminal = terminal;
    if rows > 0 && cols > 0 && rows <= 0xffff && cols <= 0xffff {
        t.winsize = (rows, cols);
    }
    if !terminal {
        // Raw: bytes as they come, no echo, no signals.
        t.termios.iflag = 0;
        t.termios.lflag = 0;
    }
    drop(t);
    if input {
        arch::set_handler(CONSOLE_INPUT_VECTOR, on_input);
    }
}

fn on_input(_: &mut TrapFrame) {
    pump();
}

/// Take what k42vmm has for us through the discipline.
fn pump() {
    if PUMPING.swap(true, Ordering::Acquire) {
        return;
    }
    let mut buf = [0u8; 256];
    const _: () = assert!(256 <= MAX_CONSOLE_READ);
    let mut echo: Vec<u8> = Vec::new();
    let mut signals: Vec<(u32, u32)> = Vec::new();
    let mut woke = Vec::new();
    while let Some(pa) = arch::virt_to_phys(buf.as_mut_ptr() as u64) {
        let n = arch::hypercall(Hypercall::console_read(pa, buf.len() as u64));
        // k42vmm wrote the buffer behind the compiler's back.
        let buf = core::hint::black_box(&mut buf);
        let mut t = TTY.lock();
        if n == CONSOLE_END {
            t.ended = true;
            woke.append(&mut t.waiting);
            break;
        }
        if n <= 0 {
            break;
        }
        if n & CONSOLE_RESIZE != 0 {
            // The host terminal was resized: as a TIOCSWINSZ on it.
            let size = (((n >> 16) & 0xffff) as u32, (n & 0xffff) as u32);
            if let Some(fg) = t.set_winsize(size) {
                signals.push((fg, g::SIGWINCH));
            }
            continue;
        }
        for &b in &buf[..(n as usize).min(buf.len())] {
            t.input(b, &mut echo, &mut signals);
        }
        if !t.ready.is_empty() || t.eof {
            woke.append(&mut t.waiting);
        }
    }
    PUMPING.store(false, Ordering::Release);
    if !echo.is_empty() {
        crate::console::write_bytes(&echo);
    }
    for (pgid, sig) in signals {
        let _ = signal::send_group(pgid, sig);
    }
    for p in woke {
        wake_parked(&p);
    }
}

impl Tty {
    /// Set the window size; the foreground group to send SIGWINCH when
    /// it changed.
    fn set_winsize(&mut self, size: (u32, u32)) -> Option<u32> {
        let changed = self.winsize != size;
        self.winsize = size;
        (changed && self.fg != 0).then_some(self.fg)
    }

    /// One input byte through the discipline.
    fn input(&mut self, mut b: u8, echo: &mut Vec<u8>, signals: &mut Vec<(u32, u32)>) {
        let tio = self.termios;
        let (iflag, lflag, cc) = (tio.iflag, tio.lflag, tio.cc);
        if b == b'\r' && iflag & g::IGNCR != 0 {
            return;
        }
        if b == b'\r' && iflag & g::ICRNL != 0 {
            b = b'\n';
        } else if b == b'\n' && iflag & g::INLCR != 0 {
            b = b'\r';
        }
        if lflag & g::ISIG != 0 {
            let sig = if b == cc[g::VINTR as usize] {
                Some(g::SIGINT)
            } else if b == cc[g::VQUIT as usize] {
                Some(g::SIGQUIT)
            } else if b == cc[g::VSUSP as usize] {
                Some(g::SIGTSTP)
            } else {
                None
            };
            if let Some(sig) = sig {
                if lflag & g::ECHO != 0 {
                    echo_ctl(b, lflag, echo);
                }
                if lflag & g::NOFLSH == 0 {
                    self.line.clear();
                }
                if self.fg != 0 {
                    signals.push((self.fg, sig));
                }
                return;
            }
        }
        if lflag & g::ICANON == 0 {
            self.ready.push_back(b);
            if lflag & g::ECHO != 0 {
                echo.push(b);
            }
            return;
        }
        if b == cc[g::VERASE as usize] || b == 0x08 {
            if self.line.pop().is_some() && lflag & g::ECHO != 0 {
                echo.extend_from_slice(if lflag & g::ECHOE != 0 {
                    b"\x08 \x08"
                } else {
                    b"\x08"
                });
            }
        } else if b == cc[g::VKILL as usize] {
            let n = self.line.len();
            self.line.clear();
            if lflag & g::ECHO != 0 {
                for _ in 0..n {
                    echo.extend_from_slice(b"\x08 \x08");
                }
            }
        } else if b == cc[g::VEOF as usize] {
            if self.line.is_empty() {
                self.eof = true;
            } else {
                self.ready.extend(self.line.drain(..));
            }
        } else if b == b'\n'
            || (b != 0 && (b == cc[g::VEOL as usize] || b == cc[g::VEOL2 as usize]))
        {
            self.line.push(b);
            self.ready.extend(self.line.drain(..));
            if lflag & (g::ECHO | g::ECHONL) != 0 {
                echo.push(b);
            }
        } else {
            self.line.push(b);
            if lflag & g::ECHO != 0 {
                if b < 0x20 && b != b'\t' {
                    echo_ctl(b, lflag, echo);
                } else {
                    echo.push(b);
                }
            }
        }
    }
}

/// Echo control character `b` (as `^C` with ECHOCTL).
fn echo_ctl(b: u8, lflag: u32, echo: &mut Vec<u8>) {
    if lflag & g::ECHOCTL != 0 && b < 0x20 {
        echo.extend_from_slice(&[b'^', b + 0x40]);
    } else {
        echo.push(b);
    }
}

/// What a read found.
pub enum Read {
    /// Bytes copied (0: end of file).
    Done(u64),
    /// The thread is parked; the CPU runs another.
    Blocked,
}

/// `TtyRead`: up to `len` bytes into the caller's `buf` (a line at most
/// when canonical); with `nonblock`, `WouldBlock` instead of waiting.
pub fn read(
    t: &Arc<Thread>,
    buf: u64,
    len: u64,
    nonblock: bool,
    frame: &mut TrapFrame,
) -> Result<Read, SyscallError> {
    if !TTY.lock().enabled {
        return Err(SyscallError::NotPermitted);
    }
    pump();
    let p = &t.process;
    let mut tty = TTY.lock();
    let pgid = super::get_pgid(p, 0)?;
    if tty.terminal && tty.fg != 0 && tty.fg != pgid {
        // A background job reading the terminal: SIGTTIN to its group
        // (which stops it; the read is made again once it continues), or
        // EIO when the reader would not stop (Linux's
        // `__tty_check_change`; orphaned groups are not told apart).
        drop(tty);
        if signal::ignores_or_blocks(p, g::SIGTTIN) {
            return Err(SyscallError::Background);
        }
        let _ = signal::send_group(pgid, g::SIGTTIN);
        return Err(SyscallError::Interrupted);
    }
    if tty.ready.is_empty() {
        if tty.eof {
            tty.eof = false;
            return Ok(Read::Done(0));
        }
        if tty.ended || len == 0 {
            return Ok(Read::Done(0));
        }
        if nonblock {
            return Err(SyscallError::WouldBlock);
        }
        let mut slot = p.parked.lock();
        if slot.is_some() {
            return Err(SyscallError::WouldBlock);
        }
        if signal::deliverable(p) {
            return Err(SyscallError::Interrupted);
        }
        frame.rip -= k42_abi::syscall::SYSCALL_SITE.len() as u64;
        *slot = Some(sched::take_current(frame));
        drop(slot);
        if !tty.waiting.iter().any(|w| Arc::ptr_eq(w, p)) {
            tty.waiting.push(p.clone());
        }
        drop(tty);
        sched::switch_to_next(frame);
        return Ok(Read::Blocked);
    }
    let canonical = tty.termios.lflag & g::ICANON != 0;
    let mut out = Vec::new();
    while (out.len() as u64) < len.min(MAX_CONSOLE_READ) {
        let Some(b) = tty.ready.pop_front() else {
            break;
        };
        out.push(b);
        if canonical && b == b'\n' {
            break;
        }
    }
    drop(tty);
    if let Err(e) = user::copy_out(t.memory(), buf, &out) {
        // Put them back: nothing is lost on a bad buffer.
        let mut tty = TTY.lock();
        for &b in out.iter().rev() {
            tty.ready.push_front(b);
        }
        return Err(e);
    }
    Ok(Read::Done(out.len() as u64))
}

/// `TtyControl` for thread `t`: `op` with `arg`.
pub fn control(t: &Arc<Thread>, op: u64, arg: u64) -> Result<u64, SyscallError> {
    if op == op::READY {
        // For any console input, terminal or not.
        if !TTY.lock().enabled {
            return Err(SyscallError::NotPermitted);
        }
        pump();
        let tty = TTY.lock();
        return Ok(u64::from(!tty.ready.is_empty() || tty.eof || tty.ended));
    }
    if !TTY.lock().terminal {
        return Err(SyscallError::NotPermitted);
    }
    match op {
        op::GET => {
            let tio = TTY.lock().termios;
            user::copy_out(t.memory(), arg, tio.as_bytes())?;
            Ok(0)
        }
        op::SET => {
            let tio: Termios = user::read_val(t.memory(), arg)?;
            TTY.lock().termios = tio;
            Ok(0)
        }
        op::GET_PGRP => {
            // The first process to ask finds its own group in the
            // foreground, as a session leader acquiring its terminal.
            let mut tty = TTY.lock();
            if tty.fg == 0 {
                tty.fg = super::get_pgid(&t.process, 0)?;
            }
            Ok(u64::from(tty.fg))
        }
        op::SET_PGRP => {
            let pgid = u32::try_from(arg).map_err(|_| SyscallError::InvalidArgument)?;
            TTY.lock().fg = pgid;
            Ok(0)
        }
        op::GET_WINSIZE => {
            let (rows, cols) = TTY.lock().winsize;
            Ok(u64::from(rows) << 16 | u64::from(cols))
        }
        op::SET_WINSIZE => {
            if arg > 0xffff_ffff {
                return Err(SyscallError::InvalidArgument);
            }
            let size = ((arg >> 16) as u32, (arg & 0xffff) as u32);
            let fg = TTY.lock().set_winsize(size);
            if let Some(fg) = fg {
                // No such group any more is not the caller's error.
                let _ = super::signal::send_group(fg, g::SIGWINCH);
            }
            Ok(0)
        }
        _ => Err(SyscallError::InvalidArgument),
    }
}
