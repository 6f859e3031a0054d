//! User programs: load a static ELF from a boot module into a fresh
//! address space, run it in user mode on this CPU until it exits or
//! faults, and serve its system calls (`k42_abi::syscall`).
//!
//! This is the first step of the user-mode work (issue 8 builds processes
//! on it): one program at a time per CPU, run to completion as a call
//! from the kernel.

pub mod elf;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, Ordering};

use k42_abi::MAX_VCPUS;
use k42_abi::bench::BenchRecord;
use k42_abi::layout::PAGE_SIZE;
use k42_abi::syscall::{SYSCALL_SITE, Syscall, SyscallError, USER_TOP};
use zerocopy::FromBytes;

use crate::arch::{self, x86_64::usermode};
use crate::mm::paging::{AddressSpace, MapError, PageFlags};
use crate::{console, percpu};

/// Pages of user stack.
const STACK_PAGES: u64 = 8;
/// The user stack's top (exclusive).
const STACK_TOP: u64 = USER_TOP;
/// Longest console write a program may make at once.
const MAX_WRITE: u64 = 64 * 1024;

/// Status `return_to_kernel` uses for a fault (exit codes are 0..=255).
const FAULT_STATUS: u64 = 1 << 16;

/// How a program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It called exit with this status.
    Status(u8),
    /// It took an exception.
    Fault(Fault),
}

/// A user-mode exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub vector: u8,
    pub error_code: u64,
    pub rip: u64,
    /// CR2 (the faulting address for page faults).
    pub address: u64,
}

/// Why a program could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    Elf(elf::ElfError),
    Map(MapError),
}

/// The program running on a CPU.
struct Running {
    /// User ranges the program may hand to system calls: (start, end).
    regions: Vec<(u64, u64)>,
    fault: Option<Fault>,
}

static RUNNING: [AtomicPtr<Running>; MAX_VCPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_VCPUS];

fn running() -> Option<&'static mut Running> {
    let p = RUNNING[percpu::cpu_id() as usize].load(Ordering::Relaxed);
    // SAFETY: set by `run` on this CPU to a Running that outlives the
    // program, cleared before it is dropped; only this CPU touches it.
    unsafe { p.as_mut() }
}

/// Load `file` and run it on this CPU with `args`; returns how it ended.
pub fn run(file: &[u8], args: [u64; 4]) -> Result<Exit, LoadError> {
    let program = elf::Program::parse(file).map_err(LoadError::Elf)?;
    let mut space = AddressSpace::new().ok_or(LoadError::Map(MapError::OutOfMemory))?;
    let mut regions = Vec::new();
    for seg in program.segments() {
        let start = seg.vaddr & !(PAGE_SIZE - 1);
        let end = (seg.vaddr + seg.mem_size).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let flags = PageFlags {
            writable: seg.writable,
            executable: seg.executable,
        };
        for va in (start..end).step_by(PAGE_SIZE as usize) {
            let pa = space.map_new(va, flags).map_err(LoadError::Map)?;
            // Copy the part of the file that falls in this page.
            let (lo, hi) = (
                va.max(seg.vaddr),
                (va + PAGE_SIZE).min(seg.vaddr + seg.file_size),
            );
            if lo < hi {
                let from = (seg.file_offset + (lo - seg.vaddr)) as usize;
                let dst = (arch::phys_to_virt(pa) + (lo - va)) as *mut u8;
                // SAFETY: `dst..dst + (hi - lo)` lies inside the page just
                // mapped; the source range was checked by elf::Program.
                unsafe {
                    core::ptr::copy_nonoverlapping(file[from..].as_ptr(), dst, (hi - lo) as usize)
                };
            }
        }
        regions.push((seg.vaddr, seg.vaddr + seg.mem_size));
    }
    let stack_bottom = STACK_TOP - STACK_PAGES * PAGE_SIZE;
    for va in (stack_bottom..STACK_TOP).step_by(PAGE_SIZE as usize) {
        space
            .map_new(
                va,
                PageFlags {
                    writable: true,
                    executable: false,
                },
            )
            .map_err(LoadError::Map)?;
    }
    regions.push((stack_bottom, STACK_TOP));

    let mut state = Running {
        regions,
        fault: None,
    };
    let slot = &RUNNING[percpu::cpu_id() as usize];
    slot.store(&mut state, Ordering::Relaxed);
    space.activate();
    // SAFETY: `space` maps exactly the program's segments and stack for
    // user mode, plus the supervisor-only kernel half.
    let status = unsafe { usermode::enter_user(program.entry, STACK_TOP, args) };
    crate::mm::paging::activate_kernel();
    slot.store(core::ptr::null_mut(), Ordering::Relaxed);
    drop(space);
    Ok(match state.fault {
        Some(f) if status == FAULT_STATUS => Exit::Fault(f),
        _ => Exit::Status(status as u8),
    })
}

/// An exception in user mode: record it and end the program.
pub fn on_user_fault(vector: u8, error_code: u64, rip: u64, address: u64) -> ! {
    let fault = Fault {
        vector,
        error_code,
        rip,
        address,
    };
    match running() {
        Some(r) => r.fault = Some(fault),
        None => panic!("user-mode exception {vector} at {rip:#x} with no program running"),
    }
    usermode::return_to_kernel(FAULT_STATUS)
}

/// Whether user code at `rip` is a system-call site
/// (`k42_abi::syscall::SYSCALL_SITE`) of the program running here.
pub fn is_syscall_site(rip: u64) -> bool {
    user_bytes(rip, SYSCALL_SITE.len() as u64).is_ok_and(|b| b == SYSCALL_SITE)
}

/// The caller's memory `[ptr, ptr + len)`, if it lies inside one of its
/// mapped regions.
fn user_bytes(ptr: u64, len: u64) -> Result<&'static [u8], SyscallError> {
    let r = running().ok_or(SyscallError::BadAddress)?;
    let end = ptr.checked_add(len).ok_or(SyscallError::BadAddress)?;
    if !r.regions.iter().any(|&(s, e)| ptr >= s && end <= e) {
        return Err(SyscallError::BadAddress);
    }
    // SAFETY: the range is mapped user memory of the program running on
    // this CPU (its address space is loaded), and it stays mapped until
    // the program ends, which cannot happen during this system call.
    Ok(unsafe { core::slice::from_raw_parts(ptr as *const u8, len as usize) })
}

/// A system call from the program on this CPU.
pub fn system_call(nr: u64, args: [u64; 5]) -> i64 {
    let result = match Syscall::from_raw(nr) {
        None => Err(SyscallError::NoSuchCall),
        Some(Syscall::Exit) => usermode::return_to_kernel(args[0].min(255)),
        Some(Syscall::Write) => {
            if args[1] > MAX_WRITE {
                Err(SyscallError::InvalidArgument)
            } else {
                user_bytes(args[0], args[1]).and_then(|b| {
                    let s = core::str::from_utf8(b).map_err(|_| SyscallError::InvalidArgument)?;
                    console::write_str(s);
                    Ok(b.len() as i64)
                })
            }
        }
        Some(Syscall::BenchRecord) => {
            if args[1] != core::mem::size_of::<BenchRecord>() as u64 {
                Err(SyscallError::InvalidArgument)
            } else {
                user_bytes(args[0], args[1]).and_then(|b| {
                    let mut rec = BenchRecord::read_from_bytes(b)
                        .map_err(|_| SyscallError::InvalidArgument)?;
                    if rec.name().is_none() {
                        return Err(SyscallError::InvalidArgument);
                    }
                    // The kernel, not the program, says where it ran.
                    rec.cpu = percpu::cpu_id();
                    rec.mode = k42_abi::bench::BenchMode::User as u32;
                    crate::bench::report(&rec);
                    Ok(0)
                })
            }
        }
        Some(Syscall::GetCpu) => Ok(percpu::cpu_id() as i64),
        Some(Syscall::Null) => Ok(0),
    };
    result.unwrap_or_else(|e| e as i64)
}

/// The boot module named `name`, as bytes.
pub fn module(name: &str) -> Option<&'static [u8]> {
    let m = crate::boot::boot_info()
        .modules()
        .iter()
        .find(|m| m.name() == Some(name))?;
    // SAFETY: k42vmm loaded the module there, in RAM reserved for it and
    // never handed to the frame allocator; it is mapped in the direct map.
    Some(unsafe {
        core::slice::from_raw_parts(arch::phys_to_virt(m.start) as *const u8, m.len as usize)
    })
}

/// Report a user program's end on the console, one line.
pub fn describe_exit(name: &str, cpu: u32, exit: &Exit) {
    match exit {
        Exit::Status(0) => {}
        Exit::Status(s) => {
            crate::println!("k42: program {name} on CPU {cpu} exited with status {s}")
        }
        Exit::Fault(f) => crate::println!(
            "k42: program {name} on CPU {cpu} killed by {} (vector {}) at rip {:#x}, address {:#x}, error {:#x}",
            arch::x86_64::interrupts::exception_name(f.vector),
            f.vector,
            f.rip,
            f.address,
            f.error_code
        ),
    }
}
