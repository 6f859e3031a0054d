//! The kernel's page manager: a clustered object (K42's PMRoot) in front
//! of the frame allocator. Each CPU's rep keeps a cache of free frames,
//! refilled from and spilled to the root in chunks; the root refills from
//! the frame allocator. The kernel's page-table and user-page allocations
//! go through it.
//!
//! Knowing a frame is zero saves clearing it, which costs about half a
//! millisecond per page when the kernel runs emulated (every `rep stosq`
//! iteration is emulated): frames from the frame allocator arrive zeroed
//! and tagged so (bit 0 of the page value). Freed frames wait in a
//! per-CPU batch; a full batch is cleared by k42vmm in one `ZeroPages`
//! hypercall and goes back tagged zero. Only a frame whose clearing
//! failed is cleared by the kernel when next handed out.
//!
//! Page-table frames never go through that batch: KVM-PVM shadows guest
//! page tables and tracks the guest's writes to them, but not k42vmm's,
//! so a frame the host cleared behind KVM's back must never have been a
//! page table (a stale shadow of its old entries would come back when it
//! is one again). Page tables therefore come from their own pool
//! ([`alloc_table`]): an address space clears the entries it wrote before
//! it returns a table ([`free_table`]), and such a frame is a page table
//! for good.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use k42_abi::{Hypercall, MAX_VCPUS};

use k42_abi::layout::PAGE_SIZE;
use k42_cobj::ObjRef;
use k42_cobj::objects::pagemgr::{self, PageManager, PageSource};

use crate::mm::frame;
use crate::sync::InitOnce;
use crate::{arch, cobj};

/// Tag on a page value: the frame is known to be zero.
const ZERO: u64 = 1;
/// Frames a CPU cache moves to or from the root at once.
const CHUNK: usize = 8;

/// The frame allocator as the page manager's source of new frames.
struct Frames;

impl PageSource for Frames {
    fn take(&self, n: usize, into: &mut Vec<u64>) {
        into.extend(
            (0..n)
                .map_while(|_| frame::alloc_zeroed())
                .map(|pa| pa | ZERO),
        );
    }
}

static PAGES: InitOnce<ObjRef<dyn PageManager>> = InitOnce::new();

/// The page manager, made on first use (see `cobj::system`).
fn pages() -> ObjRef<dyn PageManager> {
    *PAGES.get_or_init(|| {
        let ncpus = crate::smp::ncpus() as usize;
        let root = pagemgr::distributed(
            ncpus,
            1,
            CHUNK,
            Vec::new(),
            Some(Arc::new(Frames)),
            cobj::relax,
        );
        cobj::system()
            .create(root)
            .expect("room for the page manager")
    })
}

/// A zero-filled frame; its physical address.
pub fn alloc_zeroed() -> Option<u64> {
    let cpu = cobj::cpu();
    let page = pages().call(&cpu.request(), |pm| pm.alloc())?;
    let pa = page & !ZERO;
    if page & ZERO == 0 {
        // SAFETY: the frame is ours now and mapped in the direct map.
        unsafe { core::ptr::write_bytes(arch::phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE as usize) };
    }
    Some(pa)
}

/// Freed frames waiting to be cleared, per CPU.
struct Dirty {
    n: AtomicUsize,
    frames: UnsafeCell<[u64; BATCH]>,
}

// SAFETY: `frames` is touched only by its own CPU with interrupts off;
// `n` is read by others only as a count.
unsafe impl Sync for Dirty {}

/// Frames cleared per `ZeroPages` hypercall.
const BATCH: usize = 32;
const _: () = assert!(BATCH as u64 <= k42_abi::hypercall::MAX_ZERO_PAGES);

static DIRTY: [Dirty; MAX_VCPUS] = [const {
    Dirty {
        n: AtomicUsize::new(0),
        frames: UnsafeCell::new([0; BATCH]),
    }
}; MAX_VCPUS];

/// Give back a frame from [`alloc_zeroed`].
pub fn free(pa: u64) {
    debug_assert!(pa.is_multiple_of(PAGE_SIZE));
    let _irq = arch::irq_save();
    let d = &DIRTY[crate::percpu::cpu_id() as usize];
    // SAFETY: this CPU's batch, interrupts off (see Dirty).
    let frames = unsafe { &mut *d.frames.get() };
    let n = d.n.load(Ordering::Relaxed);
    frames[n] = pa;
    if n + 1 < BATCH {
        d.n.store(n + 1, Ordering::Relaxed);
        return;
    }
    let list_pa = arch::virt_to_phys(frames.as_ptr() as u64).expect("a kernel static");
    let cleared = arch::hypercall(Hypercall::zero_pages(list_pa, BATCH as u64));
    let tag = if cleared == BATCH as i64 { ZERO } else { 0 };
    let cpu = cobj::cpu();
    pages().call(&cpu.request(), |pm| {
        for &f in frames.iter() {
            pm.free(f | tag);
        }
    });
    d.n.store(0, Ordering::Relaxed);
}

/// Cleared page-table frames, ready for reuse as page tables only.
static TABLES: crate::sync::SpinLock<Vec<u64>> = crate::sync::SpinLock::new(Vec::new());

/// A zero-filled frame for a page table.
pub fn alloc_table() -> Option<u64> {
    if let Some(pa) = TABLES.lock().pop() {
        return Some(pa);
    }
    // A frame that was never a page table is zero when tagged so, or is
    // cleared by the kernel's own writes, which KVM sees.
    alloc_zeroed()
}

/// Give back a page-table frame whose entries the caller has cleared.
pub fn free_table(pa: u64) {
    TABLES.lock().push(pa);
}

/// Frames free: held by the page manager (exact when no call runs) or
/// waiting in a CPU's batch to be cleared.
pub fn free_pages() -> usize {
    let cpu = cobj::cpu();
    let held = pages().call(&cpu.request(), |pm| pm.free_pages());
    held + TABLES.lock().len()
        + DIRTY
            .iter()
            .map(|d| d.n.load(Ordering::Relaxed))
            .sum::<usize>()
}

/// Write `bytes` at byte `offset` of frame `pa`, which the caller holds
/// (allocated from this page manager and not yet freed).
///
/// # Panics
/// If the bytes do not fit in the page.
pub fn write_frame(pa: u64, offset: u64, bytes: &[u8]) {
    assert!(
        pa.is_multiple_of(PAGE_SIZE) && offset + bytes.len() as u64 <= PAGE_SIZE,
        "write of {} bytes at {offset} of frame {pa:#x}",
        bytes.len()
    );
    // SAFETY: a page-aligned frame of RAM the caller holds, reached
    // through the direct map; the range lies in it (checked above).
    unsafe {
        core::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (crate::arch::phys_to_virt(pa) + offset) as *mut u8,
            bytes.len(),
        )
    };
}

/// Copy frame `from` whole into frame `to` (both held by the caller;
/// `from` may be shared, read-only, with others).
pub fn copy_frame(from: u64, to: u64) {
    assert!(from.is_multiple_of(PAGE_SIZE) && to.is_multiple_of(PAGE_SIZE) && from != to);
    // SAFETY: two distinct page-aligned RAM frames in the direct map, the
    // destination the caller's alone.
    unsafe {
        core::ptr::copy_nonoverlapping(
            crate::arch::phys_to_virt(from) as *const u8,
            crate::arch::phys_to_virt(to) as *mut u8,
            PAGE_SIZE as usize,
        )
    };
}

/// Read `buf.len()` bytes at byte `offset` of frame `pa`, which the
/// caller holds.
///
/// # Panics
/// If the range does not fit in the page.
pub fn read_frame(pa: u64, offset: u64, buf: &mut [u8]) {
    assert!(
        pa.is_multiple_of(PAGE_SIZE) && offset + buf.len() as u64 <= PAGE_SIZE,
        "read of {} bytes at {offset} of frame {pa:#x}",
        buf.len()
    );
    // SAFETY: a page-aligned frame of RAM the caller holds, reached
    // through the direct map; the range lies in it (checked above).
    unsafe {
        core::ptr::copy_nonoverlapping(
            (crate::arch::phys_to_virt(pa) + offset) as *const u8,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
}

/// Words of a page frame.
pub const FRAME_WORDS: usize = (PAGE_SIZE / 8) as usize;

/// Run `f` on frame `pa` as atomic words: a frame the caller holds for
/// the duration and that others (user mode, through a mapping) change
/// at the same time, so every access is atomic.
pub fn with_frame_words<R>(pa: u64, f: impl FnOnce(&[AtomicU64; FRAME_WORDS]) -> R) -> R {
    assert!(
        pa.is_multiple_of(PAGE_SIZE),
        "frame {pa:#x} not page-aligned"
    );
    // SAFETY: a page-aligned frame of RAM the caller holds while `f`
    // runs, in the direct map; atomics are valid for any bytes and allow
    // changes by others.
    let words = unsafe { &*(crate::arch::phys_to_virt(pa) as *const [AtomicU64; FRAME_WORDS]) };
    f(words)
}
