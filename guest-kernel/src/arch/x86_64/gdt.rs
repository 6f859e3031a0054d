//! Per-CPU GDT and TSS.
//!
//! ```text
//! 0x08 kernel code (64-bit)   0x10 kernel data
//! 0x18 user code (32-bit)     0x20 user data     0x28 user code (64-bit)
//! 0x30 TSS (two slots)
//! ```
//!
//! The selectors match the VMM's boot GDT for 0x08/0x10; the user ones are
//! laid out as `sysret` would need them. Each CPU's TSS has IST 1 for
//! double faults and IST 2 for NMIs, and rsp0 (traps from user mode), each
//! on its own stack.

use core::cell::UnsafeCell;

use ::x86_64::VirtAddr;
use ::x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use ::x86_64::instructions::tables::load_tss;
use ::x86_64::registers::model_specific::Msr;
use ::x86_64::registers::segmentation::SegmentSelector;
use ::x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use ::x86_64::structures::tss::TaskStateSegment;
use k42_abi::MAX_VCPUS;

/// User code selector (64-bit, RPL 3).
pub const USER_CS: u64 = 0x28 | 3;
/// User data/stack selector (RPL 3).
pub const USER_DS: u64 = 0x20 | 3;

/// Index into the TSS IST array (the gate holds index + 1) for #DF.
pub const IST_DOUBLE_FAULT: u16 = 0;
/// IST slot for NMI.
pub const IST_NMI: u16 = 1;

const IST_STACK_SIZE: usize = 8192;
/// Stack for traps and system calls from user mode (TSS.rsp0).
const USER_TRAP_STACK_SIZE: usize = 16384;

/// One CPU's descriptor tables and exception stacks.
#[repr(C, align(64))]
struct CpuTables {
    gdt: GlobalDescriptorTable<8>,
    tss: TaskStateSegment,
}

#[repr(C, align(16))]
struct IstStacks {
    double_fault: [u8; IST_STACK_SIZE],
    nmi: [u8; IST_STACK_SIZE],
    user_trap: [u8; USER_TRAP_STACK_SIZE],
}

struct PerCpuTables(UnsafeCell<[CpuTables; MAX_VCPUS]>);
struct PerCpuStacks(UnsafeCell<[IstStacks; MAX_VCPUS]>);
// SAFETY: CPU i touches only element i, and only in `init_cpu`, before it
// loads the tables; afterwards the hardware reads them.
unsafe impl Sync for PerCpuTables {}
// SAFETY: element i is used only as CPU i's IST stacks, by the hardware.
unsafe impl Sync for PerCpuStacks {}

static TABLES: PerCpuTables = PerCpuTables(UnsafeCell::new(
    [const {
        CpuTables {
            gdt: GlobalDescriptorTable::empty(),
            tss: TaskStateSegment::new(),
        }
    }; MAX_VCPUS],
));
static IST_STACKS: PerCpuStacks = PerCpuStacks(UnsafeCell::new(
    [const {
        IstStacks {
            double_fault: [0; IST_STACK_SIZE],
            nmi: [0; IST_STACK_SIZE],
            user_trap: [0; USER_TRAP_STACK_SIZE],
        }
    }; MAX_VCPUS],
));

/// Build and load CPU `cpu`'s GDT and TSS, and reload the segment
/// registers. Must run once per CPU, on that CPU, before interrupts are
/// enabled. Clobbers the GS base (callers set per-CPU data afterwards).
/// Returns the top of the CPU's trap stack (TSS.rsp0).
pub fn init_cpu(cpu: usize) -> u64 {
    // SAFETY: see the Sync impls: this CPU is the only user of element
    // `cpu`, and it has not loaded these tables yet.
    let (tables, stacks): (&'static mut CpuTables, &'static mut IstStacks) =
        unsafe { (&mut (*TABLES.0.get())[cpu], &mut (*IST_STACKS.0.get())[cpu]) };
    let top = |s: &[u8; IST_STACK_SIZE]| VirtAddr::from_ptr(s.as_ptr_range().end);
    tables.tss.interrupt_stack_table[IST_DOUBLE_FAULT as usize] = top(&stacks.double_fault);
    tables.tss.interrupt_stack_table[IST_NMI as usize] = top(&stacks.nmi);
    let user_trap_top = VirtAddr::from_ptr(stacks.user_trap.as_ptr_range().end);
    tables.tss.privilege_stack_table[0] = user_trap_top;

    let gdt = &mut tables.gdt;
    let kcode = gdt.append(Descriptor::kernel_code_segment());
    let kdata = gdt.append(Descriptor::kernel_data_segment());
    // A 32-bit user code placeholder keeps the sysret layout.
    gdt.append(Descriptor::UserSegment(0x00cf_fa00_0000_ffff));
    gdt.append(Descriptor::user_data_segment());
    gdt.append(Descriptor::user_code_segment());
    // SAFETY: the TSS is a static that lives forever and is not moved.
    let tss = gdt.append(unsafe { Descriptor::tss_segment_unchecked(&raw const tables.tss) });
    debug_assert_eq!(kcode.0, k42_abi::layout::KERNEL_CS);
    debug_assert_eq!(kdata.0, k42_abi::layout::KERNEL_DS);

    // SAFETY: the GDT is 'static and complete; the selectors name its
    // kernel code and data entries and its TSS.
    unsafe {
        gdt.load_unsafe();
        CS::set_reg(kcode);
        SS::set_reg(kdata);
        DS::set_reg(kdata);
        ES::set_reg(kdata);
        FS::set_reg(SegmentSelector(0));
        GS::set_reg(SegmentSelector(0));
        load_tss(tss);
    }
    user_trap_top.as_u64()
}

/// `IA32_KERNEL_GS_BASE`: the GS base `swapgs` swaps in — in the
/// kernel (after the entry's `swapgs`), the user's.
const KERNEL_GS_BASE: u32 = 0xc000_0102;

/// Set the user GS base of the thread about to run (the Linux
/// personality's per-thread block). Called in the kernel, where the
/// entry stubs have swapped the user's GS base into
/// `IA32_KERNEL_GS_BASE`; their `swapgs` on the way out loads it.
pub fn set_user_gs_base(base: u64) {
    // SAFETY: IA32_KERNEL_GS_BASE holds the user's GS base while the
    // kernel runs (every entry from user mode swaps); the kernel's own
    // GS base (the per-CPU data) is untouched. A non-canonical base is
    // refused by the caller.
    unsafe { Msr::new(KERNEL_GS_BASE).write(base) };
}

/// `IA32_FS_BASE`.
const FS_BASE: u32 = 0xc000_0100;

/// Load the FS base of the thread about to run (Linux TLS).
pub fn set_fs_base(base: u64) {
    // SAFETY: IA32_FS_BASE only affects FS-relative accesses, which the
    // kernel never makes; a non-canonical base is refused by the caller.
    unsafe { Msr::new(FS_BASE).write(base) };
}
