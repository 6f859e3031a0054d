//! The program's heap: a buddy allocator over the zero-filled range the
//! kernel maps at `USER_HEAP`, behind a [`crate::sync::SpinLock`], as the
//! global allocator. Every CPU running the program calls [`init`] at
//! start; the first one sets the heap up, the others wait for it.
//!
//! The allocator starts with the first [`FIRST_CHUNK`] bytes and takes
//! the next chunk (as large as all it has, or the request) only when an
//! allocation does not fit: a buddy allocator writes a free-list link
//! into every block it splits, so handing it the whole range at once
//! touches a page at every power of two (a dozen page faults, each a
//! kernel entry, in every process), where most programs need a few
//! pages.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};

use buddy_system_allocator::Heap;
use k42_abi::syscall::{ProgramInfo, USER_HEAP};

use crate::sync::SpinLock;

struct ProgramHeap(SpinLock<Growing>);

/// The buddy heap and how much of the range it has been given.
struct Growing {
    heap: Heap<32>,
    given: usize,
    size: usize,
}

/// Bytes the heap starts with.
const FIRST_CHUNK: usize = 64 * 1024;

impl Growing {
    /// Give the heap its next chunk, large enough for `layout`; false
    /// when the range is used up.
    fn grow(&mut self, layout: Layout) -> bool {
        let left = self.size - self.given;
        if left == 0 {
            return false;
        }
        let need = layout.size().max(layout.align()).next_power_of_two();
        let chunk = self.given.max(need).min(left);
        let start = USER_HEAP as usize + self.given;
        // SAFETY: [start, start + chunk) lies in the range the kernel
        // mapped for this program alone, and was never given before.
        unsafe { self.heap.add_to_heap(start, start + chunk) };
        self.given += chunk;
        true
    }
}

#[global_allocator]
static HEAP: ProgramHeap = ProgramHeap(SpinLock::new(Growing {
    heap: Heap::empty(),
    given: 0,
    size: 0,
}));

const UNSET: u8 = 0;
const SETTING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNSET);

/// Set the heap up from `info` (once, whichever CPU comes first).
pub fn init(info: &ProgramInfo) {
    match STATE.compare_exchange(UNSET, SETTING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            if info.heap_size > 0 {
                let mut h = HEAP.0.lock();
                let first = FIRST_CHUNK.min(info.heap_size as usize);
                // SAFETY: the kernel mapped `heap_size` bytes at USER_HEAP
                // for this program alone.
                unsafe { h.heap.init(USER_HEAP as usize, first) };
                h.given = first;
                h.size = info.heap_size as usize;
            }
            STATE.store(READY, Ordering::Release);
        }
        Err(_) => {
            let mut round = 0;
            while STATE.load(Ordering::Acquire) != READY {
                crate::sync::relax(round);
                round += 1;
            }
        }
    }
}

// SAFETY: the buddy heap hands out non-overlapping blocks of at least the
// requested size and alignment; the lock serialises all access.
unsafe impl GlobalAlloc for ProgramHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut h = self.0.lock();
        loop {
            if let Ok(p) = h.heap.alloc(layout) {
                return p.as_ptr();
            }
            if !h.grow(layout) {
                return core::ptr::null_mut();
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `ptr` came from `alloc` with this layout.
            unsafe { self.0.lock().heap.dealloc(p, layout) };
        }
    }
}
