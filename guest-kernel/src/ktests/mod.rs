//! In-kernel tests: boot info, hypercall checking, SMP bring-up and calls,
//! timers, IPIs, the frame allocator and the heap under use from every CPU,
//! user mode, and the clustered objects.
mod boot;
mod cobj;
mod hypercall;
mod ipi;
mod mm;
mod smp;
mod timer;
mod user;
