//! Host topology discovery from sysfs, below a root directory (`/` on a
//! real host, a synthetic tree in tests).
//!
//! ```text
//! ROOT/sys/devices/system/cpu/online                    online CPUs
//! ROOT/sys/devices/system/cpu/offline                   offline CPUs (optional)
//! ROOT/sys/devices/system/cpu/cpuN/topology/thread_siblings_list   SMT siblings
//! ROOT/sys/devices/system/cpu/cpuN/cache/indexK/{level,type,shared_cpu_list}
//!                                                       the highest data or
//!                                                       unified cache = LLC
//! ROOT/sys/devices/system/node/online                   NUMA nodes (optional:
//! ROOT/sys/devices/system/node/nodeN/cpulist            absent on kernels
//! ROOT/sys/devices/system/node/nodeN/meminfo            without NUMA, which
//! ROOT/sys/devices/system/node/nodeN/distance           then count as one node)
//! ```
//!
//! A CPU's SMT group is named by its lowest sibling, its LLC group by the
//! lowest CPU sharing that cache (without cache information: its package,
//! then itself).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cpulist;

/// The host's CPUs, nodes and distances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTopology {
    /// Online CPUs, ascending by id.
    pub cpus: Vec<HostCpu>,
    /// CPUs the kernel lists as offline.
    pub offline_cpus: Vec<u32>,
    /// Online NUMA nodes, ascending by id.
    pub nodes: Vec<HostNode>,
    /// Whether sysfs describes NUMA nodes (false on kernels without NUMA;
    /// then `nodes` is one node 0 and memory is never bound).
    pub numa: bool,
}

/// One online host CPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCpu {
    pub id: u32,
    /// NUMA node.
    pub node: u32,
    /// SMT group: the lowest id among this CPU's hardware threads.
    pub core: u32,
    /// LLC group: the lowest id among the CPUs sharing its last-level cache.
    pub llc: u32,
}

/// One online NUMA node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNode {
    pub id: u32,
    /// Online CPUs of the node, ascending.
    pub cpus: Vec<u32>,
    /// Memory of the node (0 for a memory-less node).
    pub mem_bytes: u64,
    /// Distance to each node of `HostTopology::nodes`, in that order.
    pub distances: Vec<u32>,
}

/// A sysfs file that could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error("cannot read host topology file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("host topology file {0} is malformed: {1}")]
    Malformed(PathBuf, String),
}

impl HostTopology {
    /// Read the topology below `root` (`/` for this host).
    pub fn discover(root: &Path) -> Result<Self, SysfsError> {
        let cpu_dir = root.join("sys/devices/system/cpu");
        let node_dir = root.join("sys/devices/system/node");
        let online = read_list(&cpu_dir.join("online"))?;
        let offline_path = cpu_dir.join("offline");
        let offline_cpus = if offline_path.exists() {
            read_list(&offline_path)?
        } else {
            Vec::new()
        };
        let numa = node_dir.join("online").exists();
        let mut nodes = Vec::new();
        if numa {
            let ids = read_list(&node_dir.join("online"))?;
            for &id in &ids {
                let dir = node_dir.join(format!("node{id}"));
                let cpus: Vec<u32> = read_list(&dir.join("cpulist"))?
                    .into_iter()
                    .filter(|c| online.contains(c))
                    .collect();
                let mem_bytes = node_mem_total(&dir.join("meminfo"))?;
                let distances = read_distances(&dir.join("distance"), ids.len())?;
                nodes.push(HostNode {
                    id,
                    cpus,
                    mem_bytes,
                    distances,
                });
            }
            if nodes.is_empty() {
                return Err(SysfsError::Malformed(
                    node_dir.join("online"),
                    "no node is online".into(),
                ));
            }
        } else {
            nodes.push(HostNode {
                id: 0,
                cpus: online.clone(),
                mem_bytes: proc_mem_total(&root.join("proc/meminfo")),
                distances: vec![u32::from(k42_abi::topology::LOCAL_DISTANCE)],
            });
        }
        let mut cpus = Vec::with_capacity(online.len());
        for &id in &online {
            let node = nodes
                .iter()
                .find(|n| n.cpus.contains(&id))
                .map(|n| n.id)
                .ok_or_else(|| {
                    SysfsError::Malformed(
                        node_dir.clone(),
                        format!("online CPU {id} is in no node's cpulist"),
                    )
                })?;
            let dir = cpu_dir.join(format!("cpu{id}"));
            let core = lowest_of(&dir.join("topology/thread_siblings_list"))?.unwrap_or(id);
            let llc = match llc_cpus(&dir.join("cache"))? {
                Some(l) => l,
                None => lowest_of(&dir.join("topology/package_cpus_list"))?.unwrap_or(id),
            };
            cpus.push(HostCpu {
                id,
                node,
                core: core.min(id),
                llc: llc.min(id),
            });
        }
        if cpus.is_empty() {
            return Err(SysfsError::Malformed(
                cpu_dir.join("online"),
                "no CPU is online".into(),
            ));
        }
        Ok(Self {
            cpus,
            offline_cpus,
            nodes,
            numa,
        })
    }

    /// The online CPU `id`.
    pub fn cpu(&self, id: u32) -> Option<&HostCpu> {
        self.cpus
            .binary_search_by_key(&id, |c| c.id)
            .ok()
            .map(|i| &self.cpus[i])
    }

    /// The online node `id`.
    pub fn node(&self, id: u32) -> Option<&HostNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Distance between nodes `a` and `b` as sysfs gives it.
    pub fn distance(&self, a: u32, b: u32) -> Option<u32> {
        let from = self.node(a)?;
        let to = self.nodes.iter().position(|n| n.id == b)?;
        from.distances.get(to).copied()
    }

    /// The node with memory nearest to node `id` (itself if it has
    /// memory; ties go to the lowest id).
    pub fn nearest_node_with_memory(&self, id: u32) -> Option<u32> {
        self.nodes
            .iter()
            .filter(|n| n.mem_bytes > 0)
            .min_by_key(|n| (self.distance(id, n.id).unwrap_or(u32::MAX), n.id))
            .map(|n| n.id)
    }

    /// Ids of the online CPUs.
    pub fn online_ids(&self) -> Vec<u32> {
        self.cpus.iter().map(|c| c.id).collect()
    }

    /// A few lines for `k42vmm topology`.
    pub fn describe(&self, usable: &[u32]) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let smt = self.cpus.iter().filter(|c| c.core != c.id).count();
        let _ = writeln!(
            s,
            "host: {} online CPUs ({}){}, {} usable by k42vmm ({}); {} NUMA node{}{}",
            self.cpus.len(),
            cpulist::format(&self.online_ids()),
            if self.offline_cpus.is_empty() {
                String::new()
            } else {
                format!(", offline {}", cpulist::format(&self.offline_cpus))
            },
            usable.len(),
            cpulist::format(usable),
            self.nodes.len(),
            if self.nodes.len() == 1 { "" } else { "s" },
            if self.numa { "" } else { " (no NUMA in sysfs)" },
        );
        for n in &self.nodes {
            let cores: std::collections::BTreeSet<u32> = self
                .cpus
                .iter()
                .filter(|c| c.node == n.id)
                .map(|c| c.core)
                .collect();
            let llcs: std::collections::BTreeSet<u32> = self
                .cpus
                .iter()
                .filter(|c| c.node == n.id)
                .map(|c| c.llc)
                .collect();
            let distances: Vec<String> = n.distances.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                s,
                "  node {}: CPUs {}, {} cores, {} LLC{}, {} MiB memory, distances {}",
                n.id,
                cpulist::format(&n.cpus),
                cores.len(),
                llcs.len(),
                if llcs.len() == 1 { "" } else { "s" },
                n.mem_bytes >> 20,
                distances.join(" ")
            );
        }
        if smt > 0 {
            let _ = writeln!(s, "  {smt} CPUs are SMT siblings of a lower-numbered CPU");
        }
        s
    }
}

fn read(path: &Path) -> Result<String, SysfsError> {
    std::fs::read_to_string(path).map_err(|e| SysfsError::Read(path.to_path_buf(), e))
}

fn read_list(path: &Path) -> Result<Vec<u32>, SysfsError> {
    let text = read(path)?;
    let mut ids =
        cpulist::parse(&text).map_err(|e| SysfsError::Malformed(path.to_path_buf(), e))?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Lowest id in an optional list file (`None` when the file is absent
/// or empty).
fn lowest_of(path: &Path) -> Result<Option<u32>, SysfsError> {
    if !path.exists() {
        return Ok(None);
    }
    Ok(read_list(path)?.first().copied())
}

/// The lowest CPU sharing the highest-level data or unified cache in a
/// `cpuN/cache` directory, `None` without cache information.
fn llc_cpus(cache_dir: &Path) -> Result<Option<u32>, SysfsError> {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return Ok(None);
    };
    let mut best: Option<(u32, u32)> = None;
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_index = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("index"));
        if !is_index || !dir.join("shared_cpu_list").exists() {
            continue;
        }
        if read(&dir.join("type"))?.trim() == "Instruction" {
            continue;
        }
        let level_path = dir.join("level");
        let level: u32 = read(&level_path)?.trim().parse().map_err(|_| {
            SysfsError::Malformed(level_path.clone(), "not a cache level number".into())
        })?;
        if best.is_none_or(|(l, _)| level > l)
            && let Some(lowest) = lowest_of(&dir.join("shared_cpu_list"))?
        {
            best = Some((level, lowest));
        }
    }
    Ok(best.map(|(_, lowest)| lowest))
}

/// `Node N MemTotal: X kB` from a node's meminfo, in bytes.
fn node_mem_total(path: &Path) -> Result<u64, SysfsError> {
    let text = read(path)?;
    mem_total_kib(&text)
        .map(|kib| kib << 10)
        .ok_or_else(|| SysfsError::Malformed(path.to_path_buf(), "no MemTotal line".into()))
}

/// `MemTotal: X kB` from /proc/meminfo in bytes, 0 when unreadable (only
/// used for display on hosts without NUMA in sysfs).
fn proc_mem_total(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| mem_total_kib(&t))
        .map_or(0, |kib| kib << 10)
}

fn mem_total_kib(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains("MemTotal:"))?;
    let mut words = line.split(':').nth(1)?.split_whitespace();
    let n = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(n)
}

fn read_distances(path: &Path, nodes: usize) -> Result<Vec<u32>, SysfsError> {
    let text = read(path)?;
    let d: Result<Vec<u32>, _> = text.split_whitespace().map(str::parse).collect();
    match d {
        Ok(d) if d.len() == nodes => Ok(d),
        _ => Err(SysfsError::Malformed(
            path.to_path_buf(),
            format!("expected {nodes} distances, found '{}'", text.trim()),
        )),
    }
}

/// Synthetic sysfs trees for tests.
#[cfg(test)]
pub mod fake {
    use std::path::Path;

    /// One node of a synthetic host.
    pub struct FakeNode {
        pub cpus: &'static str,
        pub mem_mib: u64,
        pub distances: &'static [u32],
    }

    /// A synthetic host: `siblings(cpu)` gives each online CPU's SMT
    /// sibling list, `llc(cpu)` its LLC share list.
    pub struct FakeHost<'a> {
        pub online: &'static str,
        pub offline: Option<&'static str>,
        pub nodes: &'a [FakeNode],
        pub siblings: &'a dyn Fn(u32) -> String,
        pub llc: &'a dyn Fn(u32) -> String,
    }

    fn put(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{text}\n")).unwrap();
    }

    fn smt_pair(c: u32) -> String {
        format!("{},{}", c % 8, c % 8 + 8)
    }

    fn llc_of_half(c: u32) -> String {
        if c % 8 < 4 { "0-3,8-11" } else { "4-7,12-15" }.into()
    }

    /// 2 nodes × 8 CPUs: 4 cores per node, CPU c and c+8 are SMT
    /// siblings, one LLC per node; 1 GiB on node 0, 2 GiB on node 1.
    pub fn two_nodes_smt() -> FakeHost<'static> {
        FakeHost {
            online: "0-15",
            offline: None,
            nodes: &[
                FakeNode {
                    cpus: "0-3,8-11",
                    mem_mib: 1024,
                    distances: &[10, 21],
                },
                FakeNode {
                    cpus: "4-7,12-15",
                    mem_mib: 2048,
                    distances: &[21, 10],
                },
            ],
            siblings: &smt_pair,
            llc: &llc_of_half,
        }
    }

    impl FakeHost<'_> {
        /// Write the tree below `root`.
        pub fn write(&self, root: &Path) {
            let cpu = root.join("sys/devices/system/cpu");
            let node = root.join("sys/devices/system/node");
            put(&cpu.join("online"), self.online);
            if let Some(off) = self.offline {
                put(&cpu.join("offline"), off);
            }
            for id in super::cpulist::parse(self.online).unwrap() {
                let d = cpu.join(format!("cpu{id}"));
                put(
                    &d.join("topology/thread_siblings_list"),
                    &(self.siblings)(id),
                );
                put(&d.join("cache/index0/level"), "1");
                put(&d.join("cache/index0/type"), "Data");
                put(
                    &d.join("cache/index0/shared_cpu_list"),
                    &(self.siblings)(id),
                );
                put(&d.join("cache/index1/level"), "1");
                put(&d.join("cache/index1/type"), "Instruction");
                put(&d.join("cache/index1/shared_cpu_list"), &id.to_string());
                put(&d.join("cache/index3/level"), "3");
                put(&d.join("cache/index3/type"), "Unified");
                put(&d.join("cache/index3/shared_cpu_list"), &(self.llc)(id));
            }
            let ids: Vec<String> = (0..self.nodes.len()).map(|i| i.to_string()).collect();
            put(&node.join("online"), &ids.join(","));
            for (i, n) in self.nodes.iter().enumerate() {
                let d = node.join(format!("node{i}"));
                put(&d.join("cpulist"), n.cpus);
                put(
                    &d.join("meminfo"),
                    &format!(
                        "Node {i} MemTotal:       {} kB\nNode {i} MemFree:        1 kB",
                        n.mem_mib << 10
                    ),
                );
                let dist: Vec<String> = n.distances.iter().map(|d| d.to_string()).collect();
                put(&d.join("distance"), &dist.join(" "));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;

    #[test]
    fn reads_a_two_node_smt_host() {
        let dir = tempfile::tempdir().unwrap();
        two_nodes_smt().write(dir.path());
        let h = HostTopology::discover(dir.path()).unwrap();
        assert!(h.numa);
        assert_eq!(h.cpus.len(), 16);
        assert_eq!(
            h.cpu(12),
            Some(&HostCpu {
                id: 12,
                node: 1,
                core: 4,
                llc: 4
            })
        );
        assert_eq!(h.cpu(3).unwrap().llc, 0);
        assert_eq!(h.node(1).unwrap().mem_bytes, 2048 << 20);
        assert_eq!(h.distance(0, 1), Some(21));
        assert_eq!(h.distance(1, 1), Some(10));
        assert!(
            h.describe(&h.online_ids())
                .contains("node 1: CPUs 4-7,12-15")
        );
    }

    #[test]
    fn missing_and_malformed_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = HostTopology::discover(dir.path()).unwrap_err().to_string();
        assert!(e.contains("cpu/online"), "{e}");
        FakeHost {
            online: "0-1",
            offline: None,
            nodes: &[FakeNode {
                cpus: "0-1",
                mem_mib: 64,
                distances: &[10, 20],
            }],
            siblings: &|c| c.to_string(),
            llc: &|_| "0-1".into(),
        }
        .write(dir.path());
        let e = HostTopology::discover(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("node0/distance") && e.contains("expected 1 distances"),
            "{e}"
        );
    }

    #[test]
    fn a_kernel_without_numa_is_one_node() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("sys/devices/system/cpu");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(cpu.join("online"), "0-3\n").unwrap();
        let h = HostTopology::discover(dir.path()).unwrap();
        assert!(!h.numa);
        assert_eq!(h.nodes.len(), 1);
        assert_eq!(h.nodes[0].cpus, vec![0, 1, 2, 3]);
        assert_eq!(h.cpu(2).unwrap().core, 2);
        assert_eq!(h.cpu(2).unwrap().llc, 2);
    }

    #[test]
    fn this_host_is_readable() {
        let h = HostTopology::discover(Path::new("/")).unwrap();
        assert!(!h.cpus.is_empty());
        assert!(h.cpus.iter().all(|c| h.node(c.node).is_some()));
    }
}
