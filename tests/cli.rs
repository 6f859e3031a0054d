//! Command-line and input checking: every bad input gets exit 2 and one
//! line that names the problem; help and version work.

mod common;

use std::path::Path;

use common::*;
use k42_image::{Manifest, Module, manifest::FORMAT, write_image};

fn expect_usage_error(args: &[&str], needle: &str) {
    let out = run(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(needle),
        "{args:?}: stderr lacks '{needle}':\n{err}"
    );
}

fn write_test_image(path: &Path, kernel_entry: Option<&str>, kernel: &[u8]) {
    let manifest = Manifest {
        format: FORMAT,
        name: "test".into(),
        kernel: "kernel".into(),
        cmdline: String::new(),
        modules: vec![],
    };
    let mut buf = Vec::new();
    match kernel_entry {
        Some(_) => write_image(&mut buf, &manifest, kernel, &[] as &[Module]).unwrap(),
        None => {
            // An archive with only the manifest.
            let text = manifest.to_toml();
            let mut w = cpio::NewcBuilder::new("manifest.toml")
                .mode(0o100644)
                .write(&mut buf, text.len() as u32);
            std::io::Write::write_all(&mut w, text.as_bytes()).unwrap();
            let out = w.finish().unwrap();
            cpio::newc::trailer(out).unwrap();
        }
    }
    std::fs::write(path, buf).unwrap();
}

#[test]
fn help_and_version() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("k42vmm "), "{}", describe(&out));
    let out = run(&["--help"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("run"), "{}", describe(&out));
    let out = run(&["run", "--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for opt in [
        "--vcpus",
        "--memory",
        "--cmdline",
        "--timeout",
        "--report",
        "101",
        "124",
    ] {
        assert!(text.contains(opt), "run --help lacks {opt}:\n{text}");
    }
}

#[test]
fn bad_image_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("missing.img");
    expect_usage_error(&["run", missing.to_str().unwrap()], "no such file");
    expect_usage_error(&["run", d.to_str().unwrap()], "is a directory");
    let text = d.join("text.img");
    std::fs::write(&text, "just some text, not an archive\n").unwrap();
    expect_usage_error(&["run", text.to_str().unwrap()], "is not a k42 image");
    let unreadable = d.join("secret.img");
    std::fs::write(&unreadable, "x").unwrap();
    let empty = d.join("empty.img");
    std::fs::write(&empty, "").unwrap();
    expect_usage_error(&["run", empty.to_str().unwrap()], "is not a k42 image");
}

#[test]
fn images_with_bad_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let no_kernel = d.join("nokernel.img");
    write_test_image(&no_kernel, None, b"");
    expect_usage_error(&["run", no_kernel.to_str().unwrap()], "has no kernel");

    let script = d.join("script.img");
    write_test_image(&script, Some("kernel"), b"#!/bin/sh\necho not a kernel\n");
    expect_usage_error(
        &["run", script.to_str().unwrap()],
        "the kernel is not an ELF file",
    );

    let mut arm = vec![0u8; 64];
    arm[..4].copy_from_slice(b"\x7fELF");
    arm[4] = 2;
    arm[5] = 1;
    arm[18..20].copy_from_slice(&183u16.to_le_bytes());
    let arm_img = d.join("arm.img");
    write_test_image(&arm_img, Some("kernel"), &arm);
    expect_usage_error(&["run", arm_img.to_str().unwrap()], "not x86_64");

    let host_elf = std::fs::read(k42vmm()).unwrap();
    let host_img = d.join("host.img");
    write_test_image(&host_img, Some("kernel"), &host_elf);
    let out = run(&["run", host_img.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn kernel_for_another_abi_version_is_refused() {
    let image = k42_image::Image::open(&default_image()).expect("the default image opens");
    let mut kernel = image.kernel().to_vec();
    let at = kernel
        .windows(8)
        .position(|w| w == k42_abi::note::MAGIC)
        .expect("the kernel carries the ABI note");
    kernel[at + 8..at + 12].copy_from_slice(&(k42_abi::ABI_VERSION + 1).to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.img");
    write_test_image(&path, Some("kernel"), &kernel);
    expect_usage_error(
        &["run", path.to_str().unwrap()],
        "built for shared-abi version",
    );
}

#[test]
fn bad_options() {
    let image = default_image();
    let img = image.to_str().unwrap();
    expect_usage_error(&["run", "--vcpus", "256", img], "more than the 255 vCPUs");
    expect_usage_error(&["run", "--vcpus", "0", img], "at least one vCPU");
    expect_usage_error(&["run", "--vcpus", "many", img], "invalid value");
    expect_usage_error(&["run", "--memory", "4M", img], "too small for image");
    expect_usage_error(&["run", "--memory", "3M", img], "multiple of 2 MiB");
    expect_usage_error(&["run", "--memory", "lots", img], "not a size");
    expect_usage_error(&["run", "--timeout", "soon", img], "not a duration");
    expect_usage_error(
        &["run", "--report", "/nonexistent-dir/r.json", img],
        "does not exist",
    );
    let long = "x".repeat(3000);
    expect_usage_error(
        &["run", "--cmdline", &long, img],
        "command line is 3000 bytes",
    );
    expect_usage_error(&["run"], "IMAGE");
    expect_usage_error(&["fly"], "unrecognized subcommand");
}

#[test]
fn overcommit_warns_once() {
    require_kvm();
    let image = default_image();
    let host = std::thread::available_parallelism().unwrap().get();
    let n = (host * 2).to_string();
    let out = run(&[
        "run",
        "--vcpus",
        &n,
        "--timeout",
        "60s",
        "--cmdline",
        "test=none",
        image.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("overcommit").count(), 1, "{err}");
}
