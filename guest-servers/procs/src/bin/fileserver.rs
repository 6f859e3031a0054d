//! `fileserver [shared|distributed]`: the file server, a user-level PPC
//! server with a hierarchical in-memory file system (protocol:
//! `k42_abi::fs`), registered with the name server as `fs`.
//!
//! The server keeps the name space: directories (name → inode) and, for
//! each file, a handle to its memory object in the kernel — the file's
//! FCM, whose page index is the shared or the distributed (DHashTable)
//! implementation as the argument says (default distributed). Opening a
//! file grants the caller its own handle, with which it reads, writes and
//! maps the data with no server in the way; the server only answers
//! name-space requests, each on the caller's CPU (PPC).
//!
//! At start it fills the tree from the image: module `fs/a/b` becomes
//! file `/a/b`. Then it prints `fileserver: ready` and serves.
//!
//! One lock guards the tree; system calls (making, granting, sizing a
//! file object) are made outside it, so that requests on different CPUs
//! overlap in their slow part. A request that finds its file gone in
//! between (a concurrent unlink) starts again.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use core::sync::atomic::{AtomicU64, Ordering};
use k42_abi::fs::{self as proto, FsError, KIND_DIR, KIND_FILE, Stat, open};
use k42_abi::syscall::{SyscallError, file};
use k42_rt::fs::{self as rtfs, Error};
use k42_rt::sync::SpinLock;
use k42_rt::{Start, ppc, println, process};
use zerocopy::IntoBytes;

k42_rt::main!(run);

const STACK: u64 = 16 * 4096;
const ROOT: u64 = 1;

enum Node {
    Dir(BTreeMap<String, u64>),
    /// The server's handle to the file's memory object.
    File(u64),
}

struct Tree {
    nodes: BTreeMap<u64, Node>,
    next_ino: u64,
}

static TREE: SpinLock<Tree> = SpinLock::new(Tree {
    nodes: BTreeMap::new(),
    next_ino: ROOT + 1,
});

/// The kind of page index new files get.
static KIND: AtomicU64 = AtomicU64::new(file::KIND_DISTRIBUTED);

type R<T> = Result<T, Error>;

fn run(start: Start) -> u8 {
    match process::args(start.info).nth(1) {
        None | Some("distributed") => {}
        Some("shared") => KIND.store(file::KIND_SHARED, Ordering::Relaxed),
        Some(other) => {
            println!("fileserver: unknown page index {other:?} (shared or distributed)");
            return 2;
        }
    }
    TREE.lock().nodes.insert(ROOT, Node::Dir(BTreeMap::new()));
    let files = match populate() {
        Ok(n) => n,
        Err(e) => {
            println!("fileserver: cannot fill the tree from the image: {e}");
            return 1;
        }
    };
    let cpus = process::cpus() as u64;
    let (Ok(stacks), Ok(msgs)) = (
        process::map_anon((cpus + 1) * STACK),
        process::map_anon(cpus * ppc::MAX as u64),
    ) else {
        println!("fileserver: cannot map stacks and buffers");
        return 1;
    };
    // A helper registers the name once this process serves (on the
    // stack past the CPUs').
    FILES.store(files, Ordering::Relaxed);
    let top = stacks + (cpus + 1) * STACK - 8;
    if let Err(e) = ppc::register_when_serving(proto::SERVICE, top, registered) {
        println!(
            "fileserver: cannot start its registration thread: {}",
            e.describe()
        );
        return 1;
    }
    let e = ppc::serve(entry, stacks, STACK, msgs);
    println!("fileserver: cannot serve: {}", e.describe());
    1
}

/// Files filled from the image (for the ready line).
static FILES: AtomicU64 = AtomicU64::new(0);

fn registered(r: Result<(), SyscallError>) {
    match r {
        Ok(()) => {
            let kind = if KIND.load(Ordering::Relaxed) == file::KIND_SHARED {
                "shared"
            } else {
                "distributed"
            };
            let files = FILES.load(Ordering::Relaxed);
            println!("fileserver: ready ({files} files from the image, {kind} page index)");
        }
        Err(e) => {
            println!(
                "fileserver: cannot register {:?}: {}",
                proto::SERVICE,
                e.describe()
            );
            k42_rt::exit(1)
        }
    }
}

/// Files from the image: module `fs/a/b` → `/a/b`; how many.
fn populate() -> R<u64> {
    let mut files = 0;
    for i in 0.. {
        let (name, size) = match rtfs::module_info(i) {
            Ok(m) => m,
            Err(Error::Sys(SyscallError::NoSuchProgram)) => return Ok(files),
            Err(e) => return Err(e),
        };
        let Some(path) = name.strip_prefix("fs/") else {
            continue;
        };
        let path = alloc::format!("/{path}");
        // Directories on the way.
        let mut at = 0;
        while let Some(slash) = path[at + 1..].find('/') {
            at += 1 + slash;
            match mkdir(&path[..at]) {
                Ok(_) | Err(Error::Fs(FsError::Exists)) => {}
                Err(e) => return Err(e),
            }
        }
        let h = create_file(&path, KIND.load(Ordering::Relaxed))?;
        let mut buf = alloc::vec![0u8; rtfs::MAX_IO];
        let mut off = 0;
        while off < size {
            let n = rtfs::module_read(i, off, &mut buf)?;
            rtfs::file_write(h, off, &buf[..n], false)?;
            off += n as u64;
        }
        files += 1;
    }
    Ok(files)
}

/// The server's method table: one request on this CPU.
extern "C" fn entry(caller: u64, method: u64, arg: u64, msg: *mut u8, len: u64) -> ! {
    // SAFETY: the kernel put `len` bytes at `msg`, this CPU's buffer
    // (MAX bytes), for this call alone.
    let buf = unsafe { core::slice::from_raw_parts_mut(msg, ppc::MAX) };
    let len = (len as usize).min(ppc::MAX);
    // The request, copied: the reply is written over the buffer.
    let mut copy = [0u8; ppc::MAX];
    copy[..len].copy_from_slice(&buf[..len]);
    let m = &copy[..len];
    let mut reply = 0;
    let r = match method {
        proto::OPEN => path(m).and_then(|p| {
            let (h, st) = open_file(p, arg, caller)?;
            reply = put_stat(buf, &st);
            Ok(h)
        }),
        proto::STAT => path(m).and_then(|p| {
            let st = stat(p)?;
            reply = put_stat(buf, &st);
            Ok(0)
        }),
        proto::MKDIR => path(m).and_then(mkdir),
        proto::READDIR => {
            let mut out = [0u8; ppc::MAX];
            let r = path(m).and_then(|p| readdir(p, arg, &mut out, &mut reply));
            buf[..reply].copy_from_slice(&out[..reply]);
            r
        }
        proto::UNLINK => path(m).and_then(unlink),
        proto::RMDIR => path(m).and_then(rmdir),
        proto::RENAME => {
            let split = (arg as usize).min(len);
            path(&m[..split]).and_then(|from| path(&m[split..]).and_then(|to| rename(from, to)))
        }
        proto::TRUNCATE => path(m).and_then(|p| truncate(p, arg)),
        _ => Err(Error::Sys(SyscallError::NoSuchMethod)),
    };
    let result = match r {
        Ok(v) => v as i64,
        Err(Error::Sys(e)) => e as i64,
        Err(Error::Fs(e)) => e as i64,
        Err(Error::BadFd) => SyscallError::InvalidArgument as i64,
    };
    if result < 0 {
        reply = 0;
    }
    ppc::reply(result, reply)
}

fn put_stat(buf: &mut [u8], st: &Stat) -> usize {
    let b = st.as_bytes();
    buf[..b.len()].copy_from_slice(b);
    b.len()
}

/// A message as a checked path: absolute, names of 1..=MAX_NAME bytes,
/// no `.` or `..`.
fn path(msg: &[u8]) -> R<&str> {
    let bad = Error::Fs(FsError::BadPath);
    let p = core::str::from_utf8(msg).map_err(|_| bad)?;
    if p.len() > proto::MAX_PATH || !p.starts_with('/') {
        return Err(bad);
    }
    if p != "/" {
        for name in p[1..].split('/') {
            if name.is_empty() || name.len() > proto::MAX_NAME || name == "." || name == ".." {
                return Err(bad);
            }
        }
    }
    Ok(p)
}

fn names(p: &str) -> impl Iterator<Item = &str> {
    p.split('/').filter(|n| !n.is_empty())
}

impl Tree {
    fn lookup(&self, p: &str) -> R<u64> {
        let mut ino = ROOT;
        for name in names(p) {
            match self.nodes.get(&ino) {
                Some(Node::Dir(d)) => {
                    ino = *d.get(name).ok_or(Error::Fs(FsError::NotFound))?;
                }
                _ => return Err(Error::Fs(FsError::NotADirectory)),
            }
        }
        Ok(ino)
    }

    /// The directory holding `p`'s last name, and the name (`Invalid`
    /// for the root).
    fn parent<'p>(&self, p: &'p str) -> R<(u64, &'p str)> {
        let cut = p.rfind('/').ok_or(Error::Fs(FsError::BadPath))?;
        let name = &p[cut + 1..];
        if name.is_empty() {
            return Err(Error::Fs(FsError::Invalid));
        }
        let dir = self.lookup(if cut == 0 { "/" } else { &p[..cut] })?;
        match self.nodes.get(&dir) {
            Some(Node::Dir(_)) => Ok((dir, name)),
            _ => Err(Error::Fs(FsError::NotADirectory)),
        }
    }

    /// `p`'s directory, last name and inode (`NotFound` if it is not
    /// there).
    fn entry<'p>(&mut self, p: &'p str) -> R<(u64, &'p str, u64)> {
        let (dir, name) = self.parent(p)?;
        let ino = *self
            .dir_mut(dir)
            .get(name)
            .ok_or(Error::Fs(FsError::NotFound))?;
        Ok((dir, name, ino))
    }

    fn dir_mut(&mut self, ino: u64) -> &mut BTreeMap<String, u64> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => d,
            _ => unreachable!("checked to be a directory"),
        }
    }

    fn add(&mut self, dir: u64, name: &str, node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.dir_mut(dir).insert(String::from(name), ino);
        ino
    }
}

/// Make file `p` (new, empty) with a page index of `kind`; the
/// server's handle.
fn create_file(p: &str, kind: u64) -> R<u64> {
    let h = rtfs::file_create(kind)?;
    let mut t = TREE.lock();
    let r = t.parent(p).and_then(|(dir, name)| {
        if t.nodes
            .get(&dir)
            .is_some_and(|n| matches!(n, Node::Dir(d) if d.contains_key(name)))
        {
            return Err(Error::Fs(FsError::Exists));
        }
        t.add(dir, name, Node::File(h));
        Ok(h)
    });
    drop(t);
    if r.is_err() {
        let _ = rtfs::file_close(h);
    }
    r
}

/// OPEN: find or make `p`, then grant `caller` a handle with the rights
/// `flags` ask for.
fn open_file(p: &str, flags: u64, caller: u64) -> R<(u64, Stat)> {
    let both = open::SHARED_INDEX | open::DISTRIBUTED_INDEX;
    if flags & !open::ALL != 0
        || flags & (open::READ | open::WRITE) == 0
        || (flags & open::TRUNCATE != 0 && flags & open::WRITE == 0)
        || flags & both == both
    {
        return Err(Error::Sys(SyscallError::InvalidArgument));
    }
    let kind = if flags & open::SHARED_INDEX != 0 {
        file::KIND_SHARED
    } else if flags & open::DISTRIBUTED_INDEX != 0 {
        file::KIND_DISTRIBUTED
    } else {
        KIND.load(Ordering::Relaxed)
    };
    let rights = if flags & open::READ != 0 {
        file::RIGHT_READ
    } else {
        0
    } | if flags & open::WRITE != 0 {
        file::RIGHT_WRITE
    } else {
        0
    };
    loop {
        let found = {
            let t = TREE.lock();
            match t.lookup(p) {
                Ok(ino) => match t.nodes.get(&ino) {
                    Some(Node::File(h)) => Some((ino, *h)),
                    _ => return Err(Error::Fs(FsError::IsADirectory)),
                },
                Err(Error::Fs(FsError::NotFound)) if flags & open::CREATE != 0 => None,
                Err(e) => return Err(e),
            }
        };
        let (ino, h) = match found {
            Some(_) if flags & open::CREATE != 0 && flags & open::EXCLUSIVE != 0 => {
                return Err(Error::Fs(FsError::Exists));
            }
            Some(f) => f,
            None => match create_file(p, kind) {
                Ok(h) => {
                    let t = TREE.lock();
                    match t.lookup(p) {
                        Ok(ino) => (ino, h),
                        // Gone again already: start over.
                        Err(_) => continue,
                    }
                }
                // Made by another caller in between: open that one.
                Err(Error::Fs(FsError::Exists)) if flags & open::EXCLUSIVE == 0 => continue,
                Err(e) => return Err(e),
            },
        };
        // Outside the lock; a file unlinked meanwhile has a closed handle
        // (BadHandle): start over.
        let step = (|| {
            if flags & open::TRUNCATE != 0 {
                rtfs::file_truncate(h, 0)?;
            }
            let size = rtfs::file_size(h)?;
            let granted = rtfs::file_grant(h, caller, rights)?;
            Ok((granted, size))
        })();
        match step {
            Ok((granted, size)) => return Ok((granted, file_stat(ino, size))),
            Err(Error::Sys(SyscallError::BadHandle)) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn file_stat(ino: u64, size: u64) -> Stat {
    Stat {
        ino,
        kind: KIND_FILE as u64,
        size,
    }
}

fn stat(p: &str) -> R<Stat> {
    loop {
        let (ino, h) = {
            let t = TREE.lock();
            let ino = t.lookup(p)?;
            match t.nodes.get(&ino) {
                Some(Node::Dir(d)) => {
                    return Ok(Stat {
                        ino,
                        kind: KIND_DIR as u64,
                        size: d.len() as u64,
                    });
                }
                Some(Node::File(h)) => (ino, *h),
                None => return Err(Error::Fs(FsError::NotFound)),
            }
        };
        match rtfs::file_size(h) {
            Ok(size) => return Ok(file_stat(ino, size)),
            Err(Error::Sys(SyscallError::BadHandle)) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn mkdir(p: &str) -> R<u64> {
    let mut t = TREE.lock();
    let (dir, name) = t.parent(p).map_err(|e| match e {
        Error::Fs(FsError::Invalid) => Error::Fs(FsError::Exists),
        e => e,
    })?;
    if matches!(t.nodes.get(&dir), Some(Node::Dir(d)) if d.contains_key(name)) {
        return Err(Error::Fs(FsError::Exists));
    }
    t.add(dir, name, Node::Dir(BTreeMap::new()));
    Ok(0)
}

/// READDIR: entries from number `from`, packed into `out`.
fn readdir(p: &str, from: u64, out: &mut [u8; ppc::MAX], used: &mut usize) -> R<u64> {
    let t = TREE.lock();
    let ino = t.lookup(p)?;
    let Some(Node::Dir(d)) = t.nodes.get(&ino) else {
        return Err(Error::Fs(FsError::NotADirectory));
    };
    let mut count = 0;
    for (name, child) in d.iter().skip(from as usize) {
        if *used + 2 + name.len() > out.len() {
            break;
        }
        out[*used] = match t.nodes.get(child) {
            Some(Node::Dir(_)) => KIND_DIR,
            _ => KIND_FILE,
        };
        out[*used + 1] = name.len() as u8;
        out[*used + 2..*used + 2 + name.len()].copy_from_slice(name.as_bytes());
        *used += 2 + name.len();
        count += 1;
    }
    Ok(count)
}

fn unlink(p: &str) -> R<u64> {
    let h = {
        let mut t = TREE.lock();
        let (dir, name, ino) = t.entry(p)?;
        let Some(Node::File(h)) = t.nodes.get(&ino) else {
            return Err(Error::Fs(FsError::IsADirectory));
        };
        let h = *h;
        t.dir_mut(dir).remove(name);
        t.nodes.remove(&ino);
        h
    };
    // Clients' handles keep the data until they close them.
    rtfs::file_close(h)?;
    Ok(0)
}

fn rmdir(p: &str) -> R<u64> {
    let mut t = TREE.lock();
    let (dir, name, ino) = t.entry(p)?;
    match t.nodes.get(&ino) {
        Some(Node::Dir(d)) if !d.is_empty() => return Err(Error::Fs(FsError::NotEmpty)),
        Some(Node::Dir(_)) => {}
        _ => return Err(Error::Fs(FsError::NotADirectory)),
    }
    t.dir_mut(dir).remove(name);
    t.nodes.remove(&ino);
    Ok(0)
}

fn rename(from: &str, to: &str) -> R<u64> {
    let replaced = {
        let mut t = TREE.lock();
        let (fdir, fname, ino) = t.entry(from)?;
        let (tdir, tname) = t.parent(to)?;
        let is_dir = matches!(t.nodes.get(&ino), Some(Node::Dir(_)));
        // A directory may not move under itself.
        if is_dir {
            let mut up = Vec::new();
            let mut at = to;
            while let Some(cut) = at.rfind('/') {
                at = &at[..cut];
                up.push(if at.is_empty() { "/" } else { at });
            }
            if up.iter().any(|a| t.lookup(a) == Ok(ino)) {
                return Err(Error::Fs(FsError::Invalid));
            }
        }
        let old = t.dir_mut(tdir).get(tname).copied();
        let mut replaced = None;
        if let Some(old) = old {
            if old == ino {
                return Ok(0);
            }
            match (t.nodes.get(&old), is_dir) {
                (Some(Node::Dir(d)), true) if d.is_empty() => {}
                (Some(Node::Dir(_)), true) => return Err(Error::Fs(FsError::NotEmpty)),
                (Some(Node::Dir(_)), false) => return Err(Error::Fs(FsError::IsADirectory)),
                (_, true) => return Err(Error::Fs(FsError::NotADirectory)),
                (Some(Node::File(h)), false) => replaced = Some(*h),
                (None, false) => {}
            }
            t.nodes.remove(&old);
        }
        t.dir_mut(fdir).remove(fname);
        t.dir_mut(tdir).insert(String::from(tname), ino);
        replaced
    };
    if let Some(h) = replaced {
        rtfs::file_close(h)?;
    }
    Ok(0)
}

fn truncate(p: &str, size: u64) -> R<u64> {
    loop {
        let h = {
            let t = TREE.lock();
            let ino = t.lookup(p)?;
            match t.nodes.get(&ino) {
                Some(Node::File(h)) => *h,
                _ => return Err(Error::Fs(FsError::IsADirectory)),
            }
        };
        match rtfs::file_truncate(h, size) {
            Ok(()) => return Ok(0),
            Err(Error::Sys(SyscallError::BadHandle)) => continue,
            Err(e) => return Err(e),
        }
    }
}
