//! Hypercalls to k42vmm: one `out` of a request block's physical address,
//! in units of the block's alignment, to the hypercall port (protocol in
//! `k42_abi::hypercall`).
//!
//! The block lives on the caller's stack, so concurrent hypercalls from
//! interrupt handlers and from the code they interrupted never share one.

use core::arch::asm;

use k42_abi::hypercall::{
    AlignedBlock, Hypercall, HypercallBlock, HypercallResult, PORT, port_value,
};
use k42_abi::trace::ev;

/// Make `call` (one of `Hypercall`'s constructors); returns the VMM's
/// result code (≥ 0 success, < 0 a `HypercallResult` error).
pub fn hypercall(call: Hypercall) -> i64 {
    let nr = call.nr as u64;
    crate::trace::log(ev::hypercall::enter(nr));
    let r = send(&mut AlignedBlock(HypercallBlock::new(
        call.nr as u32,
        call.args,
    )));
    crate::trace::log(ev::hypercall::exit(nr, r));
    r
}

/// Send a hand-made block, valid or not (for tests of k42vmm's checks).
pub fn send(block: &mut AlignedBlock) -> i64 {
    let ptr: *mut HypercallBlock = &mut block.0;
    match super::platform::virt_to_phys(ptr as u64) {
        Some(pa) => send_at(pa, ptr),
        // Not in kernel memory: no physical address to send.
        None => HypercallResult::BadAddress as i64,
    }
}

/// Point k42vmm at guest-physical `pa` as if it held a block; `ptr` is the
/// memory the VMM's answer lands in when `pa` is its physical address.
/// An address no port value names (not block-aligned, or beyond every
/// guest's RAM) gets `BadAddress` without reaching k42vmm.
pub fn send_at(pa: u64, ptr: *mut HypercallBlock) -> i64 {
    match port_value(pa) {
        Some(value) => send_value(value, ptr),
        None => HypercallResult::BadAddress as i64,
    }
}

/// Write port value `value` to the hypercall port; `ptr` as for
/// [`send_at`].
pub fn send_value(value: u32, ptr: *mut HypercallBlock) -> i64 {
    let sent = value as u64;
    let rax: u64;
    // SAFETY: the port write makes k42vmm read the block that `value`
    // names and write its `result` field; `ptr` (alive across the call) is
    // passed so the compiler knows the asm may read and write it.
    unsafe {
        asm!(
            "out dx, eax",
            in("dx") PORT,
            inout("rax") sent => rax,
            in("rsi") ptr,
            options(nostack, preserves_flags),
        );
    }
    if rax != sent {
        // The VMM could not use the block and put the (negative) error in
        // rax, which never equals a zero-extended 32-bit value.
        return rax as i64;
    }
    // SAFETY: `ptr` is a live block; volatile because the VMM wrote it.
    unsafe { core::ptr::read_volatile(&raw const (*ptr).result) }
}

/// Give the host CPU away after spinning on a contended resource for
/// `round` rounds (k42vmm yields, then sleeps longer as `round` grows).
pub fn backoff(round: u32) {
    hypercall(Hypercall::yield_host(round));
}
