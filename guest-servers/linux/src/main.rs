//! The Linux personality: serves the Linux system calls of an unmodified
//! Linux program, in user mode, inside its process — K42's emulation
//! layer.
//!
//! The kernel maps this program at `k42_abi::linux::PERSONALITY_BASE` in
//! every Linux process and points `IA32_LSTAR` at its first byte
//! ([`entry`]): on KVM-PVM a `syscall` from user mode lands there still in
//! user mode, so a Linux call costs the hypervisor's handling of the
//! instruction and no kernel entry. What needs no kernel is done here
//! (descriptors and file positions, the working directory, umask, signal
//! dispositions, the program break); the rest goes to the kernel (exec,
//! fork, wait, memory, the FS base) and to the file server (names) as k42
//! system calls and PPC.
//!
//! | module    | Linux calls                                              |
//! |-----------|----------------------------------------------------------|
//! | [`altstack`]| sigaltstack, the alternate signal stack                |
//! | [`entry`] | the `syscall` entry, start-up, the dispatch              |
//! | [`fd`]    | the descriptor table and what exec carries over          |
//! | [`files`] | files, directories, paths, the console                  |
//! | [`memory`]| brk, mmap, munmap, mprotect                             |
//! | [`poll`]  | poll, ppoll, select, pselect6                           |
//! | [`process`]| exit, exec, fork, wait, ids                             |
//! | [`signal`]| actions, masks, kill, delivery, rt_sigreturn            |
//! | [`system`]| uname, time, random, limits                             |
//! | [`thread`]| per-thread blocks, the lock, clone, futex, thread exit   |
//! | [`trace`] | the `linux` trace class: each call's entry and result   |
//! | [`uaccess`]| the program's memory: copies that fail with EFAULT        |
#![no_std]
#![no_main]

extern crate alloc;

mod altstack;
mod entry;
mod fd;
mod files;
mod memory;
mod poll;
mod process;
mod signal;
mod system;
mod thread;
mod trace;
mod uaccess;

/// A Linux system call's result: a value, or an errno (returned as its
/// negation, as the kernel's ABI does).
pub type LinuxResult = Result<u64, u32>;
