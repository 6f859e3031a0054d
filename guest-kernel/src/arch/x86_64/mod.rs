//! x86_64 support for the k42 kernel.
//!
//! | module        | what it does                                          |
//! |---------------|-------------------------------------------------------|
//! | `platform`    | the platform interface portable code uses (interrupt  |
//! |               | flag, idle, TSC, page tables, TLB, CPUID, addresses)  |
//! | `entry`       | `_start`: where every vCPU enters the kernel          |
//! | `gdt`         | per-CPU GDT and TSS with IST stacks                   |
//! | `interrupts`  | IDT, trap stubs, exception reports, handler registry  |
//! | `apic`        | x2APIC: enable, EOI, IPIs, TSC-deadline timer         |
//! | `hypercall`   | port-I/O hypercalls to k42vmm                         |
//! | `linux_syscall` | where a Linux `syscall` lands: the personality's   |
//! |               | entry, or the ring-0 reflection to it; boot probe     |
//! | `msr`         | MSR reads and writes that survive a #GP (probing)     |
//! | `serial`      | COM1 output for the early console                     |
//! | `usermode`    | entering user mode, system calls, getting back        |
//!
//! This is the ring-0 ("native ring 0") implementation. On KVM-PVM hosts it
//! runs emulated instruction by instruction, so every path here is kept
//! short and free of loops over memory.

pub mod apic;
pub mod entry;
pub mod gdt;
pub mod hypercall;
pub mod interrupts;
pub mod linux_syscall;
pub mod msr;
pub mod platform;
pub mod serial;
pub mod usermode;
