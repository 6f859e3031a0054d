//! Hypercalls: how the guest asks the VMM for something.
//!
//! Protocol (one VM exit per call):
//!
//! 1. The guest fills a [`HypercallBlock`] (aligned to [`BLOCK_ALIGN`],
//!    anywhere in RAM; each call its own) with a [`HypercallNr`] and
//!    arguments.
//! 2. It writes the block's guest-physical address in units of
//!    [`BLOCK_ALIGN`] — `pa >> BLOCK_SHIFT`, see [`port_value`] — as a
//!    32-bit value to I/O port [`PORT`] (`out dx, eax`). Every address of
//!    the largest guest's RAM ([`crate::layout::MAX_RAM_END`]) fits, so no
//!    block is ever out of reach; a value is never truncated: an address
//!    that has no port value is refused by the guest before the `out`.
//! 3. The VMM takes the block at `value << BLOCK_SHIFT` ([`block_address`])
//!    and validates everything — the block address, the number, every
//!    address and length among the arguments — performs the call and stores
//!    a [`HypercallResult`] code (≥ 0 success, < 0 error) in `result`
//!    before the `out` instruction completes. When the block itself does
//!    not lie in RAM it stores the error code in `rax` instead (which
//!    otherwise keeps the port value).
//!
//! Buffers named in arguments are guest-physical ranges that must lie
//! entirely in guest RAM. The VMM never crashes on a malformed call: it
//! answers with an error code.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The I/O port the guest writes a block address to.
pub const PORT: u16 = 0x0510;

/// Where [`HypercallNr::ConsoleWrite`] puts its bytes (`args[2]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// k42vmm's standard output.
    Stdout = 0,
    /// k42vmm's standard error.
    Stderr = 1,
}

/// Longest buffer accepted by [`HypercallNr::ConsoleWrite`].
pub const MAX_CONSOLE_WRITE: u64 = 64 * 1024;
/// Longest message accepted by [`HypercallNr::Panic`].
pub const MAX_PANIC_MESSAGE: u64 = 4096;
/// Longest buffer [`HypercallNr::ConsoleRead`] fills.
pub const MAX_CONSOLE_READ: u64 = 4096;
/// What [`HypercallNr::ConsoleRead`] returns once the host's input has
/// ended and every byte of it was read (end of file).
pub const CONSOLE_END: i64 = 1 << 32;
/// What [`HypercallNr::ConsoleRead`] returns, with the rows in bits
/// 16–31 and the columns in bits 0–15 (nothing copied), when the host
/// terminal's window size changed since the guest last read (it comes
/// before the bytes still waiting).
pub const CONSOLE_RESIZE: i64 = 1 << 33;
/// The interrupt vector k42vmm sends vCPU 0 (an MSI to APIC id 0) when
/// console input arrives or ends, once the guest enabled input
/// ([`crate::BootInfo::console_input`] set).
pub const CONSOLE_INPUT_VECTOR: u8 = 0x47;
/// Longest test name accepted by [`HypercallNr::TestResult`].
pub const MAX_TEST_NAME: u64 = 128;
/// Most frames one [`HypercallNr::ZeroPages`] call clears.
pub const MAX_ZERO_PAGES: u64 = 64;
/// Most segments one [`HypercallNr::CopyMem`] call copies.
pub const MAX_COPY_SEGMENTS: u64 = 64;
/// Longest [`HypercallNr::CopyMem`] segment.
pub const MAX_COPY_SEGMENT: u64 = 4096;

/// Where a Linux program's `syscall` instruction lands on this host, as
/// the kernel found at the first one (docs/LINUX.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum LinuxSyscallPath {
    /// At `IA32_LSTAR` still in user mode (KVM-PVM): LSTAR is the
    /// personality's entry, and a Linux call enters no kernel.
    UserMode = 1,
    /// In ring 0 at `IA32_LSTAR` (VT-x, SVM): the kernel's entry returns
    /// to user mode at the personality's entry with the registers
    /// `syscall` left.
    KernelReflects = 2,
}

impl LinuxSyscallPath {
    /// The path numbered `raw`, if any.
    pub const fn from_raw(raw: u64) -> Option<Self> {
        Some(match raw {
            1 => Self::UserMode,
            2 => Self::KernelReflects,
            _ => return None,
        })
    }
}

/// log2 of [`BLOCK_ALIGN`]: the port value is a block's guest-physical
/// address shifted right by this.
pub const BLOCK_SHIFT: u32 = 7;
/// Alignment (and size) of a [`HypercallBlock`], the unit of port values.
pub const BLOCK_ALIGN: u64 = 1 << BLOCK_SHIFT;

/// The port value that names a block at guest-physical `pa`; `None` when
/// `pa` is not [`BLOCK_ALIGN`]-aligned or lies beyond what 32 bits of
/// [`BLOCK_ALIGN`] units reach (never RAM: see below).
pub const fn port_value(pa: u64) -> Option<u32> {
    if !pa.is_multiple_of(BLOCK_ALIGN) || pa >> BLOCK_SHIFT > u32::MAX as u64 {
        None
    } else {
        Some((pa >> BLOCK_SHIFT) as u32)
    }
}

/// Guest-physical address of the block a port value names.
pub const fn block_address(value: u32) -> u64 {
    (value as u64) << BLOCK_SHIFT
}

// Every block in the largest guest's RAM has a port value.
const _: () = assert!(crate::layout::MAX_RAM_END >> BLOCK_SHIFT <= u32::MAX as u64);

/// The request block a hypercall's port write points at.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(8))]
pub struct HypercallBlock {
    /// A [`HypercallNr`] value.
    pub nr: u32,
    /// Zero.
    pub reserved: u32,
    /// Arguments; their meaning depends on `nr`.
    pub args: [u64; 4],
    /// Written by the VMM: ≥ 0 on success, a negative [`HypercallResult`]
    /// on failure.
    pub result: i64,
}

const _: () = assert!(core::mem::size_of::<HypercallBlock>() == 48);

impl HypercallBlock {
    /// A block for call number `nr` (raw, so that tests can send numbers
    /// the ABI does not define) with `args`; every other field zero.
    pub const fn new(nr: u32, args: [u64; 4]) -> Self {
        Self {
            nr,
            reserved: 0,
            args,
            result: 0,
        }
    }
}

/// Where the guest keeps a block it sends: [`BLOCK_ALIGN`]-aligned, so
/// that its address has a port value. Only the block's 48 bytes are the
/// request (the rest is alignment, never written or read: filling it
/// cost ~15 µs per hypercall with the kernel emulated).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(128))]
pub struct AlignedBlock(pub HypercallBlock);

const _: () = assert!(core::mem::align_of::<AlignedBlock>() == BLOCK_ALIGN as usize);

pub const RESULT_OFFSET: u64 = 40;
const _: () = assert!(core::mem::offset_of!(HypercallBlock, result) as u64 == RESULT_OFFSET);

/// Hypercall numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum HypercallNr {
    /// Write `args[1]` bytes at guest-physical `args[0]` (at most
    /// [`MAX_CONSOLE_WRITE`]; a Linux program's output, any bytes) to the
    /// console: k42vmm's stdout, or its stderr when `args[2]` is
    /// [`Stream::Stderr`]. Returns the byte count.
    ConsoleWrite = 1,
    /// Stop the VM; `args[0]` (0..=255) becomes k42vmm's exit code.
    Shutdown = 2,
    /// Report a kernel panic: message of `args[1]` bytes at `args[0]` (at
    /// most [`MAX_PANIC_MESSAGE`]). Stops the VM with exit code 101.
    Panic = 3,
    /// Copy the [`crate::BootInfo`] to guest-physical `args[0]`, whose
    /// length `args[1]` must equal `size_of::<BootInfo>()`.
    BootInfo = 4,
    /// The calling vCPU, whose index is `args[0]`, is online.
    CpuOnline = 5,
    /// Start all application processors (vCPU 0 only, once).
    StartAps = 6,
    /// The caller has spun `args[0]` times on a contended resource: give
    /// the host CPU to another vCPU for a while (backs off as `args[0]`
    /// grows).
    Yield = 7,
    /// Record an in-kernel test result: name of `args[1]` bytes at
    /// `args[0]` (at most [`MAX_TEST_NAME`]), `args[2]` 1 if it passed,
    /// `args[3]` its duration in nanoseconds.
    TestResult = 8,
    /// Copy the [`crate::Topology`] to guest-physical `args[0]`, whose
    /// length `args[1]` must equal `size_of::<Topology>()`.
    Topology = 9,
    /// Register the trace region (see [`crate::trace`]): guest-physical
    /// `args[0]` (page-aligned), `args[1]` bytes, starting with a valid
    /// [`crate::trace::RegionHeader`]. Once per boot. k42vmm writes the
    /// class mask it wants into the region before it returns.
    TraceRegister = 10,
    /// Report how fast guest supervisor code runs: `args[0]` iterations of
    /// the calibration loop (`bench` loop `spin`) took `args[1]` ns.
    PlatformInfo = 12,
    /// Record a benchmark result: a [`crate::bench::BenchRecord`] at
    /// guest-physical `args[0]`, `args[1]` its size.
    BenchRecord = 13,
    /// Do nothing and return 0 (measures the hypercall round trip).
    Nop = 14,
    /// Clear 4 KiB frames: `args[1]` (at most [`MAX_ZERO_PAGES`])
    /// page-aligned guest-physical addresses, as `u64`s at guest-physical
    /// `args[0]`. Every address is checked before any frame is touched.
    /// Returns the count. (A kernel running emulated clears a page at
    /// about a microsecond per 8 bytes; the host does it at memory speed.)
    ZeroPages = 15,
    /// Copy memory: `args[1]` (at most [`MAX_COPY_SEGMENTS`]) segments,
    /// each three `u64`s (destination, source, length — at most
    /// [`MAX_COPY_SEGMENT`]) of guest-physical addresses, at
    /// guest-physical `args[0]`. Every range is checked before any byte
    /// is copied. Returns the bytes copied. (As with `ZeroPages`, the
    /// guest must never aim it at a page table: KVM-PVM's shadow paging
    /// does not see the host's writes.)
    CopyMem = 16,
    /// Read console input (the host's stdin, forwarded by k42vmm when
    /// [`crate::BootInfo::console_input`] is set): up to `args[1]` bytes
    /// (at most [`MAX_CONSOLE_READ`]) of what has arrived, in order, to
    /// guest-physical `args[0]`. Returns the bytes copied — 0 when none
    /// is waiting — or [`CONSOLE_END`] once the input has ended and all
    /// of it was read, or a [`CONSOLE_RESIZE`] word. Never blocks: k42vmm sends
    /// [`CONSOLE_INPUT_VECTOR`] to vCPU 0 when more arrives.
    ConsoleRead = 17,
    /// Where a Linux `syscall` lands on this host, a [`LinuxSyscallPath`]
    /// in `args[0]`: sent once, when the kernel first sees one.
    LinuxSyscallPath = 18,
}

impl HypercallNr {
    /// Decode a raw number; `None` for numbers this ABI does not define.
    pub fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::ConsoleWrite,
            2 => Self::Shutdown,
            3 => Self::Panic,
            4 => Self::BootInfo,
            5 => Self::CpuOnline,
            6 => Self::StartAps,
            7 => Self::Yield,
            8 => Self::TestResult,
            9 => Self::Topology,
            10 => Self::TraceRegister,
            12 => Self::PlatformInfo,
            13 => Self::BenchRecord,
            14 => Self::Nop,
            15 => Self::ZeroPages,
            16 => Self::CopyMem,
            17 => Self::ConsoleRead,
            18 => Self::LinuxSyscallPath,
            _ => return None,
        })
    }
}

/// A hypercall and its arguments, made by one constructor per call, so
/// that what each argument slot means is written once (here) and not at
/// every call site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hypercall {
    pub nr: HypercallNr,
    pub args: [u64; 4],
}

impl Hypercall {
    const fn new(nr: HypercallNr, args: [u64; 4]) -> Self {
        Self { nr, args }
    }

    /// [`HypercallNr::ConsoleWrite`]: `len` bytes at `pa` to `stream`.
    pub const fn console_write(pa: u64, len: u64, stream: Stream) -> Self {
        Self::new(HypercallNr::ConsoleWrite, [pa, len, stream as u64, 0])
    }

    /// [`HypercallNr::ConsoleRead`] into `len` bytes at `pa`.
    pub const fn console_read(pa: u64, len: u64) -> Self {
        Self::new(HypercallNr::ConsoleRead, [pa, len, 0, 0])
    }

    /// [`HypercallNr::Shutdown`] with exit code `code`.
    pub const fn shutdown(code: u8) -> Self {
        Self::new(HypercallNr::Shutdown, [code as u64, 0, 0, 0])
    }

    /// [`HypercallNr::Panic`]: message of `len` bytes at `pa`.
    pub const fn panic(pa: u64, len: u64) -> Self {
        Self::new(HypercallNr::Panic, [pa, len, 0, 0])
    }

    /// [`HypercallNr::BootInfo`] into `len` bytes at `pa`.
    pub const fn boot_info(pa: u64, len: u64) -> Self {
        Self::new(HypercallNr::BootInfo, [pa, len, 0, 0])
    }

    /// [`HypercallNr::CpuOnline`] for vCPU `cpu`.
    pub const fn cpu_online(cpu: u32) -> Self {
        Self::new(HypercallNr::CpuOnline, [cpu as u64, 0, 0, 0])
    }

    /// [`HypercallNr::StartAps`].
    pub const fn start_aps() -> Self {
        Self::new(HypercallNr::StartAps, [0; 4])
    }

    /// [`HypercallNr::Yield`] after waiting `round` rounds.
    pub const fn yield_host(round: u32) -> Self {
        Self::new(HypercallNr::Yield, [round as u64, 0, 0, 0])
    }

    /// [`HypercallNr::TestResult`]: test named by `len` bytes at `pa`,
    /// whether it `passed`, in `ns` nanoseconds.
    pub const fn test_result(pa: u64, len: u64, passed: bool, ns: u64) -> Self {
        Self::new(HypercallNr::TestResult, [pa, len, passed as u64, ns])
    }

    /// [`HypercallNr::Topology`] into `len` bytes at `pa`.
    pub const fn topology(pa: u64, len: u64) -> Self {
        Self::new(HypercallNr::Topology, [pa, len, 0, 0])
    }

    /// [`HypercallNr::TraceRegister`]: the region of `len` bytes at `pa`.
    pub const fn trace_register(pa: u64, len: u64) -> Self {
        Self::new(HypercallNr::TraceRegister, [pa, len, 0, 0])
    }

    /// [`HypercallNr::PlatformInfo`]: `iterations` of the calibration
    /// loop took `ns` nanoseconds.
    pub const fn platform_info(iterations: u64, ns: u64) -> Self {
        Self::new(HypercallNr::PlatformInfo, [iterations, ns, 0, 0])
    }

    /// [`HypercallNr::LinuxSyscallPath`]: a Linux `syscall` takes `path`.
    pub const fn linux_syscall_path(path: LinuxSyscallPath) -> Self {
        Self::new(HypercallNr::LinuxSyscallPath, [path as u64, 0, 0, 0])
    }

    /// [`HypercallNr::BenchRecord`]: `len` bytes at `pa`.
    pub const fn bench_record(pa: u64, len: u64) -> Self {
        Self::new(HypercallNr::BenchRecord, [pa, len, 0, 0])
    }

    /// [`HypercallNr::Nop`].
    pub const fn nop() -> Self {
        Self::new(HypercallNr::Nop, [0; 4])
    }

    /// [`HypercallNr::ZeroPages`]: `count` frame addresses listed at
    /// `list_pa`.
    pub const fn zero_pages(list_pa: u64, count: u64) -> Self {
        Self::new(HypercallNr::ZeroPages, [list_pa, count, 0, 0])
    }

    /// [`HypercallNr::CopyMem`]: `count` segments listed at `list_pa`.
    pub const fn copy_mem(list_pa: u64, count: u64) -> Self {
        Self::new(HypercallNr::CopyMem, [list_pa, count, 0, 0])
    }
}

/// Error codes a hypercall can return (negated in `result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum HypercallResult {
    /// Success.
    Ok = 0,
    /// The number names no hypercall.
    NoSuchCall = -1,
    /// An address or range does not lie in guest RAM.
    BadAddress = -2,
    /// An argument is invalid (wrong length, out of range, not UTF-8).
    InvalidArgument = -3,
    /// A length exceeds the call's limit.
    TooLong = -4,
    /// The call is not allowed from this vCPU or at this time.
    NotPermitted = -5,
}

impl HypercallResult {
    /// Decode a result code; `None` when it is not one of the codes.
    pub fn from_raw(raw: i64) -> Option<Self> {
        Some(match raw {
            0 => Self::Ok,
            -1 => Self::NoSuchCall,
            -2 => Self::BadAddress,
            -3 => Self::InvalidArgument,
            -4 => Self::TooLong,
            -5 => Self::NotPermitted,
            _ => return None,
        })
    }

    /// A short description for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NoSuchCall => "no such hypercall",
            Self::BadAddress => "bad guest address",
            Self::InvalidArgument => "invalid argument",
            Self::TooLong => "length over the limit",
            Self::NotPermitted => "not permitted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for raw in 0..32 {
            if let Some(nr) = HypercallNr::from_raw(raw) {
                assert_eq!(nr as u32, raw);
            }
        }
        assert_eq!(HypercallNr::from_raw(0), None);
        assert_eq!(HypercallNr::from_raw(19), None);
    }

    #[test]
    fn port_values_reach_all_ram() {
        use crate::layout::{HIGH_RAM_BASE, MAX_RAM_END};
        assert_eq!(port_value(0x1000), Some(0x20));
        assert_eq!(block_address(0x20), 0x1000);
        assert_eq!(port_value(0x1004), None);
        assert_eq!(port_value(0x1040), None);
        let top = MAX_RAM_END - BLOCK_ALIGN;
        assert_eq!(port_value(top).map(block_address), Some(top));
        let high = HIGH_RAM_BASE + 0x80;
        assert_eq!(port_value(high).map(block_address), Some(high));
        assert_eq!(block_address(u32::MAX), (1 << 39) - BLOCK_ALIGN);
        assert_eq!(port_value(1 << 39), None);
        assert_eq!(port_value(!(BLOCK_ALIGN - 1)), None);
    }

    #[test]
    fn a_block_is_48_bytes_kept_at_its_alignment() {
        let b = HypercallBlock::new(HypercallNr::Nop as u32, [1, 2, 3, 4]);
        assert_eq!(b.as_bytes().len(), 48);
        let kept = AlignedBlock(b);
        assert_eq!(
            &kept as *const AlignedBlock as usize % BLOCK_ALIGN as usize,
            0
        );
        assert_eq!(HypercallBlock::read_from_bytes(b.as_bytes()).unwrap(), b);
        assert_eq!(
            b,
            HypercallBlock {
                nr: 14,
                args: [1, 2, 3, 4],
                ..Default::default()
            }
        );
    }

    #[test]
    fn results_round_trip() {
        for raw in -8..=1 {
            if let Some(r) = HypercallResult::from_raw(raw) {
                assert_eq!(r as i64, raw);
            }
        }
        assert_eq!(HypercallResult::from_raw(1), None);
    }
}
