//! The placement options' syntax: `--pin auto|none|LIST` and
//! `--numa auto|off|N|SPEC` (docs/TOPOLOGY.md has the user's view).
//!
//! ```text
//! --pin  auto | none
//!        0-3,8-11           vCPU i on the i-th host CPU listed
//!        0@2,1@3            vCPU 0 on host CPU 2, vCPU 1 on host CPU 3
//! --numa auto | off | N
//!        SPEC = NODE(;NODE)*                  nodes 0..n-1, each once
//!        NODE = ID:cpus=LIST[,mem=SIZE][,host=H]
//!        e.g. 0:cpus=0-3,mem=256M;1:cpus=4-7,mem=256M,host=1
//! ```
//!
//! In a SPEC the vCPU list may contain commas: everything after `cpus=` up
//! to the next `key=` belongs to it. Every vCPU 0..V-1 appears in exactly
//! one node. Parsing checks what the text alone can show; the planner
//! checks it against the host and the VM.

use std::fmt;

use k42_abi::topology::MAX_NODES;

use super::cpulist;
use crate::config::parse_size;

/// How vCPU threads are pinned to host CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinPolicy {
    /// Fill one host node's cores before the next, one vCPU per physical
    /// core before SMT siblings; spread evenly when overcommitted.
    Auto,
    /// No pinning: the host scheduler places the threads.
    None,
    /// vCPU i on the i-th CPU of the list.
    List(Vec<u32>),
    /// Pairs `i@cpu`: vCPU i on host CPU `cpus[i]`; every vCPU given.
    PerVcpu(Vec<u32>),
}

/// How the guest's NUMA nodes are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NumaPolicy {
    /// One guest node per host node the vCPUs landed on.
    Auto,
    /// One guest node, nothing bound.
    Off,
    /// N guest nodes of consecutive vCPUs, even on a host with fewer.
    Nodes(u32),
    /// Each node's vCPUs, memory and host node given.
    Spec(Vec<NodeSpec>),
}

/// One guest node of a `--numa` SPEC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// vCPUs of the node, ascending.
    pub vcpus: Vec<u32>,
    /// Memory, if given (otherwise a share of what is left).
    pub mem: Option<u64>,
    /// Host node to bind the memory to, if given.
    pub host_node: Option<u32>,
}

/// Why a `--pin` or `--numa` value is malformed; clap prints it after the
/// option and value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError(msg.into()))
}

impl PinPolicy {
    /// Parse a `--pin` value.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let t = text.trim();
        match t {
            "auto" => return Ok(Self::Auto),
            "none" => return Ok(Self::None),
            "" => return err("give auto, none, a CPU list like 0-3,8-11 or pairs like 0@2,1@3"),
            _ => {}
        }
        if !t.contains('@') {
            let cpus = cpulist::parse(t).map_err(|e| {
                SpecError(format!(
                    "{e} (give auto, none, a CPU list like 0-3,8-11 or pairs like 0@2,1@3)"
                ))
            })?;
            return Ok(Self::List(cpus));
        }
        let mut by_vcpu: Vec<Option<u32>> = Vec::new();
        for pair in t.split(',') {
            let Some((v, c)) = pair.split_once('@') else {
                return err(format!(
                    "'{pair}' is not VCPU@CPU: use one form, a list (0-3) or pairs (0@2,1@3)"
                ));
            };
            let num = |s: &str| {
                s.trim().parse::<u32>().map_err(|_| {
                    SpecError(format!(
                        "'{pair}' is not VCPU@CPU with two numbers, like 0@2"
                    ))
                })
            };
            let (v, c) = (num(v)?, num(c)?);
            if v as usize >= k42_abi::MAX_VCPUS {
                return err(format!(
                    "'{pair}': vCPU {v} is beyond the {} a VM can have",
                    k42_abi::MAX_VCPUS
                ));
            }
            if by_vcpu.len() <= v as usize {
                by_vcpu.resize(v as usize + 1, None);
            }
            if by_vcpu[v as usize].replace(c).is_some() {
                return err(format!("vCPU {v} is given twice"));
            }
        }
        let cpus: Option<Vec<u32>> = by_vcpu.iter().copied().collect();
        match cpus {
            Some(cpus) => Ok(Self::PerVcpu(cpus)),
            None => {
                let v = by_vcpu.iter().position(Option::is_none).unwrap_or(0);
                err(format!(
                    "vCPU {v} has no host CPU: pairs must cover vCPUs 0 to {}",
                    by_vcpu.len() - 1
                ))
            }
        }
    }

    /// The host CPU of each vCPU for an explicit policy.
    pub fn explicit_cpus(&self) -> Option<&[u32]> {
        match self {
            Self::List(c) | Self::PerVcpu(c) => Some(c),
            Self::Auto | Self::None => None,
        }
    }
}

impl fmt::Display for PinPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::None => f.write_str("none"),
            Self::List(cpus) => f.write_str(&cpulist::format(cpus)),
            Self::PerVcpu(cpus) => {
                let pairs: Vec<String> = cpus
                    .iter()
                    .enumerate()
                    .map(|(v, c)| format!("{v}@{c}"))
                    .collect();
                f.write_str(&pairs.join(","))
            }
        }
    }
}

impl NumaPolicy {
    /// Parse a `--numa` value.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let t = text.trim();
        match t {
            "auto" => return Ok(Self::Auto),
            "off" => return Ok(Self::Off),
            "" => return err("give auto, off, a node count, or a SPEC like 0:cpus=0-1;1:cpus=2-3"),
            _ => {}
        }
        if !t.contains(':') && !t.bytes().all(|b| b.is_ascii_digit()) {
            return err(format!(
                "'{t}' is not auto, off, a node count, or a SPEC like 0:cpus=0-1;1:cpus=2-3"
            ));
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            let n: u32 = t
                .parse()
                .map_err(|_| SpecError(format!("{t} guest nodes is too many")))?;
            if n == 0 {
                return err("a VM has at least one node");
            }
            if n as usize > MAX_NODES {
                return err(format!(
                    "{n} guest nodes, more than the {MAX_NODES} k42 supports"
                ));
            }
            return Ok(Self::Nodes(n));
        }
        let mut nodes: Vec<Option<NodeSpec>> = Vec::new();
        for part in t.split(';') {
            let (id, node) = parse_node(part.trim())?;
            if id as usize >= MAX_NODES {
                return err(format!("node {id} is beyond the {MAX_NODES} k42 supports"));
            }
            if nodes.len() <= id as usize {
                nodes.resize(id as usize + 1, None);
            }
            if nodes[id as usize].replace(node).is_some() {
                return err(format!("node {id} is given twice"));
            }
        }
        if let Some(gap) = nodes.iter().position(Option::is_none) {
            return err(format!(
                "node {gap} is missing: nodes are numbered 0, 1, 2, ..."
            ));
        }
        let nodes: Vec<NodeSpec> = nodes.into_iter().flatten().collect();
        let mut owner: Vec<Option<usize>> = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            for &v in &node.vcpus {
                if v as usize >= k42_abi::MAX_VCPUS {
                    return err(format!(
                        "node {n}: vCPU {v} is beyond the {} a VM can have",
                        k42_abi::MAX_VCPUS
                    ));
                }
                if owner.len() <= v as usize {
                    owner.resize(v as usize + 1, None);
                }
                if let Some(other) = owner[v as usize].replace(n) {
                    return err(format!("vCPU {v} is in node {other} and node {n}"));
                }
            }
        }
        if let Some(v) = owner.iter().position(Option::is_none) {
            return err(format!(
                "vCPU {v} is in no node: the nodes must cover vCPUs 0 to {}",
                owner.len() - 1
            ));
        }
        Ok(Self::Spec(nodes))
    }
}

impl fmt::Display for NumaPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Off => f.write_str("off"),
            Self::Nodes(n) => write!(f, "{n}"),
            Self::Spec(nodes) => {
                let parts: Vec<String> = nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let mut s = format!("{i}:cpus={}", cpulist::format(&n.vcpus));
                        if let Some(m) = n.mem {
                            s += &format!(",mem={}M", m >> 20);
                        }
                        if let Some(h) = n.host_node {
                            s += &format!(",host={h}");
                        }
                        s
                    })
                    .collect();
                f.write_str(&parts.join(";"))
            }
        }
    }
}

/// One `ID:cpus=LIST[,mem=SIZE][,host=H]`.
fn parse_node(part: &str) -> Result<(u32, NodeSpec), SpecError> {
    const FORM: &str = "a node is ID:cpus=LIST[,mem=SIZE][,host=H]";
    if part.is_empty() {
        return err(format!("an empty node between ';' ({FORM})"));
    }
    let Some((id, body)) = part.split_once(':') else {
        return err(format!("'{part}' has no node number ({FORM})"));
    };
    let id: u32 = id
        .trim()
        .parse()
        .map_err(|_| SpecError(format!("'{id}' in '{part}' is not a node number ({FORM})")))?;
    // Split into key=value fields; a token without '=' continues the
    // previous field's value (a CPU list with commas).
    let mut fields: Vec<(&str, String)> = Vec::new();
    for token in body.split(',') {
        match token.split_once('=') {
            Some((k, v)) => {
                let k = k.trim();
                if fields.iter().any(|(seen, _)| *seen == k) {
                    return err(format!("node {id}: {k}= is given twice"));
                }
                fields.push((k, v.trim().to_string()));
            }
            None => match fields.last_mut() {
                Some(("cpus", v)) => {
                    v.push(',');
                    v.push_str(token.trim());
                }
                _ => return err(format!("node {id}: '{token}' is not a field ({FORM})")),
            },
        }
    }
    let mut node = NodeSpec {
        vcpus: Vec::new(),
        mem: None,
        host_node: None,
    };
    let mut has_cpus = false;
    for (key, value) in fields {
        match key {
            "cpus" => {
                let mut vcpus = cpulist::parse(&value)
                    .map_err(|e| SpecError(format!("node {id}: cpus={value}: {e}")))?;
                if vcpus.is_empty() {
                    return err(format!("node {id}: cpus= lists no vCPU"));
                }
                vcpus.sort_unstable();
                if let Some(w) = vcpus.windows(2).find(|w| w[0] == w[1]) {
                    return err(format!("node {id}: vCPU {} is listed twice", w[0]));
                }
                node.vcpus = vcpus;
                has_cpus = true;
            }
            "mem" => {
                let bytes = parse_size(&value).map_err(|e| SpecError(format!("node {id}: {e}")))?;
                if bytes == 0 || !bytes.is_multiple_of(k42_abi::layout::LARGE_PAGE_SIZE) {
                    return err(format!(
                        "node {id}: mem={value} is not a non-zero multiple of 2 MiB"
                    ));
                }
                node.mem = Some(bytes);
            }
            "host" => {
                node.host_node = Some(value.parse().map_err(|_| {
                    SpecError(format!("node {id}: host={value} is not a host node number"))
                })?);
            }
            other => {
                return err(format!(
                    "node {id}: '{other}=' is not a node field (use cpus=, mem=, host=)"
                ));
            }
        }
    }
    if !has_cpus {
        return err(format!("node {id} has no cpus= ({FORM})"));
    }
    Ok((id, node))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin_err(text: &str) -> String {
        PinPolicy::parse(text).unwrap_err().to_string()
    }

    fn numa_err(text: &str) -> String {
        NumaPolicy::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn pin_values() {
        assert_eq!(PinPolicy::parse("auto"), Ok(PinPolicy::Auto));
        assert_eq!(PinPolicy::parse("none"), Ok(PinPolicy::None));
        assert_eq!(
            PinPolicy::parse("0-3,8-9"),
            Ok(PinPolicy::List(vec![0, 1, 2, 3, 8, 9]))
        );
        assert_eq!(
            PinPolicy::parse("1@3,0@2"),
            Ok(PinPolicy::PerVcpu(vec![2, 3]))
        );
        assert_eq!(PinPolicy::parse("0@5,1@5").unwrap().to_string(), "0@5,1@5");
        assert_eq!(PinPolicy::parse("3,0-2").unwrap().to_string(), "3,0-2");
    }

    #[test]
    fn malformed_pin_values_say_why() {
        assert!(pin_err("").contains("give auto, none"));
        assert!(pin_err("fast").contains("'fast' is not a CPU number"));
        assert!(pin_err("4-2").contains("runs backwards"));
        assert!(pin_err("0-1,3@4").contains("use one form"));
        assert!(pin_err("0@x").contains("'0@x' is not VCPU@CPU"));
        assert!(pin_err("0@1,0@2").contains("vCPU 0 is given twice"));
        assert!(pin_err("0@1,2@2").contains("vCPU 1 has no host CPU"));
        assert!(pin_err("300@1").contains("beyond the 255"));
    }

    #[test]
    fn numa_values() {
        assert_eq!(NumaPolicy::parse("auto"), Ok(NumaPolicy::Auto));
        assert_eq!(NumaPolicy::parse("off"), Ok(NumaPolicy::Off));
        assert_eq!(NumaPolicy::parse("4"), Ok(NumaPolicy::Nodes(4)));
        let spec = "1:cpus=2-3,mem=256M,host=1;0:cpus=0,1,4,mem=128M";
        assert_eq!(
            NumaPolicy::parse(spec),
            Ok(NumaPolicy::Spec(vec![
                NodeSpec {
                    vcpus: vec![0, 1, 4],
                    mem: Some(128 << 20),
                    host_node: None
                },
                NodeSpec {
                    vcpus: vec![2, 3],
                    mem: Some(256 << 20),
                    host_node: Some(1)
                },
            ]))
        );
        assert_eq!(
            NumaPolicy::parse(spec).unwrap().to_string(),
            "0:cpus=0-1,4,mem=128M;1:cpus=2-3,mem=256M,host=1"
        );
        assert_eq!(
            NumaPolicy::parse("0:cpus=0-1"),
            Ok(NumaPolicy::Spec(vec![NodeSpec {
                vcpus: vec![0, 1],
                mem: None,
                host_node: None
            }]))
        );
    }

    #[test]
    fn malformed_numa_values_say_why() {
        assert!(numa_err("0").contains("at least one node"));
        assert!(numa_err("65").contains("more than the 64"));
        assert!(numa_err("99999999999").contains("too many"));
        assert!(numa_err("lots").contains("'lots' is not auto, off"));
        assert!(numa_err("0:cpus=0;cpus=1").contains("'cpus=1' has no node number"));
        assert!(numa_err("x:cpus=0").contains("'x' in 'x:cpus=0' is not a node number"));
        assert!(numa_err("0:cpus=0;").contains("empty node"));
        assert!(numa_err("0:mem=2M").contains("node 0 has no cpus="));
        assert!(numa_err("0:cpus=").contains("lists no vCPU"));
        assert!(numa_err("0:cpus=0-1,cpus=2").contains("cpus= is given twice"));
        assert!(numa_err("0:cpus=0,1-x").contains("'1-x' is not a CPU number"));
        assert!(numa_err("0:cpus=0,mem=3M").contains("mem=3M is not a non-zero multiple"));
        assert!(numa_err("0:cpus=0,mem=lots").contains("'lots' is not a size"));
        assert!(numa_err("0:cpus=0,host=a").contains("host=a is not a host node"));
        assert!(numa_err("0:cpus=0,speed=9").contains("'speed=' is not a node field"));
        assert!(numa_err("0:mem=2M,1").contains("'1' is not a field"));
        assert!(numa_err("0:cpus=0;0:cpus=1").contains("node 0 is given twice"));
        assert!(numa_err("0:cpus=0;2:cpus=1").contains("node 1 is missing"));
        assert!(numa_err("0:cpus=0-1;1:cpus=1-2").contains("vCPU 1 is in node 0 and node 1"));
        assert!(numa_err("0:cpus=0;1:cpus=2").contains("vCPU 1 is in no node"));
        assert!(numa_err("0:cpus=0,0").contains("vCPU 0 is listed twice"));
        assert!(numa_err("70:cpus=0").contains("node 70 is beyond"));
    }
}
