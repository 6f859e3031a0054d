//! Clustered objects in the guest: the user-level benchmark program runs
//! on every vCPU at once and reports every case from every vCPU; the
//! in-kernel object tests pass at 4 vCPUs (the boot tests cover 1, 2, 8,
//! 64 and 255).

mod common;

use common::*;

const CASES: &[&str] = &[
    "cobj.counter.shared",
    "cobj.counter.partitioned",
    "cobj.counter.adaptive",
    "cobj.pagemgr.shared",
    "cobj.pagemgr.distributed",
    "cobj.pagemgr.adaptive",
    "cobj.dhash.shared",
    "cobj.dhash.distributed",
    "cobj.dhash.adaptive",
    "cobj.process.shared",
    "cobj.process.replicated",
    "cobj.process.adaptive",
    "cobj.call.direct",
    "cobj.call.ref",
    "cobj.miss",
];

#[test]
fn user_level_benchmark_reports_every_case_from_every_vcpu() {
    let (out, r) = boot(2, &["--cmdline", "test=none bench=cobj cobj-ops=20000"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let bench = r["bench"].as_array().unwrap();
    for name in CASES {
        for cpu in 0..2u64 {
            let rec = bench
                .iter()
                .find(|b| b["name"] == *name && b["cpu"] == cpu)
                .unwrap_or_else(|| panic!("no {name} record from vCPU {cpu}"));
            assert_eq!(rec["mode"], "user", "{rec}");
            assert!(rec["iterations"].as_u64().unwrap() > 0, "{rec}");
        }
    }
    // CPU 0 swapped the storm counter 8 times without losing an add
    // (cobj-bench checks the total and fails otherwise).
    let swaps = bench
        .iter()
        .filter(|b| b["name"] == "cobj.swap.blocked")
        .count();
    assert_eq!(swaps, 8, "{bench:?}");
}

#[test]
fn kernel_objects_at_4_vcpus() {
    let tests =
        "cobj.counter,cobj.swap_under_load,cobj.pagemgr,cobj.dhash,cobj.process,cobj.kernel_pages";
    let cmdline = format!("test={tests}");
    let (out, r) = boot(4, &["--cmdline", &cmdline]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let ran = r["tests"].as_array().unwrap();
    assert_eq!(ran.len(), 6);
    assert!(ran.iter().all(|t| t["passed"] == true), "{ran:?}");
}

/// Misses, swap phases and destruction show up in the trace, each swap
/// with its three phases, and babeltrace2 reads them.
#[test]
fn clustered_object_events_are_traced() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let image = default_image();
    let out = run(&[
        "run",
        "--vcpus",
        "4",
        "--timeout",
        "120s",
        "--trace",
        trace.to_str().unwrap(),
        "--cmdline",
        "test=cobj.swap_under_load",
        image.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = std::process::Command::new("babeltrace2")
        .arg(&trace)
        .output()
        .expect("babeltrace2 runs");
    assert!(
        text.status.success(),
        "babeltrace2: {}",
        String::from_utf8_lossy(&text.stderr)
    );
    let text = String::from_utf8_lossy(&text.stdout);
    let count = |name: &str| {
        text.lines()
            .filter(|l| l.contains(&format!("cobj:{name}:")))
            .count()
    };
    assert!(
        count("miss") >= 4,
        "every CPU misses at least once:\n{text}"
    );
    let swaps = count("swap_begin");
    assert!(
        swaps >= 4,
        "the test swaps at least 4 times, the trace shows {swaps}"
    );
    assert_eq!(count("swap_block"), swaps);
    assert_eq!(count("swap_end"), swaps);
    assert_eq!(count("destroy"), 1, "the test destroys its counter once");
}
