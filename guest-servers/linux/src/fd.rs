//! The descriptor table: each descriptor names an open file description
//! (shared by `dup` and by the descriptors an exec carries over), with
//! its position, status flags and what it opens; and what an exec
//! carries to the next program (descriptors without close-on-exec, the
//! working directory, umask, ids; the signal mask and ignored signals
//! carry over in the kernel's signal page).
//!
//! Not yet: positions shared with a forked child (each process has its
//! own copy after fork, where Linux shares the description).

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::syscall::{ARGS_OFFSET, ProgramInfo, USER_INFO};
use k42_rt::sync::SpinLock;
use linux_raw_sys::errno as e;
use linux_raw_sys::general as g;

use crate::LinuxResult;

/// Most descriptors a process may have (RLIMIT_NOFILE).
pub const MAX_FDS: usize = 1024;

/// What a description opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The console: k42vmm's terminal or pipe. Written, it is k42vmm's
    /// stdout, or its stderr for the description the first Linux program
    /// gets as descriptor 2.
    Console { stderr: bool },
    /// A file: its kernel handle.
    File { handle: u64 },
    /// A directory (read with getdents64 through the file server).
    Dir,
    /// `/dev/null`.
    Null,
    /// `/dev/zero`.
    Zero,
    /// One end of a pipe: its kernel handle.
    Pipe { handle: u64 },
}

/// An open file description.
pub struct Open {
    pub kind: Kind,
    /// `O_ACCMODE`, `O_APPEND`, `O_NONBLOCK` as opened or set.
    pub flags: AtomicU64,
    pub pos: AtomicU64,
    /// The absolute path it was opened by (directories list it; fstat
    /// asks the server).
    pub path: String,
}

impl Open {
    pub fn new(kind: Kind, flags: u32, path: String) -> Arc<Self> {
        Arc::new(Self {
            kind,
            flags: AtomicU64::new(u64::from(flags)),
            pos: AtomicU64::new(0),
            path,
        })
    }

    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed) as u32
    }

    pub fn readable(&self) -> bool {
        self.flags() & g::O_ACCMODE != g::O_WRONLY
    }

    pub fn writable(&self) -> bool {
        self.flags() & g::O_ACCMODE != g::O_RDONLY
    }
}

impl Open {
    /// The kernel handle it holds, if any.
    pub fn handle(&self) -> Option<u64> {
        match self.kind {
            Kind::File { handle } | Kind::Pipe { handle } => Some(handle),
            _ => None,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(handle) = self.handle() {
            let _ = k42_rt::fs::file_close(handle);
        }
    }
}

/// A descriptor.
#[derive(Clone)]
pub struct Fd {
    pub open: Arc<Open>,
    pub cloexec: bool,
}

/// Process-wide state the personality keeps.
pub struct State {
    pub fds: Vec<Option<Fd>>,
    pub cwd: String,
    pub umask: u32,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
}

pub static STATE: SpinLock<State> = SpinLock::new(State {
    fds: Vec::new(),
    cwd: String::new(),
    umask: 0o022,
    ppid: 1,
    pgid: 0,
    sid: 0,
});

/// The description behind `fd`.
pub fn get(fd: u64) -> Result<Arc<Open>, u32> {
    let st = STATE.lock();
    st.fds
        .get(fd as usize)
        .and_then(|f| f.as_ref())
        .map(|f| f.open.clone())
        .ok_or(e::EBADF)
}

/// Install `open` at the lowest free descriptor at or above `from`.
pub fn install(open: Arc<Open>, cloexec: bool, from: usize) -> LinuxResult {
    let mut st = STATE.lock();
    let i = (from..MAX_FDS)
        .find(|&i| st.fds.get(i).is_none_or(|f| f.is_none()))
        .ok_or(e::EMFILE)?;
    if st.fds.len() <= i {
        st.fds.resize(i + 1, None);
    }
    st.fds[i] = Some(Fd { open, cloexec });
    Ok(i as u64)
}

/// `close`.
pub fn close(fd: u64) -> LinuxResult {
    let old = {
        let mut st = STATE.lock();
        st.fds
            .get_mut(fd as usize)
            .and_then(|f| f.take())
            .ok_or(e::EBADF)?
    };
    // The description (and its kernel handle) goes outside the lock.
    drop(old);
    Ok(0)
}

/// `dup`.
pub fn dup(fd: u64) -> LinuxResult {
    install(get(fd)?, false, 0)
}

/// `dup2`.
pub fn dup2(old: u64, new: u64) -> LinuxResult {
    if old == new {
        return get(old).map(|_| new);
    }
    dup3(old, new, 0)
}

/// `dup3`.
pub fn dup3(old: u64, new: u64, flags: u64) -> LinuxResult {
    if old == new || flags & !u64::from(g::O_CLOEXEC) != 0 {
        return Err(e::EINVAL);
    }
    if new as usize >= MAX_FDS {
        return Err(e::EBADF);
    }
    let open = get(old)?;
    let replaced = {
        let mut st = STATE.lock();
        if st.fds.len() <= new as usize {
            st.fds.resize(new as usize + 1, None);
        }
        st.fds[new as usize].replace(Fd {
            open,
            cloexec: flags != 0,
        })
    };
    drop(replaced);
    Ok(new)
}

/// `fcntl`.
pub fn fcntl(fd: u64, cmd: u64, arg: u64) -> LinuxResult {
    let cmd = u32::try_from(cmd).map_err(|_| e::EINVAL)?;
    match cmd {
        g::F_DUPFD | g::F_DUPFD_CLOEXEC => {
            if arg as usize >= MAX_FDS {
                return Err(e::EINVAL);
            }
            install(get(fd)?, cmd == g::F_DUPFD_CLOEXEC, arg as usize)
        }
        g::F_GETFD => {
            let st = STATE.lock();
            let f = st
                .fds
                .get(fd as usize)
                .and_then(|f| f.as_ref())
                .ok_or(e::EBADF)?;
            Ok(if f.cloexec {
                u64::from(g::FD_CLOEXEC)
            } else {
                0
            })
        }
        g::F_SETFD => {
            let mut st = STATE.lock();
            let f = st
                .fds
                .get_mut(fd as usize)
                .and_then(|f| f.as_mut())
                .ok_or(e::EBADF)?;
            f.cloexec = arg & u64::from(g::FD_CLOEXEC) != 0;
            Ok(0)
        }
        g::F_GETFL => Ok(u64::from(get(fd)?.flags())),
        g::F_SETFL => {
            let open = get(fd)?;
            let settable = u64::from(g::O_APPEND | g::O_NONBLOCK);
            let old = open.flags.load(Ordering::Relaxed);
            open.flags
                .store((old & !settable) | (arg & settable), Ordering::Relaxed);
            Ok(0)
        }
        _ => Err(e::EINVAL),
    }
}

/// `umask`.
pub fn umask(mask: u64) -> LinuxResult {
    let mut st = STATE.lock();
    let old = st.umask;
    st.umask = (mask & 0o777) as u32;
    Ok(u64::from(old))
}

// ---- What an exec carries ----

const CARRY_MAGIC: u32 = 0x3243_584c; // "LXC2"

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// The state the next program inherits, in the personality's format:
/// header, cwd, the descriptions of descriptors without close-on-exec
/// (shared ones once), then (descriptor, description index) pairs; and
/// the kernel handles those descriptions hold (the exec keeps them and
/// closes the rest).
pub fn carry() -> (Vec<u8>, Vec<u64>) {
    let st = STATE.lock();
    let mut opens: Vec<Arc<Open>> = Vec::new();
    let mut fds: Vec<(u32, u32)> = Vec::new();
    for (i, f) in st.fds.iter().enumerate() {
        let Some(f) = f.as_ref().filter(|f| !f.cloexec) else {
            continue;
        };
        let k = match opens.iter().position(|o| Arc::ptr_eq(o, &f.open)) {
            Some(k) => k,
            None => {
                opens.push(f.open.clone());
                opens.len() - 1
            }
        };
        fds.push((i as u32, k as u32));
    }
    let mut out = Vec::new();
    for v in [
        CARRY_MAGIC,
        opens.len() as u32,
        fds.len() as u32,
        st.umask,
        st.ppid,
        st.pgid,
        st.sid,
        st.cwd.len() as u32,
    ] {
        put32(&mut out, v);
    }
    out.extend_from_slice(st.cwd.as_bytes());
    for o in &opens {
        let (kind, handle) = match o.kind {
            Kind::Console { stderr: false } => (0u32, 0),
            Kind::Console { stderr: true } => (6, 0),
            Kind::File { handle } => (1, handle),
            Kind::Dir => (2, 0),
            Kind::Null => (3, 0),
            Kind::Zero => (4, 0),
            Kind::Pipe { handle } => (5, handle),
        };
        put32(&mut out, kind);
        put32(&mut out, o.flags());
        put64(&mut out, handle);
        put64(&mut out, o.pos.load(Ordering::Relaxed));
        put32(&mut out, o.path.len() as u32);
        out.extend_from_slice(o.path.as_bytes());
    }
    for (fd, k) in fds {
        put32(&mut out, fd);
        put32(&mut out, k);
    }
    let keep = opens.iter().filter_map(|o| o.handle()).collect();
    (out, keep)
}

/// Reads a carried state.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u32(&mut self) -> Option<u32> {
        let (v, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_le_bytes(*v))
    }
    fn u64(&mut self) -> Option<u64> {
        let (v, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*v))
    }
    fn string(&mut self, n: u32) -> Option<String> {
        let n = n as usize;
        if n > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8(s.into()).ok()
    }
}

/// Set the state up at start: from what the exec carried, or for the
/// first Linux program, the console as descriptors 0, 1 and 2.
pub fn start(info: &ProgramInfo) {
    let len = (info.args_len as usize).min(4096 - ARGS_OFFSET as usize);
    // SAFETY: the kernel maps the information page at USER_INFO,
    // read-only, for the process's life; `len` bytes of carried state
    // start at ARGS_OFFSET within it.
    let bytes = unsafe { core::slice::from_raw_parts((USER_INFO + ARGS_OFFSET) as *const u8, len) };
    if len == 0 || restore(bytes).is_none() {
        let console = |stderr| {
            Open::new(
                Kind::Console { stderr },
                g::O_RDWR,
                String::from("/dev/console"),
            )
        };
        let out = console(false);
        let mut st = STATE.lock();
        st.fds = [out.clone(), out, console(true)]
            .into_iter()
            .map(|open| {
                Some(Fd {
                    open,
                    cloexec: false,
                })
            })
            .collect();
        st.cwd = String::from("/");
        st.pgid = k42_rt::sys::raw::GetPid::call([]) as u32;
        st.sid = st.pgid;
    }
}

fn restore(bytes: &[u8]) -> Option<()> {
    let mut r = Reader(bytes);
    if r.u32()? != CARRY_MAGIC {
        return None;
    }
    let (nopens, nfds, umask, ppid, pgid, sid, cwd_len) = (
        r.u32()?,
        r.u32()?,
        r.u32()?,
        r.u32()?,
        r.u32()?,
        r.u32()?,
        r.u32()?,
    );
    let cwd = r.string(cwd_len)?;
    let mut opens = Vec::new();
    for _ in 0..nopens {
        let (kind, flags, handle, pos) = (r.u32()?, r.u32()?, r.u64()?, r.u64()?);
        let path_len = r.u32()?;
        let path = r.string(path_len)?;
        let kind = match kind {
            0 => Kind::Console { stderr: false },
            6 => Kind::Console { stderr: true },
            1 => Kind::File { handle },
            2 => Kind::Dir,
            3 => Kind::Null,
            4 => Kind::Zero,
            5 => Kind::Pipe { handle },
            _ => return None,
        };
        let o = Open::new(kind, flags, path);
        o.pos.store(pos, Ordering::Relaxed);
        opens.push(o);
    }
    let mut fds: Vec<Option<Fd>> = Vec::new();
    for _ in 0..nfds {
        let (fd, k) = (r.u32()? as usize, r.u32()? as usize);
        if fd >= MAX_FDS {
            return None;
        }
        if fds.len() <= fd {
            fds.resize(fd + 1, None);
        }
        fds[fd] = Some(Fd {
            open: opens.get(k)?.clone(),
            cloexec: false,
        });
    }
    let mut st = STATE.lock();
    *st = State {
        fds,
        cwd,
        umask,
        ppid,
        pgid,
        sid,
    };
    Some(())
}
