//! System calls (`k42_abi::syscall`): the raw system-call site, one raw
//! wrapper per call generated from the ABI's table ([`raw`]), and typed
//! wrappers.

use core::arch::asm;

use k42_abi::bench::BenchRecord;
use k42_abi::syscall::Syscall;

/// System call `nr` with up to three arguments.
#[inline]
pub fn syscall3(nr: Syscall, a0: u64, a1: u64, a2: u64) -> i64 {
    syscall3_raw(nr as u64, a0, a1, a2)
}

/// System call `nr` with up to five arguments.
#[inline(always)]
pub fn syscall5(nr: Syscall, a: [u64; 5]) -> i64 {
    let ret: i64;
    // SAFETY: as in `syscall3_raw`.
    unsafe {
        asm!(
            "ud2",
            ".byte 0x6b, 0x34, 0x32, 0x73",
            inlateout("rax") nr as u64 => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            options(nostack),
        );
    }
    ret
}

/// A system call with a raw number (for tests of the kernel's checks).
#[inline]
pub fn syscall3_raw(nr: u64, a0: u64, a1: u64, a2: u64) -> i64 {
    let ret: i64;
    // SAFETY: the kernel serves the trap at this system-call site
    // (k42_abi::syscall::SYSCALL_SITE) and resumes after it, preserving
    // every register but rax (the result); the arguments are plain values
    // or pointers the kernel validates.
    unsafe {
        asm!(
            "ud2",
            ".byte 0x6b, 0x34, 0x32, 0x73",
            inlateout("rax") nr => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            options(nostack),
        );
    }
    ret
}

/// A raw system-call result as a `Result`: ≥ 0 a value, < 0 the error
/// (a code this ABI does not define counts as `InvalidArgument`).
pub fn sys_result(r: i64) -> Result<u64, k42_abi::syscall::SyscallError> {
    use k42_abi::syscall::SyscallError;
    if r >= 0 {
        Ok(r as u64)
    } else {
        Err(SyscallError::from_raw(r).unwrap_or(SyscallError::InvalidArgument))
    }
}

/// End the program with `status`.
pub fn exit(status: u8) -> ! {
    self::raw::Exit::call([status as u64]);
    // The kernel never returns from Exit.
    loop {
        core::hint::spin_loop();
    }
}

/// Write `s` to the console.
pub fn write(s: &str) -> i64 {
    self::raw::Write::call([
        s.as_ptr() as u64,
        s.len() as u64,
        k42_abi::syscall::WRITE_STDOUT,
    ])
}

/// Report a benchmark result to k42vmm through the kernel.
pub fn bench_record(r: &BenchRecord) -> i64 {
    self::raw::BenchRecord::call([
        r as *const BenchRecord as u64,
        core::mem::size_of::<BenchRecord>() as u64,
    ])
}

/// The CPU this program runs on.
pub fn get_cpu() -> u32 {
    self::raw::GetCpu::call([]) as u32
}

/// Give the host CPU away while waiting for another CPU (round `round`
/// of the wait).
pub fn yield_now(round: u32) {
    self::raw::Yield::call([round as u64]);
}

/// A system call that does nothing.
#[inline]
pub fn null() -> i64 {
    self::raw::Null::call([])
}

macro_rules! raw_wrappers {
    ($( $(#[doc = $doc:literal])* $name:ident = $nr:literal => $area:ident :: $handler:ident ($argc:literal); )*) => {
        /// One raw wrapper per system call, generated from the ABI's table
        /// (`k42_abi::for_each_syscall`): `self::raw::FileRead::call([h, off,
        /// buf, len])` takes exactly the call's argument count and returns
        /// the raw result (≥ 0 a value, < 0 a `SyscallError`).
        #[allow(non_snake_case)]
        pub mod raw {
            $(
                $(#[doc = $doc])*
                pub mod $name {
                    /// Make the call (registers only: no stack, no
                    /// memory copy, so a fresh fork child touches no
                    /// more pages than the call itself).
                    #[inline(always)]
                    pub fn call(args: [u64; $argc]) -> i64 {
                        let at = |i: usize| args.get(i).copied().unwrap_or(0);
                        super::super::syscall5(
                            k42_abi::syscall::Syscall::$name,
                            [at(0), at(1), at(2), at(3), at(4)],
                        )
                    }
                }
            )*
        }
    };
}

k42_abi::for_each_syscall!(raw_wrappers);
