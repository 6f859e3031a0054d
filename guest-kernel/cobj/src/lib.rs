//! K42's clustered objects, as a portable `no_std` library.
//!
//! A clustered object is one reference ([`ObjRef`]) behind which the
//! object has one or more *representatives* ("reps"): one for all CPUs, one
//! per CPU, or one per group of CPUs. Callers cannot tell which; that is
//! the point. The kernel and user-level programs both use this crate, as
//! K42's clustered objects lived in its libc; on the host, std threads
//! stand in for CPUs in the tests.
//!
//! ```text
//!   ObjRef(idx) ──► this CPU's local table[idx] ──► rep ──► method
//!                        │ empty (first call on this CPU)
//!                        ▼
//!                  global entry[idx] ──► root.rep_for(cpu) ──► install, retry
//! ```
//!
//! | module       | what                                                          |
//! |--------------|---------------------------------------------------------------|
//! | [`env`]      | what the crate needs from its platform: CPU count, waiting    |
//! | [`quiesce`]  | per-CPU request generations and markers (K42's RCU)           |
//! | [`system`]   | the object table, references, the call and miss paths,         |
//! |              | hot swap, interposition and destruction                       |
//! | [`root`]     | the root trait and [`root::RepSet`] (reps per CPU group)      |
//! | [`sync`]     | a spin lock that waits through the platform                   |
//! | [`objects`]  | the kernel objects: counter, page manager, hash table,        |
//! |              | process region list — shared and distributed versions          |
//!
//! The rules callers follow:
//!
//! 1. A *request* is the unit of quiescence: it starts when a CPU calls
//!    [`Cpu::request`] and ends when the returned [`Request`] drops. A
//!    request must not block or move to another CPU. Calls through
//!    references need a request (the borrow proves it).
//! 2. Each CPU advances its own generation, whenever it is outside every
//!    request ([`Cpu::quiescent`], and automatically when a request ends).
//!    A CPU that stops making requests must either keep calling
//!    [`Cpu::quiescent`] or go [`Cpu::offline`].
//! 3. Swaps and destruction run outside any request on the calling CPU.
#![no_std]

extern crate alloc;

pub mod env;
pub mod objects;
pub mod quiesce;
pub mod root;
pub mod sync;
pub mod system;

pub use env::{CpuEnv, Event};
pub use root::{Format, Formats, Rep, RepSet, Root, TransferState};
pub use system::{Cpu, ObjRef, Request, SwapError, SwapStats, System};
