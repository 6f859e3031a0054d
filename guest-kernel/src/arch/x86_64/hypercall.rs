//! Hypercalls to k42vmm: one `out` of a request block's physical address
//! to the hypercall port (protocol in `k42_abi::hypercall`).
//!
//! The block lives on the caller's stack, so concurrent hypercalls from
//! interrupt handlers and from the code they interrupted never share one.

use core::arch::asm;

use k42_abi::hypercall::{HypercallBlock, HypercallNr, PORT};
use k42_abi::trace::ev;

/// Make hypercall `nr` with `args`; returns the VMM's result code (≥ 0
/// success, < 0 a `HypercallResult` error).
pub fn hypercall(nr: HypercallNr, args: [u64; 4]) -> i64 {
    crate::trace::log(ev::hypercall::enter(nr as u64));
    let r = send(&mut HypercallBlock {
        nr: nr as u32,
        reserved: 0,
        args,
        result: 0,
    });
    crate::trace::log(ev::hypercall::exit(nr as u64, r));
    r
}

/// Send a hand-made block, valid or not (for tests of k42vmm's checks).
pub fn send(block: &mut HypercallBlock) -> i64 {
    let ptr: *mut HypercallBlock = block;
    let pa = super::platform::virt_to_phys(ptr as u64).expect("hypercall block in kernel memory");
    debug_assert!(pa < (1 << 32));
    send_at(pa, ptr)
}

/// Point k42vmm at guest-physical `pa` as if it held a block; `ptr` is the
/// memory the VMM's answer lands in when `pa` is its physical address.
pub fn send_at(pa: u64, ptr: *mut HypercallBlock) -> i64 {
    let rax: u64;
    // SAFETY: the port write makes k42vmm read the block at `pa` and write
    // its `result` field; `ptr` (alive across the call) is passed so the
    // compiler knows the asm may read and write it.
    unsafe {
        asm!(
            "out dx, eax",
            in("dx") PORT,
            inout("rax") pa => rax,
            in("rsi") ptr,
            options(nostack, preserves_flags),
        );
    }
    if rax != pa {
        // The VMM could not use the block and put the error in rax.
        return rax as i64;
    }
    // SAFETY: `ptr` is a live block; volatile because the VMM wrote it.
    unsafe { core::ptr::read_volatile(&raw const (*ptr).result) }
}

/// Give the host CPU away after spinning on a contended resource for
/// `round` rounds (k42vmm yields, then sleeps longer as `round` grows).
pub fn backoff(round: u32) {
    hypercall(HypercallNr::Yield, [round as u64, 0, 0, 0]);
}
