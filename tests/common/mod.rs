//! Helpers shared by the integration tests: locating k42vmm and the
//! default image, running k42vmm with a deadline, reading reports.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The k42vmm binary cargo built for these tests.
pub fn k42vmm() -> &'static str {
    env!("CARGO_BIN_EXE_k42vmm")
}

/// The default image (`make image`), or `$K42_IMAGE`.
pub fn default_image() -> PathBuf {
    let p = std::env::var_os("K42_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/images/default.img")
        });
    assert!(
        p.is_file(),
        "{} is missing: run `make image` (or `make test`, which builds it) first",
        p.display()
    );
    p
}

/// Fail loudly, never skip, when KVM cannot be used.
pub fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("KVM is required for this test, but /dev/kvm is not usable: {e}");
    }
}

/// Run k42vmm with `args`; a guest that hangs is stopped by the
/// `--timeout` every boot test passes.
pub fn run(args: &[&str]) -> Output {
    Command::new(k42vmm())
        .args(args)
        .output()
        .expect("k42vmm runs")
}

/// Exit code, stdout and stderr of a run, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Boot the default image with `vcpus` vCPUs and `extra` arguments,
/// returning the run's output and parsed report.
pub fn boot(vcpus: u32, extra: &[&str]) -> (Output, Value) {
    boot_command(vcpus, extra, &[])
}

/// As [`boot`], running the Linux program `command` (`-- COMMAND…`)
/// when it is not empty.
pub fn boot_command(vcpus: u32, extra: &[&str], command: &[&str]) -> (Output, Value) {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let image = default_image();
    let n = vcpus.to_string();
    let mut args = vec![
        "run",
        "--vcpus",
        &n,
        "--timeout",
        "120s",
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(image.to_str().unwrap());
    if !command.is_empty() {
        args.push("--");
        args.extend_from_slice(command);
    }
    let out = run(&args);
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report ({e})\n{}", describe(&out)));
    (
        out,
        serde_json::from_str(&text).expect("the report is JSON"),
    )
}

/// The part of a test program's or script's output between its
/// `=BEGIN=` and `=END=` markers.
pub fn between_markers(text: &str) -> &str {
    let start = text.find("=BEGIN=\n").expect("the begin marker") + 8;
    let end = text[start..].find("=END=").expect("the end marker") + start;
    &text[start..end]
}

/// Run the Linux `command` in the default image's guest with `vcpus`,
/// stopped after `timeout`.
pub fn guest_within(vcpus: u32, timeout: &str, command: &[&str]) -> Output {
    require_kvm();
    let n = vcpus.to_string();
    let image = default_image();
    let mut args = vec![
        "run",
        "--vcpus",
        &n,
        "--timeout",
        timeout,
        image.to_str().unwrap(),
        "--",
    ];
    args.extend_from_slice(command);
    run(&args)
}
