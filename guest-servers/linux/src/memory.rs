//! Memory: the program break (kept here, over one lazily-filled region
//! reserved past the program: up to `USER_INFO` for a program linked
//! below it, else [`BRK_SPAN`] bytes), anonymous mappings (`MemMap`),
//! file mappings over the file's memory object (`MemMapFile`: private
//! copy-on-write, or shared), protection, unmapping and
//! `MADV_DONTNEED` (`MemProtect`, `MemUnmap`, `MemDiscard`). The
//! personality's own memory is not the program's to map over, unmap,
//! protect or discard (ENOMEM, EINVAL, ENOMEM, EINVAL; see `uaccess`).
//!
//! Not yet: memory below a lowered break stays readable until the region
//! is unmapped; a page of a file mapping wholly past the file's end reads
//! zeros (Linux: SIGBUS).

use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::linux::{MAP_FILE_FIXED, MAP_FILE_SHARED, MAP_FIXED};
use k42_abi::syscall::{SyscallError, USER_INFO};
use k42_rt::sys::raw;
use k42_rt::sys::sys_result;
use linux_raw_sys::auxvec as at;
use linux_raw_sys::elf_uapi as elf;
use linux_raw_sys::errno as e;
use linux_raw_sys::general as g;

use crate::LinuxResult;
use crate::files::sys_errno;

const PAGE: u64 = 4096;

/// How far the break may grow past a program loaded above `USER_INFO`
/// (a PIE): its region is filled only where touched.
const BRK_SPAN: u64 = 1 << 36;

/// The break's start (past the program's last segment), its limit,
/// where it is now, and whether its region is mapped yet.
static BRK_BASE: AtomicU64 = AtomicU64::new(0);
static BRK_LIMIT: AtomicU64 = AtomicU64::new(0);
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
    // A PIE's headers hold addresses relative to where it was loaded:
    // the load bias is where PT_PHDR is less its address there.
    let mut bias: u64 = 0;
    for k in 0..phnum {
        let ph = phdr + k * 56;
        // SAFETY: as below.
        let (ty, vaddr) = unsafe { (*(ph as *const u32), *((ph + 16) as *const u64)) };
        if ty == elf::PT_PHDR {
            bias = phdr.wrapping_sub(vaddr);
        }
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
        if ty == elf::PT_LOAD {
            end = end.max(vaddr.wrapping_add(bias).wrapping_add(memsz));
        }
    }
    let base = end.div_ceil(PAGE) * PAGE;
    let limit = if base < USER_INFO {
        USER_INFO
    } else {
        base.saturating_add(BRK_SPAN)
    };
    BRK_BASE.store(base, Ordering::Relaxed);
    BRK_LIMIT.store(limit, Ordering::Relaxed);
    BRK.store(base, Ordering::Relaxed);
    if execfn != 0 {
        crate::process::set_exe(execfn);
    }
}

/// `brk`: the new break, or the old one if it cannot move there.
pub fn brk(addr: u64) -> LinuxResult {
    let (base, limit, cur) = (
        BRK_BASE.load(Ordering::Relaxed),
        BRK_LIMIT.load(Ordering::Relaxed),
        BRK.load(Ordering::Relaxed),
    );
    if addr < base || addr >= limit {
        return Ok(cur);
    }
    if BRK_MAPPED.load(Ordering::Relaxed) == 0 && addr > base {
        let r = raw::MemMap::call([base, limit - base, 3, MAP_FIXED]);
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

/// `mmap`: anonymous memory, or a file's pages (private copy-on-write,
/// or shared). `MAP_DENYWRITE`, `MAP_EXECUTABLE`, `MAP_NORESERVE`,
/// `MAP_STACK`, `MAP_POPULATE`, `MAP_LOCKED` and `MAP_GROWSDOWN` change
/// nothing here (pages are made when touched).
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
    let shared = match flags & g::MAP_TYPE {
        g::MAP_PRIVATE => false,
        g::MAP_SHARED | g::MAP_SHARED_VALIDATE => true,
        _ => return Err(e::EINVAL),
    };
    let open = crate::fd::get(fd)?;
    let crate::fd::Kind::File { handle } = open.kind else {
        return Err(e::ENODEV);
    };
    // Linux: the file must be open for reading; a shared writable
    // mapping needs it open for writing too.
    let access = open.flags.load(Ordering::Relaxed) as u32 & g::O_ACCMODE;
    if access == g::O_WRONLY
        || (shared && prot & u64::from(g::PROT_WRITE) != 0 && access != g::O_RDWR)
    {
        return Err(e::EACCES);
    }
    let mut word = prot;
    if fixed != 0 {
        word |= MAP_FILE_FIXED;
    }
    if shared {
        word |= MAP_FILE_SHARED;
    }
    mem_errno(raw::MemMapFile::call([addr, len, word, handle, off]))
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

/// `madvise`: `MADV_DONTNEED` drops the pages (private memory reads
/// back as it started: zeros, or the file's bytes); other advice is
/// accepted and changes nothing.
pub fn madvise(addr: u64, len: u64, advice: u64) -> LinuxResult {
    if !addr.is_multiple_of(PAGE) {
        return Err(e::EINVAL);
    }
    if advice == u64::from(g::MADV_DONTNEED) && len != 0 {
        if crate::uaccess::personality(addr, len) {
            return Err(e::EINVAL);
        }
        return mem_errno(raw::MemDiscard::call([addr, len]));
    }
    Ok(0)
}
