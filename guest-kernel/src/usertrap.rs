//! Traps from user mode: a system call (the trap at a system-call site),
//! a process's page fault or fatal exception, a kernel-run program's
//! fault, an interrupt taken in user mode. Registered with `arch` at
//! boot, which names no portable module itself.
#![deny(unsafe_code)]

use crate::arch::{self, TrapFrame, UserTraps};
use crate::{proc, syscall, user};

static HOOKS: UserTraps = UserTraps {
    exception,
    interrupted,
};

/// Register the hooks (boot CPU, before any user code runs).
pub fn init() {
    arch::set_user_traps(&HOOKS);
}

/// An exception in user mode: a system call, a process's fault (resolved,
/// or the process ends), or a kernel-run program's fault (it ends).
/// A thread that blocks or ends leaves its CPU inside the handler; the
/// CPU waits for the next thread only here, after the handler returned
/// (`proc::sched::finish_trap`).
fn exception(frame: &mut TrapFrame) -> bool {
    if frame.vector as u8 == arch::VECTOR_INVALID_OPCODE && user::is_syscall_site(frame.rip) {
        syscall::entry(frame);
        proc::sched::finish_trap(frame);
        return true;
    }
    if crate::syscall_path::on_user_fault(frame) {
        return true;
    }
    let address = arch::fault_address();
    if proc::on_user_exception(frame, address) {
        proc::sched::finish_trap(frame);
        return true;
    }
    user::on_user_fault(frame.vector as u8, frame.error_code, frame.rip, address)
}

/// An interrupt taken in user mode: preemption, kills and quiescence,
/// then the wait for a thread if this CPU's ended.
fn interrupted(frame: &mut TrapFrame) {
    proc::sched::on_user_interrupt(frame);
    proc::sched::finish_trap(frame);
}
