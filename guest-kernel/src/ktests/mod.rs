//! In-kernel tests: boot info, hypercall checking, SMP bring-up and calls,
//! timers, IPIs, the frame allocator and the heap under use from every CPU,
//! user mode, the clustered objects, the NUMA topology k42vmm planned,
//! and tracing.
mod boot;
mod cobj;
mod hypercall;
mod ipi;
mod mm;
mod smp;
mod timer;
mod topology;
mod trace;
mod user;
