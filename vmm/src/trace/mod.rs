//! Tracing on the host: the guest's trace region, the collector that
//! drains it while the guest runs, the CTF trace it writes, and the tools
//! that read traces back (stats, Perfetto export) or watch a running VM.
//!
//! ```text
//!  guest vCPUs ──log──► per-vCPU buffers in guest RAM (k42-trace writer)
//!                              │ read straight from RAM, no VM exit
//!  TraceRegister hypercall ──► TraceHub ──► collector thread
//!                                            ├─ ctf::StreamWriter per vCPU ─► DIR/vcpuN
//!                                            └─ live::Server ─► trace attach / top / mask
//!  k42vmm trace stats DIR ──► ctf::read_trace ──► stats
//!  k42vmm trace export    ──► ctf::read_trace ──► perfetto (Chrome JSON)
//!  k42vmm trace strace    ──► ctf::read_trace ──► strace (Linux calls)
//! ```
//!
//! | module       | what it does                                            |
//! |--------------|---------------------------------------------------------|
//! | [`collector`]| the collector thread: take, peek, drain, fan out        |
//! | [`ctf`]      | CTF 1.8 metadata and packets; reading them back         |
//! | [`decode`]   | events named and typed by the shared-abi catalogue      |
//! | [`live`]     | the `--trace-socket` server and its clients             |
//! | [`stats`]    | `trace stats`                                           |
//! | [`strace`]   | `trace strace`: the `linux` class as strace prints it   |
//! | [`perfetto`] | `trace export --format perfetto`                        |

pub mod collector;
pub mod ctf;
pub mod decode;
pub mod live;
pub mod perfetto;
pub mod stats;
pub mod strace;

use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use k42_abi::HypercallResult;
use k42_abi::trace::{MASK_OFFSET, REGION_HEADER_SIZE, RegionHeader};
use k42_trace::Geometry;
use k42_trace_reader::TraceMem;
use zerocopy::FromBytes;

use crate::memory::GuestRam;

/// Default interval between two looks at the guest's buffers.
pub const DEFAULT_READ_INTERVAL: Duration = Duration::from_millis(10);

/// What `k42vmm run` was asked to do with the guest's trace.
#[derive(Clone, Debug, Default)]
pub struct TraceOptions {
    /// Write a CTF trace into this directory (`--trace`).
    pub dir: Option<PathBuf>,
    /// Serve live clients on this Unix socket (`--trace-socket`).
    pub socket: Option<PathBuf>,
    /// Classes to enable at registration (`--trace-mask`); `None`: all.
    pub mask: Option<u64>,
    /// How often the collector looks at the buffers (`--trace-read-interval`).
    pub read_interval: Option<Duration>,
}

impl TraceOptions {
    /// Whether anything collects the trace.
    pub fn enabled(&self) -> bool {
        self.dir.is_some() || self.socket.is_some()
    }

    /// The mask the guest gets at registration: nothing when no one
    /// collects (a disabled class costs one test), else `--trace-mask` or
    /// every class but those off by default (`syscall`).
    pub fn initial_mask(&self) -> u64 {
        if self.enabled() {
            self.mask.unwrap_or_else(k42_abi::trace::default_mask)
        } else {
            0
        }
    }

    /// The collector's read interval.
    pub fn interval(&self) -> Duration {
        self.read_interval.unwrap_or(DEFAULT_READ_INTERVAL)
    }
}

/// Errors of the trace tools and of setting up collection.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("--trace {0}: {1}")]
    Dir(PathBuf, String),
    #[error("--trace-socket {0}: {1}")]
    Socket(PathBuf, String),
    #[error("trace {0}: {1}")]
    Read(PathBuf, String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("-o {0}: {1}")]
    Output(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Attach(PathBuf, String),
}

impl TraceError {
    /// Exit status: 2 when the user's input is at fault.
    pub fn exit_code(&self) -> u8 {
        match self {
            TraceError::Write(..) => 1,
            _ => 2,
        }
    }
}

/// A registered trace region, as validated.
#[derive(Clone, Debug)]
pub struct Registration {
    /// Guest-physical address of the region.
    pub gpa: u64,
    pub header: RegionHeader,
    /// Host time of the registration, paired with `header.register_tsc`.
    pub at: Instant,
}

impl Registration {
    /// The buffers' geometry.
    pub fn geometry(&self) -> Geometry {
        Geometry::new(self.header.subbuf_shift, self.header.nsubbufs)
            .expect("validated at registration")
    }

    /// Guest-physical address of vCPU `cpu`'s area.
    pub fn area(&self, cpu: u32) -> u64 {
        self.gpa + REGION_HEADER_SIZE + cpu as u64 * self.header.area_stride
    }
}

/// Where the registration hypercall meets the collector.
#[derive(Default)]
pub struct TraceHub {
    pub options: TraceOptions,
    state: Mutex<HubState>,
    cv: Condvar,
}

#[derive(Default)]
struct HubState {
    registration: Option<Registration>,
    finishing: bool,
    end_reason: String,
}

impl TraceHub {
    pub fn new(options: TraceOptions) -> Self {
        Self {
            options,
            ..Default::default()
        }
    }

    /// The `TraceRegister` hypercall from vCPU `vcpu` of `vcpus`: region
    /// at `gpa`, `len` bytes. Validates the region, writes the initial
    /// mask into it, and wakes the collector.
    pub fn register(&self, ram: &GuestRam, vcpus: u32, gpa: u64, len: u64) -> HypercallResult {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.registration.is_some() {
            return HypercallResult::NotPermitted;
        }
        if !gpa.is_multiple_of(k42_abi::layout::PAGE_SIZE) || !ram.contains(gpa, len) {
            return HypercallResult::BadAddress;
        }
        let mut raw = [0u8; std::mem::size_of::<RegionHeader>()];
        if ram.read(gpa, &mut raw).is_err() {
            return HypercallResult::BadAddress;
        }
        let header = RegionHeader::read_from_bytes(&raw).expect("sized buffer");
        if header.validate(len).is_err() || header.ncpus != vcpus {
            return HypercallResult::InvalidArgument;
        }
        if ram
            .store_u64(gpa + MASK_OFFSET, self.options.initial_mask())
            .is_err()
        {
            return HypercallResult::BadAddress;
        }
        st.registration = Some(Registration {
            gpa,
            header,
            at: Instant::now(),
        });
        self.cv.notify_all();
        HypercallResult::Ok
    }

    /// The registration, if the guest made one.
    pub fn registration(&self) -> Option<Registration> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .registration
            .clone()
    }

    /// Every vCPU has stopped (`reason` says how the run ended): the
    /// collector drains and ends.
    pub fn finish(&self, reason: String) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.finishing = true;
        st.end_reason = reason;
        self.cv.notify_all();
    }

    /// How the run ended, once `finish` was called.
    fn end_reason(&self) -> String {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .end_reason
            .clone()
    }

    /// Wait up to `timeout` for a registration or the end; returns
    /// (registration, finishing).
    fn wait(&self, timeout: Duration) -> (Option<Registration>, bool) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (st, _) = self
            .cv
            .wait_timeout_while(st, timeout, |s| !s.finishing)
            .unwrap_or_else(|p| p.into_inner());
        (st.registration.clone(), st.finishing)
    }
}

/// One vCPU's area in guest RAM, for the reader. The area was checked to
/// lie in RAM at registration, so accesses inside it cannot fail.
pub struct GuestArea<'a> {
    pub ram: &'a GuestRam,
    pub base: u64,
}

impl TraceMem for GuestArea<'_> {
    fn load(&self, off: u64) -> u64 {
        self.ram
            .load_u64(self.base + off)
            .expect("trace area validated at registration")
    }

    fn store(&self, off: u64, value: u64) {
        self.ram
            .store_u64(self.base + off, value)
            .expect("trace area validated at registration")
    }

    fn read(&self, off: u64, buf: &mut [u8]) {
        self.ram
            .read(self.base + off, buf)
            .expect("trace area validated at registration")
    }

    fn zero(&self, off: u64, len: u64) {
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(ZEROS.len() as u64);
            self.ram
                .write(self.base + off + at, &ZEROS[..n as usize])
                .expect("trace area validated at registration");
            at += n;
        }
    }
}

/// Nanoseconds of `ticks` TSC ticks at `tsc_khz`.
pub fn ticks_to_ns(ticks: u64, tsc_khz: u64) -> u64 {
    (ticks as u128 * 1_000_000 / tsc_khz.max(1) as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use k42_abi::trace::{CPU_CONTROL_SIZE, REGION_MAGIC};
    use zerocopy::IntoBytes;

    fn header(ncpus: u32) -> RegionHeader {
        let mut h = RegionHeader::new_zeroed();
        h.magic = REGION_MAGIC;
        h.abi_version = k42_abi::ABI_VERSION;
        h.ncpus = ncpus;
        h.subbuf_shift = 12;
        h.nsubbufs = 2;
        h.area_stride = CPU_CONTROL_SIZE + 2 * 4096;
        h
    }
    use zerocopy::FromZeros;

    #[test]
    fn registration_is_validated_and_sets_the_mask() {
        let ram = GuestRam::new(4 << 20).unwrap();
        let gpa = 0x10_0000;
        let h = header(2);
        ram.write(gpa, h.as_bytes()).unwrap();
        let len = h.region_len();
        let hub = TraceHub::new(TraceOptions {
            dir: Some("/tmp/x".into()),
            mask: Some(0b101),
            ..Default::default()
        });
        assert_eq!(
            hub.register(&ram, 2, gpa + 8, len),
            HypercallResult::BadAddress
        );
        assert_eq!(
            hub.register(&ram, 3, gpa, len),
            HypercallResult::InvalidArgument,
            "vCPU count differs"
        );
        assert_eq!(
            hub.register(&ram, 2, gpa, len + 4096),
            HypercallResult::InvalidArgument
        );
        assert_eq!(
            hub.register(&ram, 2, (4 << 20) - 4096, len),
            HypercallResult::BadAddress
        );
        assert_eq!(hub.register(&ram, 2, gpa, len), HypercallResult::Ok);
        assert_eq!(ram.load_u64(gpa + MASK_OFFSET), Ok(0b101));
        assert_eq!(
            hub.register(&ram, 2, gpa, len),
            HypercallResult::NotPermitted,
            "only once"
        );
        let r = hub.registration().unwrap();
        assert_eq!(r.area(1), gpa + 4096 + h.area_stride);
    }

    #[test]
    fn no_collector_means_everything_off() {
        assert_eq!(TraceOptions::default().initial_mask(), 0);
        let on = TraceOptions {
            socket: Some("/tmp/s".into()),
            ..Default::default()
        };
        assert_eq!(on.initial_mask(), k42_abi::trace::default_mask());
    }
}
