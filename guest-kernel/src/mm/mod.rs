//! Memory management: the physical frame allocator, the kernel heap, the
//! page manager (a clustered object in front of the frame allocator), and
//! address spaces for user programs, and TLB shootdown.
pub mod copy;
pub mod frame;
pub mod heap;
pub mod pages;
pub mod paging;
pub mod tlb;
pub mod user;

use k42_abi::MemRegionKind;

use crate::{boot, topology};

/// Set up the frame allocator and the heap from the boot memory map and
/// the topology's node ranges (boot CPU, once, before other CPUs start).
/// Each usable region becomes a zone of the node whose range holds it
/// (split where it crosses nodes). The heap comes from the first piece
/// at least twice its size; with many small nodes it shrinks to half the
/// largest piece. `reserve` bytes (a page multiple) of untouched RAM are
/// kept out of both, for the trace buffers; returns the reserved range's
/// physical address, if a piece had room.
pub fn init(reserve: u64) -> Option<u64> {
    let bi = boot::boot_info();
    let nodes = topology::get().mem_ranges();
    let pieces = || {
        bi.regions()
            .iter()
            .filter(|r| MemRegionKind::from_raw(r.kind) == Some(MemRegionKind::Usable))
            .flat_map(move |r| {
                nodes.iter().filter_map(move |n| {
                    let start = r.start.max(n.start);
                    let end = (r.start + r.len).min(n.end());
                    (start < end).then_some((start, end - start, n.node))
                })
            })
    };
    let total: u64 = pieces().map(|p| p.1).sum();
    let largest = pieces().map(|p| p.1).max().unwrap_or(0);
    let heap_size = heap::size_for(total).min((largest / 2) & !0xfff);
    assert!(
        heap_size >= heap::MIN_HEAP,
        "no memory region is large enough for the kernel heap"
    );
    let mut heap_taken = false;
    let mut reserved = None;
    let mut zones = frame::ZoneBuilder::new();
    for (mut start, mut len, node) in pieces() {
        if !heap_taken && len >= heap_size * 2 {
            heap::init(start, heap_size);
            heap_taken = true;
            start += heap_size;
            len -= heap_size;
        }
        // From the top of the piece, leaving the allocator most of it.
        if reserved.is_none() && reserve > 0 && len >= reserve * 2 {
            len -= reserve;
            reserved = Some(start + len);
        }
        zones.add(start, len, node);
    }
    frame::init(zones);
    paging::init();
    reserved
}
