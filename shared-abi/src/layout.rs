//! Memory layout shared by the VMM (which builds it) and the kernel (which
//! relies on it until it installs its own page tables).
//!
//! Guest-physical memory:
//!
//! ```text
//! 0x0000_0000  null page, never mapped for use
//! 0x0000_1000  BOOT_DATA: boot GDT, boot page tables (VMM-written)
//! 0x0020_0000  KERNEL_PHYS_BASE: kernel image (ELF load address, LMA)
//!   ...        boot modules, page-aligned, after the kernel
//!   ...        per-vCPU boot stacks
//!   ...        free RAM (BootInfo regions of kind Usable)
//! 0xC000_0000  LOW_RAM_END: 32-bit MMIO hole (IOAPIC, LAPIC) up to 4 GiB
//! 0x1_0000_0000 the rest of RAM when the VM has more than 3 GiB
//! ```
//!
//! Guest-virtual memory (set up by the VMM's boot page tables):
//!
//! ```text
//! PHYS_MAP_BASE   + pa : every byte of RAM (2 MiB pages, writable, NX)
//! KERNEL_VIRT_BASE + pa: the first 1 GiB of RAM, holding the kernel image
//! ```

/// Size of a small page.
pub const PAGE_SIZE: u64 = 4096;
/// Size of a large (2 MiB) page, the unit of the boot mappings.
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;

/// Start of the VMM-written boot data (GDT, page tables).
pub const BOOT_DATA_BASE: u64 = 0x1000;
/// End (exclusive) of the boot data area.
pub const BOOT_DATA_END: u64 = KERNEL_PHYS_BASE;
/// Where the kernel image is loaded (its ELF physical address, LMA).
pub const KERNEL_PHYS_BASE: u64 = 0x20_0000;
/// Top of RAM below the 32-bit MMIO hole.
pub const LOW_RAM_END: u64 = 0xC000_0000;
/// Start of RAM above the 32-bit MMIO hole.
pub const HIGH_RAM_BASE: u64 = 0x1_0000_0000;

/// Most guest RAM, in GiB, the ABI provides for (k42vmm's `--memory`
/// limit): every RAM address, [`ram_end`]`(MAX_RAM)` included, fits a
/// hypercall port value (see [`crate::hypercall`]).
pub const MAX_RAM_GIB: u64 = 256;
/// Most guest RAM in bytes.
pub const MAX_RAM: u64 = MAX_RAM_GIB << 30;
/// End (exclusive) of guest-physical RAM with the most RAM.
pub const MAX_RAM_END: u64 = ram_end(MAX_RAM);

/// End (exclusive) of guest-physical RAM for `size` bytes of RAM: RAM
/// beyond [`LOW_RAM_END`] continues at [`HIGH_RAM_BASE`].
pub const fn ram_end(size: u64) -> u64 {
    if size <= LOW_RAM_END {
        size
    } else {
        HIGH_RAM_BASE + (size - LOW_RAM_END)
    }
}

/// Virtual base of the direct map of all guest RAM.
pub const PHYS_MAP_BASE: u64 = 0xffff_8000_0000_0000;
/// Virtual base of the kernel image mapping (`KERNEL_VIRT_BASE + pa`).
pub const KERNEL_VIRT_BASE: u64 = 0xffff_ffff_8000_0000;
/// Size of the kernel image mapping.
pub const KERNEL_MAP_SIZE: u64 = 1 << 30;

/// Size of each vCPU's boot stack (the CPU's idle stack afterwards).
pub const BOOT_STACK_SIZE: u64 = 32 * 1024;

/// GDT selectors of the boot GDT the VMM writes; the kernel's own GDT keeps
/// the same values so that nothing changes when it takes over.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data/stack selector.
pub const KERNEL_DS: u16 = 0x10;

/// Guest-virtual address of guest-physical `pa` in the direct map.
pub const fn phys_to_virt(pa: u64) -> u64 {
    PHYS_MAP_BASE + pa
}

/// Guest-physical address of a kernel-image virtual address.
pub const fn kernel_virt_to_phys(va: u64) -> u64 {
    va - KERNEL_VIRT_BASE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_end_skips_the_hole() {
        assert_eq!(ram_end(512 << 20), 512 << 20);
        assert_eq!(ram_end(LOW_RAM_END), LOW_RAM_END);
        assert_eq!(ram_end(4 << 30), HIGH_RAM_BASE + (1 << 30));
        assert_eq!(MAX_RAM_END, 257 << 30);
    }
}
