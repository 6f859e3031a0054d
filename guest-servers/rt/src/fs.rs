//! Files: the kernel's file memory objects (`k42_abi::syscall::file`)
//! and a POSIX-like client of the file server (`k42_abi::fs`) with file
//! descriptors.
//!
//! Name-space operations (open, stat, mkdir, readdir, unlink, rmdir,
//! rename, truncate) are PPC calls to the file server, found by name
//! through the name server. Opening a file gets a handle to its memory
//! object; `read`, `write` and `mmap` then go to the kernel directly, so
//! data never passes through the server. A descriptor keeps the handle,
//! the file position and the open mode, in this process.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::fs::{self as proto, FsError, Stat};
use k42_abi::syscall::{SyscallError, file};
use zerocopy::FromBytes;

use crate::ppc;
use crate::sync::SpinLock;
use crate::sys::sys_result;

/// A file operation's error: the kernel's or the file server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    Sys(SyscallError),
    Fs(FsError),
    /// No such descriptor.
    BadFd,
}

impl Error {
    fn from_raw(r: i64) -> Self {
        match FsError::from_raw(r) {
            Some(e) => Self::Fs(e),
            None => Self::Sys(SyscallError::from_raw(r).unwrap_or(SyscallError::InvalidArgument)),
        }
    }

    /// What it means, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Sys(e) => e.describe(),
            Self::Fs(e) => e.describe(),
            Self::BadFd => "bad file descriptor",
        }
    }
}

impl From<SyscallError> for Error {
    fn from(e: SyscallError) -> Self {
        Self::Sys(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

pub type Result<T> = core::result::Result<T, Error>;

// ---- File memory objects (system calls) ----

/// A new empty file object of `kind` (`file::KIND_*`); its handle.
pub fn file_create(kind: u64) -> Result<u64> {
    Ok(sys_result(crate::sys::raw::FileCreate::call([kind]))?)
}

/// Give process `pid` a handle to `h`'s object with `rights`.
pub fn file_grant(h: u64, pid: u64, rights: u64) -> Result<u64> {
    Ok(sys_result(crate::sys::raw::FileGrant::call([
        h, pid, rights,
    ]))?)
}

/// Drop handle `h`.
pub fn file_close(h: u64) -> Result<()> {
    sys_result(crate::sys::raw::FileClose::call([h]))?;
    Ok(())
}

/// Read at `off` into `buf` (one call: at most 64 KiB); the bytes read.
pub fn file_read(h: u64, off: u64, buf: &mut [u8]) -> Result<usize> {
    let r = crate::sys::raw::FileRead::call([h, off, buf.as_mut_ptr() as u64, buf.len() as u64]);
    Ok(sys_result(r)? as usize)
}

/// Write `buf` at `off` (or at the end with `append`), all of it or
/// nothing (one call: at most [`MAX_IO`] bytes, the rest is left); the
/// offset past the bytes written.
pub fn file_write(h: u64, off: u64, buf: &[u8], append: bool) -> Result<u64> {
    let flags = if append { file::WRITE_APPEND } else { 0 };
    let r =
        crate::sys::raw::FileWrite::call([h, off, buf.as_ptr() as u64, buf.len() as u64, flags]);
    Ok(sys_result(r)?)
}

/// The size of `h`'s file.
pub fn file_size(h: u64) -> Result<u64> {
    Ok(sys_result(crate::sys::raw::FileSize::call([h]))?)
}

/// The size and modification time of `h`'s file.
pub fn file_stat(h: u64) -> Result<k42_abi::syscall::file::FileState> {
    let mut st = k42_abi::syscall::file::FileState::default();
    sys_result(crate::sys::raw::FileStat::call([
        h,
        core::ptr::from_mut(&mut st) as u64,
    ]))?;
    Ok(st)
}

/// Set the modification time of `h`'s file (ns since 1970).
pub fn file_set_time(h: u64, ns: u64) -> Result<()> {
    sys_result(crate::sys::raw::FileSetTime::call([h, ns]))?;
    Ok(())
}

/// Set the size of `h`'s file.
pub fn file_truncate(h: u64, size: u64) -> Result<()> {
    sys_result(crate::sys::raw::FileTruncate::call([h, size]))?;
    Ok(())
}

/// Map the first `len` bytes of `h`'s file (writable if `writable`);
/// the mapping's address. The bytes stay mapped for the process's life
/// (there is no unmapping) and are shared with every other mapping,
/// reader and writer of the file (POSIX `MAP_SHARED`): other threads and
/// processes may change them at any time, so the caller decides how to
/// access them (volatile or atomic, or as a slice while it knows no one
/// writes).
pub fn file_map(h: u64, len: usize, writable: bool) -> Result<*mut u8> {
    let a = sys_result(crate::sys::raw::FileMap::call([
        h,
        len as u64,
        writable as u64,
    ]))?;
    Ok(a as *mut u8)
}

/// Image module `i`: its name and size (`NoSuchProgram` past the last).
pub fn module_info(i: usize) -> Result<(String, u64)> {
    let mut name = [0u8; k42_abi::syscall::MAX_NAME_LEN as usize];
    let size = sys_result(crate::sys::raw::ModuleInfo::call([
        i as u64,
        name.as_mut_ptr() as u64,
        name.len() as u64,
    ]))?;
    let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    let name = core::str::from_utf8(&name[..len])
        .map_err(|_| Error::Sys(SyscallError::InvalidArgument))?;
    Ok((String::from(name), size))
}

/// Read image module `i` at `off` into `buf`; the bytes read.
pub fn module_read(i: usize, off: u64, buf: &mut [u8]) -> Result<usize> {
    let r = crate::sys::raw::ModuleRead::call([
        i as u64,
        off,
        buf.as_mut_ptr() as u64,
        buf.len() as u64,
    ]);
    Ok(sys_result(r)? as usize)
}

// ---- The file server ----

/// The file server's handle, once found (0: not yet).
static SERVER: AtomicU64 = AtomicU64::new(0);

/// Wait until the file server has registered (it and the name server
/// may still be starting, in the background), trying for about `rounds`
/// polite waits; its handle, found once.
pub fn wait_for_server(rounds: u32) -> Result<u64> {
    match SERVER.load(Ordering::Acquire) {
        0 => {
            let h = ppc::wait_for_name(proto::SERVICE, rounds)?;
            SERVER.store(h, Ordering::Release);
            Ok(h)
        }
        h => Ok(h),
    }
}

/// The file server's handle (found through the name server once).
pub fn server() -> Result<u64> {
    wait_for_server(0)
}

/// Call the file server: `method`, `arg`, message `msg[..len]`; the
/// result and the reply's length.
pub fn request(
    method: u64,
    arg: u64,
    msg: &mut [u8; ppc::MAX],
    len: usize,
) -> Result<(u64, usize)> {
    let h = server()?;
    let (r, n) = ppc::call_raw(h, method, arg, msg, len);
    if r >= 0 {
        return Ok((r as u64, n));
    }
    let e = Error::from_raw(r);
    if matches!(
        e,
        Error::Sys(SyscallError::StaleHandle | SyscallError::ServerDied)
    ) {
        // A restarted server is found again next time.
        SERVER.store(0, Ordering::Release);
    }
    Err(e)
}

/// A message holding `path`.
fn path_msg(path: &str) -> Result<([u8; ppc::MAX], usize)> {
    if path.len() > proto::MAX_PATH {
        return Err(Error::Fs(FsError::BadPath));
    }
    let mut msg = [0u8; ppc::MAX];
    msg[..path.len()].copy_from_slice(path.as_bytes());
    Ok((msg, path.len()))
}

/// A name-space call on `path`: the result, the reply and its length.
pub fn on_path(method: u64, path: &str, arg: u64) -> Result<(u64, [u8; ppc::MAX], usize)> {
    let (mut msg, len) = path_msg(path)?;
    let (r, n) = request(method, arg, &mut msg, len)?;
    Ok((r, msg, n))
}

fn stat_of(reply: &[u8]) -> Result<Stat> {
    Stat::read_from_prefix(reply)
        .map(|(s, _)| s)
        .map_err(|_| Error::Sys(SyscallError::InvalidArgument))
}

/// What `path` is.
pub fn stat(path: &str) -> Result<Stat> {
    let (_, msg, n) = on_path(proto::STAT, path, 0)?;
    stat_of(&msg[..n])
}

/// What `path` is, a symbolic link itself rather than what it names.
pub fn lstat(path: &str) -> Result<Stat> {
    let (_, msg, n) = on_path(proto::STAT, path, proto::STAT_NOFOLLOW)?;
    stat_of(&msg[..n])
}

/// Make directory `path`.
pub fn mkdir(path: &str) -> Result<()> {
    on_path(proto::MKDIR, path, 0).map(|_| ())
}

/// Make directory `path` with permission bits `mode`.
pub fn mkdir_mode(path: &str, mode: u32) -> Result<()> {
    on_path(
        proto::MKDIR,
        path,
        proto::MODE_GIVEN | u64::from(mode & 0o7777),
    )
    .map(|_| ())
}

/// Make symbolic link `path` to `target`.
pub fn symlink(target: &str, path: &str) -> Result<()> {
    two_paths(proto::SYMLINK, target, path)
}

/// The target of symbolic link `path`.
pub fn readlink(path: &str) -> Result<String> {
    let (n, msg, len) = on_path(proto::READLINK, path, 0)?;
    let n = (n as usize).min(len);
    core::str::from_utf8(&msg[..n])
        .map(String::from)
        .map_err(|_| Error::Sys(SyscallError::InvalidArgument))
}

/// A second name `to` for file `from`.
pub fn link(from: &str, to: &str) -> Result<()> {
    two_paths(proto::LINK, from, to)
}

/// Set `path`'s permission bits.
pub fn chmod(path: &str, mode: u32) -> Result<()> {
    on_path(proto::CHMOD, path, u64::from(mode)).map(|_| ())
}

/// Set `path`'s modification time (nanoseconds).
pub fn set_time(path: &str, ns: u64) -> Result<()> {
    on_path(proto::SET_TIME, path, ns).map(|_| ())
}

/// Remove empty directory `path`.
pub fn rmdir(path: &str) -> Result<()> {
    on_path(proto::RMDIR, path, 0).map(|_| ())
}

/// Remove file `path` (open descriptors keep its data).
pub fn unlink(path: &str) -> Result<()> {
    on_path(proto::UNLINK, path, 0).map(|_| ())
}

/// Set file `path`'s size.
pub fn truncate(path: &str, size: u64) -> Result<()> {
    on_path(proto::TRUNCATE, path, size).map(|_| ())
}

/// Rename `from` to `to`.
pub fn rename(from: &str, to: &str) -> Result<()> {
    two_paths(proto::RENAME, from, to)
}

/// A call whose message is `a` then `b`, `arg` = `a`'s length.
fn two_paths(method: u64, a: &str, b: &str) -> Result<()> {
    let (from, to) = (a, b);
    if from.len() + to.len() > ppc::MAX
        || from.len() > proto::MAX_PATH
        || to.len() > proto::MAX_PATH
    {
        return Err(Error::Fs(FsError::BadPath));
    }
    let mut msg = [0u8; ppc::MAX];
    msg[..from.len()].copy_from_slice(from.as_bytes());
    msg[from.len()..from.len() + to.len()].copy_from_slice(to.as_bytes());
    request(method, from.len() as u64, &mut msg, from.len() + to.len()).map(|_| ())
}

/// A directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    /// `k42_abi::fs::KIND_FILE`, `KIND_DIR` or `KIND_SYMLINK`.
    pub kind: u8,
}

/// The entries of directory `path`, in name order.
pub fn readdir(path: &str) -> Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    loop {
        let (count, msg, n) = on_path(proto::READDIR, path, out.len() as u64)?;
        if count == 0 {
            return Ok(out);
        }
        let mut at = 0;
        for _ in 0..count {
            let bad = Error::Sys(SyscallError::InvalidArgument);
            if at + 2 > n {
                return Err(bad);
            }
            let (kind, len) = (msg[at], msg[at + 1] as usize);
            let name = msg.get(at + 2..at + 2 + len).ok_or(bad)?;
            let name = core::str::from_utf8(name).map_err(|_| bad)?;
            out.push(DirEntry {
                name: String::from(name),
                kind,
            });
            at += 2 + len;
        }
    }
}

// ---- Descriptors ----

/// Open for reading.
pub const O_READ: u32 = proto::open::READ as u32;
/// Open for writing.
pub const O_WRITE: u32 = proto::open::WRITE as u32;
/// Create if missing.
pub const O_CREATE: u32 = proto::open::CREATE as u32;
/// With `O_CREATE`: fail if it exists.
pub const O_EXCLUSIVE: u32 = proto::open::EXCLUSIVE as u32;
/// Cut to size 0.
pub const O_TRUNCATE: u32 = proto::open::TRUNCATE as u32;
/// A file this open creates gets the shared page index.
pub const O_SHARED_INDEX: u32 = proto::open::SHARED_INDEX as u32;
/// A file this open creates gets the distributed page index.
pub const O_DISTRIBUTED_INDEX: u32 = proto::open::DISTRIBUTED_INDEX as u32;
/// Every write goes to the end of the file (atomically).
pub const O_APPEND: u32 = 1 << 8;

/// An open file.
#[derive(Clone, Copy)]
struct Fd {
    handle: u64,
    pos: u64,
    append: bool,
}

/// This process's descriptors.
static FDS: SpinLock<Vec<Option<Fd>>> = SpinLock::new(Vec::new());

fn fd_get(fd: usize) -> Result<Fd> {
    FDS.lock().get(fd).copied().flatten().ok_or(Error::BadFd)
}

fn fd_set_pos(fd: usize, pos: u64) {
    if let Some(Some(f)) = FDS.lock().get_mut(fd) {
        f.pos = pos;
    }
}

/// Open `path` (`O_*` flags); a descriptor.
pub fn open(path: &str, flags: u32) -> Result<usize> {
    let wire = flags as u64 & proto::open::ALL;
    let (handle, _, _) = on_path(proto::OPEN, path, wire)?;
    let f = Fd {
        handle,
        pos: 0,
        append: flags & O_APPEND != 0,
    };
    let mut fds = FDS.lock();
    match fds.iter().position(|f| f.is_none()) {
        Some(i) => {
            fds[i] = Some(f);
            Ok(i)
        }
        None => {
            fds.push(Some(f));
            Ok(fds.len() - 1)
        }
    }
}

/// Close descriptor `fd`.
pub fn close(fd: usize) -> Result<()> {
    let f = FDS
        .lock()
        .get_mut(fd)
        .and_then(|f| f.take())
        .ok_or(Error::BadFd)?;
    file_close(f.handle)
}

/// Read into `buf` at the descriptor's position; the bytes read (0 at
/// the end).
pub fn read(fd: usize, buf: &mut [u8]) -> Result<usize> {
    let f = fd_get(fd)?;
    let n = pread(fd, buf, f.pos)?;
    fd_set_pos(fd, f.pos + n as u64);
    Ok(n)
}

/// Read into `buf` at `off`; the bytes read.
pub fn pread(fd: usize, buf: &mut [u8], off: u64) -> Result<usize> {
    let f = fd_get(fd)?;
    let mut done = 0;
    while done < buf.len() {
        let n = file_read(f.handle, off + done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// Write `buf` at the descriptor's position (the end with `O_APPEND`);
/// the bytes written.
pub fn write(fd: usize, buf: &[u8]) -> Result<usize> {
    let f = fd_get(fd)?;
    let mut pos = f.pos;
    let mut done = 0;
    for chunk in buf.chunks(MAX_IO) {
        // Each call writes all of its chunk or nothing; after a failure
        // what was written counts (a short write), as in POSIX.
        match file_write(f.handle, pos, chunk, f.append) {
            Ok(end) => {
                pos = end;
                done += chunk.len();
            }
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    fd_set_pos(fd, pos);
    Ok(done)
}

/// Bytes one FileRead or FileWrite call moves at most.
pub const MAX_IO: usize = file::MAX_IO as usize;

/// Where [`seek`] counts from.
#[derive(Clone, Copy, Debug)]
pub enum Whence {
    Start(u64),
    Current(i64),
    End(i64),
}

/// Move the descriptor's position; the new position.
pub fn seek(fd: usize, to: Whence) -> Result<u64> {
    let f = fd_get(fd)?;
    let pos = match to {
        Whence::Start(o) => Some(o),
        Whence::Current(d) => f.pos.checked_add_signed(d),
        Whence::End(d) => file_size(f.handle)?.checked_add_signed(d),
    }
    .ok_or(Error::Sys(SyscallError::InvalidArgument))?;
    fd_set_pos(fd, pos);
    Ok(pos)
}

/// The size of the file behind `fd`.
pub fn fsize(fd: usize) -> Result<u64> {
    file_size(fd_get(fd)?.handle)
}

/// Set the size of the file behind `fd`.
pub fn ftruncate(fd: usize, size: u64) -> Result<()> {
    file_truncate(fd_get(fd)?.handle, size)
}

/// Map the first `len` bytes of the file behind `fd`, shared (see
/// [`file_map`]).
pub fn mmap(fd: usize, len: usize, writable: bool) -> Result<*mut u8> {
    file_map(fd_get(fd)?.handle, len, writable)
}

/// The kernel handle behind `fd` (for tests of the kernel's checks).
pub fn handle_of(fd: usize) -> Result<u64> {
    Ok(fd_get(fd)?.handle)
}
