//! What the clustered-object core needs from the platform it runs on.

/// The platform: how many CPUs there are, and how to wait.
///
/// The kernel implements it with halting waits and IPIs; a user program
/// with `pause` and a yield system call; host tests with std threads.
pub trait CpuEnv: Send + Sync {
    /// Number of CPUs; CPU ids are `0..ncpus()`.
    fn ncpus(&self) -> usize;

    /// A monotonic clock in nanoseconds (for swap statistics).
    fn now_ns(&self) -> u64;

    /// Called while waiting for something another CPU will do; `round`
    /// counts the calls in this wait, so implementations can back off.
    fn relax(&self, round: u32);

    /// Ask CPU `cpu` to reach a quiescent point soon (e.g. wake it with
    /// an IPI so its idle loop calls [`crate::Cpu::quiescent`]). CPUs that
    /// keep making requests pass quiescent points on their own, so the
    /// default does nothing.
    fn poke(&self, cpu: usize) {
        let _ = cpu;
    }

    /// Record a clustered-object event (misses, swap phases,
    /// destruction), e.g. in a trace. Does nothing by default.
    fn event(&self, event: Event) {
        let _ = event;
    }
}

/// What the core reports to a platform that traces (see
/// [`CpuEnv::event`]). `obj` is the object's table index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A call missed in its CPU's local table.
    Miss { obj: u32 },
    /// A swap or interposition starts (format: the negotiated one).
    SwapBegin {
        obj: u32,
        format: Option<crate::root::Format>,
    },
    /// The swap's forward phase ended after `forward_ns`.
    SwapBlock { obj: u32, forward_ns: u64 },
    /// The swap switched roots; callers were blocked `blocked_ns`.
    SwapEnd { obj: u32, blocked_ns: u64 },
    /// An object was destroyed.
    Destroy { obj: u32 },
}
