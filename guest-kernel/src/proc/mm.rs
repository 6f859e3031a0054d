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
//!
//! Pages belong to FCMs, never to the page table. `fork` copies each FCM's
//! page list into the child, counts the extra sharer of every page in
//! [`SHARES`], and write-protects the parent's mappings; a write to a
//! shared page copies it (copy-on-write), a write to a page whose other
//! sharers are gone just makes it writable again. Read-only program pages
//! that lie whole in the image are mapped from the image itself, owned by
//! no one.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use k42_abi::layout::PAGE_SIZE;
use k42_abi::syscall::{
    ARGS_OFFSET, PROGRAM_INFO_MAGIC, ProgramInfo, SyscallError, USER_BASE, USER_HEAP, USER_INFO,
    USER_TOP,
};
use k42_cobj::ObjRef;
use k42_cobj::objects::process::{self as pobj, Process as RegionList, Region};

use crate::mm::pages;
use crate::mm::paging::{AddressSpace, PageFlags};
use crate::sync::{InitOnce, SpinLock};
use crate::user::elf;
use crate::{arch, cobj};

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;
const PROT_BITS: u32 = 0xff;

/// Most regions (and so FCMs) one process may have.
const MAX_REGIONS: usize = 32;
/// A process's stack region (touched pages only): the top of user space.
const STACK_SIZE: u64 = 1 << 20;
/// A process's heap region at `USER_HEAP` (touched pages only).
const HEAP_SIZE: u64 = 16 << 20;
/// Where `MapAnon` places regions.
const ANON_BASE: u64 = 0x0000_1000_0000_0000;

/// Pages on each side of a faulting image page mapped with it.
const FAULT_AROUND: u64 = 8;

/// Tag in an FCM's page list: the frame is not the FCM's (an image page).
const NOT_OWNED: u64 = 1;

/// Extra sharers of each frame (0: one owner), by frame number.
static SHARES: InitOnce<Box<[AtomicU16]>> = InitOnce::new();

fn shares() -> &'static [AtomicU16] {
    SHARES.get_or_init(|| {
        let top = crate::boot::boot_info()
            .regions()
            .iter()
            .map(|r| r.start + r.len)
            .max()
            .unwrap_or(0);
        (0..top / PAGE_SIZE).map(|_| AtomicU16::new(0)).collect()
    })
}

fn share_count(pa: u64) -> &'static AtomicU16 {
    &shares()[(pa / PAGE_SIZE) as usize]
}

/// Drop one owner's hold on frame `pa`; the last one frees it.
fn release(pa: u64) {
    let s = share_count(pa);
    let mut n = s.load(Ordering::Acquire);
    loop {
        if n == 0 {
            pages::free(pa);
            return;
        }
        match s.compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(now) => n = now,
        }
    }
}

/// Where an FCM's pages come from.
#[derive(Clone)]
enum Source {
    /// Zero-filled pages (anonymous memory).
    Zero,
    /// A program segment: `file` bytes appear at region offset `at`; a
    /// PIE's relocations (address, value), applied as pages are filled,
    /// in a region starting at `start`.
    Image {
        file: &'static [u8],
        at: u64,
        start: u64,
        relocs: Arc<Vec<(u64, u64)>>,
    },
}

impl Source {
    /// The relocations that fall in page `k`.
    fn relocs_in(&self, k: u64) -> &[(u64, u64)] {
        let Source::Image { start, relocs, .. } = self else {
            return &[];
        };
        let lo = start + k * PAGE_SIZE;
        let a = relocs.partition_point(|r| r.0 < lo);
        let b = relocs.partition_point(|r| r.0 < lo + PAGE_SIZE);
        &relocs[a..b]
    }
}

/// A File Cache Manager: the pages of one region's memory object.
struct Fcm {
    source: Source,
    /// Page index in the region → frame (| NOT_OWNED).
    pages: SpinLock<BTreeMap<u64, u64>>,
}

impl Fcm {
    fn new(source: Source) -> Self {
        Self {
            source,
            pages: SpinLock::new(BTreeMap::new()),
        }
    }

    /// The image frame to map in place for page `k`, if the region is
    /// read-only and the page lies whole, page-aligned, in the image.
    fn in_place(&self, k: u64) -> Option<u64> {
        let Source::Image { file, at, .. } = self.source else {
            return None;
        };
        if !self.source.relocs_in(k).is_empty() {
            return None;
        }
        let lo = k * PAGE_SIZE;
        if lo < at || lo + PAGE_SIZE > at + file.len() as u64 {
            return None;
        }
        let va = file.as_ptr() as u64 + (lo - at);
        if !va.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        arch::virt_to_phys(va)
    }

    /// A new page for index `k`: an image page mapped in place (read-only
    /// regions), or a fresh frame filled from the source. Returns the
    /// list entry.
    fn fill(&self, k: u64, writable: bool) -> Result<u64, SyscallError> {
        if !writable && let Some(pa) = self.in_place(k) {
            return Ok(pa | NOT_OWNED);
        }
        let lo = k * PAGE_SIZE;
        let pa = pages::alloc_zeroed().ok_or(SyscallError::NoMemory)?;
        if let Source::Image { file, at, .. } = self.source {
            let (from, to) = (lo.max(at), (lo + PAGE_SIZE).min(at + file.len() as u64));
            if from < to {
                let src = &file[(from - at) as usize..(to - at) as usize];
                // SAFETY: the frame is ours and mapped in the direct map;
                // `from - lo + len <= PAGE_SIZE`.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        (arch::phys_to_virt(pa) + (from - lo)) as *mut u8,
                        src.len(),
                    )
                };
            }
            for &(va, value) in self.source.relocs_in(k) {
                let off = va & (PAGE_SIZE - 1);
                // SAFETY: the frame is ours; relocations are 8-byte
                // aligned (checked by elf::Program), so this word lies in
                // the page.
                unsafe { ((arch::phys_to_virt(pa) + off) as *mut u64).write_unaligned(value) };
            }
        }
        Ok(pa)
    }

    /// This FCM's copy for a forked child: the same pages, each with one
    /// more sharer.
    fn fork(&self) -> Self {
        let pages = self.pages.lock();
        for &e in pages.values() {
            if e & NOT_OWNED == 0 {
                share_count(e).fetch_add(1, Ordering::AcqRel);
            }
        }
        Self {
            source: self.source.clone(),
            pages: SpinLock::new(pages.clone()),
        }
    }
}

impl Drop for Fcm {
    fn drop(&mut self) {
        for &e in self.pages.lock().values() {
            if e & NOT_OWNED == 0 {
                release(e);
            }
        }
    }
}

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
    slots: Box<[InitOnce<Slot>]>,
    /// Regions added (the next FCM slot); also serialises adding.
    nregions: SpinLock<usize>,
    /// Pages this process holds (private and shared), and its limit.
    pages: AtomicU64,
    limit: u64,
    next_anon: AtomicU64,
}

/// A region and the FCM behind it.
struct Slot {
    region: Region,
    fcm: Fcm,
}

/// Region-list objects of ended processes, destroyed from an idle CPU.
static DEAD_REGIONS: SpinLock<Vec<ObjRef<dyn RegionList>>> = SpinLock::new(Vec::new());

/// A new region-list object. When the table is full of ended processes'
/// lists, destroy them (or wait for the CPU destroying them) and retry.
fn region_list(replicated: bool) -> Result<ObjRef<dyn RegionList>, SyscallError> {
    for round in 0..1000 {
        let root: Box<dyn k42_cobj::root::Root<dyn RegionList>> = if replicated {
            pobj::replicated(crate::smp::ncpus() as usize, 1, cobj::relax)
        } else {
            pobj::shared(None, cobj::relax)
        };
        if let Some(r) = cobj::system().create(root) {
            return Ok(r);
        }
        // Another CPU may be destroying them, and waiting for this one to
        // pass a quiescent point: pass one, and keep trying.
        super::reap_objects();
        cobj::quiescent();
        cobj::relax(round);
    }
    Err(SyscallError::NoMemory)
}

impl Memory {
    fn new(replicated: bool, limit: u64) -> Result<Self, SyscallError> {
        let regions = region_list(replicated)?;
        let space = match AddressSpace::new() {
            Some(s) => s,
            None => {
                DEAD_REGIONS.lock().push(regions);
                return Err(SyscallError::NoMemory);
            }
        };
        Ok(Self {
            root: space.root(),
            space: SpinLock::new(space),
            regions,
            replicated,
            slots: (0..MAX_REGIONS).map(|_| InitOnce::new()).collect(),
            nregions: SpinLock::new(0),
            pages: AtomicU64::new(0),
            limit: limit / PAGE_SIZE,
            next_anon: AtomicU64::new(ANON_BASE),
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
        let mut n = self.nregions.lock();
        if *n >= MAX_REGIONS {
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
            return Err(SyscallError::InvalidArgument);
        }
        self.slots[slot].set(Slot {
            region,
            fcm: Fcm::new(source),
        });
        *n += 1;
        Ok(())
    }

    /// A new process image: the program `file`'s segments, a stack, a
    /// heap, and the information page with `info` and the argument block.
    pub fn load(
        file: &'static [u8],
        args: &[u8],
        mut info: ProgramInfo,
        replicated: bool,
        limit: u64,
    ) -> Result<(Self, u64), SyscallError> {
        let mut program = elf::Program::parse(file).map_err(|_| SyscallError::BadProgram)?;
        let relocs = Arc::new(core::mem::take(&mut program.relocs));
        let mem = Self::new(replicated, limit)?;
        for seg in program.segments() {
            let start = seg.vaddr & !(PAGE_SIZE - 1);
            let end = (seg.vaddr + seg.mem_size).div_ceil(PAGE_SIZE) * PAGE_SIZE;
            let prot = PROT_READ
                | if seg.writable { PROT_WRITE } else { 0 }
                | if seg.executable { PROT_EXEC } else { 0 };
            let data = &file[seg.file_offset as usize..(seg.file_offset + seg.file_size) as usize];
            mem.add_region(
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
        let rw = PROT_READ | PROT_WRITE;
        let stack_slot = *mem.nregions.lock();
        mem.add_region(USER_TOP - STACK_SIZE, USER_TOP, rw, Source::Zero)?;
        mem.add_region(USER_HEAP, USER_HEAP + HEAP_SIZE, rw, Source::Zero)?;
        // The information page: filled now, read-only to the program.
        let slot = *mem.nregions.lock();
        mem.add_region(USER_INFO, USER_INFO + PAGE_SIZE, PROT_READ, Source::Zero)?;
        info.magic = PROGRAM_INFO_MAGIC;
        info.heap_size = HEAP_SIZE;
        info.args_len = args.len() as u32;
        mem.charge()?;
        let pa = pages::alloc_zeroed().ok_or(SyscallError::NoMemory)?;
        let page = arch::phys_to_virt(pa);
        // SAFETY: the frame is ours, mapped in the direct map; the info
        // block and the argument block (at most MAX_ARGS_LEN bytes,
        // checked by the caller) fit in the page.
        unsafe {
            (page as *mut ProgramInfo).write(info);
            core::ptr::copy_nonoverlapping(
                args.as_ptr(),
                (page + ARGS_OFFSET) as *mut u8,
                args.len(),
            );
        }
        mem.install(slot, 0, pa, false)?;
        // Every program starts by pushing on its stack: give it the top
        // page now rather than through a fault.
        mem.charge()?;
        let top = pages::alloc_zeroed().ok_or(SyscallError::NoMemory)?;
        mem.install(stack_slot, STACK_SIZE / PAGE_SIZE - 1, top, true)?;
        Ok((mem, program.entry))
    }

    /// Put frame `pa` (charged, owned) at page `k` of region `slot` and
    /// map it.
    fn install(&self, slot: usize, k: u64, pa: u64, writable: bool) -> Result<(), SyscallError> {
        let s = self.slots[slot].get().expect("region slot set");
        s.fcm.pages.lock().insert(k, pa);
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
        let len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        // A guard page between regions.
        let start = self.next_anon.fetch_add(len + PAGE_SIZE, Ordering::Relaxed);
        if start + len > USER_TOP - STACK_SIZE {
            return Err(SyscallError::NoMemory);
        }
        self.add_region(start, start + len, PROT_READ | PROT_WRITE, Source::Zero)?;
        Ok(start)
    }

    /// Load this address space on this CPU.
    pub fn activate(&self) {
        if arch::current_page_table() != self.root {
            self.space.lock().activate();
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
        let fcm = &self.slots[(region.prot >> 8) as usize]
            .get()
            .ok_or(FaultError::Segv)?
            .fcm;
        let va = addr & !(PAGE_SIZE - 1);
        let k = (va - region.start) / PAGE_SIZE;
        let writable = prot & PROT_WRITE != 0;
        let oom = |_| FaultError::OutOfMemory;
        let mut list = fcm.pages.lock();
        let (pa, map_writable) = match list.get(&k).copied() {
            None => {
                self.charge().map_err(oom)?;
                let e = match fcm.fill(k, writable) {
                    Ok(e) => e,
                    Err(_) => {
                        self.pages.fetch_sub(1, Ordering::Relaxed);
                        return Err(FaultError::OutOfMemory);
                    }
                };
                if e & NOT_OWNED != 0 {
                    self.pages.fetch_sub(1, Ordering::Relaxed);
                    self.fault_around(&region, fcm, &mut list, k);
                }
                list.insert(k, e);
                (e & !NOT_OWNED, writable && e & NOT_OWNED == 0)
            }
            Some(e) if e & NOT_OWNED != 0 => (e & !NOT_OWNED, false),
            Some(e) if share_count(e).load(Ordering::Acquire) == 0 => (e, writable),
            Some(e) if write => {
                // Copy on write: this process's own copy of a shared page.
                let new = pages::alloc_zeroed().ok_or(FaultError::OutOfMemory)?;
                // SAFETY: both frames are in the direct map; `new` is ours
                // and `e` is held (shared) by this FCM.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        arch::phys_to_virt(e) as *const u8,
                        arch::phys_to_virt(new) as *mut u8,
                        PAGE_SIZE as usize,
                    )
                };
                list.insert(k, new);
                release(e);
                (new, true)
            }
            Some(e) => (e, false),
        };
        self.space
            .lock()
            .set_leaf(
                va,
                pa,
                PageFlags {
                    writable: map_writable,
                    executable: prot & PROT_EXEC != 0,
                },
            )
            .map_err(|_| FaultError::OutOfMemory)?;
        drop(list);
        arch::flush_tlb_page(va);
        Ok(())
    }

    /// Map the image pages around page `k` of read-only `region` that
    /// can be mapped in place too: a program's code is read in a burst,
    /// and each fault costs hundreds of emulated instructions.
    fn fault_around(&self, region: &Region, fcm: &Fcm, list: &mut BTreeMap<u64, u64>, k: u64) {
        let pages = (region.end - region.start) / PAGE_SIZE;
        let (lo, hi) = (
            k.saturating_sub(FAULT_AROUND),
            (k + FAULT_AROUND + 1).min(pages),
        );
        let flags = PageFlags {
            writable: false,
            executable: region.prot & PROT_EXEC != 0,
        };
        let mut space = self.space.lock();
        for j in (lo..hi).filter(|&j| j != k) {
            if list.contains_key(&j) {
                continue;
            }
            let Some(pa) = fcm.in_place(j) else { continue };
            if space
                .set_leaf(region.start + j * PAGE_SIZE, pa, flags)
                .is_ok()
            {
                list.insert(j, pa | NOT_OWNED);
            }
        }
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
            if !self.space.lock().allows(va, write) {
                self.fault(va, write, false)
                    .map_err(|_| SyscallError::BadAddress)?;
            }
            va += PAGE_SIZE;
        }
        Ok(())
    }

    /// A copy-on-write copy for a forked child (the caller is the only
    /// thread of this process). This process's writable pages become
    /// read-only until next written.
    pub fn fork(&self) -> Result<Self, SyscallError> {
        let child = Self::new(self.replicated, self.limit * PAGE_SIZE)?;
        let n = *self.nregions.lock();
        let cpu = cobj::cpu();
        let mut space = self.space.lock();
        for slot in 0..n {
            let s = self.slots[slot].get().expect("region slot set");
            child.slots[slot].set(Slot {
                region: s.region,
                fcm: s.fcm.fork(),
            });
            if s.region.prot & PROT_WRITE != 0 {
                for (&k, &e) in s.fcm.pages.lock().iter() {
                    if e & NOT_OWNED == 0 {
                        space.write_protect(s.region.start + k * PAGE_SIZE);
                    }
                }
            }
            child
                .regions
                .call(&cpu.request(), |c| c.add_region(s.region));
        }
        drop(space);
        arch::flush_tlb();
        *child.nregions.lock() = n;
        child
            .pages
            .store(self.pages.load(Ordering::Relaxed), Ordering::Relaxed);
        child
            .next_anon
            .store(self.next_anon.load(Ordering::Relaxed), Ordering::Relaxed);
        Ok(child)
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // The FCMs free their pages as they drop with `slots`; the region
        // list object waits for a quiescent moment.
        DEAD_REGIONS.lock().push(self.regions);
    }
}

/// Destroy the region lists of ended processes (from an idle CPU, outside
/// any request).
pub fn reap_regions() {
    loop {
        let Some(obj) = DEAD_REGIONS.lock().pop() else {
            return;
        };
        let cpu = cobj::cpu();
        if cpu.destroy(obj).is_err() {
            DEAD_REGIONS.lock().push(obj);
            return;
        }
    }
}

/// Free page frames in the machine.
pub fn free_frames() -> u64 {
    crate::mm::frame::free_frames() + pages::free_pages() as u64
}
