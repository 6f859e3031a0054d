//! Copying memory between physical pages: by k42vmm (the `CopyMem`
//! hypercall) when there is enough of it, by the kernel otherwise.
//!
//! While the kernel runs emulated, each iteration of its copy loop costs
//! about a microsecond per 8 bytes, so a 4 KiB copy costs half a
//! millisecond; one hypercall copies up to 64 segments at memory speed
//! for one exit (~80 µs). Below [`HOST_MIN`] bytes the kernel copies
//! itself. Destinations must never be page tables (KVM-PVM's shadow
//! paging does not see the host's writes): callers copy into user data
//! pages and file pages only.

use k42_abi::hypercall::{Hypercall, MAX_COPY_SEGMENT, MAX_COPY_SEGMENTS};

use core::mem::MaybeUninit;

use crate::arch;

/// Fewest bytes worth a hypercall.
pub const HOST_MIN: u64 = 1024;

/// A copy: `len` bytes (within one page on each side) from physical
/// `src` to physical `dst`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Segment {
    pub dst: u64,
    pub src: u64,
    pub len: u64,
}

/// Copy the segments `gather` pushes (at most [`MAX_COPY_SEGMENTS`]
/// at a time, copied in batches; the list stays uninitialised on this
/// stack until used, and is never moved: clearing or moving 1.5 KiB
/// costs hundreds of emulated stores). On `gather`'s error nothing more
/// is copied: a gathering of at most [`MAX_COPY_SEGMENTS`] segments that
/// fails copies nothing at all.
pub fn copy_segments<E>(
    gather: impl FnOnce(&mut dyn FnMut(Segment)) -> Result<(), E>,
) -> Result<(), E> {
    let mut segs = [const { MaybeUninit::<Segment>::uninit() }; MAX_COPY_SEGMENTS as usize];
    let (mut n, mut bytes) = (0usize, 0u64);
    let r = gather(&mut |s: Segment| {
        debug_assert!(s.len <= MAX_COPY_SEGMENT);
        if n == segs.len() {
            // SAFETY: the first `n` entries were written below.
            copy(
                unsafe { core::slice::from_raw_parts(segs.as_ptr().cast(), n) },
                bytes,
            );
            (n, bytes) = (0, 0);
        }
        segs[n] = MaybeUninit::new(s);
        n += 1;
        bytes += s.len;
    });
    if r.is_ok() {
        // SAFETY: as above.
        copy(
            unsafe { core::slice::from_raw_parts(segs.as_ptr().cast(), n) },
            bytes,
        );
    }
    r
}

/// Copy one segment.
pub fn copy_one(s: Segment) {
    copy(&[s], s.len);
}

/// Copy `segs` (`bytes` in all): by the host when worth it.
fn copy(segs: &[Segment], bytes: u64) {
    let by_host = bytes >= HOST_MIN && {
        let list = core::hint::black_box(segs.as_ptr()) as u64;
        let pa = arch::virt_to_phys(list).expect("copy lists live in kernel memory");
        arch::hypercall(Hypercall::copy_mem(pa, segs.len() as u64)) == bytes as i64
    };
    if !by_host {
        for s in segs {
            // SAFETY: the caller vouches for every segment: both ranges
            // are RAM it may copy between (in the direct map). They may
            // overlap (a buffer in a mapping of the file itself): `copy`
            // allows that.
            unsafe {
                core::ptr::copy(
                    arch::phys_to_virt(s.src) as *const u8,
                    arch::phys_to_virt(s.dst) as *mut u8,
                    s.len as usize,
                )
            };
        }
    }
}
