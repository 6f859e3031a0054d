//! User programs: load a static ELF from a boot module into a fresh
//! address space, run it in user mode on this CPU until it exits or
//! faults, and serve its system calls (`k42_abi::syscall`).
//!
//! Here a program runs to completion as a call from the kernel, either on
//! one CPU ([`run`]) or on every CPU at once in one address space
//! ([`run_everywhere`], how the in-kernel tests and the user-level
//! benchmarks of shared data run). Processes — scheduled, forked, waited
//! for — are `proc`; the system-call entry and the calls every program
//! has are here.
//!
//! User address space:
//!
//! ```text
//! 0x0040_0000   program segments (USER_BASE)
//! 0x1000_0000   ProgramInfo, read-only (USER_INFO)
//! 0x2000_0000   heap, zero-filled (USER_HEAP)
//!   ...
//! 0x7000_0000_0000  the trace region, if tracing is on (USER_VIEW_BASE):
//!               its header read-only, every CPU's buffers read-write
//! USER_TOP      CPU slot 0's stack, then slot 1's below a guard page, ...
//! ```

pub mod elf;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use k42_abi::MAX_VCPUS;
use k42_abi::bench::BenchRecord;
use k42_abi::layout::PAGE_SIZE;
use k42_abi::syscall::{
    PROGRAM_INFO_MAGIC, ProgramInfo, SYSCALL_SITE, Syscall, SyscallError, USER_HEAP, USER_INFO,
    USER_TOP,
};
use zerocopy::FromBytes;

use crate::arch::{self, x86_64::usermode};
use crate::mm::paging::{AddressSpace, MapError, PageFlags};
use crate::{console, percpu};

/// Pages of user stack per CPU.
const STACK_PAGES: u64 = 4;
/// Address space taken by each CPU's stack: the stack and a guard page.
const STACK_SPAN: u64 = (STACK_PAGES + 1) * PAGE_SIZE;
/// The top (exclusive) of CPU slot 0's stack.
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
    /// The heap asked for is larger than the kernel allows.
    HeapTooLarge,
}

/// Largest heap a program may ask for.
const MAX_HEAP: u64 = 64 << 20;

/// The program running on a CPU.
struct Running {
    /// User ranges the program may hand to system calls: (start, end).
    regions: Arc<Vec<(u64, u64)>>,
    fault: Option<Fault>,
    /// Whether the trace region is mapped at `USER_VIEW_BASE`.
    trace_view: bool,
}

static RUNNING: [AtomicPtr<Running>; MAX_VCPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_VCPUS];

fn running() -> Option<&'static mut Running> {
    let p = RUNNING[percpu::cpu_id() as usize].load(Ordering::Relaxed);
    // SAFETY: set by `Loaded::enter` on this CPU to a Running that outlives
    // the program's run, cleared before it is dropped; only this CPU
    // touches it.
    unsafe { p.as_mut() }
}

/// A program loaded into its address space, ready to run on one CPU or
/// on several at once (each with its own stack, sharing all memory).
pub struct Loaded {
    space: AddressSpace,
    entry: u64,
    regions: Arc<Vec<(u64, u64)>>,
    stacks: u32,
    /// Whether the trace region is mapped at `USER_VIEW_BASE`.
    trace_view: bool,
}

fn map_range(
    space: &mut AddressSpace,
    start: u64,
    end: u64,
    flags: PageFlags,
) -> Result<(), LoadError> {
    for va in (start..end).step_by(PAGE_SIZE as usize) {
        space.map_new(va, flags).map_err(LoadError::Map)?;
    }
    Ok(())
}

impl Loaded {
    /// Load `file` with stacks for `stacks` CPUs, a zero-filled heap of
    /// `heap` bytes and the program info `info` (its `heap_size` and
    /// `magic` are filled in here). A one-CPU program must run on the CPU
    /// that loads it: its trace view holds only that CPU's buffers.
    pub fn new(
        file: &[u8],
        stacks: u32,
        heap: u64,
        mut info: ProgramInfo,
    ) -> Result<Self, LoadError> {
        if heap > MAX_HEAP {
            return Err(LoadError::HeapTooLarge);
        }
        let program = elf::Program::parse(file).map_err(LoadError::Elf)?;
        if program.pie {
            // Kernel-run programs are copied in whole, without relocating
            // (processes take PIEs: proc::mm).
            return Err(LoadError::Elf(elf::ElfError::NotX86_64Executable));
        }
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
                    // SAFETY: `dst..dst + (hi - lo)` lies inside the page
                    // just mapped; the source range was checked by
                    // elf::Program.
                    unsafe {
                        core::ptr::copy_nonoverlapping(
                            file[from..].as_ptr(),
                            dst,
                            (hi - lo) as usize,
                        )
                    };
                }
            }
            regions.push((seg.vaddr, seg.vaddr + seg.mem_size));
        }
        let data = PageFlags {
            writable: true,
            executable: false,
        };
        for s in 0..stacks as u64 {
            let top = STACK_TOP - s * STACK_SPAN;
            map_range(&mut space, top - STACK_PAGES * PAGE_SIZE, top, data)?;
            regions.push((top - STACK_PAGES * PAGE_SIZE, top));
        }
        let heap = heap.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        map_range(&mut space, USER_HEAP, USER_HEAP + heap, data)?;
        regions.push((USER_HEAP, USER_HEAP + heap));
        info.magic = PROGRAM_INFO_MAGIC;
        info.heap_size = heap;
        let page = space
            .map_new(
                USER_INFO,
                PageFlags {
                    writable: false,
                    executable: false,
                },
            )
            .map_err(LoadError::Map)?;
        // SAFETY: the page was just mapped for the info block alone.
        unsafe { (arch::phys_to_virt(page) as *mut ProgramInfo).write(info) };
        // The trace buffers, shared with the kernel. Not in `regions`: no
        // system call takes a pointer into them.
        let only = (stacks == 1).then(percpu::cpu_id);
        let trace_view = crate::trace::map_into(&mut space, only).map_err(LoadError::Map)?;
        regions.push((
            USER_INFO,
            USER_INFO + core::mem::size_of::<ProgramInfo>() as u64,
        ));
        Ok(Self {
            space,
            entry: program.entry,
            regions: Arc::new(regions),
            stacks,
            trace_view,
        })
    }

    /// Run the program on this CPU with stack `slot` until it exits or
    /// faults.
    pub fn enter(&self, slot: u32) -> Exit {
        assert!(slot < self.stacks, "stack slot {slot} of {}", self.stacks);
        let mut state = Running {
            regions: self.regions.clone(),
            fault: None,
            trace_view: self.trace_view,
        };
        let me = percpu::cpu_id();
        let cell = &RUNNING[me as usize];
        cell.store(&mut state, Ordering::Relaxed);
        self.space.activate();
        let top = STACK_TOP - slot as u64 * STACK_SPAN;
        // SAFETY: the space maps exactly the program's segments, stacks,
        // heap and info page for user mode, plus the supervisor-only
        // kernel half.
        let status = unsafe { usermode::enter_user(self.entry, top, [USER_INFO, me as u64, 0, 0]) };
        crate::mm::paging::activate_kernel();
        cell.store(core::ptr::null_mut(), Ordering::Relaxed);
        match state.fault {
            Some(f) if status == FAULT_STATUS => Exit::Fault(f),
            _ => Exit::Status(status as u8),
        }
    }
}

/// Load `file` and run it on this CPU alone with program arguments
/// `args` and no heap.
pub fn run(file: &[u8], args: [u64; 8]) -> Result<Exit, LoadError> {
    let info = ProgramInfo {
        cpus: 1,
        tsc_khz: crate::time::tsc_khz(),
        args,
        ..Default::default()
    };
    Ok(Loaded::new(file, 1, 0, info)?.enter(0))
}

/// Load `file` once and run it on every CPU at once, each with its own
/// stack and all sharing its memory and a `heap`-byte heap; returns how
/// it ended on each CPU.
pub fn run_everywhere(file: &[u8], heap: u64, args: [u64; 8]) -> Result<Vec<Exit>, LoadError> {
    let n = crate::smp::ncpus();
    let info = ProgramInfo {
        cpus: n,
        tsc_khz: crate::time::tsc_khz(),
        args,
        ..Default::default()
    };
    let loaded = Loaded::new(file, n, heap, info)?;
    let exits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(u64::MAX)).collect();
    let faults = crate::sync::SpinLock::new(Vec::new());
    crate::smp::run_on_all(|cpu| {
        let e = loaded.enter(cpu);
        match e {
            Exit::Status(s) => exits[cpu as usize].store(s as u64, Ordering::Relaxed),
            Exit::Fault(f) => faults.lock().push((cpu, f)),
        }
    });
    let faults = faults.lock();
    Ok((0..n)
        .map(|c| match faults.iter().find(|(fc, _)| *fc == c) {
            Some((_, f)) => Exit::Fault(*f),
            None => Exit::Status(exits[c as usize].load(Ordering::Relaxed) as u8),
        })
        .collect())
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
    let len = SYSCALL_SITE.len() as u64;
    let in_page = (rip & (PAGE_SIZE - 1)) + len <= PAGE_SIZE;
    if in_page && (k42_abi::syscall::USER_BASE..k42_abi::syscall::USER_TOP).contains(&rip) {
        // SAFETY: the CPU just fetched the trapping instruction at `rip`
        // from this user page, so it is mapped and readable, and it stays
        // mapped while this thread is in the kernel; the site lies in
        // that page. (The common case: no region walk for every call.)
        let b = unsafe { core::slice::from_raw_parts(rip as *const u8, len as usize) };
        return b == SYSCALL_SITE;
    }
    user_bytes(rip, len).is_ok_and(|b| b == SYSCALL_SITE)
}

/// The caller's memory `[ptr, ptr + len)`, if it lies inside one of its
/// mapped regions.
fn user_bytes(ptr: u64, len: u64) -> Result<&'static [u8], SyscallError> {
    if let Some(t) = crate::proc::sched::current() {
        t.process.memory().user_range(ptr, len, false)?;
        // SAFETY: user_range mapped the whole range for reading in the
        // process's address space, which is loaded; pages are never
        // unmapped while one of its threads is in the kernel.
        return Ok(unsafe { core::slice::from_raw_parts(ptr as *const u8, len as usize) });
    }
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

/// Copy user text to the console through a kernel buffer (the console
/// hypercall takes kernel addresses), at character boundaries.
fn write_user_text(mut s: &str) {
    let mut buf = console::FixedBuf::<256>::new();
    while !s.is_empty() {
        let mut n = s.len().min(256);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        buf.clear();
        let _ = core::fmt::Write::write_str(&mut buf, &s[..n]);
        console::write_str(buf.as_str());
        s = &s[n..];
    }
}

/// A system call (the trap at a system-call site) from user mode on
/// this CPU: resume after the site with the result in `rax` — or, for a
/// process call that switched threads, with another thread's state.
pub fn syscall_entry(frame: &mut crate::arch::TrapFrame) {
    frame.rip += SYSCALL_SITE.len() as u64;
    if crate::proc::system_call(frame).is_some() {
        return;
    }
    let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8];
    frame.rax = system_call(frame.rax, args) as u64;
}

/// A system call every user program may make (kernel-run programs and
/// processes alike).
fn system_call(nr: u64, args: [u64; 5]) -> i64 {
    let in_process = crate::proc::sched::current().is_some();
    let result = match Syscall::from_raw(nr) {
        None => Err(SyscallError::NoSuchCall),
        Some(Syscall::Exit) if !in_process => usermode::return_to_kernel(args[0].min(255)),
        Some(Syscall::Write) => {
            if args[1] > MAX_WRITE {
                Err(SyscallError::InvalidArgument)
            } else {
                user_bytes(args[0], args[1]).and_then(|b| {
                    let s = core::str::from_utf8(b).map_err(|_| SyscallError::InvalidArgument)?;
                    write_user_text(s);
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
        Some(Syscall::TraceView) => Ok(match running() {
            Some(r) if r.trace_view => k42_abi::trace::USER_VIEW_BASE as i64,
            _ => 0,
        }),
        Some(Syscall::Null) => Ok(0),
        Some(Syscall::Yield) => {
            arch::backoff(args[0].min(u32::MAX as u64) as u32);
            Ok(0)
        }
        // Process calls from a program the kernel runs directly.
        Some(_) => Err(SyscallError::NotAProcess),
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
