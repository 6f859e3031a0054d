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
#![deny(unsafe_code)]

pub mod elf;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::layout::PAGE_SIZE;
use k42_abi::syscall::{
    PROGRAM_INFO_MAGIC, ProgramInfo, SYSCALL_SITE, SyscallError, USER_HEAP, USER_INFO, USER_TOP,
};

use crate::arch;
use crate::mm::pages;
use crate::mm::paging::{self, AddressSpace, MapError, PageFlags};
use crate::mm::user::{self as user_mem, UserSpace};
use crate::percpu::{self, CpuLocal, NoPreempt};
use zerocopy::IntoBytes;

/// Pages of user stack per CPU.
const STACK_PAGES: u64 = 4;
/// Address space taken by each CPU's stack: the stack and a guard page.
const STACK_SPAN: u64 = (STACK_PAGES + 1) * PAGE_SIZE;
/// The top (exclusive) of CPU slot 0's stack.
const STACK_TOP: u64 = USER_TOP;
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
    /// Its address space's root table.
    root: u64,
    fault: Option<Fault>,
    /// Whether the trace region is mapped at `USER_VIEW_BASE`.
    trace_view: bool,
}

impl UserSpace for Running {
    fn user_frame(&self, va: u64, write: bool) -> Result<u64, SyscallError> {
        // Every page of a region is mapped at load (no faulting in).
        if !self
            .regions
            .iter()
            .any(|&(s, e)| va < e && va + PAGE_SIZE > s)
        {
            return Err(SyscallError::BadAddress);
        }
        paging::translate_in(self.root, va, write).ok_or(SyscallError::BadAddress)
    }
}

/// The kernel-run program on each CPU (none while a CPU runs a process).
static RUNNING: CpuLocal<Option<Running>> = CpuLocal::none();

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

/// Map the trace region's user view (`trace::user_view`) into `space`
/// at `USER_VIEW_BASE`; false when tracing is off.
fn map_trace_view(space: &mut AddressSpace, only_cpu: Option<u32>) -> Result<bool, MapError> {
    let Some(pages) = crate::trace::user_view(only_cpu) else {
        return Ok(false);
    };
    for (off, pa, writable) in pages {
        let flags = PageFlags {
            writable,
            executable: false,
        };
        space.map_shared(k42_abi::trace::USER_VIEW_BASE + off, pa, flags)?;
    }
    Ok(true)
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
            // (processes take PIEs: proc::memory).
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
                    // The source range was checked by elf::Program.
                    let from = (seg.file_offset + (lo - seg.vaddr)) as usize;
                    pages::write_frame(pa, lo - va, &file[from..from + (hi - lo) as usize]);
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
        pages::write_frame(page, 0, info.as_bytes());
        // The trace buffers, shared with the kernel. Not in `regions`: no
        // system call takes a pointer into them.
        let only = (stacks == 1).then(percpu::cpu_id);
        let trace_view = map_trace_view(&mut space, only).map_err(LoadError::Map)?;
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
        let here = NoPreempt::here();
        RUNNING.set(
            &here,
            Some(Running {
                regions: self.regions.clone(),
                root: self.space.root(),
                fault: None,
                trace_view: self.trace_view,
            }),
        );
        let me = percpu::cpu_id();
        let top = STACK_TOP - slot as u64 * STACK_SPAN;
        let status = self
            .space
            .run_user(self.entry, top, [USER_INFO, me as u64, 0, 0]);
        let state = RUNNING.take(&here).expect("the program's state");
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
    let here = NoPreempt::here();
    let Some(mut running) = RUNNING.take(&here) else {
        panic!("user-mode exception {vector} at {rip:#x} with no program running");
    };
    running.fault = Some(fault);
    RUNNING.set(&here, Some(running));
    arch::return_to_kernel(FAULT_STATUS)
}

/// End the kernel-run program on this CPU with `status` (its `Exit`).
pub fn exit_program(status: u64) -> ! {
    arch::return_to_kernel(status)
}

/// Run `f` on the user memory of the kernel-run program on this CPU.
pub fn with_program_space<R>(
    f: impl FnOnce(&dyn UserSpace) -> Result<R, SyscallError>,
) -> Result<R, SyscallError> {
    // Out of the slot while `f` runs, back in after.
    let here = NoPreempt::here();
    let Some(running) = RUNNING.take(&here) else {
        return Err(SyscallError::BadAddress);
    };
    let r = f(&running);
    RUNNING.set(&here, Some(running));
    r
}

/// Where the trace region is mapped for the kernel-run program on this
/// CPU, or 0 (none mapped, or a process is calling).
pub fn trace_view() -> u64 {
    let here = NoPreempt::here();
    let running = RUNNING.take(&here);
    let view = match &running {
        Some(r) if r.trace_view => k42_abi::trace::USER_VIEW_BASE,
        _ => 0,
    };
    RUNNING.set(&here, running);
    view
}

/// Whether user code at `rip` is a system-call site
/// (`k42_abi::syscall::SYSCALL_SITE`) of the program running here.
pub fn is_syscall_site(rip: u64) -> bool {
    // The common case: the site lies in the page just fetched, read with
    // no page walk.
    if let Some(b) = user_mem::just_fetched::<{ SYSCALL_SITE.len() }>(rip) {
        return b == SYSCALL_SITE;
    }
    let mut b = [0u8; SYSCALL_SITE.len()];
    let read = match crate::proc::sched::current() {
        Some(t) => user_mem::read_into(t.memory(), rip, &mut b),
        None => with_program_space(|space| user_mem::read_into(space, rip, &mut b)),
    };
    read.is_ok() && b == SYSCALL_SITE
}

/// The boot module named `name`, as bytes.
pub fn module(name: &str) -> Option<&'static [u8]> {
    crate::boot::module_bytes(name)
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
            arch::exception_name(f.vector),
            f.vector,
            f.rip,
            f.address,
            f.error_code
        ),
    }
}
