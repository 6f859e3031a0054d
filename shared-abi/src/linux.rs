//! The Linux personality's contract with the kernel: where the
//! personality lives in a Linux process, how `LinuxExec` hands a new
//! program its arguments, environment and the personality's inherited
//! state, and the memory-call flags.
//!
//! A Linux process is a k42 process whose address space also holds the
//! personality (image module [`PERSONALITY_MODULE`], a static ELF linked
//! at [`PERSONALITY_BASE`]). Its first instruction is the Linux
//! system-call entry, and the kernel points every CPU's `IA32_LSTAR` at
//! it: on KVM-PVM `syscall` from user mode lands there still in user
//! mode, so a Linux system call costs no kernel entry; the personality
//! serves it, calling the kernel and servers through k42 system calls
//! where it must.
//!
//! The kernel starts a Linux program at the personality's `_start` with
//! `rdi` = `USER_INFO`, `rsi` = the Linux initial stack pointer (at
//! `argc`) and `rdx` = the program's entry point; the personality sets
//! itself up and jumps to the entry.
//!
//! ```text
//! 0x0040_0000        the Linux program (its PT_LOAD segments, from its file)
//!   ... brk          the program break, grown by the personality
//! 0x1000_0000        ProgramInfo; the carried state at ARGS_OFFSET
//! 0x1000_1000        the signal page (LINUX_SIGNALS), shared with the kernel
//! 0x2000_0000        the personality's heap (k42_rt)
//! 0x4000_0000_0000   anonymous mmap (LINUX_MMAP_BASE, growing up)
//! 0x5000_0000_0000   a dynamically linked program's interpreter
//!                    (LINUX_INTERP_BASE: ld.so, placed by LinuxExec)
//! 0x6000_0000_0000   the personality (PERSONALITY_BASE): entry first
//! 0x7000_0000_0000   the trace region's header page, read-only, when
//!                    tracing is on (trace::USER_VIEW_BASE; INFO_TRACE_VIEW)
//! USER_TOP           the Linux stack (argc, argv, envp, auxv, strings)
//! ```

/// The image module holding the personality.
pub const PERSONALITY_MODULE: &str = "linux";
/// Where the personality is linked; its first byte is the system-call
/// entry (`IA32_LSTAR`).
pub const PERSONALITY_BASE: u64 = 0x0000_6000_0000_0000;
/// `ProgramInfo::args` index that tells the personality where the trace
/// region's header page (geometry and the class mask word, read-only) is
/// mapped in its process: `crate::trace::USER_VIEW_BASE`, or 0 when
/// tracing is off. The personality tests the `linux` class there before
/// logging a Linux call (`Syscall::LinuxTrace`), so a disabled class
/// costs a load. (`args[0]` and `args[1]` are the program's entry and
/// initial stack pointer.)
pub const INFO_TRACE_VIEW: usize = 2;
/// A Linux call number no Linux uses, which the personality's entry
/// answers with 0 at once (no frame, no service): the bare `syscall`
/// round trip `k42vmm bench --suite linux` measures (`k42-lbench bare`).
/// Host Linux answers it ENOSYS.
pub const BARE_SYSCALL: u64 = 0x4b42;
/// Where anonymous mappings without an address go (growing up).
pub const LINUX_MMAP_BASE: u64 = 0x0000_4000_0000_0000;
/// Where `LinuxExec` places a dynamically linked program's interpreter
/// (the dynamic linker, an `ET_DYN`): its `AT_BASE`.
pub const LINUX_INTERP_BASE: u64 = 0x0000_5000_0000_0000;
/// `LinuxExec`'s interpreter handle for a program that names none.
pub const NO_INTERPRETER: u64 = u64::MAX;
/// Size of a Linux process's stack region (pages are made when touched).
pub const LINUX_STACK_SIZE: u64 = 8 << 20;

/// Most bytes of arguments and environment strings an exec may pass
/// (more is E2BIG).
pub const MAX_EXEC_STRINGS: u64 = 128 * 1024;
/// Most bytes of personality state carried across an exec.
pub const MAX_CARRY: u64 = 3 * 1024;

/// The header of a `LinuxExec` block: then `argc` NUL-terminated
/// arguments, `envc` NUL-terminated `KEY=VALUE` strings, the exec path
/// (`execfn_len` bytes and a NUL), `carry_len` bytes of the
/// personality's state for the new program (its descriptors, working
/// directory, umask, signal dispositions: the personality's own format),
/// which the kernel puts at `USER_INFO + ARGS_OFFSET`, and `nkeep` file
/// handles (u64 each) the new program keeps: on success the kernel
/// closes every other handle of the process (close-on-exec).
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
pub struct ExecHeader {
    pub argc: u32,
    pub envc: u32,
    pub carry_len: u32,
    /// Bytes of the path the program was found by (`AT_EXECFN`), which
    /// follow the environment strings, NUL-terminated.
    pub execfn_len: u32,
    pub nkeep: u32,
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<ExecHeader>() == 24);

/// A Linux program's registers at a system call, as the personality's
/// entry saves them (in push order, lowest address first) and resumes
/// the program from them; also the first part of a [`ThreadStart`].
/// `rax` holds the call number, then the result.
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
pub struct UserRegs {
    pub rax: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub r10: u64,
    pub r8: u64,
    pub r9: u64,
    pub rbx: u64,
    pub rbp: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// The program's `rcx` and `r11` when it resumes (at a system call,
    /// the return address and flags, as `syscall` leaves them).
    pub rcx: u64,
    pub r11: u64,
    pub rflags: u64,
    /// Where the program resumes (after its `syscall`).
    pub rip: u64,
    pub rsp: u64,
}

const _: () = assert!(core::mem::size_of::<UserRegs>() == 18 * 8);

/// What `LinuxClone` starts a thread from: the registers it resumes
/// with (`rax`, `rcx` and `r11` are set as after `syscall`), its FS base
/// (the program's TLS; `u64::MAX`: the caller's) and GS base (the personality's per-thread
/// block), and up to three addresses that get its thread id (32 bits;
/// 0: none) before it runs.
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
pub struct ThreadStart {
    pub regs: UserRegs,
    pub fs_base: u64,
    pub gs_base: u64,
    pub set_tid: [u64; 3],
}

/// Most handles an exec may keep.
pub const MAX_KEEP: u32 = 1024;

/// `MemMap` flags: the address is required (replacing what is there).
pub const MAP_FIXED: u64 = 1;

/// `MemMapFile` protection-and-flags word: the address is required
/// (replacing what is there), as [`MAP_FIXED`] for `MemMap`.
pub const MAP_FILE_FIXED: u64 = 1 << 8;
/// `MemMapFile` protection-and-flags word: the file's own pages (writes
/// reach the file); without it the mapping is private (copy-on-write).
pub const MAP_FILE_SHARED: u64 = 1 << 9;

/// Where a Linux process's signal page is mapped (read-write): a
/// [`SignalPage`], the one frame the kernel and the personality share.
/// It belongs to the process, not to its memory: it survives exec
/// (pending signals, the mask and ignored signals carry over, as on
/// Linux; the kernel clears `caught`), and a forked child gets a copy
/// with nothing pending.
pub const LINUX_SIGNALS: u64 = crate::syscall::USER_INFO + crate::layout::PAGE_SIZE;

/// Linux signal state shared by the kernel and the personality, bit
/// `n - 1` for signal `n` (a Linux `sigset_t`).
///
/// The kernel sets `pending` bits when a signal is sent (`Signal`, a
/// child's SIGCHLD) and reads the other words to decide what a signal
/// does; the personality writes `blocked`, `caught` and `ignored` as the
/// program changes its mask and actions, and takes `pending` bits as it
/// delivers them (at the end of every Linux system call).
#[repr(C)]
pub struct SignalPage {
    /// Sent and not yet delivered.
    pub pending: core::sync::atomic::AtomicU64,
    /// The program's signal mask.
    pub blocked: core::sync::atomic::AtomicU64,
    /// Signals with a handler.
    pub caught: core::sync::atomic::AtomicU64,
    /// Signals set to SIG_IGN.
    pub ignored: core::sync::atomic::AtomicU64,
    /// The personality's user-access routines (its exception table, one
    /// entry): `[start, end, fixup]`. A page or protection fault the
    /// kernel cannot resolve, taken with `rip` in `[start, end)`, resumes
    /// the process at `fixup` (which makes the Linux call fail with
    /// EFAULT) instead of ending it. The personality writes them at
    /// start; a forked child's page copies them.
    pub uaccess: [core::sync::atomic::AtomicU64; 3],
    /// [`SIGNAL_NOCLDSTOP`] and other flags the personality keeps for the
    /// kernel.
    pub flags: core::sync::atomic::AtomicU64,
    /// The `siginfo` of the pending SIGCHLD, written by the kernel when
    /// it makes SIGCHLD pending (not when it already was, as Linux keeps
    /// the first): `[code | pid << 32, status]`, `code` a Linux `CLD_*`,
    /// `status` the exit status or the signal.
    pub sigchld: [core::sync::atomic::AtomicU64; 2],
    /// The personality's fault entry (0: none yet): a fault the kernel
    /// cannot resolve, taken by the program (not the personality), whose
    /// signal (SIGSEGV for a page or general protection fault, SIGILL for
    /// an invalid opcode, SIGFPE for a divide error) the program catches and does not block,
    /// resumes the program there with every register as it was but
    /// `rip`, after the kernel wrote [`SignalPage::fault`]; the
    /// personality delivers the signal to the handler with the fault's
    /// `siginfo`. Otherwise the fault ends the process as before. The
    /// personality writes it at start; a forked child's page copies it.
    pub fault_entry: core::sync::atomic::AtomicU64,
    /// The fault the personality is to deliver, as the kernel writes it:
    /// `[signal, si_code, si_addr, rip]` (`rip` where it was taken).
    pub fault: [core::sync::atomic::AtomicU64; 4],
}

/// [`SignalPage::flags`]: the SIGCHLD action has `SA_NOCLDSTOP` — no
/// SIGCHLD when a child stops or continues.
pub const SIGNAL_NOCLDSTOP: u64 = 1;

/// [`SignalPage::fault`] word: the signal.
pub const FAULT_SIGNAL: usize = 0;
/// [`SignalPage::fault`] word: Linux's `si_code`.
pub const FAULT_CODE: usize = 1;
/// [`SignalPage::fault`] word: Linux's `si_addr`.
pub const FAULT_ADDR: usize = 2;
/// [`SignalPage::fault`] word: where the fault was taken.
pub const FAULT_RIP: usize = 3;

/// Linux signal numbers are 1..=[`MAX_SIGNAL`].
pub const MAX_SIGNAL: u32 = 64;

/// The bit of signal `sig` (1..=64) in a [`SignalPage`] word.
pub const fn signal_bit(sig: u32) -> u64 {
    1 << (sig - 1)
}

/// What a signal does when it is neither caught nor ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultAction {
    /// End the process (also the signals whose Linux default is a core
    /// dump: no core files here).
    Terminate,
    /// Nothing (SIGCHLD, SIGURG, SIGWINCH, SIGCONT).
    Ignore,
    /// Stop the process (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) until
    /// SIGCONT.
    Stop,
}

/// The default action of signal `sig`.
pub const fn default_action(sig: u32) -> DefaultAction {
    use linux_raw_sys::general as g;
    match sig {
        g::SIGCHLD | g::SIGURG | g::SIGWINCH | g::SIGCONT => DefaultAction::Ignore,
        g::SIGSTOP | g::SIGTSTP | g::SIGTTIN | g::SIGTTOU => DefaultAction::Stop,
        _ => DefaultAction::Terminate,
    }
}
