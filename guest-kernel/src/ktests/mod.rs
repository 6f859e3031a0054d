//! In-kernel tests: boot info, hypercall checking, SMP bring-up and calls,
//! timers, IPIs, the frame allocator and the heap under use from every CPU,
//! user mode, the clustered objects, and the NUMA topology k42vmm planned.
mod boot;
mod cobj;
mod hypercall;
mod ipi;
mod mm;
mod smp;
mod timer;
mod topology;
mod user;
