//! Applying a placement on this host: the CPUs this process may use
//! (`sched_getaffinity`, which already reflects `taskset` and the cgroup
//! cpuset), pinning the calling thread to one CPU (`sched_setaffinity`,
//! then read back and compared), binding a range of memory to a host node
//! (`mbind`, `MPOL_BIND`) and prefaulting memory (`MADV_POPULATE_WRITE`).

use std::io;

use crate::memory::{GuestRam, NodeRange};

/// Bits in the first affinity mask tried; doubled while the kernel wants
/// a larger one.
const FIRST_MASK_BITS: usize = 1024;
/// Bits in a `u64` mask word.
const WORD_BITS: usize = 64;

/// Why pinning a thread failed.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("sched_setaffinity to host CPU {cpu} failed: {err}")]
    Set { cpu: u32, err: io::Error },
    #[error("sched_getaffinity failed: {0}")]
    Get(io::Error),
    #[error("asked for host CPU {cpu}, but the thread's affinity reads back as {got}")]
    Mismatch { cpu: u32, got: String },
}

/// The CPUs the calling thread may run on, ascending.
pub fn current_affinity() -> io::Result<Vec<u32>> {
    let mut bits = FIRST_MASK_BITS;
    loop {
        let mut mask = vec![0u64; bits / WORD_BITS];
        // SAFETY: the kernel writes at most `bits / 8` bytes into `mask`,
        // which is that long; pid 0 is the calling thread.
        let r = unsafe {
            libc::sched_getaffinity(0, bits / 8, mask.as_mut_ptr().cast::<libc::cpu_set_t>())
        };
        if r == 0 {
            return Ok(mask_to_cpus(&mask));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) || bits >= 1 << 20 {
            return Err(e);
        }
        bits *= 2;
    }
}

fn mask_to_cpus(mask: &[u64]) -> Vec<u32> {
    let mut cpus = Vec::new();
    for (w, &word) in mask.iter().enumerate() {
        for b in 0..WORD_BITS {
            if word & (1 << b) != 0 {
                cpus.push((w * WORD_BITS + b) as u32);
            }
        }
    }
    cpus
}

/// Pin the calling thread to host CPU `cpu` and check that the kernel
/// took it: the affinity must read back as exactly `{cpu}`, which is
/// returned.
pub fn pin_current_thread(cpu: u32) -> Result<Vec<u32>, PinError> {
    let words = (cpu as usize / WORD_BITS + 1).max(FIRST_MASK_BITS / WORD_BITS);
    let mut mask = vec![0u64; words];
    mask[cpu as usize / WORD_BITS] |= 1 << (cpu as usize % WORD_BITS);
    // SAFETY: the kernel reads `words * 8` bytes from `mask`, which is that
    // long; pid 0 is the calling thread.
    let r =
        unsafe { libc::sched_setaffinity(0, words * 8, mask.as_ptr().cast::<libc::cpu_set_t>()) };
    if r != 0 {
        return Err(PinError::Set {
            cpu,
            err: io::Error::last_os_error(),
        });
    }
    let got = current_affinity().map_err(PinError::Get)?;
    if got != [cpu] {
        return Err(PinError::Mismatch {
            cpu,
            got: super::cpulist::format(&got),
        });
    }
    Ok(got)
}

/// The host mapping of a guest node range: (address, length).
fn host_range(ram: &GuestRam, range: &NodeRange) -> io::Result<(*mut u8, usize)> {
    ram.host_address(range.start, range.len)
        .map(|a| (a, range.len as usize))
        .ok_or_else(|| io::Error::other(format!("{range:?} is not one RAM mapping")))
}

/// Bind the guest RAM of `range` (not yet touched) to host node `node`:
/// its pages will come from that node only.
pub fn bind_memory(ram: &GuestRam, range: &NodeRange, node: u32) -> io::Result<()> {
    let (addr, len) = host_range(ram, range)?;
    let words = node as usize / WORD_BITS + 1;
    let mut mask = vec![0u64; words];
    mask[node as usize / WORD_BITS] |= 1 << (node as usize % WORD_BITS);
    // The kernel reads maxnode - 1 bits of the mask.
    let maxnode = (words * WORD_BITS + 1) as libc::c_ulong;
    // SAFETY: mbind changes only the memory policy of the range, which is
    // guest RAM that `ram` keeps mapped; no contents change. The mask is
    // `words` u64s long, covering `maxnode - 1` bits.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len as libc::c_ulong,
            libc::MPOL_BIND as libc::c_ulong,
            mask.as_ptr(),
            maxnode,
            0 as libc::c_uint,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The memory policy of guest RAM at `gpa`: (mode, nodes). Used to check
/// what [`bind_memory`] did.
pub fn memory_policy(ram: &GuestRam, gpa: u64) -> io::Result<(i32, Vec<u32>)> {
    let addr = ram
        .host_address(gpa, 1)
        .ok_or_else(|| io::Error::other(format!("{gpa:#x} is not RAM")))?;
    const MPOL_F_ADDR: libc::c_ulong = 1 << 1;
    let mut mode: libc::c_int = 0;
    let mut mask = vec![0u64; FIRST_MASK_BITS / WORD_BITS];
    // SAFETY: the kernel writes one int to `mode` and at most
    // `FIRST_MASK_BITS` bits to `mask`, which holds that many; it only
    // reads the policy of the mapping that contains `addr` (guest RAM).
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode as *mut libc::c_int,
            mask.as_mut_ptr(),
            FIRST_MASK_BITS as libc::c_ulong,
            addr,
            MPOL_F_ADDR,
        )
    };
    if r == 0 {
        Ok((mode, mask_to_cpus(&mask)))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Fault in every page of the guest RAM of `range` for writing now, under
/// its memory policy, so that the guest never waits for a host page fault.
pub fn prefault(ram: &GuestRam, range: &NodeRange) -> io::Result<()> {
    let (addr, len) = host_range(ram, range)?;
    // SAFETY: populating pages of guest RAM, a private anonymous mapping
    // that `ram` keeps mapped, changes no contents (they stay zero or keep
    // their data).
    let r = unsafe { libc::madvise(addr.cast(), len, libc::MADV_POPULATE_WRITE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_pins_to_each_allowed_cpu_and_reads_it_back() {
        let allowed = current_affinity().unwrap();
        assert!(!allowed.is_empty());
        std::thread::spawn(move || {
            for &cpu in &allowed {
                assert_eq!(pin_current_thread(cpu).unwrap(), vec![cpu]);
                assert_eq!(current_affinity().unwrap(), vec![cpu]);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pinning_to_an_impossible_cpu_names_it() {
        let e = std::thread::spawn(|| pin_current_thread(4000).unwrap_err().to_string())
            .join()
            .unwrap();
        assert!(e.contains("host CPU 4000"), "{e}");
    }

    #[test]
    fn memory_binds_to_node_0_and_prefaults() {
        let ram = GuestRam::with_nodes(&[2 << 20, 4 << 20]).unwrap();
        let ranges = ram.node_ranges().to_vec();
        assert_eq!(memory_policy(&ram, 0).unwrap().0, libc::MPOL_DEFAULT);
        bind_memory(&ram, &ranges[1], 0).unwrap();
        prefault(&ram, &ranges[1]).unwrap();
        assert_eq!(
            memory_policy(&ram, 3 << 20).unwrap(),
            (libc::MPOL_BIND, vec![0])
        );
        assert_eq!(memory_policy(&ram, 0).unwrap().0, libc::MPOL_DEFAULT);
        let e = bind_memory(&ram, &ranges[0], 1000).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    }
}
