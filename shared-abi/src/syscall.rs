//! System calls: how user programs ask the k42 kernel for something.
//!
//! A system call is the instruction sequence [`SYSCALL_SITE`] (`ud2`
//! followed by the bytes `k42s`) with the number in `rax` and up to five
//! arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`. The kernel recognises
//! the invalid-opcode trap at such a site, serves the call, and resumes
//! after the site with the result in `rax` (≥ 0 success, < 0 a
//! [`SyscallError`]); every other register is preserved.
//!
//! Why not `syscall` or `int 0x80`: on KVM-PVM hosts, where user mode runs
//! natively and an ordinary kernel runs emulated, `syscall` from user mode
//! arrives at LSTAR still at CPL 3 with the user's CS and SS, and `int n`
//! raises #UD; exceptions are the transition that reaches the kernel
//! intact (measured, see docs/PLATFORM.md).
//!
//! Every pointer a system call receives is checked against the caller's
//! address space; a bad one gets [`SyscallError::BadAddress`].

/// The system-call instruction sequence: `ud2`, then the signature `k42s`
/// (never executed: the kernel resumes after it).
pub const SYSCALL_SITE: [u8; 6] = [0x0f, 0x0b, b'k', b'4', b'2', b's'];

/// [`Syscall::Write`]'s stream: k42vmm's standard output.
pub const WRITE_STDOUT: u64 = 0;
/// [`Syscall::Write`]'s stream: k42vmm's standard error.
pub const WRITE_STDERR: u64 = 1;

/// Lowest address of user space.
pub const USER_BASE: u64 = 0x0000_0000_0040_0000;
/// End (exclusive) of user space.
pub const USER_TOP: u64 = 0x0000_7fff_ffff_f000;
/// Where the kernel maps the read-only [`ProgramInfo`] page.
pub const USER_INFO: u64 = 0x0000_0000_1000_0000;
/// Where the kernel maps a program's heap (`ProgramInfo::heap_size` bytes).
pub const USER_HEAP: u64 = 0x0000_0000_2000_0000;

/// What [`Syscall::SystemInfo`] writes: the machine's memory and
/// processes now.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct SystemInfo {
    /// Page frames of RAM the kernel manages.
    pub total_frames: u64,
    /// Of those, free ones.
    pub free_frames: u64,
    /// Processes alive (not yet reaped).
    pub processes: u64,
}

/// What the kernel tells a program at start. Every CPU that runs the
/// program enters `_start` with `rdi` = [`USER_INFO`] and `rsi` = its CPU
/// index; the stack pointer is that CPU's own stack.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct ProgramInfo {
    /// [`PROGRAM_INFO_MAGIC`].
    pub magic: u64,
    /// CPUs running this program at once (1, or all of them; for a
    /// process, the CPUs of the machine).
    pub cpus: u32,
    /// Bytes of argument and environment strings at
    /// `USER_INFO + ARGS_OFFSET` (see [`ARGS_OFFSET`]); 0 when none.
    pub args_len: u32,
    /// TSC frequency in kHz, for timing with `rdtsc`.
    pub tsc_khz: u64,
    /// Heap mapped at [`USER_HEAP`], in bytes (zero-filled).
    pub heap_size: u64,
    /// Program arguments, meaning defined by each program.
    pub args: [u64; 8],
    /// The wall clock (ns since 1970) when the TSC read 0: wall-clock
    /// time is this plus the TSC in nanoseconds (0: unknown).
    pub epoch_ns: u64,
}

/// Where a process's argument and environment strings start, from
/// [`USER_INFO`]: each argument NUL-terminated, then one more NUL, then
/// each `KEY=VALUE` environment string NUL-terminated
/// (`ProgramInfo::args_len` bytes in all, at most [`MAX_ARGS_LEN`]).
pub const ARGS_OFFSET: u64 = 256;
/// Longest argument-and-environment block a process may be given.
pub const MAX_ARGS_LEN: u64 = 4096 - ARGS_OFFSET;
/// Longest program name.
pub const MAX_NAME_LEN: u64 = 64;

/// `ProgramInfo::magic`.
pub const PROGRAM_INFO_MAGIC: u64 = 0x4b34_3250_524f_4731; // "K42PROG1"

const _: () = assert!(core::mem::size_of::<ProgramInfo>() == 104);

/// The system-call table: every call's number, name, handler and
/// argument count, defined once. It expands to
/// `$callback! { $( $(#[doc])* Name = number => area::handler(argc); )* }`,
/// and everything else follows from it: the [`Syscall`] enum, its
/// [`Syscall::name`] and [`Syscall::arg_count`] here; the kernel's dispatch
/// (`guest-kernel/src/syscall/`, which calls `area::handler` with an
/// `[u64; argc]` — a missing handler or a wrong count does not compile);
/// the runtime's raw wrappers (`k42_rt::sys::raw`).
///
/// Adding a system call: a line here, and its handler in the kernel's
/// `syscall/<area>.rs`.
#[macro_export]
macro_rules! for_each_syscall {
    ($callback:ident) => {
        $callback! {
        /// End the program with status `rdi` (0..=255).
        Exit = 0 => process::exit(1);
        /// Write `rsi` bytes at `rdi` to the console (any bytes; at most
        /// [`crate::hypercall::MAX_CONSOLE_WRITE`]): to k42vmm's stdout
        /// when `rdx` is [`WRITE_STDOUT`], its stderr when
        /// [`WRITE_STDERR`].
        Write = 1 => program::write(3);
        /// Report a benchmark result: a [`crate::bench::BenchRecord`] at
        /// `rdi`, `rsi` its size. The kernel forwards it to k42vmm.
        BenchRecord = 2 => program::bench_record(2);
        /// Return the index of the CPU the caller runs on.
        GetCpu = 3 => program::get_cpu(0);
        /// Do nothing and return 0 (measures the system-call round trip).
        Null = 4 => program::null(0);
        /// The caller has waited `rdi` rounds for another CPU: give the host
        /// CPU away for a while (backs off as `rdi` grows).
        Yield = 5 => program::yield_now(1);
        /// Where the trace region is mapped for this program
        /// ([`crate::trace::USER_VIEW_BASE`]), or 0 when tracing is off.
        TraceView = 6 => program::trace_view(0);
        /// Start a new process running program `rdi`/`rsi` (name bytes) with
        /// the argument block `rdx`/`r10` (format of [`ARGS_OFFSET`]) and
        /// flags `r8` ([`SPAWN_REPLICATED`]); returns its pid.
        Spawn = 7 => process::spawn(5);
        /// Copy this (single-threaded) process, memory copy-on-write; returns
        /// the child's pid in the parent and 0 in the child.
        Fork = 8 => process::fork(0);
        /// Replace this (single-threaded) process's program: name `rdi`/`rsi`,
        /// argument block `rdx`/`r10`. Returns only on failure.
        Exec = 9 => process::exec(4);
        /// Wait for child `rdi` (or any child when `rdi` is `u64::MAX`) to
        /// end; returns `pid << 16 | status word` ([`status`]). `rsi`:
        /// [`wait`] options — also report a child that stopped
        /// ([`status::STOPPED`]) or continued ([`status::CONTINUED`]).
        Wait = 10 => process::wait(2);
        /// End process `rdi` (only the caller's children, or itself); its
        /// status word becomes [`status::KILLED`].
        Kill = 11 => process::kill(1);
        /// The caller's process id.
        GetPid = 12 => process::get_pid(0);
        /// Start a thread in this process at `rdi` with stack top `rsi` and
        /// argument `rdx` (in `rdi`), kept on CPU `r10 - 1` if `r10` is not
        /// 0; returns its thread id.
        ThreadCreate = 13 => process::thread_create(4);
        /// End the calling thread (the process ends with status `rdi` when
        /// it was the last).
        ThreadExit = 14 => process::thread_exit(1);
        /// Map `rdi` bytes of zero-filled memory (rounded up to pages,
        /// allocated on first touch); returns the address.
        MapAnon = 15 => process::map_anon(1);
        /// Free page frames in the whole machine (for leak checks).
        FreeFrames = 16 => process::free_frames(0);
        /// Keep the calling thread on CPU `rdi` from now on (moving it there
        /// first), or let it run anywhere again with `u64::MAX`.
        Pin = 17 => process::pin(1);
        /// Become a PPC server and park the calling thread for good (it
        /// returns only an error). Calls run at `rdi` (see [`ppc`]) on the
        /// stack of their CPU: CPU `c`'s is the `rdx` bytes below `rsi + (c +
        /// 1) * rdx`; messages are passed in CPU `c`'s [`ppc::MAX_MESSAGE`]
        /// bytes at `r10 + c * MAX_MESSAGE`. With `r8` =
        /// [`ppc::SERVE_NAME_SERVER`] it becomes the name server (one at a
        /// time), which everyone finds with `PpcLookup(0)`.
        PpcServe = 18 => ppc::serve(5);
        /// Call the server behind handle `rdi` on this CPU: method `rsi`,
        /// argument `rdx`, message at `r10` of `r8` bits 0–31 bytes, replaced
        /// by a reply of at most `r8` bits 32–63 bytes (at least the
        /// message's length; both at most [`ppc::MAX_MESSAGE`]). Returns the
        /// server's result in `rax` and the reply's length in `rdx`.
        PpcCall = 19 => ppc::call(5);
        /// End the PPC call this thread serves: result `rdi`, reply of `rsi`
        /// bytes left in this CPU's message buffer.
        PpcReturn = 20 => ppc::ret(2);
        /// The handle of process `rdi`'s server, or with `rdi` = 0 the name
        /// server's (how a program finds the name server; everything else it
        /// finds there by name).
        PpcLookup = 21 => ppc::lookup(1);
        /// Make a new, empty file memory object (see [`file`]) of kind `rdi`
        /// ([`file::KIND_SHARED`] or [`file::KIND_DISTRIBUTED`]); returns a
        /// handle to it with every right.
        FileCreate = 22 => file::create(1);
        /// Give process `rsi` a handle to the file object behind handle
        /// `rdi`, with rights `rdx` (a subset of the caller's); returns the
        /// new handle, valid in that process only.
        FileGrant = 23 => file::grant(3);
        /// Drop handle `rdi` (the object goes when no handle or mapping
        /// remains).
        FileClose = 24 => file::close(1);
        /// Read up to `r10` bytes (at most [`file::MAX_IO`] per call) at file
        /// offset `rsi` of handle `rdi` into `rdx`; returns the bytes read (0
        /// at or past the end).
        FileRead = 25 => file::read(4);
        /// Write `r10` bytes from `rdx` — at most [`file::MAX_IO`] per call,
        /// the rest left for the next — at file offset `rsi` of handle `rdi`
        /// (at the end, atomically, with [`file::WRITE_APPEND`] in `r8`): all
        /// of them or none. Returns the offset just past the bytes written.
        FileWrite = 26 => file::write(5);
        /// The size of the file behind handle `rdi`.
        FileSize = 27 => file::size(1);
        /// Set the size of the file behind handle `rdi` to `rsi` (cut pages
        /// leave the file; their frames are freed with the object, so that a
        /// racing read never copies a reused frame; a grown file reads
        /// zeros).
        FileTruncate = 28 => file::truncate(2);
        /// Map `rsi` bytes of the file behind handle `rdi` from offset 0,
        /// writable if `rdx` is 1 (shared: every mapping and every read and
        /// write see the same pages); returns the address.
        FileMap = 29 => file::map(3);
        /// The image's module `rdi`: its name copied to `rsi` (at most `rdx`
        /// bytes, [`MAX_NAME_LEN`] suffices); returns its size, or
        /// `NoSuchProgram` past the last module.
        ModuleInfo = 30 => file::module_info(3);
        /// Read up to `r10` bytes at offset `rsi` of image module `rdi` into
        /// `rdx`; returns the bytes read.
        ModuleRead = 31 => file::module_read(4);
        /// Replace this (single-threaded) process's program with the Linux
        /// ELF (or `#!` script resolved by the caller) behind file handle
        /// `rdi` (read right), with the exec block at `r10` of `r8` bytes
        /// ([`crate::linux::ExecHeader`] and its strings). A dynamically
        /// linked program's interpreter (its `PT_INTERP`, opened by the
        /// caller) is handle `rsi`, loaded at
        /// [`crate::linux::LINUX_INTERP_BASE`] and started instead of the
        /// program; [`crate::linux::NO_INTERPRETER`] for a static one.
        /// Returns only on failure: `BadProgram` for a file that is not an
        /// x86_64 ELF executable (or interpreter), or names an interpreter
        /// and none is given; `TooLong` for too many argument bytes.
        LinuxExec = 32 => linux::exec(4);
        /// Set the calling thread's FS base (Linux `arch_prctl(ARCH_SET_FS)`).
        SetFsBase = 33 => linux::set_fs_base(1);
        /// Map `rsi` bytes of zero-filled memory with protection `rdx`
        /// (read 1, write 2, execute 4) at `rdi` (exactly there with
        /// [`crate::linux::MAP_FIXED`] in `r10`, replacing what was there;
        /// else anywhere free, `rdi` a hint); returns the address.
        MemMap = 34 => linux::map(4);
        /// Unmap `[rdi, rdi + rsi)` (page-aligned; pages of it not mapped
        /// are fine).
        MemUnmap = 35 => linux::unmap(2);
        /// Set the protection of `[rdi, rdi + rsi)` to `rdx`; every page
        /// must be mapped.
        MemProtect = 36 => linux::protect(3);
        /// The personality met Linux system call `rdi`, which it does not
        /// implement (it returned ENOSYS): counted, traced, and named when
        /// the VM exits.
        LinuxUnimplemented = 37 => linux::unimplemented(1);
        /// As [`Syscall::Wait`], but returns 0 at once when no such child
        /// has ended yet (Linux `WNOHANG`).
        TryWait = 38 => process::try_wait(2);
        /// Make a pipe: its read end's handle and its write end's handle
        /// are written to the two words at `rdi`. `FileRead` and
        /// `FileWrite` on an end move bytes (blocking while the pipe is
        /// empty or full and the other end is held; with
        /// [`file::PIPE_NONBLOCK`] in the offset argument, `WouldBlock`
        /// instead); reading with no writer left is end of file, writing
        /// with no reader left `BrokenPipe`. `FileClose` drops an end.
        PipeCreate = 39 => file::pipe(1);
        /// Send Linux signal `rsi` (1..=64; 0 only checks) to Linux process `rdi` (see
        /// [`crate::linux::SignalPage`]): SIGKILL, and a signal whose
        /// action is to terminate (not caught, not blocked), end it with
        /// [`status::SIGNALED`]; SIGSTOP, and a stop signal whose action
        /// is the default (not blocked), stop it until SIGCONT, which
        /// continues it whatever its action; an ignored one is dropped; any other is
        /// made pending and interrupts the target's blocking call
        /// (`Interrupted`). `NotPermitted` for a process that does not
        /// run a Linux program.
        Signal = 40 => linux::signal(2);
        /// Wait until a signal the caller does not block is pending
        /// (Linux `rt_sigsuspend`, `pause`); returns 0.
        SignalWait = 41 => linux::signal_wait(0);
        /// Read console input through the terminal's line discipline: up
        /// to `rsi` bytes to `rdi` (a line at most when canonical); `rdx`
        /// bit 0 set: `WouldBlock` instead of waiting. 0 is end of file.
        /// `NotPermitted` when k42vmm forwards no input. A caller outside
        /// the foreground process group stops its group with SIGTTIN
        /// (`Interrupted`), or gets `Background` when it ignores or
        /// blocks SIGTTIN.
        TtyRead = 42 => linux::tty_read(3);
        /// The console terminal's settings and foreground process group:
        /// operation `rdi` with argument `rsi` (`GET`/`SET` a Linux
        /// `termios` at `rsi`, `GET_PGRP`, `SET_PGRP` to `rsi`; see the
        /// kernel's `proc::tty::op`). `NotPermitted` when the console is
        /// not a terminal.
        TtyControl = 43 => linux::tty_control(2);
        /// Put process `rdi` (0: the caller; else the caller or its
        /// child) in process group `rsi` (0: its own pid).
        SetPgid = 44 => linux::set_pgid(2);
        /// Process `rdi`'s process group (0: the caller's).
        GetPgid = 45 => linux::get_pgid(1);
        /// Send Linux signal `rsi` to every Linux process in process
        /// group `rdi` (as `Signal` does to one); `NoSuchProcess` when
        /// there is none.
        SignalGroup = 46 => linux::signal_group(2);
        /// What a poll of pipe end `rdi` finds: [`file::POLL_READABLE`],
        /// [`file::POLL_WRITABLE`], [`file::POLL_HANGUP`] bits.
        PipePoll = 47 => file::pipe_poll(1);
        /// Set file handle `rdi`'s position to `rsi` (signed) from `rdx`
        /// (0 the start, 1 the position, 2 the end); returns it. The
        /// position is shared by the handle's copies in forked children
        /// and kept across exec; `FileRead`/`FileWrite` at
        /// [`file::AT_POSITION`] use and move it.
        FileSeek = 48 => file::seek(3);
        /// Log event `rdi` (its minor number) of the `linux` trace class
        /// for the calling process: the kernel stamps the caller's pid as
        /// its first field and reads the rest (the event's other fields,
        /// a word each) from `rsi`. Does nothing while the class is off;
        /// the personality tests the mask word first (see
        /// [`crate::linux::INFO_TRACE_VIEW`]).
        LinuxTrace = 49 => linux::trace(2);
        /// Write the machine's [`SystemInfo`] to `rdi` (Linux `sysinfo`).
        SystemInfo = 50 => process::system_info(1);
        /// Write the [`file::FileState`] (size and modification time) of
        /// the file behind handle `rdi` to `rsi`.
        FileStat = 51 => file::stat(2);
        /// Set the modification time of the file behind handle `rdi`
        /// (write right) to `rsi` ns since 1970. Writes and truncation
        /// set it to the time they happen.
        FileSetTime = 52 => file::set_time(2);
        /// Map `rsi` bytes of the file behind handle `r10` from offset `r8`
        /// (page-aligned) at `rdi` (exactly there with
        /// [`crate::linux::MAP_FILE_FIXED`] in `rdx`, replacing what was
        /// there; else anywhere free) with protection `rdx & 7`: private
        /// (copy-on-write over the file's pages; read right) or, with
        /// [`crate::linux::MAP_FILE_SHARED`], the file's own pages (a
        /// writable one needs the write right). Returns the address.
        MemMapFile = 53 => linux::map_file(5);
        /// Drop the pages of `[rdi, rdi + rsi)` (page-aligned; Linux
        /// `MADV_DONTNEED`): private memory reads back as it started (zero,
        /// or the file's bytes), a shared file mapping as the file is.
        MemDiscard = 54 => linux::discard(2);
        /// Start a thread of this Linux process from the
        /// [`crate::linux::ThreadStart`] at `rdi`: the program's registers
        /// as the personality saved them at `clone`, resumed as `sysret`
        /// would (`rax` 0, `rcx` = `rip`, `r11` = flags), with its own FS
        /// and GS bases. Its Linux thread id (a fresh number no process
        /// has) is written as a 32-bit word to each nonzero address of
        /// `set_tid` before it runs, and returned.
        LinuxClone = 55 => linux::clone(1);
        /// Linux `FUTEX_WAIT`: if the 32-bit word at `rdi` (4-aligned)
        /// still holds `rsi`, block until a [`Syscall::FutexWake`] on it
        /// whose bit set `r10` meets this one's `rdx` (0 is refused), or
        /// until `r8` ns have passed (`u64::MAX`: no limit; `TimedOut`).
        /// `WouldBlock` when the word differs (read under the wait
        /// queue's lock: no wake-up is lost); `Interrupted` when a signal
        /// the process does not block is pending. Keyed by the caller's
        /// address space and the address.
        FutexWait = 56 => linux::futex_wait(4);
        /// Linux `FUTEX_WAKE`: wake at most `rsi` threads of this address
        /// space waiting on the word at `rdi` whose bit set meets `rdx`;
        /// returns how many were woken.
        FutexWake = 57 => linux::futex_wake(3);
        /// End the calling thread (the process, with status `rdi`, if it
        /// was the last). Then, when nonzero and other threads remain: a
        /// 32-bit 0 to `rsi` and a futex wake of one waiter there (Linux
        /// `CLONE_CHILD_CLEARTID`), and a 64-bit 0 to `rdx` (the
        /// personality's note that the thread's own stack is free
        /// again). Bad addresses are skipped.
        LinuxThreadExit = 58 => linux::thread_exit(3);
        /// Set the calling thread's GS base (the personality's
        /// per-thread block; saved per thread, loaded on switch).
        SetGsBase = 59 => linux::set_gs_base(1);
        }
    };
}

macro_rules! define_syscalls {
    ($( $(#[doc = $doc:literal])* $name:ident = $nr:literal => $area:ident :: $handler:ident ($argc:literal); )*) => {
        /// System call numbers (see [`for_each_syscall`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u64)]
        pub enum Syscall {
            $( $(#[doc = $doc])* $name = $nr, )*
        }

        impl Syscall {
            /// Every system call, in number order.
            pub const ALL: &[Syscall] = &[$(Syscall::$name),*];

            /// The call numbered `raw`, if there is one.
            #[inline]
            pub const fn from_raw(raw: u64) -> Option<Self> {
                match raw {
                    $( $nr => Some(Self::$name), )*
                    _ => None,
                }
            }

            /// Its name in traces and messages: `area.handler`, e.g.
            /// `file.read`.
            pub const fn name(self) -> &'static str {
                match self { $( Self::$name => concat!(stringify!($area), ".", stringify!($handler)), )* }
            }

            /// The call named `name` (as [`Syscall::name`] gives it).
            pub fn by_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|c| c.name() == name)
            }

            /// How many argument registers it reads (`rdi`, `rsi`, `rdx`,
            /// `r10`, `r8`, in that order).
            pub const fn arg_count(self) -> usize {
                match self { $( Self::$name => $argc, )* }
            }
        }
    };
}

for_each_syscall!(define_syscalls);

/// Most arguments a system call takes.
pub const MAX_ARGS: usize = 5;

/// File memory objects: a file's pages (its FCM, whose page index is a
/// clustered hash table, shared or distributed) and its size, in the
/// kernel. A file server makes them and grants handles to its clients,
/// which then read, write and map the data with no server in the way.
pub mod file {
    /// Page index: one table behind one lock.
    pub const KIND_SHARED: u64 = 0;
    /// Page index: K42's distributed DHashTable (a master table and a
    /// local table per CPU that lookups hit without sharing).
    pub const KIND_DISTRIBUTED: u64 = 1;
    /// Right: read and map read-only.
    pub const RIGHT_READ: u64 = 1;
    /// Right: write, truncate and map writable.
    pub const RIGHT_WRITE: u64 = 2;
    /// Right: grant handles to other processes.
    pub const RIGHT_GRANT: u64 = 4;
    /// Every right.
    pub const RIGHTS_ALL: u64 = RIGHT_READ | RIGHT_WRITE | RIGHT_GRANT;
    /// `FileRead`/`FileWrite` offset: at the handle's position (moved
    /// past the bytes; to the new end for an appending write).
    pub const AT_POSITION: u64 = u64::MAX;
    /// [`super::Syscall::PipePoll`]: bytes to read (or end of file).
    pub const POLL_READABLE: u64 = 1;
    /// [`super::Syscall::PipePoll`]: room to write.
    pub const POLL_WRITABLE: u64 = 2;
    /// [`super::Syscall::PipePoll`]: the other end is gone.
    pub const POLL_HANGUP: u64 = 4;
    /// `FileRead`/`FileWrite` on a pipe end: the offset argument holds
    /// flags, and this one asks not to wait.
    pub const PIPE_NONBLOCK: u64 = 1;
    /// `FileWrite` flag: write at the end of the file.
    pub const WRITE_APPEND: u64 = 1;
    /// Largest file.
    pub const MAX_SIZE: u64 = 1 << 40;
    /// Most bytes one `FileRead` or `FileWrite` moves.
    pub const MAX_IO: u64 = 64 << 10;

    /// What [`super::Syscall::FileStat`] writes.
    #[derive(
        Clone,
        Copy,
        Debug,
        Default,
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::Immutable,
        zerocopy::KnownLayout,
    )]
    #[repr(C)]
    pub struct FileState {
        /// Size in bytes.
        pub size: u64,
        /// Last modification (a write, a truncation, or as set), ns
        /// since 1970.
        pub mtime: u64,
    }
}

/// [`Syscall::TtyControl`] operations.
pub mod tty_op {
    /// Copy the `termios` to the caller's `arg`.
    pub const GET: u64 = 1;
    /// Set the `termios` from the caller's `arg`.
    pub const SET: u64 = 2;
    /// The foreground process group.
    pub const GET_PGRP: u64 = 3;
    /// Set the foreground process group to `arg`.
    pub const SET_PGRP: u64 = 4;
    /// 1 when a read would not wait (bytes, or end of file), else 0.
    pub const READY: u64 = 5;
    /// The window size: rows << 16 | columns.
    pub const GET_WINSIZE: u64 = 6;
    /// Set the window size to `arg` (rows << 16 | columns); a change
    /// sends SIGWINCH to the foreground group, as Linux's TIOCSWINSZ.
    pub const SET_WINSIZE: u64 = 7;
}

/// Protected procedure calls: a call into another process's server on
/// the caller's CPU. The kernel switches the CPU from the caller's thread
/// to a thread of the server's at its entry, with `rdi` = the caller's
/// pid (set by the kernel: unforgeable), `rsi` = method, `rdx` =
/// argument, `rcx` = the message's address in the server, `r8` = its
/// length; the server ends the call with [`Syscall::PpcReturn`].
pub mod ppc {
    /// Longest message (and reply).
    pub const MAX_MESSAGE: u64 = 256;

    /// `PpcServe` flag: serve as the name server.
    pub const SERVE_NAME_SERVER: u64 = 1;

    /// The name server's methods (message: the name, UTF-8).
    pub mod names {
        /// Register the name for handle `arg`; `InvalidArgument` if taken
        /// by another process.
        pub const REGISTER: u64 = 0;
        /// The handle registered under the name, or `NoSuchName`.
        pub const LOOKUP: u64 = 1;
        /// Drop the name (only its registrant may).
        pub const UNREGISTER: u64 = 2;
        /// Longest name.
        pub const MAX_NAME: usize = 48;
    }

    /// A handle: a slot of the kernel's server table and the sequence
    /// number of the server in it, so that a handle outliving its server
    /// fails cleanly instead of reaching the slot's next owner.
    pub const fn handle(index: u32, seq: u32) -> u64 {
        (index as u64) << 32 | seq as u64
    }
}

/// [`Syscall::Spawn`] flag: give the child a replicated Process object
/// (per-CPU region caches) instead of the shared one.
pub const SPAWN_REPLICATED: u64 = 1;
/// [`Syscall::Spawn`] flag: keep the child's first thread on the CPU in
/// bits 32–63 of the flags (as [`Syscall::Pin`] does).
pub const SPAWN_PIN: u64 = 2;

/// Status words [`Syscall::Wait`] returns: how a process ended.
pub mod status {
    /// `0..=255`: it exited with that status.
    pub const EXITED_MAX: u64 = 255;
    /// `FAULT | vector`: killed by a user-mode exception.
    pub const FAULT: u64 = 0x100;
    /// Killed by [`super::Syscall::Kill`].
    pub const KILLED: u64 = 0x200;
    /// Killed because it ran out of memory (its limit or the machine's).
    pub const OUT_OF_MEMORY: u64 = 0x300;
    /// `SIGNALED | n`: ended by Linux signal `n` (its default action).
    pub const SIGNALED: u64 = 0x400;
    /// `STOPPED | n`: not an end — stopped by Linux signal `n` (reported
    /// only with [`super::wait::STOPPED`]).
    pub const STOPPED: u64 = 0x500;
    /// Not an end — continued by SIGCONT (reported only with
    /// [`super::wait::CONTINUED`]).
    pub const CONTINUED: u64 = 0x600;
}

/// [`Syscall::Wait`] and [`Syscall::TryWait`] options (`rsi`): what else
/// than an end to report, once per change (Linux `WUNTRACED`,
/// `WCONTINUED`).
pub mod wait {
    /// A child that stopped.
    pub const STOPPED: u64 = 1;
    /// A stopped child that continued.
    pub const CONTINUED: u64 = 2;
}

/// Errors a system call returns (negated in `rax`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum SyscallError {
    /// No such system call.
    NoSuchCall = -1,
    /// A pointer or range is not the caller's memory.
    BadAddress = -2,
    /// An argument is invalid.
    InvalidArgument = -3,
    /// The process limit is reached.
    ProcessLimit = -4,
    /// Out of memory (the caller's limit or the machine's).
    NoMemory = -5,
    /// No such process (or not the caller's child).
    NoSuchProcess = -6,
    /// No program of that name in the image.
    NoSuchProgram = -7,
    /// The program is not a loadable x86_64 ELF executable.
    BadProgram = -8,
    /// The caller has no children to wait for.
    NoChildren = -9,
    /// Not possible while the process has several threads.
    MultiThreaded = -10,
    /// Called outside a process (a kernel-run program).
    NotAProcess = -11,
    /// A PPC handle whose server is gone (or never was).
    StaleHandle = -12,
    /// The server died during the call.
    ServerDied = -13,
    /// The server is already serving a call on this CPU.
    Busy = -14,
    /// A message longer than the limit.
    TooLong = -15,
    /// The server has no such method (servers return this).
    NoSuchMethod = -16,
    /// The name server has no such name.
    NoSuchName = -17,
    /// A file handle this process does not hold (never had, or closed).
    BadHandle = -18,
    /// The handle lacks the right for this.
    NotPermitted = -19,
    /// The process holds the most handles allowed, or the machine the
    /// most file objects.
    TooManyHandles = -20,
    /// A write to a pipe no one can read any more.
    BrokenPipe = -21,
    /// Not possible without waiting, and the caller asked not to wait.
    WouldBlock = -22,
    /// A blocking call gave up waiting: a Linux signal the caller does
    /// not block is pending.
    Interrupted = -23,
    /// A terminal read from a process outside its foreground process
    /// group that ignores or blocks SIGTTIN (Linux EIO).
    Background = -24,
    /// A wait with a time limit reached it.
    TimedOut = -25,
}

impl SyscallError {
    /// The error for a raw negative result, if it is one.
    pub fn from_raw(raw: i64) -> Option<Self> {
        Some(match raw {
            -1 => Self::NoSuchCall,
            -2 => Self::BadAddress,
            -3 => Self::InvalidArgument,
            -4 => Self::ProcessLimit,
            -5 => Self::NoMemory,
            -6 => Self::NoSuchProcess,
            -7 => Self::NoSuchProgram,
            -8 => Self::BadProgram,
            -9 => Self::NoChildren,
            -10 => Self::MultiThreaded,
            -11 => Self::NotAProcess,
            -12 => Self::StaleHandle,
            -13 => Self::ServerDied,
            -14 => Self::Busy,
            -15 => Self::TooLong,
            -16 => Self::NoSuchMethod,
            -17 => Self::NoSuchName,
            -18 => Self::BadHandle,
            -19 => Self::NotPermitted,
            -20 => Self::TooManyHandles,
            -21 => Self::BrokenPipe,
            -22 => Self::WouldBlock,
            -23 => Self::Interrupted,
            -24 => Self::Background,
            -25 => Self::TimedOut,
            _ => return None,
        })
    }

    /// What the error means, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NoSuchCall => "no such system call",
            Self::BadAddress => "bad address",
            Self::InvalidArgument => "invalid argument",
            Self::ProcessLimit => "process limit reached",
            Self::NoMemory => "out of memory",
            Self::NoSuchProcess => "no such process",
            Self::NoSuchProgram => "no such program in the image",
            Self::BadProgram => "not a loadable program",
            Self::NoChildren => "no children",
            Self::MultiThreaded => "not allowed in a multithreaded process",
            Self::NotAProcess => "not a process",
            Self::StaleHandle => "stale handle",
            Self::ServerDied => "the server died",
            Self::Busy => "the server is busy on this CPU",
            Self::TooLong => "message too long",
            Self::NoSuchMethod => "no such method",
            Self::NoSuchName => "no such name",
            Self::BadHandle => "bad file handle",
            Self::NotPermitted => "not permitted by the handle's rights",
            Self::TooManyHandles => "too many file handles",
            Self::BrokenPipe => "broken pipe",
            Self::WouldBlock => "would block",
            Self::Interrupted => "interrupted by a signal",
            Self::Background => "a background process read the terminal",
            Self::TimedOut => "timed out",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_numbers_calls_densely_and_names_them_once() {
        for (i, &c) in Syscall::ALL.iter().enumerate() {
            assert_eq!(c as u64, i as u64, "{c:?} is out of order");
            assert_eq!(Syscall::from_raw(i as u64), Some(c));
            assert_eq!(Syscall::by_name(c.name()), Some(c));
            assert!(c.arg_count() <= MAX_ARGS);
        }
        assert_eq!(Syscall::from_raw(Syscall::ALL.len() as u64), None);
        assert_eq!(Syscall::from_raw(u64::MAX), None);
        assert_eq!(Syscall::FileRead.name(), "file.read");
        assert_eq!(Syscall::PpcCall.arg_count(), 5);
    }
}
