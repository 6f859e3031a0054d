//! The kernel's clustered-object system: the portable `k42-cobj` core on
//! the kernel's platform.
//!
//! - CPU identity: the kernel does not migrate or preempt, so the token
//!   for the CPU a piece of code runs on is always valid for it.
//! - Waiting: spin a few rounds, then give the host CPU away through
//!   k42vmm (the kernel's contended-wait rule).
//! - Quiescence: a CPU passes a quiescent point whenever a request ends
//!   and each time its idle loop wakes; a CPU being waited for is poked
//!   with a wakeup IPI so that its idle loop runs.

use k42_cobj::{Cpu, CpuEnv, Event, System};

use crate::arch;
use crate::sync::InitOnce;
use crate::{percpu, smp, time, trace};

/// Objects the kernel's table holds besides processes' region lists.
const CAPACITY: usize = 32;

/// Objects budgeted per process: its region list and an FCM for each of
/// up to 8 regions (a process with more competes for the slack).
const OBJECTS_PER_PROCESS: usize = 9;

/// Table size: the kernel's own objects, plus (when processes run, with
/// `init=`) one page index per file allowed (`file.max`) of each kind
/// (they are pooled by kind), and
/// the objects of every process allowed (`proc.max`), twice
/// over: processes' objects are
/// pooled and reused, never destroyed, so the table holds the most that
/// were ever alive at once.
fn capacity() -> usize {
    let opts = crate::boot::options();
    let (procs, files) = if opts.init.is_some() {
        (opts.proc_max as usize, opts.file_max as usize)
    } else {
        (0, 0)
    };
    CAPACITY + 2 * OBJECTS_PER_PROCESS * procs + 2 * files
}

/// The kernel as a clustered-object platform.
pub struct KernelEnv;

/// How kernel object implementations wait (`k42_cobj::objects::Relax`):
/// spin briefly, then have k42vmm yield the host CPU — never the long
/// sleeps of deep backoff: these locks guard short critical sections, so
/// a holder is usually only waiting for a host CPU to run on (with 255
/// vCPUs on two cores, escalating sleeps made a storm of first calls
/// several times slower).
pub fn relax(round: u32) {
    if round < 8 {
        arch::cpu_relax()
    } else {
        arch::backoff(0)
    }
}

impl CpuEnv for KernelEnv {
    fn ncpus(&self) -> usize {
        smp::ncpus() as usize
    }
    fn now_ns(&self) -> u64 {
        time::now_ns()
    }
    fn relax(&self, round: u32) {
        relax(round);
    }
    fn poke(&self, cpu: usize) {
        arch::send_ipi(cpu as u32, arch::VECTOR_WAKEUP);
    }
    fn event(&self, event: Event) {
        use k42_abi::trace::ev::cobj as ev;
        let o = |obj: u32| obj as u64;
        match event {
            Event::Miss { obj } => trace::log(ev::miss(o(obj))),
            Event::SwapBegin { obj, format } => {
                trace::log(ev::swap_begin(o(obj), format.map_or(-1, |f| f as i64)))
            }
            Event::SwapBlock { obj, forward_ns } => trace::log(ev::swap_block(o(obj), forward_ns)),
            Event::SwapEnd { obj, blocked_ns } => trace::log(ev::swap_end(o(obj), blocked_ns)),
            Event::Destroy { obj } => trace::log(ev::destroy(o(obj))),
        };
    }
}

static SYSTEM: InitOnce<System<KernelEnv>> = InitOnce::new();

/// The kernel's object table, made on first use (not at boot: making it
/// costs milliseconds while the kernel runs emulated, and a boot that runs
/// no user program or object test never needs it). Each CPU's local table
/// is made on that CPU's first use.
pub fn system() -> &'static System<KernelEnv> {
    SYSTEM.get_or_init(|| System::new(KernelEnv, capacity()))
}

/// The token of the CPU this code runs on.
pub fn cpu() -> Cpu<'static, KernelEnv> {
    // SAFETY: kernel code never migrates to another CPU, and every user of
    // a token on this CPU runs to completion before the next one starts
    // (there is no preemption).
    unsafe { system().cpu(percpu::cpu_id() as usize) }
}

/// A quiescent point for this CPU (from its idle loop).
pub fn quiescent() {
    if let Some(s) = SYSTEM.get() {
        // SAFETY: this is CPU `cpu_id()`, and the idle loop is outside any
        // request.
        unsafe { s.quiescent(percpu::cpu_id() as usize) };
    }
}
