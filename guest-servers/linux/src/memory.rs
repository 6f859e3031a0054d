//! Memory: the program break (kept here, over one lazily-filled region
//! reserved up to `USER_INFO`), and anonymous and private file mappings,
//! protection and unmapping through the kernel's `MemMap`, `MemProtect`
//! and `MemUnmap`. The personality's own memory is not the program's to
//! map over, unmap or protect (ENOMEM, EINVAL, ENOMEM; see `uaccess`).
//!
//! Not yet: shared file mappings at an offset, `MADV_DONTNEED`; memory
//! below a lowered break stays readable until the region is unmapped.

use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::linux::MAP_FIXED;
use k42_abi::syscall::{SyscallError, USER_INFO};
use k42_rt::sys::raw;
use k42_rt::sys::sys_result;
use linux_raw_sys::auxvec as at;
use linux_raw_sys::errno as e;
use linux_raw_sys::general as g;

use crate::LinuxResult;
use crate::files::sys_errno;

const PAGE: u64 = 4096;

/// The break's start (past the program's last segment), where it is
/// now, and whether its region is mapped yet.
static BRK_BASE: AtomicU64 = AtomicU64::new(0);
static BRK: AtomicU64 = AtomicU64::new(0);
static BRK_MAPPED: AtomicU64 = AtomicU64::new(0);

/// Read the program's auxiliary vector from its initial stack at `sp`:
/// where the break starts and the program's path.
pub fn start(sp: u64) {
    // SAFETY: `sp` is the initial stack the kernel built: argc, argv,
    // NULL, envp, NULL, then auxv pairs up to AT_NULL.
    let aux = unsafe {
        let argc = *(sp as *const u64);
        let mut p = sp + 8 * (argc + 2);
        while *(p as *const u64) != 0 {
            p += 8;
        }
        (p + 8) as *const [u64; 2]
    };
    let (mut phdr, mut phnum, mut execfn) = (0, 0, 0);
    let mut i = 0;
    loop {
        // SAFETY: within the auxv, which ends with AT_NULL.
        let [k, v] = unsafe { *aux.add(i) };
        match k as u32 {
            at::AT_NULL => break,
            at::AT_PHDR => phdr = v,
            at::AT_PHNUM => phnum = v,
            at::AT_EXECFN => execfn = v,
            _ => {}
        }
        i += 1;
    }
    let mut end: u64 = 0;
    for k in 0..phnum {
        let ph = phdr + k * 56;
        // SAFETY: AT_PHDR points at AT_PHNUM 56-byte ELF64 program headers
        // mapped with the program: p_type at 0, p_vaddr at 16, p_memsz at
        // 40.
        let (ty, vaddr, memsz) = unsafe {
            (
                *(ph as *const u32),
                *((ph + 16) as *const u64),
                *((ph + 40) as *const u64),
            )
        };
        if ty == 1 {
            end = end.max(vaddr + memsz);
        }
    }
    let base = end.div_ceil(PAGE) * PAGE;
    BRK_BASE.store(base, Ordering::Relaxed);
    BRK.store(base, Ordering::Relaxed);
    if execfn != 0 {
        crate::process::set_exe(execfn);
    }
}

/// `brk`: the new break, or the old one if it cannot move there.
pub fn brk(addr: u64) -> LinuxResult {
    let (base, cur) = (
        BRK_BASE.load(Ordering::Relaxed),
        BRK.load(Ordering::Relaxed),
    );
    if addr < base || addr >= USER_INFO {
        return Ok(cur);
    }
    if BRK_MAPPED.load(Ordering::Relaxed) == 0 && addr > base {
        let r = raw::MemMap::call([base, USER_INFO - base, 3, MAP_FIXED]);
        if r < 0 {
            return Ok(cur);
        }
        BRK_MAPPED.store(1, Ordering::Relaxed);
    }
    BRK.store(addr, Ordering::Relaxed);
    Ok(addr)
}

fn mem_errno(r: i64) -> LinuxResult {
    sys_result(r).map_err(|err| match err {
        SyscallError::NoMemory => e::ENOMEM,
        s => sys_errno(s),
    })
}

/// `mmap`: anonymous memory, or a private copy of a file's bytes.
pub fn mmap(addr: u64, len: u64, prot: u64, flags: u64, fd: u64, off: u64) -> LinuxResult {
    let flags = flags as u32;
    if len == 0 || prot & !7 != 0 || !off.is_multiple_of(PAGE) {
        return Err(e::EINVAL);
    }
    let fixed = if flags & (g::MAP_FIXED | g::MAP_FIXED_NOREPLACE) != 0 {
        if !addr.is_multiple_of(PAGE) {
            return Err(e::EINVAL);
        }
        if crate::uaccess::personality(addr, len) {
            // Not the program's to replace.
            return Err(e::ENOMEM);
        }
        MAP_FIXED
    } else {
        0
    };
    if flags & g::MAP_ANONYMOUS != 0 {
        return mem_errno(raw::MemMap::call([addr, len, prot, fixed]));
    }
    if flags & g::MAP_TYPE != g::MAP_PRIVATE {
        return Err(e::ENODEV);
    }
    // A private file mapping: the file's bytes copied into fresh memory.
    let open = crate::fd::get(fd)?;
    let crate::fd::Kind::File { handle } = open.kind else {
        return Err(e::ENODEV);
    };
    let at = mem_errno(raw::MemMap::call([addr, len, 3, fixed]))?;
    let mut done = 0;
    while done < len {
        let n = (len - done).min(k42_abi::syscall::file::MAX_IO);
        let r = raw::FileRead::call([handle, off + done, at + done, n]);
        let got = sys_result(r).map_err(sys_errno)?;
        if got == 0 {
            break;
        }
        done += got;
    }
    if prot != 3 {
        mem_errno(raw::MemProtect::call([at, len.div_ceil(PAGE) * PAGE, prot]))?;
    }
    Ok(at)
}

/// `munmap` (EINVAL over the personality's memory).
pub fn munmap(addr: u64, len: u64) -> LinuxResult {
    if !addr.is_multiple_of(PAGE) || len == 0 || crate::uaccess::personality(addr, len) {
        return Err(e::EINVAL);
    }
    mem_errno(raw::MemUnmap::call([addr, len]))
}

/// `mprotect` (ENOMEM over the personality's memory, as for memory
/// that is not mapped).
pub fn mprotect(addr: u64, len: u64, prot: u64) -> LinuxResult {
    if !addr.is_multiple_of(PAGE) || prot & !7 != 0 {
        return Err(e::EINVAL);
    }
    if len == 0 {
        return Ok(0);
    }
    if crate::uaccess::personality(addr, len) {
        return Err(e::ENOMEM);
    }
    mem_errno(raw::MemProtect::call([addr, len, prot]))
}

/// `madvise`: advice is accepted; `MADV_DONTNEED` (which must drop the
/// pages) is not supported yet.
pub fn madvise(addr: u64, _len: u64, advice: u64) -> LinuxResult {
    if !addr.is_multiple_of(PAGE) {
        return Err(e::EINVAL);
    }
    if advice == u64::from(g::MADV_DONTNEED) {
        return Err(e::EINVAL);
    }
    Ok(0)
}
