//! `linux-run`: process 1 for `k42vmm run IMAGE -- COMMAND [ARGS…]`.
//! It starts the name server and the file server in the background,
//! then runs COMMAND — a Linux program at a path in the guest's file
//! system — with the console as its standard input and output, waits for
//! it, and exits with its status (128 + N when signal N ended it, as a
//! shell reports it), which becomes k42vmm's exit code.
//!
//! The command comes from the boot module `linux.argv` (k42vmm adds it):
//! the arguments, each NUL-terminated.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use k42_abi::linux::{ExecHeader, NO_INTERPRETER};
use k42_abi::syscall::SyscallError;
use k42_rt::fs as rtfs;
use k42_rt::process::{self, ArgBlock, Ended, Regions};
use k42_rt::{Start, println};
use zerocopy::IntoBytes;

k42_rt::main!(run);

/// The module holding the command.
const ARGV_MODULE: &str = "linux.argv";
/// The environment a command starts with.
const ENV: &[&str] = &["PATH=/bin:/usr/bin", "HOME=/", "TERM=dumb", "LANG=C"];
/// Linux's signal numbers for how a k42 process can end.
const SIGILL: u8 = 4;
const SIGFPE: u8 = 8;
const SIGKILL: u8 = 9;
const SIGSEGV: u8 = 11;

fn run(_: Start) -> u8 {
    let Some(argv) = command() else {
        println!("linux-run: no command (boot module {ARGV_MODULE} is missing or empty)");
        return 2;
    };
    for server in ["nameserver", "fileserver"] {
        if let Err(e) = process::spawn(server, ArgBlock::new().arg(server), Regions::Shared) {
            println!("linux-run: cannot start {server}: {}", e.describe());
            return 2;
        }
    }
    if let Err(e) = rtfs::wait_for_server(100_000) {
        println!("linux-run: the file server did not start: {}", e.describe());
        return 2;
    }
    let args: Vec<&[u8]> = argv.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
    let path = core::str::from_utf8(args[0]).unwrap_or("");
    let pid = match process::fork() {
        Ok(0) => exec(path, &args),
        Ok(pid) => pid,
        Err(e) => {
            println!("linux-run: cannot fork: {}", e.describe());
            return 2;
        }
    };
    match process::wait(Some(pid)) {
        Ok((_, Ended::Exited(s))) => s,
        Ok((_, Ended::Fault(6))) => 128 + SIGILL,
        Ok((_, Ended::Fault(0))) => 128 + SIGFPE,
        Ok((_, Ended::Fault(_))) => 128 + SIGSEGV,
        Ok((_, Ended::Killed | Ended::OutOfMemory)) => 128 + SIGKILL,
        Ok((_, Ended::Signaled(sig))) => 128 + sig,
        Err(e) => {
            println!("linux-run: wait failed: {}", e.describe());
            2
        }
    }
}

/// The command's arguments, NUL-terminated, from the boot module.
fn command() -> Option<Vec<u8>> {
    for i in 0.. {
        let (name, size) = rtfs::module_info(i).ok()?;
        if name != ARGV_MODULE {
            continue;
        }
        let mut buf = alloc::vec![0u8; size as usize];
        let mut off = 0;
        while off < buf.len() {
            let n = rtfs::module_read(i, off as u64, &mut buf[off..]).ok()?;
            if n == 0 {
                return None;
            }
            off += n;
        }
        return (!buf.is_empty()).then_some(buf);
    }
    None
}

/// The interpreter (dynamic linker) the ELF program behind `handle`
/// names in its `PT_INTERP` (its program headers in the first page),
/// opened; [`NO_INTERPRETER`] if it names none (or is not an ELF: the
/// kernel says why).
fn interpreter(handle: u64) -> Result<u64, &'static str> {
    let u16_at = |b: &[u8], o: usize| b.get(o..o + 2).map(|w| u16::from_le_bytes([w[0], w[1]]));
    let u64_at = |b: &[u8], o: usize| {
        b.get(o..o + 8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
    };
    let mut head = alloc::vec![0u8; 4096];
    let n = rtfs::file_read(handle, 0, &mut head).map_err(|e| e.describe())?;
    let head = &head[..n];
    if !head.starts_with(b"\x7fELF") {
        return Ok(NO_INTERPRETER);
    }
    let (Some(phoff), Some(phent), Some(phnum)) =
        (u64_at(head, 32), u16_at(head, 54), u16_at(head, 56))
    else {
        return Ok(NO_INTERPRETER);
    };
    for i in 0..u64::from(phnum) {
        let at = phoff.saturating_add(i * u64::from(phent)) as usize;
        let Some(ph) = head.get(at..at.saturating_add(56)) else {
            break;
        };
        if ph[..4] != 3u32.to_le_bytes() {
            continue;
        }
        let (off, size) = (u64_at(ph, 8).unwrap_or(0), u64_at(ph, 32).unwrap_or(0));
        let mut path = alloc::vec![0u8; size.min(4096) as usize];
        let got = rtfs::file_read(handle, off, &mut path).map_err(|e| e.describe())?;
        let path = &path[..got];
        let end = path
            .iter()
            .position(|&b| b == 0)
            .ok_or("bad interpreter path")?;
        let path = core::str::from_utf8(&path[..end]).map_err(|_| "bad interpreter path")?;
        return rtfs::on_path(k42_abi::fs::OPEN, path, k42_abi::fs::open::READ)
            .map(|(h, _, _)| h)
            .map_err(|e| e.describe());
    }
    Ok(NO_INTERPRETER)
}

/// In the child: become the Linux program at `path`; exits 126 or 127
/// (as a shell does) when it cannot.
fn exec(path: &str, args: &[&[u8]]) -> ! {
    // The command leads its own process group, the terminal's
    // foreground group (as login makes a shell): the terminal's signals
    // (^C, a resize) reach it before it asks. Not a terminal: nothing to
    // set.
    let _ = k42_rt::sys::raw::SetPgid::call([0, 0]);
    let _ = k42_rt::sys::raw::TtyControl::call([
        k42_abi::syscall::tty_op::SET_PGRP,
        u64::from(process::getpid()),
    ]);
    let handle = match rtfs::on_path(k42_abi::fs::OPEN, path, k42_abi::fs::open::READ) {
        Ok((h, _, _)) => h,
        Err(e) => {
            println!("k42vmm: {path}: {}", e.describe());
            k42_rt::exit(127);
        }
    };
    let interp = interpreter(handle).unwrap_or_else(|why| {
        println!("k42vmm: {path}: cannot run: {why}");
        k42_rt::exit(126)
    });
    let header = ExecHeader {
        argc: args.len() as u32,
        envc: ENV.len() as u32,
        carry_len: 0,
        execfn_len: path.len() as u32,
        nkeep: 0,
        reserved: 0,
    };
    let mut block = Vec::new();
    block.extend_from_slice(header.as_bytes());
    for s in args.iter().copied().chain(ENV.iter().map(|e| e.as_bytes())) {
        block.extend_from_slice(s);
        block.push(0);
    }
    block.extend_from_slice(path.as_bytes());
    block.push(0);
    let r = k42_rt::sys::raw::LinuxExec::call([
        handle,
        interp,
        block.as_ptr() as u64,
        block.len() as u64,
    ]);
    let why = match k42_rt::sys::sys_result(r) {
        Err(SyscallError::BadProgram) => "not an x86_64 Linux executable",
        Err(SyscallError::TooLong) => "argument list too long",
        Err(e) => e.describe(),
        Ok(_) => "exec returned",
    };
    println!("k42vmm: {path}: cannot run: {why}");
    k42_rt::exit(126)
}
