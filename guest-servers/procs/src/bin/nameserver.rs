//! `nameserver`: the name server, a user-level PPC server that maps
//! service names to PPC handles (`k42_abi::syscall::ppc::names`).
//! Programs find it with `PpcLookup(0)` (`k42_rt::ppc::name_server`);
//! init starts it in the background (`nameserver &` in init.rc).
//!
//! A name belongs to the process that registered it: another process's
//! `REGISTER` of it is refused, and only its registrant may drop it. A
//! name whose server has died still resolves to its (now stale) handle,
//! and a call through that handle fails with `StaleHandle`.
#![no_std]
#![no_main]

use k42_abi::syscall::SyscallError;
use k42_abi::syscall::ppc::{SERVE_NAME_SERVER, names};
use k42_rt::sync::SpinLock;
use k42_rt::{Start, ppc, println, process};

k42_rt::main!(run);

/// Names the server holds.
const MAX_NAMES: usize = 128;
const STACK: u64 = 4 * 4096;

#[derive(Clone, Copy)]
struct Entry {
    name: [u8; names::MAX_NAME],
    len: usize,
    handle: u64,
    owner: u64,
}

const EMPTY: Entry = Entry {
    name: [0; names::MAX_NAME],
    len: 0,
    handle: 0,
    owner: 0,
};

static TABLE: SpinLock<[Entry; MAX_NAMES]> = SpinLock::new([EMPTY; MAX_NAMES]);

fn run(_: Start) -> u8 {
    let cpus = process::cpus() as u64;
    let (Ok(stacks), Ok(msgs)) = (
        process::map_anon(cpus * STACK),
        process::map_anon(cpus * ppc::MAX as u64),
    ) else {
        println!("nameserver: cannot map stacks and buffers");
        return 1;
    };
    let e = ppc::serve_flags(entry, stacks, STACK, msgs, SERVE_NAME_SERVER);
    println!("nameserver: cannot serve: {}", e.describe());
    1
}

extern "C" fn entry(caller: u64, method: u64, arg: u64, msg: *mut u8, len: u64) -> ! {
    // SAFETY: the kernel put `len` bytes at `msg`, this CPU's buffer, for
    // this call alone.
    let name = unsafe { core::slice::from_raw_parts(msg, len as usize) };
    let r = if name.is_empty() || name.len() > names::MAX_NAME {
        Err(SyscallError::InvalidArgument)
    } else {
        match method {
            names::REGISTER => register(name, arg, caller),
            names::LOOKUP => lookup(name),
            names::UNREGISTER => unregister(name, caller),
            _ => Err(SyscallError::NoSuchMethod),
        }
    };
    ppc::reply(r.map_or_else(|e| e as i64, |v| v as i64), 0)
}

fn find(t: &[Entry; MAX_NAMES], name: &[u8]) -> Option<usize> {
    t.iter().position(|e| e.len > 0 && &e.name[..e.len] == name)
}

fn register(name: &[u8], handle: u64, caller: u64) -> Result<u64, SyscallError> {
    let mut t = TABLE.lock();
    if let Some(i) = find(&t, name) {
        if t[i].owner != caller {
            return Err(SyscallError::InvalidArgument);
        }
        t[i].handle = handle;
        return Ok(0);
    }
    let i = t
        .iter()
        .position(|e| e.len == 0)
        .ok_or(SyscallError::NoMemory)?;
    t[i].name[..name.len()].copy_from_slice(name);
    t[i].len = name.len();
    t[i].handle = handle;
    t[i].owner = caller;
    Ok(0)
}

fn lookup(name: &[u8]) -> Result<u64, SyscallError> {
    let t = TABLE.lock();
    find(&t, name)
        .map(|i| t[i].handle)
        .ok_or(SyscallError::NoSuchName)
}

fn unregister(name: &[u8], caller: u64) -> Result<u64, SyscallError> {
    let mut t = TABLE.lock();
    let i = find(&t, name).ok_or(SyscallError::NoSuchName)?;
    if t[i].owner != caller {
        return Err(SyscallError::InvalidArgument);
    }
    t[i] = EMPTY;
    Ok(0)
}
