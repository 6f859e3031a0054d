//! Processes: exit, exec, fork, wait, ids, the FS base, and signal
//! dispositions and masks as bookkeeping.
//!
//! A Linux process is a k42 process; fork is the kernel's copy-on-write
//! `Fork` (the child resumes inside this personality with everything
//! this file keeps), exec is `LinuxExec` of the file the file server
//! opens, wait is `Wait`/`TryWait`.
//!
//! Threads (`clone` for a thread, `exit` of one thread) are
//! [`crate::thread`]'s. Not yet: process groups beyond their ids.

use alloc::string::String;
use alloc::vec::Vec;

use k42_abi::linux::{ExecHeader, NO_INTERPRETER};
use k42_abi::syscall::{SyscallError, status};
use k42_rt::sync::SpinLock;
use k42_rt::sys::raw;
use k42_rt::sys::sys_result;
use linux_raw_sys::errno as e;
use linux_raw_sys::general as g;
use zerocopy::IntoBytes;

use crate::LinuxResult;
use crate::fd::{self, STATE};
use crate::files::{self, AT_FDCWD, sys_errno};

/// The program's path (`/proc/self/exe`), absolute.
static EXE: SpinLock<String> = SpinLock::new(String::new());

/// Note the program's path from `AT_EXECFN` (at `ptr`).
pub fn set_exe(ptr: u64) {
    if let Ok(p) = files::cstr(ptr) {
        let cwd = STATE.lock().cwd.clone();
        if let Ok(abs) = files::join(&cwd, &p) {
            *EXE.lock() = abs;
        }
    }
}

/// The program's absolute path.
pub fn exe_path() -> String {
    EXE.lock().clone()
}

/// `exit_group`: the whole process.
pub fn exit(code: u64) -> LinuxResult {
    k42_rt::exit(code as u8)
}

/// `arch_prctl`: the FS base.
pub fn arch_prctl(code: u64, addr: u64) -> LinuxResult {
    static FS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
    match code {
        0x1002 => {
            // ARCH_SET_FS
            sys_result(raw::SetFsBase::call([addr])).map_err(|_| e::EPERM)?;
            FS.store(addr, core::sync::atomic::Ordering::Relaxed);
            Ok(0)
        }
        0x1003 => {
            // ARCH_GET_FS
            let v = FS.load(core::sync::atomic::Ordering::Relaxed);
            crate::uaccess::write(addr, &v)?;
            Ok(0)
        }
        _ => Err(e::EINVAL),
    }
}

/// `getpid`.
pub fn getpid() -> LinuxResult {
    sys_result(raw::GetPid::call([])).map_err(sys_errno)
}

/// `getppid`: the parent this process was forked from (not updated when
/// the parent ends).
pub fn getppid() -> LinuxResult {
    Ok(u64::from(STATE.lock().ppid))
}

/// `getpgid`, `getpgrp`: the kernel keeps process groups (the terminal
/// signals the foreground one).
pub fn getpgid(pid: u64) -> LinuxResult {
    let pid = u32::try_from(pid).map_err(|_| e::ESRCH)?;
    sys_result(raw::GetPgid::call([u64::from(pid)])).map_err(|_| e::ESRCH)
}

/// `setpgid`: this process or a child.
pub fn setpgid(pid: u64, pgid: u64) -> LinuxResult {
    if pgid > u64::from(i32::MAX as u32) {
        return Err(e::EINVAL);
    }
    sys_result(raw::SetPgid::call([pid, pgid]))
        .map(|_| 0)
        .map_err(|err| match err {
            SyscallError::InvalidArgument => e::EINVAL,
            _ => e::ESRCH,
        })
}

/// `getsid`.
pub fn getsid(pid: u64) -> LinuxResult {
    if pid != 0 && pid != getpid()? {
        return Err(e::ESRCH);
    }
    Ok(u64::from(STATE.lock().sid))
}

/// `setsid`: a new session and process group, led by this process.
pub fn setsid() -> LinuxResult {
    let me = getpid()? as u32;
    setpgid(0, 0)?;
    STATE.lock().sid = me;
    Ok(u64::from(me))
}

/// The robust-futex list the program registered (`set_robust_list`):
/// its head and length. Kept for `get_robust_list`; a forked child starts
/// without one (glibc registers again), as on Linux. Nothing walks it at
/// a thread's exit (robust mutexes of a dead thread are not recovered),
/// and one head is kept per process, not per thread.
static ROBUST_LIST: SpinLock<(u64, u64)> = SpinLock::new((0, 0));

/// `set_robust_list`: `len` must be Linux's `robust_list_head` size.
pub fn set_robust_list(head: u64, len: u64) -> LinuxResult {
    if len != core::mem::size_of::<g::robust_list_head>() as u64 {
        return Err(e::EINVAL);
    }
    *ROBUST_LIST.lock() = (head, len);
    Ok(0)
}

/// `get_robust_list` of this process (another's needs ptrace rights:
/// EPERM, or ESRCH when there is no such process).
pub fn get_robust_list(pid: u64, head_ptr: u64, len_ptr: u64) -> LinuxResult {
    if pid != 0 && pid != getpid()? {
        return Err(match raw::GetPgid::call([pid]) {
            r if r < 0 => e::ESRCH,
            _ => e::EPERM,
        });
    }
    let (head, len) = *ROBUST_LIST.lock();
    crate::uaccess::write(head_ptr, &head)?;
    crate::uaccess::write(len_ptr, &len)?;
    Ok(0)
}

/// `setuid`, `setgid`, `setreuid`, `setregid`, `setresuid`, `setresgid`:
/// every process is root and stays root, so each id given must be 0 or
/// -1 (unchanged); another is refused with EPERM (see docs/LINUX.md).
pub fn set_ids(ids: &[u64]) -> LinuxResult {
    if ids
        .iter()
        .all(|&id| id as u32 == 0 || id as u32 == u32::MAX)
    {
        Ok(0)
    } else {
        Err(e::EPERM)
    }
}

/// `getresuid`, `getresgid`: all three ids are 0.
pub fn get_res_ids(ptrs: [u64; 3]) -> LinuxResult {
    for p in ptrs {
        crate::uaccess::write(p, &0u32)?;
    }
    Ok(0)
}

/// `fork`, `vfork` (a copy serves a vfork's child as well).
pub fn fork() -> LinuxResult {
    let parent = getpid()? as u32;
    let r = sys_result(raw::Fork::call([])).map_err(|err| match err {
        SyscallError::ProcessLimit => e::EAGAIN,
        SyscallError::NoMemory => e::ENOMEM,
        s => sys_errno(s),
    })?;
    if r == 0 {
        crate::thread::forked_child(getpid()?);
        STATE.lock().ppid = parent;
        *ROBUST_LIST.lock() = (0, 0);
    }
    Ok(r)
}

/// `clone` with the flag sets glibc's fork and vfork use: a copy of the
/// process on the same stack (a vfork child is served by a copy too). A
/// vfork with a new stack (posix_spawn) is not supported: ENOSYS,
/// counted. Threads are [`crate::thread::clone`]'s.
pub fn clone(flags: u64, stack: u64, ptid: u64, ctid: u64, _tls: u64) -> LinuxResult {
    let flags = flags as u32;
    if stack != 0 || flags & (g::CLONE_VM | g::CLONE_THREAD) != 0 && flags & g::CLONE_VFORK == 0 {
        k42_rt::sys::raw::LinuxUnimplemented::call([u64::from(g::__NR_clone)]);
        return Err(e::ENOSYS);
    }
    let pid = fork()?;
    if pid == 0 {
        if flags & g::CLONE_CHILD_SETTID != 0 && ctid != 0 {
            let me = getpid()? as u32;
            // A bad pointer is the child's (Linux ignores it too).
            let _ = crate::uaccess::write(ctid, &me);
        }
    } else if flags & g::CLONE_PARENT_SETTID != 0 && ptid != 0 {
        let _ = crate::uaccess::write(ptid, &(pid as u32));
    }
    Ok(pid)
}

/// The Linux wait status for a k42 status word.
fn wait_status(word: u64) -> u32 {
    match word {
        w if w <= status::EXITED_MAX => (w as u32) << 8,
        w if w & !0xff == status::FAULT => match w & 0xff {
            0 => g::SIGFPE,
            1 | 3 => g::SIGTRAP,
            6 => g::SIGILL,
            _ => g::SIGSEGV,
        },
        w if w & !0xff == status::SIGNALED => (w & 0x7f) as u32,
        w if w & !0xff == status::STOPPED => 0x7f | ((w & 0xff) as u32) << 8,
        status::CONTINUED => 0xffff,
        _ => g::SIGKILL,
    }
}

/// `wait4`: for any child (pid -1, or a process group, which is any
/// child here) or one; `WNOHANG` returns 0 while none has ended;
/// `WUNTRACED` and `WCONTINUED` also report a child that stopped or
/// continued (once each).
pub fn wait4(pid: i64, wstatus: u64, options: u64, rusage: u64) -> LinuxResult {
    const KNOWN: u64 =
        (g::WNOHANG | g::WUNTRACED | g::WCONTINUED | g::__WALL | g::__WCLONE | g::__WNOTHREAD)
            as u64;
    if options & !KNOWN != 0 {
        return Err(e::EINVAL);
    }
    let which = if pid > 0 { pid as u64 } else { u64::MAX };
    let mut report = 0;
    if options & u64::from(g::WUNTRACED) != 0 {
        report |= k42_abi::syscall::wait::STOPPED;
    }
    if options & u64::from(g::WCONTINUED) != 0 {
        report |= k42_abi::syscall::wait::CONTINUED;
    }
    let r = if options & u64::from(g::WNOHANG) != 0 {
        raw::TryWait::call([which, report])
    } else {
        crate::thread::unlocked(|| raw::Wait::call([which, report]))
    };
    let word = sys_result(r).map_err(|err| match err {
        SyscallError::NoChildren | SyscallError::NoSuchProcess => e::ECHILD,
        s => sys_errno(s),
    })?;
    if word == 0 {
        return Ok(0);
    }
    if wstatus != 0 {
        crate::uaccess::write(wstatus, &wait_status(word & 0xffff))?;
    }
    if rusage != 0 {
        crate::uaccess::clear(rusage, core::mem::size_of::<g::rusage>() as u64)?;
    }
    Ok(word >> 16)
}

/// The NUL-terminated strings of the program's array at `ptr` (NULL
/// ended).
fn string_array(ptr: u64) -> Result<Vec<Vec<u8>>, u32> {
    let mut out = Vec::new();
    if ptr == 0 {
        return Ok(out);
    }
    loop {
        let p: u64 = crate::uaccess::read(ptr + 8 * out.len() as u64)?;
        if p == 0 {
            return Ok(out);
        }
        if out.len() > 65536 {
            return Err(e::E2BIG);
        }
        out.push(files::cstr(p)?);
    }
}

/// Open `path` for exec; its handle. EACCES for a directory or a file
/// without an execute bit.
fn open_exec(path: &str) -> Result<u64, u32> {
    use zerocopy::FromBytes;
    let (h, reply, n) = k42_rt::fs::on_path(k42_abi::fs::OPEN, path, k42_abi::fs::open::READ)
        .map_err(|err| match err {
            k42_rt::fs::Error::Fs(k42_abi::fs::FsError::IsADirectory) => e::EACCES,
            err => files::errno(err),
        })?;
    let runnable =
        k42_abi::fs::Stat::read_from_prefix(&reply[..n]).is_ok_and(|(st, _)| st.mode & 0o111 != 0);
    if !runnable {
        let _ = k42_rt::fs::file_close(h);
        return Err(e::EACCES);
    }
    Ok(h)
}

/// Linux's checks of an ELF's headers before it loads one, with its
/// errors: ENOEXEC for what is not a 64-bit x86-64 executable (a 32-bit
/// ELF included: no compatibility mode here) and for program headers
/// the file is too short to hold, EIO for an interpreter path it is too
/// short to hold, and the
/// interpreter's own error when `PT_INTERP` names one that cannot be
/// opened (ENOENT). `head` is the file's first bytes, zero past its end.
/// Returns the interpreter, opened (the kernel loads it with the
/// program), or [`NO_INTERPRETER`] for a static program.
fn check_elf(handle: u64, head: &[u8; 256]) -> Result<u64, u32> {
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
    let e_type = u16_at(16);
    if head[4] != 2 || head[5] != 1 || !matches!(e_type, 2 | 3) || u16_at(18) != 62 {
        return Err(e::ENOEXEC);
    }
    let phoff = u64::from_le_bytes(head[32..40].try_into().expect("8 bytes"));
    let (phentsize, phnum) = (u16_at(54) as usize, u16_at(56) as usize);
    if phentsize != 56 || phnum == 0 || phnum * 56 > 65536 {
        return Err(e::ENOEXEC);
    }
    let mut phdrs = alloc::vec![0u8; phnum * 56];
    let got = k42_rt::fs::file_read(handle, phoff, &mut phdrs).map_err(files::errno)?;
    if got != phdrs.len() {
        return Err(e::ENOEXEC);
    }
    for ph in phdrs.chunks_exact(56) {
        if u32::from_le_bytes(ph[0..4].try_into().expect("4 bytes")) != 3 {
            continue;
        }
        // PT_INTERP: the interpreter's path, NUL-terminated.
        let off = u64::from_le_bytes(ph[8..16].try_into().expect("8 bytes"));
        let size = u64::from_le_bytes(ph[32..40].try_into().expect("8 bytes"));
        if !(2..=4096).contains(&size) {
            return Err(e::ENOEXEC);
        }
        let mut path = alloc::vec![0u8; size as usize];
        let got = k42_rt::fs::file_read(handle, off, &mut path).map_err(files::errno)?;
        if got != path.len() {
            return Err(e::EIO);
        }
        if path.pop() != Some(0) {
            return Err(e::ENOEXEC);
        }
        let interp = files::join("/", &path)?;
        return open_exec(&interp);
    }
    Ok(NO_INTERPRETER)
}

/// `execve`: an ELF program, or a `#!` script run by its interpreter.
pub fn execve(path: u64, argv: u64, envp: u64) -> LinuxResult {
    let given = files::cstr(path)?;
    let abs = files::resolve(AT_FDCWD, path)?;
    let mut args = string_array(argv)?;
    let env = string_array(envp)?;
    let mut handle = open_exec(&abs)?;
    let mut head = [0u8; 256];
    let n = k42_rt::fs::file_read(handle, 0, &mut head).map_err(files::errno)?;
    let mut interp_args: Vec<Vec<u8>> = Vec::new();
    if n >= 2 && &head[..2] == b"#!" {
        // The interpreter and its one optional argument, then the script.
        let line = &head[2..n];
        let end = line.iter().position(|&b| b == b'\n').ok_or(e::ENOEXEC)?;
        let line = &line[..end];
        let mut words = line
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|w| !w.is_empty());
        let interp = words.next().ok_or(e::ENOEXEC)?;
        let rest: Vec<u8> = {
            let start = line
                .iter()
                .position(|&b| b != b' ' && b != b'\t')
                .unwrap_or(0);
            let after = &line[start + interp.len()..];
            let t: &[u8] = after.trim_ascii();
            t.into()
        };
        interp_args.push(interp.into());
        if !rest.is_empty() {
            interp_args.push(rest);
        }
        interp_args.push(given.clone());
        let _ = k42_rt::fs::file_close(handle);
        let cwd = STATE.lock().cwd.clone();
        handle = open_exec(&files::join(&cwd, interp)?)?;
        if !args.is_empty() {
            args.remove(0);
        }
    } else if n < 4 || &head[..4] != b"\x7fELF" {
        let _ = k42_rt::fs::file_close(handle);
        return Err(e::ENOEXEC);
    }
    let checked = if interp_args.is_empty() {
        check_elf(handle, &head)
    } else {
        // The script's interpreter, read as a program is.
        k42_rt::fs::file_read(handle, 0, &mut head)
            .map_err(files::errno)
            .and_then(|n| {
                head[n..].fill(0);
                if n < 4 || &head[..4] != b"\x7fELF" {
                    return Err(e::ENOEXEC);
                }
                check_elf(handle, &head)
            })
    };
    let interp = match checked {
        Ok(h) => h,
        Err(err) => {
            let _ = k42_rt::fs::file_close(handle);
            return Err(err);
        }
    };
    let (carry, keep) = fd::carry();
    let all_args: Vec<&[u8]> = interp_args
        .iter()
        .map(|a| a.as_slice())
        .chain(args.iter().map(|a| a.as_slice()))
        .collect();
    let header = ExecHeader {
        argc: all_args.len() as u32,
        envc: env.len() as u32,
        carry_len: carry.len() as u32,
        execfn_len: given.len() as u32,
        nkeep: keep.len() as u32,
        reserved: 0,
    };
    let mut block = Vec::new();
    block.extend_from_slice(header.as_bytes());
    for s in all_args
        .iter()
        .copied()
        .chain(env.iter().map(|s| s.as_slice()))
    {
        block.extend_from_slice(s);
        block.push(0);
    }
    block.extend_from_slice(&given);
    block.push(0);
    block.extend_from_slice(&carry);
    for h in keep {
        block.extend_from_slice(&h.to_le_bytes());
    }
    let r = raw::LinuxExec::call([handle, interp, block.as_ptr() as u64, block.len() as u64]);
    // Only a failed exec returns.
    let _ = k42_rt::fs::file_close(handle);
    if interp != NO_INTERPRETER {
        let _ = k42_rt::fs::file_close(interp);
    }
    Err(match sys_result(r) {
        Err(SyscallError::BadProgram) => e::ENOEXEC,
        Err(SyscallError::TooLong) => e::E2BIG,
        Err(SyscallError::NoMemory) => e::ENOMEM,
        Err(s) => sys_errno(s),
        Ok(_) => e::EINVAL,
    })
}
