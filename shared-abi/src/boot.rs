//! The boot-info record and the state each vCPU starts in.
//!
//! Every vCPU enters the kernel at the ELF entry point in 64-bit mode with
//! paging on (the VMM's boot page tables, see [`crate::layout`]), interrupts
//! off, and:
//!
//! | register | value                                                  |
//! |----------|--------------------------------------------------------|
//! | `rdi`    | the vCPU index (0 is the boot CPU)                      |
//! | `rsi`    | [`BOOT_MAGIC`]                                          |
//! | `rsp`    | top of this vCPU's boot stack (direct-map address)      |
//!
//! vCPU 0 starts first. The others (application processors) start, all at
//! once, when vCPU 0 makes the `StartAps` hypercall. The kernel fetches a
//! [`BootInfo`] with the `BootInfo` hypercall.

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Value of `rsi` at kernel entry, and the first field of [`BootInfo`].
pub const BOOT_MAGIC: u64 = 0x4b34_3242_4f4f_5431; // "K42BOOT1"

/// Most memory regions a [`BootInfo`] can describe.
pub const MAX_MEM_REGIONS: usize = 32;
/// Most boot modules an image can carry.
pub const MAX_MODULES: usize = 64;
/// Longest kernel command line, in bytes.
pub const MAX_CMDLINE: usize = 2048;
/// Longest boot-module name, in bytes.
pub const MAX_MODULE_NAME: usize = 48;

/// Boot modules named `FS_PREFIX` + `PATH` (`fs/etc/motd`) are files the
/// file server creates at `/PATH` when it starts. Module names are at most
/// [`MAX_MODULE_NAME`] bytes, so such a file's path is at most 46 bytes.
pub const FS_PREFIX: &str = "fs/";
/// The boot module holding the image's symbolic links, for the file
/// server: UTF-8 lines `PATH\tTARGET\n`, one per link, sorted by `PATH`.
/// `PATH` is absolute with no empty, `.` or `..` names (as file-server
/// paths, [`crate::fs::MAX_PATH`] and [`crate::fs::MAX_NAME`]); `TARGET`
/// is what the link holds, as given (`busybox`, `/bin/busybox`,
/// `../lib/x`), non-empty and at most [`crate::fs::MAX_PATH`] bytes.
/// Neither holds a tab, newline or NUL. No path appears twice, none is
/// also an `fs/` module's, and none lies under another link or file. An
/// image without links has no such module. [`links`] reads it.
pub const LINKS_MODULE: &str = "fs.links";

/// The links of a [`LINKS_MODULE`]'s contents, as `(path, target)` in
/// order; `Err(line number)` (from 1) for a line without a tab or with an
/// empty field. The image builder has checked the rest.
pub fn links(text: &str) -> impl Iterator<Item = Result<(&str, &str), usize>> {
    text.lines().enumerate().map(|(i, line)| {
        line.split_once('\t')
            .filter(|(p, t)| !p.is_empty() && !t.is_empty() && !t.contains('\t'))
            .ok_or(i + 1)
    })
}

/// What a range of guest-physical memory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MemRegionKind {
    /// Free RAM the kernel may allocate.
    Usable = 1,
    /// The loaded kernel image (text, data and bss).
    Kernel = 2,
    /// VMM-written boot data: page tables, GDT.
    BootData = 3,
    /// A boot module's contents.
    Module = 4,
    /// The vCPUs' boot stacks.
    BootStacks = 5,
}

impl MemRegionKind {
    /// Decode a raw kind, `None` for values this ABI version does not know.
    pub fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Usable,
            2 => Self::Kernel,
            3 => Self::BootData,
            4 => Self::Module,
            5 => Self::BootStacks,
            _ => return None,
        })
    }
}

/// One range of guest-physical memory.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct MemRegion {
    /// First byte (page-aligned).
    pub start: u64,
    /// Length in bytes (a whole number of pages).
    pub len: u64,
    /// A [`MemRegionKind`] value.
    pub kind: u32,
    /// Zero.
    pub reserved: u32,
}

/// A file from the image, loaded into guest memory for the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootModule {
    /// Guest-physical address of the contents (page-aligned).
    pub start: u64,
    /// Length of the contents in bytes.
    pub len: u64,
    /// Name from the image manifest, NUL-padded UTF-8.
    pub name: [u8; MAX_MODULE_NAME],
}

impl Default for BootModule {
    fn default() -> Self {
        Self {
            start: 0,
            len: 0,
            name: [0; MAX_MODULE_NAME],
        }
    }
}

impl BootModule {
    /// The module's name, or `None` when it is not UTF-8.
    pub fn name(&self) -> Option<&str> {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(MAX_MODULE_NAME);
        core::str::from_utf8(&self.name[..end]).ok()
    }
}

/// Everything the kernel learns from the VMM at boot.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootInfo {
    /// [`BOOT_MAGIC`].
    pub magic: u64,
    /// [`crate::ABI_VERSION`] of the VMM that wrote this.
    pub abi_version: u32,
    /// `size_of::<BootInfo>()` as the VMM sees it.
    pub size: u32,
    /// Number of vCPUs (1..=[`crate::MAX_VCPUS`]); vCPU ids are `0..vcpus`.
    pub vcpus: u32,
    /// Number of valid entries in `regions`.
    pub n_regions: u32,
    /// Guest TSC frequency in kHz, as the VMM read it from KVM.
    pub tsc_khz: u64,
    /// The host's wall clock (CLOCK_REALTIME, ns since 1970) when the VMM
    /// answered the boot-info hypercall: the kernel pairs it with its TSC
    /// then to keep a wall clock.
    pub realtime_ns: u64,
    /// 1 when k42vmm forwards its stdin as console input (a `run` with
    /// `-- COMMAND`; see [`crate::hypercall::HypercallNr::ConsoleRead`]),
    /// 0 otherwise.
    pub console_input: u32,
    /// 1 when that input is a terminal (k42vmm put it in raw mode: the
    /// guest echoes and edits lines itself), 0 when it is a pipe or file.
    pub console_is_terminal: u32,
    /// That terminal's size when k42vmm started, rows and columns (0 when
    /// unknown: the guest assumes 24x80).
    pub console_rows: u32,
    /// See `console_rows`.
    pub console_cols: u32,
    /// Total guest RAM in bytes (not where it ends: see
    /// [`BootInfo::ram_end`]).
    pub mem_size: u64,
    /// Guest-physical range of the kernel image (start, end exclusive).
    pub kernel_start: u64,
    /// End of the kernel image, exclusive.
    pub kernel_end: u64,
    /// Guest-physical base of the boot stacks; vCPU i's stack is
    /// `[base + i * BOOT_STACK_SIZE, base + (i + 1) * BOOT_STACK_SIZE)`.
    pub boot_stacks: u64,
    /// Number of valid entries in `modules`.
    pub n_modules: u32,
    /// Length of `cmdline` in bytes.
    pub cmdline_len: u32,
    /// Memory map, sorted by address, non-overlapping.
    pub regions: [MemRegion; MAX_MEM_REGIONS],
    /// Boot modules from the image.
    pub modules: [BootModule; MAX_MODULES],
    /// Kernel command line (UTF-8, not NUL-terminated).
    pub cmdline: [u8; MAX_CMDLINE],
}

const _: () = assert!(core::mem::size_of::<MemRegion>() == 24);
const _: () = assert!(core::mem::size_of::<BootModule>() == 64);
const _: () = assert!(
    core::mem::size_of::<BootInfo>() == 96 + 24 * MAX_MEM_REGIONS + 64 * MAX_MODULES + MAX_CMDLINE
);

impl BootInfo {
    /// An all-zero record, to be filled in.
    pub fn empty() -> Self {
        Self::new_zeroed()
    }

    /// The valid part of the memory map.
    pub fn regions(&self) -> &[MemRegion] {
        &self.regions[..(self.n_regions as usize).min(MAX_MEM_REGIONS)]
    }

    /// End (exclusive) of guest RAM: the highest end among the memory
    /// map's regions. No address at or past it is RAM; below it, RAM has
    /// holes (the 32-bit MMIO hole from [`crate::layout::LOW_RAM_END`] to
    /// [`crate::layout::HIGH_RAM_BASE`] when there is more than 3 GiB), so
    /// this is not [`Self::mem_size`].
    pub fn ram_end(&self) -> u64 {
        self.regions()
            .iter()
            .map(|r| r.start.saturating_add(r.len))
            .max()
            .unwrap_or(0)
    }

    /// The valid boot modules.
    pub fn modules(&self) -> &[BootModule] {
        &self.modules[..(self.n_modules as usize).min(MAX_MODULES)]
    }

    /// The command line, or `None` when it is not UTF-8.
    pub fn cmdline(&self) -> Option<&str> {
        let len = (self.cmdline_len as usize).min(MAX_CMDLINE);
        core::str::from_utf8(&self.cmdline[..len]).ok()
    }

    /// Check the header fields a kernel must trust before anything else.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.magic != BOOT_MAGIC {
            return Err("boot info has a bad magic number");
        }
        if self.abi_version != crate::ABI_VERSION {
            return Err("boot info comes from a VMM with another ABI version");
        }
        if self.size as usize != core::mem::size_of::<Self>() {
            return Err("boot info has an unexpected size");
        }
        if self.vcpus == 0 || self.vcpus as usize > crate::MAX_VCPUS {
            return Err("boot info has an impossible vCPU count");
        }
        if self.n_regions as usize > MAX_MEM_REGIONS
            || self.n_modules as usize > MAX_MODULES
            || self.cmdline_len as usize > MAX_CMDLINE
        {
            return Err("boot info has a count beyond its arrays");
        }
        if self.tsc_khz == 0 {
            return Err("boot info has no TSC frequency");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_tab_separated_lines() {
        let mut v = links("/bin/sh\tbusybox\n/usr/bin/env\t/bin/busybox\n");
        assert_eq!(v.next(), Some(Ok(("/bin/sh", "busybox"))));
        assert_eq!(v.next(), Some(Ok(("/usr/bin/env", "/bin/busybox"))));
        assert_eq!(v.next(), None);
        assert_eq!(links("").count(), 0);
        let mut bad = links("/a\tb\n/c d\n\tx\n/e\t\n/f\tg\th\n");
        assert_eq!(bad.next(), Some(Ok(("/a", "b"))));
        for line in 2..=5 {
            assert_eq!(bad.next(), Some(Err(line)));
        }
        assert_eq!(bad.next(), None);
    }

    #[test]
    fn module_name_stops_at_nul() {
        let mut m = BootModule::default();
        m.name[..5].copy_from_slice(b"hello");
        assert_eq!(m.name(), Some("hello"));
    }

    #[test]
    fn ram_end_is_the_highest_region_end() {
        use crate::layout::{HIGH_RAM_BASE, LOW_RAM_END};
        let mut bi = BootInfo::empty();
        assert_eq!(bi.ram_end(), 0);
        let regions = [
            (0x1000, 0x1f_f000, MemRegionKind::BootData),
            (0x20_0000, 0x40_0000, MemRegionKind::Kernel),
            (0x60_0000, LOW_RAM_END - 0x60_0000, MemRegionKind::Usable),
            (HIGH_RAM_BASE, 2 << 30, MemRegionKind::Usable),
        ];
        for (slot, &(start, len, kind)) in bi.regions.iter_mut().zip(&regions) {
            *slot = MemRegion {
                start,
                len,
                kind: kind as u32,
                reserved: 0,
            };
        }
        // Only the valid entries count.
        bi.n_regions = 3;
        assert_eq!(bi.ram_end(), LOW_RAM_END);
        bi.n_regions = 4;
        // 5 GiB of RAM ends at 6 GiB, not at mem_size.
        bi.mem_size = 5 << 30;
        assert_eq!(bi.ram_end(), 6 << 30);
        assert_eq!(bi.ram_end(), crate::layout::ram_end(bi.mem_size));
    }

    #[test]
    fn validate_rejects_bad_headers() {
        let mut bi = BootInfo::empty();
        assert!(bi.validate().is_err());
        bi.magic = BOOT_MAGIC;
        bi.abi_version = crate::ABI_VERSION;
        bi.size = core::mem::size_of::<BootInfo>() as u32;
        bi.vcpus = 4;
        bi.tsc_khz = 1_000_000;
        assert!(bi.validate().is_ok());
        bi.vcpus = 256;
        assert!(bi.validate().is_err());
        bi.vcpus = 4;
        bi.n_regions = 33;
        assert!(bi.validate().is_err());
    }
}
