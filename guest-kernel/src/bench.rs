//! Benchmarks run inside the guest, and how their results reach k42vmm
//! (one `BenchRecord` hypercall per result, outside the timed part).
//!
//! `bench=platform` on the command line runs [`platform`]: what this
//! host's virtualisation costs the kernel and user programs. The
//! `platform.spin` loop is the `k42-loops` function the host driver also
//! times, so the three figures compare directly.
//!
//! `bench=trace` runs [`trace`]: what logging an event costs, enabled and
//! disabled, next to an empty loop, in supervisor mode and (the figures
//! that matter on KVM-PVM hosts) in user mode, on every CPU at once.

use k42_abi::Hypercall;
use k42_abi::bench::{BenchMode, BenchRecord};
use k42_abi::layout::PAGE_SIZE;

use k42_abi::trace::{class, ev};

use crate::mm::frame;
use crate::{arch, percpu, smp, time, trace as tracing, user};

/// Iterations of the boot-time calibration loop (cheap even emulated).
const CALIBRATION_ITERATIONS: u64 = 64;

/// Send one result to k42vmm.
pub fn report(rec: &BenchRecord) {
    let pa = arch::virt_to_phys(rec as *const BenchRecord as u64).expect("record in kernel memory");
    let r = arch::hypercall(Hypercall::bench_record(
        pa,
        core::mem::size_of::<BenchRecord>() as u64,
    ));
    assert!(r == 0, "the BenchRecord hypercall failed with {r}");
}

fn report_supervisor(name: &str, iterations: u64, elapsed_ns: u64) {
    report(&BenchRecord::new(
        name,
        percpu::cpu_id(),
        BenchMode::Supervisor,
        iterations,
        elapsed_ns,
    ));
}

/// Time `f` in nanoseconds.
fn timed(f: impl FnOnce()) -> u64 {
    let t0 = arch::read_tsc();
    f();
    time::ticks_to_ns(arch::read_tsc() - t0)
}

/// Tell k42vmm how fast supervisor code runs here (boot CPU, at boot), so
/// it can say whether the kernel runs natively or emulated.
pub fn calibrate() {
    let ns = timed(|| {
        core::hint::black_box(k42_loops::spin(CALIBRATION_ITERATIONS));
    });
    arch::hypercall(Hypercall::platform_info(CALIBRATION_ITERATIONS, ns));
}

/// Sizes of the platform benchmark.
pub struct PlatformSizes {
    pub supervisor_spins: u64,
    pub user_spins: u64,
    pub hypercalls: u64,
    pub timer_interrupts: u64,
    pub zeroed_pages: u64,
    pub syscalls: u64,
}

/// Sizes that finish in about a second under KVM-PVM emulation.
pub const PLATFORM_SIZES: PlatformSizes = PlatformSizes {
    supervisor_spins: 20_000,
    user_spins: 20_000_000,
    hypercalls: 1_000,
    timer_interrupts: 200,
    zeroed_pages: 32,
    syscalls: 1_000,
};

/// The platform benchmark: supervisor-mode costs on the boot CPU, then
/// the user-mode program `platform-bench` on every CPU at once.
pub fn platform(sizes: &PlatformSizes) -> Result<(), &'static str> {
    let s = sizes;
    let ns = timed(|| {
        core::hint::black_box(k42_loops::spin(s.supervisor_spins));
    });
    report_supervisor("platform.spin", s.supervisor_spins, ns);

    let ns = timed(|| {
        for _ in 0..s.hypercalls {
            arch::hypercall(Hypercall::nop());
        }
    });
    report_supervisor("platform.hypercall", s.hypercalls, ns);

    // Timer interrupts: arm the deadline in the past, halt until taken.
    let me = percpu::current();
    let ns = timed(|| {
        for _ in 0..s.timer_interrupts {
            let before = me
                .timer_interrupts
                .load(core::sync::atomic::Ordering::Relaxed);
            arch::set_timer_deadline(1);
            smp::wait_until(|| {
                me.timer_interrupts
                    .load(core::sync::atomic::Ordering::Relaxed)
                    > before
            });
        }
    });
    report_supervisor("platform.timer_irq", s.timer_interrupts, ns);

    let mut frames = alloc::vec::Vec::new();
    for _ in 0..s.zeroed_pages {
        frames.push(frame::alloc().ok_or("out of frames")?);
    }
    let ns = timed(|| {
        for &pa in &frames {
            // SAFETY: frames just allocated to this function.
            unsafe {
                core::ptr::write_bytes(arch::phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE as usize)
            };
        }
    });
    frames.into_iter().for_each(frame::free);
    report_supervisor("platform.page_zero", s.zeroed_pages, ns);

    let program = user::module("platform-bench").ok_or("the image has no platform-bench module")?;
    let failures = core::sync::atomic::AtomicU32::new(0);
    smp::run_on_all(|cpu| {
        let args = [s.user_spins, s.syscalls, 0, 0, 0, 0, 0, 0];
        match user::run(program, args) {
            Ok(user::Exit::Status(0)) => {}
            Ok(exit) => {
                user::describe_exit("platform-bench", cpu, &exit);
                failures.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                crate::println!("k42: cannot start platform-bench on CPU {cpu}: {e:?}");
                failures.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    if failures.into_inner() != 0 {
        Err("platform-bench failed on some CPUs")
    } else {
        Ok(())
    }
}

/// Heap for the clustered-object benchmark program.
const COBJ_HEAP: u64 = 8 << 20;

/// The clustered-object benchmarks: `cobj-bench` on every CPU at once, in
/// user mode (native on KVM-PVM hosts); it reports its own records.
pub fn cobj(ops: u64) -> Result<(), &'static str> {
    let program = user::module("cobj-bench").ok_or("the image has no cobj-bench module")?;
    let exits =
        user::run_everywhere(program, COBJ_HEAP, [ops, 0, 0, 0, 0, 0, 0, 0]).map_err(|e| {
            crate::println!("k42: cannot start cobj-bench: {e:?}");
            "cobj-bench did not start"
        })?;
    let mut failed = false;
    for (cpu, e) in exits.iter().enumerate() {
        if *e != user::Exit::Status(0) {
            user::describe_exit("cobj-bench", cpu as u32, e);
            failed = true;
        }
    }
    if failed {
        Err("cobj-bench failed on some CPUs")
    } else {
        Ok(())
    }
}

/// Iterations of each supervisor-mode tracing loop (emulated here).
pub const TRACE_SUPERVISOR_ITERATIONS: u64 = 200;
/// Rounds a tracing loop is split into.
const TRACE_ROUNDS: u64 = 8;

/// Most iterations of each user-mode tracing loop.
pub const TRACE_USER_ITERATIONS: u64 = 1_000_000;

/// Nanoseconds `f` takes for `n` iterations: the median of
/// [`TRACE_ROUNDS`] rounds of `n / TRACE_ROUNDS`, scaled to `n`, so that
/// a round in which the host preempted this vCPU does not count.
fn timed_rounds(n: u64, mut f: impl FnMut(core::ops::Range<u64>)) -> u64 {
    let per = n / TRACE_ROUNDS;
    let mut ns = [0u64; TRACE_ROUNDS as usize];
    for (k, t) in ns.iter_mut().enumerate() {
        let start = k as u64 * per;
        *t = timed(|| f(start..start + per));
    }
    ns.sort_unstable();
    let mid = TRACE_ROUNDS as usize / 2;
    (ns[mid - 1] + ns[mid]) / 2 * n / per.max(1)
}

/// The tracing benchmark. Events go to the registered buffers, so run it
/// with k42vmm collecting (`--trace`) and buffers large enough for the
/// user-mode loop (it logs at most half of one CPU's capacity, and says
/// how many events were dropped). The class mask is restored at the end.
pub fn trace() -> Result<(), &'static str> {
    let Some(b) = tracing::buffers(0) else {
        return Err("tracing is not registered: run k42vmm with --trace or --trace-socket");
    };
    let g = b.geometry();
    let saved = tracing::mask();
    let off = saved & !class::bench.bit();
    let on = saved | class::bench.bit();
    let n = TRACE_SUPERVISOR_ITERATIONS;

    // Supervisor mode, interrupts masked so that only the loop runs.
    tracing::set_mask(off);
    smp::run_on_all(|_| {
        let _masked = arch::irq_save();
        let empty = timed_rounds(n, |r| {
            for i in r {
                core::hint::black_box(i);
            }
        });
        let disabled = timed_rounds(n, |r| {
            for i in r {
                tracing::log(ev::bench::event3(i, n, 0));
            }
        });
        report_supervisor("trace.empty_loop", n, empty);
        report_supervisor("trace.disabled", n, disabled);
    });
    tracing::set_mask(on);
    smp::run_on_all(|cpu| {
        let _masked = arch::irq_save();
        let lost = tracing::buffers(cpu).map_or(0, |b| b.lost());
        let enabled = timed_rounds(n, |r| {
            for i in r {
                tracing::log(ev::bench::event3(i, n, 0));
            }
        });
        let dropped = tracing::buffers(cpu).map_or(0, |b| b.lost()) - lost;
        report_supervisor("trace.event3", n, enabled);
        report_supervisor("trace.dropped", dropped, 0);
    });

    // User mode: the trace-bench program on every CPU at once, the same
    // loops, natively.
    let program = user::module("trace-bench").ok_or("the image has no trace-bench module")?;
    let capacity = g.data_size() / 32;
    let user_n = TRACE_USER_ITERATIONS.min(capacity / 2);
    let mut failed = false;
    for (mode, mask) in [(1, off), (2, on)] {
        tracing::set_mask(mask);
        let exits = user::run_everywhere(program, 0, [mode, user_n, 0, 0, 0, 0, 0, 0]);
        match exits {
            Ok(exits) => {
                for (cpu, e) in exits.iter().enumerate() {
                    if *e != user::Exit::Status(0) {
                        user::describe_exit("trace-bench", cpu as u32, e);
                        failed = true;
                    }
                }
            }
            Err(e) => {
                crate::println!("k42: cannot start trace-bench: {e:?}");
                failed = true;
            }
        }
    }
    tracing::set_mask(saved);
    if failed {
        Err("trace-bench failed on some CPUs")
    } else {
        Ok(())
    }
}
