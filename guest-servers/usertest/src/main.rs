//! `usertest`: exercised by the kernel's `user.*` tests.
//!
//! Argument 0 picks what to do; argument 1 is the CPU the kernel expects
//! the program to run on.
//!
//! | mode | behaviour                                                     |
//! |------|---------------------------------------------------------------|
//! | 0    | check system calls (CPU number, bad pointers refused), exit 0 |
//! | 1    | read kernel memory: must be killed by a page fault            |
//! | 2    | execute an invalid instruction: must be killed by #UD         |
//! | 3    | exit with status 42                                           |
#![no_std]
#![no_main]

use k42_abi::syscall::{Syscall, SyscallError};
use k42_rt::{Start, get_cpu, syscall3};

k42_rt::main!(run);

fn run(start: Start) -> u8 {
    let (mode, cpu) = (start.arg(0), start.arg(1));
    if start.cpu as u64 != cpu {
        return 13;
    }
    match mode {
        0 => check_syscalls(cpu),
        1 => {
            // SAFETY: deliberately not safe: the kernel half is mapped
            // supervisor-only, so this read must fault.
            let v = unsafe { core::ptr::read_volatile(0xffff_ffff_8020_0000 as *const u64) };
            k42_rt::println!("usertest: read kernel memory {v:#x}!");
            10
        }
        2 => {
            // SAFETY: deliberately raises #UD.
            unsafe { core::arch::asm!("ud2") };
            11
        }
        3 => 42,
        _ => 12,
    }
}

fn check_syscalls(cpu: u64) -> u8 {
    if get_cpu() as u64 != cpu {
        return 1;
    }
    let bad = SyscallError::BadAddress as i64;
    // A kernel address, an unmapped user address, and a range that runs
    // off the end of the stack must all be refused.
    if syscall3(Syscall::Write, 0xffff_ffff_8020_0000, 8, 0) != bad {
        return 2;
    }
    if syscall3(Syscall::Write, 0x3000_0000, 8, 0) != bad {
        return 3;
    }
    // The stack is the top 32 KiB of user space: 32 KiB from a local runs
    // off its end.
    let local = 0u64;
    if syscall3(Syscall::Write, &local as *const u64 as u64, 32 * 1024, 0) != bad {
        return 4;
    }
    if syscall3(Syscall::Null, 0, 0, 0) != 0 {
        return 5;
    }
    if k42_rt::sys::syscall3_raw(9999, 0, 0, 0) != SyscallError::NoSuchCall as i64 {
        return 6;
    }
    0
}
