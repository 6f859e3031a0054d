//! `trace-bench`: logs trace events from user mode into this CPU's trace
//! buffers (shared with the kernel), for the kernel's `trace.user` test
//! and the `bench=trace` benchmark.
//!
//! Runs on one CPU or on every CPU at once; each instance logs into its
//! own CPU's buffers. Arguments: `[mode, n]`.
//!
//! | mode | what                                                          |
//! |------|---------------------------------------------------------------|
//! | 0    | log `n` (≤ 254) `test:burst` events (field `cpu`, magic        |
//! |      | [`USER_MAGIC`]); exit status: how many were logged             |
//! | 1    | benchmark, class `bench` off: an empty loop and a loop of     |
//! |      | disabled events, `n` iterations each                          |
//! | 2    | benchmark, class `bench` on: a loop of RDTSC (the timestamp   |
//! |      | every event reads, timed right before the events) and `n`     |
//! |      | three-word events; also reports how many were dropped         |
//!
//! Each loop runs in 16 rounds; the figure is the median round (so that a
//! round in which the host preempted the vCPU does not count), scaled to
//! `n` iterations. Results go to k42vmm as bench records
//! (`trace.empty_loop`, `trace.rdtsc`, `trace.disabled`, `trace.event3`,
//! `trace.dropped`). Mode 2 first
//! touches every page of its buffers (an atomic no-op write per page), so
//! the timed loop measures logging, not the host's first-touch faults,
//! which a buffer pays once per page. Exit status [`TRACING_OFF`]:
//! tracing is off.
#![no_std]
#![no_main]

use core::hint::black_box;

use k42_abi::bench::{BenchMode, BenchRecord};
use k42_abi::trace::ev;
use k42_rt::trace::Tracer;
use k42_rt::{Start, bench_record, rdtsc};

/// `magic` of the `test:burst` events user mode logs.
pub const USER_MAGIC: u64 = 0x0075_7365_7200_0000;
/// Exit status when the kernel mapped no trace buffers.
pub const TRACING_OFF: u8 = 255;

k42_rt::main!(run);

fn run(start: Start) -> u8 {
    let (mode, n, cpu) = (start.arg(0), start.arg(1), start.cpu);
    let Some(t) = Tracer::open(cpu) else {
        return TRACING_OFF;
    };
    let a = cpu as u64;
    match mode {
        0 => {
            let mut logged = 0u8;
            for seq in 0..n.min(254) {
                if t.log(ev::test::burst(a, seq, USER_MAGIC)) {
                    logged += 1;
                }
            }
            logged
        }
        1 => {
            let empty = timed(n, |r| {
                for i in r {
                    black_box(i);
                }
            });
            let disabled = timed(n, |r| {
                for i in r {
                    t.log(ev::bench::event3(i, n, a));
                }
            });
            report(
                &start,
                &[
                    ("trace.empty_loop", n, empty),
                    ("trace.disabled", n, disabled),
                ],
            )
        }
        2 => {
            t.touch_buffers();
            let tsc = timed(n, |r| {
                for _ in r {
                    black_box(rdtsc());
                }
            });
            let lost = t.lost();
            let enabled = timed(n, |r| {
                for i in r {
                    t.log(ev::bench::event3(i, n, a));
                }
            });
            let dropped = t.lost() - lost;
            report(
                &start,
                &[
                    ("trace.rdtsc", n, tsc),
                    ("trace.event3", n, enabled),
                    ("trace.dropped", dropped, 0),
                ],
            )
        }
        _ => 4,
    }
}

/// Rounds each measurement is split into.
const ROUNDS: usize = 16;

/// TSC ticks `f` takes for `n` iterations, as the median of [`ROUNDS`]
/// rounds of `n / ROUNDS` (scaled to `n`): a round in which the host
/// preempted this vCPU does not count.
fn timed(n: u64, mut f: impl FnMut(core::ops::Range<u64>)) -> u64 {
    let per = n / ROUNDS as u64;
    let mut ticks = [0u64; ROUNDS];
    for (k, t) in ticks.iter_mut().enumerate() {
        let start = k as u64 * per;
        let t0 = rdtsc();
        f(start..start + per);
        *t = rdtsc() - t0;
    }
    ticks.sort_unstable();
    (ticks[ROUNDS / 2 - 1] + ticks[ROUNDS / 2]) / 2 * ROUNDS as u64 * n
        / (per * ROUNDS as u64).max(1)
}

/// Send (name, iterations, TSC ticks) records; 0 if all went through.
fn report(start: &Start, results: &[(&str, u64, u64)]) -> u8 {
    for &(name, n, ticks) in results {
        let ns = start.ticks_to_ns(ticks);
        if bench_record(&BenchRecord::new(name, start.cpu, BenchMode::User, n, ns)) != 0 {
            return 1;
        }
    }
    0
}
