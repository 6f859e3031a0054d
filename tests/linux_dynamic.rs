//! Dynamically linked Linux programs (issue 16, the loader and file
//! mappings): the host's own ld.so, libc.so.6 and /etc/ld.so.cache run
//! unmodified in the guest (the default image holds them, put there by
//! its `[[linux_programs]]`).
//!
//! What runs here: tests/linux-c/dyntest.c, built with plain gcc (PIE,
//! dynamic), on the host and in the guest, outputs compared byte for
//! byte at 1 and 4 vCPUs: stdio, malloc, files, `dlsym`, fork and exec
//! of a dynamic program, private and shared file mappings (writes not in
//! the file / in the file, across a fork), munmap of a mapping's middle,
//! mprotect then a write caught by a SIGSEGV handler with the right
//! `si_addr`, a handler that fixes the protection and returns, a divide
//! error and an invalid opcode caught (SIGFPE, SIGILL with their codes),
//! `MADV_DONTNEED`, `MAP_FIXED` over a mapping, the end of a file, errors;
//! Debian's postmark with a fixed seed and small configuration (its report
//! but the times and rates); N processes of one dynamic program holding
//! far fewer than N copies of libc's text; a dynamic program as the
//! command of `k42vmm run`; memory let go no longer counting against the
//! process's limit.

mod common;

use std::process::Command;

use common::*;

/// tests/linux-c/dyntest.c, built by `make` with plain gcc; the image
/// holds the same file at /bin/dyntest.
const HOST_DYNTEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/linux/dyntest");

fn dyntest_matches_linux(vcpus: u32) {
    let dir = std::env::temp_dir().join(format!("k42dyn-{}-{vcpus}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let host = Command::new(HOST_DYNTEST)
        .arg(&dir)
        .output()
        .expect("target/linux/dyntest runs on the host (make builds it)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(host.status.success(), "host: {}", describe(&host));
    let host_text = String::from_utf8(host.stdout).unwrap();
    assert!(host_text.contains("si_addr right: yes"), "{host_text}");
    let out = guest_within(
        vcpus,
        "300s",
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "mkdir -p /tmp/d && /bin/dyntest /tmp/d",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert_eq!(
        between_markers(&text),
        between_markers(&host_text),
        "guest and host differ\n{}",
        describe(&out)
    );
    assert!(!text.contains("killed by"), "{}", describe(&out));
}

#[test]
fn a_dynamic_program_prints_what_it_prints_on_linux_1_vcpu() {
    dyntest_matches_linux(1);
}

#[test]
fn a_dynamic_program_prints_what_it_prints_on_linux_4_vcpus() {
    dyntest_matches_linux(4);
}

/// postmark's configuration: a fixed seed, a small run.
fn postmark_config(dir: &str) -> String {
    format!(
        "set location {dir}\nset seed 42\nset number 100\nset transactions 200\nset size 500 4000\nrun\nquit\n"
    )
}

/// postmark's report without what depends on time: the lines of times,
/// and every rate in parentheses.
fn without_times(report: &str) -> String {
    let start = report.find("Time:").expect("postmark's report");
    report[start..]
        .lines()
        .take_while(|l| !l.starts_with("k42"))
        .filter(|l| !l.contains("seconds"))
        .map(|l| match l.find(" (") {
            Some(i) if l.ends_with("per second)") => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Debian's postmark, dynamically linked as the package ships it: the
/// same report as on the host but for times and rates.
#[test]
fn postmark_reports_what_it_reports_on_linux() {
    let dir = std::env::temp_dir().join(format!("k42pm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pm.cfg");
    std::fs::write(&config, postmark_config(dir.to_str().unwrap())).unwrap();
    let host = Command::new("/usr/bin/postmark")
        .arg(&config)
        .output()
        .expect("postmark runs on the host (make installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(host.status.success(), "host: {}", describe(&host));
    let host_report = without_times(&String::from_utf8(host.stdout).unwrap());
    assert!(host_report.contains("194 created"), "{host_report}");
    let script = format!(
        "mkdir -p /tmp/pm && printf '{}' > /tmp/pm.cfg && /bin/postmark /tmp/pm.cfg",
        postmark_config("/tmp/pm").replace('\n', "\\n")
    );
    let out = guest_within(1, "300s", &["/bin/busybox", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        without_times(&stdout(&out)),
        host_report,
        "guest and host differ\n{}",
        describe(&out)
    );
}

/// The `share: N processes: ALL KiB, libc text TEXT KiB` line's figures.
fn share_figures(text: &str, n: u64) -> (u64, u64) {
    let head = format!("share: {n} processes: ");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&head))
        .unwrap_or_else(|| panic!("no line {head:?} in\n{text}"));
    let (all, libc) = line
        .split_once(", libc text ")
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    let kib = |s: &str| -> u64 {
        s.trim_end_matches(" KiB")
            .parse()
            .unwrap_or_else(|_| panic!("bad figure {s:?} in {line:?}"))
    };
    (kib(all), kib(libc))
}

/// Six processes of one dynamic program, each having read every page of
/// libc's text, hold together less memory than three copies of that text
/// (the kernel's free-frame count, through sysinfo): the text is the
/// file's own frames, mapped in place in each.
#[test]
fn processes_of_a_dynamic_program_share_libc_text() {
    const N: u64 = 6;
    let out = guest_within(1, "300s", &["/bin/dyntest", "share", &N.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    let (all, libc_text) = share_figures(&text, N);
    assert!(libc_text > 1000, "libc's text is over 1000 KiB: {text}");
    assert!(
        all < 3 * libc_text,
        "{N} processes took {all} KiB, libc's text is {libc_text} KiB\n{}",
        describe(&out)
    );
}

/// A dynamically linked program as k42vmm's command: linux-run opens its
/// interpreter too; the program's exit status is k42vmm's.
#[test]
fn a_dynamic_program_is_a_command_of_its_own() {
    let out = guest_within(1, "120s", &["/bin/dyntest", "child", "a", "b"]);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    assert!(
        stdout(&out).contains("child: argc 4: child a b\n"),
        "{}",
        describe(&out)
    );
}

/// Memory a program lets go (munmap, MADV_DONTNEED) no longer counts
/// against its limit: 24 MiB mapped, touched and let go 4 MiB at a time
/// under an 8 MiB limit (before, the count only grew: killed, 137).
#[test]
fn memory_let_go_no_longer_counts_against_the_limit() {
    require_kvm();
    let image = default_image();
    let out = run(&[
        "run",
        "--vcpus",
        "1",
        "--timeout",
        "120s",
        "--cmdline",
        "test=none init=linux-run proc.mem=8M",
        image.to_str().unwrap(),
        "--",
        "/bin/dyntest",
        "churn",
        "24",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("churn: 24 MiB mapped, touched and let go\n"),
        "{}",
        describe(&out)
    );
}
