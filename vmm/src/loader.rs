//! Puts a checked image into guest RAM and describes it to the kernel.
//!
//! Writes, in guest-physical memory (see `k42_abi::layout`):
//!
//! ```text
//! 0x1000  boot GDT (null, kernel code 0x08, kernel data 0x10)
//! 0x2000  PML4: [256] → direct map of all RAM, [511] → kernel image map
//! 0x3000  PDPT of the direct map       0x4000  PDPT of the kernel map
//! 0x5000  PD of the kernel map (first 1 GiB of RAM, 2 MiB pages)
//! 0x6000… PDs of the direct map, one per GiB of guest-physical space
//! 2 MiB   kernel ELF segments, then modules, then per-vCPU boot stacks
//! ```
//!
//! and builds the [`BootInfo`] the kernel fetches by hypercall; its free
//! RAM is one `Usable` region per guest node's range. Only the
//! pages that hold data are touched: stacks and free RAM stay untouched
//! (and so unbacked) until the guest uses them.

use std::io::Cursor;

use k42_abi::boot::{
    BOOT_MAGIC, BootInfo, BootModule, MAX_CMDLINE, MAX_MEM_REGIONS, MemRegion, MemRegionKind,
};
use k42_abi::layout::*;
use k42_image::{Image, ModuleData};
use linux_loader::loader::{KernelLoader, elf::Elf};
use vm_memory::GuestAddress;

use crate::error::VmmError;
use crate::memory::GuestRam;

const GDT_ADDR: u64 = BOOT_DATA_BASE;
const PML4_ADDR: u64 = 0x2000;
const PDPT_PHYS_ADDR: u64 = 0x3000;
const PDPT_KERNEL_ADDR: u64 = 0x4000;
const PD_KERNEL_ADDR: u64 = 0x5000;
const PD_PHYS_BASE: u64 = 0x6000;

/// Free RAM the kernel needs beyond what the image and stacks occupy
/// (heap, frame bitmaps, per-CPU structures).
pub const MIN_FREE_RAM: u64 = 16 << 20;

const PTE_PRESENT: u64 = 1;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_LARGE: u64 = 1 << 7;
const PTE_NX: u64 = 1 << 63;

/// The boot GDT: null, 64-bit kernel code, kernel data.
pub const BOOT_GDT: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

/// Where things landed: what the vCPUs need to start.
#[derive(Clone, Debug)]
pub struct BootLayout {
    /// Kernel entry (virtual).
    pub entry: u64,
    /// Guest-physical address of the PML4 (CR3).
    pub cr3: u64,
    /// Guest-virtual address and limit of the boot GDT.
    pub gdt_base: u64,
    pub gdt_limit: u16,
    /// Guest-physical base of the boot stacks.
    pub stacks_base: u64,
    /// The boot info the kernel will fetch (TSC frequency filled in later).
    pub boot_info: BootInfo,
}

impl BootLayout {
    /// Initial `rsp` of vCPU `i`: the top of its boot stack in the direct map.
    pub fn stack_top(&self, i: u32) -> u64 {
        phys_to_virt(self.stacks_base + (i as u64 + 1) * BOOT_STACK_SIZE)
    }
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Load `image` into `ram` for `vcpus` vCPUs with kernel command line
/// `cmdline`, and `extra` modules after the image's (what this run adds,
/// such as the Linux command of `k42vmm run IMAGE -- COMMAND`).
pub fn load(
    ram: &GuestRam,
    image: &Image,
    extra: &[ModuleData],
    vcpus: u32,
    cmdline: &str,
) -> Result<BootLayout, VmmError> {
    if cmdline.len() > MAX_CMDLINE {
        return Err(VmmError::CmdlineTooLong(cmdline.len(), MAX_CMDLINE));
    }
    let info = image.kernel_info;
    let kernel_end = align_up(info.load_end, PAGE_SIZE);
    let mut cursor = kernel_end;
    let modules: Vec<ModuleData> = image.modules().chain(extra.iter().copied()).collect();
    if modules.len() > k42_abi::boot::MAX_MODULES {
        return Err(VmmError::Load(format!(
            "{} modules, more than the {} the boot ABI carries",
            modules.len(),
            k42_abi::boot::MAX_MODULES
        )));
    }
    let mut module_places = Vec::new();
    for m in &modules {
        module_places.push(cursor);
        cursor = align_up(cursor + m.data.len() as u64, PAGE_SIZE);
    }
    let modules_end = cursor;
    let stacks_base = modules_end;
    let stacks_end = stacks_base + vcpus as u64 * BOOT_STACK_SIZE;
    let need = stacks_end + MIN_FREE_RAM;
    if ram.low_size() < need {
        let mib = |b: u64| b.div_ceil(1 << 20);
        return Err(VmmError::MemoryTooSmall {
            image: image.path.clone(),
            have_mib: ram.size() >> 20,
            // A size --memory accepts: a multiple of 2 MiB.
            need_mib: mib(need).next_multiple_of(2),
            why: format!(
                "kernel {} MiB, modules {} MiB, {} boot stacks {} MiB, {} MiB free for the kernel",
                mib(kernel_end),
                mib(modules_end - kernel_end),
                vcpus,
                mib(stacks_end - stacks_base),
                MIN_FREE_RAM >> 20
            ),
        });
    }
    let kernel_area_end = KERNEL_MAP_SIZE.min(ram.low_size());
    for addr in [info.load_start, info.load_end - 1] {
        if !(KERNEL_PHYS_BASE..kernel_area_end).contains(&addr) {
            return Err(VmmError::KernelLayout {
                image: image.path.clone(),
                addr,
                start: KERNEL_PHYS_BASE,
                end: kernel_area_end,
            });
        }
    }
    let entry_pa = info.entry.wrapping_sub(KERNEL_VIRT_BASE);
    if !(info.load_start..info.load_end).contains(&entry_pa) {
        return Err(VmmError::Load(format!(
            "the kernel entry {:#x} is not inside its image ({:#x}..{:#x} mapped at {KERNEL_VIRT_BASE:#x})",
            info.entry, info.load_start, info.load_end
        )));
    }

    Elf::load(
        ram.inner(),
        None,
        &mut Cursor::new(image.kernel()),
        Some(GuestAddress(KERNEL_PHYS_BASE)),
    )
    .map_err(|e| VmmError::Load(e.to_string()))?;
    let wr = |gpa: u64, data: &[u8]| {
        ram.write(gpa, data)
            .map_err(|b| VmmError::Load(format!("write of {} bytes at {:#x} failed", b.len, b.gpa)))
    };
    for (m, &at) in modules.iter().zip(&module_places) {
        wr(at, m.data)?;
    }
    let tables = write_boot_tables(ram)?;

    let mut bi = BootInfo::empty();
    bi.magic = BOOT_MAGIC;
    bi.abi_version = k42_abi::ABI_VERSION;
    bi.size = std::mem::size_of::<BootInfo>() as u32;
    bi.vcpus = vcpus;
    bi.mem_size = ram.size();
    bi.kernel_start = info.load_start;
    bi.kernel_end = kernel_end;
    bi.boot_stacks = stacks_base;
    let mut regions = vec![
        (
            BOOT_DATA_BASE,
            BOOT_DATA_END - BOOT_DATA_BASE,
            MemRegionKind::BootData,
        ),
        (
            info.load_start,
            kernel_end - info.load_start,
            MemRegionKind::Kernel,
        ),
    ];
    for ((m, &at), slot) in modules
        .iter()
        .zip(&module_places)
        .zip(bi.modules.iter_mut())
    {
        // Modules lie end to end: one region for all of them.
        let len = align_up(m.data.len() as u64, PAGE_SIZE);
        match regions.last_mut() {
            Some((s, l, MemRegionKind::Module)) if *s + *l == at => *l += len,
            _ => regions.push((at, len, MemRegionKind::Module)),
        }
        let mut name = [0u8; k42_abi::boot::MAX_MODULE_NAME];
        name[..m.name.len()].copy_from_slice(m.name.as_bytes());
        *slot = BootModule {
            start: at,
            len: m.data.len() as u64,
            name,
        };
    }
    bi.n_modules = modules.len() as u32;
    regions.push((
        stacks_base,
        stacks_end - stacks_base,
        MemRegionKind::BootStacks,
    ));
    // Free RAM: one region per guest node's range, less what the boot
    // data, kernel, modules and stacks take from the start of RAM.
    for r in ram.node_ranges() {
        let s = r.start.max(stacks_end);
        if r.start + r.len > s {
            regions.push((s, r.start + r.len - s, MemRegionKind::Usable));
        }
    }
    regions.retain(|r| r.1 > 0);
    if regions.len() > MAX_MEM_REGIONS {
        let nodes = ram.node_ranges().last().map_or(1, |r| r.node as usize + 1);
        return Err(VmmError::TooManyRegions {
            nodes,
            modules: modules.len(),
            regions: regions.len(),
            limit: MAX_MEM_REGIONS,
        });
    }
    for (slot, (start, len, kind)) in bi.regions.iter_mut().zip(&regions) {
        *slot = MemRegion {
            start: *start,
            len: *len,
            kind: *kind as u32,
            reserved: 0,
        };
    }
    bi.n_regions = regions.len() as u32;
    bi.cmdline[..cmdline.len()].copy_from_slice(cmdline.as_bytes());
    bi.cmdline_len = cmdline.len() as u32;

    Ok(BootLayout {
        entry: info.entry,
        stacks_base,
        boot_info: bi,
        ..tables
    })
}

/// Write the boot GDT and page tables, and return a layout that holds
/// their addresses (entry, stacks and boot info still to be filled in).
pub fn write_boot_tables(ram: &GuestRam) -> Result<BootLayout, VmmError> {
    write_page_tables(ram)?;
    let gdt: Vec<u8> = BOOT_GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    ram.write(GDT_ADDR, &gdt)
        .map_err(|_| VmmError::Memory("cannot write the boot GDT".into()))?;
    Ok(BootLayout {
        entry: 0,
        cr3: PML4_ADDR,
        gdt_base: phys_to_virt(GDT_ADDR),
        gdt_limit: (BOOT_GDT.len() * 8 - 1) as u16,
        stacks_base: 0,
        boot_info: BootInfo::empty(),
    })
}

/// Write the boot page tables: the direct map of all RAM and the kernel
/// image map, both with 2 MiB pages.
fn write_page_tables(ram: &GuestRam) -> Result<(), VmmError> {
    let mut pml4 = [0u64; 512];
    pml4[((PHYS_MAP_BASE >> 39) & 511) as usize] = PDPT_PHYS_ADDR | PTE_PRESENT | PTE_WRITABLE;
    pml4[((KERNEL_VIRT_BASE >> 39) & 511) as usize] = PDPT_KERNEL_ADDR | PTE_PRESENT | PTE_WRITABLE;
    let mut pdpt_kernel = [0u64; 512];
    pdpt_kernel[((KERNEL_VIRT_BASE >> 30) & 511) as usize] =
        PD_KERNEL_ADDR | PTE_PRESENT | PTE_WRITABLE;
    let mut pd_kernel = [0u64; 512];
    for (i, e) in pd_kernel.iter_mut().enumerate() {
        let pa = i as u64 * LARGE_PAGE_SIZE;
        if ram.contains(pa, LARGE_PAGE_SIZE) {
            *e = pa | PTE_PRESENT | PTE_WRITABLE | PTE_LARGE;
        }
    }
    let mut pdpt_phys = [0u64; 512];
    let ranges = ram.ranges();
    let top = ranges.iter().map(|&(s, l)| s + l).max().unwrap_or(0);
    let gibs = top.div_ceil(1 << 30);
    let pd_room = (BOOT_DATA_END - PD_PHYS_BASE) / PAGE_SIZE;
    if gibs > pd_room.min(512) {
        return Err(VmmError::Memory(format!(
            "{gibs} GiB of guest-physical space is more than the boot page tables map"
        )));
    }
    let put = |gpa: u64, table: &[u64; 512]| {
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
        ram.write(gpa, &bytes)
            .map_err(|_| VmmError::Memory(format!("cannot write a page table at {gpa:#x}")))
    };
    for g in 0..gibs {
        let mut pd = [0u64; 512];
        let mut any = false;
        for (j, e) in pd.iter_mut().enumerate() {
            let pa = (g << 30) + j as u64 * LARGE_PAGE_SIZE;
            if ram.contains(pa, LARGE_PAGE_SIZE) {
                *e = pa | PTE_PRESENT | PTE_WRITABLE | PTE_LARGE | PTE_NX;
                any = true;
            }
        }
        if any {
            let at = PD_PHYS_BASE + g * PAGE_SIZE;
            put(at, &pd)?;
            pdpt_phys[g as usize] = at | PTE_PRESENT | PTE_WRITABLE;
        }
    }
    put(PML4_ADDR, &pml4)?;
    put(PDPT_PHYS_ADDR, &pdpt_phys)?;
    put(PDPT_KERNEL_ADDR, &pdpt_kernel)?;
    put(PD_KERNEL_ADDR, &pd_kernel)?;
    Ok(())
}
