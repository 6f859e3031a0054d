//! k42vmm: a purpose-built KVM virtual machine monitor for the K42-style
//! scalable microkernel.
//!
//! ```text
//!  main.rs (CLI) ──► vm::run(VmConfig)
//!                     ├─ topology host CPUs and nodes, the placement plan,
//!                     │           pinning and memory binding
//!                     ├─ memory   guest RAM layout per node and checked access
//!                     ├─ loader   kernel ELF, modules, boot page tables, BootInfo
//!                     ├─ run_state what the main, vCPU and hypercall code share
//!                     ├─ vcpu     one thread per vCPU: create, configure, run, kick
//!                     │   ├─ cpuid     per-vCPU CPUID (APIC ids, hypervisor bit)
//!                     │   ├─ hypercall port-I/O hypercalls (shared-abi)
//!                     │   ├─ serial    COM1 → stdout
//!                     │   └─ console   stdin → ConsoleRead (with `-- COMMAND`):
//!                     │                reader thread, raw terminal, Ctrl-A x
//!                     ├─ trace    collector thread: guest trace buffers → CTF, live socket
//!                     ├─ exit     the one decision of how the VM ends
//!                     ├─ platform KVM flavour, native vs emulated guest kernel
//!                     └─ report   the JSON run report
//!
//!  main.rs (CLI) ──► bench::command   `k42vmm bench`: sweeps over vCPU counts,
//!                                     one child `k42vmm run` per boot; results,
//!                                     plots, baseline comparison
//! ```
//!
//! The only contract with the guest is the `k42-abi` crate (shared-abi/).

pub mod bench;
pub mod config;
pub mod console;
pub mod cpuid;
pub mod error;
pub mod exit;
pub mod hypercall;
pub mod kvm;
pub mod loader;
pub mod memory;
pub mod platform;
pub mod report;
pub mod run_state;
pub mod serial;
pub mod topology;
pub mod trace;
pub mod vcpu;
pub mod vm;

pub use config::VmConfig;
pub use error::VmmError;
