//! Kernel tracing: the trace region (one buffer set per CPU, see
//! `k42_abi::trace`), its registration with k42vmm, and [`log`], which
//! every instrumented site calls.
//!
//! ```text
//! boot:  mm carves the region ─► init() writes its header and registers it
//!        (TraceRegister hypercall); k42vmm writes the class mask into it
//!        and its collector reads the buffers straight from guest RAM
//! log:   mask word & class bit?  ── no ──► return (one test)
//!            │ yes
//!            ▼
//!        this CPU's BufferSet::log (lock-free, per-CPU (`Local`) updates;
//!        drops and counts when full)
//! ```
//!
//! Until registration the mask pointer points at a zero word, so early
//! events cost one test and go nowhere. The same buffers are mapped into
//! user programs (see [`user_view`]), which log through `k42-trace` too.
//!
//! Command line: `trace.subbuf=SIZE` (default 16K, a power of two from 4K
//! to 16M) and `trace.subbufs=N` (default 4, a power of two from 2 to 64)
//! size each CPU's buffers.

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use k42_abi::Hypercall;
use k42_abi::layout::PAGE_SIZE;
use k42_abi::trace::{Class, Event, MASK_OFFSET, REGION_HEADER_SIZE, REGION_MAGIC, RegionHeader};
use k42_trace::{BufferSet, Geometry, Local};

use crate::{arch, percpu};

/// Default sub-buffer size (log2).
pub const DEFAULT_SUBBUF_SHIFT: u32 = 14;
/// Default sub-buffers per CPU.
pub const DEFAULT_SUBBUFS: u32 = 4;

/// The mask writers test before tracing is registered: nothing enabled.
static NO_CLASSES: AtomicU64 = AtomicU64::new(0);
/// The class mask writers test: [`NO_CLASSES`], then the region's word.
static MASK: AtomicPtr<AtomicU64> = AtomicPtr::new(&NO_CLASSES as *const AtomicU64 as *mut _);
/// The buffers' geometry: `shift | nsubbufs << 32`.
static GEOMETRY: AtomicU64 = AtomicU64::new(0);
/// Guest-physical address of the region (0: none).
static REGION: AtomicU64 = AtomicU64::new(0);

/// The region's size for `ncpus` CPUs.
pub fn region_size(g: Geometry, ncpus: u32) -> u64 {
    REGION_HEADER_SIZE + ncpus as u64 * g.area_size()
}

fn geometry() -> Geometry {
    let g = GEOMETRY.load(Ordering::Relaxed);
    Geometry {
        subbuf_shift: g as u32,
        nsubbufs: (g >> 32) as u32,
    }
}

/// The class mask now.
#[inline(always)]
pub fn mask() -> u64 {
    // SAFETY: MASK always points at a live word: a static, or the mask
    // word of the region, which is never freed.
    unsafe { &*MASK.load(Ordering::Relaxed) }.load(Ordering::Relaxed)
}

/// Whether `class` is being logged.
#[inline(always)]
pub fn enabled(class: Class) -> bool {
    mask() & class.bit() != 0
}

/// Set the class mask (k42vmm may set it too; the last write wins).
/// Does nothing before tracing is registered: there are no buffers.
pub fn set_mask(mask: u64) {
    let p = MASK.load(Ordering::Acquire);
    if !core::ptr::eq(p, &NO_CLASSES) {
        // SAFETY: `p` is the region's mask word, never freed.
        unsafe { &*p }.store(mask, Ordering::Relaxed);
    }
}

/// Whether tracing is registered with k42vmm.
pub fn registered() -> bool {
    REGION.load(Ordering::Relaxed) != 0
}

/// This CPU's buffers, once tracing is registered.
pub fn buffers(cpu: u32) -> Option<BufferSet<Local>> {
    let area = percpu::of(cpu).trace_area.load(Ordering::Relaxed);
    // SAFETY: `area` was set by `init` to this CPU's area in the region,
    // which is never freed and was zero when registered.
    (!area.is_null()).then(|| unsafe { BufferSet::new(area, geometry()) })
}

/// Log `e` on this CPU if its class is enabled. Never blocks; returns
/// false if the event was dropped (buffers full) or its class is off.
#[inline(always)]
pub fn log<const N: usize>(e: Event<N>) -> bool {
    if mask() & e.class.bit() == 0 {
        return false;
    }
    log_enabled(e)
}

#[inline(always)]
fn log_enabled<const N: usize>(e: Event<N>) -> bool {
    let area = percpu::current().trace_area.load(Ordering::Relaxed);
    // SAFETY: a class is enabled only after `init` set every CPU's area
    // (see `init`), which stays valid for good.
    let b = unsafe { BufferSet::<Local>::new(area, geometry()) };
    b.log(arch::read_tsc, e.id, &e.words)
}

/// k42vmm refused the registration with this code.
#[derive(Clone, Copy, Debug)]
pub struct Refused(pub i64);

/// Set up the region `mm::init` reserved at guest-physical `pa` for
/// `ncpus` CPUs with geometry `g` and register it with k42vmm (boot CPU,
/// before other CPUs start). The region's RAM was never touched, so it is
/// zero, as the protocol needs.
pub fn init(pa: u64, g: Geometry, ncpus: u32) -> Result<(), Refused> {
    let len = region_size(g, ncpus);
    let base = arch::phys_to_virt(pa) as *mut u8;
    let header = RegionHeader {
        magic: REGION_MAGIC,
        abi_version: k42_abi::ABI_VERSION,
        ncpus,
        subbuf_shift: g.subbuf_shift,
        nsubbufs: g.nsubbufs,
        area_stride: g.area_size(),
        register_tsc: arch::read_tsc(),
        reserved: [0; 3],
        mask: 0,
        reserved2: [0; 7],
    };
    // SAFETY: the region is RAM reserved for tracing by mm::init, mapped
    // in the direct map; nothing else uses it yet.
    unsafe { base.cast::<RegionHeader>().write(header) };
    GEOMETRY.store(
        g.subbuf_shift as u64 | (g.nsubbufs as u64) << 32,
        Ordering::Relaxed,
    );
    for cpu in 0..ncpus {
        let area = pa + REGION_HEADER_SIZE + cpu as u64 * g.area_size();
        percpu::of(cpu)
            .trace_area
            .store(arch::phys_to_virt(area) as *mut u8, Ordering::Relaxed);
    }
    let r = arch::hypercall(Hypercall::trace_register(pa, len));
    if r != 0 {
        for cpu in 0..ncpus {
            percpu::of(cpu)
                .trace_area
                .store(core::ptr::null_mut(), Ordering::Relaxed);
        }
        return Err(Refused(r));
    }
    REGION.store(pa, Ordering::Relaxed);
    // From here on k42vmm's mask decides what is logged.
    MASK.store(
        arch::phys_to_virt(pa + MASK_OFFSET) as *mut AtomicU64,
        Ordering::Release,
    );
    Ok(())
}

/// Guest-physical address of the region's header page (geometry and
/// the class mask), once tracing is registered: Linux processes map it
/// read-only (`proc::memory`), to test the `linux` class without a call.
pub fn header_frame() -> Option<u64> {
    let pa = REGION.load(Ordering::Relaxed);
    (pa != 0).then_some(pa)
}

/// The pages of the trace region a user program sees from
/// `k42_abi::trace::USER_VIEW_BASE`, laid out as in guest-physical
/// memory, as (offset, physical address, writable): the header read-only
/// (it holds the geometry and the mask), then the areas read-write: every
/// CPU's, or with `only_cpu` just that CPU's (a program instance on CPU
/// `c` logs into area `c`). `None` when tracing is not registered. The
/// address spaces that map them are built in `user` (kernel-run
/// programs).
pub fn user_view(only_cpu: Option<u32>) -> Option<impl Iterator<Item = (u64, u64, bool)>> {
    let pa = REGION.load(Ordering::Relaxed);
    if pa == 0 {
        return None;
    }
    let area = geometry().area_size();
    // The header, then every CPU's area or just the one the program runs
    // on (at its usual place): mapping all of them for each one-CPU
    // program made 255 programs map a million pages.
    let areas = match only_cpu {
        Some(c) => REGION_HEADER_SIZE + c as u64 * area..REGION_HEADER_SIZE + (c as u64 + 1) * area,
        None => REGION_HEADER_SIZE..region_size(geometry(), crate::smp::ncpus()),
    };
    let header = 0..REGION_HEADER_SIZE;
    Some(
        header
            .chain(areas)
            .step_by(PAGE_SIZE as usize)
            .map(move |off| (off, pa + off, off >= REGION_HEADER_SIZE)),
    )
}
