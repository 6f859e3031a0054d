//! The placement plan: which host CPU each vCPU thread runs on, which
//! guest node each vCPU belongs to, how much RAM each guest node has and
//! which host node it is bound to, and the guest's node distances.
//!
//! ```text
//!  HostTopology + allowed CPUs + (--vcpus, --memory, --pin, --numa)
//!        │
//!        ├─ 1. pin:  vCPU → host CPU (auto order, a list, pairs, or none)
//!        ├─ 2. numa: vCPU → guest node (mirror host nodes, N blocks, SPEC)
//!        ├─ 3. each guest node's host node (majority of its vCPUs, or
//!        │        host=), memory bound to it or the nearest node with memory
//!        ├─ 4. memory split evenly (2 MiB units), laid out by memory.rs
//!        └─ 5. SMT/LLC groups and the distance matrix
//!        ▼
//!      Plan ──► Topology record (shared-abi) for the guest, the report,
//!               `k42vmm topology`
//! ```
//!
//! `auto` pinning takes the usable CPUs (online and allowed) node by node;
//! within a node one thread of every physical core first, then the second
//! threads, and so on. Overcommitted, vCPU i goes to CPU `order[i * n / V]`,
//! so each host CPU carries V/n vCPUs (±1) and consecutive vCPUs share one.
//! docs/TOPOLOGY.md tells the same for users.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k42_abi::topology::{
    FLAG_MEMORY_BOUND, FLAG_PINNED, LOCAL_DISTANCE, MAX_DISTANCE, NO_HOST, NodeMemRange,
    NodeTopology, TOPOLOGY_MAGIC, Topology, VcpuTopology,
};
use serde::{Deserialize, Serialize};

use super::cpulist;
use super::spec::{NumaPolicy, PinPolicy};
use super::sysfs::HostTopology;
use crate::config::DEFAULT_MEMORY;
use crate::memory::{NodeRange, node_ranges};

/// Distance between two guest nodes that share a host node, or whose host
/// nodes are unknown (as Linux's fake NUMA uses).
pub const VIRTUAL_REMOTE_DISTANCE: u8 = 20;

/// The unit memory is split in.
const MEM_UNIT: u64 = k42_abi::layout::LARGE_PAGE_SIZE;

/// What the user asked for; `None` means "not given".
#[derive(Clone, Debug, Default)]
pub struct PlacementRequest {
    pub vcpus: Option<u32>,
    pub memory: Option<u64>,
    pub pin: Option<PinPolicy>,
    pub numa: Option<NumaPolicy>,
}

/// The plan for one VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// The `--pin` policy applied, with " (default)" when not given.
    pub pin: String,
    /// The `--numa` policy applied, with " (default)" when not given.
    pub numa: String,
    /// Host CPUs k42vmm may use: online and in its affinity mask.
    pub usable_host_cpus: Vec<u32>,
    /// More vCPUs than usable host CPUs, or several pinned to one CPU.
    pub overcommitted: bool,
    /// One entry per vCPU, in vCPU order.
    pub vcpu: Vec<VcpuPlacement>,
    /// One entry per guest node, in node order.
    pub nodes: Vec<GuestNode>,
    /// Guest node distances, `distances[a][b]`.
    pub distances: Vec<Vec<u8>>,
    /// Things worth knowing about the plan (memory-less host nodes).
    pub notes: Vec<String>,
}

/// Where one vCPU runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuPlacement {
    pub vcpu: u32,
    /// The host CPU its thread is pinned to (`None`: not pinned).
    pub host_cpu: Option<u32>,
    /// That CPU's host node.
    pub host_node: Option<u32>,
    pub guest_node: u32,
    /// vCPUs with the same number run on one physical host core.
    pub core_group: u32,
    /// vCPUs with the same number share a host last-level cache.
    pub llc_group: u32,
}

/// One guest NUMA node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNode {
    pub node: u32,
    /// Its vCPUs, ascending.
    pub vcpus: Vec<u32>,
    pub memory_bytes: u64,
    /// Its guest-physical RAM (two ranges when the MMIO hole splits it).
    pub ranges: Vec<NodeRange>,
    /// The host node it stands for: where most of its vCPUs run, or the
    /// SPEC's `host=` (`None`: unknown).
    pub host_node: Option<u32>,
    /// The host node its memory is bound to with mbind (`None`: unbound).
    pub memory_host_node: Option<u32>,
}

/// A placement that cannot be made; each names the option at fault.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("--pin {pin}: host CPU {cpu} is offline")]
    CpuOffline { pin: String, cpu: u32 },
    #[error("--pin {pin}: host CPU {cpu} does not exist (online host CPUs: {online})")]
    NoSuchCpu {
        pin: String,
        cpu: u32,
        online: String,
    },
    #[error(
        "--pin {pin}: host CPU {cpu} is outside the CPUs k42vmm may use ({allowed}, as taskset or the cgroup cpuset set them)"
    )]
    CpuNotAllowed {
        pin: String,
        cpu: u32,
        allowed: String,
    },
    #[error("--pin {pin}: gives {given} host CPUs for {vcpus} vCPUs; give one per vCPU")]
    PinCount {
        pin: String,
        given: usize,
        vcpus: u32,
    },
    #[error("--pin auto: no host CPU is both online and allowed for k42vmm")]
    NoUsableCpu,
    #[error("{what} asks for {vcpus} vCPUs; k42 supports 1 to {limit}")]
    VcpuCount {
        what: String,
        vcpus: usize,
        limit: usize,
    },
    #[error("--numa {numa}: its nodes hold {given} vCPUs, but the VM has {vcpus}")]
    SpecVcpus {
        numa: String,
        given: usize,
        vcpus: u32,
    },
    #[error("--numa {nodes}: {nodes} guest nodes need at least {nodes} vCPUs; the VM has {vcpus}")]
    NodesExceedVcpus { nodes: u32, vcpus: u32 },
    #[error("--numa {numa}: node {node} names host node {host}, which {why}")]
    BadHostNode {
        numa: String,
        node: usize,
        host: u32,
        why: &'static str,
    },
    #[error("--numa {numa}: the nodes' mem= add up to {given} MiB, but --memory is {memory} MiB")]
    SpecMemory {
        numa: String,
        given: u64,
        memory: u64,
    },
    #[error(
        "--memory {memory} MiB is too small for {nodes} guest nodes: each node needs at least 2 MiB"
    )]
    MemoryTooSmall { memory: u64, nodes: usize },
}

/// Make the plan for `req` on `host`, where this process may use the CPUs
/// in `allowed`.
pub fn plan(
    host: &HostTopology,
    allowed: &[u32],
    req: &PlacementRequest,
) -> Result<Plan, PlanError> {
    let usable: Vec<u32> = host
        .online_ids()
        .into_iter()
        .filter(|c| allowed.contains(c))
        .collect();
    let numa = req.numa.clone().unwrap_or(NumaPolicy::Auto);
    let vcpus = vcpu_count(req, &numa, &usable)?;
    let (pin_text, host_cpu) = pin_vcpus(host, &usable, req, vcpus)?;
    let overcommitted = is_overcommitted(&host_cpu, usable.len());
    let numa_text = match &req.numa {
        Some(n) => n.to_string(),
        None => "auto (default)".into(),
    };
    let groups = group_vcpus(host, &numa, &numa_text, &host_cpu)?;
    let (memory, sizes) = node_sizes(&groups, req.memory, &numa_text)?;
    let (nodes, node_of_vcpu, notes) = guest_nodes(host, &numa, groups, &sizes, vcpus);
    let vcpu = vcpu_placements(host, &host_cpu, &node_of_vcpu);
    let distances = node_distances(host, &nodes);
    Ok(Plan {
        vcpus,
        memory_bytes: memory,
        pin: pin_text,
        numa: numa_text,
        usable_host_cpus: usable,
        overcommitted,
        vcpu,
        nodes,
        distances,
        notes,
    })
}

/// The vCPUs a `--numa` SPEC's nodes hold, if it is one.
fn spec_vcpus(numa: &NumaPolicy) -> Option<usize> {
    match numa {
        NumaPolicy::Spec(nodes) => Some(nodes.iter().map(|n| n.vcpus.len()).sum::<usize>()),
        _ => None,
    }
}

/// The vCPU count: `--vcpus`, else an explicit `--pin`'s or the SPEC's, else the usable CPUs.
fn vcpu_count(req: &PlacementRequest, numa: &NumaPolicy, usable: &[u32]) -> Result<u32, PlanError> {
    let explicit = req.pin.as_ref().and_then(PinPolicy::explicit_cpus);
    let vcpus = match (req.vcpus, explicit, spec_vcpus(numa)) {
        (Some(v), _, _) => v as usize,
        (None, Some(cpus), _) => cpus.len(),
        (None, None, Some(n)) => n,
        (None, None, None) => usable.len().clamp(1, k42_abi::MAX_VCPUS),
    };
    if vcpus == 0 || vcpus > k42_abi::MAX_VCPUS {
        let what = match &req.pin {
            _ if req.vcpus.is_some() => "--vcpus".to_string(),
            Some(p) if explicit.is_some() => format!("--pin {p}"),
            _ => format!("--numa {numa}"),
        };
        return Err(PlanError::VcpuCount {
            what,
            vcpus,
            limit: k42_abi::MAX_VCPUS,
        });
    }
    Ok(vcpus as u32)
}

/// Step 1, vCPU → host CPU: the `--pin` text and each vCPU's host CPU (`None`: unpinned).
fn pin_vcpus(
    host: &HostTopology,
    usable: &[u32],
    req: &PlacementRequest,
    vcpus: u32,
) -> Result<(String, Vec<Option<u32>>), PlanError> {
    let (pin, pin_text) = match &req.pin {
        Some(p) => (p.clone(), p.to_string()),
        None if vcpus as usize <= usable.len() => (PinPolicy::Auto, "auto (default)".into()),
        None => (PinPolicy::None, "none (default: overcommitted)".into()),
    };
    let host_cpu: Vec<Option<u32>> = match &pin {
        PinPolicy::None => vec![None; vcpus as usize],
        PinPolicy::Auto => {
            let order = auto_order(host, usable);
            if order.is_empty() {
                return Err(PlanError::NoUsableCpu);
            }
            let (n, v) = (order.len(), vcpus as usize);
            (0..v)
                .map(|i| Some(if v <= n { order[i] } else { order[i * n / v] }))
                .collect()
        }
        PinPolicy::List(cpus) | PinPolicy::PerVcpu(cpus) => {
            if cpus.len() != vcpus as usize {
                return Err(PlanError::PinCount {
                    pin: pin_text,
                    given: cpus.len(),
                    vcpus,
                });
            }
            for &cpu in cpus {
                check_cpu(host, usable, &pin_text, cpu)?;
            }
            cpus.iter().copied().map(Some).collect()
        }
    };
    Ok((pin_text, host_cpu))
}

/// Overcommitted: pinned vCPUs sharing a host CPU, or more vCPUs than `usable` CPUs.
fn is_overcommitted(host_cpu: &[Option<u32>], usable: usize) -> bool {
    if host_cpu.iter().all(Option::is_some) {
        let mut per_cpu: BTreeMap<u32, u32> = BTreeMap::new();
        for c in host_cpu.iter().flatten() {
            *per_cpu.entry(*c).or_default() += 1;
        }
        per_cpu.values().any(|&n| n > 1)
    } else {
        host_cpu.len() > usable
    }
}

/// The host node of host CPU `cpu`, if it is pinned and online.
fn host_node_of(host: &HostTopology, cpu: Option<u32>) -> Option<u32> {
    cpu.and_then(|c| host.cpu(c)).map(|c| c.node)
}

/// The host node most of `members` run on (lowest on a tie), else the host's only node.
fn majority(host: &HostTopology, host_cpu: &[Option<u32>], members: &[u32]) -> Option<u32> {
    let mut count: BTreeMap<u32, u32> = BTreeMap::new();
    for &v in members {
        if let Some(n) = host_node_of(host, host_cpu[v as usize]) {
            *count.entry(n).or_default() += 1;
        }
    }
    let best = count.values().copied().max();
    count
        .iter()
        .find(|&(_, &c)| Some(c) == best)
        .map(|(&n, _)| n)
        .or(single_host_node(host))
}

/// The host's node when it is NUMA with exactly one node.
fn single_host_node(host: &HostTopology) -> Option<u32> {
    (host.numa && host.nodes.len() == 1).then(|| host.nodes[0].id)
}

/// The vCPUs of one guest node before its memory is sized.
struct NodeGroup {
    /// Its vCPUs, ascending.
    members: Vec<u32>,
    /// The host node it stands for.
    host_node: Option<u32>,
    /// Its memory, if the SPEC gives it.
    memory: Option<u64>,
}

/// Step 2, vCPU → guest node and its host node (SPEC `host=` or its vCPUs' majority).
fn group_vcpus(
    host: &HostTopology,
    numa: &NumaPolicy,
    numa_text: &str,
    host_cpu: &[Option<u32>],
) -> Result<Vec<NodeGroup>, PlanError> {
    let vcpus = host_cpu.len() as u32;
    let pinned = host_cpu.iter().all(Option::is_some);
    let group = |members: Vec<u32>, host_node: Option<u32>, memory: Option<u64>| NodeGroup {
        members,
        host_node,
        memory,
    };
    let mut groups: Vec<NodeGroup> = Vec::new();
    match numa {
        NumaPolicy::Off => groups.push(group((0..vcpus).collect(), None, None)),
        NumaPolicy::Auto if !pinned => {
            groups.push(group((0..vcpus).collect(), single_host_node(host), None));
        }
        NumaPolicy::Auto => {
            let mut by_host: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for v in 0..vcpus {
                let n = host_node_of(host, host_cpu[v as usize]).expect("pinned CPUs are online");
                by_host.entry(n).or_default().push(v);
            }
            groups.extend(by_host.into_iter().map(|(n, m)| group(m, Some(n), None)));
        }
        &NumaPolicy::Nodes(n) => {
            if n > vcpus {
                return Err(PlanError::NodesExceedVcpus { nodes: n, vcpus });
            }
            for g in 0..n {
                let members: Vec<u32> = (0..vcpus)
                    .filter(|&i| (i as u64 * n as u64 / vcpus as u64) as u32 == g)
                    .collect();
                let h = majority(host, host_cpu, &members);
                groups.push(group(members, h, None));
            }
        }
        NumaPolicy::Spec(nodes) => {
            let given = spec_vcpus(numa).unwrap_or(0);
            if given != vcpus as usize {
                return Err(PlanError::SpecVcpus {
                    numa: numa_text.to_string(),
                    given,
                    vcpus,
                });
            }
            for (g, node) in nodes.iter().enumerate() {
                let h = match node.host_node {
                    Some(h) => {
                        let why = match host.node(h) {
                            None => Some("does not exist"),
                            Some(n) if host.numa && n.mem_bytes == 0 => Some("has no memory"),
                            Some(_) => None,
                        };
                        if let Some(why) = why {
                            return Err(PlanError::BadHostNode {
                                numa: numa_text.to_string(),
                                node: g,
                                host: h,
                                why,
                            });
                        }
                        Some(h)
                    }
                    None => majority(host, host_cpu, &node.vcpus),
                };
                groups.push(group(node.vcpus.clone(), h, node.mem));
            }
        }
    }
    Ok(groups)
}

/// Step 3, the VM's memory and each node's: given sizes first, the rest split evenly.
fn node_sizes(
    groups: &[NodeGroup],
    requested: Option<u64>,
    numa_text: &str,
) -> Result<(u64, Vec<u64>), PlanError> {
    let given: u64 = groups.iter().filter_map(|g| g.memory).sum();
    let unsized_nodes = groups.iter().filter(|g| g.memory.is_none()).count();
    let memory = match requested {
        Some(m) => m,
        None if unsized_nodes == 0 => given,
        None => DEFAULT_MEMORY,
    };
    if (unsized_nodes == 0 && given != memory) || given > memory {
        return Err(PlanError::SpecMemory {
            numa: numa_text.to_string(),
            given: given >> 20,
            memory: memory >> 20,
        });
    }
    let too_small = PlanError::MemoryTooSmall {
        memory: memory >> 20,
        nodes: groups.len(),
    };
    let rest_units = (memory - given) / MEM_UNIT;
    let shares = match unsized_nodes as u64 {
        0 => Vec::new(),
        k if rest_units < k => return Err(too_small),
        k => (0..k)
            .map(|i| (rest_units / k + u64::from(i < rest_units % k)) * MEM_UNIT)
            .collect(),
    };
    let mut shares = shares.into_iter();
    let sizes: Vec<u64> = groups
        .iter()
        .map(|g| {
            g.memory
                .unwrap_or_else(|| shares.next().expect("one share per unsized node"))
        })
        .collect();
    Ok((memory, sizes))
}

/// Step 4, the guest nodes with RAM and binding, each vCPU's node, and notes.
fn guest_nodes(
    host: &HostTopology,
    numa: &NumaPolicy,
    groups: Vec<NodeGroup>,
    sizes: &[u64],
    vcpus: u32,
) -> (Vec<GuestNode>, Vec<u32>, Vec<String>) {
    let ranges = node_ranges(sizes);
    let mut notes = Vec::new();
    let mut node_of_vcpu = vec![0u32; vcpus as usize];
    let nodes: Vec<GuestNode> = groups
        .into_iter()
        .enumerate()
        .map(|(g, NodeGroup { members, host_node, .. })| {
            for &v in &members {
                node_of_vcpu[v as usize] = g as u32;
            }
            let bind = host.numa && !matches!(numa, NumaPolicy::Off);
            let memory_host_node = host_node
                .filter(|_| bind)
                .and_then(|h| host.nearest_node_with_memory(h));
            if let (Some(h), Some(m)) = (host_node, memory_host_node)
                && h != m
            {
                notes.push(format!(
                    "guest node {g}: host node {h} has no memory; its memory is bound to host node {m}, the nearest with memory"
                ));
            }
            GuestNode {
                node: g as u32,
                vcpus: members,
                memory_bytes: sizes[g],
                ranges: ranges.iter().filter(|r| r.node == g as u32).copied().collect(),
                host_node,
                memory_host_node,
            }
        })
        .collect();
    (nodes, node_of_vcpu, notes)
}

/// Step 5a, each vCPU's placement with its SMT (core) and LLC groups.
fn vcpu_placements(
    host: &HostTopology,
    host_cpu: &[Option<u32>],
    node_of_vcpu: &[u32],
) -> Vec<VcpuPlacement> {
    let core_group = dense_groups(host_cpu, |c| host.cpu(c).map(|c| c.core));
    let llc_group = dense_groups(host_cpu, |c| host.cpu(c).map(|c| c.llc));
    (0..host_cpu.len())
        .map(|i| VcpuPlacement {
            vcpu: i as u32,
            host_cpu: host_cpu[i],
            host_node: host_node_of(host, host_cpu[i]),
            guest_node: node_of_vcpu[i],
            core_group: core_group[i],
            llc_group: llc_group[i],
        })
        .collect()
}

/// Step 5b, the guest node distance matrix.
fn node_distances(host: &HostTopology, nodes: &[GuestNode]) -> Vec<Vec<u8>> {
    nodes
        .iter()
        .map(|a| nodes.iter().map(|b| guest_distance(host, a, b)).collect())
        .collect()
}

/// The usable CPUs in `auto` order: node by node; within a node the first
/// thread of every core, then the second threads, and so on.
fn auto_order(host: &HostTopology, usable: &[u32]) -> Vec<u32> {
    let mut order = Vec::with_capacity(usable.len());
    for node in &host.nodes {
        let mut cores: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for c in host.cpus.iter().filter(|c| c.node == node.id) {
            if usable.contains(&c.id) {
                cores.entry(c.core).or_default().push(c.id);
            }
        }
        let rounds = cores.values().map(Vec::len).max().unwrap_or(0);
        for round in 0..rounds {
            order.extend(cores.values().filter_map(|threads| threads.get(round)));
        }
    }
    order
}

/// A pinned CPU must be online and allowed; the error says which it is not.
fn check_cpu(host: &HostTopology, usable: &[u32], pin: &str, cpu: u32) -> Result<(), PlanError> {
    if usable.contains(&cpu) {
        return Ok(());
    }
    let pin = pin.to_string();
    Err(if host.cpu(cpu).is_some() {
        PlanError::CpuNotAllowed {
            pin,
            cpu,
            allowed: cpulist::format(usable),
        }
    } else if host.offline_cpus.contains(&cpu) {
        PlanError::CpuOffline { pin, cpu }
    } else {
        PlanError::NoSuchCpu {
            pin,
            cpu,
            online: cpulist::format(&host.online_ids()),
        }
    })
}

/// Number vCPUs' groups densely in vCPU order: vCPUs whose host CPUs have
/// the same `key` share a number; an unpinned vCPU is alone.
fn dense_groups(host_cpu: &[Option<u32>], key: impl Fn(u32) -> Option<u32>) -> Vec<u32> {
    let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
    let mut next = 0;
    host_cpu
        .iter()
        .map(|c| {
            let fresh = |next: &mut u32| {
                *next += 1;
                *next - 1
            };
            match c.and_then(&key) {
                Some(k) => *seen.entry(k).or_insert_with(|| fresh(&mut next)),
                None => fresh(&mut next),
            }
        })
        .collect()
}

/// Distance from guest node `a` to `b`: the host's between their host
/// nodes when those differ, else [`VIRTUAL_REMOTE_DISTANCE`].
fn guest_distance(host: &HostTopology, a: &GuestNode, b: &GuestNode) -> u8 {
    if a.node == b.node {
        return LOCAL_DISTANCE;
    }
    match (a.host_node, b.host_node) {
        (Some(x), Some(y)) if x != y => host.distance(x, y).map_or(VIRTUAL_REMOTE_DISTANCE, |d| {
            d.clamp(u32::from(LOCAL_DISTANCE) + 1, u32::from(MAX_DISTANCE)) as u8
        }),
        _ => VIRTUAL_REMOTE_DISTANCE,
    }
}

impl Plan {
    /// Whether every vCPU is pinned.
    pub fn pinned(&self) -> bool {
        self.vcpu.iter().all(|v| v.host_cpu.is_some())
    }

    /// The one-line overcommit warning, when overcommitted: vCPUs per
    /// host CPU they run on (the pinned CPUs, or all usable ones).
    pub fn overcommit_warning(&self) -> Option<String> {
        if !self.overcommitted {
            return None;
        }
        let mut per_cpu: BTreeMap<u32, u32> = BTreeMap::new();
        for c in self.vcpu.iter().filter_map(|v| v.host_cpu) {
            *per_cpu.entry(c).or_default() += 1;
        }
        let (host, how) = if self.pinned() {
            let lo = per_cpu.values().min().copied().unwrap_or(0);
            let hi = per_cpu.values().max().copied().unwrap_or(0);
            let each = if lo == hi {
                format!("{lo}")
            } else {
                format!("{lo}-{hi}")
            };
            (per_cpu.len(), format!("pinned {each} per host CPU"))
        } else {
            (self.usable_host_cpus.len(), "vCPUs not pinned".into())
        };
        let host = host.max(1);
        Some(format!(
            "{} vCPUs on {host} host CPU{} ({:.1}x overcommit), {how}: idle vCPUs halt, but timings are not per-CPU figures",
            self.vcpus,
            if host == 1 { "" } else { "s" },
            self.vcpus as f64 / host as f64
        ))
    }

    /// The record the guest fetches with the `Topology` hypercall.
    pub fn to_record(&self) -> Topology {
        let mut t = Topology::empty();
        t.magic = TOPOLOGY_MAGIC;
        t.abi_version = k42_abi::ABI_VERSION;
        t.size = std::mem::size_of::<Topology>() as u32;
        t.vcpus = self.vcpus;
        t.nodes = self.nodes.len() as u32;
        for (slot, v) in t.vcpu_info.iter_mut().zip(&self.vcpu) {
            *slot = VcpuTopology {
                host_cpu: v.host_cpu.unwrap_or(NO_HOST),
                host_node: v.host_node.unwrap_or(NO_HOST),
                node: v.guest_node as u16,
                core_group: v.core_group as u16,
                llc_group: v.llc_group as u16,
                reserved: 0,
            };
        }
        let mut ranges: Vec<NodeRange> = Vec::new();
        for (slot, n) in t.node_info.iter_mut().zip(&self.nodes) {
            *slot = NodeTopology {
                host_node: n.memory_host_node.unwrap_or(NO_HOST),
                vcpus: n.vcpus.len() as u32,
                mem_bytes: n.memory_bytes,
            };
            ranges.extend(&n.ranges);
        }
        ranges.sort_by_key(|r| r.start);
        for (slot, r) in t.mem_ranges.iter_mut().zip(&ranges) {
            *slot = NodeMemRange {
                start: r.start,
                len: r.len,
                node: r.node,
                reserved: 0,
            };
        }
        t.n_mem_ranges = ranges.len() as u32;
        for (row, dists) in t.distances.iter_mut().zip(&self.distances) {
            row[..dists.len()].copy_from_slice(dists);
        }
        if self.pinned() {
            t.flags |= FLAG_PINNED;
        }
        if self.nodes.iter().all(|n| n.memory_host_node.is_some()) {
            t.flags |= FLAG_MEMORY_BOUND;
        }
        t
    }

    /// The plan in a few lines for `k42vmm topology`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let opt = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
        let _ = writeln!(
            s,
            "plan: {} vCPUs, {} MiB in {} guest node{}; --pin {}, --numa {}",
            self.vcpus,
            self.memory_bytes >> 20,
            self.nodes.len(),
            if self.nodes.len() == 1 { "" } else { "s" },
            self.pin,
            self.numa
        );
        let _ = writeln!(
            s,
            "  {:>5} {:>9} {:>10} {:>11} {:>5} {:>4}",
            "vCPU", "host CPU", "host node", "guest node", "core", "LLC"
        );
        for v in &self.vcpu {
            let _ = writeln!(
                s,
                "  {:>5} {:>9} {:>10} {:>11} {:>5} {:>4}",
                v.vcpu,
                opt(v.host_cpu),
                opt(v.host_node),
                v.guest_node,
                v.core_group,
                v.llc_group
            );
        }
        for n in &self.nodes {
            let ranges: Vec<String> = n
                .ranges
                .iter()
                .map(|r| format!("{:#x}-{:#x}", r.start, r.start + r.len - 1))
                .collect();
            let _ = writeln!(
                s,
                "  guest node {}: vCPUs {}, {} MiB at {}, host node {}, memory {}",
                n.node,
                cpulist::format(&n.vcpus),
                n.memory_bytes >> 20,
                ranges.join(" and "),
                opt(n.host_node),
                match n.memory_host_node {
                    Some(m) => format!("bound to host node {m}"),
                    None => "not bound".into(),
                }
            );
        }
        if self.nodes.len() > 1 {
            let header: Vec<String> = (0..self.nodes.len()).map(|b| format!("{b:>4}")).collect();
            let _ = writeln!(s, "  distances:\n        {}", header.join(""));
            for (a, row) in self.distances.iter().enumerate() {
                let cells: Vec<String> = row.iter().map(|d| format!("{d:>4}")).collect();
                let _ = writeln!(s, "    {a:>3}:{}", cells.join(""));
            }
        }
        if let Some(w) = self.overcommit_warning() {
            let _ = writeln!(s, "  warning: {w}");
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::sysfs::fake::{self, FakeHost, FakeNode};

    fn host(fake: FakeHost) -> HostTopology {
        let dir = tempfile::tempdir().unwrap();
        fake.write(dir.path());
        HostTopology::discover(dir.path()).unwrap()
    }

    /// 1 node × 2 CPUs, no SMT, one LLC.
    fn one_node_two_cpus() -> HostTopology {
        host(FakeHost {
            online: "0-1",
            offline: None,
            nodes: &[FakeNode {
                cpus: "0-1",
                mem_mib: 4096,
                distances: &[10],
            }],
            siblings: &|c| c.to_string(),
            llc: &|_| "0-1".into(),
        })
    }

    /// 2 nodes × 8 CPUs: 4 cores per node, CPU c and c+8 are siblings.
    fn two_nodes_smt() -> HostTopology {
        host(fake::two_nodes_smt())
    }

    /// 4 nodes of 2 CPUs; CPU 7 offline; node 1 has no memory and is
    /// nearer to node 2 (15) than to the others (20).
    fn four_nodes_offline_memoryless() -> HostTopology {
        host(FakeHost {
            online: "0-6",
            offline: Some("7"),
            nodes: &[
                FakeNode {
                    cpus: "0-1",
                    mem_mib: 1024,
                    distances: &[10, 20, 20, 20],
                },
                FakeNode {
                    cpus: "2-3",
                    mem_mib: 0,
                    distances: &[20, 10, 15, 20],
                },
                FakeNode {
                    cpus: "4-5",
                    mem_mib: 1024,
                    distances: &[20, 15, 10, 20],
                },
                FakeNode {
                    cpus: "6",
                    mem_mib: 1024,
                    distances: &[20, 20, 20, 10],
                },
            ],
            siblings: &|c| c.to_string(),
            llc: &|c| format!("{}-{}", c / 2 * 2, c / 2 * 2 + 1),
        })
    }

    /// Two sockets of 4 nodes each, 2 CPUs per node: 12 within a socket
    /// for neighbours, 14 across it, 32 to the other socket.
    const EIGHT_NODE_DISTANCES: [[u32; 8]; 8] = [
        [10, 12, 14, 12, 32, 32, 32, 32],
        [12, 10, 12, 14, 32, 32, 32, 32],
        [14, 12, 10, 12, 32, 32, 32, 32],
        [12, 14, 12, 10, 32, 32, 32, 32],
        [32, 32, 32, 32, 10, 12, 14, 12],
        [32, 32, 32, 32, 12, 10, 12, 14],
        [32, 32, 32, 32, 14, 12, 10, 12],
        [32, 32, 32, 32, 12, 14, 12, 10],
    ];

    fn eight_nodes() -> HostTopology {
        const CPUS: [&str; 8] = ["0-1", "2-3", "4-5", "6-7", "8-9", "10-11", "12-13", "14-15"];
        let nodes: Vec<FakeNode> = (0..8)
            .map(|n| FakeNode {
                cpus: CPUS[n],
                mem_mib: 2048,
                distances: &EIGHT_NODE_DISTANCES[n],
            })
            .collect();
        host(FakeHost {
            online: "0-15",
            offline: None,
            nodes: &nodes,
            siblings: &|c| c.to_string(),
            llc: &|c| if c < 8 { "0-7" } else { "8-15" }.into(),
        })
    }

    fn request(vcpus: Option<u32>, pin: Option<&str>, numa: Option<&str>) -> PlacementRequest {
        PlacementRequest {
            vcpus,
            memory: None,
            pin: pin.map(|p| PinPolicy::parse(p).unwrap()),
            numa: numa.map(|n| NumaPolicy::parse(n).unwrap()),
        }
    }

    /// Plan on `host` with every online CPU allowed, and check the record
    /// the guest would get.
    fn plan_all(host: &HostTopology, req: &PlacementRequest) -> Plan {
        let p = plan(host, &host.online_ids(), req).unwrap();
        p.to_record().validate(p.vcpus).unwrap();
        p
    }

    fn error(host: &HostTopology, req: &PlacementRequest) -> String {
        plan(host, &host.online_ids(), req).unwrap_err().to_string()
    }

    fn cpus(p: &Plan) -> Vec<Option<u32>> {
        p.vcpu.iter().map(|v| v.host_cpu).collect()
    }

    fn guest_nodes(p: &Plan) -> Vec<u32> {
        p.vcpu.iter().map(|v| v.guest_node).collect()
    }

    fn node_vcpus(p: &Plan) -> Vec<Vec<u32>> {
        p.nodes.iter().map(|n| n.vcpus.clone()).collect()
    }

    fn some(v: &[u32]) -> Vec<Option<u32>> {
        v.iter().copied().map(Some).collect()
    }

    #[test]
    fn one_node_two_cpus_defaults() {
        let h = one_node_two_cpus();
        let p = plan_all(&h, &request(None, None, None));
        assert_eq!(p.vcpus, 2);
        assert_eq!(p.memory_bytes, DEFAULT_MEMORY);
        assert_eq!(p.pin, "auto (default)");
        assert_eq!(cpus(&p), some(&[0, 1]));
        assert!(!p.overcommitted);
        assert_eq!(p.nodes.len(), 1);
        assert_eq!(p.nodes[0].host_node, Some(0));
        assert_eq!(p.nodes[0].memory_host_node, Some(0));
        assert_eq!(
            p.nodes[0].ranges,
            vec![NodeRange {
                node: 0,
                start: 0,
                len: DEFAULT_MEMORY
            }]
        );
        let groups: Vec<(u32, u32)> = p.vcpu.iter().map(|v| (v.core_group, v.llc_group)).collect();
        assert_eq!(groups, vec![(0, 0), (1, 0)]);
        assert_eq!(p.distances, vec![vec![10]]);
        assert!(p.to_record().flags & FLAG_PINNED != 0);
        assert!(
            p.describe()
                .contains("guest node 0: vCPUs 0-1, 512 MiB at 0x0-0x1fffffff")
        );
    }

    #[test]
    fn one_node_two_cpus_overcommitted() {
        let h = one_node_two_cpus();
        // Default: not pinned, with one warning.
        let p = plan_all(&h, &request(Some(4), None, None));
        assert_eq!(p.pin, "none (default: overcommitted)");
        assert_eq!(cpus(&p), vec![None; 4]);
        assert!(p.overcommitted);
        let w = p.overcommit_warning().unwrap();
        assert!(
            w.contains("4 vCPUs on 2 host CPUs (2.0x overcommit), vCPUs not pinned"),
            "{w}"
        );
        let groups: Vec<u32> = p.vcpu.iter().map(|v| v.core_group).collect();
        assert_eq!(groups, vec![0, 1, 2, 3]);
        // auto spreads evenly, consecutive vCPUs together.
        let p = plan_all(&h, &request(Some(5), Some("auto"), None));
        assert_eq!(cpus(&p), some(&[0, 0, 0, 1, 1]));
        assert!(
            p.overcommit_warning()
                .unwrap()
                .contains("pinned 2-3 per host CPU")
        );
        let groups: Vec<u32> = p.vcpu.iter().map(|v| v.core_group).collect();
        assert_eq!(groups, vec![0, 0, 0, 1, 1]);
    }

    #[test]
    fn one_node_two_cpus_lists_and_virtual_nodes() {
        let h = one_node_two_cpus();
        let p = plan_all(&h, &request(None, Some("1,0"), None));
        assert_eq!(cpus(&p), some(&[1, 0]));
        let p = plan_all(&h, &request(None, Some("0@1,1@1"), None));
        assert_eq!(cpus(&p), some(&[1, 1]));
        assert!(p.overcommitted);
        let w = p.overcommit_warning().unwrap();
        assert!(
            w.starts_with("2 vCPUs on 1 host CPU (2.0x overcommit), pinned 2 per host CPU:"),
            "{w}"
        );
        // --numa 2 on one host node: two guest nodes, both bound to host node 0.
        let p = plan_all(&h, &request(None, None, Some("2")));
        assert_eq!(node_vcpus(&p), vec![vec![0], vec![1]]);
        assert_eq!(p.distances, vec![vec![10, 20], vec![20, 10]]);
        for n in &p.nodes {
            assert_eq!(n.memory_bytes, 256 << 20);
            assert_eq!(n.memory_host_node, Some(0));
        }
        // --numa 4 on 8 unpinned vCPUs: blocks of two, memory still bound.
        let p = plan_all(&h, &request(Some(8), None, Some("4")));
        assert_eq!(guest_nodes(&p), vec![0, 0, 1, 1, 2, 2, 3, 3]);
        assert!(p.nodes.iter().all(|n| n.memory_host_node == Some(0)));
        // --numa off: nothing bound.
        let p = plan_all(&h, &request(None, None, Some("off")));
        assert_eq!(p.nodes[0].memory_host_node, None);
        assert_eq!(p.nodes[0].host_node, None);
        assert!(p.to_record().flags & FLAG_MEMORY_BOUND == 0);
    }

    #[test]
    fn one_node_two_cpus_errors() {
        let h = one_node_two_cpus();
        assert_eq!(
            error(&h, &request(None, Some("0-2"), None)),
            "--pin 0-2: host CPU 2 does not exist (online host CPUs: 0-1)"
        );
        assert_eq!(
            error(&h, &request(Some(3), Some("0-1"), None)),
            "--pin 0-1: gives 2 host CPUs for 3 vCPUs; give one per vCPU"
        );
        assert_eq!(
            error(&h, &request(Some(2), None, Some("3"))),
            "--numa 3: 3 guest nodes need at least 3 vCPUs; the VM has 2"
        );
        assert_eq!(
            error(&h, &request(Some(3), None, Some("0:cpus=0;1:cpus=1"))),
            "--numa 0:cpus=0;1:cpus=1: its nodes hold 2 vCPUs, but the VM has 3"
        );
        let mut r = request(None, None, Some("2"));
        r.memory = Some(2 << 20);
        assert_eq!(
            error(&h, &r),
            "--memory 2 MiB is too small for 2 guest nodes: each node needs at least 2 MiB"
        );
        // Only CPU 0 allowed (taskset or cpuset).
        let e = plan(&h, &[0], &request(None, Some("1"), None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--pin 1: host CPU 1 is outside the CPUs k42vmm may use (0, as taskset or the cgroup cpuset set them)"
        );
        let p = plan(&h, &[0], &request(None, None, None)).unwrap();
        assert_eq!(cpus(&p), some(&[0]));
        assert_eq!(p.usable_host_cpus, vec![0]);
    }

    #[test]
    fn two_nodes_smt_auto_fills_a_node_cores_first() {
        let h = two_nodes_smt();
        let p = plan_all(&h, &request(None, None, None));
        assert_eq!(
            cpus(&p),
            some(&[0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15])
        );
        assert_eq!(
            node_vcpus(&p),
            vec![(0..8).collect::<Vec<_>>(), (8..16).collect()]
        );
        assert_eq!(p.distances, vec![vec![10, 21], vec![21, 10]]);
        let bound: Vec<Option<u32>> = p.nodes.iter().map(|n| n.memory_host_node).collect();
        assert_eq!(bound, vec![Some(0), Some(1)]);
        // vCPU 0 (CPU 0) and vCPU 4 (CPU 8) are SMT siblings.
        assert_eq!(p.vcpu[0].core_group, p.vcpu[4].core_group);
        assert_ne!(p.vcpu[0].core_group, p.vcpu[1].core_group);
        let llc: Vec<u32> = p.vcpu.iter().map(|v| v.llc_group).collect();
        assert_eq!(llc, [vec![0; 8], vec![1; 8]].concat());
        // Six vCPUs stay on node 0: four cores, then two siblings.
        let p = plan_all(&h, &request(Some(6), None, None));
        assert_eq!(cpus(&p), some(&[0, 1, 2, 3, 8, 9]));
        assert_eq!(p.nodes.len(), 1);
        assert_eq!(p.nodes[0].host_node, Some(0));
    }

    #[test]
    fn two_nodes_smt_other_policies() {
        let h = two_nodes_smt();
        // Pairs on node 1's siblings: one guest node on host node 1.
        let p = plan_all(&h, &request(None, Some("0@4,1@12"), None));
        assert_eq!(p.nodes.len(), 1);
        assert_eq!(p.nodes[0].memory_host_node, Some(1));
        assert_eq!(p.vcpu[0].core_group, p.vcpu[1].core_group);
        // A list that spans both nodes: guest nodes follow the host nodes.
        let p = plan_all(&h, &request(None, Some("4,0,5,1"), None));
        assert_eq!(node_vcpus(&p), vec![vec![1, 3], vec![0, 2]]);
        assert_eq!(guest_nodes(&p), vec![1, 0, 1, 0]);
        // SPEC with sizes and host=: node 1 is bound to host node 1
        // although its vCPUs run on host node 0.
        let p = plan_all(
            &h,
            &request(
                Some(8),
                Some("auto"),
                Some("0:cpus=0-3,mem=128M;1:cpus=4-7,mem=384M,host=1"),
            ),
        );
        assert_eq!(p.memory_bytes, 512 << 20);
        assert_eq!(p.nodes[0].memory_bytes, 128 << 20);
        assert_eq!(p.nodes[1].ranges[0].start, 128 << 20);
        assert_eq!(p.nodes[1].host_node, Some(1));
        assert_eq!(p.nodes[1].memory_host_node, Some(1));
        assert_eq!(p.distances[0][1], 21);
        // SPEC without sizes takes even shares of --memory.
        let mut r = request(None, None, Some("0:cpus=0,2;1:cpus=1,3,4"));
        r.memory = Some(6 << 20);
        let p = plan_all(&h, &r);
        let sizes: Vec<u64> = p.nodes.iter().map(|n| n.memory_bytes).collect();
        assert_eq!(sizes, vec![4 << 20, 2 << 20]);
        assert_eq!(guest_nodes(&p), vec![0, 1, 0, 1, 1]);
        // SPEC sizes that disagree with --memory.
        let mut r = request(None, None, Some("0:cpus=0,mem=64M"));
        r.memory = Some(128 << 20);
        assert_eq!(
            error(&h, &r),
            "--numa 0:cpus=0,mem=64M: the nodes' mem= add up to 64 MiB, but --memory is 128 MiB"
        );
        // 40 vCPUs on 16 CPUs: 2 or 3 per CPU, evenly.
        let p = plan_all(&h, &request(Some(40), Some("auto"), None));
        let mut per: BTreeMap<u32, u32> = BTreeMap::new();
        for c in cpus(&p).into_iter().flatten() {
            *per.entry(c).or_default() += 1;
        }
        assert_eq!(per.len(), 16);
        assert!(per.values().all(|&n| n == 2 || n == 3));
        assert_eq!(node_vcpus(&p)[0], (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn four_nodes_with_offline_cpu_and_memoryless_node() {
        let h = four_nodes_offline_memoryless();
        assert_eq!(h.offline_cpus, vec![7]);
        assert_eq!(
            error(&h, &request(None, Some("6-7"), None)),
            "--pin 6-7: host CPU 7 is offline"
        );
        let p = plan_all(&h, &request(None, None, None));
        assert_eq!(p.vcpus, 7);
        assert_eq!(cpus(&p), some(&[0, 1, 2, 3, 4, 5, 6]));
        assert_eq!(
            node_vcpus(&p),
            vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6]]
        );
        let bound: Vec<Option<u32>> = p.nodes.iter().map(|n| n.memory_host_node).collect();
        assert_eq!(bound, vec![Some(0), Some(2), Some(2), Some(3)]);
        assert_eq!(p.notes.len(), 1);
        assert!(p.notes[0].contains("guest node 1: host node 1 has no memory"));
        assert_eq!(p.distances[1][2], 15);
        assert_eq!(p.distances[0][3], 20);
        assert!(p.nodes.iter().all(|n| n.memory_bytes == 128 << 20));
        assert_eq!(
            error(
                &h,
                &request(Some(2), None, Some("0:cpus=0;1:cpus=1,host=1"))
            ),
            "--numa 0:cpus=0;1:cpus=1,host=1: node 1 names host node 1, which has no memory"
        );
        assert_eq!(
            error(
                &h,
                &request(Some(2), None, Some("0:cpus=0;1:cpus=1,host=9"))
            ),
            "--numa 0:cpus=0;1:cpus=1,host=9: node 1 names host node 9, which does not exist"
        );
    }

    #[test]
    fn eight_nodes_keep_the_host_distances() {
        let h = eight_nodes();
        let p = plan_all(&h, &request(None, None, None));
        assert_eq!(p.nodes.len(), 8);
        let distances: Vec<Vec<u32>> = p
            .distances
            .iter()
            .map(|row| row.iter().map(|&d| u32::from(d)).collect())
            .collect();
        assert_eq!(distances, EIGHT_NODE_DISTANCES.map(|row| row.to_vec()));
        assert_eq!(p.nodes[5].memory_host_node, Some(5));
        assert_eq!(p.nodes[5].vcpus, vec![10, 11]);
        // CPUs on host nodes 0, 3 and 6: the sub-matrix.
        let p = plan_all(&h, &request(None, Some("0-1,6-7,12-13"), None));
        assert_eq!(p.nodes.len(), 3);
        assert_eq!(
            p.distances,
            vec![vec![10, 12, 32], vec![12, 10, 32], vec![32, 32, 10]]
        );
        // Three virtual nodes over sixteen vCPUs: majority host nodes 0, 3, 6.
        let p = plan_all(&h, &request(None, None, Some("3")));
        assert_eq!(
            node_vcpus(&p),
            vec![
                (0..6).collect::<Vec<_>>(),
                (6..11).collect(),
                (11..16).collect()
            ]
        );
        let hosts: Vec<Option<u32>> = p.nodes.iter().map(|n| n.host_node).collect();
        assert_eq!(hosts, vec![Some(0), Some(3), Some(6)]);
        assert_eq!(p.distances[0][1], 12);
        assert_eq!(p.distances[1][2], 32);
        let llc: Vec<u32> = p.vcpu.iter().map(|v| v.llc_group).collect();
        assert_eq!(llc, [vec![0; 8], vec![1; 8]].concat());
    }

    #[test]
    fn memory_over_the_hole_and_the_record() {
        let h = one_node_two_cpus();
        let mut r = request(None, None, Some("2"));
        r.memory = Some(5 << 30);
        let p = plan_all(&h, &r);
        assert_eq!(p.nodes[1].ranges.len(), 2);
        let t = p.to_record();
        assert_eq!(t.n_mem_ranges, 3);
        assert_eq!(t.node_of(3 << 30), None);
        assert_eq!(t.node_of(4 << 30), Some(1));
        assert_eq!(t.node_info[1].mem_bytes, (5 << 30) / 2);
        assert_eq!(t.vcpu_info[1].host_cpu, 1);
        assert_eq!(t.distances[0][1], 20);
    }
}
