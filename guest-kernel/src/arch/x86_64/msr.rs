//! MSR access that survives a #GP: for probing MSRs that may not exist.
//!
//! `rdmsr`/`wrmsr` sit at known addresses; if one faults, the #GP handler
//! finds the address in [`fixup_for`]'s table and resumes at the matching
//! fixup, which returns failure instead of panicking.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text
    .global k42_rdmsr_safe
k42_rdmsr_safe:
    mov ecx, edi
k42_rdmsr_insn:
    rdmsr
    shl rdx, 32
    mov eax, eax
    or rax, rdx
    mov [rsi], rax
    xor eax, eax
    ret
k42_rdmsr_fixup:
    mov eax, 1
    ret

    .global k42_wrmsr_safe
k42_wrmsr_safe:
    mov ecx, edi
    mov rax, rsi
    mov rdx, rsi
    shr rdx, 32
k42_wrmsr_insn:
    wrmsr
    xor eax, eax
    ret
k42_wrmsr_fixup:
    mov eax, 1
    ret

    .section .rodata
    .balign 8
    .global k42_msr_fixups
k42_msr_fixups:
    .quad k42_rdmsr_insn, k42_rdmsr_fixup
    .quad k42_wrmsr_insn, k42_wrmsr_fixup
"#
);

unsafe extern "C" {
    fn k42_rdmsr_safe(msr: u32, out: *mut u64) -> u32;
    fn k42_wrmsr_safe(msr: u32, value: u64) -> u32;
    static k42_msr_fixups: [[u64; 2]; 2];
}

/// Read MSR `msr`; `None` if the CPU raised #GP.
pub fn read(msr: u32) -> Option<u64> {
    let mut v = 0;
    // SAFETY: reading an MSR has no memory effects; a #GP is caught.
    (unsafe { k42_rdmsr_safe(msr, &mut v) } == 0).then_some(v)
}

/// Write MSR `msr`; false if the CPU raised #GP.
///
/// # Safety
/// Writing an MSR that exists changes CPU behaviour; the caller must know
/// the write is harmless.
pub unsafe fn write(msr: u32, value: u64) -> bool {
    // SAFETY: the caller vouches for the write; a #GP is caught.
    unsafe { k42_wrmsr_safe(msr, value) == 0 }
}

/// Where to resume if the instruction at `rip` faults, if it is one of
/// the guarded MSR instructions.
pub fn fixup_for(rip: u64) -> Option<u64> {
    // SAFETY: a static table emitted above.
    let table = unsafe { &k42_msr_fixups };
    table.iter().find(|e| e[0] == rip).map(|e| e[1])
}
