//! The TSC-deadline timer fires on every CPU, never before its deadline,
//! and sleeps last at least as long as asked.

use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::MAX_VCPUS;

use crate::ktest::TestResult;
use crate::{arch, check, kernel_test, percpu, smp, time};

const DELAY_NS: u64 = 300_000;

static EARLY: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
static SLEPT: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

fn timer_fires_on_every_cpu() -> TestResult {
    smp::run_on_all(|cpu| {
        let me = percpu::current();
        // The interrupt itself: arm a deadline and halt until it fires.
        let before = me.timer_interrupts.load(Ordering::Relaxed);
        let deadline = arch::read_tsc() + time::ns_to_ticks(DELAY_NS);
        arch::set_timer_deadline(deadline);
        smp::wait_until(|| me.timer_interrupts.load(Ordering::Relaxed) > before);
        let fired_at = me.last_timer_tsc.load(Ordering::Relaxed);
        EARLY[cpu as usize].store(deadline.saturating_sub(fired_at), Ordering::Relaxed);
        // And the sleep built on it.
        let t0 = time::now_ns();
        time::sleep_ns(DELAY_NS);
        SLEPT[cpu as usize].store(time::now_ns() - t0, Ordering::Relaxed);
    });
    for cpu in 0..smp::ncpus() as usize {
        let early = EARLY[cpu].load(Ordering::Relaxed);
        let slept = SLEPT[cpu].load(Ordering::Relaxed);
        check!(
            early == 0,
            "the timer fired {early} TSC ticks before its deadline on CPU {cpu}"
        );
        check!(
            slept >= DELAY_NS,
            "CPU {cpu} woke after {slept} ns of a {DELAY_NS} ns sleep"
        );
    }
    Ok(())
}
kernel_test!("timer.every_cpu", timer_fires_on_every_cpu);
