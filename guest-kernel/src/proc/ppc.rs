//! Protected procedure calls (PPC, `k42_abi::syscall::ppc`): a call from
//! a thread into another process's server that stays on the caller's
//! CPU. The kernel takes the caller off the CPU, makes a worker thread of
//! the server's at its entry on the server's stack for this CPU, with the
//! caller's pid (set here, so unforgeable), the method, an argument and
//! the message copied into the server's buffer for this CPU; the worker's
//! `PpcReturn` hands the CPU straight back to the caller with the result
//! and the reply. No other CPU is involved, and no run queue.
//!
//! ```text
//! caller ──PpcCall──► [take caller off the CPU] ──► worker at entry (server's space)
//! caller ◄──────────── [hand the CPU back] ◄──PpcReturn── worker ends
//! ```
//!
//! Handles are (table slot, sequence number): a handle outliving its
//! server is `StaleHandle`, never the slot's next owner. A server that
//! dies during a call (fault, kill, exit) fails the call with
//! `ServerDied`; callers never hang on a dead server. One call per server
//! per CPU at a time (`Busy` otherwise). A server's main thread parks in
//! `PpcServe` for good, keeping the process alive.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

use k42_abi::syscall::ppc::{MAX_MESSAGE, SERVE_NAME_SERVER, handle};
use k42_abi::syscall::{SyscallError, USER_BASE, USER_TOP};
use k42_abi::trace::ev;

use super::Process;
use super::memory::Memory;
use super::sched::{self, Thread};
use crate::arch::TrapFrame;
use crate::mm::user;
use crate::sync::{ArcSlot, SpinLock};
use crate::{percpu, smp, trace};

/// A registered server.
pub struct Server {
    process: Arc<Process>,
    /// The server process's memory (its workers run in it; a server is
    /// never exec'd: it has its parked thread besides the caller).
    memory: Arc<Memory>,
    entry: u64,
    stacks: u64,
    stack_size: u64,
    msgs: u64,
    /// A call is being served on this CPU.
    busy: Box<[AtomicBool]>,
    /// The worker thread kept for each CPU between calls (making one
    /// costs hundreds of emulated instructions: a heap allocation and a
    /// 700-byte register image).
    workers: Box<[WorkerSlot]>,
}

/// One CPU's idle worker, moved in and out by one atomic swap each (a
/// lock and unlock cost ~50 µs with the kernel emulated).
type WorkerSlot = ArcSlot<Thread>;

impl Server {
    fn stack_top(&self, cpu: u32) -> u64 {
        self.stacks + (cpu as u64 + 1) * self.stack_size - 8
    }
    fn message(&self, cpu: u32) -> u64 {
        self.msgs + cpu as u64 * MAX_MESSAGE
    }
}

/// A call being served: who waits for it, where its reply goes.
pub struct Pending {
    caller: Arc<Thread>,
    server: Arc<Server>,
    cpu: u32,
    /// The caller's message buffer and its length (the reply's limit).
    buf: u64,
    cap: u64,
}

struct Slot {
    seq: u32,
    server: Option<Arc<Server>>,
}

/// The server table; handles index it.
static TABLE: SpinLock<Vec<Slot>> = SpinLock::new(Vec::new());

fn server_of(h: u64) -> Option<Arc<Server>> {
    let (index, seq) = ((h >> 32) as usize, h as u32);
    let t = TABLE.lock();
    let slot = t.get(index)?;
    (slot.seq == seq).then(|| slot.server.clone()).flatten()
}

/// Make the calling process a server and park its thread.
pub fn serve(t: &Arc<Thread>, args: [u64; 5], frame: &mut TrapFrame) -> Result<(), SyscallError> {
    let (entry, stacks, stack_size, msgs) = (args[0], args[1], args[2], args[3]);
    let n = smp::ncpus() as u64;
    let user =
        |a: u64, len: u64| a >= USER_BASE && a.checked_add(len).is_some_and(|e| e <= USER_TOP);
    if !user(entry, 1) || !(4096..=1 << 20).contains(&stack_size) || !user(stacks, n * stack_size) {
        return Err(SyscallError::InvalidArgument);
    }
    let p = &t.process;
    // The message buffers are written by the kernel during calls: fault
    // them in now, and refuse memory that is not the server's.
    t.memory().user_range(msgs, n * MAX_MESSAGE, true)?;
    let server = Arc::new(Server {
        process: p.clone(),
        memory: t.memory_arc(),
        entry,
        stacks,
        stack_size,
        msgs,
        busy: (0..n).map(|_| AtomicBool::new(false)).collect(),
        workers: (0..n).map(|_| WorkerSlot::new()).collect(),
    });
    {
        let mut table = TABLE.lock();
        if table.is_empty() {
            // Slot 0 is the name server's.
            table.push(Slot {
                seq: 1,
                server: None,
            });
        }
        if table
            .iter()
            .any(|s| s.server.as_ref().is_some_and(|s| s.process.pid == p.pid))
        {
            return Err(SyscallError::InvalidArgument);
        }
        if args[4] == SERVE_NAME_SERVER {
            if table[0].server.is_some() {
                return Err(SyscallError::InvalidArgument);
            }
            table[0].server = Some(server);
        } else if args[4] != 0 {
            return Err(SyscallError::InvalidArgument);
        } else {
            match table.iter_mut().skip(1).find(|s| s.server.is_none()) {
                Some(slot) => slot.server = Some(server),
                None => table.push(Slot {
                    seq: 1,
                    server: Some(server),
                }),
            }
        }
    }
    // Park the thread: it keeps the process alive until it is killed.
    let me = sched::take_current(frame);
    *p.parked.lock() = Some(me);
    if p.killed() {
        super::wake_parked(p);
    }
    sched::switch_to_next(frame);
    Ok(())
}

/// The handle of process `pid`'s server, or (`pid` 0) the name
/// server's.
pub fn lookup(pid: u64) -> Result<u64, SyscallError> {
    let t = TABLE.lock();
    if pid == 0 {
        return t
            .first()
            .filter(|s| s.server.is_some())
            .map(|s| handle(0, s.seq))
            .ok_or(SyscallError::NoSuchProcess);
    }
    t.iter()
        .enumerate()
        .find(|(_, s)| {
            s.server
                .as_ref()
                .is_some_and(|s| s.process.pid as u64 == pid)
        })
        .map(|(i, s)| handle(i as u32, s.seq))
        .ok_or(SyscallError::NoSuchProcess)
}

/// A call from thread `t` on this CPU; `Ok` when the CPU now runs the
/// server's worker.
pub fn call(t: &Arc<Thread>, args: [u64; 5], frame: &mut TrapFrame) -> Result<(), SyscallError> {
    let (h, method, arg, buf) = (args[0], args[1], args[2], args[3]);
    // The message's length, and the room for the reply (at least the
    // message's).
    let len = args[4] & 0xffff_ffff;
    let cap = len.max(args[4] >> 32);
    if cap > MAX_MESSAGE {
        return Err(SyscallError::TooLong);
    }
    let server = server_of(h).ok_or(SyscallError::StaleHandle)?;
    if server.process.killed() {
        return Err(SyscallError::ServerDied);
    }
    let mut room = MaybeUninit::<[u8; MAX_MESSAGE as usize]>::uninit();
    let mem = t.memory();
    // Resolved writable: the reply comes back here.
    let msg = user::read_uninit(mem, buf, len, true, &mut room)?;
    if cap > len {
        mem.user_range(buf + len, cap - len, true)?;
    }
    let cpu = percpu::cpu_id();
    if server.busy[cpu as usize].swap(true, Ordering::Acquire) {
        return Err(SyscallError::Busy);
    }
    let cached = server.workers[cpu as usize].take();
    let tid = {
        let mut s = server.process.state.lock();
        if s.ended {
            server.busy[cpu as usize].store(false, Ordering::Release);
            return Err(SyscallError::ServerDied);
        }
        // A worker counts as one of the server's threads while it serves.
        s.threads += 1;
        let tid = s.next_tid;
        if cached.is_none() {
            s.next_tid += 1;
        }
        tid
    };
    let at = server.message(cpu);
    let regs = |f: &mut TrapFrame| {
        *f = sched::user_frame(
            server.entry,
            server.stack_top(cpu),
            [t.process.pid as u64, method],
        );
        f.rdx = arg;
        f.rcx = at;
        f.r8 = len;
    };
    let worker = cached.unwrap_or_else(|| {
        Thread::new(
            tid,
            server.process.clone(),
            server.memory.clone(),
            0,
            0,
            [0, 0],
        )
    });
    worker.set_pin(Some(cpu));
    trace::log(ev::sched::ppc_call(server.process.pid as u64, method));
    frame.rdx = 0;
    let caller = sched::take_current(frame);
    worker.start_call(
        regs,
        Pending {
            caller,
            server: server.clone(),
            cpu,
            buf,
            cap,
        },
    );
    sched::hand_off(frame, worker);
    // The message into the server's buffer for this CPU (faulted in by
    // `serve`).
    if len > 0 {
        let _ = user::copy_out(&*server.memory, at, msg);
    }
    Ok(())
}

/// The end of the call worker `t` serves; `Ok` when the CPU is back with
/// the caller (or moved on, if the caller was killed meanwhile).
pub fn ret(
    t: &Arc<Thread>,
    result: u64,
    rlen: u64,
    frame: &mut TrapFrame,
) -> Result<(), SyscallError> {
    let pending = t.take_ppc().ok_or(SyscallError::InvalidArgument)?;
    if rlen > pending.cap {
        t.set_ppc(Some(pending));
        return Err(SyscallError::TooLong);
    }
    let mut room = MaybeUninit::<[u8; MAX_MESSAGE as usize]>::uninit();
    let at = pending.server.message(pending.cpu);
    let reply = match user::read_uninit(t.memory(), at, rlen, false, &mut room) {
        Ok(r) => r,
        Err(e) => {
            t.set_ppc(Some(pending));
            return Err(e);
        }
    };
    trace::log(ev::sched::ppc_return(
        pending.server.process.pid as u64,
        result as i64,
    ));
    let worker = sched::drop_current().expect("the worker is current");
    crate::mm::paging::activate_kernel();
    // The worker waits in the server for the next call on this CPU; it
    // counts as one of the server's threads only while it serves.
    let server = pending.server.clone();
    server.workers[pending.cpu as usize].put(worker);
    server.busy[pending.cpu as usize].store(false, Ordering::Release);
    super::count_out(&server.process);
    let caller = pending.caller;
    if caller.process.killed() {
        super::thread_ended(caller);
        sched::switch_to_next(frame);
        return Ok(());
    }
    // The reply into the caller's buffer (through the direct map: no
    // need to wait for its address space).
    let copied = user::copy_out(caller.memory(), pending.buf, reply).is_ok();
    sched::hand_off(frame, caller);
    frame.rax = result;
    frame.rdx = if copied { rlen } else { 0 };
    Ok(())
}

/// Worker `t` ended without returning (its server faulted, exited or was
/// killed): fail the call it served.
pub fn worker_ended(t: &Thread) {
    let Some(p) = t.take_ppc() else {
        return;
    };
    p.server.busy[p.cpu as usize].store(false, Ordering::Release);
    p.caller.set_result(SyscallError::ServerDied as i64 as u64);
    sched::enqueue_on(p.cpu, p.caller);
}

/// Process `p` has ended: its handle goes stale.
pub fn process_ended(p: &Process) {
    let mut t = TABLE.lock();
    for slot in t.iter_mut() {
        if slot.server.as_ref().is_some_and(|s| s.process.pid == p.pid) {
            slot.server = None;
            slot.seq = slot.seq.wrapping_add(1);
        }
    }
}
