//! Where a Linux program's `syscall` lands on this host, found from the
//! first one (docs/LINUX.md, "How a Linux system call is served"), and
//! told to k42vmm once for its report.
//!
//! Every CPU starts with `syscall` aimed at a kernel stub (`arch`'s
//! `linux_syscall` module). Arriving there in user mode (KVM-PVM) faults,
//! and [`on_user_fault`] turns the fault into the call it was: the CPU's
//! `syscall` then goes straight to the personality. Arriving in ring 0
//! (VT-x, SVM), the stub reflects the call to the personality and notes
//! it; [`report_at_exit`] tells k42vmm. Found this way rather than by a
//! probe program at boot, which cost ~12 ms of every boot (27 -> 40 ms to
//! all vCPUs online at 1 vCPU) for an answer only Linux programs need.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicBool, Ordering};

use k42_abi::Hypercall;
use k42_abi::hypercall::LinuxSyscallPath;

use crate::arch::{self, TrapFrame};

/// Whether k42vmm has been told.
static REPORTED: AtomicBool = AtomicBool::new(false);

/// A user-mode exception: if it is a `syscall` that stayed in user mode,
/// resume it at the personality (this CPU's later calls go there
/// directly) and return true.
pub fn on_user_fault(frame: &mut TrapFrame) -> bool {
    if !arch::take_user_mode_syscall(frame) {
        return false;
    }
    report(LinuxSyscallPath::UserMode);
    true
}

/// At the VM's end: tell k42vmm if `syscall` was seen entering ring 0.
pub fn report_at_exit() {
    if arch::syscall_entered_ring0() {
        report(LinuxSyscallPath::KernelReflects);
    }
}

fn report(path: LinuxSyscallPath) {
    if !REPORTED.swap(true, Ordering::Relaxed) {
        arch::hypercall(Hypercall::linux_syscall_path(path));
    }
}
