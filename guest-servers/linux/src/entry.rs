//! The way in: the `syscall` entry (the personality's first byte, where
//! `IA32_LSTAR` points), the start of a Linux program, and the dispatch
//! by Linux system-call number.
//!
//! The entry runs in user mode. It leaves the program's stack alone (its
//! red zone, and the room a signal frame needs, stay the program's) and
//! switches to the calling thread's own personality stack (its
//! [`thread`] block, found through the GS base); it saves every register the program has into a
//! [`Frame`], calls [`linux_syscall`], and resumes the program from the
//! frame — as `sysret` would after a plain call, or in a signal handler,
//! or back where `rt_sigreturn` says, when the call changed the frame.
//! `rcx` and `r11` carry the return address and flags, as after a real
//! `syscall` (the frame's `rcx` and `r11`, which `rt_sigreturn` may set).
//! The fault entry ([`linux_fault_entry`]) is where the kernel resumes a
//! program that took a fault whose signal it catches: every register as
//! at the fault but `rip`, which the kernel left in the signal page; it
//! saves them into a frame the same way and delivers the signal
//! (`signal::linux_fault`). The direction flag is cleared on the way in (the
//! program's own is restored on the way out), as Linux's `syscall`
//! mask does: the personality's copies assume it clear. Call number
//! [`BARE_SYSCALL`](k42_abi::linux::BARE_SYSCALL) returns 0 at once,
//! restoring only the flags: the bare `syscall` round trip that
//! `k42vmm bench --suite linux` sets the null call beside. The
//! personality is built without SSE (the target's
//! soft-float), so the program's vector registers are untouched.

use linux_raw_sys::general as nr;

use crate::{LinuxResult, fd, files, memory, poll, process, signal, system, thread, trace};

/// Bytes of the main thread's personality stack.
const STACK_SIZE: usize = 256 * 1024;

/// The main thread's personality stack (a clone'd thread has its own:
/// [`thread`]).
#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

/// Written only by the entry below, through its address.
#[unsafe(no_mangle)]
static mut LINUX_STACK: Stack = Stack([0; STACK_SIZE]);

core::arch::global_asm!(
    r#"
    .section .text.linux_entry, "ax"
    .global linux_syscall_entry
linux_syscall_entry:
    cld
    cmp rax, {bare}
    je 2f
    mov gs:[{user_rsp}], rsp
    mov rsp, gs:[{stack_top}]
    push qword ptr gs:[{user_rsp}]
    push rcx
    push r11
    push r11
    push rcx
    push r15
    push r14
    push r13
    push r12
    push rbp
    push rbx
    push r9
    push r8
    push r10
    push rdx
    push rsi
    push rdi
    push rax
    mov rdi, rsp
    call linux_syscall
3:
    mov rax, [rsp + {rip_at}]
    mov gs:[{resume}], rax
    pop rax
    pop rdi
    pop rsi
    pop rdx
    pop r10
    pop r8
    pop r9
    pop rbx
    pop rbp
    pop r12
    pop r13
    pop r14
    pop r15
    pop rcx
    pop r11
    popfq
    lea rsp, [rsp + 8]
    mov rsp, [rsp]
    jmp qword ptr gs:[{resume}]

    .global linux_fault_entry
linux_fault_entry:
    mov gs:[{user_rsp}], rsp
    mov rsp, gs:[{stack_top}]
    push qword ptr gs:[{user_rsp}]
    push qword ptr [{fault_rip}]
    pushfq
    push r11
    push rcx
    push r15
    push r14
    push r13
    push r12
    push rbp
    push rbx
    push r9
    push r8
    push r10
    push rdx
    push rsi
    push rdi
    push rax
    cld
    mov rdi, rsp
    call linux_fault
    jmp 3b
2:
    mov gs:[{user_rsp}], rsp
    mov rsp, gs:[{stack_top}]
    xor eax, eax
    push r11
    popfq
    mov rsp, gs:[{user_rsp}]
    jmp rcx

    .section .text
    .global linux_enter_program
linux_enter_program:
    mov rsp, rsi
    mov rax, rdi
    xor edx, edx
    xor ebx, ebx
    xor ebp, ebp
    xor ecx, ecx
    xor esi, esi
    xor edi, edi
    xor r8d, r8d
    xor r9d, r9d
    xor r10d, r10d
    xor r11d, r11d
    xor r12d, r12d
    xor r13d, r13d
    xor r14d, r14d
    xor r15d, r15d
    jmp rax
"#,
    user_rsp = const thread::BLOCK_USER_RSP,
    stack_top = const thread::BLOCK_STACK_TOP,
    resume = const thread::BLOCK_RESUME_RIP,
    rip_at = const core::mem::offset_of!(Frame, rip),
    fault_rip = const k42_abi::linux::LINUX_SIGNALS
        + (core::mem::offset_of!(k42_abi::linux::SignalPage, fault) + 8 * k42_abi::linux::FAULT_RIP) as u64,
    bare = const k42_abi::linux::BARE_SYSCALL,
);

unsafe extern "C" {
    /// Jump to a Linux program's `entry` with stack pointer `sp` (at
    /// `argc`), every other register zero (`rdx` 0: no exit function).
    fn linux_enter_program(entry: u64, sp: u64) -> !;
    /// Where the kernel resumes the program after a fault whose signal
    /// it catches (`SignalPage::fault_entry`); never called.
    pub fn linux_fault_entry();
}

/// The program's registers at a Linux system call, as the entry saved
/// them (see [`k42_abi::linux::UserRegs`]).
pub use k42_abi::linux::UserRegs as Frame;

const _: () = assert!(core::mem::size_of::<Frame>() == 18 * 8);

/// Where the kernel starts a Linux program: set the personality up from
/// the information page (its carried state) and the program's initial
/// stack, then enter the program.
#[unsafe(no_mangle)]
extern "C" fn k42_user_main(info: u64, sp: u64) -> ! {
    let start = k42_rt::start(info, 0);
    let entry = start.info.args[0];
    trace::start(start.info);
    fd::start(start.info);
    memory::start(sp);
    signal::start();
    // The main thread's block: the static stack's top.
    thread::start_main(core::ptr::addr_of!(LINUX_STACK) as u64 + STACK_SIZE as u64);
    // SAFETY: `entry` and `sp` are the program's entry point and the
    // initial stack the kernel built for it (ProgramInfo args 0 and 1).
    unsafe { linux_enter_program(entry, sp) }
}

/// Serve one Linux system call: its result in `frame.rax`, then any
/// pending signal delivered.
#[unsafe(no_mangle)]
extern "C" fn linux_syscall(frame: &mut Frame) {
    let n = frame.rax;
    let a = [
        frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9,
    ];
    trace::enter(n, &a);
    let unlocked = thread::runs_unlocked(n);
    if !unlocked {
        thread::lock();
    }
    if n == u64::from(nr::__NR_rt_sigreturn) {
        signal::rt_sigreturn(frame);
    } else if n == u64::from(nr::__NR_sigaltstack) {
        // It needs the program's stack pointer.
        frame.rax = match crate::altstack::sigaltstack(a[0], a[1], frame.rsp) {
            Ok(v) => v,
            Err(errno) => -(errno as i64) as u64,
        };
    } else {
        let r = match u32::try_from(n) {
            Ok(nr::__NR_clone) => thread::clone(frame, a),
            Ok(nr::__NR_clone3) => thread::clone3(frame, a[0], a[1]),
            _ => dispatch(n, a),
        };
        frame.rax = match r {
            Ok(v) => v,
            Err(errno) => -(errno as i64) as u64,
        };
    }
    trace::exit(n, frame.rax);
    if unlocked {
        thread::lock();
    }
    signal::at_exit(frame, n);
    thread::unlock();
}

fn dispatch(n: u64, a: [u64; 6]) -> LinuxResult {
    let Ok(n32) = u32::try_from(n) else {
        return Err(linux_raw_sys::errno::ENOSYS);
    };
    match n32 {
        nr::__NR_read => files::read(int(a[0]), a[1], a[2]),
        nr::__NR_write => files::write(int(a[0]), a[1], a[2]),
        nr::__NR_pread64 => files::pread(int(a[0]), a[1], a[2], a[3]),
        nr::__NR_pwrite64 => files::pwrite(int(a[0]), a[1], a[2], a[3]),
        nr::__NR_readv => files::readv(int(a[0]), a[1], a[2]),
        nr::__NR_writev => files::writev(int(a[0]), a[1], a[2]),
        nr::__NR_open => files::openat(files::AT_FDCWD, a[0], a[1], a[2]),
        nr::__NR_openat => files::openat(int(a[0]), a[1], a[2], a[3]),
        nr::__NR_close => fd::close(int(a[0])),
        nr::__NR_lseek => files::lseek(int(a[0]), a[1] as i64, a[2]),
        nr::__NR_fstat => files::fstat(int(a[0]), a[1]),
        nr::__NR_stat => files::fstatat(files::AT_FDCWD, a[0], a[1], 0),
        nr::__NR_lstat => files::fstatat(
            files::AT_FDCWD,
            a[0],
            a[1],
            u64::from(nr::AT_SYMLINK_NOFOLLOW),
        ),
        nr::__NR_newfstatat => files::fstatat(int(a[0]), a[1], a[2], a[3]),
        nr::__NR_pipe => files::pipe2(a[0], 0),
        nr::__NR_pipe2 => files::pipe2(a[0], a[1]),
        nr::__NR_getdents64 => files::getdents64(int(a[0]), a[1], a[2]),
        nr::__NR_dup => fd::dup(int(a[0])),
        nr::__NR_dup2 => fd::dup2(int(a[0]), int(a[1])),
        nr::__NR_dup3 => fd::dup3(int(a[0]), int(a[1]), a[2]),
        nr::__NR_fcntl => fd::fcntl(int(a[0]), a[1], a[2]),
        nr::__NR_ioctl => files::ioctl(int(a[0]), a[1], a[2]),
        nr::__NR_access => files::faccessat(files::AT_FDCWD, a[0], a[1]),
        nr::__NR_faccessat | nr::__NR_faccessat2 => files::faccessat(int(a[0]), a[1], a[2]),
        nr::__NR_getcwd => files::getcwd(a[0], a[1]),
        nr::__NR_chdir => files::chdir(a[0]),
        nr::__NR_umask => fd::umask(a[0]),
        nr::__NR_readlink => files::readlinkat(files::AT_FDCWD, a[0], a[1], a[2]),
        nr::__NR_readlinkat => files::readlinkat(int(a[0]), a[1], a[2], a[3]),
        nr::__NR_mkdir => files::mkdirat(files::AT_FDCWD, a[0], a[1]),
        nr::__NR_mkdirat => files::mkdirat(int(a[0]), a[1], a[2]),
        nr::__NR_symlink => files::symlinkat(a[0], files::AT_FDCWD, a[1]),
        nr::__NR_symlinkat => files::symlinkat(a[0], int(a[1]), a[2]),
        nr::__NR_link => files::linkat(files::AT_FDCWD, a[0], files::AT_FDCWD, a[1], 0),
        nr::__NR_linkat => files::linkat(int(a[0]), a[1], int(a[2]), a[3], a[4]),
        nr::__NR_chmod => files::fchmodat(files::AT_FDCWD, a[0], a[1]),
        nr::__NR_fchmodat => files::fchmodat(int(a[0]), a[1], a[2]),
        nr::__NR_fchmod => files::fchmod(int(a[0]), a[1]),
        nr::__NR_chown | nr::__NR_lchown => files::fchownat(files::AT_FDCWD, a[0], 0),
        nr::__NR_fchownat => files::fchownat(int(a[0]), a[1], a[4]),
        nr::__NR_fchown => fd::get(int(a[0])).map(|_| 0),
        nr::__NR_utimensat => files::utimensat(int(a[0]), a[1], a[2], a[3]),
        nr::__NR_rmdir => files::unlinkat(files::AT_FDCWD, a[0], u64::from(nr::AT_REMOVEDIR)),
        nr::__NR_unlink => files::unlinkat(files::AT_FDCWD, a[0], 0),
        nr::__NR_unlinkat => files::unlinkat(int(a[0]), a[1], a[2]),
        nr::__NR_rename => files::renameat(files::AT_FDCWD, a[0], files::AT_FDCWD, a[1]),
        nr::__NR_renameat => files::renameat(int(a[0]), a[1], int(a[2]), a[3]),
        nr::__NR_renameat2 if a[4] == 0 => files::renameat(int(a[0]), a[1], int(a[2]), a[3]),
        nr::__NR_brk => memory::brk(a[0]),
        nr::__NR_mmap => memory::mmap(a[0], a[1], a[2], a[3], int(a[4]), a[5]),
        nr::__NR_munmap => memory::munmap(a[0], a[1]),
        nr::__NR_mprotect => memory::mprotect(a[0], a[1], a[2]),
        nr::__NR_madvise => memory::madvise(a[0], a[1], a[2]),
        nr::__NR_arch_prctl => process::arch_prctl(a[0], a[1]),
        nr::__NR_set_tid_address => thread::set_tid_address(a[0]),
        nr::__NR_exit => thread::exit(a[0]),
        nr::__NR_exit_group => process::exit(a[0]),
        nr::__NR_execve => process::execve(a[0], a[1], a[2]),
        nr::__NR_fork | nr::__NR_vfork => process::fork(),
        nr::__NR_wait4 => process::wait4(int(a[0]) as i64, a[1], a[2], a[3]),
        nr::__NR_kill => signal::kill(int(a[0]) as i64, a[1]),
        nr::__NR_tgkill => thread::tgkill(int(a[0]), int(a[1]), a[2]),
        nr::__NR_tkill => thread::tkill(int(a[0]), a[1]),
        nr::__NR_getpid => process::getpid(),
        nr::__NR_gettid => thread::gettid(),
        nr::__NR_futex => thread::futex(a[0], a[1], a[2], a[3], a[4], a[5]),
        nr::__NR_sched_setaffinity => thread::sched_setaffinity(int(a[0]), a[1], a[2]),
        nr::__NR_getppid => process::getppid(),
        nr::__NR_getuid | nr::__NR_geteuid | nr::__NR_getgid | nr::__NR_getegid => Ok(0),
        nr::__NR_setuid | nr::__NR_setgid => process::set_ids(&a[..1]),
        nr::__NR_setreuid | nr::__NR_setregid => process::set_ids(&a[..2]),
        nr::__NR_setresuid | nr::__NR_setresgid => process::set_ids(&a[..3]),
        nr::__NR_getresuid | nr::__NR_getresgid => process::get_res_ids([a[0], a[1], a[2]]),
        // No supplementary groups: root's list is empty here.
        nr::__NR_getgroups => Ok(0),
        nr::__NR_setgroups if a[0] == 0 => Ok(0),
        nr::__NR_setgroups => Err(linux_raw_sys::errno::EPERM),
        nr::__NR_set_robust_list => process::set_robust_list(a[0], a[1]),
        nr::__NR_get_robust_list => process::get_robust_list(a[0], a[1], a[2]),
        nr::__NR_sysinfo => system::sysinfo(a[0]),
        nr::__NR_sendfile => files::sendfile(int(a[0]), int(a[1]), a[2], a[3]),
        nr::__NR_getpgrp => process::getpgid(0),
        nr::__NR_getpgid => process::getpgid(int(a[0])),
        nr::__NR_setpgid => process::setpgid(int(a[0]), int(a[1])),
        nr::__NR_getsid => process::getsid(int(a[0])),
        nr::__NR_setsid => process::setsid(),
        nr::__NR_rt_sigaction => signal::rt_sigaction(a[0], a[1], a[2], a[3]),
        nr::__NR_rt_sigprocmask => signal::rt_sigprocmask(a[0], a[1], a[2], a[3]),
        nr::__NR_rt_sigpending => signal::rt_sigpending(a[0], a[1]),
        nr::__NR_rt_sigsuspend => signal::rt_sigsuspend(a[0], a[1]),
        nr::__NR_pause => signal::pause(),
        nr::__NR_poll => poll::poll(a[0], a[1], int(a[2]) as i64),
        nr::__NR_ppoll => poll::ppoll(a[0], a[1], a[2], a[3], a[4]),
        nr::__NR_select => poll::select(int(a[0]), a[1], a[2], a[3], a[4]),
        nr::__NR_pselect6 => poll::pselect6(int(a[0]), a[1], a[2], a[3], a[4], a[5]),
        nr::__NR_uname => system::uname(a[0]),
        nr::__NR_getrandom => system::getrandom(a[0], a[1], a[2]),
        nr::__NR_prlimit64 => system::prlimit64(int(a[0]), a[1], a[2], a[3]),
        nr::__NR_getrlimit => system::prlimit64(0, a[0], 0, a[1]),
        nr::__NR_clock_gettime => system::clock_gettime(a[0], a[1]),
        nr::__NR_gettimeofday => system::gettimeofday(a[0]),
        nr::__NR_time => system::time(a[0]),
        nr::__NR_nanosleep => system::nanosleep(a[0], a[1]),
        nr::__NR_clock_nanosleep => system::clock_nanosleep(a[0], a[1], a[2], a[3]),
        nr::__NR_sched_yield => system::sched_yield(),
        nr::__NR_sched_getaffinity => system::sched_getaffinity(int(a[0]), a[1], a[2]),
        nr::__NR_prctl => system::prctl(a[0], a[1]),
        _ => unimplemented(n),
    }
}

/// An `int` argument (a descriptor, directory descriptor or pid): the
/// low 32 bits of its register, sign-extended, as Linux reads it.
fn int(a: u64) -> u64 {
    a as i32 as i64 as u64
}

/// A call the personality does not implement: ENOSYS, counted by the
/// kernel (which names it when the VM exits) and traced.
fn unimplemented(n: u64) -> LinuxResult {
    k42_rt::sys::raw::LinuxUnimplemented::call([n]);
    Err(linux_raw_sys::errno::ENOSYS)
}
