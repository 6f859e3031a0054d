//! The kernel's page manager: a clustered object (K42's PMRoot) in front
//! of the frame allocator. Each CPU's rep keeps a cache of free frames,
//! refilled from and spilled to the root in chunks; the root refills from
//! the frame allocator. The kernel's page-table and user-page allocations
//! go through it.
//!
//! Knowing a frame is zero saves clearing it (hundreds of emulated
//! instructions per page): frames from the frame allocator arrive zeroed
//! and tagged so (bit 0 of the page value); frames freed back carry no
//! tag and are cleared when next handed out zeroed.

use alloc::sync::Arc;
use alloc::vec::Vec;

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

/// Give back a frame from [`alloc_zeroed`].
pub fn free(pa: u64) {
    debug_assert!(pa.is_multiple_of(PAGE_SIZE));
    let cpu = cobj::cpu();
    pages().call(&cpu.request(), |pm| pm.free(pa));
}

/// Frames the page manager holds free (exact when no call runs).
pub fn free_pages() -> usize {
    let cpu = cobj::cpu();
    pages().call(&cpu.request(), |pm| pm.free_pages())
}
