//! Address spaces for user programs: a PML4 that shares the kernel's
//! upper half (copied from the boot page tables) and maps user pages
//! with 4 KiB pages in the lower half.
//!
//! Every frame an address space allocates (tables and pages) is recorded
//! and freed when it drops; pages are zeroed when mapped, so nothing of a
//! previous owner leaks. Shared frames (the trace buffers) are mapped
//! without being owned. Every table entry written is recorded too, so
//! that the tables can be cleared entry by entry (cheap) before they go
//! back to the page-table pool (`pages::free_table`, which says why).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::layout::PAGE_SIZE;

use crate::arch;
use crate::mm::pages;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const NO_EXECUTE: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Physical address of the kernel's (boot) PML4.
static KERNEL_ROOT: AtomicU64 = AtomicU64::new(0);

/// The kernel half's top-level entries that are in use, as (index,
/// entry): copying a few entries into a new address space instead of all
/// 256 saves a quarter millisecond of emulated `rep movsq`.
static KERNEL_ENTRIES: crate::sync::InitOnce<Vec<(usize, u64)>> = crate::sync::InitOnce::new();

/// Remember the kernel's page tables (boot CPU, at boot).
pub fn init() {
    let root = arch::current_page_table();
    KERNEL_ROOT.store(root, Ordering::Relaxed);
    KERNEL_ENTRIES.set(
        table(root)
            .iter()
            .enumerate()
            .skip(256)
            .filter(|(_, e)| **e & PRESENT != 0)
            .map(|(i, e)| (i, *e))
            .collect(),
    );
}

/// Switch this CPU back to the kernel's page tables.
pub fn activate_kernel() {
    // SAFETY: the boot page tables map the whole kernel and direct map.
    unsafe { arch::load_page_table(KERNEL_ROOT.load(Ordering::Relaxed)) };
    super::tlb::note_loaded(KERNEL_ROOT.load(Ordering::Relaxed));
}

/// The leaf entry for `va` in the address space whose root table is
/// `root` (0 where a table above it is missing), read without the space's
/// lock: entries are single aligned words, written whole, and a new table
/// is linked in only once it is clear. The caller keeps the space alive
/// (its tables are freed only when it drops).
fn leaf_entry(root: u64, va: u64) -> u64 {
    let mut t = root;
    for level in [39u32, 30, 21, 12] {
        let at = arch::phys_to_virt(t) as *const u64;
        // SAFETY: `t` is a page-table frame of a live address space (the
        // caller's promise), mapped in the direct map; the index is < 512.
        let entry = unsafe { at.add(((va >> level) & 511) as usize).read_volatile() };
        if level == 12 || entry & PRESENT == 0 {
            return entry;
        }
        t = entry & ADDR_MASK;
    }
    unreachable!()
}

/// The physical address `va` maps to in the live address space whose
/// root table is `root`, if mapped with at least the given access; read
/// without its lock (see [`leaf_entry`]): a page being mapped meanwhile
/// may read as unmapped, never the other way round.
pub fn translate_in(root: u64, va: u64, write: bool) -> Option<u64> {
    let e = leaf_entry(root, va);
    (e & PRESENT != 0 && (!write || e & WRITABLE != 0)).then_some((e & ADDR_MASK) | (va & 0xfff))
}

/// Load the live address space whose root table is `root` on this CPU.
pub fn activate_root(root: u64) {
    // SAFETY: every address space's upper half is the kernel's, so the
    // kernel stays mapped; its lower half holds only that space's user
    // pages; the caller keeps the space alive while loaded.
    unsafe { arch::load_page_table(root) };
    super::tlb::note_loaded(root);
}

/// Access rights of a user page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFlags {
    pub writable: bool,
    pub executable: bool,
}

/// Why a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    OutOfMemory,
    AlreadyMapped,
    NotUserAddress,
}

/// A user address space.
pub struct AddressSpace {
    root: u64,
    /// Page-table frames, the root first.
    tables: Vec<u64>,
    /// Pages mapped with `map_new` (the space's own).
    frames: Vec<u64>,
    /// Every table entry written: (table frame, index).
    written: Vec<(u64, u16)>,
}

fn table(pa: u64) -> &'static mut [u64; 512] {
    // SAFETY: `pa` is a page-table frame owned by an AddressSpace (or the
    // kernel root, read only here), mapped in the direct map.
    unsafe { &mut *(arch::phys_to_virt(pa) as *mut [u64; 512]) }
}

fn zeroed_table() -> Option<u64> {
    pages::alloc_table()
}

/// A user leaf entry for frame `pa`.
fn leaf(pa: u64, flags: PageFlags) -> u64 {
    let mut pte = pa | PRESENT | USER;
    if flags.writable {
        pte |= WRITABLE;
    }
    if !flags.executable {
        pte |= NO_EXECUTE;
    }
    pte
}

impl AddressSpace {
    /// A new address space with the kernel's upper half and nothing else.
    pub fn new() -> Option<Self> {
        let root = zeroed_table()?;
        let t = table(root);
        let mut written = Vec::new();
        for &(i, e) in KERNEL_ENTRIES.get().expect("paging::init ran") {
            t[i] = e;
            written.push((root, i as u16));
        }
        Some(Self {
            root,
            tables: alloc::vec![root],
            frames: Vec::new(),
            written,
        })
    }

    /// Map a fresh zeroed page at user address `va`; returns its physical
    /// address.
    pub fn map_new(&mut self, va: u64, flags: PageFlags) -> Result<u64, MapError> {
        let pte = self.pte(va)?;
        if *pte & PRESENT != 0 {
            return Err(MapError::AlreadyMapped);
        }
        let page = pages::alloc_zeroed().ok_or(MapError::OutOfMemory)?;
        self.frames.push(page);
        *pte = leaf(page, flags);
        Ok(page)
    }

    /// The page-table entry for user address `va`, creating the tables
    /// above it.
    fn pte(&mut self, va: u64) -> Result<&'static mut u64, MapError> {
        if !(k42_abi::syscall::USER_BASE..k42_abi::syscall::USER_TOP).contains(&va)
            || !va.is_multiple_of(PAGE_SIZE)
        {
            return Err(MapError::NotUserAddress);
        }
        let mut t = self.root;
        for level in [39u32, 30, 21] {
            let idx = ((va >> level) & 511) as usize;
            let entry = table(t)[idx];
            t = if entry & PRESENT != 0 {
                entry & ADDR_MASK
            } else {
                let next = zeroed_table().ok_or(MapError::OutOfMemory)?;
                self.tables.push(next);
                table(t)[idx] = next | PRESENT | WRITABLE | USER;
                self.written.push((t, idx as u16));
                next
            };
        }
        let idx = ((va >> 12) & 511) as usize;
        self.written.push((t, idx as u16));
        Ok(&mut table(t)[idx])
    }

    /// Map the existing frame `pa` at user address `va`. The frame is
    /// not this space's: it is neither zeroed nor freed with it (shared
    /// memory such as the trace buffers).
    pub fn map_shared(&mut self, va: u64, pa: u64, flags: PageFlags) -> Result<(), MapError> {
        let pte = self.pte(va)?;
        if *pte & PRESENT != 0 {
            return Err(MapError::AlreadyMapped);
        }
        *pte = leaf(pa, flags);
        Ok(())
    }

    /// Map frame `pa` at user address `va`, replacing whatever was there
    /// (a process's pages belong to its FCMs, not to the address space:
    /// the frame is neither zeroed nor freed with it).
    pub fn set_leaf(&mut self, va: u64, pa: u64, flags: PageFlags) -> Result<(), MapError> {
        *self.pte(va)? = leaf(pa, flags);
        Ok(())
    }

    /// Make the page at `va` read-only if it is mapped (copy-on-write
    /// after fork); the caller flushes the TLB.
    pub fn write_protect(&mut self, va: u64) {
        if let Some(pte) = self.lookup(va) {
            *pte &= !WRITABLE;
        }
    }

    /// Unmap the page at `va` if it is mapped (the frame is not the
    /// space's: its FCM keeps or frees it); the caller flushes the TLB.
    pub fn clear_leaf(&mut self, va: u64) {
        if let Some(pte) = self.lookup(va) {
            *pte = 0;
        }
    }

    /// The leaf entry for `va`, if the tables above it exist.
    fn lookup(&self, va: u64) -> Option<&'static mut u64> {
        let mut t = self.root;
        for level in [39u32, 30, 21] {
            let entry = table(t)[((va >> level) & 511) as usize];
            if entry & PRESENT == 0 {
                return None;
            }
            t = entry & ADDR_MASK;
        }
        Some(&mut table(t)[((va >> 12) & 511) as usize])
    }

    /// Physical address of the root table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Load this address space on this CPU.
    pub fn activate(&self) {
        activate_root(self.root);
    }

    /// Run user code at `entry` with stack `rsp` and `rdi`..`r10` = `args`
    /// in this address space on this CPU until it returns to the kernel
    /// (`arch::return_to_kernel`); its status. The kernel's space is
    /// loaded again afterwards.
    pub fn run_user(&self, entry: u64, rsp: u64, args: [u64; 4]) -> u64 {
        self.activate();
        // SAFETY: an AddressSpace maps only user pages in its lower half
        // (what its owner put there) and the kernel's upper half
        // supervisor-only (`new`), so user code reaches nothing of the
        // kernel; it is loaded for the whole run.
        let status = unsafe { arch::enter_user(entry, rsp, args) };
        activate_kernel();
        status
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        assert!(
            arch::current_page_table() != self.root,
            "dropping the active address space"
        );
        for &pa in &self.frames {
            pages::free(pa);
        }
        for &(t, i) in &self.written {
            table(t)[i as usize] = 0;
        }
        for &pa in &self.tables {
            pages::free_table(pa);
        }
    }
}
