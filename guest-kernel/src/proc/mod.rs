//! Processes: user programs from the image, each in its own address
//! space ([`memory::Memory`]), with threads scheduled on every CPU
//! ([`sched`]), a parent that waits for them, and faults that end the
//! process, never the kernel.
//!
//! Life cycle:
//!
//! ```text
//! spawn/fork ─► alive (threads ≥ 1) ─► last thread ends (exit, fault,
//!   kill) ─► memory freed, parent told ─► zombie until the parent waits
//!   (or reaped at once if the parent is gone) ─► slot free
//! ```
//!
//! The process table counts every process from creation until it is
//! reaped, zombies included, against the `proc.max` limit, so a fork bomb
//! meets `ProcessLimit` instead of exhausting the kernel. Process 1
//! (`init=` on the command line) is started by [`run_init`]; when it ends,
//! every remaining process is killed, and once all are gone the CPUs
//! leave the scheduler and the kernel gets init's status.
#![deny(unsafe_code)]

pub mod fcm;
pub mod files;
pub mod futex;
pub mod job;
pub mod linux;
pub mod memory;
pub mod pipe;
pub mod ppc;
pub mod sched;
pub mod signal;
pub mod tty;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use k42_abi::linux::ThreadStart;
use k42_abi::syscall::{
    MAX_ARGS_LEN, ProgramInfo, SPAWN_PIN, SPAWN_REPLICATED, SyscallError, USER_BASE, USER_TOP,
    status,
};

use crate::arch::TrapFrame;
use crate::sync::SpinLock;
use crate::{arch, percpu, smp};
use memory::Memory;
use sched::Thread;

/// The largest `proc.max`.
pub const MAX_PROCS: u32 = 1024;
/// A status word meaning "still running".
const RUNNING: u64 = u64::MAX;

/// A process.
pub struct Process {
    pub pid: u32,
    /// The program it runs (its image module name).
    pub name: SpinLock<String>,
    /// Parent's pid; 0 when the parent has ended.
    parent: AtomicU32,
    state: SpinLock<State>,
    /// The status word the process ends with once killed (or exiting
    /// while other threads run); RUNNING otherwise.
    kill_status: AtomicU64,
    /// The status of the latest thread that ended itself with
    /// `LinuxThreadExit` (RUNNING: none): the process's, when that was
    /// its last thread, even if two ended at once.
    thread_exit_status: AtomicU64,
    /// A server's main thread, parked in `PpcServe` for good.
    parked: SpinLock<Option<Arc<Thread>>>,
    /// Its file handles.
    files: SpinLock<files::Handles>,
    /// Its Linux signal page's frame, once it runs a Linux program (0
    /// before); see [`signal`].
    signals: SpinLock<u64>,
    /// Its process group (a new process's own pid; a fork child's
    /// parent's), for signals to a group and the terminal's foreground.
    pgid: AtomicU32,
    /// Whether it is stopped (job control; read without the lock).
    stopped: AtomicBool,
    /// Its job-control state: stopped, parked threads, a change to report.
    job: SpinLock<job::Job>,
}

struct State {
    threads: u32,
    next_tid: u32,
    ended: bool,
    children: Vec<u32>,
    /// Children that ended and were not waited for: (pid, status word).
    zombies: Vec<(u32, u64)>,
    /// A thread blocked in wait, and the pid it waits for (0: any).
    waiter: Option<(Arc<Thread>, u32)>,
    /// That waiter's [`k42_abi::syscall::wait`] options.
    wait_options: u64,
}

impl Process {
    /// Whether it has been killed (its threads end at their next kernel
    /// entry or when next scheduled).
    pub fn killed(&self) -> bool {
        self.kill_status.load(Ordering::Acquire) != RUNNING
    }

    /// End the process with exit status `code` (its threads end at their
    /// next kernel entry or when next scheduled).
    pub fn exit_with(&self, code: u64) {
        self.kill_with(code.min(status::EXITED_MAX));
    }

    /// Whether it is stopped (job control, [`job`]).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// A thread ends itself with exit status `code`: the process's
    /// status if it is the last thread.
    pub fn thread_exiting(&self, code: u64) {
        self.thread_exit_status
            .store(code.min(status::EXITED_MAX), Ordering::Release);
    }

    /// Threads it has now.
    pub fn thread_count(&self) -> u32 {
        self.state.lock().threads
    }

    fn kill_with(&self, word: u64) {
        let _ =
            self.kill_status
                .compare_exchange(RUNNING, word, Ordering::AcqRel, Ordering::Acquire);
        wake_parked(self);
        job::killed(self);
        futex::release_process(self);
    }
}

/// Queue `p`'s parked server thread, if any, so that it ends (`p` was
/// killed).
fn wake_parked(p: &Process) {
    if let Some(t) = p.parked.lock().take() {
        sched::enqueue(t);
    }
}

struct Table {
    procs: BTreeMap<u32, Arc<Process>>,
    next_pid: u32,
    /// Processes counted against the limit: alive or zombie.
    live: u32,
}

static TABLE: SpinLock<Table> = SpinLock::new(Table {
    procs: BTreeMap::new(),
    next_pid: 1,
    live: 0,
});
/// Status word of process 1 once it ended.
static INIT_STATUS: AtomicU64 = AtomicU64::new(RUNNING);
/// Set while a scheduler run is in progress.
static ACTIVE: AtomicBool = AtomicBool::new(false);

fn limit() -> u32 {
    crate::boot::options().proc_max
}

/// Processes alive now (not yet reaped).
pub fn live_processes() -> u32 {
    TABLE.lock().live
}

pub fn lookup(pid: u32) -> Option<Arc<Process>> {
    TABLE.lock().procs.get(&pid).cloned()
}

/// Count a new process against the limit and give it a pid.
fn reserve_pid() -> Result<u32, SyscallError> {
    let mut t = TABLE.lock();
    if t.live >= limit() {
        return Err(SyscallError::ProcessLimit);
    }
    t.live += 1;
    let pid = t.next_pid;
    t.next_pid += 1;
    Ok(pid)
}

fn unreserve() {
    TABLE.lock().live -= 1;
}

/// A process that ended was reaped: its slot is free.
fn reaped(pid: u32) {
    let mut t = TABLE.lock();
    t.procs.remove(&pid);
    t.live -= 1;
}

/// What a new process takes from its parent.
struct Inherited {
    handles: files::Handles,
    /// Its signal page (0: none).
    signal_page: u64,
    /// Whether it joins the parent's process group (else its own).
    inherit_group: bool,
}

/// Make process `pid` (reserved) with memory `mem`; returns its first
/// thread (made by `first`), not yet queued.
fn make_process(
    pid: u32,
    parent: u32,
    name: &str,
    mem: Memory,
    from_parent: Inherited,
    first: impl FnOnce(Arc<Process>, Arc<Memory>) -> Arc<Thread>,
) -> Arc<Thread> {
    let Inherited {
        handles,
        signal_page,
        inherit_group,
    } = from_parent;
    let p = Arc::new(Process {
        pid,
        name: SpinLock::new(String::from(name)),
        parent: AtomicU32::new(parent),
        state: SpinLock::new(State {
            threads: 1,
            next_tid: 2,
            ended: false,
            children: Vec::new(),
            zombies: Vec::new(),
            waiter: None,
            wait_options: 0,
        }),
        kill_status: AtomicU64::new(RUNNING),
        thread_exit_status: AtomicU64::new(RUNNING),
        parked: SpinLock::new(None),
        files: SpinLock::new(handles),
        signals: SpinLock::new(signal_page),
        pgid: AtomicU32::new(lookup(parent).map_or(pid, |pp| {
            if inherit_group {
                pp.pgid.load(Ordering::Acquire)
            } else {
                pid
            }
        })),
        stopped: AtomicBool::new(false),
        job: SpinLock::new(job::Job::default()),
    });
    TABLE.lock().procs.insert(pid, p.clone());
    if let Some(pp) = lookup(parent) {
        pp.state.lock().children.push(pid);
    }
    first(p, Arc::new(mem))
}

/// The program info for a new process.
fn info() -> ProgramInfo {
    ProgramInfo {
        cpus: smp::ncpus(),
        tsc_khz: crate::time::tsc_khz(),
        epoch_ns: crate::time::epoch_ns(),
        ..Default::default()
    }
}

/// Start program `name` with argument block `args` as a child of
/// `parent`; returns the new pid.
pub fn spawn(parent: u32, name: &str, args: &[u8], flags: u64) -> Result<u32, SyscallError> {
    let file = crate::user::module(name).ok_or(SyscallError::NoSuchProgram)?;
    let pin = (flags & SPAWN_PIN != 0).then_some(flags >> 32);
    if flags & 0xffff_ffff & !(SPAWN_REPLICATED | SPAWN_PIN) != 0
        || (flags & SPAWN_PIN == 0 && flags >> 32 != 0)
        || pin.is_some_and(|c| c >= smp::ncpus() as u64)
        || args.len() as u64 > MAX_ARGS_LEN
    {
        return Err(SyscallError::InvalidArgument);
    }
    let pid = reserve_pid()?;
    let (mem, entry) = match Memory::load(
        file,
        args,
        info(),
        flags & SPAWN_REPLICATED != 0,
        crate::boot::options().proc_mem,
    ) {
        Ok(m) => m,
        Err(e) => {
            unreserve();
            return Err(e);
        }
    };
    let t = make_process(
        pid,
        parent,
        name,
        mem,
        Inherited {
            handles: files::Handles::default(),
            signal_page: 0,
            inherit_group: false,
        },
        |p, m| Thread::new(1, p, m, entry, USER_TOP, [k42_abi::syscall::USER_INFO, 0]),
    );
    t.set_pin(pin.map(|c| c as u32));
    crate::trace::log(k42_abi::trace::ev::sched::spawn(pid as u64, parent as u64));
    sched::enqueue(t);
    Ok(pid)
}

/// A thread has ended (it is nobody's current any more): count it out;
/// the last one ends the process.
pub fn thread_ended(t: Arc<Thread>) {
    ppc::worker_ended(&t);
    let p = t.process.clone();
    drop(t);
    count_out(&p);
}

/// One thread of `p` fewer; the last one ends the process.
fn count_out(p: &Arc<Process>) {
    let last = {
        let mut s = p.state.lock();
        s.threads -= 1;
        s.threads == 0
    };
    if last {
        process_ended(p);
    }
}

/// The last thread of `p` has ended: free its memory, tell its parent,
/// orphan its children.
fn process_ended(p: &Arc<Process>) {
    let word = match p.kill_status.load(Ordering::Acquire) {
        RUNNING => match p.thread_exit_status.load(Ordering::Acquire) {
            RUNNING => status::KILLED,
            w => w,
        },
        w => w,
    };
    // Its memory went with its last thread (a server's, with its
    // workers, below).
    ppc::process_ended(p);
    let (children, zombies) = {
        let mut s = p.state.lock();
        s.ended = true;
        (
            core::mem::take(&mut s.children),
            core::mem::take(&mut s.zombies),
        )
    };
    // After `ended` (see FileGrant); the objects may go, outside the lock.
    let handles = p.files.lock().clear();
    drop(handles);
    signal::process_ended(p);
    for c in children {
        if let Some(cp) = lookup(c) {
            cp.parent.store(0, Ordering::Release);
        }
    }
    for (z, _) in zombies {
        reaped(z);
    }
    crate::trace::log(k42_abi::trace::ev::sched::exit(p.pid as u64, word));
    if p.pid == 1 {
        INIT_STATUS.store(word, Ordering::Release);
        kill_all();
    }
    notify_parent(p, word);
    if TABLE.lock().live == 0 && INIT_STATUS.load(Ordering::Acquire) != RUNNING {
        sched::finish();
    }
}

/// Tell `p`'s parent it ended with status `word` (or reap it at once if
/// the parent is gone).
fn notify_parent(p: &Arc<Process>, word: u64) {
    let parent = p.parent.load(Ordering::Acquire);
    let Some(pp) = (parent != 0).then(|| lookup(parent)).flatten() else {
        reaped(p.pid);
        return;
    };
    let mut s = pp.state.lock();
    if s.ended {
        drop(s);
        reaped(p.pid);
        return;
    }
    s.children.retain(|&c| c != p.pid);
    let woken = match s.waiter.take() {
        Some((t, want)) if want == 0 || want == p.pid => {
            drop(s);
            Some(t)
        }
        other => {
            s.waiter = other;
            s.zombies.push((p.pid, word));
            drop(s);
            None
        }
    };
    // A Linux parent also gets SIGCHLD (a k42 parent has no signal
    // page), before a waiter runs: one that waited sees it pending.
    let (code, child_status) = signal::child_end(word);
    signal::send_child_changed(&pp, code, p.pid, child_status);
    if let Some(t) = woken {
        t.set_result((p.pid as u64) << 16 | word);
        reaped(p.pid);
        sched::enqueue(t);
    }
}

/// Init ended: kill every other process.
fn kill_all() {
    let all: Vec<Arc<Process>> = TABLE.lock().procs.values().cloned().collect();
    for p in all {
        p.kill_with(status::KILLED);
        let waiter = p.state.lock().waiter.take();
        if let Some((t, _)) = waiter {
            sched::enqueue(t);
        }
    }
    sched::poke_all();
}

/// Report a process killed by a fault, one line (the address only for
/// a page fault, where it means something).
fn report_fault(p: &Process, vector: u8, rip: u64, address: u64, error: u64) {
    let name = p.name.lock().clone();
    let what = arch::exception_name(vector);
    if vector == 14 {
        crate::println!(
            "k42: process {} ({name}) killed by {what} at rip {rip:#x}, address {address:#x}, error {error:#x}",
            p.pid
        );
    } else {
        crate::println!(
            "k42: process {} ({name}) killed by {what} at rip {rip:#x}, error {error:#x}",
            p.pid
        );
    }
}

/// An exception in user mode on this CPU. Returns false if no process
/// thread runs here (a kernel-run program's fault). Otherwise resolves
/// a page fault, or ends the process and switches to the next thread.
pub fn on_user_exception(frame: &mut TrapFrame, address: u64) -> bool {
    let Some(t) = sched::current() else {
        return false;
    };
    let vector = frame.vector as u8;
    const PAGE_FAULT: u8 = 14;
    if vector == PAGE_FAULT {
        let write = frame.error_code & 2 != 0;
        let exec = frame.error_code & 16 != 0;
        crate::trace::log(k42_abi::trace::ev::sched::fault_taken(
            t.process.pid as u64,
            address,
        ));
        match t.memory().fault(address, write, exec) {
            Ok(()) => {
                crate::trace::log(k42_abi::trace::ev::sched::fault(
                    t.process.pid as u64,
                    address,
                ));
                return true;
            }
            Err(memory::FaultError::OutOfMemory) => {
                crate::println!(
                    "k42: process {} ({}) killed: out of memory at address {:#x}",
                    t.process.pid,
                    t.process.name.lock().as_str(),
                    address
                );
                t.process.kill_with(status::OUT_OF_MEMORY);
                // The last reference but the CPU's goes before the thread
                // ends, so that its memory is freed before the parent hears.
                drop(t);
                end_current(frame);
                return true;
            }
            Err(memory::FaultError::Segv) => {}
        }
    }
    const GENERAL_PROTECTION: u8 = 13;
    if (vector == PAGE_FAULT || vector == GENERAL_PROTECTION)
        && let Some(fixup) = signal::uaccess_fixup(&t.process, frame.rip)
    {
        // The personality touched a bad pointer a Linux program passed:
        // its user-access routine returns EFAULT.
        frame.rip = fixup;
        return true;
    }
    // The program's own handler, if it catches the fault's signal.
    const INVALID_OPCODE: u8 = 6;
    const DIVIDE_ERROR: u8 = 0;
    use linux_raw_sys::general as lx;
    let raised = match vector {
        PAGE_FAULT if t.memory().has_region(address) => {
            Some((lx::SIGSEGV, lx::SEGV_ACCERR, address))
        }
        PAGE_FAULT => Some((lx::SIGSEGV, lx::SEGV_MAPERR, address)),
        GENERAL_PROTECTION => Some((lx::SIGSEGV, lx::SI_KERNEL, 0)),
        INVALID_OPCODE => Some((lx::SIGILL, lx::ILL_ILLOPN, frame.rip)),
        DIVIDE_ERROR => Some((lx::SIGFPE, lx::FPE_INTDIV, frame.rip)),
        _ => None,
    };
    if let Some((sig, code, addr)) = raised
        && signal::fault_to_handler(&t.process, frame, sig, code, addr)
    {
        return true;
    }
    report_fault(&t.process, vector, frame.rip, address, frame.error_code);
    t.process.kill_with(status::FAULT | vector as u64);
    drop(t);
    end_current(frame);
    true
}

/// End the current thread and run the next one.
pub fn end_current(frame: &mut TrapFrame) {
    let t = sched::drop_current().expect("a current thread");
    let others = t.process.state.lock().threads > 1;
    if others {
        sched::poke_all();
    }
    crate::mm::paging::activate_kernel();
    thread_ended(t);
    sched::switch_to_next(frame);
}

/// Fork thread `t`'s (single-threaded) process; the child's pid.
pub fn fork(t: &Arc<Thread>, frame: &TrapFrame) -> Result<u32, SyscallError> {
    let p = &t.process;
    if p.state.lock().threads > 1 {
        return Err(SyscallError::MultiThreaded);
    }
    let pid = reserve_pid()?;
    let mem = match t.memory().fork() {
        Ok(m) => m,
        Err(e) => {
            unreserve();
            return Err(e);
        }
    };
    let signal_page = match signal::page_for_child(p) {
        Ok(pa) => pa,
        Err(e) => {
            unreserve();
            return Err(e);
        }
    };
    if let Some(pa) = signal_page
        && let Err(e) = mem.map_signal_page(pa)
    {
        fcm::release(pa);
        unreserve();
        return Err(e);
    }
    let name = p.name.lock().clone();
    let handles = p.files.lock().clone();
    let signal_page = signal_page.unwrap_or(0);
    let inherited = Inherited {
        handles,
        signal_page,
        inherit_group: true,
    };
    let child = make_process(pid, p.pid, &name, mem, inherited, |cp, m| {
        let c = Thread::from_frame(1, cp, m, frame);
        c.set_result(0);
        c
    });
    crate::trace::log(k42_abi::trace::ev::sched::spawn(pid as u64, p.pid as u64));
    sched::enqueue(child);
    Ok(pid)
}

/// Replace thread `t`'s (single-threaded) process's program with `name`
/// and argument block `block`; on success `frame` starts the new one.
pub fn exec(
    t: &Arc<Thread>,
    name: &str,
    block: &[u8],
    frame: &mut TrapFrame,
) -> Result<(), SyscallError> {
    let p = &t.process;
    if p.state.lock().threads > 1 {
        return Err(SyscallError::MultiThreaded);
    }
    let file = crate::user::module(name).ok_or(SyscallError::NoSuchProgram)?;
    let (mem, entry) = Memory::load(
        file,
        block,
        info(),
        t.memory().replicated(),
        crate::boot::options().proc_mem,
    )?;
    replace_image(
        t,
        String::from(name),
        mem,
        entry,
        USER_TOP,
        [k42_abi::syscall::USER_INFO, 0],
        frame,
    );
    Ok(())
}

/// The end of a successful exec: thread `t` gives way to a new thread
/// with the same id running at `entry` with stack `rsp` and `args` in
/// `mem` (the thread count stays); the old memory goes with the last
/// reference to the old thread.
fn replace_image(
    t: &Arc<Thread>,
    name: String,
    mem: Memory,
    entry: u64,
    rsp: u64,
    args: [u64; 2],
    frame: &mut TrapFrame,
) {
    let p = &t.process;
    crate::mm::paging::activate_kernel();
    *p.name.lock() = name;
    let new = Thread::new(t.tid, p.clone(), Arc::new(mem), entry, rsp, args);
    new.set_pin(t.pinned());
    drop(sched::drop_current());
    sched::hand_off(frame, new);
}

/// Wait for a child; `Ok(None)` when the thread blocked (and this CPU
/// switched to another thread).
pub fn wait(
    t: &Arc<Thread>,
    which: u64,
    options: u64,
    frame: &mut TrapFrame,
) -> Result<Option<u64>, SyscallError> {
    wait_or_not(t, which, options, Some(frame))
}

/// As [`wait`], but `Ok(Some(0))` at once when no such child has ended
/// (`frame` None: never block).
pub fn try_wait(t: &Arc<Thread>, which: u64, options: u64) -> Result<u64, SyscallError> {
    Ok(wait_or_not(t, which, options, None)?.unwrap_or(0))
}

fn wait_or_not(
    t: &Arc<Thread>,
    which: u64,
    options: u64,
    frame: Option<&mut TrapFrame>,
) -> Result<Option<u64>, SyscallError> {
    use k42_abi::syscall::wait;
    let p = &t.process;
    let want = if which == u64::MAX { 0 } else { which as u32 };
    if which != u64::MAX && (which == 0 || which > u32::MAX as u64) {
        return Err(SyscallError::NoSuchProcess);
    }
    if options & !(wait::STOPPED | wait::CONTINUED) != 0 {
        return Err(SyscallError::InvalidArgument);
    }
    let mut s = p.state.lock();
    if let Some(i) = s.zombies.iter().position(|&(z, _)| want == 0 || z == want) {
        let (z, word) = s.zombies.swap_remove(i);
        drop(s);
        reaped(z);
        return Ok(Some((z as u64) << 16 | word));
    }
    if want != 0 && !s.children.contains(&want) {
        return Err(SyscallError::NoSuchProcess);
    }
    if s.children.is_empty() {
        return Err(SyscallError::NoChildren);
    }
    if options != 0 {
        // A child that stopped or continued (parent's lock, then the
        // child's job lock: the order job.rs keeps).
        for &c in &s.children {
            if let Some(cp) = lookup(c)
                && let Some(word) = job::take_report(&cp, want, options)
            {
                return Ok(Some(u64::from(c) << 16 | word));
            }
        }
    }
    let Some(frame) = frame else {
        return Ok(None);
    };
    if s.waiter.is_some() {
        // Another thread of this process is already waiting.
        return Err(SyscallError::InvalidArgument);
    }
    if signal::deliverable(p) {
        return Err(SyscallError::Interrupted);
    }
    let me = sched::take_current(frame);
    s.waiter = Some((me, want));
    s.wait_options = options;
    drop(s);
    sched::switch_to_next(frame);
    Ok(None)
}

/// Process `pid`'s group, `0` meaning the caller `p`.
pub fn get_pgid(p: &Process, pid: u32) -> Result<u32, SyscallError> {
    if pid == 0 {
        return Ok(p.pgid.load(Ordering::Acquire));
    }
    Ok(lookup(pid)
        .ok_or(SyscallError::NoSuchProcess)?
        .pgid
        .load(Ordering::Acquire))
}

/// Put process `pid` (0: `p`; else `p` or its child) in group `pgid`
/// (0: `pid` itself).
pub fn set_pgid(p: &Process, pid: u32, pgid: u32) -> Result<(), SyscallError> {
    let target = if pid == 0 || pid == p.pid {
        lookup(p.pid).ok_or(SyscallError::NoSuchProcess)?
    } else {
        let t = lookup(pid).ok_or(SyscallError::NoSuchProcess)?;
        if t.parent.load(Ordering::Acquire) != p.pid {
            return Err(SyscallError::NoSuchProcess);
        }
        t
    };
    let pgid = if pgid == 0 { target.pid } else { pgid };
    target.pgid.store(pgid, Ordering::Release);
    Ok(())
}

/// The live processes of group `pgid`.
pub fn group(pgid: u32) -> Vec<Arc<Process>> {
    TABLE
        .lock()
        .procs
        .values()
        .filter(|p| p.pgid.load(Ordering::Acquire) == pgid)
        .cloned()
        .collect()
}

/// Kill process `pid`: the caller's child, or itself.
pub fn kill(p: &Arc<Process>, pid: u64) -> Result<(), SyscallError> {
    let pid = u32::try_from(pid).map_err(|_| SyscallError::NoSuchProcess)?;
    let target = lookup(pid).ok_or(SyscallError::NoSuchProcess)?;
    if pid != p.pid && target.parent.load(Ordering::Acquire) != p.pid {
        return Err(SyscallError::NoSuchProcess);
    }
    terminate(&target, status::KILLED);
    Ok(())
}

/// End process `target` with status word `word`: its threads end at
/// their next kernel entry, or now if they are blocked.
fn terminate(target: &Process, word: u64) {
    target.kill_with(word);
    let waiter = target.state.lock().waiter.take();
    if let Some((w, _)) = waiter {
        sched::enqueue(w);
    }
    sched::poke_all();
}

/// A new thread of `p` in `memory` (its memory) at `entry` with stack `stack` and argument `arg`,
/// kept on CPU `pin - 1` unless `pin` is 0; its thread id.
pub fn thread_create(
    p: &Arc<Process>,
    memory: Arc<Memory>,
    entry: u64,
    stack: u64,
    arg: u64,
    pin: u64,
) -> Result<u32, SyscallError> {
    if !(USER_BASE..USER_TOP).contains(&entry) || !(USER_BASE..=USER_TOP).contains(&stack) {
        return Err(SyscallError::BadAddress);
    }
    let pin = pin.checked_sub(1);
    if pin.is_some_and(|c| c >= smp::ncpus() as u64) {
        return Err(SyscallError::InvalidArgument);
    }
    let tid = {
        let mut s = p.state.lock();
        if s.ended || p.killed() {
            return Err(SyscallError::NoSuchProcess);
        }
        s.threads += 1;
        s.next_tid += 1;
        s.next_tid - 1
    };
    let t = Thread::new(tid, p.clone(), memory, entry, stack, [arg, 0]);
    t.set_pin(pin.map(|c| c as u32));
    sched::enqueue(t);
    Ok(tid)
}

/// A new thread of thread `t`'s Linux process from `start` (Linux
/// `clone` for a thread): registers as after `syscall` with `rax` 0,
/// the parent's FPU state, its own FS and GS bases. Its thread id is a
/// number from the pid sequence (no process gets it), written to each
/// nonzero `set_tid` address before it runs; returns it.
pub fn linux_clone(t: &Arc<Thread>, start: &ThreadStart) -> Result<u32, SyscallError> {
    let r = &start.regs;
    // iretq must not fault in the kernel: a canonical user rip and stack.
    if !(USER_BASE..USER_TOP).contains(&r.rip)
        || r.rsp > USER_TOP
        || (start.fs_base >= USER_TOP && start.fs_base != u64::MAX)
        || start.gs_base >= USER_TOP
    {
        return Err(SyscallError::BadAddress);
    }
    let p = &t.process;
    let tid = {
        let mut tab = TABLE.lock();
        let id = tab.next_pid;
        tab.next_pid += 1;
        id
    };
    for &at in start.set_tid.iter().filter(|&&a| a != 0) {
        crate::mm::user::copy_out(t.memory(), at, &tid.to_le_bytes())?;
    }
    {
        let mut s = p.state.lock();
        if s.ended || p.killed() {
            return Err(SyscallError::NoSuchProcess);
        }
        s.threads += 1;
    }
    // Flags: the arithmetic ones and DF as the program had them, IF on.
    const KEPT_FLAGS: u64 = 0xcd5;
    let mut frame = sched::user_frame(r.rip, r.rsp, [r.rdi, r.rsi]);
    frame.rax = 0;
    frame.rdx = r.rdx;
    frame.r10 = r.r10;
    frame.r8 = r.r8;
    frame.r9 = r.r9;
    frame.rbx = r.rbx;
    frame.rbp = r.rbp;
    frame.r12 = r.r12;
    frame.r13 = r.r13;
    frame.r14 = r.r14;
    frame.r15 = r.r15;
    frame.rflags = (r.rflags & KEPT_FLAGS) | 0x202;
    frame.rcx = r.rip;
    frame.r11 = frame.rflags;
    let child = Thread::from_frame(tid, p.clone(), t.memory_arc(), &frame);
    let fs_base = match start.fs_base {
        u64::MAX => t.fs_base(),
        fs => fs,
    };
    child.init_bases(fs_base, start.gs_base);
    sched::enqueue(child);
    Ok(tid)
}

/// Run `program` as process 1/// Run `program` as process 1 with argument block `args` on every CPU
/// until it and every other process have ended; returns its status word.
pub fn run_init(program: &str, args: &[u8]) -> Result<u64, SyscallError> {
    assert!(percpu::cpu_id() == 0 && !ACTIVE.swap(true, Ordering::AcqRel));
    INIT_STATUS.store(RUNNING, Ordering::Release);
    sched::reset();
    TABLE.lock().next_pid = 1;
    let r = spawn(0, program, args, 0);
    if let Err(e) = r {
        ACTIVE.store(false, Ordering::Release);
        return Err(e);
    }
    smp::run_on_all(|_| sched::cpu_main());
    ACTIVE.store(false, Ordering::Release);
    Ok(INIT_STATUS.load(Ordering::Acquire))
}

/// Describe a status word: "exited with status N", "killed by ...".
pub fn describe_status(word: u64) -> String {
    use core::fmt::Write;
    let mut s = String::new();
    let _ = match word {
        0..=status::EXITED_MAX => write!(s, "exited with status {word}"),
        w if w & !0xff == status::FAULT => {
            write!(s, "killed by {}", arch::exception_name((w & 0xff) as u8))
        }
        w if w & !0xff == status::SIGNALED => {
            let sig = (w & 0xff) as usize;
            let name = signal_name(sig);
            write!(s, "killed by signal {sig} ({name})")
        }
        status::KILLED => write!(s, "killed"),
        status::OUT_OF_MEMORY => write!(s, "killed: out of memory"),
        w if w & !0xff == status::STOPPED => {
            write!(s, "stopped by signal {}", w & 0xff)
        }
        status::CONTINUED => write!(s, "continued"),
        w => write!(s, "ended with status word {w:#x}"),
    };
    s
}

/// The name of Linux signal `sig` ("SIGTERM"), or "unknown".
fn signal_name(sig: usize) -> &'static str {
    const NAMES: [&str; 32] = [
        "unknown",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    NAMES.get(sig).copied().unwrap_or("a real-time signal")
}
