//! Files, directories, paths and the console: the Linux calls on
//! descriptors and names, served with the file server (names, through
//! PPC) and the kernel's file objects (data, through a handle).
//!
//! Paths are resolved here: relative to the working directory or a
//! directory descriptor, `.` and `..` folded, `/proc/self/exe` read as the
//! program's path, `/dev/null`, `/dev/zero` and `/dev/console` served
//! here; symbolic links are the file server's, which follows them. Modes
//! and modification times are the file server's; every file is owned by
//! root (`chown` is accepted and changes nothing). Not yet: a terminal
//! on the console, access and change times apart from the modification
//! time, a modification time that follows writes.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use k42_abi::fs as proto;
use k42_abi::hypercall::MAX_CONSOLE_WRITE;
use k42_abi::syscall::{SyscallError, WRITE_STDERR, WRITE_STDOUT, file, tty_op};
use k42_rt::fs::{self as rtfs, Error};
use linux_raw_sys::errno as e;
use linux_raw_sys::general as g;

use crate::LinuxResult;
use crate::fd::{self, Kind, Open, STATE};

/// `AT_FDCWD` as the calls receive it.
pub const AT_FDCWD: u64 = g::AT_FDCWD as i64 as u64;
/// Longest path a call may pass (Linux's PATH_MAX).
const PATH_MAX: usize = 4096;

/// The errno for a file-server or kernel error.
pub fn errno(err: Error) -> u32 {
    match err {
        Error::Fs(f) => match f {
            proto::FsError::NotFound => e::ENOENT,
            proto::FsError::Exists => e::EEXIST,
            proto::FsError::NotADirectory => e::ENOTDIR,
            proto::FsError::IsADirectory => e::EISDIR,
            proto::FsError::NotEmpty => e::ENOTEMPTY,
            proto::FsError::BadPath => e::ENAMETOOLONG,
            proto::FsError::Invalid => e::EINVAL,
            proto::FsError::Loop => e::ELOOP,
            proto::FsError::NotALink => e::EINVAL,
            proto::FsError::NotPermitted => e::EPERM,
        },
        Error::Sys(s) => sys_errno(s),
        Error::BadFd => e::EBADF,
    }
}

/// The errno for a kernel error.
pub fn sys_errno(s: SyscallError) -> u32 {
    match s {
        SyscallError::BadAddress => e::EFAULT,
        SyscallError::NoMemory => e::ENOMEM,
        SyscallError::TooManyHandles => e::EMFILE,
        SyscallError::NotPermitted => e::EACCES,
        SyscallError::BadHandle => e::EBADF,
        SyscallError::NoSuchProcess => e::ESRCH,
        SyscallError::NoChildren => e::ECHILD,
        SyscallError::ProcessLimit => e::EAGAIN,
        SyscallError::BadProgram => e::ENOEXEC,
        SyscallError::TooLong => e::E2BIG,
        SyscallError::NoSuchCall => e::ENOSYS,
        SyscallError::Interrupted => crate::signal::ERESTARTSYS,
        SyscallError::Background => e::EIO,
        _ => e::EINVAL,
    }
}

/// The NUL-terminated string at `ptr` in the program's memory (EFAULT
/// for a bad pointer, ENAMETOOLONG past PATH_MAX).
pub fn cstr(ptr: u64) -> Result<Vec<u8>, u32> {
    crate::uaccess::string(ptr, PATH_MAX, e::ENAMETOOLONG)
}

/// Fold `.` and `..` of `path` onto the absolute `base`.
pub fn join(base: &str, path: &[u8]) -> Result<String, u32> {
    let path = core::str::from_utf8(path).map_err(|_| e::EINVAL)?;
    let mut parts: Vec<&str> = Vec::new();
    if !path.starts_with('/') {
        parts.extend(base.split('/').filter(|p| !p.is_empty()));
    }
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut out = String::with_capacity(path.len() + base.len() + 1);
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The absolute path of `path` (at `ptr`) relative to `dirfd`.
pub fn resolve(dirfd: u64, ptr: u64) -> Result<String, u32> {
    let path = cstr(ptr)?;
    if path.is_empty() {
        return Err(e::ENOENT);
    }
    let base = if path[0] == b'/' || dirfd == AT_FDCWD {
        STATE.lock().cwd.clone()
    } else {
        let open = fd::get(dirfd)?;
        if open.kind != Kind::Dir {
            return Err(e::ENOTDIR);
        }
        open.path.clone()
    };
    let abs = join(&base, &path)?;
    Ok(if abs == "/proc/self/exe" {
        crate::process::exe_path()
    } else {
        abs
    })
}

/// Paths the personality serves itself.
fn device(path: &str) -> Option<Kind> {
    match path {
        "/dev/null" => Some(Kind::Null),
        "/dev/zero" => Some(Kind::Zero),
        "/dev/console" | "/dev/tty" => Some(Kind::Console { stderr: false }),
        _ => None,
    }
}

/// Permission bits `mode` as the umask leaves them.
fn masked(mode: u64) -> u32 {
    (mode as u32 & 0o7777) & !STATE.lock().umask
}

/// `openat`.
pub fn openat(dirfd: u64, path: u64, flags: u64, mode: u64) -> LinuxResult {
    let flags = flags as u32;
    let path = resolve(dirfd, path)?;
    let cloexec = flags & g::O_CLOEXEC != 0;
    let keep = flags & (g::O_ACCMODE | g::O_APPEND | g::O_NONBLOCK);
    if let Some(kind) = device(&path) {
        return fd::install(Open::new(kind, keep, path), cloexec, 0);
    }
    let mut wire = match flags & g::O_ACCMODE {
        g::O_RDONLY => proto::open::READ,
        g::O_WRONLY => proto::open::WRITE,
        _ => proto::open::READ | proto::open::WRITE,
    };
    if flags & g::O_CREAT != 0 {
        wire |= proto::open::CREATE
            | proto::open::WRITE
            | proto::MODE_GIVEN
            | u64::from(masked(mode)) << proto::open::MODE_SHIFT;
    }
    if flags & g::O_EXCL != 0 {
        wire |= proto::open::EXCLUSIVE;
    }
    if flags & g::O_TRUNC != 0 && flags & g::O_ACCMODE != g::O_RDONLY {
        wire |= proto::open::TRUNCATE;
    }
    match rtfs::on_path(proto::OPEN, &path, wire) {
        Ok((handle, _, _)) => {
            if flags & g::O_DIRECTORY != 0 {
                let _ = rtfs::file_close(handle);
                return Err(e::ENOTDIR);
            }
            fd::install(Open::new(Kind::File { handle }, keep, path), cloexec, 0)
        }
        Err(Error::Fs(proto::FsError::IsADirectory))
            if flags & g::O_ACCMODE == g::O_RDONLY && flags & g::O_CREAT == 0 =>
        {
            fd::install(Open::new(Kind::Dir, keep, path), cloexec, 0)
        }
        Err(err) => Err(errno(err)),
    }
}

/// Whose memory a buffer is: the program's (checked: its system calls may
/// not reach the personality's memory) or the personality's own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Whose {
    Program,
    Personality,
}

impl Whose {
    /// EFAULT for a program's buffer that is not the program's memory.
    fn check(self, buf: u64, len: u64) -> Result<(), u32> {
        match self {
            Whose::Program => crate::uaccess::program(buf, len),
            Whose::Personality => Ok(()),
        }
    }
}

/// Read from `open` at `pos` into the program's `buf`; the bytes read.
fn read_at(open: &Open, pos: u64, buf: u64, len: u64) -> LinuxResult {
    read_into(open, pos, buf, len, Whose::Program)
}

/// Read from `open` at `pos` into `whose` `buf`; the bytes read.
fn read_into(open: &Open, pos: u64, buf: u64, len: u64, whose: Whose) -> LinuxResult {
    crate::uaccess::check(buf, len)?;
    match open.kind {
        Kind::Console { .. } => console_read(open, buf, len, whose),
        Kind::Null => Ok(0),
        Kind::Zero => {
            crate::uaccess::clear(buf, len)?;
            Ok(len)
        }
        Kind::Dir => Err(e::EISDIR),
        Kind::File { handle } => {
            let n = len.min(file::MAX_IO);
            whose.check(buf, n)?;
            let r = k42_rt::sys::raw::FileRead::call([handle, pos, buf, n]);
            k42_rt::sys::sys_result(r).map_err(sys_errno)
        }
        Kind::Pipe { handle } => {
            whose.check(buf, len)?;
            let nb = nonblock(open);
            let r = crate::thread::unlocked(|| {
                k42_rt::sys::raw::FileRead::call([handle, nb, buf, len])
            });
            k42_rt::sys::sys_result(r).map_err(sys_errno)
        }
    }
}

/// Read the console (the terminal's line discipline in the kernel); end
/// of file when k42vmm forwards no input.
fn console_read(open: &Open, buf: u64, len: u64, whose: Whose) -> LinuxResult {
    let nonblock = u64::from(open.flags() & g::O_NONBLOCK != 0);
    whose.check(buf, len)?;
    let r = crate::thread::unlocked(|| k42_rt::sys::raw::TtyRead::call([buf, len, nonblock]));
    match k42_rt::sys::sys_result(r) {
        Ok(n) => Ok(n),
        Err(SyscallError::NotPermitted) => Ok(0),
        Err(SyscallError::WouldBlock) => Err(e::EAGAIN),
        Err(s) => Err(sys_errno(s)),
    }
}

/// The pipe flags for `open`'s status flags.
fn nonblock(open: &Open) -> u64 {
    if open.flags() & g::O_NONBLOCK != 0 {
        file::PIPE_NONBLOCK
    } else {
        0
    }
}

/// A write to a pipe no one reads: SIGPIPE (whose default action ends
/// the process), and EPIPE if the process lives on.
fn broken_pipe() -> u32 {
    crate::signal::raise(g::SIGPIPE);
    e::EPIPE
}

/// Write the program's `buf` to `open` at `pos` (the end if appending);
/// (bytes written, new end).
fn write_at(open: &Open, pos: u64, buf: u64, len: u64) -> Result<(u64, u64), u32> {
    write_from(open, pos, buf, len, Whose::Program)
}

/// Write `whose` `buf` to `open` at `pos` (the end if appending); (bytes
/// written, new end).
fn write_from(open: &Open, pos: u64, buf: u64, len: u64, whose: Whose) -> Result<(u64, u64), u32> {
    crate::uaccess::check(buf, len)?;
    match open.kind {
        Kind::Console { stderr } => {
            let n = len.min(MAX_CONSOLE_WRITE);
            let stream = if stderr { WRITE_STDERR } else { WRITE_STDOUT };
            whose.check(buf, n)?;
            let r = k42_rt::sys::raw::Write::call([buf, n, stream]);
            k42_rt::sys::sys_result(r).map_err(sys_errno)?;
            Ok((n, 0))
        }
        Kind::Null | Kind::Zero => Ok((len, 0)),
        Kind::Dir => Err(e::EISDIR),
        Kind::File { handle } => {
            let n = len.min(file::MAX_IO);
            let append = open.flags() & g::O_APPEND != 0;
            let flags = if append { file::WRITE_APPEND } else { 0 };
            whose.check(buf, n)?;
            let r = k42_rt::sys::raw::FileWrite::call([handle, pos, buf, n, flags]);
            let end = k42_rt::sys::sys_result(r).map_err(sys_errno)?;
            Ok((n, end))
        }
        Kind::Pipe { handle } => {
            whose.check(buf, len)?;
            let nb = nonblock(open);
            let r = crate::thread::unlocked(|| {
                k42_rt::sys::raw::FileWrite::call([handle, nb, buf, len, 0])
            });
            match k42_rt::sys::sys_result(r) {
                Ok(n) => Ok((n, 0)),
                Err(SyscallError::BrokenPipe) => Err(broken_pipe()),
                Err(s) => Err(sys_errno(s)),
            }
        }
    }
}

/// `pipe2` (and `pipe`).
pub fn pipe2(fds: u64, flags: u64) -> LinuxResult {
    let flags = flags as u32;
    if flags & !(g::O_CLOEXEC | g::O_NONBLOCK) != 0 {
        return Err(e::EINVAL);
    }
    let mut h = [0u64; 2];
    let r = k42_rt::sys::raw::PipeCreate::call([h.as_mut_ptr() as u64]);
    k42_rt::sys::sys_result(r).map_err(sys_errno)?;
    let cloexec = flags & g::O_CLOEXEC != 0;
    let keep = flags & g::O_NONBLOCK;
    let rd = Open::new(
        Kind::Pipe { handle: h[0] },
        g::O_RDONLY | keep,
        String::from("pipe:"),
    );
    let wr = Open::new(
        Kind::Pipe { handle: h[1] },
        g::O_WRONLY | keep,
        String::from("pipe:"),
    );
    let a = fd::install(rd, cloexec, 0)?;
    let b = match fd::install(wr, cloexec, 0) {
        Ok(b) => b,
        Err(err) => {
            let _ = fd::close(a);
            return Err(err);
        }
    };
    let pair = [a as i32, b as i32];
    if let Err(err) = crate::uaccess::write(fds, &pair) {
        let _ = fd::close(a);
        let _ = fd::close(b);
        return Err(err);
    }
    Ok(0)
}

/// `read`.
pub fn read(fd: u64, buf: u64, len: u64) -> LinuxResult {
    let open = fd::get(fd)?;
    if !open.readable() {
        return Err(e::EBADF);
    }
    // A file's position is its kernel handle's, shared with forked
    // children (Linux's open file description).
    read_at(&open, file::AT_POSITION, buf, len)
}

/// `write`.
pub fn write(fd: u64, buf: u64, len: u64) -> LinuxResult {
    let open = fd::get(fd)?;
    if !open.writable() {
        return Err(e::EBADF);
    }
    let mut done = 0;
    while done < len {
        let n = match write_at(&open, file::AT_POSITION, buf + done, len - done) {
            Ok((n, _)) => n,
            Err(err) if done == 0 => return Err(err),
            Err(_) => break,
        };
        done += n;
    }
    Ok(done)
}

/// `pread64`.
pub fn pread(fd: u64, buf: u64, len: u64, off: u64) -> LinuxResult {
    let open = fd::get(fd)?;
    if !matches!(open.kind, Kind::File { .. }) {
        return Err(e::ESPIPE);
    }
    read_at(&open, off, buf, len)
}

/// `pwrite64`.
pub fn pwrite(fd: u64, buf: u64, len: u64, off: u64) -> LinuxResult {
    let open = fd::get(fd)?;
    if !matches!(open.kind, Kind::File { .. }) {
        return Err(e::ESPIPE);
    }
    write_at(&open, off, buf, len).map(|(n, _)| n)
}

/// Bytes `sendfile` moves per round.
const SENDFILE_CHUNK: usize = 64 * 1024;

/// `sendfile`: up to `count` bytes from file `in_fd` (at `*off_ptr`, which
/// is advanced, or at its position) to `out_fd`, through a buffer of the
/// personality's own. As on Linux, `in_fd` must be a regular file (a pipe
/// gets EINVAL, and busybox falls back to read/write) and `out_fd` not
/// opened for appending.
pub fn sendfile(out_fd: u64, in_fd: u64, off_ptr: u64, count: u64) -> LinuxResult {
    let (input, output) = (fd::get(in_fd)?, fd::get(out_fd)?);
    if !input.readable() || !output.writable() {
        return Err(e::EBADF);
    }
    let Kind::File { handle } = input.kind else {
        return Err(e::EINVAL);
    };
    if output.flags() & g::O_APPEND != 0 {
        return Err(e::EINVAL);
    }
    let mut off = if off_ptr == 0 {
        None
    } else {
        Some(crate::uaccess::read::<i64>(off_ptr)?)
    };
    if off.is_some_and(|o| o < 0) {
        return Err(e::EINVAL);
    }
    let mut buf = alloc::vec![0u8; SENDFILE_CHUNK];
    let mut done = 0u64;
    while done < count {
        let want = (count - done).min(SENDFILE_CHUNK as u64);
        let pos = off.map_or(file::AT_POSITION, |o| o as u64);
        let got = match read_into(
            &input,
            pos,
            buf.as_mut_ptr() as u64,
            want,
            Whose::Personality,
        ) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if done == 0 => return Err(err),
            Err(_) => break,
        };
        let mut put = 0;
        while put < got {
            let at = buf.as_ptr() as u64 + put;
            match write_from(
                &output,
                file::AT_POSITION,
                at,
                got - put,
                Whose::Personality,
            ) {
                Ok((n, _)) => put += n,
                Err(err) if done + put == 0 => return Err(err),
                Err(_) => break,
            }
        }
        done += put;
        if let Some(o) = off.as_mut() {
            *o += put as i64;
        } else if put < got {
            // Bytes read but not written: give them back to the position.
            let back = -((got - put) as i64);
            let r = k42_rt::sys::raw::FileSeek::call([handle, back as u64, 1]);
            k42_rt::sys::sys_result(r).map_err(sys_errno)?;
        }
        if put < got {
            break;
        }
    }
    if let Some(o) = off {
        crate::uaccess::write(off_ptr, &o)?;
    }
    Ok(done)
}

/// The program's iovec array at `iov` (`n` entries).
fn iovecs(iov: u64, n: u64) -> Result<Vec<g::iovec>, u32> {
    if n > 1024 {
        return Err(e::EINVAL);
    }
    crate::uaccess::read_array(iov, n as usize)
}

/// `readv`.
pub fn readv(fd: u64, iov: u64, n: u64) -> LinuxResult {
    let mut total = 0;
    for v in iovecs(iov, n)? {
        let got = read(fd, v.iov_base as u64, v.iov_len)?;
        total += got;
        if got < v.iov_len {
            break;
        }
    }
    Ok(total)
}

/// `writev`.
pub fn writev(fd: u64, iov: u64, n: u64) -> LinuxResult {
    let mut total = 0;
    for v in iovecs(iov, n)? {
        total += write(fd, v.iov_base as u64, v.iov_len)?;
    }
    Ok(total)
}

/// `lseek`.
pub fn lseek(fd: u64, off: i64, whence: u64) -> LinuxResult {
    let open = fd::get(fd)?;
    if let Kind::File { handle } = open.kind {
        if whence > 2 {
            return Err(e::EINVAL);
        }
        let r = k42_rt::sys::raw::FileSeek::call([handle, off as u64, whence]);
        return k42_rt::sys::sys_result(r).map_err(sys_errno);
    }
    let base = match (open.kind, whence as u32) {
        (Kind::Console { .. } | Kind::Pipe { .. }, _) => return Err(e::ESPIPE),
        (_, g::SEEK_SET) => 0,
        (_, g::SEEK_CUR) => open.pos.load(Ordering::Relaxed) as i64,
        (Kind::File { handle }, g::SEEK_END) => rtfs::file_size(handle).map_err(errno)? as i64,
        (_, g::SEEK_END) => 0,
        _ => return Err(e::EINVAL),
    };
    let to = base.checked_add(off).filter(|&p| p >= 0).ok_or(e::EINVAL)?;
    open.pos.store(to as u64, Ordering::Relaxed);
    Ok(to as u64)
}

/// What a `struct stat` reports.
struct Attrs {
    ino: u64,
    mode: u32,
    size: u64,
    nlink: u64,
    rdev: u64,
    /// Modification (and access, change) time, ns.
    mtime: u64,
}

/// A device's attributes.
fn device_attrs(ino: u64, mode: u32, rdev: u64) -> Attrs {
    Attrs {
        ino,
        mode: g::S_IFCHR | mode,
        size: 0,
        nlink: 1,
        rdev,
        mtime: 0,
    }
}

/// The attributes of the file server's `s`.
fn server_attrs(s: &proto::Stat) -> Attrs {
    let kind = match s.kind as u8 {
        proto::KIND_DIR => g::S_IFDIR,
        proto::KIND_SYMLINK => g::S_IFLNK,
        _ => g::S_IFREG,
    };
    Attrs {
        ino: s.ino,
        mode: kind | s.mode,
        size: if s.kind == u64::from(proto::KIND_DIR) {
            4096
        } else {
            s.size
        },
        nlink: u64::from(s.nlink),
        rdev: 0,
        mtime: s.mtime,
    }
}

/// Fill the program's `struct stat` at `buf`.
fn put_stat(buf: u64, a: Attrs) -> LinuxResult {
    let Attrs {
        ino,
        mode,
        size,
        nlink,
        rdev,
        mtime,
    } = a;
    // SAFETY: `stat` is plain data; all zeros is a valid value.
    let mut st: g::stat = unsafe { core::mem::zeroed() };
    st.st_dev = 1;
    st.st_ino = ino as _;
    st.st_nlink = nlink as _;
    st.st_mode = mode as _;
    st.st_rdev = rdev as _;
    st.st_size = size as _;
    st.st_blksize = 4096;
    st.st_blocks = size.div_ceil(512) as _;
    let (sec, nsec) = ((mtime / 1_000_000_000) as _, (mtime % 1_000_000_000) as _);
    (st.st_mtime, st.st_mtime_nsec) = (sec, nsec);
    (st.st_atime, st.st_atime_nsec) = (sec, nsec);
    (st.st_ctime, st.st_ctime_nsec) = (sec, nsec);
    crate::uaccess::write(buf, &st)?;
    Ok(0)
}

/// Stat `path` through the file server (a link itself unless `follow`),
/// or a device served here.
fn stat_path(path: &str, buf: u64, follow: bool) -> LinuxResult {
    match device(path) {
        Some(Kind::Console { .. }) => return put_stat(buf, device_attrs(2, 0o620, 5 << 8 | 1)),
        Some(Kind::Null) => return put_stat(buf, device_attrs(3, 0o666, 1 << 8 | 3)),
        Some(_) => return put_stat(buf, device_attrs(4, 0o666, 1 << 8 | 5)),
        None => {}
    }
    let s = if follow {
        rtfs::stat(path)
    } else {
        rtfs::lstat(path)
    }
    .map_err(errno)?;
    put_stat(buf, server_attrs(&s))
}

/// `fstat`.
pub fn fstat(fd: u64, buf: u64) -> LinuxResult {
    let open = fd::get(fd)?;
    match open.kind {
        Kind::File { handle } => {
            let file = rtfs::file_stat(handle).map_err(errno)?;
            // The name's attributes (if it still has the name), the
            // handle's size and time.
            let mut a = rtfs::stat(&open.path).map_or(
                Attrs {
                    ino: 0,
                    mode: g::S_IFREG | 0o644,
                    size: 0,
                    nlink: 0,
                    rdev: 0,
                    mtime: 0,
                },
                |s| server_attrs(&s),
            );
            (a.size, a.mtime) = (file.size, file.mtime);
            put_stat(buf, a)
        }
        Kind::Pipe { handle } => put_stat(
            buf,
            Attrs {
                ino: handle,
                mode: g::S_IFIFO | 0o600,
                size: 0,
                nlink: 1,
                rdev: 0,
                mtime: 0,
            },
        ),
        _ => stat_path(&open.path, buf, true),
    }
}

/// `newfstatat` (and `stat`, `lstat`).
pub fn fstatat(dirfd: u64, path: u64, buf: u64, flags: u64) -> LinuxResult {
    if flags & u64::from(g::AT_EMPTY_PATH) != 0 && cstr(path).is_ok_and(|p| p.is_empty()) {
        return fstat(dirfd, buf);
    }
    let follow = flags & u64::from(g::AT_SYMLINK_NOFOLLOW) == 0;
    stat_path(&resolve(dirfd, path)?, buf, follow)
}

/// `getdents64`: `.`, `..`, then the server's entries; the position is
/// the entry number.
pub fn getdents64(fd: u64, buf: u64, len: u64) -> LinuxResult {
    let open = fd::get(fd)?;
    if open.kind != Kind::Dir {
        return Err(e::ENOTDIR);
    }
    let entries = rtfs::readdir(&open.path).map_err(errno)?;
    let mut pos = open.pos.load(Ordering::Relaxed) as usize;
    let mut at = 0u64;
    while pos < entries.len() + 2 {
        let (name, dtype) = match pos {
            0 => (".", g::DT_DIR),
            1 => ("..", g::DT_DIR),
            i => {
                let d = &entries[i - 2];
                let t = match d.kind {
                    proto::KIND_DIR => g::DT_DIR,
                    proto::KIND_SYMLINK => g::DT_LNK,
                    _ => g::DT_REG,
                };
                (d.name.as_str(), t)
            }
        };
        // d_ino, d_off, d_reclen, d_type, name, NUL; 8-byte aligned.
        let reclen = (19 + name.len() as u64 + 1).div_ceil(8) * 8;
        if at + reclen > len {
            break;
        }
        let mut rec = [0u8; 19 + 256 + 8];
        rec[0..8].copy_from_slice(&(pos as u64 + 1).to_le_bytes());
        rec[8..16].copy_from_slice(&(pos as u64 + 1).to_le_bytes());
        rec[16..18].copy_from_slice(&(reclen as u16).to_le_bytes());
        rec[18] = dtype as u8;
        rec[19..19 + name.len()].copy_from_slice(name.as_bytes());
        crate::uaccess::copy_out(buf + at, &rec[..reclen as usize])?;
        at += reclen;
        pos += 1;
    }
    if at == 0 && pos < entries.len() + 2 {
        return Err(e::EINVAL);
    }
    open.pos.store(pos as u64, Ordering::Relaxed);
    Ok(at)
}

/// `ioctl`: the console is a terminal when k42vmm's stdin is one
/// (termios, window size, foreground process group); nothing else is.
pub fn ioctl(fd: u64, cmd: u64, arg: u64) -> LinuxResult {
    use linux_raw_sys::ioctl as io;
    let open = fd::get(fd)?;
    if !matches!(open.kind, Kind::Console { .. }) {
        return Err(e::ENOTTY);
    }
    let tty = |op: u64, a: u64| {
        k42_rt::sys::sys_result(k42_rt::sys::raw::TtyControl::call([op, a])).map_err(
            |err| match err {
                SyscallError::NotPermitted => e::ENOTTY,
                s => sys_errno(s),
            },
        )
    };
    // Whether the console is a terminal at all.
    let pgrp = tty(tty_op::GET_PGRP, 0)?;
    match cmd as u32 {
        io::TCGETS => {
            crate::uaccess::program(arg, core::mem::size_of::<g::termios>() as u64)?;
            tty(tty_op::GET, arg).map(|_| 0)
        }
        io::TCSETS | io::TCSETSW | io::TCSETSF => {
            crate::uaccess::program(arg, core::mem::size_of::<g::termios>() as u64)?;
            tty(tty_op::SET, arg).map(|_| 0)
        }
        io::TIOCGPGRP => {
            crate::uaccess::write(arg, &(pgrp as i32))?;
            Ok(0)
        }
        io::TIOCSPGRP => {
            let pgid: i32 = crate::uaccess::read(arg)?;
            if pgid < 0 {
                return Err(e::EINVAL);
            }
            tty(tty_op::SET_PGRP, pgid as u64).map(|_| 0)
        }
        io::TIOCGWINSZ => {
            let size = tty(tty_op::GET_WINSIZE, 0)?;
            let ws = g::winsize {
                ws_row: (size >> 16) as u16,
                ws_col: size as u16,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            crate::uaccess::write(arg, &ws)?;
            Ok(0)
        }
        io::TIOCSWINSZ => {
            let ws: g::winsize = crate::uaccess::read(arg)?;
            tty(
                tty_op::SET_WINSIZE,
                u64::from(ws.ws_row) << 16 | u64::from(ws.ws_col),
            )
            .map(|_| 0)
        }
        io::TIOCSCTTY | io::TIOCNOTTY => Ok(0),
        _ => Err(e::EINVAL),
    }
}

/// `access`, `faccessat`: as for root — whether the path exists, and
/// for X_OK whether a file has an execute bit.
pub fn faccessat(dirfd: u64, path: u64, mode: u64) -> LinuxResult {
    let path = resolve(dirfd, path)?;
    if device(&path).is_some() {
        return Ok(0);
    }
    let s = rtfs::stat(&path).map_err(errno)?;
    if mode & u64::from(g::X_OK) != 0
        && s.kind == u64::from(proto::KIND_FILE)
        && s.mode & 0o111 == 0
    {
        return Err(e::EACCES);
    }
    Ok(0)
}

/// `getcwd`.
pub fn getcwd(buf: u64, size: u64) -> LinuxResult {
    let cwd = STATE.lock().cwd.clone();
    let n = cwd.len() as u64 + 1;
    if size < n {
        return Err(e::ERANGE);
    }
    let mut bytes = cwd.into_bytes();
    bytes.push(0);
    crate::uaccess::copy_out(buf, &bytes)?;
    Ok(n)
}

/// `chdir`.
pub fn chdir(path: u64) -> LinuxResult {
    let path = resolve(AT_FDCWD, path)?;
    let s = rtfs::stat(&path).map_err(errno)?;
    if s.kind != u64::from(proto::KIND_DIR) {
        return Err(e::ENOTDIR);
    }
    STATE.lock().cwd = path;
    Ok(0)
}

/// `readlink`, `readlinkat`: a symbolic link's target, and
/// `/proc/self/exe` (the program's path).
pub fn readlinkat(dirfd: u64, path: u64, buf: u64, size: u64) -> LinuxResult {
    let p = cstr(path)?;
    let abs = join(&STATE.lock().cwd.clone(), &p)?;
    let target = if abs == "/proc/self/exe" {
        crate::process::exe_path()
    } else {
        rtfs::readlink(&resolve(dirfd, path)?).map_err(errno)?
    };
    if size == 0 {
        return Err(e::EINVAL);
    }
    let n = (target.len() as u64).min(size);
    crate::uaccess::copy_out(buf, &target.as_bytes()[..n as usize])?;
    Ok(n)
}

/// `mkdir`, `mkdirat`.
pub fn mkdirat(dirfd: u64, path: u64, mode: u64) -> LinuxResult {
    rtfs::mkdir_mode(&resolve(dirfd, path)?, masked(mode))
        .map(|_| 0)
        .map_err(errno)
}

/// `symlink`, `symlinkat`.
pub fn symlinkat(target: u64, dirfd: u64, path: u64) -> LinuxResult {
    let target = cstr(target)?;
    let target = core::str::from_utf8(&target).map_err(|_| e::EINVAL)?;
    if target.is_empty() {
        return Err(e::ENOENT);
    }
    rtfs::symlink(target, &resolve(dirfd, path)?)
        .map(|_| 0)
        .map_err(errno)
}

/// `link`, `linkat` (`AT_SYMLINK_FOLLOW` links what a link names).
pub fn linkat(olddir: u64, old: u64, newdir: u64, new: u64, flags: u64) -> LinuxResult {
    let mut from = resolve(olddir, old)?;
    if flags & u64::from(g::AT_SYMLINK_FOLLOW) != 0 {
        // The file server links the name itself: find what it names.
        for _ in 0..proto::MAX_LINKS_FOLLOWED {
            let Ok(target) = rtfs::readlink(&from) else {
                break;
            };
            let dir = &from[..from.rfind('/').unwrap_or(0).max(1)];
            from = join(dir, target.as_bytes())?;
        }
    }
    rtfs::link(&from, &resolve(newdir, new)?)
        .map(|_| 0)
        .map_err(errno)
}

/// `chmod`, `fchmodat`.
pub fn fchmodat(dirfd: u64, path: u64, mode: u64) -> LinuxResult {
    rtfs::chmod(&resolve(dirfd, path)?, (mode & 0o7777) as u32)
        .map(|_| 0)
        .map_err(errno)
}

/// `fchmod`.
pub fn fchmod(fd: u64, mode: u64) -> LinuxResult {
    let open = fd::get(fd)?;
    match open.kind {
        Kind::File { .. } | Kind::Dir => rtfs::chmod(&open.path, (mode & 0o7777) as u32)
            .map(|_| 0)
            .map_err(errno),
        _ => Ok(0),
    }
}

/// `chown`, `lchown`, `fchownat`, `fchown`: every file is root's; the
/// call succeeds where the file exists and changes nothing.
pub fn fchownat(dirfd: u64, path: u64, flags: u64) -> LinuxResult {
    if flags & u64::from(g::AT_EMPTY_PATH) != 0 && cstr(path).is_ok_and(|p| p.is_empty()) {
        return fd::get(dirfd).map(|_| 0);
    }
    let path = resolve(dirfd, path)?;
    if device(&path).is_some() {
        return Ok(0);
    }
    rtfs::lstat(&path).map(|_| 0).map_err(errno)
}

/// `utimensat` (and `utimes` through it): the modification time, now
/// when `times` is NULL or says UTIME_NOW; UTIME_OMIT leaves it.
pub fn utimensat(dirfd: u64, path: u64, times: u64, _flags: u64) -> LinuxResult {
    let target = if path == 0 {
        fd::get(dirfd)?.path.clone()
    } else {
        resolve(dirfd, path)?
    };
    if device(&target).is_some() {
        return Ok(0);
    }
    let now = crate::system::realtime_ns();
    let ns = if times == 0 {
        Some(now)
    } else {
        let ts: [g::__kernel_timespec; 2] = crate::uaccess::read(times)?;
        let m = ts[1];
        match m.tv_nsec {
            n if n == g::UTIME_NOW as i64 => Some(now),
            n if n == g::UTIME_OMIT as i64 => None,
            n if !(0..1_000_000_000).contains(&n) || m.tv_sec < 0 => return Err(e::EINVAL),
            n => Some(m.tv_sec as u64 * 1_000_000_000 + n as u64),
        }
    };
    if let (0, Some(ns)) = (path, ns)
        && let Kind::File { handle } = fd::get(dirfd)?.kind
        && rtfs::file_set_time(handle, ns).is_ok()
    {
        // `futimens` on a handle that may write: the file itself, even
        // if it has no name now.
        return Ok(0);
    }
    match ns {
        Some(ns) => rtfs::set_time(&target, ns).map(|_| 0).map_err(errno),
        None => rtfs::stat(&target).map(|_| 0).map_err(errno),
    }
}

/// `unlink`, `unlinkat`, `rmdir`.
pub fn unlinkat(dirfd: u64, path: u64, flags: u64) -> LinuxResult {
    let path = resolve(dirfd, path)?;
    let r = if flags & u64::from(g::AT_REMOVEDIR) != 0 {
        rtfs::rmdir(&path)
    } else {
        rtfs::unlink(&path)
    };
    r.map(|_| 0).map_err(errno)
}

/// `rename`, `renameat`.
pub fn renameat(olddir: u64, old: u64, newdir: u64, new: u64) -> LinuxResult {
    let (from, to) = (resolve(olddir, old)?, resolve(newdir, new)?);
    rtfs::rename(&from, &to).map(|_| 0).map_err(errno)
}
