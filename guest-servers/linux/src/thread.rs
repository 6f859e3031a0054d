//! Threads: each thread's own personality block and stack (found through
//! the GS base, which the kernel keeps per thread), the lock that lets one
//! thread at a time into the personality's shared state, and the Linux
//! calls of threads — `clone`/`clone3` for a thread, `futex`, `exit` of
//! one thread, `gettid`, `set_tid_address`, `tkill`/`tgkill`,
//! `sched_setaffinity`.
//!
//! ```text
//! syscall ─► entry: gs:[USER_RSP] := rsp, rsp := gs:[STACK_TOP]  (no kernel)
//!   main thread: MAIN_BLOCK and the entry's static stack
//!   a clone'd thread: a slot of THREADS (block + stack), taken under
//!   the lock, given back by the kernel (LinuxThreadExit zeroes `in_use`
//!   once the thread no longer runs on it)
//! ```
//!
//! The program's GS base is the personality's: programs use FS (glibc's
//! TLS) and never GS on x86-64 Linux. Calls that block for long (futex
//! waits, sleeps) or touch only the caller's block run without the lock;
//! every other call holds it from entry to return (so a call that blocks
//! in the kernel — a pipe read, wait4 — holds up the other threads'
//! calls meanwhile: see docs/LINUX.md).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use k42_abi::linux::{ThreadStart, UserRegs};
use k42_abi::syscall::SyscallError;
use k42_rt::sys::raw;
use k42_rt::sys::sys_result;
use linux_raw_sys::errno as e;
use linux_raw_sys::general as g;

use crate::LinuxResult;

/// A thread's words the entry and the thread's calls use; at its GS base.
#[repr(C)]
pub struct ThreadBlock {
    /// The program's stack pointer while the entry switches stacks.
    pub user_rsp: AtomicU64,
    /// The top of this thread's personality stack.
    pub stack_top: AtomicU64,
    /// Where the program resumes while the entry's exit restores its
    /// registers.
    pub resume_rip: AtomicU64,
    /// The block's own address (how [`me`] finds it: `gs:` reads only).
    this: AtomicU64,
    /// Its Linux thread id (the main thread's is the pid).
    tid: AtomicU64,
    /// Linux's `clear_child_tid`: zeroed and woken at the thread's exit.
    clear_child_tid: AtomicU64,
    /// Nonzero while a thread owns this block; the kernel zeroes it once
    /// the thread no longer runs on the block's stack.
    in_use: AtomicU64,
    /// The thread's signal mask.
    mask: AtomicU64,
}

/// Offsets the entry's assembly uses.
pub const BLOCK_USER_RSP: usize = core::mem::offset_of!(ThreadBlock, user_rsp);
pub const BLOCK_STACK_TOP: usize = core::mem::offset_of!(ThreadBlock, stack_top);
pub const BLOCK_RESUME_RIP: usize = core::mem::offset_of!(ThreadBlock, resume_rip);
const BLOCK_THIS: usize = core::mem::offset_of!(ThreadBlock, this);

impl ThreadBlock {
    const fn new() -> Self {
        Self {
            user_rsp: AtomicU64::new(0),
            stack_top: AtomicU64::new(0),
            resume_rip: AtomicU64::new(0),
            this: AtomicU64::new(0),
            tid: AtomicU64::new(0),
            clear_child_tid: AtomicU64::new(0),
            in_use: AtomicU64::new(0),
            mask: AtomicU64::new(0),
        }
    }

    fn address(&self) -> u64 {
        self as *const Self as u64
    }
}

/// The main thread's block (its stack is the entry's static one).
static MAIN_BLOCK: ThreadBlock = ThreadBlock::new();

/// Threads beyond the main one a process may have at once.
const MAX_THREADS: usize = 128;
/// Bytes of a clone'd thread's personality stack.
const THREAD_STACK: usize = 128 * 1024;

/// A clone'd thread's block and personality stack (in the personality's
/// image: zero pages until touched).
#[repr(C, align(16))]
struct Slot {
    block: ThreadBlock,
    stack: core::cell::UnsafeCell<[u8; THREAD_STACK]>,
}

// SAFETY: a slot's stack is used only by the one thread that owns the
// slot (`in_use`), through its stack pointer, never through references.
unsafe impl Sync for Slot {}

static SLOTS: [Slot; MAX_THREADS] = [const {
    Slot {
        block: ThreadBlock::new(),
        stack: core::cell::UnsafeCell::new([0; THREAD_STACK]),
    }
}; MAX_THREADS];

/// The calling thread's block.
fn me() -> &'static ThreadBlock {
    let p: u64;
    // SAFETY: the GS base is this thread's block (set at start for the
    // main thread, by LinuxClone for the others); its `this` word holds
    // its address. A load, no other effect.
    unsafe {
        core::arch::asm!("mov {}, gs:[{off}]", out(reg) p, off = const BLOCK_THIS,
            options(nostack, readonly, preserves_flags));
    }
    // SAFETY: `p` is a static block's own address (MAIN_BLOCK or a slot's).
    unsafe { &*(p as *const ThreadBlock) }
}

/// The main thread starts (the first program, or after exec): its block
/// is [`MAIN_BLOCK`], its personality stack ends at `stack_top`.
pub fn start_main(stack_top: u64) {
    let tid = crate::process::getpid().unwrap_or(0);
    let b = &MAIN_BLOCK;
    b.stack_top.store(stack_top, Ordering::Relaxed);
    b.this.store(b.address(), Ordering::Relaxed);
    b.tid.store(tid, Ordering::Relaxed);
    b.in_use.store(1, Ordering::Relaxed);
    b.mask.store(crate::signal::page_mask(), Ordering::Relaxed);
    raw::SetGsBase::call([b.address()]);
}

/// A forked child: its one thread (the caller) has the pid as its id;
/// no other thread's block is in use.
pub fn forked_child(pid: u64) {
    let b = me();
    b.tid.store(pid, Ordering::Relaxed);
    b.clear_child_tid.store(0, Ordering::Relaxed);
    for other in blocks().filter(|o| !core::ptr::eq(*o, b)) {
        other.in_use.store(0, Ordering::Relaxed);
    }
    crate::signal::publish_mask();
}

/// Every block: the main thread's and the slots'.
fn blocks() -> impl Iterator<Item = &'static ThreadBlock> {
    core::iter::once(&MAIN_BLOCK).chain(SLOTS.iter().map(|s| &s.block))
}

/// The calling thread's signal mask.
pub fn mask() -> u64 {
    me().mask.load(Ordering::Relaxed)
}

/// Set the calling thread's signal mask.
pub fn set_mask(mask: u64) {
    me().mask.store(mask, Ordering::Relaxed);
}

/// The signals every live thread blocks: what the kernel treats as the
/// process's mask (a signal for the process is taken by a thread that
/// does not block it, as on Linux; here, whichever thread returns from a
/// call first). A thread that blocks everything before it exits (glibc
/// does) leaves the others' masks in force.
pub fn common_mask() -> u64 {
    blocks()
        .filter(|b| b.in_use.load(Ordering::Acquire) != 0)
        .fold(u64::MAX, |m, b| m & b.mask.load(Ordering::Relaxed))
}

/// The personality lock: 0 free, 1 held, 2 held with waiters (a futex in
/// the personality's own memory).
static LOCK: AtomicU32 = AtomicU32::new(0);

/// Take the personality lock (waiting blocks in the kernel, no spinning).
pub fn lock() {
    if LOCK
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return;
    }
    let mut round = 0;
    while LOCK.swap(2, Ordering::Acquire) != 0 {
        let r = raw::FutexWait::call([LOCK.as_ptr() as u64, 2, u64::from(u32::MAX), u64::MAX]);
        if r == SyscallError::Interrupted as i64 {
            // A signal is pending: the holder delivers it; let it run.
            k42_rt::sys::yield_now(round);
            round += 1;
        }
    }
}

/// Let go of the personality lock.
pub fn unlock() {
    if LOCK.swap(0, Ordering::Release) == 2 {
        raw::FutexWake::call([LOCK.as_ptr() as u64, 1, u64::from(u32::MAX)]);
    }
}

/// Run `f` (a kernel call that may block: a pipe read, a wait) with the
/// personality lock let go, so that the other threads' calls go on
/// meanwhile; taken again after. Only inside a call that holds it.
pub fn unlocked<R>(f: impl FnOnce() -> R) -> R {
    unlock();
    let r = f();
    lock();
    r
}

/// Whether Linux call `nr` runs without the personality lock: it blocks
/// for long or touches only the caller's block.
pub fn runs_unlocked(nr: u64) -> bool {
    const UNLOCKED: [u32; 7] = [
        g::__NR_futex,
        g::__NR_gettid,
        g::__NR_set_tid_address,
        g::__NR_exit,
        g::__NR_sched_yield,
        g::__NR_nanosleep,
        g::__NR_clock_nanosleep,
    ];
    UNLOCKED.iter().any(|&n| u64::from(n) == nr)
}

/// `gettid`.
pub fn gettid() -> LinuxResult {
    Ok(me().tid.load(Ordering::Relaxed))
}

/// `set_tid_address`: the caller's `clear_child_tid`; its thread id.
pub fn set_tid_address(ptr: u64) -> LinuxResult {
    me().clear_child_tid.store(ptr, Ordering::Relaxed);
    gettid()
}

/// `exit`: end the calling thread only (the process with `code` when it
/// is the last). The kernel zeroes `clear_child_tid` and wakes a waiter
/// there (pthread_join), and frees the thread's slot once it is off it.
pub fn exit(code: u64) -> ! {
    let b = me();
    let in_use = if core::ptr::eq(b, &MAIN_BLOCK) {
        0
    } else {
        b.in_use.as_ptr() as u64
    };
    raw::LinuxThreadExit::call([
        code & 0xff,
        b.clear_child_tid.load(Ordering::Relaxed),
        in_use,
    ]);
    unreachable!("LinuxThreadExit returned")
}

/// The flags a thread's `clone` must have (glibc's pthread_create).
const THREAD_FLAGS: u64 =
    (g::CLONE_VM | g::CLONE_FS | g::CLONE_FILES | g::CLONE_SIGHAND | g::CLONE_THREAD) as u64;
/// The flags it may have besides.
const THREAD_OPTIONAL: u64 = (g::CLONE_SYSVSEM
    | g::CLONE_SETTLS
    | g::CLONE_PARENT_SETTID
    | g::CLONE_CHILD_CLEARTID
    | g::CLONE_CHILD_SETTID) as u64;
/// Flags that make a `clone` ask for sharing this kernel cannot give
/// without threads (any of them: a thread, or EINVAL).
const SHARING: u64 =
    (g::CLONE_VM | g::CLONE_FS | g::CLONE_FILES | g::CLONE_SIGHAND | g::CLONE_THREAD) as u64;

/// What a `clone` or `clone3` asks for.
pub struct CloneArgs {
    pub flags: u64,
    /// The child's stack pointer (0: the parent's).
    pub stack: u64,
    pub parent_tid: u64,
    pub child_tid: u64,
    pub tls: u64,
    /// The signal the parent gets at the child's end.
    pub exit_signal: u64,
}

/// `clone`: `(flags, stack, parent_tid, child_tid, tls)`.
pub fn clone(frame: &UserRegs, a: [u64; 6]) -> LinuxResult {
    let args = CloneArgs {
        flags: a[0] & !0xff,
        stack: a[1],
        parent_tid: a[2],
        child_tid: a[3],
        tls: a[4],
        exit_signal: a[0] & 0xff,
    };
    clone_with(frame, &args)
}

/// `clone3(args, size)`: Linux's `struct clone_args`, at least its first
/// version (64 bytes); fields past what this kernel knows must be 0.
pub fn clone3(frame: &UserRegs, ptr: u64, size: u64) -> LinuxResult {
    const VER0: u64 = g::CLONE_ARGS_SIZE_VER0 as u64;
    let known = core::mem::size_of::<g::clone_args>() as u64;
    if !(VER0..=4096).contains(&size) {
        return Err(e::EINVAL);
    }
    let mut raw_args = [0u64; 11];
    for (i, w) in raw_args
        .iter_mut()
        .enumerate()
        .take((size.min(known) / 8) as usize)
    {
        *w = crate::uaccess::read(ptr + 8 * i as u64)?;
    }
    let mut off = known;
    while off < size {
        let b: u8 = crate::uaccess::read(ptr + off)?;
        if b != 0 {
            return Err(e::E2BIG);
        }
        off += 1;
    }
    let [
        flags,
        pidfd,
        child_tid,
        parent_tid,
        exit_signal,
        stack,
        stack_size,
        tls,
        set_tid,
        set_tid_size,
        cgroup,
    ] = raw_args;
    // `pidfd` means something only with CLONE_PIDFD (refused below), as
    // on Linux, which ignores it otherwise (glibc leaves a pointer there).
    let _ = pidfd;
    if set_tid != 0 || set_tid_size != 0 || cgroup != 0 || flags >> 32 != 0 {
        return Err(e::EINVAL);
    }
    if (stack == 0) != (stack_size == 0) {
        return Err(e::EINVAL);
    }
    let args = CloneArgs {
        flags,
        stack: stack.wrapping_add(stack_size),
        parent_tid,
        child_tid,
        tls,
        exit_signal,
    };
    clone_with(frame, &args)
}

fn clone_with(frame: &UserRegs, args: &CloneArgs) -> LinuxResult {
    if args.flags & SHARING == 0 || args.flags & u64::from(g::CLONE_VFORK) != 0 {
        // fork and vfork: a copy of the process.
        return crate::process::clone(
            args.flags | args.exit_signal,
            args.stack,
            args.parent_tid,
            args.child_tid,
            args.tls,
        );
    }
    if args.flags & THREAD_FLAGS != THREAD_FLAGS
        || args.flags & !(THREAD_FLAGS | THREAD_OPTIONAL) != 0
        || args.exit_signal != 0
        || args.stack == 0
    {
        return Err(e::EINVAL);
    }
    let slot = SLOTS
        .iter()
        .find(|s| {
            s.block
                .in_use
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
        .ok_or(e::EAGAIN)?;
    let b = &slot.block;
    b.this.store(b.address(), Ordering::Relaxed);
    b.stack_top.store(
        slot.stack.get() as u64 + THREAD_STACK as u64,
        Ordering::Relaxed,
    );
    b.tid.store(0, Ordering::Relaxed);
    // A new thread starts with its creator's mask.
    b.mask.store(mask(), Ordering::Relaxed);
    let has = |f: u32| args.flags & u64::from(f) != 0;
    b.clear_child_tid.store(
        if has(g::CLONE_CHILD_CLEARTID) {
            args.child_tid
        } else {
            0
        },
        Ordering::Relaxed,
    );
    let mut regs = *frame;
    regs.rsp = args.stack;
    let start = ThreadStart {
        regs,
        fs_base: if has(g::CLONE_SETTLS) {
            args.tls
        } else {
            u64::MAX
        },
        gs_base: b.address(),
        set_tid: [
            b.tid.as_ptr() as u64,
            if has(g::CLONE_PARENT_SETTID) {
                args.parent_tid
            } else {
                0
            },
            if has(g::CLONE_CHILD_SETTID) {
                args.child_tid
            } else {
                0
            },
        ],
    };
    let r = sys_result(raw::LinuxClone::call([&start as *const ThreadStart as u64]));
    r.map_err(|err| {
        b.in_use.store(0, Ordering::Release);
        match err {
            SyscallError::BadAddress => e::EFAULT,
            SyscallError::NoSuchProcess => e::EAGAIN,
            _ => e::EINVAL,
        }
    })
}

/// Whether `tid` is a thread of this process other than the main one.
fn is_my_thread(tid: u64) -> bool {
    SLOTS.iter().any(|s| {
        s.block.in_use.load(Ordering::Acquire) != 0 && s.block.tid.load(Ordering::Relaxed) == tid
    })
}

/// The process a signal for thread `tid` goes to: this one for its own
/// threads (signals are per process here), else the process `tid`.
fn signal_target(tid: u64) -> u64 {
    if is_my_thread(tid) {
        crate::process::getpid().unwrap_or(tid)
    } else {
        tid
    }
}

/// `tkill`.
pub fn tkill(tid: u64, sig: u64) -> LinuxResult {
    if tid as i64 <= 0 {
        return Err(e::EINVAL);
    }
    crate::signal::kill(signal_target(tid) as i64, sig)
}

/// `tgkill`: thread `tid` of process `tgid`.
pub fn tgkill(tgid: u64, tid: u64, sig: u64) -> LinuxResult {
    if tgid as i64 <= 0 || tid as i64 <= 0 {
        return Err(e::EINVAL);
    }
    if signal_target(tid) != tgid {
        return Err(e::ESRCH);
    }
    crate::signal::kill(tgid as i64, sig)
}

/// `sched_setaffinity`: the CPUs in the mask (`len` bytes at `mask`);
/// one CPU pins the calling thread there (the kernel's `Pin`), more
/// let it run anywhere again (a subset is not kept). For another thread
/// of this process it is accepted and not applied.
pub fn sched_setaffinity(pid: u64, len: u64, mask: u64) -> LinuxResult {
    let ncpus = u64::from(crate::system::info().cpus);
    let mut chosen = 0u64;
    let mut first = None;
    let bytes = len.min(ncpus.div_ceil(8));
    for i in 0..bytes {
        let byte: u8 = crate::uaccess::read(mask + i)?;
        for bit in 0..8 {
            let cpu = i * 8 + bit;
            if byte & (1 << bit) != 0 && cpu < ncpus {
                chosen += 1;
                first.get_or_insert(cpu);
            }
        }
    }
    let Some(cpu) = first else {
        return Err(e::EINVAL);
    };
    let me_tid = me().tid.load(Ordering::Relaxed);
    if pid != 0 && pid != me_tid {
        return if is_my_thread(pid) || pid == crate::process::getpid()? {
            Ok(0)
        } else {
            Err(e::ESRCH)
        };
    }
    let target = if chosen == 1 { cpu } else { u64::MAX };
    sys_result(raw::Pin::call([target]))
        .map(|_| 0)
        .map_err(|_| e::EINVAL)
}

/// `futex`: WAIT, WAKE, WAIT_BITSET, WAKE_BITSET (private or not: every
/// futex is this process's); other operations are ENOSYS.
pub fn futex(uaddr: u64, op: u64, val: u64, timeout: u64, _uaddr2: u64, val3: u64) -> LinuxResult {
    let cmd = op as u32 & !(g::FUTEX_PRIVATE_FLAG | g::FUTEX_CLOCK_REALTIME);
    let realtime = op as u32 & g::FUTEX_CLOCK_REALTIME != 0;
    let errno = |err| match err {
        SyscallError::WouldBlock => e::EAGAIN,
        SyscallError::TimedOut => e::ETIMEDOUT,
        SyscallError::Interrupted => e::EINTR,
        SyscallError::BadAddress => e::EFAULT,
        _ => e::EINVAL,
    };
    match cmd {
        g::FUTEX_WAIT | g::FUTEX_WAIT_BITSET => {
            let bitset = if cmd == g::FUTEX_WAIT {
                u32::MAX
            } else {
                val3 as u32
            };
            if bitset == 0 {
                return Err(e::EINVAL);
            }
            let timeout_ns = if timeout == 0 {
                u64::MAX
            } else if cmd == g::FUTEX_WAIT {
                crate::system::timespec_ns(timeout)?
            } else {
                let at = crate::system::timespec_ns(timeout)?;
                let now = if realtime {
                    crate::system::realtime_ns()
                } else {
                    crate::system::monotonic_ns()
                };
                at.saturating_sub(now)
            };
            let r = raw::FutexWait::call([uaddr, val & 0xffff_ffff, u64::from(bitset), timeout_ns]);
            sys_result(r).map(|_| 0).map_err(errno)
        }
        g::FUTEX_WAKE | g::FUTEX_WAKE_BITSET => {
            let bitset = if cmd == g::FUTEX_WAKE {
                u32::MAX
            } else {
                val3 as u32
            };
            if bitset == 0 {
                return Err(e::EINVAL);
            }
            // Linux wakes at least one for any count.
            let n = (val as i32).max(1) as u64;
            sys_result(raw::FutexWake::call([uaddr, n, u64::from(bitset)])).map_err(errno)
        }
        _ => {
            raw::LinuxUnimplemented::call([u64::from(g::__NR_futex)]);
            Err(e::ENOSYS)
        }
    }
}
