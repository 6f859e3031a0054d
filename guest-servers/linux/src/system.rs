//! The system's own calls: uname, time, random bytes, limits, sleeping.
//!
//! Time is the TSC: the monotonic clocks count from when it started,
//! `CLOCK_REALTIME` (and `gettimeofday`, `time`) add the wall clock the
//! host had at boot (`ProgramInfo::epoch_ns`).

use k42_abi::syscall::{ProgramInfo, USER_INFO};
use linux_raw_sys::errno as e;
use linux_raw_sys::general as g;

use crate::LinuxResult;

fn info() -> &'static ProgramInfo {
    // SAFETY: the kernel maps the information page at USER_INFO,
    // read-only, for the process's life.
    unsafe { &*(USER_INFO as *const ProgramInfo) }
}

/// Nanoseconds since boot (`CLOCK_MONOTONIC`).
pub fn monotonic_ns() -> u64 {
    now_ns()
}

/// Nanoseconds since boot.
fn now_ns() -> u64 {
    // SAFETY: rdtsc reads the time-stamp counter; no memory effects.
    let t = unsafe { core::arch::x86_64::_rdtsc() };
    (t as u128 * 1_000_000 / info().tsc_khz.max(1) as u128) as u64
}

/// Write a plain value to the program's memory at `ptr`.
fn put<T>(ptr: u64, v: T) -> LinuxResult {
    if ptr == 0 {
        return Err(e::EFAULT);
    }
    // SAFETY: the program's memory (see files::cstr).
    unsafe { core::ptr::write_unaligned(ptr as *mut T, v) };
    Ok(0)
}

/// `uname`.
pub fn uname(buf: u64) -> LinuxResult {
    // SAFETY: plain data; zeros are valid.
    let mut u: linux_raw_sys::system::new_utsname = unsafe { core::mem::zeroed() };
    let set = |f: &mut [core::ffi::c_char; 65], s: &[u8]| {
        for (d, &b) in f.iter_mut().zip(s) {
            *d = b as core::ffi::c_char;
        }
    };
    set(&mut u.sysname, b"Linux");
    set(&mut u.nodename, b"k42");
    set(&mut u.release, b"6.1.0-k42");
    set(&mut u.version, b"#1 SMP K42 personality");
    set(&mut u.machine, b"x86_64");
    set(&mut u.domainname, b"(none)");
    put(buf, u)
}

/// `getrandom`: bytes from a generator seeded by the TSC (not
/// cryptographic: the guest has no entropy source yet).
pub fn getrandom(buf: u64, len: u64, _flags: u64) -> LinuxResult {
    // SAFETY: rdtsc (see `now_ns`).
    let mut x = unsafe { core::arch::x86_64::_rdtsc() } | 1;
    for i in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // SAFETY: the program's buffer of `len` bytes.
        unsafe { *((buf + i) as *mut u8) = x as u8 };
    }
    Ok(len)
}

/// `prlimit64` (and `getrlimit`): the limits of this process only;
/// setting is accepted for the stack and file limits as Linux would,
/// without effect beyond what the kernel enforces.
pub fn prlimit64(pid: u64, resource: u64, new: u64, old: u64) -> LinuxResult {
    if pid != 0 && pid != crate::process::getpid()? {
        return Err(e::ESRCH);
    }
    let (cur, max) = match resource as u32 {
        g::RLIMIT_STACK => (8 << 20, u64::MAX),
        g::RLIMIT_NOFILE => (crate::fd::MAX_FDS as u64, crate::fd::MAX_FDS as u64),
        g::RLIMIT_NPROC => (1024, 1024),
        r if r < g::RLIM_NLIMITS => (u64::MAX, u64::MAX),
        _ => return Err(e::EINVAL),
    };
    let _ = new;
    if old != 0 {
        put(
            old,
            g::rlimit64 {
                rlim_cur: cur,
                rlim_max: max,
            },
        )?;
    }
    Ok(0)
}

/// `sysinfo`: uptime, the machine's RAM and free RAM, and the number of
/// processes, from the kernel (`SystemInfo`). No swap, no shared or
/// buffer memory, no high memory; the load averages are 0 (the kernel
/// keeps none).
pub fn sysinfo(buf: u64) -> LinuxResult {
    let mut k = k42_abi::syscall::SystemInfo::default();
    let r = k42_rt::sys::raw::SystemInfo::call([&raw mut k as u64]);
    k42_rt::sys::sys_result(r).map_err(crate::files::sys_errno)?;
    let page = k42_abi::layout::PAGE_SIZE;
    put(
        buf,
        linux_raw_sys::system::sysinfo {
            uptime: (now_ns() / 1_000_000_000) as _,
            loads: [0; 3],
            totalram: k.total_frames * page,
            freeram: k.free_frames * page,
            sharedram: 0,
            bufferram: 0,
            totalswap: 0,
            freeswap: 0,
            procs: k.processes.min(u64::from(u16::MAX)) as u16,
            pad: 0,
            totalhigh: 0,
            freehigh: 0,
            mem_unit: 1,
            _f: Default::default(),
        },
    )
}

/// `sched_getaffinity`: every CPU of the machine (a process may run on
/// any); returns the bytes written, a whole number of longs as Linux's.
pub fn sched_getaffinity(pid: u64, len: u64, mask: u64) -> LinuxResult {
    if pid != 0 && pid != crate::process::getpid()? && k42_rt::sys::raw::GetPgid::call([pid]) < 0 {
        return Err(e::ESRCH);
    }
    let cpus = u64::from(info().cpus.max(1));
    let size = cpus.div_ceil(64) * 8;
    if len < size || !len.is_multiple_of(8) {
        return Err(e::EINVAL);
    }
    for word in 0..size / 8 {
        let bits = match cpus.saturating_sub(word * 64) {
            n if n >= 64 => u64::MAX,
            n => (1u64 << n) - 1,
        };
        put(mask + word * 8, bits)?;
    }
    Ok(size)
}

/// The wall clock: nanoseconds since 1970.
pub fn realtime_ns() -> u64 {
    info().epoch_ns + now_ns()
}

/// `clock_gettime`.
pub fn clock_gettime(clock: u64, ts: u64) -> LinuxResult {
    if clock > 11 {
        return Err(e::EINVAL);
    }
    let ns = match clock as u32 {
        g::CLOCK_REALTIME | g::CLOCK_REALTIME_COARSE | g::CLOCK_TAI => realtime_ns(),
        _ => now_ns(),
    };
    put(
        ts,
        g::__kernel_timespec {
            tv_sec: (ns / 1_000_000_000) as i64,
            tv_nsec: (ns % 1_000_000_000) as i64,
        },
    )
}

/// `gettimeofday`.
pub fn gettimeofday(tv: u64) -> LinuxResult {
    if tv == 0 {
        return Ok(0);
    }
    let ns = realtime_ns();
    put(
        tv,
        g::__kernel_old_timeval {
            tv_sec: (ns / 1_000_000_000) as _,
            tv_usec: ((ns % 1_000_000_000) / 1000) as _,
        },
    )
}

/// `time`.
pub fn time(t: u64) -> LinuxResult {
    let s = realtime_ns() / 1_000_000_000;
    if t != 0 {
        put(t, s)?;
    }
    Ok(s)
}

/// Sleep until `deadline` (ns since boot), giving the CPU away; a
/// signal to deliver ends it early (the restart code: EINTR once a
/// handler runs), with the time left written to `rem` if not 0.
fn sleep_until(deadline: u64, rem: u64) -> LinuxResult {
    let mut round = 0;
    loop {
        let now = now_ns();
        if now >= deadline {
            return Ok(0);
        }
        if crate::signal::interrupted() {
            if rem != 0 {
                let left = deadline - now;
                let ts = g::__kernel_timespec {
                    tv_sec: (left / 1_000_000_000) as _,
                    tv_nsec: (left % 1_000_000_000) as _,
                };
                // SAFETY: the program's memory.
                unsafe { core::ptr::write_unaligned(rem as *mut g::__kernel_timespec, ts) };
            }
            return Err(crate::signal::ERESTARTNOHAND);
        }
        k42_rt::sys::yield_now(round);
        round = round.saturating_add(1);
    }
}

/// The program's timespec at `ptr`, in nanoseconds.
fn timespec_ns(ptr: u64) -> Result<u64, u32> {
    if ptr == 0 {
        return Err(e::EFAULT);
    }
    // SAFETY: the program's memory.
    let ts = unsafe { core::ptr::read_unaligned(ptr as *const g::__kernel_timespec) };
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return Err(e::EINVAL);
    }
    Ok((ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64)
}

/// `nanosleep`.
pub fn nanosleep(req: u64, rem: u64) -> LinuxResult {
    let d = timespec_ns(req)?;
    sleep_until(now_ns().saturating_add(d), rem)
}

/// `clock_nanosleep`.
pub fn clock_nanosleep(_clock: u64, flags: u64, req: u64, rem: u64) -> LinuxResult {
    let d = timespec_ns(req)?;
    if flags & u64::from(g::TIMER_ABSTIME) != 0 {
        sleep_until(d, 0)
    } else {
        sleep_until(now_ns().saturating_add(d), rem)
    }
}

/// `sched_yield`.
pub fn sched_yield() -> LinuxResult {
    k42_rt::sys::yield_now(0);
    Ok(0)
}

/// `prctl`: the name is kept (and read back); other options are EINVAL.
pub fn prctl(option: u64, arg: u64) -> LinuxResult {
    static NAME: k42_rt::sync::SpinLock<[u8; 16]> = k42_rt::sync::SpinLock::new([0; 16]);
    match option as u32 {
        linux_raw_sys::prctl::PR_SET_NAME => {
            let s = crate::files::cstr(arg).unwrap_or(b"");
            let mut n = NAME.lock();
            *n = [0; 16];
            let k = s.len().min(15);
            n[..k].copy_from_slice(&s[..k]);
            Ok(0)
        }
        linux_raw_sys::prctl::PR_GET_NAME => put(arg, *NAME.lock()),
        _ => Err(e::EINVAL),
    }
}
