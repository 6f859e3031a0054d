//! Interrupt and exception entry: one IDT shared by all CPUs, assembly
//! stubs that save a [`TrapFrame`] and call [`trap_dispatch`], exception
//! reports, and a table of handlers that portable code registers.
//!
//! Vectors:
//!
//! ```text
//! 0..=21     exceptions: reported with vector, error code, RIP, CR2, CPU,
//!            then a kernel panic (hypercall → k42vmm exit 101); the
//!            reserved vectors have no gate, so one would arrive as a #NP
//!            naming it (each gate costs boot time when emulated)
//! 0x30       TIMER     the TSC-deadline timer
//! 0x31       WAKEUP    "look at your mailbox" IPI
//! 0x40..0x47 dynamic   registered at run time (set_handler)
//! 0xff       SPURIOUS  ignored, no EOI
//! ```
//!
//! #DF runs on IST 1 and NMI on IST 2 (see `gdt`), so a blown kernel stack
//! still produces a report. Traps from user mode arrive on the CPU's trap
//! stack; the stubs `swapgs` on the way in and out so that GS is always the
//! per-CPU base inside the kernel. Exceptions and interrupts from user
//! mode go to the hooks portable code registered ([`set_user_traps`]).

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

use ::x86_64::VirtAddr;
use ::x86_64::structures::DescriptorTablePointer;

use k42_abi::trace::ev;

use super::apic;

pub const VECTOR_TIMER: u8 = 0x30;
pub const VECTOR_WAKEUP: u8 = 0x31;
pub const VECTOR_DYNAMIC_BASE: u8 = 0x40;
pub const VECTOR_DYNAMIC_COUNT: u8 = 8;
pub const VECTOR_SPURIOUS: u8 = 0xff;
/// #UD: also how user programs make system calls (`k42_abi::syscall`).
/// Invalid opcode (#UD): also how a system call arrives.
pub const VECTOR_INVALID_OPCODE: u8 = 6;

/// Registers saved on entry, in stack order (lowest address first).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// Stubs: vectors with a CPU-pushed error code push only the vector; the
// others push a zero first so every frame has the same shape.
global_asm!(
    r#"
    .section .text
    .macro K42_ISR_NOERR vec
k42_isr_\vec:
    push 0
    push \vec
    jmp k42_isr_common
    .endm
    .macro K42_ISR_ERR vec
k42_isr_\vec:
    push \vec
    jmp k42_isr_common
    .endm

    .irp v, 0,1,2,3,4,5,6,7,9,16,18,19,20,48,49,64,65,66,67,68,69,70,71,255
    K42_ISR_NOERR \v
    .endr
    .irp v, 8,10,11,12,13,14,17,21
    K42_ISR_ERR \v
    .endr

k42_isr_common:
    test qword ptr [rsp + 24], 3
    jz 1f
    swapgs
1:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call {dispatch}
    // The way back to whatever the frame at rsp holds (also how the
    // scheduler first enters a thread: usermode::enter_thread).
    .global k42_isr_return
k42_isr_return:
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    test qword ptr [rsp + 8], 3
    jz 2f
    swapgs
2:
    iretq

    .section .rodata
    .balign 8
    .global k42_isr_table
k42_isr_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,16,17,18,19,20,21,48,49,64,65,66,67,68,69,70,71,255
    .quad \v
    .quad k42_isr_\v
    .endr
    .global k42_isr_table_end
k42_isr_table_end:
"#,
    dispatch = sym trap_dispatch,
);

unsafe extern "C" {
    static k42_isr_table: [u64; 0];
    static k42_isr_table_end: [u64; 0];
}

/// One 16-byte IDT gate.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    /// IST index (bits 0-2) and type/attributes (bits 8-15).
    options: u16,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        options: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present, DPL-0, 64-bit interrupt gate (interrupts masked on
    /// entry) to `handler`, on IST stack `ist` (0 = none).
    fn interrupt(handler: u64, ist: u16) -> Gate {
        const PRESENT_INTERRUPT_GATE: u16 = 0x8e00;
        Gate {
            offset_low: handler as u16,
            selector: k42_abi::layout::KERNEL_CS,
            options: PRESENT_INTERRUPT_GATE | ist,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: written only by the boot CPU in `init`, before any CPU loads it;
// read only by the hardware afterwards.
unsafe impl Sync for Idt {}

/// The IDT, filled once by the boot CPU and then only read.
static IDT: Idt = Idt(UnsafeCell::new([Gate::MISSING; 256]));

/// Registered handlers, indexed by vector (0 = none).
static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// A handler for an interrupt vector; runs with interrupts masked.
pub type Handler = fn(&mut TrapFrame);

/// Run `handler` for `vector` (a timer, wakeup or dynamic vector).
pub fn set_handler(vector: u8, handler: Handler) {
    assert!(
        vector == VECTOR_TIMER
            || vector == VECTOR_WAKEUP
            || (VECTOR_DYNAMIC_BASE..VECTOR_DYNAMIC_BASE + VECTOR_DYNAMIC_COUNT).contains(&vector),
        "vector {vector:#x} has no stub"
    );
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

/// Fill the IDT from the stub table (boot CPU, once, before any other CPU
/// loads it).
pub fn init() {
    // SAFETY: the table symbols delimit a .rodata array of (vector, stub
    // address) pairs emitted above.
    let table = unsafe {
        let start = (&raw const k42_isr_table) as *const [u64; 2];
        let end = (&raw const k42_isr_table_end) as *const [u64; 2];
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    };
    // SAFETY: only the boot CPU runs this, before any CPU loads the IDT or
    // takes an interrupt; afterwards IDT is never written again.
    let idt = unsafe { &mut *IDT.0.get() };
    for &[vector, stub] in table {
        let ist = match vector {
            8 => super::gdt::IST_DOUBLE_FAULT + 1,
            2 => super::gdt::IST_NMI + 1,
            _ => 0,
        };
        idt[vector as usize] = Gate::interrupt(stub, ist);
    }
    load();
}

/// Load the IDT on this CPU.
pub fn load() {
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::from_ptr(IDT.0.get()),
    };
    // SAFETY: IDT is a static, fully written by `init` before any CPU
    // calls this, and never changed afterwards.
    unsafe { ::x86_64::instructions::tables::lidt(&ptr) };
}

/// Make the next exception unrecoverable (for the triple-fault test):
/// load an empty IDT.
pub fn load_empty_idt() {
    let empty = DescriptorTablePointer {
        limit: 0,
        base: VirtAddr::new(0),
    };
    // SAFETY: deliberately breaks exception delivery; the caller then
    // faults, which ends the VM with a triple fault.
    unsafe { ::x86_64::instructions::tables::lidt(&empty) };
}

/// What portable code does with a trap from user mode, registered once
/// at boot ([`set_user_traps`]): the arch layer names no portable module.
pub struct UserTraps {
    /// An exception (vector < 32) in user mode (`fault_address` has CR2
    /// for a page fault: read only when needed, since every system call
    /// arrives here and reading CR2 costs an emulated instruction).
    /// Returns false to treat it as a kernel exception.
    pub exception: fn(&mut TrapFrame) -> bool,
    /// After an interrupt taken in user mode has been handled (the point
    /// for preemption and quiescence).
    pub interrupted: fn(&mut TrapFrame),
}

static USER_TRAPS: AtomicUsize = AtomicUsize::new(0);

/// Register the user-trap hooks (once, before user code runs).
pub fn set_user_traps(hooks: &'static UserTraps) {
    USER_TRAPS.store(hooks as *const UserTraps as usize, Ordering::Release);
}

fn user_traps() -> Option<&'static UserTraps> {
    let p = USER_TRAPS.load(Ordering::Acquire) as *const UserTraps;
    // SAFETY: only `set_user_traps` stores here, a `&'static UserTraps`.
    unsafe { p.as_ref() }
}

extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    let from_user = frame.cs & 3 == 3;
    if vector < 32 {
        if from_user
            && let Some(hooks) = user_traps()
            && (hooks.exception)(frame)
        {
            return;
        }
        if vector == 13
            && let Some(fixup) = super::msr::fixup_for(frame.rip)
        {
            // A probing MSR access faulted: resume at its failure path.
            frame.rip = fixup;
            return;
        }
        exception(frame);
    }
    if vector == VECTOR_SPURIOUS {
        return;
    }
    crate::trace::log(ev::interrupt::entry(vector as u64));
    let h = HANDLERS[vector as usize].load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: only `set_handler` stores into HANDLERS, always a Handler.
        let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
        handler(frame);
    }
    apic::eoi();
    crate::trace::log(ev::interrupt::exit(vector as u64));
    if from_user && let Some(hooks) = user_traps() {
        // Preemption, kills and quiescence for process threads.
        (hooks.interrupted)(frame);
    }
}

/// The exception's mnemonic and name.
pub fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD error",
        20 => "#VE virtualisation",
        21 => "#CP control protection",
        _ => "reserved exception",
    }
}

/// Report an exception and panic (the kernel handles no exceptions yet).
fn exception(frame: &TrapFrame) -> ! {
    let vector = frame.vector as u8;
    let mut msg = crate::console::FixedBuf::<256>::new();
    let _ = write!(
        msg,
        "exception {} (vector {}) error {:#x} at rip {:#x}, cr2 {:#x}, rsp {:#x}",
        exception_name(vector),
        vector,
        frame.error_code,
        frame.rip,
        super::platform::fault_address(),
        frame.rsp
    );
    if vector == 11 || vector == 13 {
        let idx = frame.error_code >> 3;
        if frame.error_code & 2 != 0 {
            let _ = write!(msg, " (IDT vector {idx:#x}: no handler installed)");
        }
    }
    panic!("{}", msg.as_str());
}
