//! The program's memory: every load from and store to an address a Linux
//! program passed goes through the few routines here, as Linux's kernel
//! reaches user memory only through `copy_from_user` and friends.
//!
//! The routines are leaf assembly in one section, `.text.linux_uaccess`,
//! bracketed by `linux_uaccess_start` and `linux_uaccess_end`; none moves
//! the stack pointer. At start-up the personality writes that range and
//! the fixup address into its signal page (`SignalPage::uaccess`), which
//! the kernel reads when the process takes a page fault or general
//! protection fault it cannot resolve: with `rip` inside the range it
//! resumes the process at `linux_uaccess_fixup` (no signal), which
//! returns `u64::MAX` to the routine's caller, and the call ends with
//! EFAULT — Linux's exception table, with one entry. A forked child gets
//! the words with its copy of the page; exec's new personality writes
//! them again. Addresses at or above `USER_TOP` and ranges that wrap are
//! refused before any access ([`check`], Linux's `access_ok`), and so
//! are ranges that touch the personality's own memory — its image, its
//! heap, the information and signal pages ([`program`]) — where a
//! program on Linux has nothing mapped: a `read` there would otherwise
//! overwrite the personality.

use alloc::vec::Vec;

use k42_abi::layout::PAGE_SIZE;
use k42_abi::linux::{LINUX_SIGNALS, PERSONALITY_BASE};
use k42_abi::syscall::{USER_HEAP, USER_INFO, USER_TOP};
use linux_raw_sys::errno as e;

core::arch::global_asm!(
    r#"
    .section .text.linux_uaccess, "ax"
    .global linux_uaccess_start
linux_uaccess_start:
    // linux_copy_user(dst, src, len) -> 0: rep movsb (DF is clear).
    .global linux_copy_user
linux_copy_user:
    mov rcx, rdx
    rep movsb
    xor eax, eax
    ret
    // linux_clear_user(dst, len) -> 0: rep stosb.
    .global linux_clear_user
linux_clear_user:
    mov rcx, rsi
    xor eax, eax
    rep stosb
    ret
    // linux_strnlen_user(s, max) -> bytes before the NUL, or max.
    .global linux_strnlen_user
linux_strnlen_user:
    xor eax, eax
1:
    cmp rax, rsi
    je 2f
    cmp byte ptr [rdi + rax], 0
    je 2f
    inc rax
    jmp 1b
2:
    ret
    // Where the kernel resumes a routine that faulted: its stack is as
    // at its entry, so return u64::MAX to its caller.
    .global linux_uaccess_fixup
linux_uaccess_fixup:
    mov rax, -1
    ret
    .global linux_uaccess_end
linux_uaccess_end:
    .section .text
"#
);

unsafe extern "C" {
    /// The end of the personality's image (linux.ld).
    static linux_personality_end: u8;
    fn linux_uaccess_start();
    fn linux_uaccess_end();
    fn linux_uaccess_fixup();
    fn linux_copy_user(dst: u64, src: u64, len: u64) -> u64;
    fn linux_clear_user(dst: u64, len: u64) -> u64;
    fn linux_strnlen_user(s: u64, max: u64) -> u64;
}

/// The routines' range and fixup, for the signal page: `[start, end,
/// fixup]`.
pub fn table() -> [u64; 3] {
    [
        linux_uaccess_start as *const () as u64,
        linux_uaccess_end as *const () as u64,
        linux_uaccess_fixup as *const () as u64,
    ]
}

/// EFAULT unless `[addr, addr + len)` lies below `USER_TOP` (Linux's
/// `access_ok`, which a call makes before it looks further).
pub fn check(addr: u64, len: u64) -> Result<(), u32> {
    match addr.checked_add(len) {
        Some(end) if end <= USER_TOP => Ok(()),
        _ => Err(e::EFAULT),
    }
}

/// EFAULT unless `[addr, addr + len)` is the program's memory: below
/// `USER_TOP` and clear of the personality's image, heap, information
/// and signal pages (nothing is mapped there for a program on Linux).
pub fn program(addr: u64, len: u64) -> Result<(), u32> {
    check(addr, len)?;
    if personality(addr, len) {
        return Err(e::EFAULT);
    }
    Ok(())
}

/// Whether `[addr, addr + len)` (which must not wrap) touches the
/// personality's image, heap, information or signal pages.
pub fn personality(addr: u64, len: u64) -> bool {
    let end = addr.saturating_add(len);
    let image_end = &raw const linux_personality_end as u64;
    let heap_end = USER_HEAP + crate::system::info().heap_size;
    let ours = [
        (PERSONALITY_BASE, image_end),
        (USER_HEAP, heap_end),
        (USER_INFO, LINUX_SIGNALS + PAGE_SIZE),
    ];
    len > 0 && ours.iter().any(|&(s, e)| addr < e && s < end)
}

/// Map a routine's result to EFAULT.
fn done(r: u64) -> Result<(), u32> {
    if r == u64::MAX {
        Err(e::EFAULT)
    } else {
        Ok(())
    }
}

/// Copy the program's `[src, src + dst.len())` into `dst`.
pub fn copy_in(dst: &mut [u8], src: u64) -> Result<(), u32> {
    let len = dst.len() as u64;
    program(src, len)?;
    // SAFETY: `dst` is ours and `len` bytes long; a fault reading the
    // program's `src` resumes at the fixup (module doc), which returns.
    done(unsafe { linux_copy_user(dst.as_mut_ptr() as u64, src, len) })
}

/// Copy `src` to the program's `dst`.
pub fn copy_out(dst: u64, src: &[u8]) -> Result<(), u32> {
    let len = src.len() as u64;
    program(dst, len)?;
    // SAFETY: `src` is ours; a fault writing the program's `dst` resumes
    // at the fixup. The program's memory is not this program's Rust
    // data (below USER_TOP, apart from the personality).
    done(unsafe { linux_copy_user(dst, src.as_ptr() as u64, len) })
}

/// Zero the program's `[dst, dst + len)`.
pub fn clear(dst: u64, len: u64) -> Result<(), u32> {
    program(dst, len)?;
    // SAFETY: as for `copy_out`.
    done(unsafe { linux_clear_user(dst, len) })
}

/// Plain data: every bit pattern is a valid value and there is no
/// padding, so a value may be copied from or to the program's bytes.
///
/// # Safety
///
/// Implement only for such types.
pub unsafe trait Plain: Copy {}

// SAFETY: integers, and arrays and C structs of integers without padding.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl Plain for i32 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}
// SAFETY: as above.
unsafe impl Plain for i64 {}
// SAFETY: as above.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}
// SAFETY: two 64-bit integers.
unsafe impl Plain for linux_raw_sys::general::__kernel_timespec {}
// SAFETY: two 64-bit integers.
unsafe impl Plain for linux_raw_sys::general::__kernel_old_timeval {}
// SAFETY: a pointer-sized integer and a length.
unsafe impl Plain for linux_raw_sys::general::iovec {}
// SAFETY: an int and two shorts.
unsafe impl Plain for linux_raw_sys::general::pollfd {}
// SAFETY: two 64-bit integers.
unsafe impl Plain for linux_raw_sys::general::rlimit64 {}
// SAFETY: four shorts.
unsafe impl Plain for linux_raw_sys::general::winsize {}
// SAFETY: x86_64's `struct stat` is integers without padding (its
// trailing reserved words included).
unsafe impl Plain for linux_raw_sys::general::stat {}
// SAFETY: 65-byte character arrays, 390 bytes, no padding.
unsafe impl Plain for linux_raw_sys::system::new_utsname {}

/// Read a `T` from the program's `addr`.
pub fn read<T: Plain>(addr: u64) -> Result<T, u32> {
    let mut v = core::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the zeroed value's bytes, `size_of::<T>()` of them.
    let bytes = unsafe {
        core::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), core::mem::size_of::<T>())
    };
    copy_in(bytes, addr)?;
    // SAFETY: `T` is plain data (every bit pattern valid), now filled.
    Ok(unsafe { v.assume_init() })
}

/// Write `v` to the program's `addr`.
pub fn write<T: Plain>(addr: u64, v: &T) -> Result<(), u32> {
    // SAFETY: `T` is plain data without padding: its bytes are
    // initialized.
    let bytes = unsafe {
        core::slice::from_raw_parts((v as *const T).cast::<u8>(), core::mem::size_of::<T>())
    };
    copy_out(addr, bytes)
}

/// Read `n` values of `T` from the program's array at `addr`.
pub fn read_array<T: Plain>(addr: u64, n: usize) -> Result<Vec<T>, u32> {
    let size = core::mem::size_of::<T>();
    let len = (n as u64).checked_mul(size as u64).ok_or(e::EFAULT)?;
    program(addr, len)?;
    let mut out: Vec<T> = Vec::with_capacity(n);
    // SAFETY: the vector's spare room, `n` elements of it, zeroed first
    // so that every byte is initialized.
    let bytes = unsafe {
        core::ptr::write_bytes(out.as_mut_ptr(), 0, n);
        core::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), n * size)
    };
    copy_in(bytes, addr)?;
    // SAFETY: all `n` elements were written, and `T` is plain data.
    unsafe { out.set_len(n) };
    Ok(out)
}

/// Write `v` to the program's array at `addr`.
pub fn write_array<T: Plain>(addr: u64, v: &[T]) -> Result<(), u32> {
    // SAFETY: plain data without padding: initialized bytes.
    let bytes =
        unsafe { core::slice::from_raw_parts(v.as_ptr().cast::<u8>(), core::mem::size_of_val(v)) };
    copy_out(addr, bytes)
}

/// The NUL-terminated string at the program's `ptr` (without the NUL),
/// at most `max` bytes long: ENAMETOOLONG (`too_long`) if longer.
pub fn string(ptr: u64, max: usize, too_long: u32) -> Result<Vec<u8>, u32> {
    if ptr >= USER_TOP {
        return Err(e::EFAULT);
    }
    // Never past USER_TOP: the scan stops there; nor into the
    // personality's memory.
    let limit = (max as u64 + 1).min(USER_TOP - ptr);
    program(ptr, 1)?;
    // SAFETY: reads the program's bytes; a fault resumes at the fixup.
    let n = unsafe { linux_strnlen_user(ptr, limit) };
    if n == u64::MAX {
        return Err(e::EFAULT);
    }
    if n > max as u64 {
        return Err(too_long);
    }
    if n == limit {
        // The string runs into USER_TOP.
        return Err(e::EFAULT);
    }
    let mut out = alloc::vec![0u8; n as usize];
    copy_in(&mut out, ptr)?;
    Ok(out)
}
