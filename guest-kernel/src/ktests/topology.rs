//! The topology the kernel sees is the one k42vmm planned: it agrees with
//! the boot info, every CPU's cheap "my node" is its node in the record,
//! every node's memory gives frames from that node's range, and each CPU
//! allocates from its own node first. The test prints the topology in a
//! fixed form that tests/topology.rs compares with k42vmm's report:
//!
//! ```text
//! topology: 2 nodes, flags 0x3
//! topology: node 0: cpus 0-1; mem 0x0+0x10000000; host 0; distances 10 20
//! ```

use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};

use k42_abi::MemRegionKind;
use k42_abi::topology::{NO_HOST, Topology};

use crate::ktest::TestResult;
use crate::mm::frame;
use crate::{boot, check, kernel_test, percpu, println, smp, topology};

/// Frames a usable region needs before its node must hand out frames
/// (its bitmap page and at least one more).
const MIN_ZONE_BYTES: u64 = 4 * 4096;

fn topology_matches_plan() -> TestResult {
    let bi = boot::boot_info();
    let t = topology::get();
    check!(
        t.vcpus == bi.vcpus && t.vcpus == smp::ncpus(),
        "the topology has {} vCPUs, the boot info {}, the kernel {}",
        t.vcpus,
        bi.vcpus,
        smp::ncpus()
    );
    let ram: u64 = t.mem_ranges().iter().map(|r| r.len).sum();
    check!(
        ram == bi.mem_size,
        "the nodes hold {ram} bytes, the VM has {}",
        bi.mem_size
    );
    let mut must_allocate = [false; k42_abi::topology::MAX_NODES];
    for r in bi.regions() {
        let node = t.node_of(r.start);
        check!(
            node.is_some() && node == t.node_of(r.start + r.len - 1),
            "memory region {:#x}+{:#x} does not lie inside one node",
            r.start,
            r.len
        );
        if r.kind == MemRegionKind::Usable as u32 && r.len >= MIN_ZONE_BYTES {
            must_allocate[node.unwrap_or(0) as usize] = true;
        }
    }

    let wrong = AtomicU32::new(0);
    let first_wrong = AtomicU32::new(u32::MAX);
    smp::run_on_all(|cpu| {
        if percpu::node_id() != u32::from(t.vcpu_info[cpu as usize].node) {
            wrong.fetch_add(1, Ordering::Relaxed);
            first_wrong.fetch_min(cpu, Ordering::Relaxed);
        }
    });
    let w = wrong.load(Ordering::Relaxed);
    check!(
        w == 0,
        "{w} CPUs see another node than the topology gives them (first: CPU {})",
        first_wrong.load(Ordering::Relaxed)
    );

    for node in 0..t.nodes {
        if !must_allocate[node as usize] {
            continue;
        }
        let Some(pa) = frame::alloc_on_node(node) else {
            return Err(alloc::format!(
                "node {node} has usable memory but gave no frame"
            ));
        };
        frame::free(pa);
        check!(
            t.node_of(pa) == Some(node),
            "a frame from node {node} is at {pa:#x}, in node {:?}",
            t.node_of(pa)
        );
    }

    let strays = AtomicU32::new(0);
    smp::run_on_all(|_| {
        let home = percpu::node_id();
        if frame::free_frames_on(home) == 0 {
            return;
        }
        match frame::alloc() {
            Some(pa) => {
                if t.node_of(pa) != Some(home) {
                    strays.fetch_add(1, Ordering::Relaxed);
                }
                frame::free(pa);
            }
            None => {
                strays.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let s = strays.load(Ordering::Relaxed);
    check!(s == 0, "{s} CPUs got a frame from outside their own node");

    println!("topology: {} nodes, flags {:#x}", t.nodes, t.flags);
    for node in 0..t.nodes {
        println!("topology: node {node}: {}", describe_node(t, node));
    }
    Ok(())
}
kernel_test!("topology.matches_plan", topology_matches_plan);

/// `cpus 0-1; mem 0x0+0x10000000; host 0; distances 10 20`
fn describe_node(t: &Topology, node: u32) -> String {
    let mut s = String::from("cpus ");
    let mut first = true;
    let vcpus = t.vcpus();
    let mut i = 0;
    while i < vcpus.len() {
        if u32::from(vcpus[i].node) != node {
            i += 1;
            continue;
        }
        let mut j = i;
        while j + 1 < vcpus.len() && u32::from(vcpus[j + 1].node) == node {
            j += 1;
        }
        let sep = if first { "" } else { "," };
        let _ = if i == j {
            write!(s, "{sep}{i}")
        } else {
            write!(s, "{sep}{i}-{j}")
        };
        first = false;
        i = j + 1;
    }
    s.push_str("; mem ");
    let mut first = true;
    for r in t.mem_ranges().iter().filter(|r| r.node == node) {
        let _ = write!(
            s,
            "{}{:#x}+{:#x}",
            if first { "" } else { "," },
            r.start,
            r.len
        );
        first = false;
    }
    match t.node_info[node as usize].host_node {
        NO_HOST => s.push_str("; host -"),
        h => {
            let _ = write!(s, "; host {h}");
        }
    }
    s.push_str("; distances");
    for m in 0..t.nodes as usize {
        let _ = write!(s, " {}", t.distance(node as usize, m));
    }
    s
}
