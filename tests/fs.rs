//! The file server (issue 9): a hierarchical file system served over PPC
//! whose files are kernel memory objects (FCMs with a shared or a
//! distributed page index) that clients read, write and map through
//! handles the server grants.
//!
//! - every operation and error, one by one (`fstest basic`), with the
//!   distributed and the shared page index;
//! - a thread on every vCPU doing file operations at once, then a check
//!   that no write, record, file or directory was lost (`fstest stress`);
//! - a dead server fails its clients' calls cleanly, open files stay
//!   readable (`fstest dead`);
//! - the file limit (`file.max`), a bad server argument, a bad option;
//! - the benchmarks' records, and the trace events of file operations.

mod common;

use common::*;

/// Boot with the name server and a file server (`server` its arguments,
/// `+`-separated) started by init, then `program`.
fn with_server(vcpus: u32, server: &str, program: &str, extra: &str) -> std::process::Output {
    let cmdline =
        format!("test=none {extra} init=init init.run=nameserver+&,fileserver{server}+&,{program}");
    boot(vcpus, &["--cmdline", &cmdline]).0
}

fn expect_ok(out: &std::process::Output, line: &str) {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    let text = stdout(out);
    assert!(text.contains(line), "{}", describe(out));
    assert!(!text.contains("FAILED"), "{}", describe(out));
}

#[test]
fn every_operation_and_error_distributed_index() {
    let out = with_server(2, "", "fstest+basic", "");
    expect_ok(&out, "fstest basic: 0 failures: ok");
    let text = stdout(&out);
    assert!(
        text.contains("fileserver: ready (19 files from the image, distributed page index)"),
        "{}",
        describe(&out)
    );
}

#[test]
fn every_operation_and_error_shared_index() {
    let out = with_server(1, "+shared", "fstest+basic", "");
    expect_ok(&out, "fstest basic: 0 failures: ok");
    assert!(
        stdout(&out).contains("shared page index"),
        "{}",
        describe(&out)
    );
}

#[test]
fn clients_on_every_vcpu_lose_nothing_distributed() {
    let out = with_server(4, "", "fstest+stress+40", "");
    expect_ok(&out, "fstest stress: 4 threads x 40 rounds checked");
    expect_ok(&out, "fstest stress: 0 failures: ok");
}

#[test]
fn clients_on_every_vcpu_lose_nothing_shared() {
    let out = with_server(8, "+shared", "fstest+stress+20", "");
    expect_ok(&out, "fstest stress: 8 threads x 20 rounds checked");
    expect_ok(&out, "fstest stress: 0 failures: ok");
}

#[test]
fn a_dead_server_fails_calls_cleanly() {
    let (out, _) = boot(
        2,
        &[
            "--cmdline",
            "test=none init=init init.run=nameserver+&,fstest+dead",
        ],
    );
    expect_ok(&out, "fstest dead: 0 failures: ok");
}

#[test]
fn the_file_limit_is_a_clean_error() {
    // Above the image's 19 files, which the server opens at start.
    let out = with_server(2, "", "fstest+limit", "file.max=24");
    expect_ok(&out, "fstest limit: 0 failures: ok");
    let (out, _) = boot(1, &["--cmdline", "test=none init=init file.max=0"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stdout(&out).contains("file.max= takes a number from 1 to 65536"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_bad_server_argument_is_named() {
    let (out, _) = boot(
        1,
        &[
            "--cmdline",
            "test=none init=init init.run=fileserver+sharded",
        ],
    );
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("fileserver: unknown page index \"sharded\" (shared or distributed)"),
        "{}",
        describe(&out)
    );
}

#[test]
fn benchmarks_report_from_every_vcpu() {
    let (out, r) = boot(
        2,
        &[
            "--cmdline",
            "test=none init=init init.run=nameserver+&,fileserver+&,fs-bench+ops+20+postmark+10+10",
        ],
    );
    expect_ok(&out, "fs-bench: done");
    for name in ["fs.ops.shared", "fs.ops.distributed", "fs.postmark"] {
        let recs: Vec<_> = r["bench"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["name"] == name)
            .collect();
        let mut cpus: Vec<u64> = recs.iter().map(|b| b["cpu"].as_u64().unwrap()).collect();
        cpus.sort();
        assert_eq!(cpus, vec![0, 1], "{name}: {recs:?}");
        let want = if name == "fs.postmark" { 10 } else { 20 };
        assert!(
            recs.iter().all(|b| b["iterations"] == want),
            "{name}: {recs:?}"
        );
    }
}

#[test]
fn file_operations_are_traced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    let (out, _) = boot(
        2,
        &[
            "--trace",
            dir.to_str().unwrap(),
            "--cmdline",
            "test=none init=init init.run=nameserver+&,fileserver+&,fstest+basic",
        ],
    );
    expect_ok(&out, "fstest basic: 0 failures: ok");
    let stats = run(&["trace", "stats", "--json", dir.to_str().unwrap()]);
    assert_eq!(stats.status.code(), Some(0), "{}", describe(&stats));
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    // fstest basic makes, reads, writes, truncates and maps files, and
    // each name-space request is a PPC call and return.
    let fs = v["classes"]["fs"].as_u64().unwrap_or(0);
    let sched = v["classes"]["sched"].as_u64().unwrap_or(0);
    assert!(fs >= 50, "fs events: {fs}\n{v}");
    assert!(sched >= 100, "sched events: {sched}\n{v}");
    assert_eq!(v["lost"], 0, "{v}");
}
