//! One VM run, start to finish: check the image, plan the placement,
//! create the VM and its RAM (bound per guest node), load the kernel,
//! start one thread per vCPU, wait in the main event loop for the run to
//! end, stop the vCPUs and write the report.
//!
//! ```text
//!   main thread                     vCPU 0            vCPU 1..N-1
//!   ───────────                     ──────            ───────────
//!   placement plan (topology)
//!   RAM per guest node, mbind,
//!     --prefault
//!   create VM, irqchip
//!   load image, boot tables
//!   spawn vCPU threads ──────────►  pin, check        pin, check
//!                                   create+configure  create+configure
//!   event loop (exit eventfd,       run kernel        wait at ap_gate
//!     timeout timerfd, signals,     StartAps ───────► run kernel
//!     stdin → COM1)                 ...               ...
//!   exit decided ◄────────────────  Shutdown/Panic/fault (ExitLatch)
//!   kick vCPUs until all stopped
//!   trace collector drains        (a thread of its own with --trace or
//!   report                         --trace-socket, reading guest RAM)
//! ```

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use k42_abi::Topology;
use k42_image::Image;
use kvm_bindings::CpuId;
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::timerfd::TimerFd;

use crate::config::VmConfig;
use crate::error::VmmError;
use crate::exit::{ExitLatch, ExitReason};
use crate::kvm::{self, KvmVm};
use crate::loader::{self, BootLayout};
use crate::memory::GuestRam;
use crate::platform::{self, PlatformReport};
use crate::report::{BenchResult, REPORT_SCHEMA, Report, VcpuExits};
use crate::serial::Com1;
use crate::topology::{self, Plan, cpulist, pin};
use crate::trace::collector::TraceReport;
use crate::trace::{TraceHub, ctf, live};
use crate::vcpu::{self, VcpuStats};

/// Stack size of each vCPU thread (they run no deep recursion).
const VCPU_THREAD_STACK: usize = 256 << 10;

/// One in-kernel test result, as reported by the guest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestRecord {
    pub name: String,
    pub passed: bool,
    pub ms: f64,
    pub vcpu: u32,
}

/// A one-way gate the application processors wait at until vCPU 0 opens
/// it (or the run ends first and cancels it).
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum GateState {
    #[default]
    Closed,
    Open,
    Cancelled,
}

impl Gate {
    /// Open the gate; false if it was not closed.
    pub fn open(&self) -> bool {
        self.set(GateState::Open)
    }

    /// Cancel the gate so that waiters give up.
    pub fn cancel(&self) {
        self.set(GateState::Cancelled);
    }

    fn set(&self, to: GateState) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *s != GateState::Closed {
            return false;
        }
        *s = to;
        self.cv.notify_all();
        true
    }

    /// Wait until the gate opens (true) or is cancelled (false).
    pub fn wait(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while *s == GateState::Closed {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        *s == GateState::Open
    }
}

/// Milestones of a run, measured from process start.
pub struct RunClock {
    pub started: Instant,
    kernel_entry: OnceLock<Instant>,
    all_online: OnceLock<Instant>,
}

impl RunClock {
    fn ms(&self, at: Option<&Instant>) -> Option<f64> {
        at.map(|t| t.duration_since(self.started).as_secs_f64() * 1e3)
    }

    /// vCPU 0 is about to enter the guest for the first time.
    pub fn mark_kernel_entry(&self) {
        let _ = self.kernel_entry.set(Instant::now());
    }
}

/// State shared by the main thread and every vCPU thread of one VM.
pub struct VmShared<'a> {
    pub vm: &'a VmFd,
    pub ram: &'a GuestRam,
    pub layout: &'a BootLayout,
    pub supported_cpuid: &'a CpuId,
    pub vcpus: u32,
    /// The placement plan: each vCPU thread pins itself by it.
    pub plan: &'a Plan,
    /// The topology record the guest fetches.
    pub topology: &'a Topology,
    /// Guest TSC frequency, read by vCPU 0 before it first runs.
    pub tsc_khz: OnceLock<u32>,
    pub exit: ExitLatch,
    pub ap_gate: Gate,
    pub serial: Mutex<Com1>,
    pub clock: RunClock,
    /// Where the guest's trace registration meets the collector.
    pub trace: &'a TraceHub,
    online: Vec<AtomicBool>,
    online_count: AtomicU32,
    tests: Mutex<Vec<TestRecord>>,
    bench: Mutex<Vec<BenchResult>>,
    /// The guest's boot-time calibration: (spin iterations, ns).
    pub guest_spin: OnceLock<(u64, u64)>,
    threads: Mutex<Vec<Option<libc::pthread_t>>>,
    finished: AtomicU32,
}

impl VmShared<'_> {
    /// Record the calling thread as vCPU `index`'s, so it can be kicked.
    pub fn register_thread(&self, index: u32) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.threads.lock().unwrap_or_else(|p| p.into_inner())[index as usize] = Some(me);
    }

    /// vCPU `index` reports itself online; false if it already had.
    pub fn mark_online(&self, index: u32) -> bool {
        if self.online[index as usize].swap(true, Ordering::SeqCst) {
            return false;
        }
        if self.online_count.fetch_add(1, Ordering::SeqCst) + 1 == self.vcpus {
            let _ = self.clock.all_online.set(Instant::now());
        }
        true
    }

    /// Keep an in-kernel test result for the report.
    pub fn record_test(&self, t: TestRecord) {
        self.tests.lock().unwrap_or_else(|p| p.into_inner()).push(t);
    }

    /// Keep a guest benchmark result for the report.
    pub fn record_bench(&self, b: BenchResult) {
        self.bench.lock().unwrap_or_else(|p| p.into_inner()).push(b);
    }

    /// Send the kick signal to every registered vCPU thread.
    fn kick_all(&self) {
        let threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        for t in threads.iter().flatten() {
            // SAFETY: `t` is a thread of this scope that has not been joined
            // (joining happens after the kick loop), so the id is valid; a
            // finished thread just yields ESRCH.
            unsafe { libc::pthread_kill(*t, vcpu::kick_signal()) };
        }
    }
}

/// The end of a run.
pub struct RunResult {
    pub reason: ExitReason,
    pub report: Report,
    /// vCPUs that were still running at a timeout, with their state.
    pub still_running: Vec<(u32, String)>,
    /// Why trace collection failed, if it did.
    pub trace_error: Option<String>,
}

/// Boot `config.image` and run it to the end.
pub fn run(config: &VmConfig, started: Instant) -> Result<RunResult, VmmError> {
    let image = Image::open(&config.image)?;
    match config.vcpus {
        Some(0) => return Err(VmmError::TooFewVcpus),
        Some(v) if v as usize > k42_abi::MAX_VCPUS => {
            return Err(VmmError::TooManyVcpus {
                requested: v,
                limit: k42_abi::MAX_VCPUS as u32,
                why: "the k42 boot ABI supports",
            });
        }
        _ => {}
    }
    if let Some(m) = config.memory
        && (m == 0 || !m.is_multiple_of(k42_abi::layout::LARGE_PAGE_SIZE))
    {
        return Err(VmmError::MemoryNotAligned(m));
    }
    let (_, plan) = topology::plan_for_host(Path::new("/"), &config.placement())?;
    let vcpus = plan.vcpus;
    // Refuse a bad trace directory or socket before booting anything.
    if let Some(d) = &config.trace.dir {
        ctf::create_dir(d)?;
    }
    let server = match &config.trace.socket {
        Some(p) => Some(live::Server::bind(p)?),
        None => None,
    };
    let trace_hub = TraceHub::new(config.trace.clone());
    let kvm = kvm::open()?;
    let node_sizes: Vec<u64> = plan.nodes.iter().map(|n| n.memory_bytes).collect();
    let ram = GuestRam::with_nodes(&node_sizes)?;
    place_memory(&ram, &plan, config.prefault)?;
    let vm = KvmVm::create(kvm, &ram)?;
    if vcpus > vm.max_vcpus {
        return Err(VmmError::TooManyVcpus {
            requested: vcpus,
            limit: vm.max_vcpus,
            why: "this host's KVM allows",
        });
    }
    let cmdline = config
        .cmdline
        .clone()
        .unwrap_or_else(|| image.manifest.cmdline.clone());
    let layout = loader::load(&ram, &image, vcpus, &cmdline)?;
    if let Some(w) = plan.overcommit_warning() {
        eprintln!("k42vmm: warning: {w}");
    }
    for note in &plan.notes {
        eprintln!("k42vmm: note: {note}");
    }
    let topology = plan.to_record();
    let serial = Com1::new(&vm.fd, Box::new(std::io::stdout()))
        .map_err(|e| VmmError::Host(format!("COM1: {e}")))?;
    let shared = VmShared {
        vm: &vm.fd,
        ram: &ram,
        layout: &layout,
        supported_cpuid: &vm.supported_cpuid,
        vcpus,
        plan: &plan,
        topology: &topology,
        tsc_khz: OnceLock::new(),
        exit: ExitLatch::new().map_err(|e| VmmError::Host(format!("eventfd: {e}")))?,
        ap_gate: Gate::default(),
        serial: Mutex::new(serial),
        clock: RunClock {
            started,
            kernel_entry: OnceLock::new(),
            all_online: OnceLock::new(),
        },
        trace: &trace_hub,
        online: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
        online_count: AtomicU32::new(0),
        tests: Mutex::new(Vec::new()),
        bench: Mutex::new(Vec::new()),
        guest_spin: OnceLock::new(),
        threads: Mutex::new(vec![None; vcpus as usize]),
        finished: AtomicU32::new(0),
    };
    install_signal_handlers()?;
    let host_ns = OnceLock::new();

    let (stats, trace_result) = std::thread::scope(|s| {
        let collector = if trace_hub.options.enabled() {
            let shared = &shared;
            let spawned = std::thread::Builder::new()
                .name("trace".into())
                .spawn_scoped(s, move || {
                    crate::trace::collector::run(shared.trace, shared.ram, &shared.tsc_khz, server)
                });
            match spawned {
                Ok(h) => Some(h),
                Err(e) => {
                    shared.exit.decide(ExitReason::HostError(format!(
                        "cannot start the trace collector thread: {e}"
                    )));
                    None
                }
            }
        } else {
            None
        };
        let mut handles = Vec::with_capacity(vcpus as usize);
        for i in 0..vcpus {
            let shared = &shared;
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .stack_size(VCPU_THREAD_STACK)
                .spawn_scoped(s, move || {
                    let st = vcpu::vcpu_thread(shared, i);
                    shared.finished.fetch_add(1, Ordering::SeqCst);
                    st
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.exit.decide(ExitReason::HostError(format!(
                        "cannot start the thread of vCPU {i}: {e}"
                    )));
                    break;
                }
            }
        }
        // Time the spin loop on the host while the vCPUs get going, to
        // compare with the guest's calibration.
        let host_spin = platform::host_ns_per_spin();
        let _ = host_ns.set(host_spin);
        if let Err(e) = main_loop(&shared, config.timeout) {
            shared
                .exit
                .decide(ExitReason::HostError(format!("event loop: {e}")));
        }
        shared.ap_gate.cancel();
        // Kick until every vCPU thread has left its run loop; re-kick now
        // and then in case a kick raced with a thread entering KVM_RUN.
        let all = handles.len() as u32;
        'kick: loop {
            shared.kick_all();
            for _ in 0..50 {
                if shared.finished.load(Ordering::SeqCst) == all {
                    break 'kick;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        let stats: Vec<VcpuStats> = handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.join().unwrap_or(VcpuStats {
                    index: i as u32,
                    ..Default::default()
                })
            })
            .collect();
        // Every vCPU is out of the guest: the collector drains the rest.
        let ended = shared
            .exit
            .reason()
            .map_or_else(|| "the run ended".to_string(), |r| describe(&r, &[]));
        shared.trace.finish(ended);
        let trace: Option<Result<TraceReport, String>> = collector.map(|h| {
            h.join()
                .unwrap_or_else(|_| {
                    Err(crate::trace::TraceError::Read(
                        Default::default(),
                        "the trace collector crashed".into(),
                    ))
                })
                .map_err(|e| e.to_string())
        });
        (stats, trace)
    });
    shared
        .serial
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .flush();
    let ended = Instant::now();
    let reason = shared.exit.reason().unwrap_or(ExitReason::HostError(
        "the run ended without a decision".into(),
    ));

    let online_vcpus: Vec<u32> = (0..vcpus)
        .filter(|&i| shared.online[i as usize].load(Ordering::SeqCst))
        .collect();
    let still_running: Vec<(u32, String)> = stats
        .iter()
        .filter_map(|s| s.final_state.clone().map(|f| (s.index, f)))
        .collect();
    let report = Report {
        schema: REPORT_SCHEMA,
        k42vmm_version: env!("CARGO_PKG_VERSION").to_string(),
        image: config.image.display().to_string(),
        image_name: image.manifest.name.clone(),
        cmdline,
        exit_code: reason.code(),
        exit_reason: reason.kind().to_string(),
        exit_message: describe(&reason, &still_running),
        vcpus,
        memory_bytes: plan.memory_bytes,
        host_cpus: plan.usable_host_cpus.len() as u32,
        overcommitted: plan.overcommitted,
        tsc_khz: shared.tsc_khz.get().copied(),
        ms_to_kernel_entry: shared.clock.ms(shared.clock.kernel_entry.get()),
        ms_to_all_online: shared.clock.ms(shared.clock.all_online.get()),
        ms_to_exit: ended.duration_since(started).as_secs_f64() * 1e3,
        vcpus_online: online_vcpus.len() as u32,
        online_vcpus,
        platform: PlatformReport::new(
            shared.guest_spin.get().copied(),
            host_ns.get().copied().unwrap_or(0.0),
        ),
        tests: shared
            .tests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        bench: shared
            .bench
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        vcpu_exits: stats
            .iter()
            .map(|s| VcpuExits {
                vcpu: s.index,
                exits: s.exits.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            })
            .collect(),
        vcpu_affinity: stats
            .iter()
            .map(|s| {
                s.affinity
                    .as_deref()
                    .map_or("unknown".into(), cpulist::format)
            })
            .collect(),
        placement: plan.clone(),
        trace: trace_result.as_ref().and_then(|r| r.as_ref().ok().cloned()),
    };
    Ok(RunResult {
        reason,
        report,
        still_running,
        trace_error: trace_result.and_then(|r| r.err()),
    })
}

/// Bind each guest node's RAM to its host node as the plan says, before
/// anything touches it; then, with `--prefault`, fault it all in.
fn place_memory(ram: &GuestRam, plan: &Plan, prefault: bool) -> Result<(), VmmError> {
    for r in ram.node_ranges() {
        if let Some(host_node) = plan.nodes[r.node as usize].memory_host_node {
            pin::bind_memory(ram, r, host_node).map_err(|err| VmmError::Bind {
                node: r.node,
                host_node,
                err,
            })?;
        }
        if prefault {
            pin::prefault(ram, r).map_err(VmmError::Prefault)?;
        }
    }
    Ok(())
}

/// A one-line description of how the run ended.
pub fn describe(reason: &ExitReason, still_running: &[(u32, String)]) -> String {
    match reason {
        ExitReason::Shutdown(c) => format!("the guest shut down with code {c}"),
        ExitReason::Panic { vcpu, message } => format!("guest panic on vCPU {vcpu}: {message}"),
        ExitReason::TripleFault { vcpu, .. } => {
            format!("vCPU {vcpu} triple-faulted: the guest kernel could not handle a fault")
        }
        ExitReason::Fault { vcpu, what, .. } => format!("vCPU {vcpu} stopped: {what}"),
        ExitReason::Timeout { after } => {
            let ids: Vec<u32> = still_running.iter().map(|(i, _)| *i).collect();
            let busy: Vec<String> = still_running
                .iter()
                .filter(|(_, s)| s != "halted")
                .map(|(i, s)| format!("vCPU {i} {s}"))
                .collect();
            let halted = ids.len() - busy.len();
            format!(
                "timeout: the guest was still running after {} on vCPUs {} ({}{} halted)",
                humantime::format_duration(*after),
                cpulist::format(&ids),
                if busy.is_empty() {
                    String::new()
                } else {
                    format!("{}; ", busy.join(", "))
                },
                halted
            )
        }
        ExitReason::Signal(s) => format!("stopped by signal {s}"),
        ExitReason::HostError(m) => format!("host error: {m}"),
    }
}

static SIGNAL_EVENT_FD: AtomicI32 = AtomicI32::new(-1);
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn terminate_handler(num: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    LAST_SIGNAL.store(num, Ordering::SeqCst);
    let fd = SIGNAL_EVENT_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) on an eventfd with a valid 8-byte buffer is
        // async-signal-safe; a failure is harmless (the event is pending).
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

fn install_signal_handlers() -> Result<(), VmmError> {
    use vmm_sys_util::signal::register_signal_handler;
    let err = |e| VmmError::Host(format!("cannot install a signal handler: {e}"));
    register_signal_handler(vcpu::kick_signal(), vcpu::kick_handler).map_err(err)?;
    register_signal_handler(libc::SIGINT, terminate_handler).map_err(err)?;
    register_signal_handler(libc::SIGTERM, terminate_handler).map_err(err)?;
    Ok(())
}

/// The main thread's event loop: waits for the exit decision, the
/// timeout, a terminating signal, or console input.
struct MainLoop<'a> {
    shared: &'a VmShared<'a>,
    timeout: Option<Duration>,
    timer: TimerFd,
    signal_event: EventFd,
    stdin_open: bool,
}

impl MutEventSubscriber for MainLoop<'_> {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.shared.exit.event, EventSet::IN));
        let _ = ops.add(Events::new(&self.timer, EventSet::IN));
        let _ = ops.add(Events::new(&self.signal_event, EventSet::IN));
        // Regular files and /dev/null cannot be polled: then there is no
        // console input, which is fine.
        self.stdin_open = ops
            .add(Events::new_raw(libc::STDIN_FILENO, EventSet::IN))
            .is_ok();
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.timer.as_raw_fd() {
            let _ = self.timer.wait();
            if let Some(after) = self.timeout {
                self.shared.exit.decide(ExitReason::Timeout { after });
            }
        } else if fd == self.signal_event.as_raw_fd() {
            let _ = self.signal_event.read();
            self.shared
                .exit
                .decide(ExitReason::Signal(LAST_SIGNAL.load(Ordering::SeqCst)));
        } else if fd == libc::STDIN_FILENO {
            let mut buf = [0u8; 64];
            // SAFETY: reading into a valid local buffer of the given length.
            let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 || events.event_set().contains(EventSet::HANG_UP) {
                let _ = ops.remove(Events::new_raw(libc::STDIN_FILENO, EventSet::IN));
                self.stdin_open = false;
            } else {
                self.shared
                    .serial
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .input(&buf[..n as usize]);
            }
        } else {
            let _ = self.shared.exit.event.read();
        }
    }
}

fn main_loop(shared: &VmShared, timeout: Option<Duration>) -> std::io::Result<()> {
    let mut timer = TimerFd::new()?;
    if let Some(t) = timeout {
        timer.reset(t, None)?;
    }
    let signal_event = EventFd::new(EFD_NONBLOCK)?;
    SIGNAL_EVENT_FD.store(signal_event.as_raw_fd(), Ordering::SeqCst);
    let mut em =
        EventManager::<MainLoop>::new().map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    em.add_subscriber(MainLoop {
        shared,
        timeout,
        timer,
        signal_event,
        stdin_open: false,
    });
    let result = loop {
        if shared.exit.is_stopping() {
            break Ok(());
        }
        if let Err(e) = em.run() {
            break Err(std::io::Error::other(format!("{e:?}")));
        }
    };
    SIGNAL_EVENT_FD.store(-1, Ordering::SeqCst);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_opens_once() {
        let g = Gate::default();
        assert!(g.open());
        assert!(!g.open());
        assert!(g.wait());
        let c = Gate::default();
        c.cancel();
        assert!(!c.wait());
        assert!(!c.open());
    }
}
