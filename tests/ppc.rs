//! Protected procedure calls (issue 9's first part): servers found
//! through the name server; a client calls a server process on its own
//! CPU — echo with a message and a reply, the
//! caller's pid set by the kernel, calls from every vCPU at once, a
//! call that waits its turn behind another thread's preempted call on
//! the same CPU (the kernel's single attempt says `Busy`) — and
//! every error comes back clean: a bad method, an oversize message, a
//! stale handle, a bad message address, a server that crashes, exits or
//! is killed during or before a call.

mod common;

use common::*;

fn client(vcpus: u32) {
    let (out, _) = boot(
        vcpus,
        &["--cmdline", "test=none init=init init.run=ppctest+client"],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        text.contains("ppctest client: 0 failures: ok"),
        "{}",
        describe(&out)
    );
    // The server that crashed in a call was reported, and only it died.
    assert!(
        text.contains("(ppctest) killed by #PF page fault") && text.contains("address 0x10"),
        "{}",
        describe(&out)
    );
}

#[test]
fn calls_and_errors_on_2_vcpus() {
    client(2);
}

#[test]
fn calls_and_errors_on_4_vcpus() {
    client(4);
}

#[test]
fn servers_are_found_by_name() {
    let (out, _) = boot(
        2,
        &[
            "--cmdline",
            "test=none init=init init.run=nameserver+&,ppctest+names",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("init: nameserver: started in the background"),
        "{}",
        describe(&out)
    );
    assert!(
        text.contains("ppctest names: 0 failures: ok"),
        "{}",
        describe(&out)
    );
}

#[test]
fn round_trips_are_reported_from_every_vcpu() {
    let (out, r) = boot(
        2,
        &["--cmdline", "test=none init=init init.run=ppctest+bench+50"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let recs: Vec<_> = r["bench"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["name"] == "ppc.call")
        .collect();
    let mut cpus: Vec<u64> = recs.iter().map(|b| b["cpu"].as_u64().unwrap()).collect();
    cpus.sort();
    assert_eq!(cpus, vec![0, 1], "{recs:?}");
    assert!(recs.iter().all(|b| b["iterations"] == 50), "{recs:?}");
}
