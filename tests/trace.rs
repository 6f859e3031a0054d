//! Tracing end to end: boot with `--trace` at 1, 4 and 64 vCPUs and check
//! that babeltrace2 reads the CTF trace and counts exactly the events the
//! guest says it logged; that `trace stats` and the Perfetto export agree;
//! that an overloaded guest's losses are counted exactly; and that live
//! clients attach to and detach from a running guest without disturbing
//! it. They need /dev/kvm and babeltrace2 (`make setup` installs it), and
//! fail, never skip, without them.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `magic` of the kernel's and of user mode's `test:burst` events.
const KERNEL_MAGIC: &str = "magic = 0x6B65726E000000";
const USER_MAGIC: &str = "magic = 0x75736572000000";

/// babeltrace2's text output of `dir`, after checking it read the trace
/// without errors; returns (stdout, stderr).
fn babeltrace(dir: &Path) -> (String, String) {
    let out = Command::new("babeltrace2")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("babeltrace2 is required for this test (make setup): {e}"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "babeltrace2 failed on {}: {err}",
        dir.display()
    );
    for line in err.lines() {
        assert!(
            line.starts_with("WARNING: Tracer discarded") || line.trim().is_empty(),
            "babeltrace2 complained: {line}"
        );
    }
    (String::from_utf8_lossy(&out.stdout).into_owned(), err)
}

/// Events babeltrace2 says the tracer discarded.
fn discarded(babeltrace_stderr: &str) -> u64 {
    babeltrace_stderr
        .lines()
        .filter_map(|l| l.strip_prefix("WARNING: Tracer discarded "))
        .map(|rest| rest.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The number after `word` in the guest's line that starts with `prefix`.
fn reported(stdout: &str, prefix: &str, word: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("the guest printed no '{prefix}' line:\n{stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == word).unwrap();
    words[i + 1].trim_end_matches(',').parse().unwrap()
}

fn k42vmm_trace(args: &[&str]) -> Output {
    let mut all = vec!["trace"];
    all.extend_from_slice(args);
    run(&all)
}

fn stats_json(dir: &Path) -> Value {
    let out = k42vmm_trace(&["stats", "--json", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("trace stats --json prints JSON")
}

/// Boot `vcpus` vCPUs with the trace tests and `--trace`, then check
/// everything that reads the trace against what the guest reported.
fn traced_boot(vcpus: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    let (out, r) = boot(
        vcpus,
        &[
            "--trace",
            dir.to_str().unwrap(),
            "--cmdline",
            "test=trace.burst,trace.user,trace.many_writers,timer.every_cpu,smp.call_all",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    let burst = reported(&text, "k42: trace.burst:", "logged");
    let dropped = reported(&text, "k42: trace.burst:", "dropped");
    let user = reported(&text, "k42: trace.user:", "logged");
    assert_eq!(burst, 64 * vcpus as u64, "buffers are large enough");
    assert_eq!(dropped, 0);
    assert_eq!(user, 32 * vcpus as u64);

    // babeltrace2 reads it and counts what the guest logged.
    let (events, err) = babeltrace(&dir);
    let lines: Vec<&str> = events.lines().collect();
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count() as u64;
    assert_eq!(count(KERNEL_MAGIC), burst, "kernel test:burst events");
    assert_eq!(count(USER_MAGIC), user, "user-mode test:burst events");
    let t = &r["trace"];
    assert_eq!(t["registered"], true);
    assert_eq!(lines.len() as u64, t["events"].as_u64().unwrap());
    assert_eq!(discarded(&err), t["lost"].as_u64().unwrap());
    for cpu in 0..vcpus {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("boot:cpu_online: {{ cpu_id = {cpu} }}"))),
            "vCPU {cpu} has no stream"
        );
    }
    for class in [
        "interrupt:entry",
        "timer:fire",
        "idle:enter",
        "hypercall:exit",
    ] {
        assert!(count(class) > 0, "no {class} event");
    }
    // System calls are logged only when asked for.
    assert_eq!(count("syscall:"), 0, "syscall events without asking");

    // trace stats agrees.
    let s = stats_json(&dir);
    assert_eq!(s["vcpus"], vcpus);
    assert_eq!(s["events"], t["events"]);
    assert_eq!(s["lost"], t["lost"]);
    assert_eq!(s["per_vcpu"].as_array().unwrap().len(), vcpus as usize);
    assert_eq!(s["classes"]["test"].as_u64().unwrap(), count(" test:"));

    // The Perfetto export parses, with one track per vCPU and balanced
    // slices.
    let json = tmp.path().join("trace.json");
    let out = k42vmm_trace(&[
        "export",
        "--format",
        "perfetto",
        dir.to_str().unwrap(),
        "-o",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let evs = v["traceEvents"].as_array().unwrap();
    let tracks: Vec<&Value> = evs.iter().filter(|e| e["name"] == "thread_name").collect();
    assert_eq!(tracks.len(), vcpus as usize, "one track per vCPU");
    for cpu in 0..vcpus {
        let on = |ph: &str| {
            evs.iter()
                .filter(|e| e["tid"] == cpu && e["ph"] == ph)
                .count()
        };
        assert_eq!(on("B"), on("E"), "vCPU {cpu}: unbalanced slices");
        assert!(on("B") > 0, "vCPU {cpu} has no slices");
    }
}

#[test]
fn trace_on_1_vcpu() {
    traced_boot(1);
}

#[test]
fn trace_on_4_vcpus() {
    traced_boot(4);
}

#[test]
fn trace_on_64_vcpus() {
    traced_boot(64);
}

/// A guest that logs far faster than the collector drains: small buffers,
/// a slow collector, a long burst. Every event is either in the trace or
/// counted as lost, and the counts agree everywhere.
/// With the `syscall` class on, every system call of a process shows in
/// the trace by name, entry and exit paired, like `strace`.
#[test]
fn system_calls_are_traced_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    let (out, _) = boot(
        2,
        &[
            "--trace",
            dir.to_str().unwrap(),
            "--trace-mask",
            "syscall",
            "--cmdline",
            "test=none init=init init.run=hello+traced",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (events, _) = babeltrace(&dir);
    let lines: Vec<&str> = events.lines().collect();
    assert!(
        lines.iter().all(|l| l.contains("syscall:")),
        "only the syscall class was asked for"
    );
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    // hello's console write, by name (babeltrace2 prints the enum label),
    // with its result: the bytes written.
    let write_enter = count("syscall:enter");
    assert!(write_enter > 0, "no syscall:enter event:\n{events}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("syscall:exit") && l.contains("\"program.write\"")),
        "no program.write exit in:\n{events}"
    );
    for name in [
        "process.spawn",
        "process.wait",
        "process.exit",
        "program.write",
    ] {
        assert!(
            count(&format!("\"{name}\"")) > 0,
            "no {name} call in the trace"
        );
    }
    // Every call that returned logged its exit: a wait that blocked and
    // an exit do not return, the rest do.
    assert!(count("syscall:exit") <= write_enter);
    let s = stats_json(&dir);
    assert_eq!(
        s["classes"]["syscall"].as_u64().unwrap(),
        lines.len() as u64
    );
}

#[test]
fn overload_losses_are_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    let (out, r) = boot(
        2,
        &[
            "--trace",
            dir.to_str().unwrap(),
            "--trace-mask",
            "test",
            "--trace-read-interval",
            "50ms",
            "--cmdline",
            "test=trace.burst trace.burst=4000 trace.subbuf=4K trace.subbufs=2",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    let logged = reported(&text, "k42: trace.burst:", "logged");
    let dropped = reported(&text, "k42: trace.burst:", "dropped");
    assert_eq!(logged + dropped, 2 * 4000);
    assert!(dropped > 0, "the guest was meant to overrun the collector");
    let (events, err) = babeltrace(&dir);
    let lines: Vec<&str> = events.lines().collect();
    let burst = lines.iter().filter(|l| l.contains(KERNEL_MAGIC)).count() as u64;
    assert_eq!(burst, logged, "every logged event is in the trace");
    // Only class test is on: the burst and the test runner's test:begin
    // and test:end (which may be dropped too). Everything attempted is
    // either in the trace or counted lost, exactly.
    let lost = discarded(&err);
    assert_eq!(
        lines.len() as u64 + lost,
        2 * 4000 + 2,
        "events in the trace + lost != events logged"
    );
    assert!(
        lost >= dropped && lost <= dropped + 2,
        "{lost} lost, {dropped} dropped"
    );
    assert_eq!(r["trace"]["lost"].as_u64().unwrap(), lost);
    assert_eq!(stats_json(&dir)["lost"].as_u64().unwrap(), lost);
}

/// Start k42vmm with `args`, its output piped.
fn spawn_run(args: &[&str]) -> Child {
    Command::new(k42vmm())
        .arg("run")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("k42vmm starts")
}

fn wait_for(path: &Path) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "no socket appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Clients attach to and detach from a running guest (one is killed in
/// mid-stream); the guest runs on undisturbed: its tests pass, no tick is
/// lost, and the trace is complete.
#[test]
fn attach_and_detach_on_a_running_guest() {
    require_kvm();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    let sock = tmp.path().join("k42.sock");
    let image = default_image();
    let vm = spawn_run(&[
        "--vcpus",
        "4",
        "--timeout",
        "120s",
        "--trace",
        dir.to_str().unwrap(),
        "--trace-socket",
        sock.to_str().unwrap(),
        "--cmdline",
        "test=trace.ticks,trace.burst trace.ticks=4000",
        image.to_str().unwrap(),
    ]);
    wait_for(&sock);

    // A client that takes five tick events and leaves.
    let out = k42vmm_trace(&[
        "attach",
        "--class",
        "test",
        "--count",
        "5",
        sock.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let ticks = stdout(&out);
    assert_eq!(ticks.lines().count(), 5, "{ticks}");
    assert!(ticks.lines().all(|l| l.contains(" test:")), "{ticks}");
    assert!(ticks.lines().any(|l| l.contains("test:tick")), "{ticks}");

    // A client killed while events stream to it.
    let mut reader = Command::new(k42vmm())
        .args(["trace", "attach", sock.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(reader.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        let l = lines.next().expect("events stream").unwrap();
        assert!(l.contains("vCPU"), "{l}");
    }
    reader.kill().unwrap();
    reader.wait().unwrap();

    // trace top shows every vCPU.
    let out = k42vmm_trace(&["top", "--count", "1", sock.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let table = stdout(&out);
    assert!(table.contains("events/s"), "{table}");
    for cpu in 0..4 {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&cpu.to_string())),
            "no row for vCPU {cpu}: {table}"
        );
    }

    let out = vm.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("test trace.ticks ... ok"), "{text}");
    let logged = reported(&text, "k42: trace.burst:", "logged");
    let (events, err) = babeltrace(&dir);
    assert_eq!(
        events.lines().filter(|l| l.contains(KERNEL_MAGIC)).count() as u64,
        logged
    );
    assert_eq!(discarded(&err), 0);
    assert!(!sock.exists(), "the socket is removed at the end");
}

/// `trace mask` changes what a running guest logs.
#[test]
fn mask_changes_while_running() {
    require_kvm();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    let sock = tmp.path().join("k42.sock");
    let image = default_image();
    let vm = spawn_run(&[
        "--vcpus",
        "2",
        "--timeout",
        "120s",
        "--trace",
        dir.to_str().unwrap(),
        "--trace-mask",
        "boot",
        "--trace-socket",
        sock.to_str().unwrap(),
        "--cmdline",
        "test=trace.ticks trace.ticks=3000",
        image.to_str().unwrap(),
    ]);
    wait_for(&sock);
    // Let the guest register before the mask changes.
    let t0 = Instant::now();
    loop {
        let out = k42vmm_trace(&["mask", sock.to_str().unwrap(), "boot,test"]);
        if out.status.success() {
            assert!(stdout(&out).contains("test"), "{}", describe(&out));
            break;
        }
        assert!(
            stderr(&out).contains("not registered"),
            "{}",
            describe(&out)
        );
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = vm.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (events, _) = babeltrace(&dir);
    assert!(
        events.lines().any(|l| l.contains("test:tick")),
        "no tick logged after the mask changed"
    );
    assert!(
        !events.lines().any(|l| l.contains("interrupt:")),
        "a masked class was logged"
    );
}

#[test]
fn trace_command_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let out = k42vmm_trace(&["stats", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("no such directory"),
        "{}",
        describe(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1);

    let out = k42vmm_trace(&["stats", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("metadata"), "{}", describe(&out));

    let out = k42vmm_trace(&["attach", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("no k42vmm serves this trace socket"),
        "{}",
        describe(&out)
    );

    let image = default_image();
    let out = run(&["run", "--trace-mask", "boot,bogus", image.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("unknown trace class 'bogus'"),
        "{}",
        describe(&out)
    );

    std::fs::write(tmp.path().join("file"), "x").unwrap();
    let out = run(&[
        "run",
        "--trace",
        tmp.path().to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("is not empty"), "{}", describe(&out));
}

/// Without a collector nothing is logged, and the trace tests check that
/// logging then changes nothing.
#[test]
fn without_a_collector_nothing_is_logged() {
    let (out, r) = boot(2, &["--cmdline", "test=trace.burst,trace.user,trace.ticks"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert_eq!(reported(&text, "k42: trace.burst:", "logged"), 0);
    assert_eq!(reported(&text, "k42: trace.user:", "logged"), 0);
    assert!(r.get("trace").is_none(), "{}", r);
}
