//! The local APIC in x2APIC mode (registers are MSRs): enable, end of
//! interrupt, IPIs, and the TSC-deadline timer. x2APIC ids equal vCPU
//! indices (k42vmm's CPUID says so).

use ::x86_64::registers::model_specific::Msr;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const X2APIC_TPR: u32 = 0x808;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_SVR: u32 = 0x80f;
const X2APIC_ICR: u32 = 0x830;
const X2APIC_LVT_TIMER: u32 = 0x832;
const IA32_TSC_DEADLINE: u32 = 0x6e0;
const SVR_ENABLE: u64 = 1 << 8;
const LVT_TIMER_TSC_DEADLINE: u64 = 0b10 << 17;
const ICR_ALL_BUT_SELF: u64 = 0b11 << 18;

fn write(msr: u32, value: u64) {
    // SAFETY: x2APIC registers of this CPU; writes have no effect on
    // memory safety (they configure or signal interrupts).
    unsafe { Msr::new(msr).write(value) };
}

/// Switch this CPU's local APIC to x2APIC mode and enable it, with
/// `spurious` as the spurious vector and the timer in TSC-deadline mode
/// on `timer_vector`.
pub fn init_cpu(spurious: u8, timer_vector: u8) {
    // SAFETY: reading the APIC base MSR has no side effects.
    let base = unsafe { Msr::new(IA32_APIC_BASE).read() };
    write(IA32_APIC_BASE, base | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
    // Software-enable first: while the APIC is disabled, LVT writes keep
    // their mask bit set.
    write(X2APIC_SVR, SVR_ENABLE | spurious as u64);
    write(X2APIC_TPR, 0);
    write(
        X2APIC_LVT_TIMER,
        LVT_TIMER_TSC_DEADLINE | timer_vector as u64,
    );
}

/// Signal the end of the interrupt being handled.
#[inline]
pub fn eoi() {
    write(X2APIC_EOI, 0);
}

/// Send `vector` to the CPU with x2APIC id `cpu`.
pub fn send_ipi(cpu: u32, vector: u8) {
    write(X2APIC_ICR, ((cpu as u64) << 32) | vector as u64);
}

/// Send `vector` to every CPU but this one.
pub fn broadcast_ipi(vector: u8) {
    write(X2APIC_ICR, ICR_ALL_BUT_SELF | vector as u64);
}

/// Fire the timer interrupt when the TSC reaches `tsc` (0 disarms it).
pub fn set_timer_deadline(tsc: u64) {
    write(IA32_TSC_DEADLINE, tsc);
}
