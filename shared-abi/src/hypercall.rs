//! Hypercalls: how the guest asks the VMM for something.
//!
//! Protocol (one VM exit per call):
//!
//! 1. The guest fills a [`HypercallBlock`] (8-byte aligned, in RAM below
//!    4 GiB; each CPU keeps its own) with a [`HypercallNr`] and arguments.
//! 2. It writes the block's guest-physical address as a 32-bit value to
//!    I/O port [`PORT`] (`out dx, eax`).
//! 3. The VMM validates everything — the block address, the number, every
//!    address and length among the arguments — performs the call and stores
//!    a [`HypercallResult`] code (≥ 0 success, < 0 error) in `result`
//!    before the `out` instruction completes.
//!
//! Buffers named in arguments are guest-physical ranges that must lie
//! entirely in guest RAM. The VMM never crashes on a malformed call: it
//! answers with an error code.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The I/O port the guest writes a block address to.
pub const PORT: u16 = 0x0510;

/// Longest buffer accepted by [`HypercallNr::ConsoleWrite`].
pub const MAX_CONSOLE_WRITE: u64 = 64 * 1024;
/// Longest message accepted by [`HypercallNr::Panic`].
pub const MAX_PANIC_MESSAGE: u64 = 4096;
/// Longest test name accepted by [`HypercallNr::TestResult`].
pub const MAX_TEST_NAME: u64 = 128;
/// Most frames one [`HypercallNr::ZeroPages`] call clears.
pub const MAX_ZERO_PAGES: u64 = 64;
/// Most segments one [`HypercallNr::CopyMem`] call copies.
pub const MAX_COPY_SEGMENTS: u64 = 64;
/// Longest [`HypercallNr::CopyMem`] segment.
pub const MAX_COPY_SEGMENT: u64 = 4096;

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

/// Offset of `result` in the block, for the VMM's write-back.
pub const RESULT_OFFSET: u64 = 40;
const _: () = assert!(core::mem::offset_of!(HypercallBlock, result) as u64 == RESULT_OFFSET);

/// Hypercall numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum HypercallNr {
    /// Write `args[1]` bytes of UTF-8 at guest-physical `args[0]` to the
    /// console (at most [`MAX_CONSOLE_WRITE`]). Returns the byte count.
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
            _ => return None,
        })
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
        assert_eq!(HypercallNr::from_raw(17), None);
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
