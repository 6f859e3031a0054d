//! `k42vmm trace strace`: a Linux program's system calls, traced by the
//! personality with `--trace-mask linux` and printed as strace does.

mod common;

use common::*;

#[test]
fn linux_calls_print_as_strace() {
    require_kvm();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    let image = default_image();
    let out = run(&[
        "run",
        "--vcpus",
        "2",
        "--timeout",
        "300s",
        "--trace",
        dir.to_str().unwrap(),
        "--trace-mask",
        "linux",
        image.to_str().unwrap(),
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox mkdir -p /tmp; echo hi > /tmp/x; /bin/busybox cat /tmp/x /tmp/nonexistent",
    ]);
    // cat printed the file, then failed on the missing one.
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stdout(&out).contains("hi\n"), "{}", describe(&out));

    let st = run(&["trace", "strace", dir.to_str().unwrap()]);
    assert!(st.status.success(), "{}", describe(&st));
    let text = stdout(&st);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().all(|l| l.starts_with("[pid ")),
        "every line names its process:\n{text}"
    );
    let has = |f: &dyn Fn(&str) -> bool| lines.iter().any(|l| f(l));
    assert!(
        has(&|l| l.contains("openat(") && l.contains("= -1 ENOENT")),
        "no failed openat:\n{text}"
    );
    // The shell's redirection: /tmp/x opened, then moved to descriptor 1.
    assert!(
        has(&|l| l.contains("openat(AT_FDCWD, 0x") && !l.contains("= -1")),
        "no openat that succeeded:\n{text}"
    );
    assert!(
        has(&|l| l.contains("write(1, ") && l.ends_with(" = 3")),
        "no write of \"hi\\n\" to descriptor 1:\n{text}"
    );
    // The shell forks and execs mkdir, then execs cat: a successful
    // execve does not return.
    assert!(
        has(&|l| l.contains("execve(") && l.ends_with(" = ?")),
        "no execve:\n{text}"
    );
    assert!(
        has(&|l| l.contains("<... fork resumed>) = 0")
            || l.contains("<... vfork resumed>) = 0")
            || l.contains("<... clone resumed>) = 0")),
        "no child's return from fork:\n{text}"
    );
    assert!(
        has(&|l| l.contains("exit_group(1) = ?")),
        "no exit_group(1) of cat:\n{text}"
    );
    // More than one process.
    let pids: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l.split(']').next()).collect();
    assert!(pids.len() >= 2, "one process only:\n{text}");
}

/// The `linux` class is off by default: a trace without it has no calls.
#[test]
fn linux_class_is_off_by_default() {
    require_kvm();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trace");
    let image = default_image();
    let out = run(&[
        "run",
        "--vcpus",
        "1",
        "--timeout",
        "300s",
        "--trace",
        dir.to_str().unwrap(),
        image.to_str().unwrap(),
        "--",
        "/bin/busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let st = run(&["trace", "strace", dir.to_str().unwrap()]);
    assert!(st.status.success(), "{}", describe(&st));
    assert_eq!(stdout(&st), "", "{}", describe(&st));
    assert!(
        stderr(&st).contains("--trace-mask linux"),
        "{}",
        describe(&st)
    );
}
