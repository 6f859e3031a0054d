//! Guest RAM: its layout around the 32-bit MMIO hole, and checked access.
//!
//! RAM is one anonymous private mapping per range (vm-memory's mmap backend,
//! `MAP_NORESERVE`), so pages cost nothing until the guest or the loader
//! touches them. Every access from the VMM on behalf of the guest goes
//! through [`GuestRam::read`] / [`GuestRam::write`], which refuse any range
//! that is not entirely RAM.

use k42_abi::layout::{HIGH_RAM_BASE, LOW_RAM_END};
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

impl GuestRam {
    /// Map `size` bytes of guest RAM (a multiple of 2 MiB).
    pub fn new(size: u64) -> Result<Self, VmmError> {
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
        Ok(Self { mem, size })
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
}
