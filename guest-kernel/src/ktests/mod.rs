//! In-kernel tests of the foundation: boot info, hypercall checking, SMP
//! bring-up and calls, timers, IPIs, the frame allocator and the heap
//! under use from every CPU.
mod boot;
mod hypercall;
mod ipi;
mod mm;
mod smp;
mod timer;
mod user;
