//! The physical frame allocator: one bitmap per zone (a usable memory
//! region within one NUMA node), bit set = frame in use, updated with
//! atomic `fetch_or` / `fetch_and`, so allocation and freeing need no lock.
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
//!
//! Every zone belongs to a node. [`alloc`] and [`alloc_zeroed`] take a
//! frame from the calling CPU's node first and fall back to the other
//! nodes nearest first (by the topology's distances); [`alloc_on_node`]
//! takes one from a given node only.

use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::MAX_VCPUS;
use k42_abi::boot::MAX_MEM_REGIONS;
use k42_abi::layout::PAGE_SIZE;
use k42_abi::topology::MAX_NODES;
use k42_abi::trace::ev;

use crate::sync::InitOnce;
use crate::{arch, percpu, topology};

/// Most zones the allocator manages: one per usable region, each of which
/// k42vmm keeps within one node.
pub const MAX_ZONES: usize = MAX_MEM_REGIONS;

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
    /// The NUMA node the zone's memory belongs to.
    node: u32,
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

    /// Account for a frame of this zone leaving the free pool.
    fn taken(&self) {
        FREE.fetch_sub(1, Ordering::Relaxed);
        FREE_ON[self.node as usize].fetch_sub(1, Ordering::Relaxed);
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
/// Free frames per node.
static FREE_ON: [AtomicU64; MAX_NODES] = [const { AtomicU64::new(0) }; MAX_NODES];
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
                    node: 0,
                }
            }; MAX_ZONES],
            n: 0,
        }
    }

    /// Add the usable range `[start, start + len)` (page-aligned) of
    /// `node` as a zone, carving its bitmap from its first pages. Ranges
    /// too small to be worth a bitmap, or beyond MAX_ZONES, are left unused.
    pub fn add(&mut self, start: u64, len: u64, node: u32) {
        let frames = len / PAGE_SIZE;
        let words = frames.div_ceil(64);
        let bitmap_pages = (words * 8).div_ceil(PAGE_SIZE);
        if frames <= bitmap_pages + 1 || self.n == MAX_ZONES || node as usize >= MAX_NODES {
            return;
        }
        let zone = Zone {
            base_pfn: start / PAGE_SIZE,
            frames,
            bitmap: arch::phys_to_virt(start) as *const AtomicU64,
            fresh: AtomicU64::new(bitmap_pages),
            recycled: AtomicU64::new(0),
            node,
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
        FREE_ON[node as usize].fetch_add(frames - bitmap_pages, Ordering::Relaxed);
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

/// Free frames of `node` now.
pub fn free_frames_on(node: u32) -> u64 {
    FREE_ON
        .get(node as usize)
        .map_or(0, |f| f.load(Ordering::Relaxed))
}

/// Frames the allocator manages.
pub fn total_frames() -> u64 {
    zones().total
}

/// Allocate one 4 KiB frame, from the calling CPU's node if it has one
/// free, else from the nearest node that has; returns its physical
/// address. The frame's contents are whatever was there: a recycled frame
/// if the node has one free, else a fresh one.
pub fn alloc() -> Option<u64> {
    near_home(alloc_on_node)
}

/// Allocate one frame filled with zeros, from the calling CPU's node
/// first as [`alloc`] does. A fresh frame (never allocated since boot) is
/// zero already; only a recycled one is cleared, which matters when the
/// kernel runs emulated (clearing a page costs as much as hundreds of
/// instructions).
pub fn alloc_zeroed() -> Option<u64> {
    near_home(|node| {
        if let Some(pa) = alloc_fresh(node) {
            return Some(pa);
        }
        let pa = alloc_recycled(node, true)?;
        // SAFETY: the frame was just allocated to us and is mapped in the
        // direct map.
        unsafe { core::ptr::write_bytes(arch::phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE as usize) };
        Some(pa)
    })
}

/// Allocate one frame from `node` only: a recycled frame if there is one,
/// else a fresh one.
pub fn alloc_on_node(node: u32) -> Option<u64> {
    alloc_recycled(node, false)
        .or_else(|| alloc_fresh(node))
        .or_else(|| alloc_recycled(node, true))
}

/// Try `take` on the calling CPU's node, then on the other nodes nearest
/// first, skipping nodes without free frames.
fn near_home(take: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    let home = percpu::node_id();
    if free_frames_on(home) > 0
        && let Some(pa) = take(home)
    {
        return Some(pa);
    }
    topology::nodes_by_distance(home)
        .skip(1)
        .filter(|&node| free_frames_on(node) > 0)
        .find_map(take)
}

/// Take the next never-used frame of the first zone of `node` that has one.
fn alloc_fresh(node: u32) -> Option<u64> {
    for zone in zones().zones().iter().filter(|z| z.node == node) {
        loop {
            let i = zone.fresh.fetch_add(1, Ordering::Relaxed);
            if i >= zone.frames {
                zone.fresh.store(zone.frames, Ordering::Relaxed);
                break;
            }
            // A recycled-frame search may have taken it already.
            if zone.word(i / 64).fetch_or(1 << (i % 64), Ordering::AcqRel) & (1 << (i % 64)) == 0 {
                zone.taken();
                return Some((zone.base_pfn + i) * PAGE_SIZE);
            }
        }
    }
    None
}

/// Find a free frame below the fresh part of a zone of `node` (one that
/// has been used and freed), starting at this CPU's place in the bitmaps.
/// Zones whose recycled count is zero are skipped unless `exhaustive` (the
/// count is a hint: an allocation racing with the fresh mark can leave it
/// low).
fn alloc_recycled(node: u32, exhaustive: bool) -> Option<u64> {
    let z = zones();
    let cpu = percpu::cpu_id() as usize;
    for (zi, zone) in z.zones().iter().enumerate() {
        if zone.node != node || (!exhaustive && zone.recycled.load(Ordering::Relaxed) == 0) {
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
                    zone.taken();
                    crate::trace::log(ev::mem::free_frames(free_frames()));
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

/// Return a frame from [`alloc`], [`alloc_zeroed`] or [`alloc_on_node`].
/// Panics on an address the allocator does not own or a frame that is
/// already free (a double free).
pub fn free(pa: u64) {
    let z = zones();
    let pfn = pa / PAGE_SIZE;
    assert!(
        pa.is_multiple_of(PAGE_SIZE),
        "freeing unaligned frame address {pa:#x}"
    );
    for zone in z.zones() {
        if pfn >= zone.base_pfn && pfn < zone.base_pfn + zone.frames {
            let i = pfn - zone.base_pfn;
            let mask = 1u64 << (i % 64);
            let prev = zone.word(i / 64).fetch_and(!mask, Ordering::AcqRel);
            zone.recycled.fetch_add(1, Ordering::Relaxed);
            assert!(prev & mask != 0, "double free of frame {pa:#x}");
            let free = FREE.fetch_add(1, Ordering::Relaxed) + 1;
            FREE_ON[zone.node as usize].fetch_add(1, Ordering::Relaxed);
            crate::trace::log(ev::mem::free_frames(free));
            return;
        }
    }
    panic!("freeing frame {pa:#x}, which the allocator does not manage");
}

/// A zero-filled frame kept for the kernel's life, as a `T` (a table of
/// atomics, say, too large or too many for the heap): `None` when memory
/// is out.
pub fn alloc_forever<T: zerocopy::FromZeros + Sync>() -> Option<&'static T> {
    const { assert!(core::mem::size_of::<T>() <= PAGE_SIZE as usize) };
    const { assert!(core::mem::align_of::<T>() <= PAGE_SIZE as usize) };
    let pa = alloc_zeroed()?;
    // SAFETY: a zero-filled, page-aligned frame that is never freed,
    // mapped in the direct map, large and aligned enough for `T` (checked
    // above), for which all zeros is a valid value (`FromZeros`).
    Some(unsafe { &*(arch::phys_to_virt(pa) as *const T) })
}
