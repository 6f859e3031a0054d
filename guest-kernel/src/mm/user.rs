//! Checked access to user memory: the one way kernel code reads or
//! writes a user program's memory (the idea of Asterinas' `VmReader` and
//! `VmWriter`).
//!
//! A [`UserSpace`] — a process's memory, or a kernel-run program's —
//! resolves each user page to its frame through its own page tables,
//! faulting the page in first when it is not mapped with the access
//! asked for (a bad address is `BadAddress`, never a kernel fault).
//! Copies then go through the kernel's direct map of those frames, so
//! they do not depend on which address space this CPU has loaded: a PPC
//! copies a caller's message straight into its server's buffer.
//!
//! Writes are all or nothing up to [`MAX_ATOMIC_WRITE`] bytes: every page
//! is resolved before the first byte moves. Reads may stop at a bad page
//! (the call fails; nothing the caller sees has changed). An empty range
//! is never checked, wherever it points.
//!
//! User memory may change under a copy (another thread of the program
//! writes it): the copies are raw byte copies, and the kernel never holds
//! a Rust reference into user memory.

use alloc::vec::Vec;

use k42_abi::layout::PAGE_SIZE;
use k42_abi::syscall::{SyscallError, USER_BASE, USER_TOP};
use zerocopy::{FromBytes, IntoBytes};

use crate::arch;

/// A user address space that system calls may read and write.
pub trait UserSpace {
    /// The frame holding the user page at `va` (page-aligned, inside
    /// user space), read from this space's page tables with the page
    /// present — and writable, when `write` — faulting it in first if
    /// needed; `BadAddress` if the space has no such page.
    fn user_frame(&self, va: u64, write: bool) -> Result<u64, SyscallError>;
}

/// Longest write that is all or nothing.
pub const MAX_ATOMIC_WRITE: u64 = 64 << 10;
/// Pages a write of [`MAX_ATOMIC_WRITE`] bytes may touch.
const MAX_WRITE_PAGES: usize = (MAX_ATOMIC_WRITE / PAGE_SIZE) as usize + 1;

/// Check that `[ptr, ptr + len)` lies in user space.
fn check_bounds(ptr: u64, len: u64) -> Result<(), SyscallError> {
    let end = ptr.checked_add(len).ok_or(SyscallError::BadAddress)?;
    if ptr < USER_BASE || end > USER_TOP {
        return Err(SyscallError::BadAddress);
    }
    Ok(())
}

/// The bytes of `[at, at + left)` that lie in `at`'s page.
fn in_page(at: u64, left: u64) -> u64 {
    (PAGE_SIZE - (at & (PAGE_SIZE - 1))).min(left)
}

/// Copy `len` bytes of user memory at `ptr` to `dst`, resolving each
/// page for writing too when `write` (a buffer a reply will land in).
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
unsafe fn copy_from_user<S: UserSpace + ?Sized>(
    space: &S,
    ptr: u64,
    dst: *mut u8,
    len: u64,
    write: bool,
) -> Result<(), SyscallError> {
    if len == 0 {
        return Ok(());
    }
    check_bounds(ptr, len)?;
    let mut done = 0u64;
    while done < len {
        let at = ptr + done;
        let n = in_page(at, len - done);
        let frame = space.user_frame(at & !(PAGE_SIZE - 1), write)?;
        // (One iteration for anything within a page: a message, a name.)
        let src = arch::phys_to_virt(frame + (at & (PAGE_SIZE - 1)));
        // SAFETY: `frame` is a RAM frame of the user space (read from its
        // page tables), mapped in the kernel's direct map; `[src, src + n)`
        // lies in that page; the caller gave `dst` room for `len` bytes. A
        // raw copy: no reference into user memory is made.
        unsafe {
            core::ptr::copy_nonoverlapping(src as *const u8, dst.add(done as usize), n as usize)
        };
        done += n;
    }
    Ok(())
}

/// Copy `dst.len()` bytes of user memory at `ptr` into `dst`.
pub fn read_into<S: UserSpace + ?Sized>(
    space: &S,
    ptr: u64,
    dst: &mut [u8],
) -> Result<(), SyscallError> {
    // SAFETY: `dst` is a live slice of that length.
    unsafe { copy_from_user(space, ptr, dst.as_mut_ptr(), dst.len() as u64, false) }
}

/// Copy `len` (at most `N`, else `TooLong`) bytes of user memory at
/// `ptr` into `buf`, resolving the pages for writing too when `write` (a
/// buffer a reply will land in); the bytes copied. `buf` is not zeroed
/// first, and the caller declares it in place (`MaybeUninit::uninit()`):
/// zeroing or moving a 256-byte PPC message costs tens of microseconds
/// with the kernel emulated.
pub fn read_uninit<'b, S: UserSpace + ?Sized, const N: usize>(
    space: &S,
    ptr: u64,
    len: u64,
    write: bool,
    buf: &'b mut core::mem::MaybeUninit<[u8; N]>,
) -> Result<&'b [u8], SyscallError> {
    if len > N as u64 {
        return Err(SyscallError::TooLong);
    }
    // SAFETY: `buf` has room for N ≥ len bytes.
    unsafe { copy_from_user(space, ptr, buf.as_mut_ptr().cast(), len, write)? };
    // SAFETY: the first `len` bytes were just written.
    Ok(unsafe { core::slice::from_raw_parts(buf.as_ptr().cast(), len as usize) })
}

/// Copy in `len` bytes of user memory at `ptr` (at most `max`, else
/// `InvalidArgument`).
pub fn copy_in<S: UserSpace + ?Sized>(
    space: &S,
    ptr: u64,
    len: u64,
    max: u64,
) -> Result<Vec<u8>, SyscallError> {
    if len > max {
        return Err(SyscallError::InvalidArgument);
    }
    let mut v = alloc::vec![0u8; len as usize];
    read_into(space, ptr, &mut v)?;
    Ok(v)
}

/// Copy `src` to user memory at `ptr`: all of it, or (on `BadAddress`)
/// none of it. At most [`MAX_ATOMIC_WRITE`] bytes (else
/// `InvalidArgument`).
pub fn copy_out<S: UserSpace + ?Sized>(
    space: &S,
    ptr: u64,
    src: &[u8],
) -> Result<(), SyscallError> {
    let len = src.len() as u64;
    if len > MAX_ATOMIC_WRITE {
        return Err(SyscallError::InvalidArgument);
    }
    if len == 0 {
        return Ok(());
    }
    check_bounds(ptr, len)?;
    let first = ptr & !(PAGE_SIZE - 1);
    let last = (ptr + len - 1) & !(PAGE_SIZE - 1);
    if first == last {
        // One page (a PPC message, a name): no list to fill.
        let frame = space.user_frame(first, true)?;
        write_frame_part(frame, ptr - first, src);
        return Ok(());
    }
    let mut frames = [0u64; MAX_WRITE_PAGES];
    let pages = ((last - first) / PAGE_SIZE + 1) as usize;
    for (i, f) in frames.iter_mut().take(pages).enumerate() {
        *f = space.user_frame(first + i as u64 * PAGE_SIZE, true)?;
    }
    let mut done = 0u64;
    while done < len {
        let at = ptr + done;
        let n = in_page(at, len - done);
        let frame = frames[((at - first) / PAGE_SIZE) as usize];
        write_frame_part(
            frame,
            at & (PAGE_SIZE - 1),
            &src[done as usize..(done + n) as usize],
        );
        done += n;
    }
    Ok(())
}

/// Copy `bytes` to byte `offset` of user frame `frame` (resolved writable
/// from a user space's page tables; the bytes fit in the page).
fn write_frame_part(frame: u64, offset: u64, bytes: &[u8]) {
    debug_assert!(offset + bytes.len() as u64 <= PAGE_SIZE);
    let dst = arch::phys_to_virt(frame + offset);
    // SAFETY: `frame` is a RAM frame of the user space, mapped writable in
    // its page tables (resolved by the caller), reached through the direct
    // map; `[dst, dst + len)` lies in that page.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst as *mut u8, bytes.len()) };
}

/// Read a `T` from user memory at `ptr` (any alignment).
pub fn read_val<T: FromBytes + IntoBytes>(
    space: &dyn UserSpace,
    ptr: u64,
) -> Result<T, SyscallError> {
    let mut v = T::new_zeroed();
    read_into(space, ptr, v.as_mut_bytes())?;
    Ok(v)
}

/// The `N` bytes at user address `rip` of the address space loaded on
/// this CPU, where the CPU has just fetched an instruction that trapped,
/// if they lie in `rip`'s page; `None` otherwise (the caller then reads
/// them through a [`UserSpace`]). No page walk: this is on every system
/// call's path.
pub fn just_fetched<const N: usize>(rip: u64) -> Option<[u8; N]> {
    let in_page = (rip & (PAGE_SIZE - 1)) + N as u64 <= PAGE_SIZE;
    if !in_page || !(USER_BASE..USER_TOP).contains(&rip) {
        return None;
    }
    let mut b = [0u8; N];
    // SAFETY: the CPU just fetched the trapping instruction at `rip` from
    // this user page of the loaded address space, so the page is mapped
    // and readable, and it stays mapped while the trapping thread is in
    // the kernel (user pages are unmapped only when their process has no
    // thread left); `[rip, rip + N)` lies in that page.
    unsafe { core::ptr::copy_nonoverlapping(rip as *const u8, b.as_mut_ptr(), N) };
    Some(b)
}
