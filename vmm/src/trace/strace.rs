//! `k42vmm trace strace DIR`: the Linux system calls of a trace written
//! with `--trace-mask linux`, one line per call, as strace prints them:
//!
//! ```text
//! [pid 5] openat(AT_FDCWD, 0x4c3f10, 0x0, 0) = -1 ENOENT (No such file or directory)
//! [pid 5] write(1, 0x7ffffffff6a0, 3) = 3
//! [pid 6] <... fork resumed>) = 0
//! [pid 5] --- SIGCHLD (handler 0x401a30) ---
//! [pid 6] exit_group(0) = ?
//! ```
//!
//! Lines are in the order the calls started (guest TSC, across vCPUs). A
//! call's result comes from its `linux:exit` event, matched by pid (a
//! Linux process here has one thread); a call that never returned (exit,
//! a successful execve, one cut off by the end of the trace) shows `= ?`.
//! An exit with no entry (a forked child's return from fork) is a
//! `<... resumed>` line. The trace holds the argument registers only, not
//! the memory they point at: pointers are shown as raw addresses (no
//! path or buffer contents), integers in decimal, flags in hexadecimal.

use std::collections::HashMap;

use k42_abi::trace::{class, ev, linux_syscall_name};

use super::ctf::TraceData;
use super::{TraceError, decode};

/// One `linux` event read from a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxEvent {
    /// Guest TSC.
    pub tsc: u64,
    /// The event id (`linux:enter`, `linux:exit` or `linux:signal`).
    pub id: u16,
    /// Its payload words (pid first).
    pub words: Vec<u64>,
}

/// The `linux` events of `t`, in time order across vCPUs, and the number
/// of events the guest lost (of any class: some calls may be missing).
pub fn collect(t: &TraceData, dir: &std::path::Path) -> Result<(Vec<LinuxEvent>, u64), TraceError> {
    let mut out = Vec::new();
    let mut lost = 0;
    for stream in &t.streams {
        lost += stream.discarded();
        for p in &stream.packets {
            for e in p.events() {
                let e = e.map_err(|at| {
                    TraceError::Read(
                        dir.to_path_buf(),
                        format!(
                            "vCPU {} packet {}: malformed event at word {at}",
                            stream.vcpu, p.seq
                        ),
                    )
                })?;
                let d = decode::describe(&e).map_err(|err| {
                    TraceError::Read(
                        dir.to_path_buf(),
                        format!("vCPU {} packet {}: {err}", stream.vcpu, p.seq),
                    )
                })?;
                if d.class == class::linux {
                    out.push(LinuxEvent {
                        tsc: e.tsc,
                        id: e.id,
                        words: e.payload.to_vec(),
                    });
                }
            }
        }
    }
    // Stable: events of one vCPU at the same TSC keep their order.
    out.sort_by_key(|e| e.tsc);
    Ok((out, lost))
}

/// How an argument is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arg {
    /// An `int` (descriptor, pid, signal): the low 32 bits, signed.
    Int,
    /// A directory descriptor: an `Int`, `AT_FDCWD` for -100.
    DirFd,
    /// A size or count: unsigned decimal.
    Size,
    /// A signed long (an offset).
    Long,
    /// An address: hexadecimal, `NULL` for 0.
    Ptr,
    /// Flags or a request number: hexadecimal.
    Flags,
    /// A file mode: octal.
    Mode,
}

/// The arguments of the Linux calls this knows, by name (`None`: not
/// known, all six registers are shown in hexadecimal).
fn signature(name: &str) -> Option<&'static [Arg]> {
    use Arg::*;
    Some(match name {
        "read" | "write" => &[Int, Ptr, Size],
        "pread64" | "pwrite64" => &[Int, Ptr, Size, Long],
        "readv" | "writev" => &[Int, Ptr, Int],
        "open" => &[Ptr, Flags, Mode],
        "openat" => &[DirFd, Ptr, Flags, Mode],
        "close" | "dup" | "fsync" | "fdatasync" | "fchdir" => &[Int],
        "lseek" => &[Int, Long, Int],
        "stat" | "lstat" => &[Ptr, Ptr],
        "fstat" => &[Int, Ptr],
        "newfstatat" => &[DirFd, Ptr, Ptr, Flags],
        "statx" => &[DirFd, Ptr, Flags, Flags, Ptr],
        "pipe" => &[Ptr],
        "pipe2" => &[Ptr, Flags],
        "getdents64" => &[Int, Ptr, Size],
        "dup2" => &[Int, Int],
        "dup3" => &[Int, Int, Flags],
        "fcntl" => &[Int, Int, Flags],
        "ioctl" => &[Int, Flags, Ptr],
        "access" => &[Ptr, Mode],
        "faccessat" => &[DirFd, Ptr, Mode],
        "faccessat2" => &[DirFd, Ptr, Mode, Flags],
        "getcwd" => &[Ptr, Size],
        "chdir" | "rmdir" | "unlink" => &[Ptr],
        "umask" => &[Mode],
        "readlink" => &[Ptr, Ptr, Size],
        "readlinkat" => &[DirFd, Ptr, Ptr, Size],
        "mkdir" | "chmod" => &[Ptr, Mode],
        "mkdirat" => &[DirFd, Ptr, Mode],
        "unlinkat" => &[DirFd, Ptr, Flags],
        "rename" => &[Ptr, Ptr],
        "renameat" => &[DirFd, Ptr, DirFd, Ptr],
        "renameat2" => &[DirFd, Ptr, DirFd, Ptr, Flags],
        "brk" => &[Ptr],
        "mmap" => &[Ptr, Size, Flags, Flags, Int, Long],
        "munmap" => &[Ptr, Size],
        "mprotect" => &[Ptr, Size, Flags],
        "madvise" => &[Ptr, Size, Int],
        "arch_prctl" => &[Flags, Ptr],
        "set_tid_address" => &[Ptr],
        "exit" | "exit_group" => &[Int],
        "execve" => &[Ptr, Ptr, Ptr],
        "fork" | "vfork" | "getpid" | "gettid" | "getppid" | "getuid" | "geteuid" | "getgid"
        | "getegid" | "getpgrp" | "setsid" | "pause" | "sched_yield" | "sync" => &[],
        "clone" => &[Flags, Ptr, Ptr, Ptr, Flags],
        "wait4" => &[Int, Ptr, Flags, Ptr],
        "kill" | "tkill" => &[Int, Int],
        "tgkill" => &[Int, Int, Int],
        "getpgid" | "getsid" => &[Int],
        "setpgid" => &[Int, Int],
        "rt_sigaction" => &[Int, Ptr, Ptr, Size],
        "rt_sigprocmask" => &[Int, Ptr, Ptr, Size],
        "rt_sigpending" | "rt_sigsuspend" => &[Ptr, Size],
        "rt_sigreturn" => &[],
        "sigaltstack" => &[Ptr, Ptr],
        "uname" | "sysinfo" | "time" | "times" => &[Ptr],
        "getrandom" => &[Ptr, Size, Flags],
        "prlimit64" => &[Int, Int, Ptr, Ptr],
        "getrlimit" | "setrlimit" => &[Int, Ptr],
        "clock_gettime" | "clock_getres" => &[Int, Ptr],
        "gettimeofday" => &[Ptr, Ptr],
        "nanosleep" => &[Ptr, Ptr],
        "clock_nanosleep" => &[Int, Flags, Ptr, Ptr],
        "prctl" => &[Int, Flags, Flags, Flags, Flags],
        "poll" => &[Ptr, Size, Int],
        "ppoll" => &[Ptr, Size, Ptr, Ptr, Size],
        "select" => &[Int, Ptr, Ptr, Ptr, Ptr],
        "pselect6" => &[Int, Ptr, Ptr, Ptr, Ptr, Ptr],
        "socket" => &[Int, Flags, Int],
        "setuid" | "setgid" => &[Int],
        "chown" | "lchown" => &[Ptr, Int, Int],
        "fchown" => &[Int, Int, Int],
        "fchmod" => &[Int, Mode],
        "fchmodat" => &[DirFd, Ptr, Mode],
        "truncate" => &[Ptr, Long],
        "ftruncate" => &[Int, Long],
        "symlink" | "link" => &[Ptr, Ptr],
        "utimensat" => &[DirFd, Ptr, Ptr, Flags],
        "set_robust_list" => &[Ptr, Size],
        "rseq" => &[Ptr, Size, Flags, Flags],
        _ => return None,
    })
}

fn show_arg(kind: Arg, w: u64) -> String {
    match kind {
        Arg::Int => (w as i32).to_string(),
        Arg::DirFd if w as i32 == -100 => "AT_FDCWD".to_string(),
        Arg::DirFd => (w as i32).to_string(),
        Arg::Size => w.to_string(),
        Arg::Long => (w as i64).to_string(),
        Arg::Ptr if w == 0 => "NULL".to_string(),
        Arg::Ptr | Arg::Flags => format!("{w:#x}"),
        Arg::Mode if w == 0 => "0".to_string(),
        Arg::Mode => format!("0{w:o}"),
    }
}

/// A call's name: Linux's, or `syscall_N` for a number Linux lacks.
fn call_name(nr: u64) -> String {
    linux_syscall_name(nr).map_or_else(|| format!("syscall_{nr}"), str::to_string)
}

/// `name(arg, arg, ...)`.
fn call_text(nr: u64, args: &[u64]) -> String {
    let name = call_name(nr);
    let shown: Vec<String> = match signature(&name) {
        Some(sig) => sig
            .iter()
            .zip(args)
            .map(|(&k, &w)| show_arg(k, w))
            .collect(),
        None => args.iter().map(|&w| format!("{w:#x}")).collect(),
    };
    format!("{name}({})", shown.join(", "))
}

/// A result as strace shows it: the number, or for -4095..=-1 `-1` and
/// the errno's name and description; addresses (mmap, brk) in hex.
pub fn result_text(nr: u64, result: i64) -> String {
    if (-4095..=-1).contains(&result) {
        let errno = syscalls::Errno::new(-result as i32);
        return match errno.name_and_description() {
            Some((name, text)) => format!("-1 {name} ({text})"),
            None => format!("-1 errno {}", -result),
        };
    }
    match linux_syscall_name(nr) {
        Some("mmap" | "brk") => format!("{result:#x}"),
        _ => result.to_string(),
    }
}

/// A Linux signal's name (`SIGCHLD`), or its number.
fn signal_name(sig: u64) -> String {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match sig {
        1..=31 => NAMES[sig as usize - 1].to_string(),
        32..=64 => format!("SIGRT_{}", sig - 32),
        _ => format!("signal {sig}"),
    }
}

/// The strace lines of `events` (in time order, as [`collect`] gives).
pub fn render(events: &[LinuxEvent]) -> Vec<String> {
    let enter_id = ev::linux::enter(0, 0, 0, 0, 0, 0, 0, 0).id;
    let exit_id = ev::linux::exit(0, 0, 0).id;
    let signal_id = ev::linux::signal(0, 0, 0).id;
    // Each line's text, and its result once known (calls only).
    let mut lines: Vec<(String, Option<String>)> = Vec::new();
    // The call each pid is in: its line and number.
    let mut open: HashMap<u64, (usize, u64)> = HashMap::new();
    for e in events {
        let w = &e.words;
        let pid = w[0];
        if e.id == enter_id && w.len() == 8 {
            // A call still open here never returned (a successful execve):
            // its line keeps `= ?`.
            open.insert(pid, (lines.len(), w[1]));
            lines.push((
                format!("[pid {pid}] {}", call_text(w[1], &w[2..8])),
                Some("?".to_string()),
            ));
        } else if e.id == exit_id && w.len() == 3 {
            let (nr, result) = (w[1], w[2] as i64);
            match open.remove(&pid) {
                Some((line, open_nr)) if open_nr == nr => {
                    lines[line].1 = Some(result_text(nr, result));
                }
                _ => lines.push((
                    format!("[pid {pid}] <... {} resumed>)", call_name(nr)),
                    Some(result_text(nr, result)),
                )),
            }
        } else if e.id == signal_id && w.len() == 3 {
            lines.push((
                format!(
                    "[pid {pid}] --- {} (handler {:#x}) ---",
                    signal_name(w[1]),
                    w[2]
                ),
                None,
            ));
        }
    }
    lines
        .into_iter()
        .map(|(text, result)| match result {
            Some(r) => format!("{text} = {r}"),
            None => text,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev_of<const N: usize>(tsc: u64, e: k42_abi::trace::Event<N>) -> LinuxEvent {
        LinuxEvent {
            tsc,
            id: e.id,
            words: e.words.to_vec(),
        }
    }

    #[test]
    fn calls_print_as_strace_does() {
        let at_fdcwd = -100i64 as u64;
        let events = [
            ev_of(1, ev::linux::enter(5, 257, at_fdcwd, 0x4c_3f10, 0, 0, 9, 9)),
            ev_of(2, ev::linux::exit(5, 257, -2)),
            ev_of(3, ev::linux::enter(5, 1, 1, 0x7fff_f000, 3, 0, 0, 0)),
            ev_of(4, ev::linux::exit(5, 1, 3)),
            ev_of(5, ev::linux::enter(5, 57, 0, 0, 0, 0, 0, 0)),
            ev_of(6, ev::linux::exit(6, 57, 0)),
            ev_of(7, ev::linux::exit(5, 57, 6)),
            ev_of(8, ev::linux::enter(6, 59, 0x1000, 0x2000, 0x3000, 0, 0, 0)),
            ev_of(9, ev::linux::enter(6, 12, 0, 0, 0, 0, 0, 0)),
            ev_of(10, ev::linux::exit(6, 12, 0x4d_2000)),
            ev_of(11, ev::linux::signal(5, 17, 0x40_1a30)),
            ev_of(12, ev::linux::enter(6, 231, 0, 0, 0, 0, 0, 0)),
            ev_of(13, ev::linux::enter(5, 400, 1, 2, 0, 0, 0, 0)),
            ev_of(14, ev::linux::exit(5, 400, -38)),
            ev_of(15, ev::linux::enter(5, 61, u64::MAX, 0, 0, 0, 0, 0)),
            ev_of(16, ev::linux::exit(5, 61, -512)),
        ];
        let lines = render(&events);
        assert_eq!(
            lines,
            [
                "[pid 5] openat(AT_FDCWD, 0x4c3f10, 0x0, 0) = -1 ENOENT (No such file or directory)",
                "[pid 5] write(1, 0x7ffff000, 3) = 3",
                "[pid 5] fork() = 6",
                "[pid 6] <... fork resumed>) = 0",
                "[pid 6] execve(0x1000, 0x2000, 0x3000) = ?",
                "[pid 6] brk(NULL) = 0x4d2000",
                "[pid 5] --- SIGCHLD (handler 0x401a30) ---",
                "[pid 6] exit_group(0) = ?",
                "[pid 5] syscall_400(0x1, 0x2, 0x0, 0x0, 0x0, 0x0) = -1 ENOSYS (Invalid system call number)",
                "[pid 5] wait4(-1, NULL, 0x0, NULL) = -1 ERESTARTSYS (Restart syscall)",
            ]
        );
    }

    #[test]
    fn results_and_arguments() {
        assert_eq!(result_text(0, 0), "0");
        assert_eq!(result_text(0, -1), "-1 EPERM (Operation not permitted)");
        assert_eq!(result_text(0, -4095), "-1 errno 4095");
        assert_eq!(result_text(0, -4096), "-4096");
        assert_eq!(result_text(9, 0x7000_0000), "0x70000000");
        assert_eq!(show_arg(Arg::Mode, 0o644), "0644");
        assert_eq!(show_arg(Arg::Int, 0xffff_ffff), "-1");
        assert_eq!(show_arg(Arg::Long, u64::MAX), "-1");
        assert_eq!(signal_name(2), "SIGINT");
        assert_eq!(signal_name(34), "SIGRT_2");
    }
}
