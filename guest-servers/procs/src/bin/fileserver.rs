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
//! file `/a/b` (0755 if it starts as a program does, ELF or `#!`, else
//! 0644), and each line of module `fs.links` a symbolic link
//! (`k42_abi::boot::LINKS_MODULE`). Then it prints `fileserver: ready`
//! and serves.
//!
//! Every inode has permission bits, a link count and a modification time
//! (when it was made, or set; writes through handles go to the kernel's
//! file object and do not change it). Symbolic links are followed as the
//! protocol says, at most `MAX_LINKS_FOLLOWED` per lookup.
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
use k42_abi::boot::{FS_PREFIX, LINKS_MODULE};
use k42_abi::fs::{
    self as proto, DEFAULT_EXEC_MODE, DEFAULT_FILE_MODE, FsError, KIND_DIR, KIND_FILE,
    KIND_SYMLINK, MODE_GIVEN, Stat, open,
};
use k42_abi::syscall::file::FileState;
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
    /// A symbolic link's target.
    Symlink(String),
}

/// An inode: what it is, and its attributes.
struct Inode {
    node: Node,
    mode: u32,
    /// Names of a file (hard links); 1 otherwise.
    names: u32,
    mtime: u64,
}

struct Tree {
    nodes: BTreeMap<u64, Inode>,
    next_ino: u64,
}

/// The wall clock: nanoseconds since 1970 (as the Linux personality
/// reads it).
fn now_ns() -> u64 {
    let khz = TSC_KHZ.load(Ordering::Relaxed).max(1);
    EPOCH_NS.load(Ordering::Relaxed) + (k42_rt::rdtsc() as u128 * 1_000_000 / khz as u128) as u64
}

static TSC_KHZ: AtomicU64 = AtomicU64::new(1);
static EPOCH_NS: AtomicU64 = AtomicU64::new(0);

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
    TSC_KHZ.store(start.info.tsc_khz, Ordering::Relaxed);
    EPOCH_NS.store(start.info.epoch_ns, Ordering::Relaxed);
    TREE.lock().nodes.insert(
        ROOT,
        Inode {
            node: Node::Dir(BTreeMap::new()),
            mode: DEFAULT_EXEC_MODE,
            names: 1,
            mtime: now_ns(),
        },
    );
    // The directory every Linux system has for temporary files.
    let _ = mkdir("/tmp", MODE_GIVEN | 0o1777);
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
        if name == LINKS_MODULE {
            add_links(i, size)?;
            continue;
        }
        let Some(path) = name.strip_prefix(FS_PREFIX) else {
            continue;
        };
        let path = alloc::format!("/{path}");
        make_parents(&path)?;
        let mut buf = alloc::vec![0u8; rtfs::MAX_IO];
        let h = create_file(&path, KIND.load(Ordering::Relaxed), DEFAULT_FILE_MODE)?;
        let mut off = 0;
        while off < size {
            let n = rtfs::module_read(i, off, &mut buf)?;
            if off == 0 && (buf[..n].starts_with(b"\x7fELF") || buf[..n].starts_with(b"#!")) {
                chmod(&path, u64::from(DEFAULT_EXEC_MODE))?;
            }
            rtfs::file_write(h, off, &buf[..n], false)?;
            off += n as u64;
        }
        files += 1;
    }
    Ok(files)
}

/// Make the directories on the way to `path`.
fn make_parents(path: &str) -> R<()> {
    let mut at = 0;
    while let Some(slash) = path[at + 1..].find('/') {
        at += 1 + slash;
        match mkdir(&path[..at], 0) {
            Ok(_) | Err(Error::Fs(FsError::Exists)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The image's symbolic links: module `i` (`size` bytes) holds lines
/// `PATH\tTARGET`.
fn add_links(i: usize, size: u64) -> R<()> {
    let mut text = alloc::vec![0u8; size as usize];
    let mut off = 0;
    while off < text.len() {
        let n = rtfs::module_read(i, off as u64, &mut text[off..])?;
        if n == 0 {
            break;
        }
        off += n;
    }
    let text = core::str::from_utf8(&text).map_err(|_| fs_err(FsError::BadPath))?;
    for line in k42_abi::boot::links(text) {
        let (path, target) = line.map_err(|_| fs_err(FsError::BadPath))?;
        make_parents(path)?;
        symlink(target, path)?;
    }
    Ok(())
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
            let st = stat(p, arg & proto::STAT_NOFOLLOW == 0)?;
            reply = put_stat(buf, &st);
            Ok(0)
        }),
        proto::MKDIR => path(m).and_then(|p| mkdir(p, arg)),
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
        proto::SYMLINK => {
            let split = (arg as usize).min(len);
            core::str::from_utf8(&m[..split])
                .map_err(|_| Error::Fs(FsError::BadPath))
                .and_then(|target| path(&m[split..]).and_then(|p| symlink(target, p)))
        }
        proto::READLINK => path(m).and_then(|p| {
            let target = readlink(p)?;
            buf[..target.len()].copy_from_slice(target.as_bytes());
            reply = target.len();
            Ok(target.len() as u64)
        }),
        proto::LINK => {
            let split = (arg as usize).min(len);
            path(&m[..split]).and_then(|from| path(&m[split..]).and_then(|to| link(from, to)))
        }
        proto::CHMOD => path(m).and_then(|p| chmod(p, arg)),
        proto::SET_TIME => path(m).and_then(|p| set_time(p, arg)),
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

fn names(p: &str) -> impl DoubleEndedIterator<Item = &str> {
    p.split('/').filter(|n| !n.is_empty())
}

fn fs_err(e: FsError) -> Error {
    Error::Fs(e)
}

impl Tree {
    fn node(&self, ino: u64) -> R<&Inode> {
        self.nodes.get(&ino).ok_or(fs_err(FsError::NotFound))
    }

    /// The inode `p` names, following symbolic links in every name but
    /// the last, and in the last too if `follow`.
    fn resolve(&self, p: &str, follow: bool) -> R<u64> {
        // Directories from the root down to where the walk is; names
        // still to walk, last first.
        let mut dirs: Vec<u64> = alloc::vec![ROOT];
        let mut todo: Vec<String> = names(p).rev().map(String::from).collect();
        let mut followed = 0;
        while let Some(name) = todo.pop() {
            match name.as_str() {
                "." => continue,
                ".." => {
                    if dirs.len() > 1 {
                        dirs.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let here = *dirs.last().expect("the root stays");
            let Node::Dir(d) = &self.node(here)?.node else {
                return Err(fs_err(FsError::NotADirectory));
            };
            let ino = *d.get(&name).ok_or(fs_err(FsError::NotFound))?;
            match &self.node(ino)?.node {
                Node::Symlink(target) if follow || !todo.is_empty() => {
                    followed += 1;
                    if followed > proto::MAX_LINKS_FOLLOWED {
                        return Err(fs_err(FsError::Loop));
                    }
                    if target.starts_with('/') {
                        dirs.truncate(1);
                    }
                    todo.extend(names(target).rev().map(String::from));
                }
                _ => dirs.push(ino),
            }
        }
        Ok(*dirs.last().expect("the root stays"))
    }

    /// The directory holding `p`'s last name (links on the way followed),
    /// and the name (`Invalid` for the root).
    fn parent<'p>(&self, p: &'p str) -> R<(u64, &'p str)> {
        let cut = p.rfind('/').ok_or(fs_err(FsError::BadPath))?;
        let name = &p[cut + 1..];
        if name.is_empty() {
            return Err(fs_err(FsError::Invalid));
        }
        let dir = self.resolve(if cut == 0 { "/" } else { &p[..cut] }, true)?;
        match self.node(dir)?.node {
            Node::Dir(_) => Ok((dir, name)),
            _ => Err(fs_err(FsError::NotADirectory)),
        }
    }

    /// `p`'s directory, last name and inode, the last name not followed
    /// (`NotFound` if it is not there).
    fn entry<'p>(&mut self, p: &'p str) -> R<(u64, &'p str, u64)> {
        let (dir, name) = self.parent(p)?;
        let ino = *self
            .entries(dir)
            .get(name)
            .ok_or(fs_err(FsError::NotFound))?;
        Ok((dir, name, ino))
    }

    /// Directory `ino`'s entries.
    fn entries(&self, ino: u64) -> &BTreeMap<String, u64> {
        match self.nodes.get(&ino).map(|n| &n.node) {
            Some(Node::Dir(d)) => d,
            _ => unreachable!("checked to be a directory"),
        }
    }

    /// Directory `ino`'s entries, to change: its modification time is
    /// now, as Linux's is when an entry comes or goes.
    fn dir_mut(&mut self, ino: u64) -> &mut BTreeMap<String, u64> {
        let inode = self.nodes.get_mut(&ino);
        match inode {
            Some(Inode {
                node: Node::Dir(d),
                mtime,
                ..
            }) => {
                *mtime = now_ns();
                d
            }
            _ => unreachable!("checked to be a directory"),
        }
    }

    /// Whether directory `dir` has `name`.
    fn has(&self, dir: u64, name: &str) -> bool {
        matches!(self.nodes.get(&dir).map(|n| &n.node), Some(Node::Dir(d)) if d.contains_key(name))
    }

    fn add(&mut self, dir: u64, name: &str, node: Node, mode: u32) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        let inode = Inode {
            node,
            mode,
            names: 1,
            mtime: now_ns(),
        };
        self.nodes.insert(ino, inode);
        self.dir_mut(dir).insert(String::from(name), ino);
        ino
    }

    /// Take name `name` out of directory `dir` (inode `ino`): the inode
    /// goes with its last name; returns a file's handle to close then.
    fn drop_name(&mut self, dir: u64, name: &str, ino: u64) -> Option<u64> {
        self.dir_mut(dir).remove(name);
        let inode = self.nodes.get_mut(&ino)?;
        inode.names = inode.names.saturating_sub(1);
        if inode.names > 0 {
            return None;
        }
        match self.nodes.remove(&ino)?.node {
            Node::File(h) => Some(h),
            _ => None,
        }
    }

    /// `ino`'s attributes; a file's size and time are `file`'s (its
    /// memory object's, which writes keep).
    fn stat_of(&self, ino: u64, file: FileState) -> R<Stat> {
        let inode = self.node(ino)?;
        let mut mtime = inode.mtime;
        let (kind, size, nlink) = match &inode.node {
            Node::Dir(d) => {
                let subdirs = d
                    .values()
                    .filter(|c| matches!(self.nodes.get(c).map(|n| &n.node), Some(Node::Dir(_))))
                    .count() as u32;
                (KIND_DIR, d.len() as u64, 2 + subdirs)
            }
            Node::File(_) => {
                mtime = file.mtime;
                (KIND_FILE, file.size, inode.names)
            }
            Node::Symlink(t) => (KIND_SYMLINK, t.len() as u64, 1),
        };
        Ok(Stat {
            ino,
            kind: u64::from(kind),
            size,
            mode: inode.mode,
            nlink,
            mtime,
        })
    }
}

/// The permission bits in a MKDIR argument or OPEN flags (shifted down),
/// or `default` when none are given.
fn mode_of(word: u64, default: u32) -> u32 {
    if word & MODE_GIVEN != 0 {
        (word & 0o7777) as u32
    } else {
        default
    }
}

/// Make file `p` (new, empty) with a page index of `kind` and permission
/// bits `mode`; the server's handle.
fn create_file(p: &str, kind: u64, mode: u32) -> R<u64> {
    let h = rtfs::file_create(kind)?;
    let mut t = TREE.lock();
    let r = t.parent(p).and_then(|(dir, name)| {
        if t.has(dir, name) {
            return Err(fs_err(FsError::Exists));
        }
        t.add(dir, name, Node::File(h), mode);
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
    let mode_word = flags >> open::MODE_SHIFT;
    let flags = flags & ((1 << open::MODE_SHIFT) - 1);
    if flags & !(open::ALL | MODE_GIVEN) != 0
        || mode_word > 0o7777
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
    let mode = mode_of(mode_word | (flags & MODE_GIVEN), DEFAULT_FILE_MODE);
    let flags = flags & open::ALL;
    loop {
        let found = {
            let t = TREE.lock();
            match t.resolve(p, true) {
                Ok(ino) => match t.node(ino)?.node {
                    Node::File(h) => Some((ino, h)),
                    _ => return Err(fs_err(FsError::IsADirectory)),
                },
                Err(Error::Fs(FsError::NotFound)) if flags & open::CREATE != 0 => None,
                Err(e) => return Err(e),
            }
        };
        let (ino, h) = match found {
            Some(_) if flags & open::CREATE != 0 && flags & open::EXCLUSIVE != 0 => {
                return Err(fs_err(FsError::Exists));
            }
            Some(f) => f,
            None => match create_file(p, kind, mode) {
                Ok(h) => {
                    let t = TREE.lock();
                    match t.resolve(p, true) {
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
            let state = rtfs::file_stat(h)?;
            let granted = rtfs::file_grant(h, caller, rights)?;
            Ok((granted, state))
        })();
        match step {
            Ok((granted, state)) => {
                let st = TREE.lock().stat_of(ino, state);
                match st {
                    Ok(st) => return Ok((granted, st)),
                    Err(_) => {
                        // Gone meanwhile: give the handle back, start over.
                        let _ = rtfs::file_close(granted);
                        continue;
                    }
                }
            }
            Err(Error::Sys(SyscallError::BadHandle)) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn stat(p: &str, follow: bool) -> R<Stat> {
    loop {
        let (ino, h) = {
            let t = TREE.lock();
            let ino = t.resolve(p, follow)?;
            match t.node(ino)?.node {
                Node::File(h) => (ino, h),
                _ => return t.stat_of(ino, FileState::default()),
            }
        };
        let state = match rtfs::file_stat(h) {
            Ok(state) => state,
            Err(Error::Sys(SyscallError::BadHandle)) => continue,
            Err(e) => return Err(e),
        };
        match TREE.lock().stat_of(ino, state) {
            Ok(st) => return Ok(st),
            Err(_) => continue,
        }
    }
}

fn mkdir(p: &str, arg: u64) -> R<u64> {
    let mut t = TREE.lock();
    let (dir, name) = t.parent(p).map_err(|e| match e {
        Error::Fs(FsError::Invalid) => fs_err(FsError::Exists),
        e => e,
    })?;
    if t.has(dir, name) {
        return Err(fs_err(FsError::Exists));
    }
    t.add(
        dir,
        name,
        Node::Dir(BTreeMap::new()),
        mode_of(arg, DEFAULT_EXEC_MODE),
    );
    Ok(0)
}

/// READDIR: entries from number `from`, packed into `out`.
fn readdir(p: &str, from: u64, out: &mut [u8; ppc::MAX], used: &mut usize) -> R<u64> {
    let t = TREE.lock();
    let ino = t.resolve(p, true)?;
    let Node::Dir(d) = &t.node(ino)?.node else {
        return Err(fs_err(FsError::NotADirectory));
    };
    let mut count = 0;
    for (name, child) in d.iter().skip(from as usize) {
        if *used + 2 + name.len() > out.len() {
            break;
        }
        out[*used] = match t.nodes.get(child).map(|n| &n.node) {
            Some(Node::Dir(_)) => KIND_DIR,
            Some(Node::Symlink(_)) => KIND_SYMLINK,
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
        if let Node::Dir(_) = t.node(ino)?.node {
            return Err(fs_err(FsError::IsADirectory));
        }
        t.drop_name(dir, name, ino)
    };
    // Clients' handles keep the data until they close them.
    if let Some(h) = h {
        rtfs::file_close(h)?;
    }
    Ok(0)
}

fn rmdir(p: &str) -> R<u64> {
    let mut t = TREE.lock();
    let (dir, name, ino) = t.entry(p)?;
    match &t.node(ino)?.node {
        Node::Dir(d) if !d.is_empty() => return Err(fs_err(FsError::NotEmpty)),
        Node::Dir(_) => {}
        _ => return Err(fs_err(FsError::NotADirectory)),
    }
    t.drop_name(dir, name, ino);
    Ok(0)
}

fn rename(from: &str, to: &str) -> R<u64> {
    let replaced = {
        let mut t = TREE.lock();
        let (fdir, fname, ino) = t.entry(from)?;
        let (tdir, tname) = t.parent(to)?;
        let is_dir = matches!(t.node(ino)?.node, Node::Dir(_));
        // A directory may not move under itself.
        if is_dir {
            let mut up = Vec::new();
            let mut at = to;
            while let Some(cut) = at.rfind('/') {
                at = &at[..cut];
                up.push(if at.is_empty() { "/" } else { at });
            }
            if up.iter().any(|a| t.resolve(a, true) == Ok(ino)) {
                return Err(fs_err(FsError::Invalid));
            }
        }
        let old = t.entries(tdir).get(tname).copied();
        let mut replaced = None;
        if let Some(old) = old {
            if old == ino {
                return Ok(0);
            }
            match (&t.node(old)?.node, is_dir) {
                (Node::Dir(d), true) if d.is_empty() => {}
                (Node::Dir(_), true) => return Err(fs_err(FsError::NotEmpty)),
                (Node::Dir(_), false) => return Err(fs_err(FsError::IsADirectory)),
                (_, true) => return Err(fs_err(FsError::NotADirectory)),
                (_, false) => {}
            }
            replaced = t.drop_name(tdir, tname, old);
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
            let ino = t.resolve(p, true)?;
            match t.node(ino)?.node {
                Node::File(h) => h,
                _ => return Err(fs_err(FsError::IsADirectory)),
            }
        };
        match rtfs::file_truncate(h, size) {
            Ok(()) => return Ok(0),
            Err(Error::Sys(SyscallError::BadHandle)) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// SYMLINK: link `p` to `target` (any non-empty text of at most
/// MAX_TARGET bytes; not checked to exist).
fn symlink(target: &str, p: &str) -> R<u64> {
    if target.is_empty() || target.len() > proto::MAX_TARGET || target.contains('\0') {
        return Err(fs_err(FsError::BadPath));
    }
    let mut t = TREE.lock();
    let (dir, name) = t.parent(p).map_err(|e| match e {
        Error::Fs(FsError::Invalid) => fs_err(FsError::Exists),
        e => e,
    })?;
    if t.has(dir, name) {
        return Err(fs_err(FsError::Exists));
    }
    t.add(dir, name, Node::Symlink(String::from(target)), 0o777);
    Ok(0)
}

/// READLINK: link `p`'s target.
fn readlink(p: &str) -> R<String> {
    let mut t = TREE.lock();
    let (_, _, ino) = t.entry(p)?;
    match &t.node(ino)?.node {
        Node::Symlink(target) => Ok(target.clone()),
        _ => Err(fs_err(FsError::NotALink)),
    }
}

/// LINK: a second name `to` for file `from` (`from` itself not followed,
/// as Linux's `link`).
fn link(from: &str, to: &str) -> R<u64> {
    let mut t = TREE.lock();
    let (_, _, ino) = t.entry(from)?;
    if let Node::Dir(_) = t.node(ino)?.node {
        return Err(fs_err(FsError::NotPermitted));
    }
    let (dir, name) = t.parent(to)?;
    if t.has(dir, name) {
        return Err(fs_err(FsError::Exists));
    }
    t.dir_mut(dir).insert(String::from(name), ino);
    if let Some(inode) = t.nodes.get_mut(&ino) {
        inode.names += 1;
    }
    Ok(0)
}

/// CHMOD: `p`'s permission bits.
fn chmod(p: &str, mode: u64) -> R<u64> {
    if mode > 0o7777 {
        return Err(Error::Sys(SyscallError::InvalidArgument));
    }
    let mut t = TREE.lock();
    let ino = t.resolve(p, true)?;
    let inode = t.nodes.get_mut(&ino).ok_or(fs_err(FsError::NotFound))?;
    if !matches!(inode.node, Node::Symlink(_)) {
        inode.mode = mode as u32;
    }
    Ok(0)
}

/// SET_TIME: `p`'s modification time.
/// A file's time is its memory object's (set outside the lock, as
/// `stat` reads it).
fn set_time(p: &str, ns: u64) -> R<u64> {
    loop {
        let h = {
            let mut t = TREE.lock();
            let ino = t.resolve(p, true)?;
            let inode = t.nodes.get_mut(&ino).ok_or(fs_err(FsError::NotFound))?;
            match inode.node {
                Node::File(h) => h,
                _ => {
                    inode.mtime = ns;
                    return Ok(0);
                }
            }
        };
        match rtfs::file_set_time(h, ns) {
            Ok(()) => return Ok(0),
            // Unlinked meanwhile (its handle closed): look again.
            Err(Error::Sys(SyscallError::BadHandle)) => continue,
            Err(e) => return Err(e),
        }
    }
}
