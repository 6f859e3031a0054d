//! TLB shootdown: when a process's page tables lose a translation (an
//! unmap, a protection cut), every other CPU that has its address space
//! loaded must drop what its TLB cached before the call returns — and
//! before the frames behind it are reused. This CPU's own entries are
//! flushed by the caller as before.
//!
//! ```text
//! shootdown(root): for each other CPU whose loaded root is `root`
//!   (LOADED, written at every page-table switch): ticket := ++REQUESTED,
//!   wakeup IPI ─► its handler (user mode or halted), or its spin on a
//!   contended lock (IRQs off), runs `service`: flush all, DONE := ticket
//! then wait until each has DONE ≥ ticket or has loaded another root
//! (a CR3 load flushes it anyway), serving requests to this CPU meanwhile
//! (two CPUs shooting at each other never wait for ever)
//! ```
//!
//! Without PCIDs a CPU holds translations only of the root it has
//! loaded, so the CPUs to ask are those running the process's threads
//! now (K42's per-process CPU set, read at the moment of the change).

use core::sync::atomic::{AtomicU64, Ordering, fence};

use k42_abi::MAX_VCPUS;

use crate::{arch, percpu, smp};

/// The page-table root each CPU has loaded.
static LOADED: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// Flush requests made of each CPU (a count).
static REQUESTED: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// Requests each CPU has served.
static DONE: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

/// This CPU now has page-table root `root` loaded.
pub fn note_loaded(root: u64) {
    LOADED[percpu::cpu_id() as usize].store(root, Ordering::SeqCst);
}

/// Serve the flush requests made of this CPU (cheap when none).
#[inline]
pub fn service() {
    let me = percpu::cpu_id() as usize;
    let asked = REQUESTED[me].load(Ordering::Acquire);
    if DONE[me].load(Ordering::Relaxed) < asked {
        arch::flush_tlb();
        DONE[me].store(asked, Ordering::Release);
    }
}

/// Make every other CPU that has `root` loaded flush its TLB, and wait
/// until each has (see the module doc). Call after the page-table
/// entries changed and before the frames they named are reused.
pub fn shootdown(root: u64) {
    // The entries' changes before the reads of LOADED: a CPU that loads
    // `root` after this sees the new entries.
    fence(Ordering::SeqCst);
    let me = percpu::cpu_id() as usize;
    let mut tickets = [0u64; MAX_VCPUS];
    let n = smp::ncpus() as usize;
    for (cpu, ticket) in tickets.iter_mut().enumerate().take(n) {
        if cpu != me && LOADED[cpu].load(Ordering::SeqCst) == root {
            *ticket = REQUESTED[cpu].fetch_add(1, Ordering::SeqCst) + 1;
            arch::send_ipi(cpu as u32, arch::VECTOR_WAKEUP);
        }
    }
    for (cpu, &ticket) in tickets.iter().enumerate().take(n) {
        if ticket == 0 {
            continue;
        }
        while DONE[cpu].load(Ordering::Acquire) < ticket
            && LOADED[cpu].load(Ordering::SeqCst) == root
        {
            service();
            arch::cpu_relax();
        }
    }
}
