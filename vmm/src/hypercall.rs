//! Hypercall handling: decode the request block a guest `out` points at,
//! validate every field, act, and write the result code back.
//!
//! Nothing a guest writes can crash k42vmm: a port value naming a block
//! outside RAM gets its error code in `rax`; a bad number, address, length
//! or value gets a negative [`HypercallResult`] in the block.

use std::io::Write;
use std::time::Duration;

use k42_abi::bench::{BenchMode, BenchRecord};
use k42_abi::hypercall::{
    self as abi, HypercallBlock, HypercallNr, HypercallResult, LinuxSyscallPath, RESULT_OFFSET,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::console::Taken;
use crate::exit::ExitReason;
use crate::report::{BenchResult, TestRecord};
use crate::run_state::VmShared;

/// What the vCPU does after a hypercall.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// The VM is stopping (shutdown or panic): leave the run loop.
    Stop,
    /// The block itself is unusable; this error code goes to `rax`.
    BadBlock(i64),
}

type CallResult = Result<i64, HypercallResult>;

/// Handle the hypercall whose port value is `value` (the block's
/// guest-physical address in units of its alignment), made by vCPU `vcpu`.
pub fn handle(shared: &VmShared, vcpu: u32, value: u32) -> Outcome {
    // Aligned by construction; a block outside RAM (past its end, or in
    // the MMIO hole) is refused.
    let gpa = abi::block_address(value);
    let mut raw = [0u8; std::mem::size_of::<HypercallBlock>()];
    if shared.ram.read(gpa, &mut raw).is_err() {
        return Outcome::BadBlock(HypercallResult::BadAddress as i64);
    }
    let block = HypercallBlock::read_from_bytes(&raw).expect("size checked");
    let (result, outcome) = match HypercallNr::from_raw(block.nr) {
        _ if block.reserved != 0 => (Err(HypercallResult::InvalidArgument), Outcome::Continue),
        None => (Err(HypercallResult::NoSuchCall), Outcome::Continue),
        Some(nr) => dispatch(shared, vcpu, nr, &block.args),
    };
    let code = result.unwrap_or_else(|e| e as i64);
    // The block was readable a moment ago, so this write stays in RAM.
    let _ = shared.ram.write(gpa + RESULT_OFFSET, code.as_bytes());
    outcome
}

fn dispatch(
    shared: &VmShared,
    vcpu: u32,
    nr: HypercallNr,
    args: &[u64; 4],
) -> (CallResult, Outcome) {
    let ram = shared.ram;
    let read = |gpa: u64, len: u64, limit: u64| -> Result<Vec<u8>, HypercallResult> {
        if len > limit {
            return Err(HypercallResult::TooLong);
        }
        ram.read_vec(gpa, len, limit)
            .map_err(|_| HypercallResult::BadAddress)
    };
    let cont = |r: CallResult| (r, Outcome::Continue);
    match nr {
        HypercallNr::ConsoleWrite => cont(match args[2] {
            0 | 1 => read(args[0], args[1], abi::MAX_CONSOLE_WRITE).map(|bytes| {
                // Bytes as they are: a Linux program's output need not be
                // text.
                if args[2] == abi::Stream::Stderr as u64 {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(&bytes);
                    let _ = err.flush();
                } else {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&bytes);
                    let _ = out.flush();
                }
                bytes.len() as i64
            }),
            _ => Err(HypercallResult::InvalidArgument),
        }),
        HypercallNr::Shutdown => match u8::try_from(args[0]) {
            Ok(code) => {
                shared.exit.decide(ExitReason::Shutdown(code));
                (Ok(0), Outcome::Stop)
            }
            Err(_) => cont(Err(HypercallResult::InvalidArgument)),
        },
        HypercallNr::Panic => {
            let message = match read(args[0], args[1], abi::MAX_PANIC_MESSAGE) {
                Ok(b) => String::from_utf8_lossy(&b).trim_end().to_string(),
                Err(e) => format!("(panic message unreadable: {})", e.describe()),
            };
            shared.exit.decide(ExitReason::Panic { vcpu, message });
            (Ok(0), Outcome::Stop)
        }
        HypercallNr::BootInfo => cont(boot_info(shared, args[0], args[1])),
        HypercallNr::Topology => cont(topology(shared, args[0], args[1])),
        HypercallNr::CpuOnline => cont(if args[0] != vcpu as u64 {
            Err(HypercallResult::InvalidArgument)
        } else if shared.mark_online(vcpu) {
            Ok(0)
        } else {
            Err(HypercallResult::NotPermitted)
        }),
        HypercallNr::StartAps => cont(if vcpu != 0 {
            Err(HypercallResult::NotPermitted)
        } else if shared.ap_gate.open() {
            Ok(0)
        } else {
            Err(HypercallResult::NotPermitted)
        }),
        HypercallNr::Yield => {
            back_off(args[0]);
            cont(Ok(0))
        }
        HypercallNr::PlatformInfo => cont(if vcpu != 0 || args[0] == 0 {
            Err(HypercallResult::InvalidArgument)
        } else {
            let _ = shared.guest_spin.set((args[0], args[1]));
            Ok(0)
        }),
        HypercallNr::LinuxSyscallPath => cont(match LinuxSyscallPath::from_raw(args[0]) {
            Some(path) => {
                let _ = shared.linux_syscall.set(path);
                Ok(0)
            }
            None => Err(HypercallResult::InvalidArgument),
        }),
        HypercallNr::BenchRecord => cont(bench_record(shared, args[0], args[1])),
        HypercallNr::Nop => cont(Ok(0)),
        HypercallNr::ZeroPages => cont(zero_pages(shared, args[0], args[1])),
        HypercallNr::CopyMem => cont(copy_mem(shared, args[0], args[1])),
        HypercallNr::ConsoleRead => cont(console_read(shared, args[0], args[1])),
        HypercallNr::TraceRegister => cont(
            match shared
                .trace
                .register(shared.ram, shared.vcpus, args[0], args[1])
            {
                HypercallResult::Ok => Ok(0),
                e => Err(e),
            },
        ),
        HypercallNr::TestResult => cont(read(args[0], args[1], abi::MAX_TEST_NAME).and_then(|b| {
            let name = String::from_utf8(b).map_err(|_| HypercallResult::InvalidArgument)?;
            if name.is_empty() || args[2] > 1 {
                return Err(HypercallResult::InvalidArgument);
            }
            shared.record_test(TestRecord {
                name,
                passed: args[2] == 1,
                ms: args[3] as f64 / 1e6,
                vcpu,
            });
            Ok(0)
        })),
    }
}

fn bench_record(shared: &VmShared, gpa: u64, len: u64) -> CallResult {
    if len != std::mem::size_of::<BenchRecord>() as u64 {
        return Err(HypercallResult::InvalidArgument);
    }
    let bytes = shared
        .ram
        .read_vec(gpa, len, len)
        .map_err(|_| HypercallResult::BadAddress)?;
    let rec = BenchRecord::read_from_bytes(&bytes).map_err(|_| HypercallResult::InvalidArgument)?;
    let (Some(name), Some(mode)) = (rec.name(), BenchMode::from_raw(rec.mode)) else {
        return Err(HypercallResult::InvalidArgument);
    };
    if rec.cpu >= shared.vcpus {
        return Err(HypercallResult::InvalidArgument);
    }
    shared.record_bench(BenchResult {
        name: name.to_string(),
        cpu: rec.cpu,
        mode: mode.name().to_string(),
        iterations: rec.iterations,
        elapsed_ns: rec.elapsed_ns,
    });
    Ok(0)
}

/// Clear the frames listed at `gpa` (`count` u64 addresses), all checked
/// first so that a bad list changes nothing.
fn zero_pages(shared: &VmShared, gpa: u64, count: u64) -> CallResult {
    const PAGE: u64 = 4096;
    if count > abi::MAX_ZERO_PAGES {
        return Err(HypercallResult::TooLong);
    }
    let list = shared
        .ram
        .read_vec(gpa, count * 8, abi::MAX_ZERO_PAGES * 8)
        .map_err(|_| HypercallResult::BadAddress)?;
    let frames: Vec<u64> = list
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    if frames.iter().any(|&f| !f.is_multiple_of(PAGE)) {
        return Err(HypercallResult::InvalidArgument);
    }
    if frames.iter().any(|&f| !shared.ram.contains(f, PAGE)) {
        return Err(HypercallResult::BadAddress);
    }
    static ZERO: [u8; PAGE as usize] = [0; PAGE as usize];
    for &f in &frames {
        shared
            .ram
            .write(f, &ZERO)
            .map_err(|_| HypercallResult::BadAddress)?;
    }
    Ok(count as i64)
}

/// Copy the segments listed at `gpa` (`count` triples of destination,
/// source, length), all checked first so that a bad list changes
/// nothing.
fn copy_mem(shared: &VmShared, gpa: u64, count: u64) -> CallResult {
    if count > abi::MAX_COPY_SEGMENTS {
        return Err(HypercallResult::TooLong);
    }
    let list = shared
        .ram
        .read_vec(gpa, count * 24, abi::MAX_COPY_SEGMENTS * 24)
        .map_err(|_| HypercallResult::BadAddress)?;
    let word =
        |c: &[u8], i: usize| u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let segs: Vec<(u64, u64, u64)> = list
        .chunks_exact(24)
        .map(|c| (word(c, 0), word(c, 1), word(c, 2)))
        .collect();
    if segs.iter().any(|s| s.2 > abi::MAX_COPY_SEGMENT) {
        return Err(HypercallResult::TooLong);
    }
    if segs
        .iter()
        .any(|&(d, s, n)| !shared.ram.contains(d, n) || !shared.ram.contains(s, n))
    {
        return Err(HypercallResult::BadAddress);
    }
    let mut total = 0;
    for &(d, s, n) in &segs {
        let bytes = shared
            .ram
            .read_vec(s, n, abi::MAX_COPY_SEGMENT)
            .map_err(|_| HypercallResult::BadAddress)?;
        shared
            .ram
            .write(d, &bytes)
            .map_err(|_| HypercallResult::BadAddress)?;
        total += n;
    }
    Ok(total as i64)
}

/// Copy up to `len` bytes of console input to `gpa`: the count, 0 when
/// none is waiting, or CONSOLE_END once it ended and all was read.
/// Refused when k42vmm does not forward its stdin (no `-- COMMAND`).
fn console_read(shared: &VmShared, gpa: u64, len: u64) -> CallResult {
    let Some(console) = shared.console else {
        return Err(HypercallResult::NotPermitted);
    };
    if len > abi::MAX_CONSOLE_READ {
        return Err(HypercallResult::TooLong);
    }
    if !shared.ram.contains(gpa, len) {
        return Err(HypercallResult::BadAddress);
    }
    match console
        .queue
        .take(len as usize, |b| shared.ram.write(gpa, b))
    {
        Ok(Taken::Bytes(n)) => Ok(n as i64),
        Ok(Taken::Empty) => Ok(0),
        Ok(Taken::End) => Ok(abi::CONSOLE_END),
        Ok(Taken::Resize(rows, cols)) => {
            Ok(abi::CONSOLE_RESIZE | i64::from(rows) << 16 | i64::from(cols))
        }
        Err(_) => Err(HypercallResult::BadAddress),
    }
}

fn boot_info(shared: &VmShared, gpa: u64, len: u64) -> CallResult {
    let mut bi = shared.layout.boot_info;
    if len != std::mem::size_of_val(&bi) as u64 {
        return Err(HypercallResult::InvalidArgument);
    }
    bi.tsc_khz = shared.tsc_khz.get().copied().unwrap_or(0) as u64;
    bi.realtime_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    shared
        .ram
        .write(gpa, bi.as_bytes())
        .map_err(|_| HypercallResult::BadAddress)?;
    Ok(0)
}

fn topology(shared: &VmShared, gpa: u64, len: u64) -> CallResult {
    let record = &shared.topology;
    if len != std::mem::size_of_val(record) as u64 {
        return Err(HypercallResult::InvalidArgument);
    }
    shared
        .ram
        .write(gpa, record.as_bytes())
        .map_err(|_| HypercallResult::BadAddress)?;
    Ok(0)
}

/// Give the host CPU away: yields first, then sleeps growing from 20 µs
/// to 1 ms, so that a vCPU waiting on a lock whose holder was descheduled
/// lets the holder run.
fn back_off(round: u64) {
    if round < 4 {
        std::thread::yield_now();
    } else {
        let us = (20u64 << (round - 4).min(6)).min(1000);
        std::thread::sleep(Duration::from_micros(us));
    }
}
