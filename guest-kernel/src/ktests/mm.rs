//! The frame allocator and the heap hammered from every CPU at once: no
//! frame or block is handed to two CPUs, and everything freed comes back.

use alloc::alloc::{alloc, dealloc};
use alloc::vec::Vec;
use core::alloc::Layout;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::ktest::TestResult;
use crate::mm::{frame, heap};
use crate::smp::{self, Barrier};
use crate::{arch, check, kernel_test};

/// Work per CPU: enough to overlap, small enough for 255 emulated CPUs.
fn per_cpu(total: u32) -> u32 {
    (total / smp::ncpus()).clamp(4, 64)
}

fn tag(cpu: u32, i: u32) -> u64 {
    0x6b34_3200_0000_0000 | ((cpu as u64) << 16) | i as u64
}

fn frames_from_every_cpu() -> TestResult {
    let n = smp::ncpus();
    let k = per_cpu(4096);
    let free_before = frame::free_frames();
    check!(
        free_before <= frame::total_frames(),
        "{free_before} frames free of {} in all",
        frame::total_frames()
    );
    let barrier = Barrier::new(n);
    let bad = AtomicU32::new(0);
    let first_bad = AtomicU64::new(0);
    let exhausted = AtomicU32::new(0);
    smp::run_on_all(|cpu| {
        let mut frames: Vec<u64> = Vec::with_capacity(k as usize);
        for i in 0..k {
            match frame::alloc() {
                Some(pa) => {
                    // SAFETY: the frame was just allocated to this CPU and
                    // is mapped in the direct map.
                    unsafe { (arch::phys_to_virt(pa) as *mut u64).write_volatile(tag(cpu, i)) };
                    frames.push(pa);
                }
                None => {
                    exhausted.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        barrier.wait();
        for (i, &pa) in frames.iter().enumerate() {
            // SAFETY: as above; this CPU still owns the frame.
            let v = unsafe { (arch::phys_to_virt(pa) as *const u64).read_volatile() };
            if v != tag(cpu, i as u32) {
                bad.fetch_add(1, Ordering::Relaxed);
                first_bad.store(pa, Ordering::Relaxed);
            }
        }
        barrier.wait();
        for pa in frames {
            frame::free(pa);
        }
    });
    check!(
        exhausted.load(Ordering::Relaxed) == 0,
        "the frame allocator ran dry"
    );
    let b = bad.load(Ordering::Relaxed);
    check!(
        b == 0,
        "{b} frames were handed to two CPUs (e.g. {:#x})",
        first_bad.load(Ordering::Relaxed)
    );
    let free_after = frame::free_frames();
    check!(
        free_after == free_before,
        "{free_before} frames free before, {free_after} after"
    );
    Ok(())
}
kernel_test!("mm.frames_all_cpus", frames_from_every_cpu);

fn heap_from_every_cpu() -> TestResult {
    let n = smp::ncpus();
    let k = per_cpu(1024);
    let (used_before, _) = heap::stats();
    let barrier = Barrier::new(n);
    let bad = AtomicU32::new(0);
    smp::run_on_all(|cpu| {
        let mut blocks: Vec<Block> = Vec::with_capacity(k as usize);
        for i in 0..k {
            // Sizes from 8 bytes to 4 KiB, plus one 64 KiB block per CPU.
            let words = if i == 0 { 8192 } else { 1 << (i % 10) };
            match Block::new(words, tag(cpu, i)) {
                Some(b) => blocks.push(b),
                None => {
                    bad.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        barrier.wait();
        for (i, b) in blocks.iter().enumerate() {
            if !b.ends_hold(tag(cpu, i as u32)) {
                bad.fetch_add(1, Ordering::Relaxed);
            }
        }
        barrier.wait();
        drop(blocks);
    });
    let b = bad.load(Ordering::Relaxed);
    check!(
        b == 0,
        "{b} heap blocks failed or were overwritten by another CPU"
    );
    let (used_after, _) = heap::stats();
    check!(
        used_after == used_before,
        "heap use was {used_before} bytes before, {used_after} after"
    );
    Ok(())
}
kernel_test!("mm.heap_all_cpus", heap_from_every_cpu);

/// A heap block whose first and last words carry a tag. Only the ends are
/// written: filling whole blocks would cost milliseconds per CPU when the
/// kernel runs emulated.
struct Block {
    ptr: *mut u64,
    words: usize,
}

impl Block {
    fn layout(words: usize) -> Layout {
        Layout::array::<u64>(words).expect("small layout")
    }

    fn new(words: usize, tag: u64) -> Option<Self> {
        // SAFETY: the layout has non-zero size.
        let ptr = unsafe { alloc(Self::layout(words)) } as *mut u64;
        if ptr.is_null() {
            return None;
        }
        // SAFETY: `ptr` points at `words` u64s owned by this block.
        unsafe {
            ptr.write_volatile(tag);
            ptr.add(words - 1).write_volatile(tag);
        }
        Some(Self { ptr, words })
    }

    fn ends_hold(&self, tag: u64) -> bool {
        // SAFETY: both ends were written in `new` and the block is live.
        unsafe {
            self.ptr.read_volatile() == tag && self.ptr.add(self.words - 1).read_volatile() == tag
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr as *mut u8, Self::layout(self.words)) };
    }
}

/// `alloc_zeroed` hands out zero-filled frames whether they are fresh or
/// recycled, and a recycled dirty frame never passes for a fresh one.
fn zeroed_frames_are_zero() -> TestResult {
    const N: usize = 48;
    let mut dirty = Vec::with_capacity(N);
    for _ in 0..N {
        let pa = frame::alloc().ok_or_else(|| alloc::string::String::from("out of frames"))?;
        // SAFETY: our frame, in the direct map.
        unsafe {
            let p = arch::phys_to_virt(pa) as *mut u64;
            p.write_volatile(0xdead_beef);
            p.add(511).write_volatile(0xdead_beef);
        }
        dirty.push(pa);
    }
    dirty.iter().for_each(|&pa| frame::free(pa));
    let mut zeroed = Vec::with_capacity(2 * N);
    for _ in 0..2 * N {
        let pa =
            frame::alloc_zeroed().ok_or_else(|| alloc::string::String::from("out of frames"))?;
        // SAFETY: as above.
        let (first, last) = unsafe {
            let p = arch::phys_to_virt(pa) as *const u64;
            (p.read_volatile(), p.add(511).read_volatile())
        };
        zeroed.push(pa);
        check!(
            first == 0 && last == 0,
            "frame {pa:#x} from alloc_zeroed holds {first:#x} / {last:#x}"
        );
    }
    zeroed.into_iter().for_each(frame::free);
    Ok(())
}
kernel_test!("mm.zeroed_frames", zeroed_frames_are_zero);
