//! Threads and the scheduler: per-CPU run queues, idle CPUs that steal
//! work, and time-slice preemption by the TSC-deadline timer.
//!
//! A thread's whole state while it is off the CPU is its saved user
//! registers ([`Thread::frame`]) and FPU state: the kernel never blocks
//! in the middle of kernel code. Every entry from user mode lands on the
//! CPU's one trap stack with a [`TrapFrame`]; switching threads is
//! copying the old thread's frame out and the new one's in, then the
//! trap stub's `iretq` resumes whichever thread the frame now holds. A
//! system call that must wait (wait for a child) saves its thread, parks
//! it where a waker will find it, and switches; the waker later sets the
//! saved `rax` and queues the thread. So a CPU needs no kernel stack per
//! thread, and an emulated kernel runs few instructions per switch.
//!
//! A CPU left with no thread ready does not halt where the thread left
//! it (inside the system call's handler) but at the trap's end, once
//! the handler has returned ([`finish_trap`]): whatever the handler held
//! — the blocked thread, a pipe end — is let go before the CPU idles.
//!
//! ```text
//! enqueue(t) ──► an idle CPU's queue (IPI), else the shortest queue
//! CPU: pick own queue front ─► else steal another queue's back ─► else
//!      (at the trap's end) halt, interrupts on, until woken; quiescent
//!      point on every wake
//! timer/IPI from user mode: queue not empty and slice (10 ms) used up
//!      ─► current to the back of its queue, next from the front
//! ```
//!
//! Ownership: a thread is either some CPU's `current` or in exactly one
//! place (a run queue, a wait slot, or being created/destroyed); its
//! saved state is written before it is published there and read only by
//! the CPU that takes it.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use k42_abi::MAX_VCPUS;

use super::Process;
use super::memory::Memory;
use crate::arch::{self, FpuState, TrapFrame, VECTOR_WAKEUP};
use crate::percpu::{CpuLocal, NoPreempt};
use crate::sync::{ExclusiveCell, SpinLock};
use crate::{percpu, smp};

/// A time slice: how long a thread runs before a waiting one gets its
/// turn.
const SLICE_NS: u64 = 10_000_000;

/// A user thread.
pub struct Thread {
    pub tid: u32,
    pub process: Arc<Process>,
    /// Its process's memory (the process's memory goes with its last
    /// thread; exec gives the process a new thread in new memory).
    memory: Arc<Memory>,
    /// The CPU it must run on (+1), or 0: any.
    pin: AtomicU32,
    /// Its FS base (Linux TLS), set only by the thread itself.
    fs_base: AtomicU64,
    /// Its user GS base (the Linux personality's per-thread block), set
    /// at creation or by the thread itself.
    gs_base: AtomicU64,
    /// Its registers while it is not running, touched only by the CPU
    /// that owns the thread at the time (see the module docs).
    saved: ExclusiveCell<Saved>,
}

#[repr(C, align(16))]
struct Saved {
    fpu: FpuState,
    frame: TrapFrame,
    /// The PPC call this thread serves (a server's worker), if any.
    ppc: Option<super::ppc::Pending>,
}

impl Thread {
    /// A new thread of `process` that starts at `rip` with stack `rsp` and
    /// `rdi`..`rsi` = `args`.
    pub fn new(
        tid: u32,
        process: Arc<Process>,
        memory: Arc<Memory>,
        rip: u64,
        rsp: u64,
        args: [u64; 2],
    ) -> Arc<Self> {
        let frame = user_frame(rip, rsp, args);
        Arc::new(Self {
            tid,
            process,
            memory,
            pin: AtomicU32::new(0),
            fs_base: AtomicU64::new(0),
            gs_base: AtomicU64::new(0),
            saved: ExclusiveCell::new(Saved {
                fpu: FpuState::initial(),
                frame,
                ppc: None,
            }),
        })
    }

    /// A copy of `frame` as a new thread's state (fork's child), with
    /// this CPU's FPU state.
    pub fn from_frame(
        tid: u32,
        process: Arc<Process>,
        memory: Arc<Memory>,
        frame: &TrapFrame,
    ) -> Arc<Self> {
        let t = Self::new(tid, process, memory, 0, 0, [0, 0]);
        if let Some(me) = current() {
            t.fs_base.store(me.fs_base(), Ordering::Relaxed);
            t.gs_base.store(me.gs_base(), Ordering::Relaxed);
        }
        {
            let mut s = t.saved.borrow();
            s.frame = *frame;
            s.fpu.save();
        }
        t
    }

    /// Its process's memory.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Its memory, shared (for a new thread of the same process).
    pub fn memory_arc(&self) -> Arc<Memory> {
        self.memory.clone()
    }

    /// Its FS base.
    pub fn fs_base(&self) -> u64 {
        self.fs_base.load(Ordering::Relaxed)
    }

    /// Set the FS base of the calling thread (this thread, current here).
    pub fn set_fs_base(&self, base: u64) {
        self.fs_base.store(base, Ordering::Relaxed);
        me().fs_base.store(base, Ordering::Relaxed);
        arch::set_fs_base(base);
    }

    /// Its user GS base.
    pub fn gs_base(&self) -> u64 {
        self.gs_base.load(Ordering::Relaxed)
    }

    /// Set the user GS base of a thread not yet running (a new one).
    pub fn init_bases(&self, fs: u64, gs: u64) {
        self.fs_base.store(fs, Ordering::Relaxed);
        self.gs_base.store(gs, Ordering::Relaxed);
    }

    /// Set the user GS base of the calling thread (this thread, current
    /// here).
    pub fn set_gs_base(&self, base: u64) {
        self.gs_base.store(base, Ordering::Relaxed);
        me().gs_base.store(base, Ordering::Relaxed);
        arch::set_user_gs_base(base);
    }

    /// Keep the thread on `cpu` (or anywhere with `None`).
    pub fn set_pin(&self, cpu: Option<u32>) {
        self.pin.store(cpu.map_or(0, |c| c + 1), Ordering::Relaxed);
    }

    /// The CPU it is kept on, if any.
    pub fn pinned(&self) -> Option<u32> {
        self.pin.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Make this idle PPC worker (its owner calls this) serve `pending`
    /// from the registers `regs` sets (one access to the saved state).
    pub fn start_call(&self, regs: impl FnOnce(&mut TrapFrame), pending: super::ppc::Pending) {
        let mut s = self.saved.borrow();
        regs(&mut s.frame);
        s.ppc = Some(pending);
    }

    /// Take the PPC call this thread serves, if it is a server's worker.
    /// Only the thread's owner calls this (a lock here cost ~50 µs a call
    /// with the kernel emulated; the cell's check is one swap).
    pub fn take_ppc(&self) -> Option<super::ppc::Pending> {
        self.saved.borrow().ppc.take()
    }

    /// Record the PPC call this thread serves (its owner only).
    pub fn set_ppc(&self, pending: Option<super::ppc::Pending>) {
        self.saved.borrow().ppc = pending;
    }

    /// Set the saved `rax` (a blocked system call's result). Only the
    /// thread's owner (its waker) may call this.
    pub fn set_result(&self, rax: u64) {
        self.saved.borrow().frame.rax = rax;
    }
}

/// The registers of a thread about to start at `rip` with stack `rsp`
/// and `rdi`, `rsi` = `args`; everything else zero, interrupts on.
pub fn user_frame(rip: u64, rsp: u64, args: [u64; 2]) -> TrapFrame {
    TrapFrame {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rbp: 0,
        rdi: args[0],
        rsi: args[1],
        rdx: 0,
        rcx: 0,
        rbx: 0,
        rax: 0,
        vector: 0,
        error_code: 0,
        rip,
        cs: arch::USER_CS,
        rflags: 0x202,
        rsp,
        ss: arch::USER_DS,
    }
}

/// One CPU's scheduling state.
struct CpuSched {
    queue: SpinLock<VecDeque<Arc<Thread>>>,
    /// Threads in `queue` (read without the lock).
    queued: AtomicU32,
    /// The CPU is halted waiting for work.
    idle: AtomicBool,
    /// TSC at which the current thread's slice ends.
    slice_end: AtomicU64,
    /// The FS base loaded on this CPU (a wrmsr only when it changes).
    fs_base: AtomicU64,
    /// The user GS base loaded on this CPU (likewise).
    gs_base: AtomicU64,
    /// The thread this CPU ran left it inside a trap and no other was
    /// ready: the trap's end ([`finish_trap`]) waits for one (touched
    /// only by this CPU).
    switch_pending: AtomicBool,
}

static CPUS: [CpuSched; MAX_VCPUS] = [const {
    CpuSched {
        queue: SpinLock::new(VecDeque::new()),
        queued: AtomicU32::new(0),
        idle: AtomicBool::new(false),
        slice_end: AtomicU64::new(0),
        fs_base: AtomicU64::new(0),
        gs_base: AtomicU64::new(0),
        switch_pending: AtomicBool::new(false),
    }
}; MAX_VCPUS];

/// Set when process 1 has ended and every process is gone: CPUs leave
/// the scheduler.
static DONE: AtomicBool = AtomicBool::new(false);
/// Where `enqueue` starts looking for a CPU.
static CURSOR: AtomicU32 = AtomicU32::new(0);

fn me() -> &'static CpuSched {
    &CPUS[percpu::cpu_id() as usize]
}

/// The thread running on each CPU, if a process thread is.
static CURRENT: CpuLocal<Option<Arc<Thread>>> = CpuLocal::none();

/// The thread running on this CPU, if a process thread is.
pub fn current() -> Option<Arc<Thread>> {
    CURRENT.get_clone(&NoPreempt::here())
}

/// Take this CPU's current thread off it.
fn take_current_thread() -> Option<Arc<Thread>> {
    CURRENT.take(&NoPreempt::here())
}

/// Queue `t` to run: on an idle CPU if there is one (woken by IPI),
/// else on the CPU with the shortest queue.
pub fn enqueue(t: Arc<Thread>) {
    if let Some(cpu) = t.pinned() {
        enqueue_on(cpu, t);
        return;
    }
    let n = smp::ncpus();
    let start = CURSOR.fetch_add(1, Ordering::Relaxed) % n;
    let mut best = start;
    let mut best_len = u32::MAX;
    for i in 0..n {
        let c = (start + i) % n;
        let cs = &CPUS[c as usize];
        if cs.idle.load(Ordering::Acquire) && cs.queued.load(Ordering::Relaxed) == 0 {
            best = c;
            break;
        }
        let len = cs.queued.load(Ordering::Relaxed);
        if len < best_len {
            best = c;
            best_len = len;
        }
    }
    enqueue_on(best, t);
}

/// Queue `t` on `cpu` and wake that CPU.
pub fn enqueue_on(cpu: u32, t: Arc<Thread>) {
    let cs = &CPUS[cpu as usize];
    {
        let mut q = cs.queue.lock();
        q.push_back(t);
        cs.queued.fetch_add(1, Ordering::Release);
    }
    if cpu != percpu::cpu_id() {
        arch::send_ipi(cpu, VECTOR_WAKEUP);
    }
}

/// The next thread for this CPU: its own queue's front, else another
/// queue's back.
fn pick() -> Option<Arc<Thread>> {
    let mine = me();
    if mine.queued.load(Ordering::Acquire) > 0
        && let Some(t) = take(mine, true)
    {
        return Some(t);
    }
    let n = smp::ncpus();
    let id = percpu::cpu_id();
    for i in 1..n {
        let cs = &CPUS[((id + i) % n) as usize];
        if cs.queued.load(Ordering::Acquire) > 0
            && let Some(t) = take(cs, false)
        {
            return Some(t);
        }
    }
    None
}

fn take(cs: &CpuSched, front: bool) -> Option<Arc<Thread>> {
    let mut q = cs.queue.lock();
    // Another CPU steals from the back, never a pinned thread.
    if !front && q.back().is_some_and(|t| t.pinned().is_some()) {
        return None;
    }
    let t = if front { q.pop_front() } else { q.pop_back() }?;
    cs.queued.fetch_sub(1, Ordering::Relaxed);
    Some(t)
}

/// Save the current thread's registers (from `frame`) and FPU state and
/// take it off this CPU; the caller decides where it goes.
pub fn take_current(frame: &TrapFrame) -> Arc<Thread> {
    let t = take_current_thread().expect("a current thread");
    {
        let mut s = t.saved.borrow();
        s.frame = *frame;
        s.fpu.save();
    }
    t
}

/// Drop the current thread without saving it (it has ended).
pub fn drop_current() -> Option<Arc<Thread>> {
    take_current_thread()
}

/// Make `t` this CPU's current thread: its address space, its FPU state,
/// its registers (into `frame`), a fresh slice.
fn install(t: Arc<Thread>, frame: &mut TrapFrame) {
    let mine = me();
    t.memory().activate();
    let fs = t.fs_base();
    if mine.fs_base.load(Ordering::Relaxed) != fs {
        mine.fs_base.store(fs, Ordering::Relaxed);
        arch::set_fs_base(fs);
    }
    let gs = t.gs_base();
    if mine.gs_base.load(Ordering::Relaxed) != gs {
        mine.gs_base.store(gs, Ordering::Relaxed);
        arch::set_user_gs_base(gs);
    }
    {
        let s = t.saved.borrow();
        s.fpu.restore();
        *frame = s.frame;
    }
    mine.slice_end.store(
        arch::read_tsc() + crate::time::ns_to_ticks(SLICE_NS),
        Ordering::Relaxed,
    );
    let slice_end = if mine.queued.load(Ordering::Relaxed) > 0 {
        mine.slice_end.load(Ordering::Relaxed)
    } else {
        u64::MAX
    };
    let deadline = slice_end.min(super::futex::next_deadline().unwrap_or(u64::MAX));
    if deadline != u64::MAX {
        arch::set_timer_deadline(deadline);
    }
    crate::trace::log(k42_abi::trace::ev::sched::switch(
        t.process.pid as u64,
        t.tid as u64,
    ));
    CURRENT.set(&NoPreempt::here(), Some(t));
}

/// A thread this CPU may run now, if one is queued (threads of killed
/// processes found on the way end, those of stopped processes are
/// parked). Called with no current thread, in the kernel's address space.
fn ready_thread() -> Option<Arc<Thread>> {
    while let Some(t) = pick() {
        if t.process.killed() {
            super::thread_ended(t);
            continue;
        }
        let Some(t) = super::job::park_if_stopped(t) else {
            continue;
        };
        return Some(t);
    }
    None
}

/// Wait (interrupts on, halting) for a thread this CPU may run; `None`
/// once the scheduler is done. Called with no current thread.
fn next_thread() -> Option<Arc<Thread>> {
    crate::mm::paging::activate_kernel();
    let mine = me();
    loop {
        if let Some(t) = ready_thread() {
            return Some(t);
        }
        if DONE.load(Ordering::Acquire) {
            return None;
        }
        mine.idle.store(true, Ordering::Release);
        arch::disable_interrupts();
        if mine.queued.load(Ordering::Acquire) == 0 && !DONE.load(Ordering::Acquire) {
            // A futex wait's deadline wakes an idle CPU to expire it.
            if let Some(d) = super::futex::next_deadline() {
                arch::set_timer_deadline(d);
            }
            crate::trace::log(k42_abi::trace::ev::idle::enter());
            arch::enable_and_halt();
            crate::trace::log(k42_abi::trace::ev::idle::exit());
        }
        arch::enable_interrupts();
        mine.idle.store(false, Ordering::Release);
        crate::cobj::quiescent();
        super::futex::expire();
        arch::disable_interrupts();
    }
}

/// Switch this CPU, inside a trap from user mode with no current thread
/// left, to the next runnable thread by rewriting `frame`. When none is
/// ready this only notes that the CPU must wait: the wait happens at the
/// trap's end ([`finish_trap`]), once the system call or fault handler
/// that got here has returned. Halting in here instead kept the
/// handler's locals alive for as long as the CPU stayed idle — a pipe
/// end a blocked reader's call held (so the writer never saw the read
/// end close and waited for ever), the blocked thread and its memory.
pub fn switch_to_next(frame: &mut TrapFrame) {
    crate::mm::paging::activate_kernel();
    match ready_thread() {
        Some(t) => {
            arch::disable_interrupts();
            install(t, frame);
        }
        None => me().switch_pending.store(true, Ordering::Relaxed),
    }
}

/// The end of a trap from user mode: if its thread left this CPU with no
/// other ready ([`switch_to_next`]), wait for one and make it the thread
/// `frame` resumes; when the scheduler is done, leave user mode for good.
/// Called by the trap's dispatcher once every handler has returned, so
/// that nothing a handler held stays held while the CPU is idle.
pub fn finish_trap(frame: &mut TrapFrame) {
    if super::job::any_stopped() && current().is_some_and(|t| t.process.is_stopped()) {
        // Its process was stopped: park the thread rather than resume it.
        let t = take_current(frame);
        if let Some(t) = super::job::park_if_stopped(t) {
            // It continued meanwhile: it runs on.
            enqueue_on(percpu::cpu_id(), t);
        }
        switch_to_next(frame);
    }
    if !me().switch_pending.swap(false, Ordering::Relaxed) {
        return;
    }
    let Some(t) = next_thread() else {
        arch::disable_interrupts();
        arch::return_to_kernel(0);
    };
    arch::disable_interrupts();
    install(t, frame);
}

/// A timer or wakeup interrupt arrived while this CPU ran user code: a
/// quiescent point; end a killed thread; preempt when the slice is used
/// up and others wait here.
pub fn on_user_interrupt(frame: &mut TrapFrame) {
    crate::cobj::quiescent();
    super::futex::expire();
    let Some(killed) = current().map(|t| t.process.killed()) else {
        return;
    };
    if killed {
        let t = drop_current().expect("current");
        super::thread_ended(t);
        switch_to_next(frame);
        return;
    }
    let mine = me();
    let futex_deadline = super::futex::next_deadline().unwrap_or(u64::MAX);
    if mine.queued.load(Ordering::Acquire) == 0 {
        if futex_deadline != u64::MAX {
            arch::set_timer_deadline(futex_deadline);
        }
        return;
    }
    let end = mine.slice_end.load(Ordering::Relaxed);
    if arch::read_tsc() < end {
        arch::set_timer_deadline(end.min(futex_deadline));
        return;
    }
    yield_current(frame);
}

/// Give the CPU to the next thread in this CPU's queue, if any: the
/// current thread goes to the back.
pub fn yield_current(frame: &mut TrapFrame) -> bool {
    let mine = me();
    if mine.queued.load(Ordering::Acquire) == 0 {
        return false;
    }
    let Some(next) = take(mine, true) else {
        return false;
    };
    let t = take_current(frame);
    enqueue_on(percpu::cpu_id(), t);
    install(next, frame);
    true
}

/// Make `t` this CPU's thread at once (a PPC hand-off: the caller or the
/// server's worker), rewriting `frame`; the previous thread has been
/// taken off already.
pub fn hand_off(frame: &mut TrapFrame, t: Arc<Thread>) {
    install(t, frame);
}

/// Pin the current thread to `cpu` (or unpin it with `None`); if it runs
/// elsewhere, move it there and switch to the next thread here.
pub fn pin_current(frame: &mut TrapFrame, cpu: Option<u32>) {
    let t = current().expect("a current thread");
    t.set_pin(cpu);
    match cpu {
        Some(c) if c != percpu::cpu_id() => {
            let t = take_current(frame);
            enqueue_on(c, t);
            switch_to_next(frame);
        }
        _ => {}
    }
}

/// Run the scheduler on this CPU until it is done (every CPU calls this;
/// the boot CPU has queued process 1 first).
pub fn cpu_main() {
    let Some(t) = next_thread() else { return };
    arch::disable_interrupts();
    let mut frame = user_frame(0, 0, [0, 0]);
    install(t, &mut frame);
    arch::enter_thread(&frame);
    crate::mm::paging::activate_kernel();
}

/// Prepare a new scheduler run.
pub fn reset() {
    DONE.store(false, Ordering::Release);
}

/// Every process has ended: wake all CPUs so that they leave.
pub fn finish() {
    DONE.store(true, Ordering::Release);
    if smp::ncpus() > 1 {
        arch::broadcast_ipi(VECTOR_WAKEUP);
    }
}

/// Wake every CPU (a process was killed: its threads must notice).
pub fn poke_all() {
    if smp::ncpus() > 1 {
        arch::broadcast_ipi(VECTOR_WAKEUP);
    }
}
