//! std threads standing in for CPUs.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Instant;

use k42_cobj::{CpuEnv, System};

pub struct ThreadEnv {
    pub n: usize,
    pub start: Instant,
}

impl CpuEnv for ThreadEnv {
    fn ncpus(&self) -> usize {
        self.n
    }
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    fn relax(&self, round: u32) {
        if round < 16 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

pub fn relax(round: u32) {
    if round < 16 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

pub fn system(n: usize) -> Arc<System<ThreadEnv>> {
    Arc::new(System::new(
        ThreadEnv {
            n,
            start: Instant::now(),
        },
        64,
    ))
}

/// Run `f(cpu)` on `n` threads, thread i standing in for CPU i; returns
/// their results in CPU order.
pub fn on_cpus<R: Send + 'static>(
    sys: &Arc<System<ThreadEnv>>,
    f: impl Fn(&k42_cobj::Cpu<'_, ThreadEnv>) -> R + Send + Sync + 'static,
) -> Vec<R> {
    let f = Arc::new(f);
    let handles: Vec<_> = (0..sys.ncpus())
        .map(|i| {
            let (sys, f) = (sys.clone(), f.clone());
            std::thread::spawn(move || {
                // SAFETY: thread i is the only one standing in for CPU i.
                let cpu = unsafe { sys.cpu(i) };
                let r = f(&cpu);
                cpu.offline();
                r
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("CPU thread"))
        .collect()
}
