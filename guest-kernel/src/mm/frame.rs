//! The physical frame allocator: one bitmap per zone (a usable memory
//! region), bit set = frame in use, updated with atomic `fetch_or` /
//! `fetch_and`, so allocation and freeing need no lock.
//!
//! ```text
//! zone:  [ bitmap pages | frames ......................................]
//!          ^ bits for the bitmap's own pages start set
//! ```
//!
//! k42vmm hands over usable RAM zero-filled and untouched, so a bitmap is
//! all-free from the start: building it writes only the few words that
//! cover the bitmap itself and the zone's tail, never a word per frame.
//!
//! Each zone also has a *fresh* mark: frames past it have never been
//! allocated, so they are still zero. Allocation prefers recycled frames
//! (searched from each CPU's own place in the bitmaps, so CPUs allocating
//! at once do not fight over the same words) and moves the mark only when
//! none is free; [`alloc_zeroed`] takes fresh frames first and needs no
//! clearing — a large saving when the kernel runs emulated.

use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::MAX_VCPUS;
use k42_abi::layout::PAGE_SIZE;

use crate::arch;
use crate::percpu;
use crate::sync::InitOnce;

/// Most zones (usable regions) the allocator manages.
pub const MAX_ZONES: usize = 16;

struct Zone {
    /// First frame number of the zone.
    base_pfn: u64,
    /// Frames in the zone (bitmap pages included).
    frames: u64,
    /// The bitmap, `frames.div_ceil(64)` words in the direct map.
    bitmap: *const AtomicU64,
    /// Frames from this index on have never been allocated since boot,
    /// so they still hold the zeros k42vmm handed over.
    fresh: AtomicU64,
    /// Free frames below the fresh mark (used once, then freed): when
    /// zero, there is no recycled frame to search for.
    recycled: AtomicU64,
}

impl Zone {
    fn words(&self) -> u64 {
        self.frames.div_ceil(64)
    }

    fn word(&self, i: u64) -> &AtomicU64 {
        debug_assert!(i < self.words());
        // SAFETY: `bitmap` points at `words()` AtomicU64s in RAM reserved
        // for this zone's bitmap for the life of the kernel.
        unsafe { &*self.bitmap.add(i as usize) }
    }
}

/// The zones, fixed after boot.
pub struct ZoneBuilder {
    zones: [Zone; MAX_ZONES],
    n: usize,
}

struct Zones {
    zones: [Zone; MAX_ZONES],
    n: usize,
    total: u64,
}

// SAFETY: the bitmap pointers refer to RAM owned by the allocator for good;
// all access to it is atomic.
unsafe impl Sync for Zones {}
// SAFETY: as above.
unsafe impl Send for Zones {}

static ZONES: InitOnce<Zones> = InitOnce::new();
static FREE: AtomicU64 = AtomicU64::new(0);
/// Per-CPU place where the next search for a recycled frame starts: zone
/// number + 1 in the top 16 bits, word index below.
static HINT: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

impl ZoneBuilder {
    pub const fn new() -> Self {
        Self {
            zones: [const {
                Zone {
                    base_pfn: 0,
                    frames: 0,
                    bitmap: core::ptr::null(),
                    fresh: AtomicU64::new(0),
                    recycled: AtomicU64::new(0),
                }
            }; MAX_ZONES],
            n: 0,
        }
    }

    /// Add the usable range `[start, start + len)` (page-aligned) as a
    /// zone, carving its bitmap from its first pages. Ranges too small
    /// to be worth a bitmap, or beyond MAX_ZONES, are left unused.
    pub fn add(&mut self, start: u64, len: u64) {
        let frames = len / PAGE_SIZE;
        let words = frames.div_ceil(64);
        let bitmap_pages = (words * 8).div_ceil(PAGE_SIZE);
        if frames <= bitmap_pages + 1 || self.n == MAX_ZONES {
            return;
        }
        let zone = Zone {
            base_pfn: start / PAGE_SIZE,
            frames,
            bitmap: arch::phys_to_virt(start) as *const AtomicU64,
            fresh: AtomicU64::new(bitmap_pages),
            recycled: AtomicU64::new(0),
        };
        // The bitmap's own pages are in use.
        for pfn in 0..bitmap_pages {
            zone.word(pfn / 64)
                .fetch_or(1 << (pfn % 64), Ordering::Relaxed);
        }
        // Bits past the last frame are never free.
        if !frames.is_multiple_of(64) {
            zone.word(words - 1)
                .fetch_or(!0u64 << (frames % 64), Ordering::Relaxed);
        }
        FREE.fetch_add(frames - bitmap_pages, Ordering::Relaxed);
        self.zones[self.n] = zone;
        self.n += 1;
    }
}

/// Publish the zones (boot CPU, once).
pub fn init(b: ZoneBuilder) {
    let total = FREE.load(Ordering::Relaxed);
    ZONES.set(Zones {
        zones: b.zones,
        n: b.n,
        total,
    });
}

impl Zones {
    fn zones(&self) -> &[Zone] {
        &self.zones[..self.n]
    }
}

fn zones() -> &'static Zones {
    ZONES.get().expect("frame allocator initialised at boot")
}

/// Free frames now.
pub fn free_frames() -> u64 {
    FREE.load(Ordering::Relaxed)
}

/// Frames the allocator manages.
pub fn total_frames() -> u64 {
    zones().total
}

/// Allocate one 4 KiB frame; returns its physical address. The frame's
/// contents are whatever was there: a recycled frame if one is free, else
/// a fresh one.
pub fn alloc() -> Option<u64> {
    alloc_recycled(false)
        .or_else(alloc_fresh)
        .or_else(|| alloc_recycled(true))
}

/// Allocate one frame filled with zeros. A fresh frame (never allocated
/// since boot) is zero already; only a recycled one is cleared, which
/// matters when the kernel runs emulated (clearing a page costs as much
/// as hundreds of instructions).
pub fn alloc_zeroed() -> Option<u64> {
    if let Some(pa) = alloc_fresh() {
        return Some(pa);
    }
    let pa = alloc_recycled(true)?;
    // SAFETY: the frame was just allocated to us and is mapped in the
    // direct map.
    unsafe { core::ptr::write_bytes(arch::phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE as usize) };
    Some(pa)
}

/// Take the next never-used frame of the first zone that has one.
fn alloc_fresh() -> Option<u64> {
    for zone in zones().zones() {
        loop {
            let i = zone.fresh.fetch_add(1, Ordering::Relaxed);
            if i >= zone.frames {
                zone.fresh.store(zone.frames, Ordering::Relaxed);
                break;
            }
            // A recycled-frame search may have taken it already.
            if zone.word(i / 64).fetch_or(1 << (i % 64), Ordering::AcqRel) & (1 << (i % 64)) == 0 {
                FREE.fetch_sub(1, Ordering::Relaxed);
                return Some((zone.base_pfn + i) * PAGE_SIZE);
            }
        }
    }
    None
}

/// Find a free frame below the fresh part of a zone (one that has been
/// used and freed), starting at this CPU's place in the bitmaps. Zones
/// whose recycled count is zero are skipped unless `exhaustive` (the
/// count is a hint: an allocation racing with the fresh mark can leave it
/// low).
fn alloc_recycled(exhaustive: bool) -> Option<u64> {
    let z = zones();
    let cpu = percpu::cpu_id() as usize;
    for (zi, zone) in z.zones().iter().enumerate() {
        if !exhaustive && zone.recycled.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let words = zone
            .fresh
            .load(Ordering::Relaxed)
            .div_ceil(64)
            .min(zone.words());
        if words == 0 {
            continue;
        }
        let hint = HINT[cpu].load(Ordering::Relaxed);
        let start = if hint >> 48 == zi as u64 + 1 {
            hint & 0xffff_ffff_ffff
        } else {
            (cpu as u64 * words) / crate::smp::ncpus().max(1) as u64
        };
        for step in 0..words {
            let g = (start + step) % words;
            let word = zone.word(g);
            let mut w = word.load(Ordering::Relaxed);
            while w != !0 {
                let bit = (!w).trailing_zeros() as u64;
                // Never take a frame past the fresh mark: freed later, it
                // would come back as "fresh" without being zero.
                if g * 64 + bit >= zone.fresh.load(Ordering::Acquire) {
                    break;
                }
                let prev = word.fetch_or(1 << bit, Ordering::AcqRel);
                if prev & (1 << bit) == 0 {
                    FREE.fetch_sub(1, Ordering::Relaxed);
                    let _ = zone
                        .recycled
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1));
                    HINT[cpu].store(((zi as u64 + 1) << 48) | g, Ordering::Relaxed);
                    return Some((zone.base_pfn + g * 64 + bit) * PAGE_SIZE);
                }
                w = prev | (1 << bit);
            }
        }
    }
    None
}

/// Return a frame from [`alloc`]. Panics on an address the allocator
/// does not own or a frame that is already free (a double free).
pub fn free(pa: u64) {
    let z = zones();
    let pfn = pa / PAGE_SIZE;
    assert!(
        pa.is_multiple_of(PAGE_SIZE),
        "freeing unaligned frame address {pa:#x}"
    );
    for zone in &z.zones[..z.n] {
        if pfn >= zone.base_pfn && pfn < zone.base_pfn + zone.frames {
            let i = pfn - zone.base_pfn;
            let mask = 1u64 << (i % 64);
            let prev = zone.word(i / 64).fetch_and(!mask, Ordering::AcqRel);
            zone.recycled.fetch_add(1, Ordering::Relaxed);
            assert!(prev & mask != 0, "double free of frame {pa:#x}");
            FREE.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    panic!("freeing frame {pa:#x}, which the allocator does not manage");
}
