//! `_start`: where every vCPU enters the kernel.
//!
//! k42vmm starts each vCPU in 64-bit mode with paging on, interrupts off,
//! `rdi` = vCPU index, `rsi` = `BOOT_MAGIC` and `rsp` at the top of that
//! vCPU's boot stack (see `k42_abi::boot`). `_start` clears the frame
//! pointer and calls into Rust with the stack aligned as the SysV ABI
//! wants (16 bytes at the call).

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    cli
    cld
    xor ebp, ebp
    and rsp, -16
    call {entry}
2:  hlt
    jmp 2b
"#,
    entry = sym kernel_entry,
);

/// Rust side of `_start`.
extern "C" fn kernel_entry(cpu: u64, magic: u64) -> ! {
    crate::start(cpu as u32, magic)
}
