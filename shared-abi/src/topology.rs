//! The topology record: what the guest learns about where its vCPUs run
//! and where its memory lives, fetched once at boot with the `Topology`
//! hypercall.
//!
//! k42vmm makes a placement plan (vCPU → host CPU → host node → guest
//! node; memory per guest node) and describes it here:
//!
//! ```text
//! Topology (10792 bytes)
//! ├─ header        magic, ABI version, size, counts, flags
//! ├─ vcpu_info[i]  guest node, host CPU and node, SMT (core) and LLC group
//! ├─ node_info[n]  host node its memory is bound to, vCPU count, bytes
//! ├─ mem_ranges[]  guest-physical RAM of each node, sorted by address
//! └─ distances     node × node matrix, 10 on the diagonal (as ACPI SLIT)
//! ```
//!
//! Groups are dense small numbers: vCPUs with the same `core_group` run on
//! the same physical host core (SMT siblings, or the same CPU when
//! overcommitted); vCPUs with the same `llc_group` share a host last-level
//! cache. An unpinned vCPU is alone in both groups. Every guest node has at
//! least one memory range; ranges of one node may be split by the 32-bit
//! MMIO hole.

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::MAX_VCPUS;

/// First field of [`Topology`].
pub const TOPOLOGY_MAGIC: u64 = 0x4b34_3254_4f50_4f31; // "K42TOPO1"

/// Most guest NUMA nodes the record can describe. (The boot memory map,
/// `MAX_MEM_REGIONS`, gives each node at least one region of its own, so
/// fewer fit in practice.)
pub const MAX_NODES: usize = 64;

/// Most memory ranges: one per node, plus one for the node that the 32-bit
/// MMIO hole splits.
pub const MAX_NODE_MEM_RANGES: usize = MAX_NODES + 1;

/// Distance from a node to itself.
pub const LOCAL_DISTANCE: u8 = 10;
/// Largest distance between two reachable nodes (255 means unreachable in
/// ACPI and is not allowed here).
pub const MAX_DISTANCE: u8 = 254;

/// `host_cpu` / `host_node` value when there is none (not pinned, not bound).
pub const NO_HOST: u32 = u32::MAX;

/// [`Topology::flags`]: every vCPU thread is pinned to its `host_cpu`.
pub const FLAG_PINNED: u32 = 1 << 0;
/// [`Topology::flags`]: every node's memory is bound to its `host_node`.
pub const FLAG_MEMORY_BOUND: u32 = 1 << 1;

/// Where one vCPU runs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuTopology {
    /// Host CPU the vCPU thread is pinned to, or [`NO_HOST`].
    pub host_cpu: u32,
    /// Host NUMA node of `host_cpu`, or [`NO_HOST`].
    pub host_node: u32,
    /// Guest node (< `Topology::nodes`).
    pub node: u16,
    /// SMT group: equal for vCPUs on the same host core (< `vcpus`).
    pub core_group: u16,
    /// Last-level-cache group: equal for vCPUs sharing a host LLC (< `vcpus`).
    pub llc_group: u16,
    /// Zero.
    pub reserved: u16,
}

/// One guest node.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NodeTopology {
    /// Host node this node's memory is bound to, or [`NO_HOST`].
    pub host_node: u32,
    /// Number of vCPUs whose `node` is this one.
    pub vcpus: u32,
    /// Bytes of RAM: the sum of this node's memory ranges.
    pub mem_bytes: u64,
}

/// A range of guest-physical RAM and the node it belongs to.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NodeMemRange {
    /// First byte (page-aligned).
    pub start: u64,
    /// Length in bytes (whole pages, non-zero).
    pub len: u64,
    /// Guest node (< `Topology::nodes`).
    pub node: u32,
    /// Zero.
    pub reserved: u32,
}

impl NodeMemRange {
    /// End of the range, exclusive.
    pub const fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Whether guest-physical `pa` lies in the range.
    pub const fn contains(&self, pa: u64) -> bool {
        pa >= self.start && pa - self.start < self.len
    }
}

/// The guest's topology, as k42vmm placed it.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Topology {
    /// [`TOPOLOGY_MAGIC`].
    pub magic: u64,
    /// [`crate::ABI_VERSION`] of the VMM that wrote this.
    pub abi_version: u32,
    /// `size_of::<Topology>()` as the VMM sees it.
    pub size: u32,
    /// Number of vCPUs; equals `BootInfo::vcpus`.
    pub vcpus: u32,
    /// Number of guest nodes (1..=[`MAX_NODES`]).
    pub nodes: u32,
    /// Number of valid entries in `mem_ranges`.
    pub n_mem_ranges: u32,
    /// [`FLAG_PINNED`], [`FLAG_MEMORY_BOUND`].
    pub flags: u32,
    /// Per vCPU, indexed by vCPU id; entries from `vcpus` on are zero.
    pub vcpu_info: [VcpuTopology; MAX_VCPUS],
    /// Per guest node; entries from `nodes` on are zero.
    pub node_info: [NodeTopology; MAX_NODES],
    /// RAM of every node, sorted by address, non-overlapping.
    pub mem_ranges: [NodeMemRange; MAX_NODE_MEM_RANGES],
    /// `distances[a][b]`: relative cost for node `a`'s CPUs to reach node
    /// `b`'s memory; [`LOCAL_DISTANCE`] on the diagonal, more elsewhere.
    /// Entries outside `nodes × nodes` are zero.
    pub distances: [[u8; MAX_NODES]; MAX_NODES],
}

const _: () = assert!(core::mem::size_of::<VcpuTopology>() == 16);
const _: () = assert!(core::mem::size_of::<NodeTopology>() == 16);
const _: () = assert!(core::mem::size_of::<NodeMemRange>() == 24);
const _: () = assert!(
    core::mem::size_of::<Topology>()
        == 32 + 16 * MAX_VCPUS + 16 * MAX_NODES + 24 * MAX_NODE_MEM_RANGES + MAX_NODES * MAX_NODES
);
// Node ids and group numbers (< vcpus) fit the u16 fields.
const _: () = assert!(MAX_NODES <= u16::MAX as usize);
const _: () = assert!(MAX_VCPUS <= u16::MAX as usize);

impl Topology {
    /// An all-zero record, to be filled in.
    pub fn empty() -> Self {
        Self::new_zeroed()
    }

    /// The valid vCPU entries.
    pub fn vcpus(&self) -> &[VcpuTopology] {
        &self.vcpu_info[..(self.vcpus as usize).min(MAX_VCPUS)]
    }

    /// The valid node entries.
    pub fn nodes(&self) -> &[NodeTopology] {
        &self.node_info[..(self.nodes as usize).min(MAX_NODES)]
    }

    /// The valid memory ranges.
    pub fn mem_ranges(&self) -> &[NodeMemRange] {
        &self.mem_ranges[..(self.n_mem_ranges as usize).min(MAX_NODE_MEM_RANGES)]
    }

    /// Distance from node `a` to node `b` (both < `nodes`).
    pub fn distance(&self, a: usize, b: usize) -> u8 {
        self.distances[a][b]
    }

    /// The node whose memory holds guest-physical `pa`.
    pub fn node_of(&self, pa: u64) -> Option<u32> {
        self.mem_ranges()
            .iter()
            .find(|r| r.contains(pa))
            .map(|r| r.node)
    }

    /// Check every field against the rules in this module, for a VM of
    /// `vcpus` vCPUs. Costs one pass over the vCPUs, the ranges and the
    /// used part of the distance matrix.
    pub fn validate(&self, vcpus: u32) -> Result<(), &'static str> {
        if self.magic != TOPOLOGY_MAGIC {
            return Err("topology has a bad magic number");
        }
        if self.abi_version != crate::ABI_VERSION {
            return Err("topology comes from a VMM with another ABI version");
        }
        if self.size as usize != core::mem::size_of::<Self>() {
            return Err("topology has an unexpected size");
        }
        if self.vcpus != vcpus || vcpus == 0 || vcpus as usize > MAX_VCPUS {
            return Err("topology has a vCPU count other than the boot info's");
        }
        let nodes = self.nodes as usize;
        if nodes == 0 || nodes > MAX_NODES {
            return Err("topology has an impossible node count");
        }
        if self.n_mem_ranges == 0 || self.n_mem_ranges as usize > MAX_NODE_MEM_RANGES {
            return Err("topology has an impossible memory range count");
        }
        if self.flags & !(FLAG_PINNED | FLAG_MEMORY_BOUND) != 0 {
            return Err("topology has unknown flags");
        }
        let mut vcpus_of = [0u32; MAX_NODES];
        for v in self.vcpus() {
            if v.node as usize >= nodes {
                return Err("topology puts a vCPU on a node that does not exist");
            }
            if v.core_group as u32 >= vcpus || v.llc_group as u32 >= vcpus {
                return Err("topology has a vCPU group number out of range");
            }
            if v.reserved != 0 {
                return Err("topology has a non-zero reserved field");
            }
            vcpus_of[v.node as usize] += 1;
        }
        let mut mem_of = [0u64; MAX_NODES];
        let mut end = 0;
        for r in self.mem_ranges() {
            if r.node as usize >= nodes {
                return Err("topology gives memory to a node that does not exist");
            }
            if r.len == 0 || r.start % crate::layout::PAGE_SIZE != 0 {
                return Err("topology has an empty or unaligned memory range");
            }
            if r.len % crate::layout::PAGE_SIZE != 0 || r.start.checked_add(r.len).is_none() {
                return Err("topology has an unaligned or overflowing memory range");
            }
            if r.start < end {
                return Err("topology memory ranges overlap or are out of order");
            }
            if r.reserved != 0 {
                return Err("topology has a non-zero reserved field");
            }
            end = r.end();
            mem_of[r.node as usize] += r.len;
        }
        for (n, info) in self.nodes().iter().enumerate() {
            if info.vcpus != vcpus_of[n] || info.mem_bytes != mem_of[n] {
                return Err("topology node totals disagree with its vCPUs and ranges");
            }
            if info.mem_bytes == 0 {
                return Err("topology has a node without memory");
            }
            for (m, &d) in self.distances[n][..nodes].iter().enumerate() {
                let ok = if m == n {
                    d == LOCAL_DISTANCE
                } else {
                    d > LOCAL_DISTANCE && d <= MAX_DISTANCE
                };
                if !ok {
                    return Err("topology has an impossible node distance");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two nodes, four vCPUs, 64 MiB each, split around nothing.
    fn two_nodes() -> Topology {
        let mut t = Topology::empty();
        t.magic = TOPOLOGY_MAGIC;
        t.abi_version = crate::ABI_VERSION;
        t.size = core::mem::size_of::<Topology>() as u32;
        t.vcpus = 4;
        t.nodes = 2;
        for i in 0..4 {
            t.vcpu_info[i] = VcpuTopology {
                host_cpu: NO_HOST,
                host_node: NO_HOST,
                node: (i / 2) as u16,
                core_group: i as u16,
                llc_group: i as u16,
                reserved: 0,
            };
        }
        for n in 0..2 {
            t.node_info[n] = NodeTopology {
                host_node: NO_HOST,
                vcpus: 2,
                mem_bytes: 64 << 20,
            };
            t.mem_ranges[n] = NodeMemRange {
                start: n as u64 * (64 << 20),
                len: 64 << 20,
                node: n as u32,
                reserved: 0,
            };
        }
        t.n_mem_ranges = 2;
        t.distances[0][0] = 10;
        t.distances[1][1] = 10;
        t.distances[0][1] = 20;
        t.distances[1][0] = 20;
        t
    }

    #[test]
    fn a_good_record_validates_and_answers() {
        let t = two_nodes();
        assert_eq!(t.validate(4), Ok(()));
        assert_eq!(t.node_of(0), Some(0));
        assert_eq!(t.node_of((64 << 20) + 5), Some(1));
        assert_eq!(t.node_of(128 << 20), None);
        assert_eq!(t.distance(0, 1), 20);
    }

    #[test]
    fn validate_rejects_each_broken_rule() {
        let breakers: [fn(&mut Topology); 10] = [
            |t| t.magic = 0,
            |t| t.vcpus = 3,
            |t| t.nodes = 0,
            |t| t.vcpu_info[1].node = 2,
            |t| t.vcpu_info[1].core_group = 4,
            |t| t.mem_ranges[1].start = 4096 * 3 + 1,
            |t| t.mem_ranges[1].start = 0,
            |t| t.node_info[0].vcpus = 3,
            |t| t.distances[0][0] = 20,
            |t| t.distances[1][0] = 10,
        ];
        for (i, b) in breakers.iter().enumerate() {
            let mut t = two_nodes();
            b(&mut t);
            assert!(t.validate(4).is_err(), "breaker {i} was accepted");
        }
        assert!(two_nodes().validate(5).is_err());
    }
}
