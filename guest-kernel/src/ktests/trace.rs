//! Tracing: exact loss accounting on every CPU, many CPUs writing one
//! buffer, events logged from user mode, and a steady stream that the
//! collector drains without loss.
//!
//! `trace.burst` and `trace.user` print how many events they logged, so
//! that the whole-system tests can compare with what k42vmm collected.
//! Without a collector (k42vmm runs without `--trace`), classes are off:
//! the tests then check that logging changes nothing.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use k42_abi::MAX_VCPUS;
use k42_abi::trace::{class, ev, event_id};
use k42_trace::{BufferSet, Geometry, Shared};
use k42_trace_reader::{LocalMem, Reader};

use crate::ktest::TestResult;
use crate::user::{self, Exit};
use crate::{arch, boot, check, kernel_test, println, smp, time, trace};

/// `magic` of the kernel's `test:burst` events.
pub const KERNEL_MAGIC: u64 = 0x006b_6572_6e00_0000;

/// Every CPU logs `trace.burst=` events with interrupts masked, so that
/// nothing else writes its buffers meanwhile: every event is logged or
/// dropped, and the lost count grows by exactly the drops.
fn burst() -> TestResult {
    let k = boot::options().trace.burst as u64;
    let enabled = trace::enabled(class::test);
    let logged = AtomicU64::new(0);
    let dropped = AtomicU64::new(0);
    let miscounted = AtomicU32::new(0);
    smp::run_on_all(|cpu| {
        let _masked = arch::irq_save();
        let lost = || trace::buffers(cpu).map_or(0, |b| b.lost());
        let lost0 = lost();
        let (mut l, mut d) = (0, 0);
        for seq in 0..k {
            if trace::log(ev::test::burst(cpu as u64, seq, KERNEL_MAGIC)) {
                l += 1;
            } else if enabled {
                d += 1;
            }
        }
        if lost() - lost0 != d {
            miscounted.fetch_add(1, Ordering::Relaxed);
        }
        logged.fetch_add(l, Ordering::Relaxed);
        dropped.fetch_add(d, Ordering::Relaxed);
    });
    let (l, d, n) = (
        logged.into_inner(),
        dropped.into_inner(),
        smp::ncpus() as u64,
    );
    println!("k42: trace.burst: {n} CPUs logged {l} test:burst events, dropped {d}");
    let m = miscounted.into_inner();
    check!(
        m == 0,
        "on {m} CPUs the lost count moved by other than the events dropped"
    );
    if enabled {
        check!(
            l + d == k * n,
            "{l} logged + {d} dropped != {} attempted",
            k * n
        );
    } else {
        check!(
            l == 0 && d == 0,
            "class test is off, yet {l} events were logged"
        );
    }
    Ok(())
}
kernel_test!("trace.burst", burst);

fn check_word(cpu: u64, seq: u64) -> u64 {
    (cpu << 32 ^ seq).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Every CPU logs into one small private buffer set at once (most events
/// are dropped at larger CPU counts); read back, every event is whole,
/// each CPU's events are in order, and logged + lost == attempted.
fn many_writers() -> TestResult {
    const PER_CPU: u64 = 16;
    const ID: u16 = event_id(class::test.0, 3);
    let g = Geometry::new(12, 2).expect("valid geometry");
    let mut mem: Vec<u64> = alloc::vec![0; (g.area_size() / 8) as usize];
    // SAFETY: `mem` is zeroed, 8-aligned, area_size bytes, and outlives
    // every use of `buffers` in this function.
    let buffers = unsafe { BufferSet::<Shared>::new(mem.as_mut_ptr().cast(), g) };
    let logged: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
    smp::run_on_all(|cpu| {
        let c = cpu as u64;
        for seq in 0..PER_CPU {
            if buffers.log(arch::read_tsc, ID, &[c, seq, check_word(c, seq)]) {
                logged[cpu as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let n = smp::ncpus() as usize;
    let local = LocalMem::new(&buffers);
    let mut reader = Reader::new(g);
    let packets = reader
        .drain(&local)
        .map_err(|e| alloc::format!("the reader refused the buffers: {e}"))?;
    let mut seen: Vec<u64> = alloc::vec![0; n];
    let mut next: Vec<u64> = alloc::vec![0; n];
    for p in &packets {
        for e in p.events() {
            let e = e.map_err(|at| alloc::format!("malformed event at word {at}"))?;
            let (cpu, seq) = (e.payload[0], e.payload[1]);
            check!(
                e.id == ID && (cpu as usize) < n && e.payload[2] == check_word(cpu, seq),
                "a torn event: {:?}",
                e
            );
            check!(
                seq >= next[cpu as usize],
                "CPU {cpu}'s event {seq} came after a later one"
            );
            next[cpu as usize] = seq + 1;
            seen[cpu as usize] += 1;
        }
    }
    let mut total = 0;
    for (cpu, &s) in seen.iter().enumerate() {
        let l = logged[cpu].load(Ordering::Relaxed);
        check!(s == l, "CPU {cpu} logged {l} events, the reader saw {s}");
        total += l;
    }
    let lost = reader.lost(&local);
    check!(
        total + lost == PER_CPU * n as u64,
        "{total} logged + {lost} lost != {} attempted",
        PER_CPU * n as u64
    );
    drop(mem);
    Ok(())
}
kernel_test!("trace.many_writers", many_writers);

/// The `trace-bench` program logs `test:burst` events from user mode on
/// every CPU at once, each instance into the buffers the kernel uses on
/// its CPU.
fn user_mode() -> TestResult {
    const PER_CPU: u64 = 32;
    let file = user::module("trace-bench").ok_or("the image has no trace-bench module")?;
    let registered = trace::registered();
    let enabled = registered && trace::enabled(class::test);
    let n = smp::ncpus();
    let lost = |cpu: u32| trace::buffers(cpu).map_or(0, |b| b.lost());
    let lost0: Vec<u64> = (0..n).map(lost).collect();
    let exits = user::run_everywhere(file, 0, [0, PER_CPU, 0, 0, 0, 0, 0, 0])
        .map_err(|e| alloc::format!("trace-bench did not start: {e:?}"))?;
    let mut logged = 0;
    for (cpu, e) in exits.iter().enumerate() {
        let ok = match *e {
            Exit::Status(255) => !registered,
            Exit::Status(s) => {
                let s = s as u64;
                logged += s;
                // Every event is logged unless the buffers were full.
                registered
                    && s <= PER_CPU
                    && (s == PER_CPU || !enabled || lost(cpu as u32) > lost0[cpu])
                    && (enabled || s == 0)
            }
            Exit::Fault(_) => false,
        };
        if !ok {
            user::describe_exit("trace-bench", cpu as u32, e);
        }
        check!(ok, "trace-bench misbehaved on CPU {cpu}: {e:?}");
    }
    println!("k42: trace.user: {n} CPUs logged {logged} test:burst events from user mode");
    Ok(())
}
kernel_test!("trace.user", user_mode);

/// Every CPU logs a `test:tick` every 20 ms for `trace.ticks=` ms: at
/// that rate the collector keeps up, so no tick may be lost.
fn ticks() -> TestResult {
    const PERIOD_NS: u64 = 20_000_000;
    let n = (boot::options().trace.ticks_ms as u64 * 1_000_000 / PERIOD_NS).max(1);
    let enabled = trace::enabled(class::test);
    let missed = AtomicU64::new(0);
    smp::run_on_all(|cpu| {
        for seq in 0..n {
            time::sleep_ns(PERIOD_NS);
            if !trace::log(ev::test::tick(cpu as u64, seq)) && enabled {
                missed.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let m = missed.into_inner();
    check!(
        m == 0,
        "{m} ticks were dropped although the collector drains the buffers"
    );
    Ok(())
}
kernel_test!("trace.ticks", ticks);
