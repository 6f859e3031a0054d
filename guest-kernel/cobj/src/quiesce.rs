//! Quiescence: K42's scheme for knowing when no CPU can still hold a
//! pointer it read before some moment (read-copy-update before Linux had
//! RCU).
//!
//! Each CPU counts its active requests in two generations:
//!
//! ```text
//! gen = g        active[g & 1]      requests that started in generation g
//!                active[(g-1) & 1]  requests still running from g - 1
//! ```
//!
//! A request joins the CPU's current generation when it starts and leaves
//! it when it ends. The CPU advances `gen` to `g + 1` only when
//! generation `g - 1` has drained. A *marker* is a snapshot of `gen`; it
//! has elapsed once `gen` has advanced twice past it: every request that
//! was running at the snapshot has ended.
//!
//! Only the CPU itself changes its counters and its generation (so no
//! atomic read-modify-write crosses CPUs); other CPUs only read them.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One CPU's generation state, alone on its cache line.
#[repr(C, align(64))]
pub struct CpuGeneration {
    generation_now: AtomicU64,
    active: [AtomicU64; 2],
    offline: AtomicBool,
}

impl Default for CpuGeneration {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuGeneration {
    pub const fn new() -> Self {
        Self {
            generation_now: AtomicU64::new(0),
            active: [AtomicU64::new(0), AtomicU64::new(0)],
            offline: AtomicBool::new(false),
        }
    }

    /// Start a request (on this CPU); returns the generation parity it
    /// joined, to give back to [`exit`](Self::exit).
    #[inline]
    pub fn enter(&self) -> usize {
        let parity = (self.generation_now.load(Ordering::Relaxed) & 1) as usize;
        let a = &self.active[parity];
        a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // Object pointers loaded by this request must not be loaded before
        // the count (an interrupt in between could end generations). Other
        // CPUs never read the counts, so ordering against this CPU's own
        // interrupts (a compiler fence) is all it takes: a marker elapses
        // only when this CPU, in program order, has ended the request.
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        parity
    }

    /// End a request (on this CPU) and advance if possible.
    #[inline]
    pub fn exit(&self, parity: usize) {
        let a = &self.active[parity];
        a.store(a.load(Ordering::Relaxed) - 1, Ordering::Release);
        self.advance();
    }

    /// Requests running on this CPU now.
    pub fn depth(&self) -> u64 {
        self.active[0].load(Ordering::Relaxed) + self.active[1].load(Ordering::Relaxed)
    }

    /// Advance the generation if the older one has drained (on this CPU).
    #[inline]
    pub fn advance(&self) {
        let g = self.generation_now.load(Ordering::Relaxed);
        if self.active[((g + 1) & 1) as usize].load(Ordering::Relaxed) == 0 {
            self.generation_now.store(g + 1, Ordering::Release);
        }
    }

    /// The current generation (any CPU may read it).
    pub fn generation(&self) -> u64 {
        self.generation_now.load(Ordering::Acquire)
    }

    /// Mark this CPU as making no more requests (or making them again).
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::SeqCst);
    }

    /// Whether the marker `m` (a snapshot of this CPU's generation) has
    /// elapsed.
    pub fn elapsed(&self, m: u64) -> bool {
        self.offline.load(Ordering::SeqCst) || self.generation() >= m + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_elapses_only_after_requests_end() {
        let c = CpuGeneration::new();
        let outer = c.enter();
        let m = c.generation();
        // Back-to-back nested requests cannot retire the outer one.
        for _ in 0..10 {
            let p = c.enter();
            c.exit(p);
        }
        assert!(
            !c.elapsed(m),
            "marker elapsed while a request from before it is running"
        );
        c.exit(outer);
        c.advance();
        c.advance();
        assert!(c.elapsed(m));
    }

    #[test]
    fn idle_cpu_advances_when_asked() {
        let c = CpuGeneration::new();
        let m = c.generation();
        c.advance();
        assert!(!c.elapsed(m));
        c.advance();
        assert!(c.elapsed(m));
        let m = c.generation();
        c.set_offline(true);
        assert!(c.elapsed(m));
    }
}
