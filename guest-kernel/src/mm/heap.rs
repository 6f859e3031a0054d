//! The kernel heap (`alloc::` works): a buddy allocator over one
//! contiguous range carved from RAM at boot, behind a [`SpinLock`].
//!
//! One lock for all CPUs is the simple, shared implementation; K42's
//! answer for contended allocation is per-CPU caches in front of it, which
//! the clustered-object page manager brings.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use buddy_system_allocator::Heap;

use crate::arch;
use crate::sync::SpinLock;

/// Largest heap the kernel sets up.
const MAX_HEAP: u64 = 64 << 20;
/// Smallest heap.
pub const MIN_HEAP: u64 = 2 << 20;

struct KernelHeap(SpinLock<Heap<32>>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(SpinLock::new(Heap::empty()));

/// Heap size for `usable` bytes of free RAM: an eighth, within bounds,
/// in whole pages.
pub fn size_for(usable: u64) -> u64 {
    (usable / 8).clamp(MIN_HEAP, MAX_HEAP) & !0xfff
}

/// Hand the physical range `[start, start + size)` to the heap.
pub fn init(start: u64, size: u64) {
    let va = arch::phys_to_virt(start) as usize;
    // SAFETY: the range is usable RAM that mm::init gives to the heap
    // alone, mapped in the direct map.
    unsafe { HEAP.0.lock().init(va, size as usize) };
}

/// Bytes handed out, and bytes managed.
pub fn stats() -> (usize, usize) {
    let h = HEAP.0.lock();
    (h.stats_alloc_actual(), h.stats_total_bytes())
}

// SAFETY: the buddy heap returns blocks of at least the requested size
// and alignment, never overlapping; the lock serialises all access.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .alloc(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `ptr` came from `alloc` with the same layout.
            unsafe { self.0.lock().dealloc(p, layout) };
        }
    }
}
