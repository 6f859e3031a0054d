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

/// Lowest address of user space.
pub const USER_BASE: u64 = 0x0000_0000_0040_0000;
/// End (exclusive) of user space.
pub const USER_TOP: u64 = 0x0000_7fff_ffff_f000;
/// Where the kernel maps the read-only [`ProgramInfo`] page.
pub const USER_INFO: u64 = 0x0000_0000_1000_0000;
/// Where the kernel maps a program's heap (`ProgramInfo::heap_size` bytes).
pub const USER_HEAP: u64 = 0x0000_0000_2000_0000;

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
    /// CPUs running this program at once (1, or all of them).
    pub cpus: u32,
    /// Zero.
    pub reserved: u32,
    /// TSC frequency in kHz, for timing with `rdtsc`.
    pub tsc_khz: u64,
    /// Heap mapped at [`USER_HEAP`], in bytes (zero-filled).
    pub heap_size: u64,
    /// Program arguments, meaning defined by each program.
    pub args: [u64; 8],
}

/// `ProgramInfo::magic`.
pub const PROGRAM_INFO_MAGIC: u64 = 0x4b34_3250_524f_4731; // "K42PROG1"

const _: () = assert!(core::mem::size_of::<ProgramInfo>() == 96);

/// System call numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Syscall {
    /// End the program with status `rdi` (0..=255).
    Exit = 0,
    /// Write `rsi` bytes of UTF-8 at `rdi` to the console.
    Write = 1,
    /// Report a benchmark result: a [`crate::bench::BenchRecord`] at
    /// `rdi`, `rsi` its size. The kernel forwards it to k42vmm.
    BenchRecord = 2,
    /// Return the index of the CPU the caller runs on.
    GetCpu = 3,
    /// Do nothing and return 0 (measures the system-call round trip).
    Null = 4,
    /// The caller has waited `rdi` rounds for another CPU: give the host
    /// CPU away for a while (backs off as `rdi` grows).
    Yield = 5,
    /// Where the trace region is mapped for this program
    /// ([`crate::trace::USER_VIEW_BASE`]), or 0 when tracing is off.
    TraceView = 6,
}

impl Syscall {
    pub fn from_raw(raw: u64) -> Option<Self> {
        Some(match raw {
            0 => Self::Exit,
            1 => Self::Write,
            2 => Self::BenchRecord,
            3 => Self::GetCpu,
            4 => Self::Null,
            5 => Self::Yield,
            6 => Self::TraceView,
            _ => return None,
        })
    }
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
}
