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
}
