//! The platform interface: the only CPU operations portable kernel code
//! may use. A second implementation (for instance a PVM guest platform)
//! would replace this file's bodies, not its names.

use core::arch::asm;

use k42_abi::layout::{KERNEL_VIRT_BASE, PHYS_MAP_BASE};

pub use super::gdt::{USER_CS, USER_DS, set_fs_base, set_user_gs_base};
pub use super::hypercall::{backoff, hypercall};
pub use super::interrupts::{
    TrapFrame, UserTraps, VECTOR_INVALID_OPCODE, VECTOR_TIMER, VECTOR_WAKEUP, exception_name,
    set_handler, set_user_traps,
};
pub use super::linux_syscall::{
    entered_ring0 as syscall_entered_ring0, take_user_mode_arrival as take_user_mode_syscall,
};
pub use super::serial::write_str as serial_write;
pub use super::usermode::{ArchPerCpu, FpuState, enter_thread, enter_user, return_to_kernel};

use k42_abi::trace::ev;

/// Send `vector` to CPU `cpu`.
#[inline]
pub fn send_ipi(cpu: u32, vector: u8) {
    crate::trace::log(ev::ipi::send(cpu as u64, vector as u64));
    super::apic::send_ipi(cpu, vector);
}

/// Send `vector` to every CPU but this one.
#[inline]
pub fn broadcast_ipi(vector: u8) {
    crate::trace::log(ev::ipi::broadcast(vector as u64));
    super::apic::broadcast_ipi(vector);
}

/// Fire this CPU's timer interrupt when the TSC reaches `tsc` (0
/// disarms it).
#[inline]
pub fn set_timer_deadline(tsc: u64) {
    crate::trace::log(ev::timer::arm(tsc));
    crate::percpu::current()
        .timer_deadline
        .store(tsc, core::sync::atomic::Ordering::Relaxed);
    super::apic::set_timer_deadline(tsc);
}

/// Whether maskable interrupts are enabled on this CPU.
#[inline]
pub fn interrupts_enabled() -> bool {
    ::x86_64::instructions::interrupts::are_enabled()
}

/// Mask interrupts on this CPU.
#[inline]
pub fn disable_interrupts() {
    ::x86_64::instructions::interrupts::disable();
}

/// Unmask interrupts on this CPU.
#[inline]
pub fn enable_interrupts() {
    ::x86_64::instructions::interrupts::enable();
}

/// Interrupts masked until this guard drops, then restored to their
/// previous state.
pub struct IrqGuard {
    was_enabled: bool,
}

/// Mask interrupts and remember whether they were enabled.
#[inline]
pub fn irq_save() -> IrqGuard {
    let was_enabled = interrupts_enabled();
    if was_enabled {
        disable_interrupts();
    }
    IrqGuard { was_enabled }
}

impl IrqGuard {
    /// Whether interrupts were enabled before this guard masked them.
    pub fn was_enabled(&self) -> bool {
        self.was_enabled
    }
}

impl Drop for IrqGuard {
    #[inline]
    fn drop(&mut self) {
        if self.was_enabled {
            enable_interrupts();
        }
    }
}

/// Enable interrupts and halt until one arrives, atomically: `sti` holds
/// interrupts off for one more instruction, so an interrupt that became
/// pending after the caller's last check (made with interrupts masked)
/// still ends the `hlt`. Returns with interrupts enabled.
///
/// Checked on KVM-PVM's emulated ring 0: an instrumented build counted
/// interrupts taken between the `sti` and the `hlt` over thousands of
/// IPI wakeups and saw none, so the emulator honours the shadow.
#[inline]
pub fn enable_and_halt() {
    ::x86_64::instructions::interrupts::enable_and_hlt();
}

/// Stop this CPU for good (interrupts masked).
pub fn halt_forever() -> ! {
    loop {
        disable_interrupts();
        ::x86_64::instructions::hlt();
    }
}

/// Hint that this CPU is spinning.
#[inline]
pub fn cpu_relax() {
    core::hint::spin_loop();
}

/// The time-stamp counter.
#[inline]
pub fn read_tsc() -> u64 {
    // SAFETY: rdtsc has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Result of a CPUID query.
pub type CpuidResult = core::arch::x86_64::CpuidResult;

/// Execute CPUID for `leaf`/`subleaf`.
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, subleaf)
}

/// Physical address of the page tables this CPU uses now.
pub fn current_page_table() -> u64 {
    ::x86_64::registers::control::Cr3::read_raw()
        .0
        .start_address()
        .as_u64()
}

/// Switch to the page tables rooted at physical address `root`.
pub unsafe fn load_page_table(root: u64) {
    // SAFETY: the caller guarantees the new tables map everything in use.
    unsafe { asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) };
}

/// Flush all non-global TLB entries of this CPU.
#[allow(
    dead_code,
    reason = "platform interface: used once the kernel manages address spaces"
)]
pub fn flush_tlb() {
    ::x86_64::instructions::tlb::flush_all();
}

/// Flush the TLB entry for one virtual address on this CPU.
#[allow(
    dead_code,
    reason = "platform interface: used once the kernel manages address spaces"
)]
pub fn flush_tlb_page(va: u64) {
    ::x86_64::instructions::tlb::flush(::x86_64::VirtAddr::new(va));
}

/// Guest-physical address of a kernel virtual address (kernel image or
/// direct map); `None` for any other address.
#[inline]
pub fn virt_to_phys(va: u64) -> Option<u64> {
    if va >= KERNEL_VIRT_BASE {
        Some(va - KERNEL_VIRT_BASE)
    } else if va >= PHYS_MAP_BASE {
        Some(va - PHYS_MAP_BASE)
    } else {
        None
    }
}

/// Direct-map virtual address of guest-physical `pa`.
#[inline]
pub fn phys_to_virt(pa: u64) -> u64 {
    k42_abi::layout::phys_to_virt(pa)
}

/// The CR2 register: the address of the last page fault.
pub fn fault_address() -> u64 {
    ::x86_64::registers::control::Cr2::read_raw()
}
