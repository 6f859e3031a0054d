//! Time from the TSC, whose frequency comes from boot info (no
//! calibration), and one-shot TSC-deadline timers per CPU. There is no
//! periodic tick: a CPU with nothing to wait for halts with no timer armed.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch;
use crate::percpu;
use crate::smp;

/// ns = (tsc * MULT) >> 32.
static NS_MULT: AtomicU64 = AtomicU64::new(0);
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

/// The wall clock (ns since 1970) when the TSC read 0.
static EPOCH_NS: AtomicU64 = AtomicU64::new(0);

/// Set the time base (boot CPU, before others start) and install the
/// timer interrupt handler; `realtime_ns` is the host's wall clock the
/// VMM read just now (0: unknown).
pub fn init(tsc_khz: u64, realtime_ns: u64) {
    TSC_KHZ.store(tsc_khz, Ordering::Relaxed);
    NS_MULT.store((1_000_000u64 << 32) / tsc_khz, Ordering::Relaxed);
    EPOCH_NS.store(realtime_ns.saturating_sub(now_ns()), Ordering::Relaxed);
    arch::set_handler(arch::VECTOR_TIMER, on_timer);
}

/// The wall clock (ns since 1970) when the TSC read 0: wall-clock time
/// is this plus [`now_ns`].
pub fn epoch_ns() -> u64 {
    EPOCH_NS.load(Ordering::Relaxed)
}

fn on_timer(_: &mut arch::TrapFrame) {
    let me = percpu::current();
    let now = arch::read_tsc();
    me.last_timer_tsc.store(now, Ordering::Relaxed);
    me.timer_interrupts.fetch_add(1, Ordering::Relaxed);
    crate::trace::log(k42_abi::trace::ev::timer::fire(
        now.saturating_sub(me.timer_deadline.load(Ordering::Relaxed)),
    ));
}

/// TSC frequency in kHz.
pub fn tsc_khz() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed)
}

/// Convert TSC ticks to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    ((ticks as u128 * NS_MULT.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// Convert nanoseconds to TSC ticks.
pub fn ns_to_ticks(ns: u64) -> u64 {
    (ns as u128 * tsc_khz() as u128 / 1_000_000) as u64
}

/// Nanoseconds since the TSC started.
pub fn now_ns() -> u64 {
    ticks_to_ns(arch::read_tsc())
}

/// Sleep at least `ns` nanoseconds: arm this CPU's timer and halt until
/// the deadline passes (other interrupts may wake the CPU earlier; it
/// halts again).
pub fn sleep_ns(ns: u64) {
    let deadline = arch::read_tsc() + ns_to_ticks(ns);
    arch::set_timer_deadline(deadline);
    smp::wait_until(|| arch::read_tsc() >= deadline);
}
