//! Every CPU finds its own per-CPU data and answers cross-CPU calls
//! exactly once. (That every CPU came online the boot itself checks: the
//! boot CPU waits for all of them before the tests run.)

use core::sync::atomic::{AtomicU32, Ordering};

use k42_abi::MAX_VCPUS;

use crate::ktest::TestResult;
use crate::{check, kernel_test, percpu, smp};

fn every_cpu_has_its_own_data() -> TestResult {
    for cpu in 0..smp::ncpus() {
        check!(
            percpu::of(cpu).id() == cpu,
            "per-CPU data of CPU {cpu} says {}",
            percpu::of(cpu).id()
        );
    }
    Ok(())
}
kernel_test!("smp.percpu", every_cpu_has_its_own_data);

static CALLS: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];

fn call_every_cpu() -> TestResult {
    let n = smp::ncpus();
    for round in 1..=2 {
        smp::run_on_all(|cpu| {
            assert_eq!(cpu, percpu::cpu_id());
            CALLS[cpu as usize].fetch_add(1, Ordering::Relaxed);
        });
        for cpu in 0..n {
            let c = CALLS[cpu as usize].load(Ordering::Relaxed);
            check!(
                c == round,
                "CPU {cpu} ran the call {c} times after round {round}"
            );
        }
    }
    Ok(())
}
kernel_test!("smp.call_all", call_every_cpu);
