//! The guest's NUMA topology as k42vmm placed it: which node each CPU is
//! on, each node's memory ranges, and the distances between nodes.
//!
//! The boot CPU fetches the [`Topology`] record with one hypercall straight
//! into its static (no copy: copying costs a store per byte when emulated),
//! checks it, and gives every CPU its node in its per-CPU data before the
//! other CPUs start; after that it is read-only. A CPU's own node is one
//! GS-relative load: [`crate::percpu::node_id`].

use k42_abi::Hypercall;
use k42_abi::topology::Topology;

use crate::sync::InitOnce;
use crate::{arch, percpu};

static TOPOLOGY: InitOnce<Topology> = InitOnce::new();

/// Fetch and check the topology of a VM with `vcpus` vCPUs (boot CPU,
/// once, before the other CPUs start), and record each CPU's node. Stops
/// the VM with a panic if k42vmm's record is unusable.
pub fn fetch(vcpus: u32) -> &'static Topology {
    let fetched = TOPOLOGY.init_in_place(|slot| {
        let pa = arch::virt_to_phys(slot as u64).expect("topology record in kernel memory");
        let r = arch::hypercall(Hypercall::topology(
            pa,
            core::mem::size_of::<Topology>() as u64,
        ));
        if r != 0 {
            return Err("the Topology hypercall failed");
        }
        // SAFETY: k42vmm wrote a whole Topology at `slot`, and every bit
        // pattern is a valid Topology (plain integers and arrays).
        unsafe { &*slot }.validate(vcpus)
    });
    let t = fetched.unwrap_or_else(|e| panic!("{e}"));
    for (cpu, v) in t.vcpus().iter().enumerate() {
        percpu::of(cpu as u32).set_node(v.node as u32);
    }
    t
}

/// The topology (after [`fetch`]).
pub fn get() -> &'static Topology {
    TOPOLOGY.get().expect("topology fetched at boot")
}

/// Nodes in order of distance from `from` (itself first; ties by id): the
/// order in which an allocation for `from` falls back. Costs one pass over
/// the nodes per step, so only fallbacks pay for it.
pub fn nodes_by_distance(from: u32) -> impl Iterator<Item = u32> {
    let t = get();
    let n = t.nodes as usize;
    let row = &t.distances[from as usize][..n];
    let mut last: Option<(u8, usize)> = None;
    core::iter::from_fn(move || {
        let next = row
            .iter()
            .enumerate()
            .map(|(m, &d)| (d, m))
            .filter(|&key| last.is_none_or(|l| key > l))
            .min()?;
        last = Some(next);
        Some(next.1 as u32)
    })
}
