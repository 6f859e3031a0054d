//! Pipes: a kernel byte queue of [`CAPACITY`] bytes with a read end and a
//! write end, each reached through a process's file handles (so a forked
//! child shares them and a process's ends go when it does).
//!
//! A read of an empty pipe whose write end is still held, and a write to
//! a full pipe whose read end is held, block: the thread is parked in
//! its process's parked slot with its `rip` back at the system-call site,
//! and the process is noted on the pipe; whoever changes the pipe (a
//! read, a write, the last handle of an end going) wakes every noted
//! process, whose thread then makes the call again. A killed process's
//! thread is woken by the kill and ends; a Linux signal the process does
//! not block wakes it too, and the call then returns `Interrupted`. Reading an empty pipe with no
//! writer is end of file (0); writing with no reader is `BrokenPipe`.
//!
//! ```text
//! FileWrite(write end) ─► copy into the queue (as much as fits; up to
//!     PIPE_BUF bytes all or nothing) ─► wake waiting processes
//! FileRead(read end) ─► copy out what is there ─► wake waiting writers
//! ```

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;

use k42_abi::syscall::{SyscallError, file};

use super::memory::Memory;
use super::sched::{self, Thread};
use super::{Process, wake_parked};
use crate::arch::TrapFrame;
use crate::mm::user;
use crate::sync::SpinLock;

/// Bytes a pipe holds (Linux's default).
pub const CAPACITY: usize = 64 * 1024;
/// Writes up to this size are all or nothing (POSIX `PIPE_BUF`).
const PIPE_BUF: usize = 4096;

/// A pipe: the queue and who waits on it.
pub struct Pipe {
    state: SpinLock<State>,
}

struct State {
    bytes: VecDeque<u8>,
    /// Whether each end is still held by some handle.
    reader: bool,
    writer: bool,
    /// Processes whose thread is parked waiting for this pipe to change.
    waiting: Vec<Arc<Process>>,
}

/// One end of a pipe, held by handles (shared by `Arc`: the end goes
/// when the last handle does).
pub struct End {
    pipe: Arc<Pipe>,
    pub write: bool,
}

impl Drop for End {
    fn drop(&mut self) {
        let waiting = {
            let mut s = self.pipe.state.lock();
            if self.write {
                s.writer = false;
            } else {
                s.reader = false;
                s.bytes = VecDeque::new();
            }
            core::mem::take(&mut s.waiting)
        };
        wake(waiting);
    }
}

/// A new pipe: (read end, write end).
pub fn create() -> (Arc<End>, Arc<End>) {
    let pipe = Arc::new(Pipe {
        state: SpinLock::new(State {
            bytes: VecDeque::new(),
            reader: true,
            writer: true,
            waiting: Vec::new(),
        }),
    });
    (
        Arc::new(End {
            pipe: pipe.clone(),
            write: false,
        }),
        Arc::new(End { pipe, write: true }),
    )
}

fn wake(waiting: Vec<Arc<Process>>) {
    for p in waiting {
        wake_parked(&p);
    }
}

/// What a pipe call did.
pub enum Outcome {
    /// Bytes moved (0 from a read: end of file).
    Done(u64),
    /// The thread is parked; the CPU runs another (`frame` holds it).
    Blocked,
}

/// Park thread `t` (its call to be made again when woken), note its
/// process on the pipe, let go of the pipe's lock and run another thread.
fn block(
    t: &Arc<Thread>,
    mut s: crate::sync::SpinLockGuard<'_, State>,
    frame: &mut TrapFrame,
) -> Result<Outcome, SyscallError> {
    let p = &t.process;
    let mut slot = p.parked.lock();
    if slot.is_some() {
        // One parked thread per process (a server's main thread here).
        return Err(SyscallError::WouldBlock);
    }
    // Checked under the parking lock (see `signal`).
    if super::signal::deliverable(p) {
        return Err(SyscallError::Interrupted);
    }
    frame.rip -= k42_abi::syscall::SYSCALL_SITE.len() as u64;
    *slot = Some(sched::take_current(frame));
    drop(slot);
    if !s.waiting.iter().any(|w| Arc::ptr_eq(w, p)) {
        s.waiting.push(p.clone());
    }
    drop(s);
    sched::switch_to_next(frame);
    Ok(Outcome::Blocked)
}

/// Read up to `len` bytes into the caller's `buf`; with `nonblock`,
/// `WouldBlock` instead of waiting.
pub fn read(
    t: &Arc<Thread>,
    end: &End,
    buf: u64,
    len: u64,
    nonblock: bool,
    frame: &mut TrapFrame,
) -> Result<Outcome, SyscallError> {
    if end.write {
        return Err(SyscallError::NotPermitted);
    }
    let mut s = end.pipe.state.lock();
    if s.bytes.is_empty() {
        if !s.writer || len == 0 {
            return Ok(Outcome::Done(0));
        }
        if nonblock {
            return Err(SyscallError::WouldBlock);
        }
        return block(t, s, frame);
    }
    let n = (len as usize).min(s.bytes.len()).min(file::MAX_IO as usize);
    let (a, b) = s.bytes.as_slices();
    let first = n.min(a.len());
    copy_to(t.memory(), buf, &a[..first])?;
    copy_to(t.memory(), buf + first as u64, &b[..n - first])?;
    s.bytes.drain(..n);
    let waiting = core::mem::take(&mut s.waiting);
    drop(s);
    wake(waiting);
    Ok(Outcome::Done(n as u64))
}

fn copy_to(mem: &Memory, buf: u64, bytes: &[u8]) -> Result<(), SyscallError> {
    if bytes.is_empty() {
        return Ok(());
    }
    user::copy_out(mem, buf, bytes)
}

/// Write up to `len` bytes of the caller's `buf`: as much as fits (up to
/// `PIPE_BUF` bytes only all at once); with `nonblock`, `WouldBlock`
/// instead of waiting for room.
pub fn write(
    t: &Arc<Thread>,
    end: &End,
    buf: u64,
    len: u64,
    nonblock: bool,
    frame: &mut TrapFrame,
) -> Result<Outcome, SyscallError> {
    if !end.write {
        return Err(SyscallError::NotPermitted);
    }
    let len = len.min(file::MAX_IO) as usize;
    // The bytes first, outside the lock (faults may take a while).
    let bytes = user::copy_in(t.memory(), buf, len as u64, file::MAX_IO)?;
    let mut s = end.pipe.state.lock();
    if !s.reader {
        return Err(SyscallError::BrokenPipe);
    }
    let room = CAPACITY - s.bytes.len();
    let need = if len <= PIPE_BUF { len } else { 1 };
    if room < need.max(1) && len > 0 {
        if nonblock {
            return Err(SyscallError::WouldBlock);
        }
        return block(t, s, frame);
    }
    let n = len.min(room);
    s.bytes.extend(&bytes[..n]);
    let waiting = core::mem::take(&mut s.waiting);
    drop(s);
    wake(waiting);
    Ok(Outcome::Done(n as u64))
}

/// What a `poll` of `end` finds: [`file::POLL_READABLE`] (bytes to read,
/// or end of file), [`file::POLL_WRITABLE`] (room), [`file::POLL_HANGUP`]
/// (the other end is gone).
pub fn poll(end: &End) -> u64 {
    let s = end.pipe.state.lock();
    if end.write {
        if !s.reader {
            file::POLL_WRITABLE | file::POLL_HANGUP
        } else if s.bytes.len() < CAPACITY {
            file::POLL_WRITABLE
        } else {
            0
        }
    } else if !s.writer {
        file::POLL_READABLE | file::POLL_HANGUP
    } else if !s.bytes.is_empty() {
        file::POLL_READABLE
    } else {
        0
    }
}
