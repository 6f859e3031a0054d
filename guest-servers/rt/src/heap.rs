//! The program's heap: a buddy allocator over the zero-filled range the
//! kernel maps at `USER_HEAP`, behind a [`crate::sync::SpinLock`], as the
//! global allocator. Every CPU running the program calls [`init`] at
//! start; the first one sets the heap up, the others wait for it.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};

use buddy_system_allocator::Heap;
use k42_abi::syscall::{ProgramInfo, USER_HEAP};

use crate::sync::SpinLock;

struct ProgramHeap(SpinLock<Heap<32>>);

#[global_allocator]
static HEAP: ProgramHeap = ProgramHeap(SpinLock::new(Heap::empty()));

const UNSET: u8 = 0;
const SETTING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNSET);

/// Set the heap up from `info` (once, whichever CPU comes first).
pub fn init(info: &ProgramInfo) {
    match STATE.compare_exchange(UNSET, SETTING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            if info.heap_size > 0 {
                // SAFETY: the kernel mapped `heap_size` bytes at USER_HEAP
                // for this program alone.
                unsafe {
                    HEAP.0
                        .lock()
                        .init(USER_HEAP as usize, info.heap_size as usize)
                };
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
        self.0
            .lock()
            .alloc(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `ptr` came from `alloc` with this layout.
            unsafe { self.0.lock().dealloc(p, layout) };
        }
    }
}
