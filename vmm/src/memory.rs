//! Guest RAM: its layout around the 32-bit MMIO hole, its split into guest
//! NUMA nodes, and checked access.
//!
//! RAM is one anonymous private mapping per contiguous range (vm-memory's
//! mmap backend, `MAP_NORESERVE`), so pages cost nothing until the guest or
//! the loader touches them. Every access from the VMM on behalf of the
//! guest goes through [`GuestRam::read`] / [`GuestRam::write`], which
//! refuse any range that is not entirely RAM.
//!
//! Guest nodes take consecutive shares of RAM, node 0 first; a share that
//! reaches the MMIO hole continues above 4 GiB:
//!
//! ```text
//! 0 ── node 0 ── node 1 ──┤ hole 3..4 GiB ├── node 1 (rest) ── node 2 ...
//! ```

use std::sync::atomic::Ordering;

use k42_abi::layout::{HIGH_RAM_BASE, LOW_RAM_END};
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::config::MAX_MEMORY_GIB;
use crate::error::VmmError;

/// A guest address or range that is not RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadAddress {
    pub gpa: u64,
    pub len: u64,
}

/// The guest's RAM.
pub struct GuestRam {
    mem: GuestMemoryMmap,
    size: u64,
    nodes: Vec<NodeRange>,
}

/// A contiguous piece of one guest node's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRange {
    pub node: u32,
    /// Guest-physical start.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// One contiguous range of RAM: (guest-physical start, length).
pub type RamRange = (u64, u64);

/// The RAM ranges for `size` bytes: below the MMIO hole first, the rest
/// from 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<RamRange> {
    let low = size.min(LOW_RAM_END);
    let mut ranges = vec![(0, low)];
    if size > low {
        ranges.push((HIGH_RAM_BASE, size - low));
    }
    ranges
}

/// Where each node's share lands: node `i` gets `node_sizes[i]` bytes after
/// the shares of nodes `0..i`, split in two where it reaches the MMIO hole.
/// Ranges come in address order.
pub fn node_ranges(node_sizes: &[u64]) -> Vec<NodeRange> {
    let mut ranges = Vec::with_capacity(node_sizes.len() + 1);
    let mut offset = 0u64;
    for (node, &len) in node_sizes.iter().enumerate() {
        let (start, end) = (offset, offset + len);
        let node = node as u32;
        if start < LOW_RAM_END && end > start {
            let low_end = end.min(LOW_RAM_END);
            ranges.push(NodeRange {
                node,
                start,
                len: low_end - start,
            });
        }
        if end > LOW_RAM_END {
            let high_start = start.max(LOW_RAM_END);
            ranges.push(NodeRange {
                node,
                start: high_start - LOW_RAM_END + HIGH_RAM_BASE,
                len: end - high_start,
            });
        }
        offset = end;
    }
    ranges
}

impl GuestRam {
    /// Map `size` bytes of guest RAM (a multiple of 2 MiB) as one node.
    pub fn new(size: u64) -> Result<Self, VmmError> {
        Self::with_nodes(&[size])
    }

    /// Map guest RAM for nodes of `node_sizes` bytes each (multiples of
    /// 2 MiB), laid out by [`node_ranges`].
    pub fn with_nodes(node_sizes: &[u64]) -> Result<Self, VmmError> {
        let size: u64 = node_sizes.iter().sum();
        if size > MAX_MEMORY_GIB << 30 {
            return Err(VmmError::MemoryTooLarge(
                format!("{} MiB", size >> 20),
                MAX_MEMORY_GIB,
            ));
        }
        let ranges: Vec<(GuestAddress, usize)> = ram_ranges(size)
            .into_iter()
            .map(|(s, l)| (GuestAddress(s), l as usize))
            .collect();
        let mem =
            GuestMemoryMmap::from_ranges(&ranges).map_err(|e| VmmError::Memory(e.to_string()))?;
        Ok(Self {
            mem,
            size,
            nodes: node_ranges(node_sizes),
        })
    }

    /// Each node's RAM, in address order.
    pub fn node_ranges(&self) -> &[NodeRange] {
        &self.nodes
    }

    /// Host address of guest-physical `gpa`, where `[gpa, gpa + len)`
    /// lies in one mapping.
    pub fn host_address(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        self.host_mappings()
            .into_iter()
            .find(|&(start, l, _)| {
                gpa >= start && gpa.checked_add(len).is_some_and(|end| end <= start + l)
            })
            .map(|(start, _, host)| host.wrapping_add((gpa - start) as usize))
    }

    /// Total RAM in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RAM ranges, in address order.
    pub fn ranges(&self) -> Vec<RamRange> {
        ram_ranges(self.size)
    }

    /// Bytes of RAM below the MMIO hole.
    pub fn low_size(&self) -> u64 {
        self.size.min(LOW_RAM_END)
    }

    /// The vm-memory view, for the ELF loader.
    pub fn inner(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Host mappings of each range: (guest-physical start, length, host address).
    pub fn host_mappings(&self) -> Vec<(u64, u64, *mut u8)> {
        self.mem
            .iter()
            .map(|r| {
                let host = r
                    .get_host_address(vm_memory::MemoryRegionAddress(0))
                    .expect("region start is mapped");
                (r.start_addr().0, r.len(), host)
            })
            .collect()
    }

    /// Whether `[gpa, gpa + len)` lies entirely in RAM (within one range).
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        ram_ranges(self.size)
            .iter()
            .any(|&(s, l)| gpa >= s && end <= s + l)
    }

    /// Copy guest memory at `gpa` into `buf`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), BadAddress> {
        let bad = BadAddress {
            gpa,
            len: buf.len() as u64,
        };
        if !self.contains(gpa, buf.len() as u64) {
            return Err(bad);
        }
        self.mem.read_slice(buf, GuestAddress(gpa)).map_err(|_| bad)
    }

    /// Copy `data` into guest memory at `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), BadAddress> {
        let bad = BadAddress {
            gpa,
            len: data.len() as u64,
        };
        if !self.contains(gpa, data.len() as u64) {
            return Err(bad);
        }
        self.mem
            .write_slice(data, GuestAddress(gpa))
            .map_err(|_| bad)
    }

    /// Load the aligned 64-bit word at `gpa` atomically (acquire), as a
    /// reader of memory the guest writes concurrently must.
    pub fn load_u64(&self, gpa: u64) -> Result<u64, BadAddress> {
        let bad = BadAddress { gpa, len: 8 };
        if !gpa.is_multiple_of(8) || !self.contains(gpa, 8) {
            return Err(bad);
        }
        self.mem
            .load::<u64>(GuestAddress(gpa), Ordering::Acquire)
            .map_err(|_| bad)
    }

    /// Store `value` to the aligned 64-bit word at `gpa` atomically
    /// (release).
    pub fn store_u64(&self, gpa: u64, value: u64) -> Result<(), BadAddress> {
        let bad = BadAddress { gpa, len: 8 };
        if !gpa.is_multiple_of(8) || !self.contains(gpa, 8) {
            return Err(bad);
        }
        self.mem
            .store(value, GuestAddress(gpa), Ordering::Release)
            .map_err(|_| bad)
    }

    /// Read `len` bytes at `gpa` into a new vector, refusing more than
    /// `limit` bytes.
    pub fn read_vec(&self, gpa: u64, len: u64, limit: u64) -> Result<Vec<u8>, BadAddress> {
        if len > limit {
            return Err(BadAddress { gpa, len });
        }
        let mut v = vec![0u8; len as usize];
        self.read(gpa, &mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_skip_the_mmio_hole() {
        assert_eq!(ram_ranges(512 << 20), vec![(0, 512 << 20)]);
        assert_eq!(ram_ranges(4 << 30), vec![(0, 3 << 30), (4 << 30, 1 << 30)]);
    }

    #[test]
    fn nodes_take_consecutive_shares_around_the_hole() {
        let r = |node, start, len| NodeRange { node, start, len };
        assert_eq!(
            node_ranges(&[256 << 20, 256 << 20]),
            vec![r(0, 0, 256 << 20), r(1, 256 << 20, 256 << 20)]
        );
        assert_eq!(
            node_ranges(&[2 << 30, 2 << 30, 1 << 30]),
            vec![
                r(0, 0, 2 << 30),
                r(1, 2 << 30, 1 << 30),
                r(1, 4 << 30, 1 << 30),
                r(2, 5 << 30, 1 << 30)
            ]
        );
        assert_eq!(
            node_ranges(&[3 << 30, 1 << 30]),
            vec![r(0, 0, 3 << 30), r(1, 4 << 30, 1 << 30)]
        );
    }

    #[test]
    fn node_ranges_have_host_addresses() {
        let ram = GuestRam::with_nodes(&[2 << 20, 4 << 20]).unwrap();
        assert_eq!(ram.size(), 6 << 20);
        let ranges = ram.node_ranges().to_vec();
        assert_eq!(ranges.len(), 2);
        let a = ram.host_address(ranges[0].start, ranges[0].len).unwrap();
        let b = ram.host_address(ranges[1].start, ranges[1].len).unwrap();
        assert_eq!(b as usize - a as usize, 2 << 20);
        assert!(ram.host_address(4 << 20, 4 << 20).is_none());
        // A read across the node boundary is one RAM range.
        ram.write((2 << 20) - 2, b"abcd").unwrap();
        let mut buf = [0u8; 4];
        ram.read((2 << 20) - 2, &mut buf).unwrap();
        assert_eq!(&buf, b"abcd");
    }

    #[test]
    fn access_is_checked() {
        let ram = GuestRam::new(4 << 20).unwrap();
        ram.write(0x1000, b"hello").unwrap();
        let mut buf = [0u8; 5];
        ram.read(0x1000, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(ram.read((4 << 20) - 2, &mut buf).is_err());
        assert!(ram.write(u64::MAX - 1, b"xx").is_err());
        assert!(ram.read_vec(0, 100, 10).is_err());
        assert!(!ram.contains(0, (4 << 20) + 1));
    }

    #[test]
    fn atomic_words_are_checked() {
        let ram = GuestRam::new(4 << 20).unwrap();
        ram.store_u64(0x2000, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(ram.load_u64(0x2000), Ok(0x1122_3344_5566_7788));
        let mut b = [0u8; 8];
        ram.read(0x2000, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 0x1122_3344_5566_7788);
        assert!(ram.load_u64(0x2004).is_err(), "unaligned");
        assert!(ram.store_u64(4 << 20, 1).is_err(), "outside RAM");
    }
}
