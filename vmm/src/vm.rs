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
//!     stdin → COM1, or Ctrl-A x     ...               ...
//!     from the console thread)
//!   exit decided ◄────────────────  Shutdown/Panic/fault (ExitLatch)
//!   kick vCPUs until all stopped
//!   trace collector drains        (a thread of its own with --trace or
//!   report                         --trace-socket, reading guest RAM)
//!
//!   With `-- COMMAND`, a detached thread reads stdin into the console
//!   queue (ConsoleRead) and interrupts vCPU 0; a terminal stays in raw
//!   mode until `run` returns (crate::console).
//! ```

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use k42_image::Image;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::timerfd::TimerFd;

use crate::config::VmConfig;
use crate::console::{self, ConsoleInput, RawTerminal};
use crate::error::VmmError;
use crate::exit::ExitReason;
use crate::kvm::{self, KvmVm};
use crate::loader;
use crate::memory::GuestRam;
use crate::platform::{self, PlatformReport};
use crate::report::{REPORT_SCHEMA, Report, VcpuExits};
use crate::run_state::VmShared;
use crate::serial::Com1;
use crate::topology::{self, Plan, cpulist, pin};
use crate::trace::collector::TraceReport;
use crate::trace::{TraceError, TraceHub, ctf, live};
use crate::vcpu::{self, VcpuStats};

/// Stack size of each vCPU thread (they run no deep recursion).
const VCPU_THREAD_STACK: usize = 256 << 10;

/// The end of a run.
pub struct RunResult {
    pub reason: ExitReason,
    pub report: Report,
    /// vCPUs that were still running at a timeout, with their state.
    pub still_running: Vec<(u32, String)>,
    /// Why trace collection failed, if it did.
    pub trace_error: Option<String>,
}

/// What the threads of a run left behind once they all stopped.
struct Stopped {
    /// One entry per vCPU thread started, in vCPU order.
    stats: Vec<VcpuStats>,
    /// vCPUs that were still running at a timeout, with their state.
    still_running: Vec<(u32, String)>,
    /// The trace collector's result, if it ran.
    trace: Option<Result<TraceReport, String>>,
    /// Host nanoseconds per spin-loop iteration.
    host_ns_per_spin: f64,
}

/// Boot `config.image` and run it to the end.
pub fn run(config: &VmConfig, started: Instant) -> Result<RunResult, VmmError> {
    let image = Image::open(&config.image)?;
    check_config(config)?;
    let (_, plan) = topology::plan_for_host(Path::new("/"), &config.placement())?;
    let server = prepare_trace(config)?;
    let trace_hub = TraceHub::new(config.trace.clone());
    let kvm = kvm::open()?;
    let ram = create_ram(&plan, config.prefault)?;
    let vm = create_vm(kvm, &ram, plan.vcpus)?;
    let default_cmdline = if config.command.is_empty() {
        image.manifest.cmdline.as_str()
    } else {
        crate::config::LINUX_CMDLINE
    };
    let cmdline = config
        .cmdline
        .clone()
        .unwrap_or_else(|| default_cmdline.to_string());
    let argv: Vec<u8> = config
        .command
        .iter()
        .flat_map(|a| a.bytes().chain([0]))
        .collect();
    let extra: Vec<k42_image::ModuleData> = if config.command.is_empty() {
        Vec::new()
    } else {
        vec![k42_image::ModuleData {
            name: crate::config::LINUX_ARGV_MODULE,
            data: &argv,
        }]
    };
    let mut layout = loader::load(&ram, &image, &extra, plan.vcpus, &cmdline)?;
    warn_about_plan(&plan);
    let serial = Com1::new(&vm.fd, Box::new(std::io::stdout()))
        .map_err(|e| VmmError::Host(format!("COM1: {e}")))?;
    install_signal_handlers()?;
    // From here on, every way out of this function (a return, an error,
    // unwinding) drops `_raw` and so restores the terminal.
    let (console, _raw) = if config.command.is_empty() {
        (None, None)
    } else {
        let (console, raw) = open_console()?;
        layout.boot_info.console_input = 1;
        layout.boot_info.console_is_terminal = console.terminal as u32;
        if let Some((rows, cols)) = console::window_size(libc::STDIN_FILENO) {
            layout.boot_info.console_rows = rows.into();
            layout.boot_info.console_cols = cols.into();
        }
        (Some(console), raw)
    };
    let shared = VmShared::new(&vm, &ram, &layout, &plan, &trace_hub, serial, started)?
        .with_console(console.as_deref());
    if let Some(c) = &console {
        c.start_reader(libc::STDIN_FILENO, Arc::downgrade(&vm.fd))
            .map_err(|e| VmmError::Host(format!("cannot start the stdin thread: {e}")))?;
    }
    let stopped = run_threads(&shared, config.timeout, server);
    if let Some(c) = &console {
        c.stop();
    }
    shared.flush_serial();
    let ended = Instant::now();
    let reason = shared.exit.reason().unwrap_or(ExitReason::HostError(
        "the run ended without a decision".into(),
    ));
    let report = make_report(
        config,
        &image.manifest.name,
        cmdline,
        &shared,
        &stopped,
        &reason,
        ended,
    );
    Ok(RunResult {
        reason,
        report,
        still_running: stopped.still_running,
        trace_error: stopped.trace.and_then(|r| r.err()),
    })
}

/// Console input for a run with a command: stdin, in raw mode while the
/// returned guard lives when it is a terminal.
fn open_console() -> Result<(Arc<ConsoleInput>, Option<RawTerminal>), VmmError> {
    let raw = if console::is_terminal(libc::STDIN_FILENO) {
        Some(RawTerminal::enter(libc::STDIN_FILENO).map_err(|e| {
            VmmError::Host(format!("cannot put the terminal (stdin) in raw mode: {e}"))
        })?)
    } else {
        None
    };
    let input = ConsoleInput::new(raw.is_some())
        .map_err(|e| VmmError::Host(format!("console input: {e}")))?;
    Ok((Arc::new(input), raw))
}

/// Refuse a vCPU count or memory size no plan could satisfy.
fn check_config(config: &VmConfig) -> Result<(), VmmError> {
    if let Some(bad) = config.command.iter().find(|a| a.contains('\0')) {
        return Err(VmmError::Config(format!(
            "the command's argument {bad:?} contains a NUL byte"
        )));
    }
    if config.command.first().is_some_and(|c| !c.starts_with('/')) {
        return Err(VmmError::Config(format!(
            "the command '{}' must be an absolute path in the guest (for example /bin/sh)",
            config.command[0]
        )));
    }
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
    Ok(())
}

/// Create the trace directory and bind the live socket, refusing bad ones before booting.
fn prepare_trace(config: &VmConfig) -> Result<Option<live::Server>, VmmError> {
    if let Some(d) = &config.trace.dir {
        ctf::create_dir(d)?;
    }
    Ok(match &config.trace.socket {
        Some(p) => Some(live::Server::bind(p)?),
        None => None,
    })
}

/// Map guest RAM, one share per guest node, placed as the plan says.
fn create_ram(plan: &Plan, prefault: bool) -> Result<GuestRam, VmmError> {
    let node_sizes: Vec<u64> = plan.nodes.iter().map(|n| n.memory_bytes).collect();
    let ram = GuestRam::with_nodes(&node_sizes)?;
    place_memory(&ram, plan, prefault)?;
    Ok(ram)
}

/// Create the VM over `ram` and check that its KVM allows `vcpus` vCPUs.
fn create_vm(kvm: kvm_ioctls::Kvm, ram: &GuestRam, vcpus: u32) -> Result<KvmVm, VmmError> {
    let vm = KvmVm::create(kvm, ram)?;
    if vcpus > vm.max_vcpus {
        return Err(VmmError::TooManyVcpus {
            requested: vcpus,
            limit: vm.max_vcpus,
            why: "this host's KVM allows",
        });
    }
    Ok(vm)
}

/// Print the plan's overcommit warning and notes.
fn warn_about_plan(plan: &Plan) {
    if let Some(w) = plan.overcommit_warning() {
        eprintln!("k42vmm: warning: {w}");
    }
    for note in &plan.notes {
        eprintln!("k42vmm: note: {note}");
    }
}

/// Start the threads, run the event loop until the run ends, stop the vCPUs, drain the trace.
fn run_threads(
    shared: &VmShared,
    timeout: Option<Duration>,
    server: Option<live::Server>,
) -> Stopped {
    std::thread::scope(|s| {
        let collector = spawn_collector(s, shared, server);
        let handles = spawn_vcpus(s, shared);
        // Time the spin loop on the host while the vCPUs get going, to
        // compare with the guest's calibration.
        let host_ns_per_spin = platform::host_ns_per_spin();
        if let Err(e) = main_loop(shared, timeout) {
            shared
                .exit
                .decide(ExitReason::HostError(format!("event loop: {e}")));
        }
        shared.ap_gate.cancel();
        let stats = stop_vcpus(shared, handles);
        let trace = finish_trace(shared, collector);
        let still_running = stats
            .iter()
            .filter_map(|s| s.final_state.clone().map(|f| (s.index, f)))
            .collect();
        Stopped {
            stats,
            still_running,
            trace,
            host_ns_per_spin,
        }
    })
}

/// Start the trace collector thread if tracing is on; failing to start it ends the run.
fn spawn_collector<'scope>(
    s: &'scope Scope<'scope, '_>,
    shared: &'scope VmShared,
    server: Option<live::Server>,
) -> Option<ScopedJoinHandle<'scope, Result<TraceReport, TraceError>>> {
    if !shared.trace.options.enabled() {
        return None;
    }
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
}

/// Start one thread per vCPU; failing to start one ends the run and starts no more.
fn spawn_vcpus<'scope>(
    s: &'scope Scope<'scope, '_>,
    shared: &'scope VmShared,
) -> Vec<ScopedJoinHandle<'scope, VcpuStats>> {
    let mut handles = Vec::with_capacity(shared.vcpus as usize);
    for i in 0..shared.vcpus {
        let spawned = std::thread::Builder::new()
            .name(format!("vcpu{i}"))
            .stack_size(VCPU_THREAD_STACK)
            .spawn_scoped(s, move || {
                let st = vcpu::vcpu_thread(shared, i);
                shared.mark_finished();
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
    handles
}

/// Kick until every vCPU thread has left its run loop, then join them.
fn stop_vcpus(shared: &VmShared, handles: Vec<ScopedJoinHandle<'_, VcpuStats>>) -> Vec<VcpuStats> {
    // Re-kick now and then in case a kick raced with a thread entering
    // KVM_RUN.
    let all = handles.len() as u32;
    'kick: loop {
        shared.kick_all(vcpu::kick_signal());
        for _ in 0..50 {
            if shared.finished() == all {
                break 'kick;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            h.join().unwrap_or(VcpuStats {
                index: i as u32,
                ..Default::default()
            })
        })
        .collect()
}

/// With every vCPU out of the guest, let the collector drain the rest; its result.
fn finish_trace(
    shared: &VmShared,
    collector: Option<ScopedJoinHandle<'_, Result<TraceReport, TraceError>>>,
) -> Option<Result<TraceReport, String>> {
    let ended = shared
        .exit
        .reason()
        .map_or_else(|| "the run ended".to_string(), |r| describe(&r, &[]));
    shared.trace.finish(ended);
    collector.map(|h| {
        h.join()
            .unwrap_or_else(|_| {
                Err(TraceError::Read(
                    Default::default(),
                    "the trace collector crashed".into(),
                ))
            })
            .map_err(|e| e.to_string())
    })
}

/// The run report: what was booted, how it ended, and what each vCPU did.
fn make_report(
    config: &VmConfig,
    image_name: &str,
    cmdline: String,
    shared: &VmShared,
    stopped: &Stopped,
    reason: &ExitReason,
    ended: Instant,
) -> Report {
    let plan = shared.plan;
    let online_vcpus = shared.online_vcpus();
    Report {
        schema: REPORT_SCHEMA,
        k42vmm_version: env!("CARGO_PKG_VERSION").to_string(),
        image: config.image.display().to_string(),
        image_name: image_name.to_string(),
        cmdline,
        exit_code: reason.code(),
        exit_reason: reason.kind().to_string(),
        exit_message: describe(reason, &stopped.still_running),
        vcpus: shared.vcpus,
        memory_bytes: plan.memory_bytes,
        host_cpus: plan.usable_host_cpus.len() as u32,
        overcommitted: plan.overcommitted,
        tsc_khz: shared.tsc_khz.get().copied(),
        ms_to_kernel_entry: shared.clock.ms_to_kernel_entry(),
        ms_to_all_online: shared.clock.ms_to_all_online(),
        ms_to_exit: ended.duration_since(shared.clock.started).as_secs_f64() * 1e3,
        vcpus_online: online_vcpus.len() as u32,
        online_vcpus,
        platform: PlatformReport::new(
            shared.guest_spin.get().copied(),
            shared.linux_syscall.get().copied(),
            stopped.host_ns_per_spin,
        ),
        tests: shared.tests(),
        bench: shared.bench_results(),
        vcpu_exits: stopped
            .stats
            .iter()
            .map(|s| VcpuExits {
                vcpu: s.index,
                exits: s.exits.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            })
            .collect(),
        vcpu_affinity: stopped
            .stats
            .iter()
            .map(|s| {
                s.affinity
                    .as_deref()
                    .map_or("unknown".into(), cpulist::format)
            })
            .collect(),
        placement: plan.clone(),
        trace: stopped
            .trace
            .as_ref()
            .and_then(|r| r.as_ref().ok().cloned()),
        console_input: shared.console.map(|c| c.report()),
    }
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
        ExitReason::Quit => "stopped from the terminal (Ctrl-A x)".into(),
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
        if let Some(c) = self.shared.console {
            // The console's reader thread owns stdin; it reports Ctrl-A x.
            let _ = ops.add(Events::new(&c.quit, EventSet::IN));
            return;
        }
        // Regular files and /dev/null cannot be polled: then there is no
        // console input, which is fine.
        self.stdin_open = ops
            .add(Events::new_raw(libc::STDIN_FILENO, EventSet::IN))
            .is_ok();
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if let Some(c) = self.shared.console
            && fd == c.quit.as_raw_fd()
        {
            let _ = c.quit.read();
            self.shared.exit.decide(ExitReason::Quit);
        } else if fd == self.timer.as_raw_fd() {
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
    if LAST_SIGNAL.load(Ordering::SeqCst) != 0 {
        // It came between the handlers' installation and now, when the
        // handler had no event to write to.
        signal_event.write(1)?;
    }
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
