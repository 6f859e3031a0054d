//! Linux programs in processes: exec of a Linux ELF from a file object,
//! with the Linux initial stack, the per-thread FS base, and the count of
//! Linux system calls the personality met and does not implement.
//!
//! The personality (user mode, `guest-servers/linux`) serves Linux
//! system calls; these are the parts that need the kernel. An exec
//! builds a new address space (`Memory::load_linux`): the personality
//! from the image, the program's segments over its file's memory object
//! (read-only pages are the file's own frames, shared by every process
//! running it), a dynamically linked program's interpreter (the dynamic
//! linker named by its `PT_INTERP`, which the personality opened: it
//! resolves the path in its own file name space, with Linux's errors)
//! over that file's memory object likewise at [`LINUX_INTERP_BASE`],
//! and the stack Linux programs expect:
//!
//! ```text
//! USER_TOP  16 random bytes (AT_RANDOM), "x86_64", the exec path,
//!           environment and argument strings
//!           (16-byte aligned) auxv pairs, AT_NULL
//!           envp[], NULL
//!           argv[], NULL
//! sp ─────► argc
//! ```

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use k42_abi::layout::PAGE_SIZE;
use k42_abi::linux::{
    ExecHeader, LINUX_INTERP_BASE, MAX_CARRY, MAX_EXEC_STRINGS, MAX_KEEP, NO_INTERPRETER,
    PERSONALITY_MODULE,
};
use k42_abi::syscall::{SyscallError, USER_INFO, USER_TOP, file};
use linux_raw_sys::auxvec as at;
use zerocopy::FromBytes;

use super::memory::{LinuxImage, Memory};
use super::sched::Thread;
use crate::arch::{self, TrapFrame};
use crate::user::elf::{self, Kind};

/// Linux system-call numbers counted (x86_64 numbers are below this).
pub const MAX_LINUX_CALL: usize = 512;

/// How often each Linux system call the personality does not implement
/// was made, by number.
static UNIMPLEMENTED: [AtomicU32; MAX_LINUX_CALL] = [const { AtomicU32::new(0) }; MAX_LINUX_CALL];

/// Count a Linux system call the personality does not implement.
pub fn unimplemented(nr: u64) -> Result<(), SyscallError> {
    let slot = UNIMPLEMENTED
        .get(nr as usize)
        .ok_or(SyscallError::InvalidArgument)?;
    slot.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Print one line naming the Linux system calls met that the
/// personality does not implement, and how often (nothing if none): why a
/// Linux program may have failed.
pub fn report_unimplemented() {
    let mut line = String::new();
    for (nr, n) in UNIMPLEMENTED.iter().enumerate() {
        let n = n.load(Ordering::Relaxed);
        if n == 0 {
            continue;
        }
        let name = syscalls::Sysno::new(nr).map_or("unknown", |s| s.name());
        let _ = core::fmt::Write::write_fmt(&mut line, format_args!(" {name}({nr})x{n}"));
    }
    if !line.is_empty() {
        crate::println!("k42: Linux system calls not implemented (ENOSYS):{line}");
    }
}

/// An exec block, checked: the strings and the carried state.
struct ExecBlock<'a> {
    args: Vec<&'a [u8]>,
    env: Vec<&'a [u8]>,
    execfn: &'a [u8],
    carry: &'a [u8],
    keep: Vec<u64>,
}

/// Split `n` NUL-terminated strings off the front of `rest`.
fn strings<'a>(rest: &mut &'a [u8], n: u32) -> Result<Vec<&'a [u8]>, SyscallError> {
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(SyscallError::InvalidArgument)?;
        out.push(&rest[..end]);
        *rest = &rest[end + 1..];
    }
    Ok(out)
}

impl<'a> ExecBlock<'a> {
    fn parse(block: &'a [u8]) -> Result<Self, SyscallError> {
        let (h, mut rest) =
            ExecHeader::read_from_prefix(block).map_err(|_| SyscallError::InvalidArgument)?;
        let args = strings(&mut rest, h.argc)?;
        let env = strings(&mut rest, h.envc)?;
        let execfn = strings(&mut rest, 1)?[0];
        let keep_bytes = h.nkeep as usize * 8;
        if execfn.len() != h.execfn_len as usize
            || h.nkeep > MAX_KEEP
            || rest.len() != h.carry_len as usize + keep_bytes
            || u64::from(h.carry_len) > MAX_CARRY
        {
            return Err(SyscallError::InvalidArgument);
        }
        let (carry, keep) = rest.split_at(h.carry_len as usize);
        let keep = keep
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .collect();
        Ok(Self {
            args,
            env,
            execfn,
            carry,
            keep,
        })
    }
}

/// The initial stack for `block` and `program` (with its interpreter
/// loaded at `interp_base`, 0 if none): its bytes (ending at
/// `USER_TOP`) and the stack pointer.
fn initial_stack(
    block: &ExecBlock,
    program: &elf::Program,
    interp_base: u64,
) -> Result<(Vec<u8>, u64), SyscallError> {
    const PLATFORM: &[u8] = b"x86_64";
    let strings: u64 = block
        .args
        .iter()
        .chain(&block.env)
        .map(|s| s.len() as u64 + 1)
        .sum::<u64>()
        + block.execfn.len() as u64
        + 1;
    if strings > MAX_EXEC_STRINGS {
        return Err(SyscallError::TooLong);
    }
    // Strings from the top down, then the vectors below them.
    let mut p = USER_TOP - 16;
    let random_at = p;
    p -= PLATFORM.len() as u64 + 1;
    let platform_at = p;
    p -= block.execfn.len() as u64 + 1;
    let execfn_at = p;
    let mut place = |s: &[u8]| {
        p -= s.len() as u64 + 1;
        p
    };
    let env_at: Vec<u64> = block.env.iter().map(|s| place(s)).collect();
    let args_at: Vec<u64> = block.args.iter().map(|s| place(s)).collect();
    let strings_bottom = p & !15;
    let hwcap = u64::from(arch::cpuid(1, 0).edx);
    let mut aux: Vec<(u32, u64)> = Vec::with_capacity(20);
    if program.phdr != 0 {
        aux.push((at::AT_PHDR, program.phdr));
        aux.push((at::AT_PHENT, u64::from(program.phent)));
        aux.push((at::AT_PHNUM, u64::from(program.phnum)));
    }
    aux.extend([
        (at::AT_PAGESZ, PAGE_SIZE),
        (at::AT_BASE, interp_base),
        (at::AT_FLAGS, 0),
        (at::AT_ENTRY, program.entry),
        (at::AT_UID, 0),
        (at::AT_EUID, 0),
        (at::AT_GID, 0),
        (at::AT_EGID, 0),
        (at::AT_PLATFORM, platform_at),
        (at::AT_HWCAP, hwcap),
        (at::AT_CLKTCK, 100),
        (at::AT_SECURE, 0),
        (at::AT_RANDOM, random_at),
        (at::AT_HWCAP2, 0),
        (at::AT_EXECFN, execfn_at),
        (at::AT_NULL, 0),
    ]);
    let words = 1 + args_at.len() + 1 + env_at.len() + 1 + 2 * aux.len();
    let sp = (strings_bottom - words as u64 * 8) & !15;
    let mut bytes = alloc::vec![0u8; (USER_TOP - sp) as usize];
    let mut put = |at: u64, b: &[u8]| {
        let o = (at - sp) as usize;
        bytes[o..o + b.len()].copy_from_slice(b);
    };
    // AT_RANDOM: 16 bytes glibc seeds its stack guard and pointer guard
    // from; the TSC is what the kernel has.
    let seed = arch::read_tsc();
    let mix = |x: u64| x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29) ^ x;
    put(random_at, &mix(seed).to_le_bytes());
    put(
        random_at + 8,
        &mix(seed ^ 0x5851_f42d_4c95_7f2d).to_le_bytes(),
    );
    put(platform_at, PLATFORM);
    put(execfn_at, block.execfn);
    for (s, &a) in block.env.iter().zip(&env_at) {
        put(a, s);
    }
    for (s, &a) in block.args.iter().zip(&args_at) {
        put(a, s);
    }
    let mut w = sp;
    let mut word = |v: u64| {
        put(w, &v.to_le_bytes());
        w += 8;
    };
    word(args_at.len() as u64);
    args_at.iter().for_each(|&a| word(a));
    word(0);
    env_at.iter().for_each(|&a| word(a));
    word(0);
    for (k, v) in aux {
        word(u64::from(k));
        word(v);
    }
    Ok((bytes, sp))
}

/// The file behind handle `h` of process `p` (read right) and its
/// checked headers as a `kind` program, a PIE placed at `pie_base`.
fn open_program(
    p: &super::Process,
    h: u64,
    kind: Kind,
    pie_base: u64,
) -> Result<(Arc<super::files::FileObj>, elf::Program), SyscallError> {
    let file = super::files::object(p, h, file::RIGHT_READ)?;
    let mut head = alloc::vec![0u8; PAGE_SIZE as usize];
    let n = file.read_head(&mut head);
    let program = elf::Program::parse_as(&head[..n], file.len(), kind, pie_base)
        .map_err(|_| SyscallError::BadProgram)?;
    Ok((file, program))
}

/// Replace thread `t`'s (single-threaded) process's program with the
/// Linux program behind file handle `handle`, started with `block`; a
/// program naming an interpreter needs it opened as `interp`
/// ([`NO_INTERPRETER`] for a static program). On success `frame` starts
/// it (at the personality's entry, which jumps to the interpreter's entry
/// or the program's).
pub fn exec(
    t: &Arc<Thread>,
    handle: u64,
    interp: u64,
    block: &[u8],
    frame: &mut TrapFrame,
) -> Result<(), SyscallError> {
    let p = &t.process;
    if p.state.lock().threads > 1 {
        return Err(SyscallError::MultiThreaded);
    }
    let block = ExecBlock::parse(block)?;
    let (file, program) = open_program(p, handle, Kind::Linux, elf::PIE_BASE)?;
    let interp = match (program.interp, interp) {
        (None, NO_INTERPRETER) => None,
        (Some(_), NO_INTERPRETER) => return Err(SyscallError::BadProgram),
        (None, _) => return Err(SyscallError::InvalidArgument),
        (Some(_), h) => Some(open_program(p, h, Kind::Interpreter, LINUX_INTERP_BASE)?),
    };
    let personality = crate::user::module(PERSONALITY_MODULE).ok_or(SyscallError::NoSuchProgram)?;
    let interp_base = interp.as_ref().map_or(0, |(_, i)| i.base);
    let (stack, sp) = initial_stack(&block, &program, interp_base)?;
    let mut info = super::info();
    // The personality's start: the interpreter's entry (or the
    // program's) and the stack.
    info.args[0] = interp.as_ref().map_or(program.entry, |(_, i)| i.entry);
    info.args[1] = sp;
    let signal_page = super::signal::page_for_exec(p)?;
    let (mem, entry) = Memory::load_linux(
        LinuxImage {
            personality,
            file,
            program: &program,
            interp: interp.as_ref().map(|(f, i)| (f.clone(), i)),
            stack: &stack,
            carry: block.carry,
        },
        info,
        signal_page,
        t.memory().replicated(),
        crate::boot::options().proc_mem,
    )?;
    super::signal::exec_done(p);
    let name = block
        .execfn
        .rsplit(|&b| b == b'/')
        .next()
        .unwrap_or(block.execfn);
    let name = String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned();
    // Close-on-exec: every handle but those the new program keeps.
    let closed = p.files.lock().retain(&block.keep);
    drop(closed);
    super::replace_image(t, name, mem, entry, sp, [USER_INFO, sp], frame);
    Ok(())
}

/// Set the calling thread's FS base: a canonical user address.
pub fn set_fs_base(t: &Thread, base: u64) -> Result<(), SyscallError> {
    if base >= USER_TOP {
        return Err(SyscallError::InvalidArgument);
    }
    t.set_fs_base(base);
    Ok(())
}
