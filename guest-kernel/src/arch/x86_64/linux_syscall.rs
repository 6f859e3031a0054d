//! Where a Linux program's `syscall` goes: to the personality's entry,
//! directly or reflected by the kernel.
//!
//! Linux programs enter the personality (`k42_abi::linux::PERSONALITY_BASE`,
//! mapped in every Linux process) with `syscall`. Hosts differ in where
//! that instruction lands (docs/PLATFORM.md, docs/LINUX.md):
//!
//! ```text
//! KVM-PVM   syscall ─► IA32_LSTAR, still in user mode
//!           LSTAR = the personality's entry: no kernel entry at all
//! VT-x/SVM  syscall ─► IA32_LSTAR in ring 0
//!           LSTAR = k42_linux_syscall_first ─► k42_linux_syscall_reflect:
//!           onto this CPU's trap stack, iretq to user mode at the
//!           personality's entry
//! ```
//!
//! Reflected, the personality starts exactly as it does on KVM-PVM: every
//! register as `syscall` left it (`rcx` the return address, `r11` the
//! program's flags), the program's stack untouched, and the flags
//! `syscall` clears (TF, DF, AC) clear; only interrupts are off in ring 0
//! (FMASK has IF), and back on in user mode.
//!
//! Which host this is, the kernel finds out from the first `syscall` each
//! CPU sees, at no cost before: LSTAR starts at `k42_linux_syscall_first`
//! in kernel text, with FMASK clearing IF as ring 0 needs.
//!
//! - Reached in ring 0, the stub notes it ([`entered_ring0`]) and
//!   reflects; LSTAR stays there (one load of a read-shared byte more
//!   per call than the reflection itself).
//! - Reached in user mode, fetching the stub faults (a supervisor page)
//!   at its address: [`take_user_mode_arrival`] recognises that fault,
//!   points this CPU's LSTAR at the personality with FMASK leaving IF
//!   alone, and resumes the program at the personality's entry with the
//!   registers `syscall` left — as if LSTAR had been there all along.
//!
//! Before any Linux program runs, no user page is ever a ring-0 entry.

use core::arch::global_asm;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU8, Ordering};

use ::x86_64::registers::model_specific::Msr;

use super::gdt::{USER_CS, USER_DS};
use super::interrupts::TrapFrame;
use super::usermode::ArchPerCpu;
use crate::percpu::PerCpu;

/// `IA32_EFER`, `IA32_STAR`, `IA32_LSTAR`, `IA32_FMASK`.
const EFER: u32 = 0xc000_0080;
const STAR: u32 = 0xc000_0081;
const LSTAR: u32 = 0xc000_0082;
const FMASK: u32 = 0xc000_0084;
/// EFER.SCE: `syscall`/`sysret` enabled.
const EFER_SCE: u64 = 1;
/// RFLAGS bits `syscall` clears in user mode: TF, DF and AC (never IF: on
/// KVM-PVM the instruction stays in user mode, where the personality must
/// remain preemptible).
const FMASK_USER_MODE: u64 = 1 << 8 | 1 << 10 | 1 << 18;
/// RFLAGS.IF: also cleared when `syscall` enters ring 0, where the entry
/// runs on the program's stack until it switches.
const RFLAGS_IF: u64 = 1 << 9;

/// Set by `k42_linux_syscall_first` when a `syscall` reached it in ring 0.
#[unsafe(no_mangle)]
static K42_SYSCALL_ENTERED_RING0: AtomicU8 = AtomicU8::new(0);
/// Where the reflection resumes user mode: the personality's entry.
#[unsafe(no_mangle)]
static K42_PERSONALITY_ENTRY: u64 = k42_abi::linux::PERSONALITY_BASE;

const OFF_SCRATCH: usize = offset_of!(PerCpu, arch) + offset_of!(ArchPerCpu, syscall_scratch);
const OFF_TRAP_TOP: usize = offset_of!(PerCpu, arch) + offset_of!(ArchPerCpu, trap_stack_top);

global_asm!(
    r#"
    .section .text
    // LSTAR until this CPU has seen where syscall lands (module docs).
    // In ring 0: note it (one store, the first time) and reflect; in
    // user mode fetching this faults.
    .global k42_linux_syscall_first
k42_linux_syscall_first:
    cmp byte ptr [rip + K42_SYSCALL_ENTERED_RING0], 0
    jne k42_linux_syscall_reflect
    mov byte ptr [rip + K42_SYSCALL_ENTERED_RING0], 1

    // syscall in ring 0 (interrupts off, the program's rsp and GS):
    // build an iretq frame on this CPU's trap stack that enters user
    // mode at the personality's entry with the program's stack and its
    // flags less those syscall clears; rcx and r11 stay as syscall set them.
    .global k42_linux_syscall_reflect
k42_linux_syscall_reflect:
    swapgs
    mov gs:[{scratch}], rsp
    mov rsp, gs:[{trap_top}]
    push {user_ds}
    push qword ptr gs:[{scratch}]
    push r11
    and qword ptr [rsp], {keep_flags}
    push {user_cs}
    push qword ptr [rip + K42_PERSONALITY_ENTRY]
    swapgs
    iretq
"#,
    scratch = const OFF_SCRATCH,
    trap_top = const OFF_TRAP_TOP,
    user_ds = const USER_DS,
    user_cs = const USER_CS,
    keep_flags = const !(FMASK_USER_MODE as i64) as i32,
);

unsafe extern "C" {
    fn k42_linux_syscall_first();
}

/// Set this CPU's `syscall` MSRs as at start: LSTAR at
/// `k42_linux_syscall_first`, FMASK clearing IF too. Runs on every CPU.
pub fn init_cpu() {
    // sysret's selectors: the 32-bit user code placeholder, user data
    // 8 above it, 64-bit user code 16 above it.
    let star = (u64::from(k42_abi::layout::KERNEL_CS) << 32) | ((USER_DS - 8) << 48);
    // SAFETY: these MSRs exist on every x86_64 CPU; setting SCE and the
    // entry changes only what `syscall` does, which no kernel code uses;
    // in ring 0 it reaches only the stub, which runs with interrupts off
    // until it is back in user mode.
    unsafe {
        let efer = Msr::new(EFER).read();
        Msr::new(EFER).write(efer | EFER_SCE);
        Msr::new(STAR).write(star);
        Msr::new(LSTAR).write(k42_linux_syscall_first as *const () as u64);
        Msr::new(FMASK).write(FMASK_USER_MODE | RFLAGS_IF);
    }
}

/// If `frame` is a `syscall` that arrived at `k42_linux_syscall_first` in
/// user mode (the fetch of a supervisor page faulted there): point this
/// CPU's `syscall` at the personality's entry, resume the program there
/// as that `syscall` would have (`rcx`, `r11` and the stack as it left
/// them, interrupts on) and return true. Anything else: false.
pub fn take_user_mode_arrival(frame: &mut TrapFrame) -> bool {
    /// `#PF`, and its error code for a user-mode instruction fetch of a
    /// present supervisor page.
    const PAGE_FAULT: u64 = 14;
    const USER_FETCH: u64 = 1 << 2 | 1 << 4;
    if frame.vector != PAGE_FAULT
        || frame.error_code & USER_FETCH != USER_FETCH
        || frame.rip != k42_linux_syscall_first as *const () as u64
    {
        return false;
    }
    // SAFETY: as in `init_cpu`: on this CPU `syscall` stays in user mode,
    // where LSTAR is the personality's entry (a user page) and interrupts
    // must stay on.
    unsafe {
        Msr::new(LSTAR).write(k42_abi::linux::PERSONALITY_BASE);
        Msr::new(FMASK).write(FMASK_USER_MODE);
    }
    frame.rip = k42_abi::linux::PERSONALITY_BASE;
    frame.rflags |= RFLAGS_IF;
    true
}

/// Whether a `syscall` has reached the kernel in ring 0.
pub fn entered_ring0() -> bool {
    K42_SYSCALL_ENTERED_RING0.load(Ordering::Relaxed) != 0
}

/// Record this CPU's trap stack (TSS.rsp0) where the reflection finds it.
pub fn set_trap_stack(top: u64) {
    crate::percpu::current()
        .arch
        .trap_stack_top
        .store(top, Ordering::Relaxed);
}
