//! A process's memory, K42's object chain:
//!
//! ```text
//! page fault ─► Process object (clustered: shared or replicated region
//!               list) finds the Region covering the address
//!           ─► the region's FCM (File Cache Manager) gives the page:
//!               zero-fill (anonymous memory) or a program segment from
//!               the image, allocated through the page manager (clustered)
//!           ─► the page table (the hardware's cache of all this) maps it
//! ```
//!
//! A region's protection word carries its FCM's index: `prot` bits 0–2
//! are read/write/execute, bits 8 and up its slot in `Memory::slots`.
//! The Region is a value in the Process object's list, not an object of
//! its own: its range and protection never change, so per-CPU reps would
//! all be the same, and a third object call on every fault costs tens of
//! microseconds while the kernel runs emulated. The FCMs (`fcm`) hold
//! the pages; frames a process gives back go to the page manager at once,
//! its objects after quiescence.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use k42_abi::layout::PAGE_SIZE;
use k42_abi::linux::{INFO_TRACE_VIEW, LINUX_SIGNALS, LINUX_STACK_SIZE};
use k42_abi::syscall::{
    ARGS_OFFSET, PROGRAM_INFO_MAGIC, ProgramInfo, SyscallError, USER_BASE, USER_HEAP, USER_INFO,
    USER_TOP,
};
use k42_abi::trace::USER_VIEW_BASE;
use k42_cobj::ObjRef;
use k42_cobj::objects::process::{self as pobj, Process as RegionList, Region};
use zerocopy::IntoBytes;

use super::fcm::{self, Access, Fcm, Source};
use super::files::FileObj;

use crate::mm::pages;
use crate::mm::paging::{self, AddressSpace, PageFlags};
use crate::sync::{InitOnce, SpinLock};
use crate::user::elf;
use crate::{arch, cobj};

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;
const PROT_BITS: u32 = 0xff;

/// Most regions (and so FCMs) one process may have over its life (a
/// region's slot is not reused once it is unmapped). Splitting a region
/// (`protect`, `unmap`) makes pieces that share its FCM, which count only
/// in the region list. A dynamically linked program makes 4–5 regions
/// per library (`ld.so` maps each whole, then each segment over it with
/// `MAP_FIXED`).
const MAX_REGIONS: usize = SLOT_CHUNK * SLOT_CHUNKS;
/// Slots are made [`SLOT_CHUNK`] at a time, as regions are added: a
/// process that maps little pays for few.
const SLOT_CHUNK: usize = 64;
const SLOT_CHUNKS: usize = 16;
/// A process's stack region (touched pages only): the top of user space.
const STACK_SIZE: u64 = 1 << 20;
/// A process's heap region at `USER_HEAP` (touched pages only).
const HEAP_SIZE: u64 = 16 << 20;
/// Where `MapAnon` places regions.
const ANON_BASE: u64 = 0x0000_1000_0000_0000;

/// Why a page fault could not be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// No region there, or the access is not allowed.
    Segv,
    /// The process's memory limit, or the machine's memory, ran out.
    OutOfMemory,
}

/// A process's memory: its region list, FCMs and page table.
pub struct Memory {
    space: SpinLock<AddressSpace>,
    root: u64,
    regions: ObjRef<dyn RegionList>,
    replicated: bool,
    /// Each region with its FCM, by slot.
    slots: SlotTable,
    /// Regions added (the next FCM slot); also serialises adding.
    nregions: SpinLock<usize>,
    /// The pieces of regions in the region list, as there (for fork,
    /// unmap and protect, which change the list; faults read the list).
    layout: SpinLock<Vec<Region>>,
    /// Pages this process holds (private and shared; those it lets go,
    /// by unmapping or discarding them, no longer count), and its limit.
    pages: AtomicU64,
    limit: u64,
    next_anon: AtomicU64,
    /// The slot of a Linux process's signal page ([`NO_SLOT`]: none).
    signal_slot: AtomicUsize,
}

/// A memory's region slots, in chunks of [`SLOT_CHUNK`] made when the
/// first slot of one is set (by the adder, who holds `nregions`).
struct SlotTable {
    chunks: [InitOnce<Box<[InitOnce<Slot>]>>; SLOT_CHUNKS],
}

impl SlotTable {
    fn new() -> Self {
        Self {
            chunks: [const { InitOnce::new() }; SLOT_CHUNKS],
        }
    }

    /// Slot `i`, once set.
    #[inline(always)]
    fn get(&self, i: usize) -> Option<&Slot> {
        self.chunks
            .get(i / SLOT_CHUNK)?
            .get()?
            .get(i % SLOT_CHUNK)?
            .get()
    }

    /// Set slot `i` (below [`MAX_REGIONS`], not set before).
    fn set(&self, i: usize, slot: Slot) {
        self.chunks[i / SLOT_CHUNK]
            .get_or_init(|| (0..SLOT_CHUNK).map(|_| InitOnce::new()).collect())[i % SLOT_CHUNK]
            .set(slot);
    }

    /// Take the first `n` slots (those set: slots are set in order).
    /// Only those are looked at: each look costs emulated instructions
    /// on every process's exit.
    fn take_all(&mut self, n: usize) -> impl Iterator<Item = Slot> + '_ {
        self.chunks
            .iter_mut()
            .filter_map(|c| c.get_mut_opt())
            .flat_map(|c| c.iter_mut())
            .take(n)
            .filter_map(|s| s.take())
    }
}

/// `Memory::signal_slot` of a memory without a signal page.
const NO_SLOT: usize = usize::MAX;

/// A region and what is behind it.
struct Slot {
    region: Region,
    backing: Backing,
}

/// What holds a region's pages.
enum Backing {
    /// The process's own FCM (anonymous memory, a program segment), and
    /// where its new pages come from.
    Private(ObjRef<dyn Fcm>, Source),
    /// A file's memory object, shared with every other mapping and
    /// handle of the file (and with a forked child): the region's first
    /// page is the file's page `first`.
    File { file: Arc<FileObj>, first: u64 },
    /// One kernel frame, mapped read-only, owned by no process (the trace
    /// region's header page): never freed or copied, kept by a fork.
    Fixed(u64),
}

impl Backing {
    /// Let go of it: a private FCM goes back to the pool.
    fn release(self) {
        match self {
            Self::Private(fcm, _) => fcm::retire(fcm),
            Self::File { .. } | Self::Fixed(_) => {}
        }
    }
}

/// Region-list objects of ended processes, emptied, for new processes to
/// reuse (index 0 shared, 1 replicated): making and destroying clustered
/// objects costs milliseconds while the kernel runs emulated, and a
/// reused object needs no quiescence (only its process's threads ever
/// called it, and they are gone).
static LIST_POOL: [SpinLock<Vec<ObjRef<dyn RegionList>>>; 2] =
    [const { SpinLock::new(Vec::new()) }; 2];

fn region_list(replicated: bool) -> Result<ObjRef<dyn RegionList>, SyscallError> {
    if let Some(list) = LIST_POOL[replicated as usize].lock().pop() {
        return Ok(list);
    }
    let root = if replicated {
        pobj::replicated(crate::smp::ncpus() as usize, 1, cobj::relax)
    } else {
        pobj::shared(None, cobj::relax)
    };
    cobj::system().create(root).ok_or(SyscallError::NoMemory)
}

impl Memory {
    fn new(replicated: bool, limit: u64) -> Result<Self, SyscallError> {
        let regions = region_list(replicated)?;
        let space = match AddressSpace::new() {
            Some(s) => s,
            None => {
                LIST_POOL[replicated as usize].lock().push(regions);
                return Err(SyscallError::NoMemory);
            }
        };
        Ok(Self {
            root: space.root(),
            space: SpinLock::new(space),
            regions,
            replicated,
            slots: SlotTable::new(),
            nregions: SpinLock::new(0),
            layout: SpinLock::new(Vec::new()),
            pages: AtomicU64::new(0),
            limit: limit / PAGE_SIZE,
            next_anon: AtomicU64::new(ANON_BASE),
            signal_slot: AtomicUsize::new(NO_SLOT),
        })
    }

    /// Whether the region list is the replicated implementation.
    pub fn replicated(&self) -> bool {
        self.replicated
    }

    /// Add region `[start, end)` with `prot` over a new FCM of `source`.
    fn add_region(
        &self,
        start: u64,
        end: u64,
        prot: u32,
        source: Source,
    ) -> Result<(), SyscallError> {
        let fcm = fcm::create(fcm::Contents::default())?;
        self.add_region_with(start, end, prot, Backing::Private(fcm, source))
    }

    /// Add region `[start, end)` with `prot` over `backing` (this
    /// memory's from now on, even on failure).
    fn add_region_with(
        &self,
        start: u64,
        end: u64,
        prot: u32,
        backing: Backing,
    ) -> Result<(), SyscallError> {
        let mut n = self.nregions.lock();
        if *n >= MAX_REGIONS {
            backing.release();
            return Err(SyscallError::NoMemory);
        }
        let slot = *n;
        let region = Region {
            start,
            end,
            prot: prot | (slot as u32) << 8,
        };
        let cpu = cobj::cpu();
        if !self.regions.call(&cpu.request(), |r| r.add_region(region)) {
            backing.release();
            return Err(SyscallError::InvalidArgument);
        }
        self.slots.set(slot, Slot { region, backing });
        self.layout.lock().push(region);
        *n += 1;
        Ok(())
    }

    /// A new process image: the program `file`'s segments, a stack, a
    /// heap, and the information page with `info` and the argument block.
    pub fn load(
        file: &'static [u8],
        args: &[u8],
        info: ProgramInfo,
        replicated: bool,
        limit: u64,
    ) -> Result<(Self, u64), SyscallError> {
        let program = elf::Program::parse(file).map_err(|_| SyscallError::BadProgram)?;
        let entry = program.entry;
        let mem = Self::new(replicated, limit)?;
        mem.add_image_segments(file, program)?;
        let rw = PROT_READ | PROT_WRITE;
        let stack_slot = *mem.nregions.lock();
        mem.add_region(USER_TOP - STACK_SIZE, USER_TOP, rw, Source::Zero)?;
        mem.add_region(USER_HEAP, USER_HEAP + HEAP_SIZE, rw, Source::Zero)?;
        // The argument block is at most MAX_ARGS_LEN bytes (checked by
        // the caller).
        mem.add_info_page(info, args)?;
        // Every program starts by pushing on its stack: give it the top
        // page now rather than through a fault.
        mem.charge()?;
        let top = pages::alloc_zeroed().ok_or(SyscallError::NoMemory)?;
        mem.install(stack_slot, STACK_SIZE / PAGE_SIZE - 1, top, true)?;
        Ok((mem, entry))
    }

    /// A new Linux process image: the personality's segments (from the
    /// image, shared in place), the program's segments from its file's
    /// memory object, the Linux stack (`image.stack`, the initial stack's
    /// bytes ending at `USER_TOP`), the personality's heap and the
    /// information page with `info` and the carried state. Returns the
    /// memory and the personality's entry.
    pub fn load_linux(
        image: LinuxImage,
        info: ProgramInfo,
        signal_page: u64,
        replicated: bool,
        limit: u64,
    ) -> Result<(Self, u64), SyscallError> {
        let personality =
            elf::Program::parse(image.personality).map_err(|_| SyscallError::BadProgram)?;
        let entry = personality.entry;
        let mem = Self::new(replicated, limit)?;
        mem.add_image_segments(image.personality, personality)?;
        let interp = image.interp.as_ref().map(|(f, p)| (f, *p));
        for (file, program) in [(&image.file, image.program)].into_iter().chain(interp) {
            for seg in program.segments() {
                let (start, end, prot) = segment_range(seg);
                mem.add_region(
                    start,
                    end,
                    prot,
                    Source::File {
                        file: file.clone(),
                        offset: seg.file_offset,
                        len: seg.file_size,
                        at: seg.vaddr - start,
                    },
                )?;
            }
        }
        let rw = PROT_READ | PROT_WRITE;
        let stack_slot = *mem.nregions.lock();
        let stack_base = USER_TOP - LINUX_STACK_SIZE;
        mem.add_region(stack_base, USER_TOP, rw, Source::Zero)?;
        mem.add_region(USER_HEAP, USER_HEAP + HEAP_SIZE, rw, Source::Zero)?;
        let mut info = info;
        if let Some(pa) = crate::trace::header_frame() {
            // The trace region's header, for the personality's mask test.
            let slot = *mem.nregions.lock();
            mem.add_region_with(
                USER_VIEW_BASE,
                USER_VIEW_BASE + PAGE_SIZE,
                PROT_READ,
                Backing::Fixed(pa),
            )?;
            mem.map_fixed(slot)?;
            info.args[INFO_TRACE_VIEW] = USER_VIEW_BASE;
        }
        // The carried state is at most MAX_CARRY bytes (checked by the
        // caller).
        mem.add_info_page(info, image.carry)?;
        mem.signal_slot
            .store(*mem.nregions.lock(), Ordering::Relaxed);
        mem.add_region(LINUX_SIGNALS, LINUX_SIGNALS + PAGE_SIZE, rw, Source::Zero)?;
        mem.map_signal_page(signal_page)?;
        // The initial stack's pages, filled now.
        let stack = image.stack;
        let bottom = USER_TOP - stack.len() as u64;
        let mut va = bottom & !(PAGE_SIZE - 1);
        while va < USER_TOP {
            mem.charge()?;
            let pa = pages::alloc_zeroed().ok_or(SyscallError::NoMemory)?;
            let lo = va.max(bottom);
            let from = (lo - bottom) as usize;
            let to = ((va + PAGE_SIZE) - bottom) as usize;
            pages::write_frame(pa, lo - va, &stack[from..to]);
            mem.install(stack_slot, (va - stack_base) / PAGE_SIZE, pa, true)?;
            va += PAGE_SIZE;
        }
        Ok((mem, entry))
    }

    /// A region per PT_LOAD segment of `program`, an image module
    /// (`file`), its pages filled from the module as they are touched (a
    /// PIE's relocations applied as they are).
    fn add_image_segments(
        &self,
        file: &'static [u8],
        mut program: elf::Program,
    ) -> Result<(), SyscallError> {
        let relocs = Arc::new(core::mem::take(&mut program.relocs));
        for seg in program.segments() {
            let (start, end, prot) = segment_range(seg);
            let data = &file[seg.file_offset as usize..(seg.file_offset + seg.file_size) as usize];
            self.add_region(
                start,
                end,
                prot,
                Source::Image {
                    file: data,
                    at: seg.vaddr - start,
                    start,
                    relocs: relocs.clone(),
                },
            )?;
        }
        Ok(())
    }

    /// The information page at `USER_INFO`, read-only to the program:
    /// `info` (magic and heap filled in here), then `args` (at most a
    /// page less `ARGS_OFFSET`, checked by the caller) at `ARGS_OFFSET`.
    fn add_info_page(&self, mut info: ProgramInfo, args: &[u8]) -> Result<(), SyscallError> {
        let slot = *self.nregions.lock();
        self.add_region(USER_INFO, USER_INFO + PAGE_SIZE, PROT_READ, Source::Zero)?;
        info.magic = PROGRAM_INFO_MAGIC;
        info.heap_size = HEAP_SIZE;
        info.args_len = args.len() as u32;
        self.charge()?;
        let pa = pages::alloc_zeroed().ok_or(SyscallError::NoMemory)?;
        pages::write_frame(pa, 0, info.as_bytes());
        pages::write_frame(pa, ARGS_OFFSET, args);
        self.install(slot, 0, pa, false)
    }

    /// Map the process's signal page, frame `pa` (the process's; this
    /// memory holds it too from now on), in the signal region: the frame
    /// stays, writable, for the life of this memory (a fork does not
    /// share it copy-on-write), so the kernel writes it through the
    /// direct map and the personality sees the same bytes.
    pub fn map_signal_page(&self, pa: u64) -> Result<(), SyscallError> {
        let slot = self.signal_slot.load(Ordering::Relaxed);
        if slot == NO_SLOT {
            return Err(SyscallError::InvalidArgument);
        }
        self.charge()?;
        fcm::pin(pa);
        self.install(slot, 0, pa, true)
    }

    /// Map region `slot`'s fixed frame now (read-only), so that the first
    /// read takes no fault.
    fn map_fixed(&self, slot: usize) -> Result<(), SyscallError> {
        let s = self.slots.get(slot).expect("region slot set");
        let Backing::Fixed(pa) = s.backing else {
            unreachable!("map_fixed is for fixed regions");
        };
        self.space
            .lock()
            .set_leaf(
                s.region.start,
                pa,
                PageFlags {
                    writable: false,
                    executable: false,
                },
            )
            .map_err(|_| SyscallError::NoMemory)
    }

    /// Put frame `pa` (charged, owned) at page `k` of region `slot` and
    /// map it.
    fn install(&self, slot: usize, k: u64, pa: u64, writable: bool) -> Result<(), SyscallError> {
        let s = self.slots.get(slot).expect("region slot set");
        let Backing::Private(obj, _) = s.backing else {
            unreachable!("install is for the process's own regions");
        };
        fcm::call(obj, |f| f.install(k, pa));
        self.space
            .lock()
            .set_leaf(
                s.region.start + k * PAGE_SIZE,
                pa,
                PageFlags {
                    writable,
                    executable: false,
                },
            )
            .map_err(|_| SyscallError::NoMemory)
    }

    /// Charge one page to the process.
    fn charge(&self) -> Result<(), SyscallError> {
        if self.pages.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.pages.fetch_sub(1, Ordering::Relaxed);
            return Err(SyscallError::NoMemory);
        }
        Ok(())
    }

    /// Map `len` bytes of new zero-filled memory; its address.
    pub fn map_anon(&self, len: u64) -> Result<u64, SyscallError> {
        if len == 0 || len > self.limit * PAGE_SIZE {
            return Err(SyscallError::InvalidArgument);
        }
        let start = self.place(len)?;
        self.add_region(start, start + len, PROT_READ | PROT_WRITE, Source::Zero)?;
        Ok(start)
    }

    /// An address for a new region of `len` bytes (rounded up to pages);
    /// the space is taken only when it fits.
    fn place(&self, len: u64) -> Result<u64, SyscallError> {
        let len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let mut start = self.next_anon.load(Ordering::Relaxed);
        loop {
            // A guard page between regions.
            let next = start
                .checked_add(len)
                .filter(|&end| end <= USER_TOP - STACK_SIZE)
                .and_then(|end| end.checked_add(PAGE_SIZE))
                .ok_or(SyscallError::NoMemory)?;
            match self.next_anon.compare_exchange_weak(
                start,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(start),
                Err(now) => start = now,
            }
        }
    }

    /// Map the first `len` bytes of `file` (writable if `writable`);
    /// the address.
    pub fn map_file(
        &self,
        file: Arc<FileObj>,
        len: u64,
        writable: bool,
    ) -> Result<u64, SyscallError> {
        if len == 0 || len > k42_abi::syscall::file::MAX_SIZE {
            return Err(SyscallError::InvalidArgument);
        }
        let start = self.place(len)?;
        let end = start + len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let prot = PROT_READ | if writable { PROT_WRITE } else { 0 };
        if writable {
            file.mapped_writable();
        }
        self.add_region_with(start, end, prot, Backing::File { file, first: 0 })?;
        Ok(start)
    }

    /// Load this address space on this CPU (its root never changes: no
    /// lock).
    pub fn activate(&self) {
        if arch::current_page_table() != self.root {
            paging::activate_root(self.root);
        }
    }

    /// Resolve a fault at `addr` (a write if `write`, an instruction
    /// fetch if `exec`).
    pub fn fault(&self, addr: u64, write: bool, exec: bool) -> Result<(), FaultError> {
        if !(USER_BASE..USER_TOP).contains(&addr) {
            return Err(FaultError::Segv);
        }
        let cpu = cobj::cpu();
        let region = self
            .regions
            .call(&cpu.request(), |r| r.find_region(addr))
            .ok_or(FaultError::Segv)?;
        let prot = region.prot & PROT_BITS;
        if (write && prot & PROT_WRITE == 0) || (exec && prot & PROT_EXEC == 0) {
            return Err(FaultError::Segv);
        }
        let slot = self
            .slots
            .get((region.prot >> 8) as usize)
            .ok_or(FaultError::Segv)?;
        // Pages are numbered from the start of the whole region (its FCM);
        // `region` may be a piece of it.
        let base = slot.region.start;
        let k = (addr - base) / PAGE_SIZE;
        let access = Access {
            write,
            writable: prot & PROT_WRITE != 0,
            first: (region.start - base) / PAGE_SIZE,
            end: (region.end - base) / PAGE_SIZE,
        };
        let charge = || self.charge().is_ok();
        let exec_ok = prot & PROT_EXEC != 0;
        // The faulting page is flushed from this CPU's TLB once mapped
        // (no allocation here: heap calls cost hundreds of emulated
        // instructions).
        let mut mapped = None;
        // Whether a present translation was replaced by another frame (a
        // copy-on-write copy): other CPUs running this space may cache
        // the old one.
        let mut replaced = false;
        let mut map = |j: u64, pa: u64, writable: bool| {
            let va = base + j * PAGE_SIZE;
            let old = paging::translate_in(self.root, va, false);
            if old.is_some_and(|o| o != pa) {
                replaced = true;
            }
            let ok = self
                .space
                .lock()
                .set_leaf(
                    va,
                    pa,
                    PageFlags {
                        writable,
                        executable: exec_ok,
                    },
                )
                .is_ok();
            if ok && j == k {
                mapped = Some(va);
            }
            ok
        };
        let r = match &slot.backing {
            Backing::Private(obj, source) => {
                fcm::call(*obj, |f| f.resolve(k, access, source, &charge, &mut map))
            }
            Backing::File { file, first } => {
                file.fault(first + k, &mut |pa| map(k, pa, access.writable))
            }
            // Read-only whatever the region's protection says (a program
            // may mprotect it).
            &Backing::Fixed(pa) if k == 0 && !write => {
                if map(k, pa, false) {
                    Ok(())
                } else {
                    Err(FaultError::OutOfMemory)
                }
            }
            Backing::Fixed(_) => Err(FaultError::Segv),
        };
        if let Some(va) = mapped {
            arch::flush_tlb_page(va);
        }
        if replaced {
            crate::mm::tlb::shootdown(self.root);
        }
        r
    }

    /// Whether a region covers `addr` (a fault there broke its
    /// protection rather than missing memory).
    pub fn has_region(&self, addr: u64) -> bool {
        let cpu = cobj::cpu();
        self.regions
            .call(&cpu.request(), |r| r.find_region(addr))
            .is_some()
    }

    /// The caller's memory `[ptr, ptr + len)`, every page of it mapped
    /// for reading (or writing, if `write`), or `BadAddress`.
    pub fn user_range(&self, ptr: u64, len: u64, write: bool) -> Result<(), SyscallError> {
        let end = ptr.checked_add(len).ok_or(SyscallError::BadAddress)?;
        if ptr < USER_BASE || end > USER_TOP {
            return Err(SyscallError::BadAddress);
        }
        let mut va = ptr & !(PAGE_SIZE - 1);
        while va < end {
            self.mapped(va, write)?;
            va += PAGE_SIZE;
        }
        Ok(())
    }

    /// The physical address of the caller's address `va`, faulting the
    /// page in (for writing, if `write`) when it is not mapped; or
    /// `BadAddress`.
    pub fn user_phys(&self, va: u64, write: bool) -> Result<u64, SyscallError> {
        if !(USER_BASE..USER_TOP).contains(&va) {
            return Err(SyscallError::BadAddress);
        }
        self.mapped(va, write)
    }

    /// The frame behind user address `va` (checked by the caller),
    /// faulted in if it is not mapped with the access. The page tables
    /// are read without the space's lock (~50 µs emulated): callers act
    /// for a thread of this process, which keeps it and its tables live.
    /// Inlined: the hit is on every user buffer a system call or PPC
    /// checks, where each emulated instruction costs about a microsecond.
    #[inline(always)]
    fn mapped(&self, va: u64, write: bool) -> Result<u64, SyscallError> {
        if let Some(pa) = paging::translate_in(self.root, va, write) {
            return Ok(pa);
        }
        self.fault(va, write, false)
            .map_err(|_| SyscallError::BadAddress)?;
        paging::translate_in(self.root, va, write).ok_or(SyscallError::BadAddress)
    }

    /// A copy-on-write copy for a forked child (the caller is the only
    /// thread of this process). This process's writable pages become
    /// read-only until next written.
    pub fn fork(&self) -> Result<Self, SyscallError> {
        let child = Self::new(self.replicated, self.limit * PAGE_SIZE)?;
        let n = *self.nregions.lock();
        let mut child_n = child.nregions.lock();
        let signal_slot = self.signal_slot.load(Ordering::Relaxed);
        child.signal_slot.store(signal_slot, Ordering::Relaxed);
        for slot in 0..n {
            let s = self.slots.get(slot).expect("region slot set");
            let backing = match &s.backing {
                // The child's own signal page goes in later
                // (`map_signal_page`); the parent's stays writable.
                Backing::Private(_, source) if slot == signal_slot => {
                    Backing::Private(fcm::create(fcm::Contents::default())?, source.clone())
                }
                Backing::Private(obj, source) => Backing::Private(
                    fcm::fork_object(*obj, &mut |k| {
                        self.space
                            .lock()
                            .write_protect(s.region.start + k * PAGE_SIZE);
                    })?,
                    source.clone(),
                ),
                // A file mapping is shared: the child maps the same file.
                Backing::File { file, first } => Backing::File {
                    file: file.clone(),
                    first: *first,
                },
                &Backing::Fixed(pa) => Backing::Fixed(pa),
            };
            // Same slot numbers, so the pieces' protection words hold.
            child.slots.set(
                slot,
                Slot {
                    region: s.region,
                    backing,
                },
            );
            *child_n += 1;
        }
        drop(child_n);
        let cpu = cobj::cpu();
        let pieces = self.layout.lock().clone();
        for &piece in &pieces {
            if !child.regions.call(&cpu.request(), |r| r.add_region(piece)) {
                return Err(SyscallError::InvalidArgument);
            }
            let slot = (piece.prot >> 8) as usize;
            if let Some(Slot {
                backing: Backing::Fixed(_),
                ..
            }) = child.slots.get(slot)
            {
                // Mapped now, as at exec: no fault on its first read.
                child.map_fixed(slot)?;
            }
        }
        *child.layout.lock() = pieces;
        arch::flush_tlb();
        child
            .pages
            .store(self.pages.load(Ordering::Relaxed), Ordering::Relaxed);
        child
            .next_anon
            .store(self.next_anon.load(Ordering::Relaxed), Ordering::Relaxed);
        Ok(child)
    }

    /// Map `len` bytes of zero-filled memory with `prot` at `addr` (with
    /// `fixed`, exactly there, replacing what was there; else anywhere);
    /// the address.
    /// Pages are made (and charged to the process) only when touched, so
    /// a region may be larger than the process's memory limit.
    pub fn map_at(&self, addr: u64, len: u64, prot: u32, fixed: bool) -> Result<u64, SyscallError> {
        if len == 0 || len > USER_TOP || prot & !PROT_BITS != 0 {
            return Err(SyscallError::InvalidArgument);
        }
        let len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let start = if fixed {
            check_range(addr, len)?;
            self.unmap(addr, len)?;
            addr
        } else {
            self.place(len)?
        };
        self.add_region(start, start + len, prot & 7, Source::Zero)?;
        Ok(start)
    }

    /// Map `len` bytes of `file` from byte `offset` (page-aligned) with
    /// `prot` at `addr` (with `fixed`, exactly there, replacing what was
    /// there; else anywhere); the address. `shared`: the file's own pages
    /// (stores reach the file); else private, copy-on-write over them
    /// (read-only pages are the file's frames, shared with every other
    /// mapping; the file's bytes as they are when a page is first
    /// touched, zero past the file's end at the time of the mapping).
    #[allow(clippy::too_many_arguments)]
    pub fn map_file_at(
        &self,
        addr: u64,
        len: u64,
        prot: u32,
        fixed: bool,
        shared: bool,
        file: Arc<FileObj>,
        offset: u64,
    ) -> Result<u64, SyscallError> {
        if len == 0 || len > USER_TOP || prot & !7 != 0 || !offset.is_multiple_of(PAGE_SIZE) {
            return Err(SyscallError::InvalidArgument);
        }
        let len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        offset
            .checked_add(len)
            .ok_or(SyscallError::InvalidArgument)?;
        let start = if fixed {
            check_range(addr, len)?;
            self.unmap(addr, len)?;
            addr
        } else {
            self.place(len)?
        };
        let backing = if shared {
            if prot & PROT_WRITE != 0 {
                file.mapped_writable();
            }
            Backing::File {
                file,
                first: offset / PAGE_SIZE,
            }
        } else {
            let bytes = file.len().saturating_sub(offset).min(len);
            Backing::Private(
                fcm::create(fcm::Contents::default())?,
                Source::File {
                    file,
                    offset,
                    len: bytes,
                    at: 0,
                },
            )
        };
        self.add_region_with(start, start + len, prot, backing)?;
        Ok(start)
    }

    /// Drop the pages of `[addr, addr + len)` (Linux `MADV_DONTNEED`):
    /// a private region's pages there are let go (they fault in again
    /// from its source: zero, or the file), a file's shared pages are
    /// only unmapped (they are the file's). Every page must be mapped
    /// (else `NoMemory`, as Linux's ENOMEM).
    pub fn discard(&self, addr: u64, len: u64) -> Result<(), SyscallError> {
        let len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        check_range(addr, len)?;
        let end = addr + len;
        let _adding = self.nregions.lock();
        let layout = self.layout.lock();
        let mut pieces: Vec<&Region> = layout
            .iter()
            .filter(|r| r.start < end && r.end > addr)
            .collect();
        pieces.sort_by_key(|r| r.start);
        let mut at = addr;
        for r in &pieces {
            if r.start > at {
                break;
            }
            at = at.max(r.end);
        }
        if at < end {
            return Err(SyscallError::NoMemory);
        }
        // The signal page stays: the kernel writes it through its frame.
        let signal_slot = self.signal_slot.load(Ordering::Relaxed);
        let pieces: Vec<(u64, u64, &Slot)> = pieces
            .into_iter()
            .filter(|r| (r.prot >> 8) as usize != signal_slot)
            .filter_map(|r| {
                let s = self.slots.get((r.prot >> 8) as usize)?;
                Some((r.start.max(addr), r.end.min(end), s))
            })
            .collect();
        // Unmapped everywhere before the frames go.
        let mut space = self.space.lock();
        for &(a, b, _) in &pieces {
            for va in (a..b).step_by(PAGE_SIZE as usize) {
                space.clear_leaf(va);
            }
        }
        drop(space);
        arch::flush_tlb();
        for (a, b, s) in pieces {
            if let Backing::Private(obj, _) = &s.backing {
                let base = s.region.start;
                let owned = fcm::call(*obj, |f| {
                    f.release_range((a - base) / PAGE_SIZE, (b - base) / PAGE_SIZE)
                });
                self.pages.fetch_sub(owned, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Remove `[addr, addr + len)` from the address space: the pieces of
    /// regions there are cut, their pages let go and unmapped.
    pub fn unmap(&self, addr: u64, len: u64) -> Result<(), SyscallError> {
        let len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        check_range(addr, len)?;
        self.reshape(addr, addr + len, None)
    }

    /// Give `[addr, addr + len)` protection `prot`; every page of it must
    /// be mapped (else `NoMemory`, as Linux's ENOMEM, with nothing
    /// changed).
    pub fn protect(&self, addr: u64, len: u64, prot: u32) -> Result<(), SyscallError> {
        if prot & !7 != 0 {
            return Err(SyscallError::InvalidArgument);
        }
        let len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        check_range(addr, len)?;
        let end = addr + len;
        {
            let layout = self.layout.lock();
            let mut at = addr;
            let mut pieces: Vec<&Region> = layout
                .iter()
                .filter(|r| r.start < end && r.end > addr)
                .collect();
            pieces.sort_by_key(|r| r.start);
            for r in pieces {
                if r.start > at {
                    break;
                }
                at = at.max(r.end);
            }
            if at < end {
                return Err(SyscallError::NoMemory);
            }
        }
        self.reshape(addr, end, Some(prot))
    }

    /// Cut the pieces of regions overlapping `[lo, hi)` there: the parts
    /// outside stay as they were; the parts inside get `prot` (keeping
    /// their FCM and pages) or, with `None`, go (their pages let go).
    /// Pages mapped inside are unmapped (they fault in again as allowed).
    /// Other CPUs running this space drop the old translations
    /// ([`crate::mm::tlb::shootdown`]) before the pages are let go.
    fn reshape(&self, lo: u64, hi: u64, prot: Option<u32>) -> Result<(), SyscallError> {
        let _adding = self.nregions.lock();
        let mut layout = self.layout.lock();
        let cpu = cobj::cpu();
        let mut kept = Vec::with_capacity(layout.len() + 2);
        let mut released = Vec::new();
        let mut changed = false;
        for &r in layout.iter() {
            if r.end <= lo || r.start >= hi {
                kept.push(r);
                continue;
            }
            changed = true;
            self.regions
                .call(&cpu.request(), |l| l.remove_region(r.start));
            let (a, b) = (r.start.max(lo), r.end.min(hi));
            let mut parts = [None; 3];
            if r.start < a {
                parts[0] = Some(Region { end: a, ..r });
            }
            if let Some(p) = prot {
                parts[1] = Some(Region {
                    start: a,
                    end: b,
                    prot: (r.prot & !PROT_BITS) | p,
                });
            } else if let Some(s) = self.slots.get((r.prot >> 8) as usize)
                && let Backing::Private(obj, _) = &s.backing
            {
                // Let go once no CPU can reach the pages any more (below).
                let base = s.region.start;
                released.push((*obj, (a - base) / PAGE_SIZE, (b - base) / PAGE_SIZE));
            }
            if b < r.end {
                parts[2] = Some(Region { start: b, ..r });
            }
            for part in parts.into_iter().flatten() {
                if !self.regions.call(&cpu.request(), |l| l.add_region(part)) {
                    return Err(SyscallError::InvalidArgument);
                }
                kept.push(part);
            }
        }
        *layout = kept;
        if changed {
            let mut space = self.space.lock();
            for va in (lo..hi).step_by(PAGE_SIZE as usize) {
                space.clear_leaf(va);
            }
            drop(space);
            arch::flush_tlb();
            // The other CPUs running this space's threads too.
            crate::mm::tlb::shootdown(self.root);
        }
        for (obj, from, to) in released {
            let owned = fcm::call(obj, |f| f.release_range(from, to));
            self.pages.fetch_sub(owned, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// What a Linux exec loads (see [`Memory::load_linux`]).
pub struct LinuxImage<'a> {
    /// The personality's ELF (an image module).
    pub personality: &'static [u8],
    /// The program's file and its checked headers.
    pub file: Arc<FileObj>,
    pub program: &'a elf::Program,
    /// Its interpreter's file and checked headers (placed), if it names
    /// one.
    pub interp: Option<(Arc<FileObj>, &'a elf::Program)>,
    /// The initial stack's bytes, ending at `USER_TOP`.
    pub stack: &'a [u8],
    /// The personality's carried state.
    pub carry: &'a [u8],
}

/// A segment's page range and protection.
fn segment_range(seg: &elf::Segment) -> (u64, u64, u32) {
    let start = seg.vaddr & !(PAGE_SIZE - 1);
    let end = (seg.vaddr + seg.mem_size).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let prot = PROT_READ
        | if seg.writable { PROT_WRITE } else { 0 }
        | if seg.executable { PROT_EXEC } else { 0 };
    (start, end, prot)
}

/// `[addr, addr + len)` is page-aligned user space.
fn check_range(addr: u64, len: u64) -> Result<(), SyscallError> {
    let end = addr.checked_add(len).ok_or(SyscallError::InvalidArgument)?;
    if !addr.is_multiple_of(PAGE_SIZE) || addr < USER_BASE || end > USER_TOP {
        return Err(SyscallError::InvalidArgument);
    }
    Ok(())
}

impl Drop for Memory {
    fn drop(&mut self) {
        // Its page tables are about to go: never leave them loaded.
        if arch::current_page_table() == self.root {
            paging::activate_kernel();
        }
        // Frames go back now; the emptied objects wait in their pools.
        let cpu = cobj::cpu();
        for r in core::mem::take(self.layout.get_mut()) {
            self.regions
                .call(&cpu.request(), |l| l.remove_region(r.start));
        }
        let n = *self.nregions.get_mut();
        for s in self.slots.take_all(n) {
            s.backing.release();
        }
        LIST_POOL[self.replicated as usize]
            .lock()
            .push(self.regions);
    }
}

/// Free page frames in the machine.
pub fn free_frames() -> u64 {
    crate::mm::frame::free_frames() + pages::free_pages() as u64
}

impl crate::mm::user::UserSpace for Memory {
    #[inline(always)]
    fn user_frame(&self, va: u64, write: bool) -> Result<u64, SyscallError> {
        // `mm::user` checked that `va` lies in user space.
        self.mapped(va, write)
    }
}
