//! `probe=pvm` / `probe=pvm-register`: look for a guest-visible PVM
//! interface on this host.
//!
//! A PVM-aware kernel could run its supervisor mode natively, but only if
//! the host shows it the PVM ABI: a hypervisor CPUID leaf with the PVM
//! signature and PVM MSRs (PVCS, event entry, RETU RIP, features). Both
//! public ABI generations are checked:
//!
//! - 2024 RFC: CPUID 0x40000002, MSRs 0x4b564df0..0x4b564dff;
//! - `PVM_ABI_VERSION` 1: CPUID 0x40000200 ("PVMPVMPVM"), MSRs
//!   0x4b564d20..0x4b564d23;
//!
//! and the block this host's fork answers to, 0x4b564d10..0x4b564d1f.
//! `pvm-register` then writes a page address to 0x4b564d10, the one
//! guest-writable MSR of that block (see docs/PLATFORM.md for what
//! happens: run it with `--timeout`).
//!
//! The probe prints one line per fact and the supervisor loop speed.

use crate::arch::{self, x86_64::msr};
use crate::{println, time};

/// The fork's MSR block (0x4b564d11 reads "PVM").
const FORK_BLOCK: core::ops::Range<u32> = 0x4b56_4d10..0x4b56_4d20;
/// The `PVM_ABI_VERSION` 1 registration MSRs.
const ABI1_MSRS: core::ops::Range<u32> = 0x4b56_4d20..0x4b56_4d24;
/// The 2024 RFC's MSRs.
const RFC_MSRS: core::ops::Range<u32> = 0x4b56_4df0..0x4b56_4e00;

fn signature(leaf: u32) -> ([u8; 12], u32) {
    let r = arch::cpuid(leaf, 0);
    let mut s = [0u8; 12];
    s[..4].copy_from_slice(&r.ebx.to_le_bytes());
    s[4..8].copy_from_slice(&r.ecx.to_le_bytes());
    s[8..].copy_from_slice(&r.edx.to_le_bytes());
    (s, r.eax)
}

fn printable(s: &[u8; 12]) -> &str {
    let end = s.iter().position(|&b| !b.is_ascii_graphic()).unwrap_or(12);
    core::str::from_utf8(&s[..end]).unwrap_or("?")
}

/// What the probe found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Findings {
    /// A PVM signature in a hypervisor CPUID leaf.
    pub cpuid_signature: bool,
    /// Upstream (either generation) PVM MSRs that answer.
    pub upstream_msrs: u32,
    /// Readable MSRs of the fork's block.
    pub fork_msrs: u32,
}

/// Run the probe.
pub fn pvm(register: bool) -> Findings {
    let mut f = Findings::default();
    println!(
        "probe: CPUID.1:ECX[31] (hypervisor) = {}",
        (arch::cpuid(1, 0).ecx >> 31) & 1
    );
    for leaf in [
        0x4000_0000,
        0x4000_0001,
        0x4000_0002,
        0x4000_0100,
        0x4000_0200,
        0x4000_0201,
    ] {
        let (sig, eax) = signature(leaf);
        let pvm = &sig[..3] == b"PVM";
        f.cpuid_signature |= pvm;
        println!(
            "probe: cpuid {leaf:#x}: eax {eax:#x} signature '{}'{}",
            printable(&sig),
            if pvm { " (PVM)" } else { "" }
        );
    }
    let mut tried = 0;
    let mut readable = 0;
    for m in (0x4b56_4d00..0x4b56_4d40).chain(RFC_MSRS) {
        tried += 1;
        let upstream = ABI1_MSRS.contains(&m) || RFC_MSRS.contains(&m);
        match msr::read(m) {
            Some(v) => {
                readable += 1;
                f.upstream_msrs += upstream as u32;
                f.fork_msrs += FORK_BLOCK.contains(&m) as u32;
                println!("probe: msr {m:#x} reads {v:#x}");
            }
            // Upstream registration MSRs may be write-only: zero means
            // "not registered", so writing it is harmless.
            // SAFETY: see above; only upstream registration MSRs are written.
            None if upstream && unsafe { msr::write(m, 0) } => {
                f.upstream_msrs += 1;
                println!("probe: msr {m:#x} accepts writes");
            }
            None => {}
        }
    }
    println!(
        "probe: {readable} of {tried} MSRs in 0x4b564d00-0x4b564d3f and 0x4b564df0-0x4b564dff are readable"
    );
    let spins = 2_000;
    let t0 = arch::read_tsc();
    core::hint::black_box(k42_loops::spin(spins));
    let ns = time::ticks_to_ns(arch::read_tsc() - t0);
    println!(
        "probe: supervisor spin loop: {} ns per iteration",
        ns / spins
    );
    println!(
        "probe: upstream PVM interface (CPUID signature or MSRs): {}; fork MSR block 0x4b564d10-1f: {} readable",
        if f.cpuid_signature || f.upstream_msrs > 0 {
            "present"
        } else {
            "absent"
        },
        f.fork_msrs
    );
    if register {
        let pa = crate::mm::frame::alloc().expect("a free frame");
        // SAFETY: the frame is ours and mapped in the direct map.
        unsafe { core::ptr::write_bytes(arch::phys_to_virt(pa) as *mut u8, 0, 4096) };
        println!("probe: writing page address {pa:#x} to msr 0x4b564d10");
        // SAFETY: this is the experiment: the write's effect on the vCPU
        // is what the probe reports (on this host it never returns).
        let ok = unsafe { msr::write(FORK_BLOCK.start, pa) };
        println!(
            "probe: the write returned ({ok}); msr 0x4b564d10 now reads {:x?}",
            msr::read(FORK_BLOCK.start)
        );
        // SAFETY: unregister again.
        unsafe { msr::write(FORK_BLOCK.start, 0) };
    }
    f
}
