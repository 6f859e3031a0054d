//! Linux threads on the personality (issue 16, threads): glibc's
//! pthreads in a static program (tests/linux-c/threads.c, built by
//! `make` with `gcc -static -pthread`, at /bin/threads in the image) —
//! a mutex-protected counter from one thread per CPU and from 8 threads,
//! a producer/consumer over condition variables, pthread_join results,
//! distinct thread ids, futex timeouts (relative; absolute on
//! CLOCK_MONOTONIC and CLOCK_REALTIME) and errors, a thread's own `exit`
//! while another runs on, `exit_group` from a thread — print the same
//! bytes in the guest as the same binary on host Linux, at 1 and 4
//! vCPUs.

mod common;

use std::process::Command;

use common::*;

/// tests/linux-c/threads.c as `make` builds it; the image holds the same
/// file at /bin/threads.
const HOST_THREADS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/linux/threads");

fn threads_match_linux(vcpus: u32) {
    let host = Command::new(HOST_THREADS)
        .current_dir("/")
        .output()
        .expect("target/linux/threads runs on the host (make builds it)");
    assert!(host.status.success(), "host: {}", describe(&host));
    let host_text = String::from_utf8(host.stdout).unwrap();
    assert!(
        host_text.contains("counter right, joins right") && !host_text.contains("WRONG"),
        "{host_text}"
    );
    let out = guest_within(vcpus, "300s", &["/bin/threads"]);
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
fn pthreads_behave_as_on_linux_1_vcpu() {
    threads_match_linux(1);
}

#[test]
fn pthreads_behave_as_on_linux_4_vcpus() {
    threads_match_linux(4);
}
