//! The system's own calls: uname, time, random bytes, limits, sleeping.
//!
//! Time is the TSC: the monotonic clocks count from when it started,
//! `CLOCK_REALTIME` (and `gettimeofday`, `time`) add the wall clock the
//! host had at boot (`ProgramInfo::epoch_ns`).

use k42_abi::syscall::{ProgramInfo, USER_INFO};
use linux_raw_sys::errno as e;
use linux_raw_sys::general as g;

use crate::LinuxResult;

pub fn info() -> &'static ProgramInfo {
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
fn put<T: crate::uaccess::Plain>(ptr: u64, v: T) -> LinuxResult {
    crate::uaccess::write(ptr, &v)?;
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
    let mut chunk = [0u8; 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u64);
        for b in &mut chunk[..n as usize] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        if let Err(err) = crate::uaccess::copy_out(buf + done, &chunk[..n as usize]) {
            return if done == 0 { Err(err) } else { Ok(done) };
        }
        done += n;
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
    if new != 0 {
        // Read (a bad pointer is EFAULT), not applied.
        crate::uaccess::read::<[u64; 2]>(new)?;
    }
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
        Sysinfo {
            uptime: now_ns() / 1_000_000_000,
            loads: [0; 3],
            totalram: k.total_frames * page,
            freeram: k.free_frames * page,
            sharedram: 0,
            bufferram: 0,
            totalswap: 0,
            freeswap: 0,
            procs: k.processes.min(u64::from(u16::MAX)) as u16,
            pad: [0; 3],
            totalhigh: 0,
            freehigh: 0,
            mem_unit: 1,
            pad_end: 0,
        },
    )
}

/// Linux's x86_64 `struct sysinfo` with its padding spelled out (the
/// crate's type has an unsized tail and no `Copy`).
#[derive(Clone, Copy)]
#[repr(C)]
struct Sysinfo {
    uptime: u64,
    loads: [u64; 3],
    totalram: u64,
    freeram: u64,
    sharedram: u64,
    bufferram: u64,
    totalswap: u64,
    freeswap: u64,
    procs: u16,
    pad: [u16; 3],
    totalhigh: u64,
    freehigh: u64,
    mem_unit: u32,
    pad_end: u32,
}

const _: () = assert!(
    core::mem::size_of::<Sysinfo>() == core::mem::size_of::<linux_raw_sys::system::sysinfo>()
);
const _: () = assert!(core::mem::offset_of!(Sysinfo, mem_unit) == 104);

// SAFETY: integers only, every padding byte a named field.
unsafe impl crate::uaccess::Plain for Sysinfo {}

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
                crate::uaccess::write(rem, &ts)?;
            }
            return Err(crate::signal::ERESTARTNOHAND);
        }
        k42_rt::sys::yield_now(round);
        round = round.saturating_add(1);
    }
}

/// The program's timespec at `ptr`, in nanoseconds.
pub fn timespec_ns(ptr: u64) -> Result<u64, u32> {
    let ts: g::__kernel_timespec = crate::uaccess::read(ptr)?;
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
            // Up to 15 bytes, as Linux copies them.
            let mut name = [0u8; 16];
            for (i, b) in name.iter_mut().take(15).enumerate() {
                *b = crate::uaccess::read(arg.wrapping_add(i as u64))?;
                if *b == 0 {
                    break;
                }
            }
            *NAME.lock() = name;
            Ok(0)
        }
        linux_raw_sys::prctl::PR_GET_NAME => put(arg, *NAME.lock()),
        _ => Err(e::EINVAL),
    }
}

/// `sched_getaffinity`: every CPU of the machine (`ProgramInfo::cpus`);
/// a process runs wherever the kernel places it. The size written, as
/// Linux returns it.
pub fn sched_getaffinity(pid: u64, len: u64, mask: u64) -> LinuxResult {
    if pid != 0 && pid != crate::process::getpid()? && k42_rt::sys::raw::GetPgid::call([pid]) < 0 {
        return Err(e::ESRCH);
    }
    let len = len as u32 as u64;
    let cpus = u64::from(info().cpus.max(1));
    let size = cpus.div_ceil(64) * 8;
    if len * 8 < cpus || !len.is_multiple_of(8) {
        return Err(e::EINVAL);
    }
    let mut words = alloc::vec![0u64; (size / 8) as usize];
    for c in 0..cpus {
        words[(c / 64) as usize] |= 1 << (c % 64);
    }
    crate::uaccess::write_array(mask, &words)?;
    Ok(size)
}
