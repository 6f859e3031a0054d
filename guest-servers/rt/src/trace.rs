//! Tracing from user programs: the same per-CPU buffers the kernel logs
//! into, mapped into the program by the kernel (`k42_abi::trace::
//! USER_VIEW_BASE`), written with the same lock-free `k42-trace` writer at
//! native speed, with no system call per event. Each instance of a
//! program logs into the buffers of the CPU it runs on.
//!
//! ```ignore
//! if let Some(t) = k42_rt::trace::Tracer::open(start.cpu) {
//!     t.log(k42_abi::trace::ev::test::tick(cpu, seq));
//! }
//! ```

use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::trace::{Class, Event, MASK_OFFSET, REGION_HEADER_SIZE, REGION_MAGIC, RegionHeader};
use k42_trace::{BufferSet, Geometry, Local};

/// This CPU's trace buffers, as this program sees them.
pub struct Tracer {
    mask: &'static AtomicU64,
    /// Per-CPU: the program and the kernel's interrupt handlers on its
    /// CPU are the only writers (programs do not migrate).
    buffers: BufferSet<Local>,
}

impl Tracer {
    /// CPU `cpu`'s buffers in the trace view the kernel mapped, or `None`
    /// when tracing is off. `cpu` must be the CPU this instance runs on
    /// (`Start::cpu`): the buffers are per-CPU.
    pub fn open(cpu: u32) -> Option<Self> {
        let va = crate::raw::TraceView::call([]);
        if va <= 0 {
            return None;
        }
        let base = va as u64;
        // SAFETY: the kernel maps the region header read-only at `base`
        // for the program's lifetime.
        let header = unsafe { core::ptr::read_volatile(base as *const RegionHeader) };
        if header.magic != REGION_MAGIC || header.abi_version != k42_abi::ABI_VERSION {
            return None;
        }
        let g = Geometry::new(header.subbuf_shift, header.nsubbufs)?;
        if cpu >= header.ncpus || header.area_stride != g.area_size() {
            return None;
        }
        let area = base + REGION_HEADER_SIZE + cpu as u64 * header.area_stride;
        // SAFETY: the mask word lies in the mapped header page; CPU `cpu`'s
        // area (control block and sub-buffers, shared with the kernel and
        // k42vmm's reader) is mapped writable for the program's lifetime,
        // and this instance stays on that CPU.
        Some(unsafe {
            Self {
                mask: &*((base + MASK_OFFSET) as *const AtomicU64),
                buffers: BufferSet::<Local>::new(area as *mut u8, g),
            }
        })
    }

    /// The class mask now.
    #[inline(always)]
    pub fn mask(&self) -> u64 {
        self.mask.load(Ordering::Relaxed)
    }

    /// Whether `class` is being logged.
    #[inline(always)]
    pub fn enabled(&self, class: Class) -> bool {
        self.mask() & class.bit() != 0
    }

    /// Log `e` if its class is enabled; false if its class is off or the
    /// buffers were full (then the event is counted as lost).
    #[inline(always)]
    pub fn log<const N: usize>(&self, e: Event<N>) -> bool {
        if self.mask() & e.class.bit() == 0 {
            return false;
        }
        self.buffers.log(crate::rdtsc, e.id, &e.words)
    }

    /// Events this CPU's writers dropped so far.
    pub fn lost(&self) -> u64 {
        self.buffers.lost()
    }

    /// Touch every page of the buffers with an atomic no-op write (a
    /// compare-and-swap of 0 with 0, harmless to concurrent writers), so
    /// that later logging takes no first-touch page faults.
    pub fn touch_buffers(&self) {
        let b = &self.buffers;
        let base = b.base();
        for off in (0..b.geometry().area_size()).step_by(4096) {
            // SAFETY: an aligned word inside the mapped area.
            let w = unsafe { AtomicU64::from_ptr(base.add(off as usize).cast()) };
            let _ = w.compare_exchange(0, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The buffers' geometry.
    pub fn geometry(&self) -> Geometry {
        self.buffers.geometry()
    }
}
