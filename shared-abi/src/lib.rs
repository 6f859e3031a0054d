//! The contract between the k42vmm host and the K42 guest.
//!
//! Both sides build this crate (`no_std`): the VMM on the host, the kernel
//! for `x86_64-unknown-none`. Every type that crosses the boundary lives
//! here, is `#[repr(C)]`, has its size pinned by a const assertion, and
//! derives `zerocopy` traits so that the host can read and write it from
//! guest memory without `unsafe`.
//!
//! Any change to a layout or to a constant's meaning bumps [`ABI_VERSION`];
//! the VMM refuses a kernel whose [`KernelAbiNote`] names another version.
//!
//! | module        | what it defines                                       |
//! |---------------|-------------------------------------------------------|
//! | [`layout`]    | guest-physical and guest-virtual memory layout        |
//! | [`boot`]      | the boot-info record and the vCPU entry state         |
//! | [`hypercall`] | port-I/O hypercalls: numbers, request block, results  |
//! | [`note`]      | the ABI note every kernel carries in its ELF          |
//! | [`syscall`]   | system calls from user programs to the kernel         |
//! | [`fs`]        | the file server's PPC protocol                        |
//! | [`linux`]     | the Linux personality's layout and exec block         |
//! | [`bench`]     | benchmark result records the guest reports            |
//! | [`topology`]  | the topology record: nodes, vCPU placement, distances |
//! | [`trace`]     | trace region layout, event record, event catalogue    |
#![no_std]
#![forbid(unsafe_code)]

pub mod bench;
pub mod boot;
pub mod fs;
pub mod hypercall;
pub mod layout;
pub mod linux;
pub mod note;
pub mod syscall;
pub mod topology;
pub mod trace;

pub use boot::{BootInfo, BootModule, MemRegion, MemRegionKind};
pub use hypercall::{Hypercall, HypercallBlock, HypercallNr, HypercallResult};
pub use note::KernelAbiNote;
pub use topology::Topology;

/// Version of every layout and constant in this crate.
pub const ABI_VERSION: u32 = 14;

/// The largest vCPU count the ABI supports (x2APIC ids 0..=254; 255 is the
/// xAPIC broadcast id, kept free so both APIC modes stay valid).
pub const MAX_VCPUS: usize = 255;
