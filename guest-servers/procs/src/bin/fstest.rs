//! `fstest MODE`: tests of the file server and the file API
//! (`k42_rt::fs`), run by `tests/fs.rs` with the name server and the
//! file server started first (`nameserver &`, `fileserver &`).
//!
//! - `basic`: every operation and every error, one at a time: image
//!   files, read/write/seek across pages, stat, mkdir, readdir (over
//!   several replies), rename, unlink of an open file, truncate, append,
//!   rights, mmap (shared with read and write), fork sharing descriptors,
//!   a closed descriptor and a closed handle, a bad method and an
//!   oversize message to the server.
//! - `stress ROUNDS`: a thread on every vCPU doing file operations at
//!   once — its own files (create, write, rename, unlink), directories,
//!   appends to one shared log, writes to its own slots of one shared
//!   file — then a check of everything: no lost write, no lost or extra
//!   record, every directory as expected, every file's contents.
//! - `dead`: starts its own file server, kills it, and checks that calls
//!   fail cleanly (StaleHandle) while open files stay readable.
//! - `limit` (with a small `file.max`): files are made until the kernel
//!   refuses one (TooManyHandles, nothing half-made), then one removed
//!   makes room for another.
//!
//! Each mode ends with `fstest MODE: N failures: ok|FAILED`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use k42_abi::fs::{self as proto, FsError, KIND_DIR, KIND_FILE};
use k42_abi::syscall::SyscallError;
use k42_rt::fs::{
    self, Error, O_APPEND, O_CREATE, O_EXCLUSIVE, O_READ, O_TRUNCATE, O_WRITE, Whence,
};
use k42_rt::process::{self, ArgBlock, Ended, Regions};
use k42_rt::sync::wait_until;
use k42_rt::{Start, ppc, println};

k42_rt::main!(run);

const STACK: u64 = 64 * 4096;
const RW: u32 = O_READ | O_WRITE;

static FAILS: AtomicU32 = AtomicU32::new(0);

fn check(what: &str, ok: bool) {
    if !ok {
        println!("fstest: {what}: FAILED");
        FAILS.fetch_add(1, Ordering::Relaxed);
    }
}

fn fs_err(e: FsError) -> Error {
    Error::Fs(e)
}

fn sys_err(e: SyscallError) -> Error {
    Error::Sys(e)
}

fn run(start: Start) -> u8 {
    let mut args = process::args(start.info).skip(1);
    let mode = args.next().unwrap_or("");
    let rounds = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    if mode != "dead"
        && let Err(e) = fs::wait_for_server(100_000)
    {
        println!("fstest {mode}: no file server: {e}");
        return 1;
    }
    match mode {
        "basic" => basic(),
        "stress" => stress(rounds),
        "dead" => dead(),
        "limit" => limit(),
        _ => {
            println!("fstest: unknown mode {mode:?} (basic, stress ROUNDS, dead, limit)");
            return 2;
        }
    }
    let n = FAILS.load(Ordering::Relaxed);
    println!(
        "fstest {mode}: {n} failures: {}",
        if n == 0 { "ok" } else { "FAILED" }
    );
    u8::from(n != 0)
}

/// `len` bytes of a pattern that differs for every `seed` and offset.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (seed
                .wrapping_mul(31)
                .wrapping_add(i as u64 * 7 + i as u64 / 4096)) as u8
        })
        .collect()
}

/// The whole file at `path`.
fn slurp(path: &str) -> Result<Vec<u8>, Error> {
    let fd = fs::open(path, O_READ)?;
    let size = fs::fsize(fd)? as usize;
    let mut buf = vec![0u8; size];
    let n = fs::read(fd, &mut buf)?;
    fs::close(fd)?;
    buf.truncate(n);
    Ok(buf)
}

/// A new file at `path` holding `data`.
fn put(path: &str, data: &[u8]) -> Result<(), Error> {
    let fd = fs::open(path, RW | O_CREATE | O_TRUNCATE)?;
    let n = fs::write(fd, data)?;
    fs::close(fd)?;
    if n != data.len() {
        return Err(sys_err(SyscallError::InvalidArgument));
    }
    Ok(())
}

fn basic() {
    // The image's files: module fs/etc/motd is /etc/motd.
    let motd = slurp("/etc/motd");
    let mut image = None;
    for i in 0.. {
        match fs::module_info(i) {
            Ok((name, size)) if name == "fs/etc/motd" => {
                let mut b = vec![0u8; size as usize];
                let n = fs::module_read(i, 0, &mut b).unwrap_or(0);
                b.truncate(n);
                image = Some(b);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    check(
        "/etc/motd holds the image's fs/etc/motd",
        matches!((&motd, &image), (Ok(a), Some(b)) if a == b && !a.is_empty()),
    );
    check(
        "the image's /etc is a directory",
        fs::stat("/etc").is_ok_and(|s| s.kind == KIND_DIR as u64),
    );

    // Write, seek, read, across pages.
    check("mkdir /t", fs::mkdir("/t").is_ok());
    let fd = fs::open("/t/a", RW | O_CREATE | O_EXCLUSIVE);
    check("create /t/a", fd.is_ok());
    let fd = fd.unwrap_or(usize::MAX);
    let data = pattern(1, 100_000);
    check("write 100000 bytes", fs::write(fd, &data) == Ok(data.len()));
    check("size 100000", fs::fsize(fd) == Ok(100_000));
    check("seek to 0", fs::seek(fd, Whence::Start(0)) == Ok(0));
    let mut back = vec![0u8; 100_000];
    check(
        "read it back",
        fs::read(fd, &mut back) == Ok(100_000) && back == data,
    );
    check("read at the end gives 0", fs::read(fd, &mut back) == Ok(0));
    let mut mid = [0u8; 5000];
    check(
        "pread across a page boundary",
        fs::pread(fd, &mut mid, 4000) == Ok(5000) && mid[..] == data[4000..9000],
    );
    check(
        "seek from the end",
        fs::seek(fd, Whence::End(-10)) == Ok(99_990),
    );
    let mut tail = [0u8; 64];
    check(
        "short read at the end",
        fs::read(fd, &mut tail) == Ok(10) && tail[..10] == data[99_990..],
    );
    check(
        "overwrite in the middle",
        fs::seek(fd, Whence::Start(50_000)).is_ok() && fs::write(fd, b"XYZ") == Ok(3),
    );
    check(
        "stat sees the size and kind",
        fs::stat("/t/a").is_ok_and(|s| s.size == 100_000 && s.kind == KIND_FILE as u64),
    );
    check("close", fs::close(fd).is_ok());
    check(
        "the overwrite is there",
        slurp("/t/a").is_ok_and(|b| b[50_000..50_003] == *b"XYZ" && b[50_003..] == data[50_003..]),
    );

    // Name-space errors.
    check(
        "exclusive create of an existing file",
        fs::open("/t/a", RW | O_CREATE | O_EXCLUSIVE) == Err(fs_err(FsError::Exists)),
    );
    check(
        "open of a missing file",
        fs::open("/t/none", O_READ) == Err(fs_err(FsError::NotFound)),
    );
    check(
        "open of a directory",
        fs::open("/t", O_READ) == Err(fs_err(FsError::IsADirectory)),
    );
    check(
        "a file as a directory",
        fs::open("/t/a/b", O_READ | O_CREATE) == Err(fs_err(FsError::NotADirectory)),
    );
    check(
        "mkdir of an existing name",
        fs::mkdir("/t") == Err(fs_err(FsError::Exists)),
    );
    check("mkdir of /", fs::mkdir("/") == Err(fs_err(FsError::Exists)));
    check(
        "mkdir under a missing directory",
        fs::mkdir("/none/x") == Err(fs_err(FsError::NotFound)),
    );
    for bad in ["t", "/t/../a", "/t//a", "/t/", ""] {
        check(
            &format!("bad path {bad:?}"),
            fs::stat(bad) == Err(fs_err(FsError::BadPath)),
        );
    }
    let long = format!("/{}", "x".repeat(proto::MAX_NAME + 1));
    check(
        "a name too long",
        fs::mkdir(&long) == Err(fs_err(FsError::BadPath)),
    );
    let deep = "/d".repeat(101);
    check(
        "a path too long",
        fs::stat(&deep) == Err(fs_err(FsError::BadPath)),
    );
    check(
        "bad open flags",
        fs::open("/t/a", O_TRUNCATE | O_READ) == Err(sys_err(SyscallError::InvalidArgument)),
    );

    // readdir over several replies.
    check("mkdir /t/many", fs::mkdir("/t/many").is_ok());
    let mut want: Vec<String> = (0..30)
        .map(|i| format!("file-with-a-rather-long-name-number-{i:02}"))
        .collect();
    for n in &want {
        check(
            "create in /t/many",
            put(&format!("/t/many/{n}"), b"x").is_ok(),
        );
    }
    check("mkdir /t/many/sub", fs::mkdir("/t/many/sub").is_ok());
    want.push(String::from("sub"));
    want.sort();
    let got = fs::readdir("/t/many");
    check(
        "readdir lists every entry once, in order",
        got.as_ref()
            .is_ok_and(|g| g.iter().map(|e| e.name.clone()).collect::<Vec<_>>() == want),
    );
    check(
        "readdir kinds",
        got.is_ok_and(|g| g.iter().all(|e| (e.name == "sub") == (e.kind == KIND_DIR))),
    );
    check(
        "readdir of a file",
        fs::readdir("/t/a") == Err(fs_err(FsError::NotADirectory)),
    );

    // rename, rmdir, unlink.
    check("rename a file", fs::rename("/t/a", "/t/b").is_ok());
    check(
        "the old name is gone",
        fs::stat("/t/a") == Err(fs_err(FsError::NotFound)),
    );
    check(
        "the new name holds it",
        fs::stat("/t/b").is_ok_and(|s| s.size == 100_000),
    );
    check("a file to replace", put("/t/c", b"old").is_ok());
    check("rename over a file", fs::rename("/t/b", "/t/c").is_ok());
    check(
        "the file replaced",
        fs::stat("/t/c").is_ok_and(|s| s.size == 100_000),
    );
    check(
        "a directory into itself",
        fs::rename("/t", "/t/many/sub/t") == Err(fs_err(FsError::Invalid)),
    );
    check(
        "a directory over a non-empty one",
        fs::mkdir("/t/e").is_ok()
            && fs::rename("/t/e", "/t/many") == Err(fs_err(FsError::NotEmpty)),
    );
    check(
        "a directory moved",
        fs::rename("/t/e", "/t/many/sub/e").is_ok(),
    );
    check(
        "rmdir of a non-empty directory",
        fs::rmdir("/t/many/sub") == Err(fs_err(FsError::NotEmpty)),
    );
    check(
        "rmdir",
        fs::rmdir("/t/many/sub/e").is_ok() && fs::rmdir("/t/many/sub").is_ok(),
    );
    check(
        "rmdir of a file",
        fs::rmdir("/t/c") == Err(fs_err(FsError::NotADirectory)),
    );
    check(
        "unlink of a directory",
        fs::unlink("/t/many") == Err(fs_err(FsError::IsADirectory)),
    );
    check(
        "unlink of a missing file",
        fs::unlink("/t/none") == Err(fs_err(FsError::NotFound)),
    );

    // An unlinked file stays readable through an open descriptor.
    let fd = fs::open("/t/c", O_READ).unwrap_or(usize::MAX);
    check("unlink an open file", fs::unlink("/t/c").is_ok());
    check(
        "its name is gone",
        fs::stat("/t/c") == Err(fs_err(FsError::NotFound)),
    );
    let mut b = [0u8; 16];
    check(
        "still readable while open",
        fs::pread(fd, &mut b, 50_000) == Ok(16) && b[..3] == *b"XYZ",
    );
    check("close it", fs::close(fd).is_ok());
    check(
        "a closed descriptor",
        fs::read(fd, &mut b) == Err(Error::BadFd),
    );

    // truncate (by name and by descriptor): shrinking cuts, growing reads
    // zeros.
    check("truncate target", put("/t/tr", &pattern(2, 10_000)).is_ok());
    check("truncate by name", fs::truncate("/t/tr", 5).is_ok());
    check(
        "cut to 5",
        slurp("/t/tr").is_ok_and(|b| b == pattern(2, 10_000)[..5]),
    );
    let fd = fs::open("/t/tr", RW).unwrap_or(usize::MAX);
    check("grow to 9000", fs::ftruncate(fd, 9000).is_ok());
    check(
        "grown bytes are zeros",
        slurp("/t/tr").is_ok_and(|b| {
            b.len() == 9000 && b[..5] == pattern(2, 5)[..] && b[5..].iter().all(|&c| c == 0)
        }),
    );
    check(
        "truncate a directory",
        fs::truncate("/t", 0) == Err(fs_err(FsError::IsADirectory)),
    );
    check(
        "open with truncate",
        fs::open("/t/tr", RW | O_TRUNCATE)
            .is_ok_and(|f| fs::fsize(f) == Ok(0) && fs::close(f).is_ok()),
    );
    check("close", fs::close(fd).is_ok());

    // Appends from two descriptors go one after the other.
    let a = fs::open("/t/log", RW | O_CREATE | O_APPEND).unwrap_or(usize::MAX);
    let b2 = fs::open("/t/log", O_WRITE | O_APPEND).unwrap_or(usize::MAX);
    check("append 1", fs::write(a, b"one;") == Ok(4));
    check("append 2", fs::write(b2, b"two;") == Ok(4));
    check("append 3", fs::write(a, b"three;") == Ok(6));
    check(
        "appended in order",
        slurp("/t/log").is_ok_and(|b| b == b"one;two;three;"),
    );
    // Rights: a read-only descriptor cannot write, a write-only one
    // cannot read.
    let r = fs::open("/t/log", O_READ).unwrap_or(usize::MAX);
    check(
        "write through a read-only descriptor",
        fs::write(r, b"no") == Err(sys_err(SyscallError::NotPermitted)),
    );
    check(
        "read through a write-only descriptor",
        fs::pread(b2, &mut [0u8; 4], 0) == Err(sys_err(SyscallError::NotPermitted)),
    );
    check(
        "writable map through a read-only descriptor",
        fs::mmap(r, 4096, true).err() == Some(sys_err(SyscallError::NotPermitted)),
    );
    for f in [a, b2, r] {
        check("close", fs::close(f).is_ok());
    }

    // mmap: a mapping shares pages with read and write.
    let fd = fs::open("/t/m", RW | O_CREATE).unwrap_or(usize::MAX);
    let data = pattern(3, 3 * 4096);
    check("write for mmap", fs::write(fd, &data) == Ok(data.len()));
    match fs::mmap(fd, 3 * 4096, true) {
        Ok(p) => {
            // SAFETY: the file is 3 pages long and mapped writable; only
            // this thread touches it while the slice lives.
            let m = unsafe { core::slice::from_raw_parts_mut(p, 3 * 4096) };
            check("the mapping shows the file", m[..] == data[..]);
            m[5000] = 0xa5;
            m[8191] = 0x5a;
            let mut b = [0u8; 2];
            check(
                "a store through the mapping is read back",
                fs::pread(fd, &mut b[..1], 5000) == Ok(1)
                    && b[0] == 0xa5
                    && fs::pread(fd, &mut b[1..], 8191) == Ok(1)
                    && b[1] == 0x5a,
            );
            check(
                "a write is seen through the mapping",
                fs::seek(fd, Whence::Start(100)).is_ok()
                    && fs::write(fd, b"MAP") == Ok(3)
                    // SAFETY: as above; read after the kernel's write.
                    && unsafe { core::ptr::read_volatile(p.add(100)) } == b'M',
            );
            // A write from the mapping into the file itself (the buffer
            // is the file's own page, the kernel faults its pages in
            // before taking the file's lock).
            check(
                "a write whose buffer maps the same file",
                fs::seek(fd, Whence::Start(3 * 4096)).is_ok()
                    && fs::write(fd, &m[4096..8192]) == Ok(4096)
                    && fs::pread(fd, &mut b[..1], 3 * 4096 + 5000 - 4096) == Ok(1)
                    && b[0] == 0xa5,
            );
            // Stores past the end do not leak into the file when it grows.
            let q = fs::open("/t/grow", RW | O_CREATE).unwrap_or(usize::MAX);
            let grown = fs::write(q, b"abc") == Ok(3)
                && fs::mmap(q, 4096, true).is_ok_and(|g| {
                    // SAFETY: one page mapped writable, this thread only.
                    unsafe { core::ptr::write_volatile(g.add(100), 0x77) };
                    let mut c = [1u8; 200];
                    fs::ftruncate(q, 200).is_ok()
                        && fs::pread(q, &mut c, 0) == Ok(200)
                        && c[..3] == *b"abc"
                        && c[3..].iter().all(|&x| x == 0)
                });
            check("a grown file reads zeros past its old end", grown);
            let _ = fs::close(q);
            // The buffer is an untouched hole of a mapping of the file
            // written to: its fault needs the file's lock, taken after.
            let sp = fs::open("/t/sparse", RW | O_CREATE).unwrap_or(usize::MAX);
            let sparse = fs::ftruncate(sp, 8192).is_ok()
                && fs::mmap(sp, 8192, true).is_ok_and(|g| {
                    // SAFETY: two pages mapped; the second untouched.
                    let hole = unsafe { core::slice::from_raw_parts(g.add(4096), 4096) };
                    fs::seek(sp, Whence::Start(0)).is_ok()
                        && fs::write(sp, hole) == Ok(4096)
                        && fs::fsize(sp) == Ok(8192)
                });
            check("a write from a hole of the file's own mapping", sparse);
            // A byte at the largest offset, then cut: quick, whatever the
            // offset (the index is emptied by entries, not by range).
            let far = k42_abi::syscall::file::MAX_SIZE - 1;
            check(
                "a byte at the largest offset, then cut",
                fs::seek(sp, Whence::Start(far)).is_ok()
                    && fs::write(sp, b"z") == Ok(1)
                    && fs::fsize(sp) == Ok(far + 1)
                    && fs::pread(sp, &mut b[..1], far) == Ok(1)
                    && b[0] == b'z'
                    && fs::ftruncate(sp, 0).is_ok(),
            );
            check(
                "past the largest size",
                fs::seek(sp, Whence::Start(far + 1)).is_ok()
                    && fs::write(sp, b"z") == Err(sys_err(SyscallError::InvalidArgument)),
            );
            let _ = fs::close(sp);
        }
        Err(e) => check(&format!("mmap: {e}"), false),
    }
    match fs::mmap(fd, 4096, false) {
        // SAFETY: one page mapped read-only; read after the writes above.
        Ok(p) => check("a read-only mapping", unsafe {
            core::slice::from_raw_parts(p, 4096)[100..103] == *b"MAP"
        }),
        Err(e) => check(&format!("read-only mmap: {e}"), false),
    }

    // A forked child shares the descriptors (and their handles).
    match process::fork() {
        Ok(0) => {
            let mut b = [0u8; 3];
            let ok = fs::pread(fd, &mut b, 100) == Ok(3) && b == *b"MAP";
            k42_rt::exit(if ok { 0 } else { 1 })
        }
        Ok(pid) => check(
            "a forked child reads its parent's descriptor",
            matches!(process::wait(Some(pid)), Ok((_, Ended::Exited(0)))),
        ),
        Err(e) => check(&format!("fork: {}", e.describe()), false),
    }

    // A closed handle is refused by the kernel, a handle with rights it
    // never had too.
    let h = fs::handle_of(fd).unwrap_or(0);
    check("close", fs::close(fd).is_ok());
    check(
        "a closed handle",
        fs::file_read(h, 0, &mut [0u8; 4]) == Err(sys_err(SyscallError::BadHandle)),
    );
    check(
        "a handle never given",
        fs::file_size(0x7777_0000_0001) == Err(sys_err(SyscallError::BadHandle)),
    );
    check(
        "a bad file kind",
        fs::file_create(9) == Err(sys_err(SyscallError::InvalidArgument)),
    );
    check(
        "a read into a bad address",
        fs::open("/t/m", O_READ).is_ok_and(|f| {
            let h = fs::handle_of(f).unwrap_or(0);
            let r = k42_rt::sys::syscall5(k42_abi::syscall::Syscall::FileRead, [h, 0, 0x10, 16, 0]);
            let _ = fs::close(f);
            r == SyscallError::BadAddress as i64
        }),
    );

    // PPC errors from the server itself.
    let server = fs::server().unwrap_or(0);
    let mut msg = [0u8; ppc::MAX + 64];
    msg[..2].copy_from_slice(b"/t");
    check(
        "a bad method number",
        ppc::call(server, 99, 0, &mut msg, 2) == Err(SyscallError::NoSuchMethod),
    );
    check(
        "an oversize message",
        ppc::call_raw_len(server, proto::STAT, &mut msg, ppc::MAX as u64 + 1)
            == SyscallError::TooLong as i64,
    );
    check(
        "a stale server handle",
        ppc::call(server ^ 0xffff, proto::STAT, 0, &mut msg, 2) == Err(SyscallError::StaleHandle),
    );
}

// ---- stress ----

static ROUNDS: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);

const RECORD: usize = 16;

fn size_of(i: u64, r: u64) -> usize {
    100 + ((i * 7919 + r * 997) % 6000) as usize
}

fn stress(rounds: u64) {
    let cpus = process::cpus() as u64;
    ROUNDS.store(rounds, Ordering::Relaxed);
    check("mkdir /s", fs::mkdir("/s").is_ok());
    check("the shared file", put("/s/shared", &[]).is_ok());
    check("the log", put("/s/log", &[]).is_ok());
    if let Err(e) = process::threads_on_cpus(cpus, stress_thread, STACK, |i| i) {
        check(&format!("threads: {}", e.describe()), false);
        return;
    }
    stress_body(0);
    wait_until(|| DONE.load(Ordering::Acquire) >= cpus as u32);
    // The shared log: every (thread, round) record exactly once, whole.
    match slurp("/s/log") {
        Ok(log) => {
            check("log size", log.len() == (cpus * rounds) as usize * RECORD);
            let mut seen = vec![false; (cpus * rounds) as usize];
            for rec in log.chunks(RECORD) {
                let text = core::str::from_utf8(rec).unwrap_or("");
                let parsed = text
                    .trim_end()
                    .strip_prefix("rec ")
                    .and_then(|t| t.split_once(','))
                    .and_then(|(i, r)| Some((i.parse::<u64>().ok()?, r.parse::<u64>().ok()?)));
                match parsed {
                    Some((i, r)) if i < cpus && r < rounds && !seen[(i * rounds + r) as usize] => {
                        seen[(i * rounds + r) as usize] = true;
                    }
                    _ => check(&format!("log record {text:?}"), false),
                }
            }
            check("every record logged", seen.iter().all(|&s| s));
        }
        Err(e) => check(&format!("read the log: {e}"), false),
    }
    // The shared file: every slot holds its writer's value.
    match slurp("/s/shared") {
        Ok(b) => {
            check("shared file size", b.len() == (cpus * rounds * 8) as usize);
            for (slot, v) in b.chunks(8).enumerate() {
                let want = (slot as u64) ^ 0x5eed_0000_0000;
                if v != want.to_le_bytes() {
                    check(&format!("shared slot {slot}"), false);
                    break;
                }
            }
        }
        Err(e) => check(&format!("read the shared file: {e}"), false),
    }
    // Each thread's directory: the files it kept, with their contents.
    for i in 0..cpus {
        let dir = format!("/s/d{i}");
        let mut want = Vec::new();
        for r in 0..rounds {
            if r % 5 == 4 {
                continue;
            }
            want.push(format!("{}{r:03}", if r % 3 == 2 { "g" } else { "f" }));
        }
        want.sort();
        match fs::readdir(&dir) {
            Ok(got) => {
                let names: Vec<String> = got.into_iter().map(|e| e.name).collect();
                check(&format!("{dir} lists what its thread kept"), names == want);
            }
            Err(e) => check(&format!("readdir {dir}: {e}"), false),
        }
        for r in (0..rounds).filter(|r| r % 5 != 4) {
            let p = format!("{dir}/{}{r:03}", if r % 3 == 2 { "g" } else { "f" });
            let ok = slurp(&p).is_ok_and(|b| b == pattern(i * 1000 + r, size_of(i, r)));
            check(&format!("{p} contents"), ok);
        }
    }
    let top: Vec<String> = fs::readdir("/s")
        .map(|g| g.into_iter().map(|e| e.name).collect())
        .unwrap_or_default();
    let mut want: Vec<String> = (0..cpus).map(|i| format!("d{i}")).collect();
    want.push(String::from("log"));
    want.push(String::from("shared"));
    want.sort();
    check("/s lists the directories and the shared files", top == want);
    println!("fstest stress: {cpus} threads x {rounds} rounds checked");
}

extern "C" fn stress_thread(i: u64) -> ! {
    stress_body(i);
    process::thread_exit(0)
}

fn stress_body(i: u64) {
    let rounds = ROUNDS.load(Ordering::Relaxed);
    let fail = |what: &str, e: Error| check(&format!("thread {i}: {what}: {e}"), false);
    let dir = format!("/s/d{i}");
    if let Err(e) = fs::mkdir(&dir) {
        fail("mkdir", e);
    }
    let log = fs::open("/s/log", O_WRITE | O_APPEND);
    let shared = fs::open("/s/shared", O_WRITE);
    if let (Ok(log), Ok(shared)) = (log, shared) {
        for r in 0..rounds {
            let f = format!("{dir}/f{r:03}");
            if let Err(e) = put(&f, &pattern(i * 1000 + r, size_of(i, r))) {
                fail("create", e);
            }
            let rec = format!("{:<width$}", format!("rec {i},{r}"), width = RECORD - 1) + "\n";
            if fs::write(log, rec.as_bytes()) != Ok(RECORD) {
                fail("append", sys_err(SyscallError::InvalidArgument));
            }
            let slot = i * rounds + r;
            let v = (slot ^ 0x5eed_0000_0000).to_le_bytes();
            if let Err(e) =
                fs::seek(shared, Whence::Start(slot * 8)).and_then(|_| fs::write(shared, &v))
            {
                fail("shared write", e);
            }
            if r % 3 == 2
                && let Err(e) = fs::rename(&f, &format!("{dir}/g{r:03}"))
            {
                fail("rename", e);
            }
            if r % 5 == 4 {
                let p = format!("{dir}/{}{r:03}", if r % 3 == 2 { "g" } else { "f" });
                if let Err(e) = fs::unlink(&p) {
                    fail("unlink", e);
                }
            }
            let tmp = format!("{dir}/tmp");
            if let Err(e) = fs::mkdir(&tmp).and_then(|_| fs::rmdir(&tmp)) {
                fail("mkdir+rmdir", e);
            }
        }
        for fd in [log, shared] {
            let _ = fs::close(fd);
        }
    } else {
        fail(
            "open the shared files",
            sys_err(SyscallError::InvalidArgument),
        );
    }
    DONE.fetch_add(1, Ordering::AcqRel);
}

// ---- dead ----

/// A file server of its own, killed: name-space calls fail cleanly, open
/// files stay readable, nothing hangs.
fn dead() {
    let mut a = ArgBlock::new();
    a.arg("fileserver");
    let pid = match process::spawn("fileserver", &mut a, Regions::Shared) {
        Ok(p) => p,
        Err(e) => {
            check(&format!("spawn a file server: {}", e.describe()), false);
            return;
        }
    };
    check("the server comes up", fs::wait_for_server(100_000).is_ok());
    let fd = fs::open("/keep", RW | O_CREATE);
    check(
        "a file on it",
        fd.as_ref().is_ok_and(|&f| fs::write(f, b"kept") == Ok(4)),
    );
    check("kill the server", process::kill(pid).is_ok());
    check(
        "it ended killed",
        matches!(process::wait(Some(pid)), Ok((_, Ended::Killed))),
    );
    check(
        "a call to the dead server fails: stale handle",
        fs::stat("/keep") == Err(sys_err(SyscallError::StaleHandle)),
    );
    check(
        "found again by name: still its stale handle",
        fs::stat("/keep") == Err(sys_err(SyscallError::StaleHandle)),
    );
    if let Ok(f) = fd {
        let mut b = [0u8; 4];
        check(
            "an open file stays readable",
            fs::pread(f, &mut b, 0) == Ok(4) && b == *b"kept",
        );
        check("and closes", fs::close(f).is_ok());
    }
}

// ---- limit ----

fn limit() {
    check("mkdir /l", fs::mkdir("/l").is_ok());
    let mut made = 0;
    let err = loop {
        match put(&format!("/l/{made}"), b"data") {
            Ok(()) => made += 1,
            Err(e) => break e,
        }
        if made > 10_000 {
            break sys_err(SyscallError::InvalidArgument);
        }
    };
    println!("fstest limit: {made} files made, then: {err}");
    check(
        "the file limit is TooManyHandles",
        err == sys_err(SyscallError::TooManyHandles),
    );
    check(
        "the refused file was not made",
        fs::stat(&format!("/l/{made}")) == Err(fs_err(FsError::NotFound)),
    );
    check(
        "the files made are whole",
        (0..made).all(|i| slurp(&format!("/l/{i}")).is_ok_and(|b| b == b"data")),
    );
    check("remove one", fs::unlink("/l/0").is_ok());
    check(
        "and there is room for another",
        put("/l/again", b"data").is_ok(),
    );
}
