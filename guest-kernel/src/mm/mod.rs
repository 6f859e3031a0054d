//! Memory management: the physical frame allocator, the kernel heap, the
//! page manager (a clustered object in front of the frame allocator), and
//! address spaces for user programs.
pub mod frame;
pub mod heap;
pub mod pages;
pub mod paging;

use k42_abi::MemRegionKind;

use crate::boot;

/// Set up the frame allocator and the heap from the boot memory map (boot
/// CPU, once, before other CPUs start).
pub fn init() {
    let bi = boot::boot_info();
    let usable = bi
        .regions()
        .iter()
        .filter(|r| MemRegionKind::from_raw(r.kind) == Some(MemRegionKind::Usable));
    let total: u64 = usable.clone().map(|r| r.len).sum();
    let heap_size = heap::size_for(total);
    let mut heap_taken = false;
    let mut zones = frame::ZoneBuilder::new();
    for r in usable {
        let (mut start, mut len) = (r.start, r.len);
        if !heap_taken && len >= heap_size * 2 {
            heap::init(start, heap_size);
            heap_taken = true;
            start += heap_size;
            len -= heap_size;
        }
        zones.add(start, len);
    }
    assert!(
        heap_taken,
        "no memory region is large enough for the kernel heap"
    );
    frame::init(zones);
    paging::init();
}
