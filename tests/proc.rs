//! Processes in the guest: init runs the programs it is given and the VM
//! exits with init's status; a fork bomb meets the process limit; a
//! process that reads kernel memory (or runs out of memory) is killed and
//! the rest carry on; 10,000 create/exit cycles leave the free frames as
//! they were; threads on every vCPU fault pages of one process at once,
//! with the shared and the replicated Process object; fork is
//! copy-on-write, exec, kill, threads and SSE state across preemption
//! work; bad inputs get clear errors.

mod common;

use common::*;

/// Boot with `vcpus` and init running `lines` (`init.run=` syntax) plus
/// `extra` kernel options; returns the output.
fn run_init(vcpus: u32, lines: &str, extra: &str) -> std::process::Output {
    let cmdline = format!("test=none init=init init.run={lines} {extra}");
    let (out, _) = boot(vcpus, &["--cmdline", &cmdline]);
    out
}

/// Every program init ran exited 0, the VM exited 0, and each `needle`
/// is in the output.
fn expect_ok(out: &std::process::Output, programs: usize, needles: &[&str]) {
    let text = stdout(out);
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    let summary = format!("init: {programs} program(s) run, 0 failed");
    assert!(text.contains(&summary), "{}", describe(out));
    assert!(
        text.contains("k42: init exited with status 0"),
        "{}",
        describe(out)
    );
    for n in needles {
        assert!(text.contains(n), "missing {n:?}\n{}", describe(out));
    }
    assert!(!text.contains("FAILED"), "{}", describe(out));
}

#[test]
fn hello_world_from_the_image_init_rc() {
    let (out, _) = boot(2, &["--cmdline", "test=none init=init"]);
    expect_ok(
        &out,
        2,
        &[
            "init: nameserver: started in the background (process 2)",
            "init: fileserver: started in the background (process 3)",
            "hello, world from process 4 on CPU",
            "args: hello from-init",
            "init: hello from-init: exited with status 0",
            "Welcome to k42vmm",
            "init: cat /etc/motd: exited with status 0",
        ],
    );
}

#[test]
fn init_status_is_the_vm_exit_code() {
    let out = run_init(1, "proctest+exit+3,hello", "");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("init: proctest exit 3: exited with status 3"),
        "{}",
        describe(&out)
    );
    assert!(
        text.contains("init: 2 program(s) run, 1 failed"),
        "{}",
        describe(&out)
    );
}

#[test]
fn missing_init_program_is_a_clear_error() {
    let (out, _) = boot(1, &["--cmdline", "test=none init=no-such-init"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stdout(&out)
            .contains("k42: init (no-such-init) could not start: no such program in the image"),
        "{}",
        describe(&out)
    );
    let (out, _) = boot(1, &["--cmdline", "test=none init=init proc.max=0"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stdout(&out).contains("proc.max= takes a number from 1 to 1024"),
        "{}",
        describe(&out)
    );
}

#[test]
fn fork_bomb_is_stopped_by_the_process_limit() {
    let out = run_init(2, "proctest+forkbomb,hello", "proc.max=24");
    expect_ok(
        &out,
        2,
        &["stopped by the process limit: true, other errors: None, all reaped: true: ok"],
    );
}

#[test]
fn reading_kernel_memory_kills_only_that_process() {
    let out = run_init(2, "proctest+kernelread", "");
    expect_ok(
        &out,
        1,
        &[
            "killed by #PF page fault at rip",
            "address 0xffffffff80200000",
            "the system carried on: ok",
        ],
    );
}

#[test]
fn divide_error_invalid_opcode_and_stack_overflow_kill_only_their_process() {
    let out = run_init(2, "proctest+faults-kill,hello", "");
    expect_ok(
        &out,
        2,
        &[
            "killed by #DE divide error",
            "killed by #UD invalid opcode",
            "proctest divide: child ended Ok",
            "expected Fault(0): ok",
            "expected Fault(6): ok",
            "proctest recurse: child ended Ok",
        ],
    );
    // The overflow is reported at an address just below the stack region.
    assert!(
        stdout(&out).contains("address 0x7fffffefe"),
        "{}",
        describe(&out)
    );
}

#[test]
fn running_out_of_memory_kills_only_that_process() {
    let out = run_init(2, "proctest+oom,hello", "proc.mem=1M");
    expect_ok(
        &out,
        2,
        &[
            "killed: out of memory at address",
            "expected OutOfMemory: ok",
        ],
    );
}

#[test]
fn ten_thousand_create_exit_cycles_keep_the_free_frames() {
    // About two minutes on two host cores (each cycle is ~2,500 emulated
    // kernel instructions): its own, longer timeout.
    require_kvm();
    let image = default_image();
    let out = run(&[
        "run",
        "--vcpus",
        "2",
        "--timeout",
        "600s",
        "--cmdline",
        "test=none init=init init.run=proctest+cycles+10000+2",
        image.to_str().unwrap(),
    ]);
    expect_ok(
        &out,
        1,
        &["10000 create/exit cycles by 2 processes at once"],
    );
}

#[test]
fn threads_on_every_vcpu_fault_concurrently_shared_and_replicated() {
    for vcpus in [4u32, 8] {
        let lines =
            format!("proctest+faults+{vcpus}+32+shared,proctest+faults+{vcpus}+32+replicated");
        let out = run_init(vcpus, &lines, "");
        expect_ok(
            &out,
            2,
            &[
                &format!("{vcpus} threads x 32 pages, shared Process: child ended Ok"),
                &format!("{vcpus} threads x 32 pages, replicated Process: child ended Ok"),
                &format!("{vcpus} threads on {vcpus} CPUs faulted"),
            ],
        );
    }
}

#[test]
fn fork_exec_kill_threads_and_system_call_errors() {
    let out = run_init(
        2,
        "proctest+fork,proctest+kill,proctest+threadexit,proctest+syscalls",
        "",
    );
    expect_ok(
        &out,
        4,
        &[
            "parent kept 5: ok",
            "hello, world from process",
            "args: hello from-exec; env: K42=1",
            "exec of a missing program refused: ok",
            "spinning child ended Ok",
            "Killed)): ok",
            "expected Exited(5): ok",
            "proctest syscalls: 0 failures: ok",
        ],
    );
}

#[test]
fn position_independent_program_is_relocated() {
    let out = run_init(1, "hello-pie", "");
    expect_ok(
        &out,
        1,
        &[
            "hello, position-independent world from process 2 (code at 0x100",
            "20*2+1 = 41)",
        ],
    );
}

#[test]
fn sse_state_survives_preemption() {
    // Twice as many threads as vCPUs, each spinning 100 ms: they share
    // the CPUs in 10 ms slices.
    let out = run_init(2, "proctest+fpu+4", "");
    expect_ok(&out, 1, &["0 SSE registers lost: ok"]);
    let text = stdout(&out);
    let gaps: u64 = text
        .split("4 threads, ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no gap count\n{}", describe(&out)));
    assert!(
        gaps > 0,
        "the threads were never preempted\n{}",
        describe(&out)
    );
}
