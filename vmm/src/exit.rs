//! How a VM run ends: the first decision wins, every later one is ignored.
//!
//! Any thread (a vCPU on a shutdown hypercall or a fault, the main loop on
//! a timeout or signal) calls [`ExitLatch::decide`]; that sets the stop
//! flag every vCPU loop checks and wakes the main loop through an eventfd,
//! which then kicks the vCPUs out of `KVM_RUN`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Exit code for a guest panic.
pub const EXIT_PANIC: u8 = 101;
/// Exit code for a guest fault the kernel could not handle.
pub const EXIT_FAULT: u8 = 102;
/// Exit code for `--timeout` expiry.
pub const EXIT_TIMEOUT: u8 = 124;
/// Exit code when the user stops the VM with Ctrl-A x (as for ^C: 128 +
/// SIGINT).
pub const EXIT_QUIT: u8 = 130;
/// Exit code for a bad command line or bad input.
pub const EXIT_USAGE: u8 = 2;

/// Why the VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest asked to shut down with this code.
    Shutdown(u8),
    /// The guest kernel panicked on `vcpu`.
    Panic { vcpu: u32, message: String },
    /// `vcpu` triple-faulted; `dump` is its register state.
    TripleFault { vcpu: u32, dump: String },
    /// `vcpu` stopped in a way the kernel could not handle.
    Fault {
        vcpu: u32,
        what: String,
        dump: String,
    },
    /// `--timeout` expired.
    Timeout { after: Duration },
    /// k42vmm received a terminating signal.
    Signal(i32),
    /// The user typed the escape Ctrl-A x on the terminal.
    Quit,
    /// The host failed (a KVM call, a thread).
    HostError(String),
}

impl ExitReason {
    /// k42vmm's exit code for this reason.
    pub fn code(&self) -> u8 {
        match self {
            ExitReason::Shutdown(c) => *c,
            ExitReason::Panic { .. } => EXIT_PANIC,
            ExitReason::TripleFault { .. } | ExitReason::Fault { .. } => EXIT_FAULT,
            ExitReason::Timeout { .. } => EXIT_TIMEOUT,
            ExitReason::Signal(s) => 128u8.wrapping_add(*s as u8),
            ExitReason::Quit => EXIT_QUIT,
            ExitReason::HostError(_) => 1,
        }
    }

    /// Short name used in the report.
    pub fn kind(&self) -> &'static str {
        match self {
            ExitReason::Shutdown(_) => "shutdown",
            ExitReason::Panic { .. } => "panic",
            ExitReason::TripleFault { .. } => "triple-fault",
            ExitReason::Fault { .. } => "fault",
            ExitReason::Timeout { .. } => "timeout",
            ExitReason::Signal(_) => "signal",
            ExitReason::Quit => "quit",
            ExitReason::HostError(_) => "host-error",
        }
    }
}

/// The once-only decision of how the run ends.
pub struct ExitLatch {
    reason: Mutex<Option<ExitReason>>,
    stopping: AtomicBool,
    /// Readable once a decision is made; the main loop waits on it.
    pub event: EventFd,
}

impl ExitLatch {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            reason: Mutex::new(None),
            stopping: AtomicBool::new(false),
            event: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Record `reason` if nothing was decided yet; returns whether it won.
    pub fn decide(&self, reason: ExitReason) -> bool {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return false;
        }
        *slot = Some(reason);
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.event.write(1);
        true
    }

    /// Whether the VM is stopping (checked by every vCPU before `KVM_RUN`).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The decision, once made.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_decision_wins() {
        let l = ExitLatch::new().unwrap();
        assert!(!l.is_stopping());
        assert!(l.decide(ExitReason::Shutdown(3)));
        assert!(!l.decide(ExitReason::Timeout {
            after: Duration::from_secs(1)
        }));
        assert!(l.is_stopping());
        assert_eq!(l.reason(), Some(ExitReason::Shutdown(3)));
        assert_eq!(l.reason().unwrap().code(), 3);
        assert_eq!(l.event.read().unwrap(), 1);
    }

    #[test]
    fn codes_follow_the_design() {
        assert_eq!(
            ExitReason::Panic {
                vcpu: 0,
                message: String::new()
            }
            .code(),
            101
        );
        assert_eq!(
            ExitReason::TripleFault {
                vcpu: 0,
                dump: String::new()
            }
            .code(),
            102
        );
        assert_eq!(
            ExitReason::Timeout {
                after: Duration::ZERO
            }
            .code(),
            124
        );
        assert_eq!(ExitReason::Signal(libc::SIGINT).code(), 130);
        assert_eq!(ExitReason::Quit.code(), 130);
    }
}
