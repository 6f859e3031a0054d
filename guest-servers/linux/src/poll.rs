//! Waiting for descriptors: `poll`, `ppoll`, `select` and `pselect6`.
//!
//! Each round asks every descriptor whether it is ready — a pipe end the
//! kernel (`PipePoll`), the console its terminal (`TtyControl` READY);
//! files, directories, `/dev/null` and `/dev/zero` always are — and, if
//! none is, gives the CPU away (backing off) until one is, the timeout
//! passes, or a signal is to be delivered (then the restart code
//! `ERESTARTNOHAND`: EINTR once a handler runs). Linux wakes a poller
//! from the objects' wait queues; polling here costs a kernel call per
//! pipe per round, and rounds back off.

use alloc::vec::Vec;

use k42_abi::syscall::{SyscallError, file, tty_op};
use k42_rt::sys::{raw, sys_result};
use linux_raw_sys::errno as e;
use linux_raw_sys::general as g;

use crate::LinuxResult;
use crate::fd::{self, Kind};

/// Most descriptors one call may name.
const MAX_POLL_FDS: u64 = 1024;

/// Readiness of descriptor `fd`: POLLIN, POLLOUT, POLLHUP bits as Linux
/// reports them (POLLNVAL for a closed descriptor).
fn ready(fd: i32) -> u16 {
    let Ok(open) = fd::get(fd as u64) else {
        return g::POLLNVAL as u16;
    };
    let (inb, outb, hup) = (g::POLLIN as u16, g::POLLOUT as u16, g::POLLHUP as u16);
    match open.kind {
        Kind::Pipe { handle } => {
            let bits = sys_result(raw::PipePoll::call([handle])).unwrap_or(0);
            let mut r = 0;
            if bits & file::POLL_READABLE != 0 {
                r |= inb;
            }
            if bits & file::POLL_WRITABLE != 0 {
                r |= outb;
            }
            if bits & file::POLL_HANGUP != 0 {
                r |= if open.writable() {
                    g::POLLERR as u16
                } else {
                    hup
                };
            }
            r
        }
        Kind::Console { .. } => {
            let readable = match sys_result(raw::TtyControl::call([tty_op::READY, 0])) {
                Ok(n) => n != 0,
                // No input forwarded: a read ends at once (end of file).
                Err(SyscallError::NotPermitted) => true,
                Err(_) => false,
            };
            outb | if readable { inb } else { 0 }
        }
        _ => inb | outb,
    }
}

/// Wait until `check` finds something (its count), `deadline_ns` passes
/// (0 then; `None`: no deadline), or a signal is to be delivered.
fn wait(deadline_ns: Option<u64>, mut check: impl FnMut() -> u64) -> LinuxResult {
    let mut round = 0;
    loop {
        let n = check();
        if n > 0 {
            return Ok(n);
        }
        if deadline_ns.is_some_and(|d| crate::system::monotonic_ns() >= d) {
            return Ok(0);
        }
        if crate::signal::interrupted() {
            return Err(crate::signal::ERESTARTNOHAND);
        }
        crate::thread::unlocked(|| k42_rt::sys::yield_now(round));
        round = (round + 1).min(64);
    }
}

/// The deadline `ms` milliseconds from now (negative: none).
fn deadline_ms(ms: i64) -> Option<u64> {
    (ms >= 0).then(|| crate::system::monotonic_ns() + ms as u64 * 1_000_000)
}

/// The deadline a timespec at `ts` gives (NULL: none).
fn deadline_ts(ts: u64) -> Result<Option<u64>, u32> {
    if ts == 0 {
        return Ok(None);
    }
    let t: g::__kernel_timespec = crate::uaccess::read(ts)?;
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return Err(e::EINVAL);
    }
    let ns = (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64;
    Ok(Some(crate::system::monotonic_ns().saturating_add(ns)))
}

/// `poll`.
pub fn poll(fds: u64, nfds: u64, timeout_ms: i64) -> LinuxResult {
    poll_until(fds, nfds, deadline_ms(timeout_ms))
}

/// `ppoll` (the signal mask argument is applied for the wait).
pub fn ppoll(fds: u64, nfds: u64, ts: u64, mask: u64, size: u64) -> LinuxResult {
    let deadline = deadline_ts(ts)?;
    crate::signal::with_mask(mask, size, || poll_until(fds, nfds, deadline))
}

fn poll_until(fds: u64, nfds: u64, deadline: Option<u64>) -> LinuxResult {
    if nfds > MAX_POLL_FDS {
        return Err(e::EINVAL);
    }
    let mut list: Vec<g::pollfd> = crate::uaccess::read_array(fds, nfds as usize)?;
    let n = wait(deadline, || {
        let mut n = 0;
        for p in list.iter_mut() {
            p.revents = 0;
            if p.fd < 0 {
                continue;
            }
            let r = ready(p.fd);
            let always = (g::POLLERR | g::POLLHUP | g::POLLNVAL) as u16;
            p.revents = (r & (p.events as u16 | always)) as i16;
            if p.revents != 0 {
                n += 1;
            }
        }
        n
    })?;
    crate::uaccess::write_array(fds, &list)?;
    Ok(n)
}

/// An `fd_set` of the program's, as words (`n` descriptors).
struct FdSet {
    ptr: u64,
    words: Vec<u64>,
}

impl FdSet {
    /// The set at `ptr` (NULL: none).
    fn read(ptr: u64, n: usize) -> Result<Option<Self>, u32> {
        if ptr == 0 {
            return Ok(None);
        }
        let words = crate::uaccess::read_array(ptr, n.div_ceil(64))?;
        Ok(Some(Self { ptr, words }))
    }

    fn has(&self, fd: usize) -> bool {
        self.words[fd / 64] & 1 << (fd % 64) != 0
    }
}

/// `select`.
pub fn select(n: u64, r: u64, w: u64, x: u64, tv: u64) -> LinuxResult {
    let deadline = if tv == 0 {
        None
    } else {
        let t: g::__kernel_old_timeval = crate::uaccess::read(tv)?;
        if t.tv_sec < 0 || !(0..1_000_000).contains(&t.tv_usec) {
            return Err(e::EINVAL);
        }
        let ns = (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_usec as u64 * 1000;
        Some(crate::system::monotonic_ns().saturating_add(ns))
    };
    select_until(n, r, w, x, deadline)
}

/// `pselect6` (the sixth argument points at the signal mask and its
/// size).
pub fn pselect6(n: u64, r: u64, w: u64, x: u64, ts: u64, sig: u64) -> LinuxResult {
    let deadline = deadline_ts(ts)?;
    let (mask, size) = if sig == 0 {
        (0, 8)
    } else {
        // The program's { const sigset_t *ss; size_t ss_len; }.
        crate::uaccess::read::<[u64; 2]>(sig)?.into()
    };
    crate::signal::with_mask(mask, size, || select_until(n, r, w, x, deadline))
}

fn select_until(n: u64, r: u64, w: u64, x: u64, deadline: Option<u64>) -> LinuxResult {
    if n > MAX_POLL_FDS {
        return Err(e::EINVAL);
    }
    let n = n as usize;
    let sets = [FdSet::read(r, n)?, FdSet::read(w, n)?, FdSet::read(x, n)?];
    for fd in 0..n {
        if sets.iter().flatten().any(|s| s.has(fd)) && fd::get(fd as u64).is_err() {
            return Err(e::EBADF);
        }
    }
    let mut out: [Vec<u64>; 3] = core::array::from_fn(|_| alloc::vec![0u64; n.div_ceil(64)]);
    let count = wait(deadline, || {
        let mut count = 0;
        for o in out.iter_mut() {
            o.iter_mut().for_each(|w| *w = 0);
        }
        for fd in 0..n {
            if !sets.iter().flatten().any(|s| s.has(fd)) {
                continue;
            }
            let rd = ready(fd as i32);
            let want = [
                rd & (g::POLLIN | g::POLLHUP) as u16 != 0,
                rd & (g::POLLOUT | g::POLLERR) as u16 != 0,
                false,
            ];
            for (k, set) in sets.iter().enumerate() {
                if set.as_ref().is_some_and(|s| s.has(fd)) && want[k] {
                    out[k][fd / 64] |= 1 << (fd % 64);
                    count += 1;
                }
            }
        }
        count
    })?;
    for (k, set) in sets.iter().enumerate() {
        if let Some(s) = set {
            crate::uaccess::write_array(s.ptr, &out[k])?;
        }
    }
    Ok(count)
}
