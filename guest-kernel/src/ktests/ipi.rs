//! IPIs one-to-one and broadcast: CPU 0 pings every CPU, each answers.
//!
//! An IPI is a doorbell, not a message: two IPIs of one vector that arrive
//! together merge into one interrupt. So each answer is counted in memory
//! (`ANSWERS`) and the IPI back only wakes the pinger, which re-checks.

use core::sync::atomic::{AtomicU32, Ordering};

use k42_abi::MAX_VCPUS;

use crate::arch::{self, x86_64::interrupts::VECTOR_DYNAMIC_BASE};
use crate::ktest::TestResult;
use crate::{check, kernel_test, percpu, smp};

const VECTOR_PING: u8 = VECTOR_DYNAMIC_BASE;
const VECTOR_PONG: u8 = VECTOR_DYNAMIC_BASE + 1;

static PINGS: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static ANSWERS: AtomicU32 = AtomicU32::new(0);
static PONG_INTERRUPTS: AtomicU32 = AtomicU32::new(0);
static PINGER: AtomicU32 = AtomicU32::new(0);

fn on_ping(_: &mut arch::TrapFrame) {
    PINGS[percpu::cpu_id() as usize].fetch_add(1, Ordering::Relaxed);
    ANSWERS.fetch_add(1, Ordering::AcqRel);
    arch::send_ipi(PINGER.load(Ordering::Relaxed), VECTOR_PONG);
}

fn on_pong(_: &mut arch::TrapFrame) {
    PONG_INTERRUPTS.fetch_add(1, Ordering::Relaxed);
}

fn ping_pong() -> TestResult {
    arch::set_handler(VECTOR_PING, on_ping);
    arch::set_handler(VECTOR_PONG, on_pong);
    let me = percpu::cpu_id();
    PINGER.store(me, Ordering::Relaxed);
    let n = smp::ncpus();
    // One to one, each round trip in turn: the pinger halts until the
    // target's IPI back wakes it.
    for cpu in (0..n).filter(|&c| c != me) {
        let want = ANSWERS.load(Ordering::Acquire) + 1;
        let pongs = PONG_INTERRUPTS.load(Ordering::Relaxed);
        arch::send_ipi(cpu, VECTOR_PING);
        smp::wait_until(|| ANSWERS.load(Ordering::Acquire) >= want);
        smp::wait_until(|| PONG_INTERRUPTS.load(Ordering::Relaxed) > pongs);
    }
    // Broadcast: everyone at once.
    let want = ANSWERS.load(Ordering::Acquire) + (n - 1);
    arch::broadcast_ipi(VECTOR_PING);
    smp::wait_until(|| ANSWERS.load(Ordering::Acquire) >= want);
    for cpu in (0..n).filter(|&c| c != me) {
        let p = PINGS[cpu as usize].load(Ordering::Relaxed);
        check!(p == 2, "CPU {cpu} took {p} pings, expected 2");
    }
    check!(
        PINGS[me as usize].load(Ordering::Relaxed) == 0,
        "the broadcast reached its sender"
    );
    Ok(())
}
kernel_test!("ipi.ping_pong", ping_pong);
