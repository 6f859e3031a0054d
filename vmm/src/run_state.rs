//! The state of one running VM that the main thread, every vCPU thread
//! and the hypercall handlers share ([`VmShared`]): the VM and its RAM,
//! the boot layout and placement, the exit latch, the AP start gate, the
//! console, the run's milestones and what the guest has reported so far.
//!
//! `vm::run` builds it and reads the results out of it at the end; `vcpu`
//! and `hypercall` only use it. It depends on neither of them.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;

use k42_abi::Topology;
use kvm_bindings::CpuId;
use kvm_ioctls::VmFd;

use crate::console::ConsoleInput;
use crate::error::VmmError;
use crate::exit::ExitLatch;
use crate::kvm::KvmVm;
use crate::loader::BootLayout;
use crate::memory::GuestRam;
use crate::report::{BenchResult, TestRecord};
use crate::serial::Com1;
use crate::topology::Plan;
use crate::trace::TraceHub;

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
    /// A clock for a process that started at `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            kernel_entry: OnceLock::new(),
            all_online: OnceLock::new(),
        }
    }

    fn ms(&self, at: Option<&Instant>) -> Option<f64> {
        at.map(|t| t.duration_since(self.started).as_secs_f64() * 1e3)
    }

    /// vCPU 0 is about to enter the guest for the first time.
    pub fn mark_kernel_entry(&self) {
        let _ = self.kernel_entry.set(Instant::now());
    }

    /// Milliseconds from process start until vCPU 0 first entered the guest.
    pub fn ms_to_kernel_entry(&self) -> Option<f64> {
        self.ms(self.kernel_entry.get())
    }

    /// Milliseconds from process start until the last vCPU came online.
    pub fn ms_to_all_online(&self) -> Option<f64> {
        self.ms(self.all_online.get())
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
    pub topology: Topology,
    /// Guest TSC frequency, read by vCPU 0 before it first runs.
    pub tsc_khz: OnceLock<u32>,
    pub exit: ExitLatch,
    pub ap_gate: Gate,
    pub serial: Mutex<Com1>,
    pub clock: RunClock,
    /// Where the guest's trace registration meets the collector.
    pub trace: &'a TraceHub,
    /// Forwarded stdin (a run with `-- COMMAND`); `None`: ConsoleRead is
    /// refused.
    pub console: Option<&'a ConsoleInput>,
    online: Vec<AtomicBool>,
    online_count: AtomicU32,
    tests: Mutex<Vec<TestRecord>>,
    bench: Mutex<Vec<BenchResult>>,
    /// The guest's boot-time calibration: (spin iterations, ns).
    pub guest_spin: OnceLock<(u64, u64)>,
    /// Where a Linux `syscall` lands, once the guest has seen one.
    pub linux_syscall: OnceLock<k42_abi::hypercall::LinuxSyscallPath>,
    threads: Mutex<Vec<Option<libc::pthread_t>>>,
    finished: AtomicU32,
}

impl<'a> VmShared<'a> {
    /// The state of a VM about to start `plan.vcpus` vCPUs, with console
    /// `serial` (and no console input: see [`VmShared::with_console`]).
    pub fn new(
        vm: &'a KvmVm,
        ram: &'a GuestRam,
        layout: &'a BootLayout,
        plan: &'a Plan,
        trace: &'a TraceHub,
        serial: Com1,
        started: Instant,
    ) -> Result<Self, VmmError> {
        let vcpus = plan.vcpus;
        Ok(Self {
            vm: &vm.fd,
            ram,
            layout,
            supported_cpuid: &vm.supported_cpuid,
            vcpus,
            plan,
            topology: plan.to_record(),
            tsc_khz: OnceLock::new(),
            exit: ExitLatch::new().map_err(|e| VmmError::Host(format!("eventfd: {e}")))?,
            ap_gate: Gate::default(),
            serial: Mutex::new(serial),
            clock: RunClock::new(started),
            trace,
            console: None,
            online: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            online_count: AtomicU32::new(0),
            tests: Mutex::new(Vec::new()),
            bench: Mutex::new(Vec::new()),
            guest_spin: OnceLock::new(),
            linux_syscall: OnceLock::new(),
            threads: Mutex::new(vec![None; vcpus as usize]),
            finished: AtomicU32::new(0),
        })
    }

    /// The same, with forwarded stdin `console` for ConsoleRead.
    pub fn with_console(self, console: Option<&'a ConsoleInput>) -> Self {
        Self { console, ..self }
    }
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

    /// The vCPUs that came online, ascending.
    pub fn online_vcpus(&self) -> Vec<u32> {
        (0..self.vcpus)
            .filter(|&i| self.online[i as usize].load(Ordering::SeqCst))
            .collect()
    }

    /// Keep an in-kernel test result for the report.
    pub fn record_test(&self, t: TestRecord) {
        self.tests.lock().unwrap_or_else(|p| p.into_inner()).push(t);
    }

    /// The in-kernel test results so far, in the order they came.
    pub fn tests(&self) -> Vec<TestRecord> {
        self.tests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Keep a guest benchmark result for the report.
    pub fn record_bench(&self, b: BenchResult) {
        self.bench.lock().unwrap_or_else(|p| p.into_inner()).push(b);
    }

    /// The guest benchmark results so far, in the order they came.
    pub fn bench_results(&self) -> Vec<BenchResult> {
        self.bench.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A vCPU thread has left its run loop for good.
    pub fn mark_finished(&self) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }

    /// How many vCPU threads have left their run loops.
    pub fn finished(&self) -> u32 {
        self.finished.load(Ordering::SeqCst)
    }

    /// Send `signal` (the vCPU kick signal) to every registered vCPU thread.
    pub fn kick_all(&self, signal: libc::c_int) {
        let threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        for t in threads.iter().flatten() {
            // SAFETY: `t` is a thread of this scope that has not been joined
            // (joining happens after the kick loop), so the id is valid; a
            // finished thread just yields ESRCH.
            unsafe { libc::pthread_kill(*t, signal) };
        }
    }

    /// Write out whatever the console still buffers.
    pub fn flush_serial(&self) {
        self.serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush();
    }
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
