//! Topology-aware placement as a user sees it: `k42vmm topology` plans
//! without booting (also against a synthetic sysfs tree); virtual NUMA
//! nodes on this host boot and the kernel sees the planned topology; the
//! vCPU threads of a running VM are pinned as planned (read back from
//! /proc); guest memory is bound and prefaulted.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k42vmm::topology::cpulist;
use serde_json::Value;

fn topology_json(args: &[&str]) -> Value {
    let mut all = vec!["topology", "--json"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert_eq!(out.status.code(), Some(0), "{all:?}\n{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("topology --json prints JSON")
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The CPUs this test process may use (k42vmm inherits them).
fn allowed_cpus() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap();
    cpulist::parse(list).unwrap()
}

#[test]
fn topology_command_prints_this_host_and_a_plan() {
    let doc = topology_json(&["--vcpus", "3", "--numa", "3", "--memory", "96M"]);
    let host = &doc["host"];
    assert!(!host["cpus"].as_array().unwrap().is_empty(), "{doc}");
    assert!(!host["nodes"].as_array().unwrap().is_empty(), "{doc}");
    let plan = &doc["plan"];
    assert_eq!(plan["vcpus"], 3);
    assert_eq!(plan["memory_bytes"], 96u64 << 20);
    assert_eq!(plan["numa"], "3");
    let nodes = plan["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for (n, node) in nodes.iter().enumerate() {
        assert_eq!(u32s(&node["vcpus"]), vec![n as u32]);
        assert_eq!(node["memory_bytes"], 32u64 << 20);
        assert_eq!(node["ranges"][0]["start"], (n as u64) * (32 << 20));
    }
    assert_eq!(plan["distances"][0], serde_json::json!([10, 20, 20]));
    // With --pin auto every vCPU gets a usable host CPU.
    let usable = allowed_cpus();
    let doc = topology_json(&["--vcpus", "4", "--pin", "auto"]);
    for v in doc["plan"]["vcpu"].as_array().unwrap() {
        let cpu = v["host_cpu"].as_u64().unwrap() as u32;
        assert!(usable.contains(&cpu), "{v} is outside {usable:?}");
    }
    // The text form names the host and every vCPU.
    let out = run(&["topology", "--vcpus", "2", "--numa", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.starts_with("host: "), "{text}");
    assert!(text.contains("guest node 1: vCPUs 1,"), "{text}");
    assert!(text.contains("distances:"), "{text}");
}

/// Write a sysfs tree of 2 nodes × 8 CPUs (CPU c and c+8 are SMT
/// siblings; one LLC per node) below `root`.
fn write_two_node_host(root: &Path) {
    let put = |rel: String, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{text}\n")).unwrap();
    };
    let sys = "sys/devices/system";
    put(format!("{sys}/cpu/online"), "0-15");
    for c in 0..16u32 {
        let core = c % 8;
        put(
            format!("{sys}/cpu/cpu{c}/topology/thread_siblings_list"),
            &format!("{core},{}", core + 8),
        );
        put(format!("{sys}/cpu/cpu{c}/cache/index3/level"), "3");
        put(format!("{sys}/cpu/cpu{c}/cache/index3/type"), "Unified");
        let llc = if core < 4 { "0-3,8-11" } else { "4-7,12-15" };
        put(
            format!("{sys}/cpu/cpu{c}/cache/index3/shared_cpu_list"),
            llc,
        );
    }
    put(format!("{sys}/node/online"), "0-1");
    for (n, cpus, dist) in [(0, "0-3,8-11", "10 21"), (1, "4-7,12-15", "21 10")] {
        put(format!("{sys}/node/node{n}/cpulist"), cpus);
        put(
            format!("{sys}/node/node{n}/meminfo"),
            &format!("Node {n} MemTotal:  8388608 kB"),
        );
        put(format!("{sys}/node/node{n}/distance"), dist);
    }
}

#[test]
fn topology_command_plans_for_a_synthetic_host() {
    let dir = tempfile::tempdir().unwrap();
    write_two_node_host(dir.path());
    let root = dir.path().to_str().unwrap();
    let doc = topology_json(&["--sysfs-root", root]);
    let plan = &doc["plan"];
    assert_eq!(plan["vcpus"], 16);
    assert_eq!(plan["pin"], "auto (default)");
    let cpus: Vec<u32> = plan["vcpu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["host_cpu"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(
        cpus,
        vec![0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]
    );
    let nodes = plan["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[1]["memory_host_node"], 1);
    assert_eq!(u32s(&nodes[1]["vcpus"]), (8..16).collect::<Vec<_>>());
    assert_eq!(plan["distances"], serde_json::json!([[10, 21], [21, 10]]));
    // A CPU that is not there is a one-line error naming it, exit 2.
    let out = run(&["topology", "--sysfs-root", root, "--pin", "0-15,16"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(
        stderr(&out).trim(),
        "k42vmm: --pin 0-16: host CPU 16 does not exist (online host CPUs: 0-15)"
    );
}

#[test]
fn bad_placement_options_exit_2_naming_the_value() {
    let image = default_image();
    let img = image.to_str().unwrap();
    let bad_cpu = (allowed_cpus().iter().max().unwrap() + 1000).to_string();
    for (args, needle) in [
        (
            vec!["run", "--pin", bad_cpu.as_str(), img],
            format!("--pin {bad_cpu}: host CPU {bad_cpu} does not exist"),
        ),
        (
            vec!["run", "--vcpus", "2", "--pin", "0", img],
            "gives 1 host CPUs for 2 vCPUs".into(),
        ),
        (
            vec!["run", "--pin", "0@0,2@0", img],
            "vCPU 1 has no host CPU".into(),
        ),
        (
            vec!["run", "--pin", "fast", img],
            "'fast' is not a CPU".into(),
        ),
        (
            vec!["run", "--numa", "0:cpus=0;", img],
            "an empty node between ';'".into(),
        ),
        (
            vec!["run", "--numa", "0:cpus=0,size=2M", img],
            "'size=' is not a node field".into(),
        ),
        (
            vec!["run", "--vcpus", "2", "--numa", "3", img],
            "3 guest nodes need at least 3 vCPUs".into(),
        ),
        (
            vec!["run", "--vcpus", "30", "--numa", "30", img],
            "over the ABI limit of 32; use fewer guest nodes".into(),
        ),
        (
            vec!["topology", "--numa", "0:cpus=0,mem=64M", "--memory", "128M"],
            "mem= add up to 64 MiB, but --memory is 128 MiB".into(),
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", describe(&out));
        let err = stderr(&out);
        assert!(err.contains(&needle), "{args:?}: no '{needle}' in:\n{err}");
    }
    let out = run(&["run", "--help"]);
    let help = stdout(&out);
    for opt in ["--pin", "--numa", "--prefault"] {
        assert!(help.contains(opt), "run --help lacks {opt}");
    }
}

/// The lines `topology: node N: ...` the kernel test prints for `plan`.
fn expected_kernel_lines(plan: &Value) -> Vec<String> {
    let nodes = plan["nodes"].as_array().unwrap();
    nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            let mut ranges: Vec<String> = node["ranges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    format!(
                        "{:#x}+{:#x}",
                        r["start"].as_u64().unwrap(),
                        r["len"].as_u64().unwrap()
                    )
                })
                .collect();
            ranges.sort();
            let host = match node["memory_host_node"].as_u64() {
                Some(h) => h.to_string(),
                None => "-".into(),
            };
            let dist: Vec<String> = plan["distances"][n]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.to_string())
                .collect();
            format!(
                "topology: node {n}: cpus {}; mem {}; host {host}; distances {}",
                cpulist::format(&u32s(&node["vcpus"])),
                ranges.join(","),
                dist.join(" ")
            )
        })
        .collect()
}

/// Boot with `--numa nodes` on this host and check that the kernel's view
/// equals the plan in the report.
fn boot_with_virtual_nodes(vcpus: u32, nodes: u32) {
    let n = nodes.to_string();
    let (out, r) = boot(
        vcpus,
        &[
            "--numa",
            &n,
            "--cmdline",
            "test=topology.matches_plan,mm.frames_all_cpus",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    for t in r["tests"].as_array().unwrap() {
        assert_eq!(t["passed"], true, "{t}\n{}", describe(&out));
    }
    assert_eq!(r["tests"].as_array().unwrap().len(), 2);
    let plan = &r["placement"];
    assert_eq!(plan["nodes"].as_array().unwrap().len(), nodes as usize);
    assert_eq!(plan["numa"], n.as_str());
    let text = stdout(&out);
    assert!(
        text.contains(&format!("topology: {nodes} nodes, flags ")),
        "{text}"
    );
    for line in expected_kernel_lines(plan) {
        assert!(
            text.lines().any(|l| l == line),
            "the kernel did not print '{line}':\n{text}"
        );
    }
}

#[test]
fn boots_with_2_virtual_nodes() {
    boot_with_virtual_nodes(2, 2);
}

#[test]
fn boots_with_4_virtual_nodes() {
    boot_with_virtual_nodes(8, 4);
}

/// k42vmm running a guest that hangs until `--timeout`, with a report.
struct HangingVm {
    child: Child,
    report: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn start_hanging_vm(extra: &[&str]) -> HangingVm {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let image = default_image();
    let mut args = vec![
        "run",
        "--timeout",
        "4s",
        "--cmdline",
        "test=none crash=hang",
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(image.to_str().unwrap());
    let child = Command::new(k42vmm())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("k42vmm starts");
    HangingVm {
        child,
        report,
        _dir: dir,
    }
}

impl HangingVm {
    /// Wait for the timeout exit and return the report.
    fn finish(self) -> Value {
        let out = self.child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(124), "{}", describe(&out));
        serde_json::from_str(&std::fs::read_to_string(&self.report).unwrap()).unwrap()
    }
}

/// `Cpus_allowed_list` of each thread named vcpuN of process `pid`.
fn vcpu_thread_affinity(pid: u32, vcpus: usize) -> Vec<Option<String>> {
    let mut seen = vec![None; vcpus];
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return seen;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Some(i) = comm.trim().strip_prefix("vcpu") else {
            continue;
        };
        let Ok(i) = i.parse::<usize>() else { continue };
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(list) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            && i < vcpus
        {
            seen[i] = Some(list.trim().to_string());
        }
    }
    seen
}

/// Boot a hanging VM with `extra` options; while it runs, read each vCPU
/// thread's affinity from /proc until it matches the plan k42vmm
/// topology made for the same options; then check the report's plan and
/// read-back affinities agree.
fn pinning_takes_effect(vcpus: u32, extra: &[&str]) {
    let n = vcpus.to_string();
    let mut opts = vec!["--vcpus", n.as_str()];
    opts.extend_from_slice(extra);
    let planned = topology_json(&opts)["plan"].clone();
    let expected: Vec<Option<String>> = planned["vcpu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Some(v["host_cpu"].as_u64().expect("pinned").to_string()))
        .collect();
    let vm = start_hanging_vm(&opts);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = vcpu_thread_affinity(vm.child.id(), vcpus as usize);
    while seen != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        seen = vcpu_thread_affinity(vm.child.id(), vcpus as usize);
    }
    let report = vm.finish();
    assert_eq!(seen, expected, "vCPU thread affinities in /proc");
    assert_eq!(report["placement"], planned, "the report's plan");
    let readback: Vec<Option<String>> = report["vcpu_affinity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().map(String::from))
        .collect();
    assert_eq!(readback, expected, "affinities the threads read back");
}

#[test]
fn vcpu_threads_are_pinned_by_auto() {
    let cpus = allowed_cpus().len() as u32;
    pinning_takes_effect(cpus, &["--pin", "auto"]);
    // Overcommitted: two vCPUs per allowed CPU.
    pinning_takes_effect(cpus * 2, &["--pin", "auto"]);
}

#[test]
fn vcpu_threads_are_pinned_by_a_list() {
    let mut cpus = allowed_cpus();
    cpus.reverse();
    let list: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
    let pairs: Vec<String> = cpus
        .iter()
        .enumerate()
        .map(|(v, c)| format!("{v}@{c}"))
        .collect();
    let n = cpus.len() as u32;
    pinning_takes_effect(n, &["--pin", &list.join(",")]);
    pinning_takes_effect(n, &["--pin", &pairs.join(","), "--numa", "off"]);
}

/// Bytes of process `pid`'s resident memory.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib << 10)
}

#[test]
fn memory_is_bound_and_prefaulted() {
    let vm = start_hanging_vm(&["--memory", "128M", "--numa", "2", "--prefault"]);
    let pid = vm.child.id();
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut rss, mut bound) = (0, 0);
    while (rss < 128 << 20 || bound == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        rss = rss_bytes(pid);
        // numa_maps lists the guest RAM mapping with its MPOL_BIND policy.
        bound = std::fs::read_to_string(format!("/proc/{pid}/numa_maps"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" bind:"))
            .count();
    }
    let report = vm.finish();
    assert!(
        rss >= 128 << 20,
        "RSS {rss} bytes: guest RAM not prefaulted"
    );
    assert!(bound >= 1, "no memory range is bound to a host node");
    for node in report["placement"]["nodes"].as_array().unwrap() {
        assert!(node["memory_host_node"].is_u64(), "{node}");
    }
}
