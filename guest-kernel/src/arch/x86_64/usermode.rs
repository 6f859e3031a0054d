//! Running user-mode code: entering it and getting back.
//!
//! The kernel runs a user program like a function call that returns the
//! program's exit status:
//!
//! ```text
//! enter_user(entry, rsp, args) ──iretq──► user code ──syscall site──► system call
//!        ▲                                   │  ▲                    │ (trap
//!        │                                   │  └──────iretq─────────┘  stack)
//!        └──── return_to_kernel(status) ◄────┘ exit or fault
//! ```
//!
//! `enter_user` saves the callee-saved registers and flags on the current
//! kernel stack and records that stack pointer in per-CPU data;
//! `return_to_kernel` (from the exit system call or a user fault, on the
//! trap stack) switches back to it and returns from `enter_user`. Traps
//! and system calls from user mode run on the CPU's trap stack (TSS
//! rsp0), so the saved frame is never overwritten. GS: in the kernel the
//! GS base is the per-CPU data; the entry stubs `swapgs` on every
//! transition to and from user mode.
//!
//! System calls trap through #UD at a marked site (`k42_abi::syscall`):
//! on KVM-PVM hosts, with the kernel running emulated, neither `syscall`
//! nor `int n` from (native) user mode reaches the kernel, but exceptions
//! do.

use core::arch::global_asm;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};

use super::gdt::{USER_CS, USER_DS};
use super::interrupts::TrapFrame;
use crate::percpu::PerCpu;

/// Per-CPU state the entry paths reach through GS.
#[repr(C)]
pub struct ArchPerCpu {
    /// `enter_user`'s saved kernel stack pointer; 0 when not in user mode.
    pub kernel_ctx_rsp: AtomicU64,
    /// The program's stack pointer while the `syscall` reflection
    /// (`linux_syscall`) switches stacks.
    pub syscall_scratch: AtomicU64,
    /// The top of this CPU's trap stack (TSS.rsp0), for the reflection.
    pub trap_stack_top: AtomicU64,
}

impl ArchPerCpu {
    pub const fn new() -> Self {
        Self {
            kernel_ctx_rsp: AtomicU64::new(0),
            syscall_scratch: AtomicU64::new(0),
            trap_stack_top: AtomicU64::new(0),
        }
    }
}

const OFF_CTX_RSP: usize = offset_of!(PerCpu, arch) + offset_of!(ArchPerCpu, kernel_ctx_rsp);

global_asm!(
    r#"
    .section .text
    // enter_user's and enter_thread's start: save the callee-saved
    // registers and flags on this stack and remember it (gs:ctx).
    .macro K42_SAVE_KERNEL_CONTEXT
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    pushfq
    cli
    mov gs:[{ctx}], rsp
    .endm

    .global k42_enter_user
k42_enter_user:
    K42_SAVE_KERNEL_CONTEXT
    push {user_ds}
    push rsi
    push 0x202
    push {user_cs}
    push rdi
    mov rdi, [rdx]
    mov rsi, [rdx + 8]
    mov rcx, [rdx + 24]
    mov rdx, [rdx + 16]
    xor eax, eax
    xor ebx, ebx
    xor ebp, ebp
    xor r8d, r8d
    xor r9d, r9d
    xor r10d, r10d
    xor r11d, r11d
    xor r12d, r12d
    xor r13d, r13d
    xor r14d, r14d
    xor r15d, r15d
    swapgs
    iretq

    // Resume the user frame at rdi through the trap stubs' own return
    // path (restore every register, swapgs, iretq).
    .global k42_enter_thread
k42_enter_thread:
    K42_SAVE_KERNEL_CONTEXT
    mov rsp, rdi
    jmp k42_isr_return
    .purgem K42_SAVE_KERNEL_CONTEXT

    .global k42_return_to_kernel
k42_return_to_kernel:
    mov rax, rdi
    mov rsp, gs:[{ctx}]
    mov qword ptr gs:[{ctx}], 0
    popfq
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
"#,
    ctx = const OFF_CTX_RSP,
    user_cs = const USER_CS,
    user_ds = const USER_DS,
);

unsafe extern "C" {
    fn k42_enter_user(entry: u64, rsp: u64, args: *const [u64; 4]) -> u64;
    fn k42_return_to_kernel(status: u64) -> !;
    fn k42_enter_thread(frame: *const TrapFrame) -> u64;
}

/// Resume the user thread whose registers are `frame`, in the address
/// space already loaded, until this CPU calls [`return_to_kernel`];
/// returns the status given there. The scheduler's first entry to user
/// mode on a CPU; later switches rewrite the trap frame instead.
///
/// Whatever `frame` holds, the CPU enters user mode: CS and SS are set to
/// the user selectors and RFLAGS to user-settable flags with interrupts
/// on. User code then reaches only user pages: every page table this
/// kernel loads maps kernel memory supervisor-only (k42vmm's boot tables
/// and `mm::paging`'s address spaces alike).
pub fn enter_thread(frame: &TrapFrame) -> u64 {
    /// CF, PF, AF, ZF, SF, DF, OF: the flags user code may set.
    const USER_FLAGS: u64 = 0xcd5;
    let mut f = *frame;
    f.cs = USER_CS;
    f.ss = USER_DS;
    f.rflags = (f.rflags & USER_FLAGS) | 0x202;
    // SAFETY: `f` is a user-mode frame (above) that lives on this stack
    // until the `iretq`; see the module docs for the entry and exit.
    unsafe { k42_enter_thread(&f) }
}

/// A thread's x87/SSE state, as `fxsave` writes it.
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FpuState(pub [u8; 512]);

impl FpuState {
    /// The state after `fninit` with the default MXCSR (all exceptions
    /// masked): what a new thread starts with.
    pub fn initial() -> Self {
        let mut s = [0u8; 512];
        s[0..2].copy_from_slice(&0x037fu16.to_le_bytes()); // FCW
        s[24..28].copy_from_slice(&0x1f80u32.to_le_bytes()); // MXCSR
        Self(s)
    }

    /// Save this CPU's x87/SSE registers here.
    pub fn save(&mut self) {
        // SAFETY: fxsave64 writes 512 bytes to a 16-byte-aligned buffer;
        // CR4.OSFXSR is set by k42vmm.
        unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack)) };
    }

    /// Load this CPU's x87/SSE registers from here.
    pub fn restore(&self) {
        // SAFETY: the buffer holds a state written by fxsave64 or
        // `initial` (reserved MXCSR bits clear), 16-byte aligned.
        unsafe { core::arch::asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack)) };
    }
}

/// Run user code at `entry` with stack `rsp` and `args` in rdi, rsi, rdx,
/// rcx, in the address space already loaded, until it calls
/// [`return_to_kernel`] (exit or fault); returns the status given there.
///
/// # Safety
/// The current page tables must map `entry` and the stack for user mode,
/// and nothing else the user must not touch.
pub unsafe fn enter_user(entry: u64, rsp: u64, args: [u64; 4]) -> u64 {
    // SAFETY: see the module docs; the caller vouches for the mappings.
    unsafe { k42_enter_user(entry, rsp, &args) }
}

/// Leave user mode for good and resume the kernel after its
/// `enter_user` call with `status`. Only valid while this CPU is running
/// user code (from a system call or a trap taken in user mode).
pub fn return_to_kernel(status: u64) -> ! {
    let me = crate::percpu::current();
    assert!(
        me.arch.kernel_ctx_rsp.load(Ordering::Relaxed) != 0,
        "return_to_kernel outside user mode"
    );
    // SAFETY: the saved context is live: enter_user has not returned.
    unsafe { k42_return_to_kernel(status) }
}
