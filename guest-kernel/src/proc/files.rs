//! File memory objects: a file's pages and size, kept by the kernel so
//! that every process holding a handle reads, writes and maps the data
//! itself, with no server in the way (the file server in user mode keeps
//! only the names: `k42_abi::fs`).
//!
//! A file object is the file's FCM. Its page index (file page → frame)
//! is a clustered hash table, one of two implementations chosen at
//! creation:
//!
//! - shared: one table behind one lock for every CPU;
//! - distributed: K42's DHashTable, a master table and a table per CPU
//!   that lookups hit with no shared write, so that CPUs reading the same
//!   pages do not meet.
//!
//! ```text
//! FileRead/FileWrite/fault ─► handle (this process's table) ─► FileObj
//!     ─► page index (clustered: shared or distributed) ─► frame
//! ```
//!
//! Readers take no lock: they look pages up and copy. Writers, fills
//! and truncation are serialised per file by `mutate`. A frame that
//! truncation cuts from the index is kept until the object goes (every
//! reader holds the object), so a reader racing a truncation copies old
//! data, never a frame reused for something else.
//!
//! Handles are per process: (slot, sequence number), so that a closed
//! handle fails with `BadHandle` instead of reaching the slot's next
//! occupant. Objects live while a handle or a mapping holds them; their
//! page indexes go back to a pool (making a clustered object costs
//! milliseconds while the kernel runs emulated).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use k42_abi::layout::PAGE_SIZE;
use k42_abi::syscall::{SyscallError, file};
use k42_cobj::ObjRef;
use k42_cobj::objects::dhash::{self, HashTable};

use super::Process;
use super::memory::{FaultError, Memory};
use super::sched::Thread;
use crate::mm::copy::{Segment, copy_one, copy_segments};
use crate::mm::{pages, user};
use crate::sync::SpinLock;
use crate::{arch, cobj, smp, trace};
use k42_abi::trace::ev;

/// The largest `file.max`.
pub const MAX_FILES: u32 = 65536;
/// Most handles one process may hold.
const MAX_HANDLES: usize = 65536;
/// Most bytes one FileRead or FileWrite moves (the kernel is not
/// preemptible: a call is kept short, and the caller loops).
const MAX_IO: u64 = file::MAX_IO;
/// Master buckets of a distributed page index.
const BUCKETS: usize = 16;

/// File objects alive.
static LIVE: AtomicU32 = AtomicU32::new(0);
/// Emptied page indexes for new files, by kind.
static POOL: [SpinLock<Vec<ObjRef<dyn HashTable>>>; 2] = [const { SpinLock::new(Vec::new()) }; 2];

/// A file: its page index and size.
pub struct FileObj {
    kind: u64,
    pages: ObjRef<dyn HashTable>,
    size: AtomicU64,
    /// Serialises writes, fills and truncation; holds the frames
    /// truncation cut (freed with the object).
    mutate: SpinLock<Vec<u64>>,
    /// The file was ever mapped writable: bytes past its end may then
    /// hold what a mapping stored there, which growing must clear.
    mapped_writable: AtomicBool,
    /// Last modification, ns since 1970: creation, a write through a
    /// handle, a truncation, or as set (`FileSetTime`). Stores through a
    /// shared mapping do not move it.
    mtime: AtomicU64,
}

impl FileObj {
    fn new(kind: u64) -> Result<Arc<Self>, SyscallError> {
        let max = crate::boot::options().file_max;
        if LIVE.fetch_add(1, Ordering::AcqRel) >= max {
            LIVE.fetch_sub(1, Ordering::AcqRel);
            return Err(SyscallError::TooManyHandles);
        }
        let pooled = POOL[kind as usize].lock().pop();
        let pages = match pooled {
            Some(p) => p,
            None => {
                let root = if kind == file::KIND_DISTRIBUTED {
                    dhash::distributed(smp::ncpus() as usize, 1, BUCKETS, cobj::relax)
                } else {
                    dhash::shared(None, cobj::relax)
                };
                match cobj::system().create(root) {
                    Some(p) => p,
                    None => {
                        LIVE.fetch_sub(1, Ordering::AcqRel);
                        return Err(SyscallError::TooManyHandles);
                    }
                }
            }
        };
        Ok(Arc::new(Self {
            kind,
            pages,
            size: AtomicU64::new(0),
            mutate: SpinLock::new(Vec::new()),
            mapped_writable: AtomicBool::new(false),
            mtime: AtomicU64::new(wall_ns()),
        }))
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Copy the file's first bytes (at most a page) into `buf`; how many.
    pub fn read_head(&self, buf: &mut [u8]) -> usize {
        let n = (buf.len() as u64).min(PAGE_SIZE).min(self.len()) as usize;
        match self.lookup(0) {
            Some(pa) => pages::read_frame(pa, 0, &mut buf[..n]),
            None => buf[..n].fill(0),
        }
        n
    }

    /// The frame of page `k`, if it has one (a program mapped from the
    /// file: the object is held for as long as the frame is mapped, and
    /// frames are freed only with the object).
    pub(super) fn frame(&self, k: u64) -> Option<u64> {
        self.lookup(k)
    }

    /// The frame of page `k`, if it has one.
    fn lookup(&self, k: u64) -> Option<u64> {
        let cpu = cobj::cpu();
        self.pages.call(&cpu.request(), |t| t.lookup(k))
    }

    /// The frame of page `k`, made (zeroed) if missing; `mutate` held.
    fn fill(&self, k: u64) -> Result<u64, SyscallError> {
        if let Some(pa) = self.lookup(k) {
            return Ok(pa);
        }
        let pa = pages::alloc_zeroed().ok_or(SyscallError::NoMemory)?;
        let cpu = cobj::cpu();
        self.pages.call(&cpu.request(), |t| t.insert(k, pa));
        Ok(pa)
    }

    /// Cut pages `from` and up out of the index into `cut`; `mutate`
    /// held.
    fn cut_from(&self, from: u64, cut: &mut Vec<u64>) {
        let cpu = cobj::cpu();
        cut.extend(self.pages.call(&cpu.request(), |t| t.remove_from(from)));
    }

    /// The size grows from `old`: make the bytes past `old` read zeros
    /// (only a writable mapping can have stored anything there); `mutate`
    /// held.
    fn clear_past(&self, old: u64, cut: &mut Vec<u64>) {
        if !self.mapped_writable.load(Ordering::Acquire) {
            return;
        }
        if !old.is_multiple_of(PAGE_SIZE) {
            self.zero_tail(old / PAGE_SIZE, old % PAGE_SIZE);
        }
        self.cut_from(old.div_ceil(PAGE_SIZE), cut);
    }

    /// Zero page `k` from byte `from` on, if the page exists.
    fn zero_tail(&self, k: u64, from: u64) {
        if let Some(pa) = self.lookup(k) {
            copy_one(Segment {
                dst: pa + from,
                src: zero_page(),
                len: PAGE_SIZE - from,
            });
        }
    }

    /// Copy up to `len` bytes at `off` to the caller's `buf` (faulted in
    /// for writing as needed); the bytes copied.
    fn read(&self, mem: &Memory, off: u64, buf: u64, len: u64) -> Result<u64, SyscallError> {
        let size = self.size.load(Ordering::Acquire);
        if off >= size {
            return Ok(0);
        }
        let n = len.min(size - off);
        if n == 0 {
            return Ok(0);
        }
        copy_segments(|push| {
            let mut done = 0;
            while done < n {
                let (at, va) = (off + done, buf + done);
                let chunk = chunk_len(at, va, n - done);
                // A hole reads zeros. (A frame truncation cut stays
                // allocated while the object lives, so a racing read
                // copies old data.)
                let src = self
                    .lookup(at / PAGE_SIZE)
                    .map_or(zero_page(), |pa| pa + at % PAGE_SIZE);
                let dst = mem.user_phys(va, true)?;
                push(Segment {
                    dst,
                    src,
                    len: chunk,
                });
                done += chunk;
            }
            Ok(())
        })?;
        Ok(n)
    }

    /// Copy `len` bytes (at most [`MAX_IO`]) from the caller's `buf` to
    /// `off`, or to the end with `append`: all of them, or nothing when
    /// memory runs out or `buf` is not the caller's memory. The offset
    /// past them.
    ///
    /// The caller's pages are found (and faulted in) before `mutate` is
    /// taken — the buffer may be a mapping of this very file, whose
    /// faults take `mutate` — and each is held with one more share
    /// (`fcm::pin`) until copied, so that another thread of the process
    /// breaking copy-on-write, and a forked child exiting, cannot free a
    /// frame this copy still reads.
    fn write(
        &self,
        mem: &Memory,
        off: u64,
        buf: u64,
        len: u64,
        append: bool,
    ) -> Result<u64, SyscallError> {
        debug_assert!(len <= MAX_IO);
        // The caller's pages, in order: at most 17 for 64 KiB.
        let mut src = [0u64; (MAX_IO / PAGE_SIZE + 1) as usize];
        let first_va = buf & !(PAGE_SIZE - 1);
        let npages = if len == 0 {
            0
        } else {
            ((buf + len - 1) / PAGE_SIZE - buf / PAGE_SIZE + 1) as usize
        };
        for i in 0..npages {
            match mem.user_phys(first_va + i as u64 * PAGE_SIZE, false) {
                Ok(pa) => {
                    src[i] = pa;
                    super::fcm::pin(pa);
                }
                Err(e) => {
                    unpin_all(&src[..i]);
                    return Err(e);
                }
            }
        }
        let r = self.write_pinned(off, buf, len, append, &src[..npages]);
        unpin_all(&src[..npages]);
        r
    }

    /// [`Self::write`] with the caller's pages found and held: `src[i]`
    /// is the frame of the page `i` pages past `buf`'s.
    fn write_pinned(
        &self,
        off: u64,
        buf: u64,
        len: u64,
        append: bool,
        src: &[u64],
    ) -> Result<u64, SyscallError> {
        let mut cut = self.mutate.lock();
        let size = self.size.load(Ordering::Acquire);
        let off = if append { size } else { off };
        let end = off.checked_add(len).ok_or(SyscallError::InvalidArgument)?;
        if end > file::MAX_SIZE {
            return Err(SyscallError::InvalidArgument);
        }
        if len == 0 {
            return Ok(end);
        }
        if end > size {
            self.clear_past(size, &mut cut);
        }
        // Every page first (a page made here past the end stays unseen:
        // reads stop at the size).
        let first = off / PAGE_SIZE;
        let mut frames = [0u64; (MAX_IO / PAGE_SIZE + 1) as usize];
        for (i, k) in (first..=(end - 1) / PAGE_SIZE).enumerate() {
            frames[i] = self.fill(k)?;
        }
        let first_va = buf / PAGE_SIZE;
        let _ = copy_segments(|push| {
            let mut done = 0;
            while done < len {
                let (at, va) = (off + done, buf + done);
                let chunk = chunk_len(at, va, len - done);
                push(Segment {
                    dst: frames[(at / PAGE_SIZE - first) as usize] + at % PAGE_SIZE,
                    src: src[(va / PAGE_SIZE - first_va) as usize] + va % PAGE_SIZE,
                    len: chunk,
                });
                done += chunk;
            }
            Ok::<(), ()>(())
        });
        self.size.fetch_max(end, Ordering::AcqRel);
        Ok(end)
    }

    /// Set the size to `new`: pages past it are cut, and the part of the
    /// last page past either end reads zeros.
    fn truncate(&self, new: u64) -> Result<(), SyscallError> {
        if new > file::MAX_SIZE {
            return Err(SyscallError::InvalidArgument);
        }
        let mut cut = self.mutate.lock();
        let old = self.size.load(Ordering::Acquire);
        if new < old {
            if !new.is_multiple_of(PAGE_SIZE) {
                self.zero_tail(new / PAGE_SIZE, new % PAGE_SIZE);
            }
            self.cut_from(new.div_ceil(PAGE_SIZE), &mut cut);
        } else if new > old {
            self.clear_past(old, &mut cut);
        }
        self.size.store(new, Ordering::Release);
        Ok(())
    }

    /// Resolve a fault on page `k` of a mapping of the file: map the
    /// page (made zeroed if missing) with `map(frame)`.
    pub fn fault(&self, k: u64, map: &mut dyn FnMut(u64) -> bool) -> Result<(), FaultError> {
        let pa = match self.lookup(k) {
            Some(pa) => pa,
            None => {
                let _m = self.mutate.lock();
                self.fill(k).map_err(|_| FaultError::OutOfMemory)?
            }
        };
        if map(pa) {
            Ok(())
        } else {
            Err(FaultError::OutOfMemory)
        }
    }

    /// The file is mapped writable (from now on, growing it clears what
    /// lies past its end).
    pub fn mapped_writable(&self) {
        self.mapped_writable.store(true, Ordering::Release);
    }
}

/// Bytes from file offset `at` and user address `va` up to the first
/// page boundary of either, at most `left`.
fn chunk_len(at: u64, va: u64, left: u64) -> u64 {
    (PAGE_SIZE - at % PAGE_SIZE)
        .min(PAGE_SIZE - va % PAGE_SIZE)
        .min(left)
}

/// A page of zeros to copy holes from.
#[repr(C, align(4096))]
struct ZeroPage([u8; PAGE_SIZE as usize]);

static ZERO: ZeroPage = ZeroPage([0; PAGE_SIZE as usize]);

/// The physical address of [`ZERO`].
fn zero_page() -> u64 {
    arch::virt_to_phys(&ZERO as *const ZeroPage as u64).expect("a kernel static")
}

/// Let go of the caller's pages a write held.
fn unpin_all(frames: &[u64]) {
    for &pa in frames {
        super::fcm::release(pa);
    }
}

impl Drop for FileObj {
    fn drop(&mut self) {
        // No handle or mapping is left, so no CPU can be in a call on it.
        let mut cut = core::mem::take(self.mutate.get_mut());
        self.cut_from(0, &mut cut);
        for pa in cut {
            pages::free(pa);
        }
        POOL[self.kind as usize].lock().push(self.pages);
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A process's file handles (a forked child gets a copy: the same
/// handles to the same objects).
#[derive(Clone, Default)]
pub struct Handles {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

#[derive(Clone, Default)]
struct Slot {
    seq: u32,
    entry: Option<(Object, u64)>,
}

/// What a handle names.
#[derive(Clone)]
pub enum Object {
    /// A file's memory object, and the handle's position: shared by the
    /// copies of the handle a fork makes and an exec keeps (Linux's open
    /// file description), not by handles granted anew.
    File(Arc<FileObj>, Arc<AtomicU64>),
    /// One end of a pipe (`super::pipe`).
    Pipe(Arc<super::pipe::End>),
}

impl Handles {
    /// The object and rights behind handle `h`.
    fn get(&self, h: u64) -> Result<(Object, u64), SyscallError> {
        let s = self
            .slots
            .get((h >> 32) as usize)
            .filter(|s| s.seq == h as u32)
            .ok_or(SyscallError::BadHandle)?;
        s.entry.clone().ok_or(SyscallError::BadHandle)
    }

    /// A new handle to `obj` with `rights`.
    fn insert(&mut self, obj: Object, rights: u64) -> Result<u64, SyscallError> {
        let i = match self.free.pop() {
            Some(i) => i as usize,
            None if self.slots.len() < MAX_HANDLES => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
            None => return Err(SyscallError::TooManyHandles),
        };
        let s = &mut self.slots[i];
        s.seq = s.seq.wrapping_add(1).max(1);
        s.entry = Some((obj, rights));
        Ok((i as u64) << 32 | s.seq as u64)
    }

    /// Drop handle `h`.
    fn close(&mut self, h: u64) -> Result<Object, SyscallError> {
        let i = (h >> 32) as usize;
        let s = self
            .slots
            .get_mut(i)
            .filter(|s| s.seq == h as u32)
            .ok_or(SyscallError::BadHandle)?;
        let (obj, _) = s.entry.take().ok_or(SyscallError::BadHandle)?;
        self.free.push(i as u32);
        Ok(obj)
    }

    /// Drop every handle but those in `keep` (an exec's close-on-exec);
    /// the objects dropped, for the caller to let go outside the lock.
    pub fn retain(&mut self, keep: &[u64]) -> Vec<Object> {
        let mut gone = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            let h = (i as u64) << 32 | s.seq as u64;
            if s.entry.is_some() && !keep.contains(&h) {
                gone.extend(s.entry.take().map(|(o, _)| o));
                self.free.push(i as u32);
            }
        }
        gone
    }

    /// Drop every handle (the process ended).
    pub fn clear(&mut self) -> Vec<Object> {
        self.free.clear();
        core::mem::take(&mut self.slots)
            .into_iter()
            .filter_map(|s| s.entry.map(|(o, _)| o))
            .collect()
    }
}

/// The file object behind handle `h` of process `p`, with right `need`.
pub(crate) fn object(p: &Process, h: u64, need: u64) -> Result<Arc<FileObj>, SyscallError> {
    handle(p, h, need)
}

/// Handle `h` of process `p`, with right `need`.
fn handle(p: &Process, h: u64, need: u64) -> Result<Arc<FileObj>, SyscallError> {
    let (obj, rights) = p.files.lock().get(h)?;
    if rights & need != need {
        return Err(SyscallError::NotPermitted);
    }
    match obj {
        Object::File(f, _) => Ok(f),
        Object::Pipe(_) => Err(SyscallError::InvalidArgument),
    }
}

/// Handle `h` of process `p`, with right `need`: its file and position.
fn handle_pos(
    p: &Process,
    h: u64,
    need: u64,
) -> Result<(Arc<FileObj>, Arc<AtomicU64>), SyscallError> {
    let (obj, rights) = p.files.lock().get(h)?;
    if rights & need != need {
        return Err(SyscallError::NotPermitted);
    }
    match obj {
        Object::File(f, pos) => Ok((f, pos)),
        Object::Pipe(_) => Err(SyscallError::InvalidArgument),
    }
}

/// The pipe end behind handle `h` of process `p`, if it is one.
pub fn pipe_end(p: &Process, h: u64) -> Option<Arc<super::pipe::End>> {
    match p.files.lock().get(h) {
        Ok((Object::Pipe(e), _)) => Some(e),
        _ => None,
    }
}

/// `PipeCreate`: a new pipe; (read end, write end) handles.
pub fn pipe(t: &Thread) -> Result<(u64, u64), SyscallError> {
    let (r, w) = super::pipe::create();
    let mut table = t.process.files.lock();
    let rh = table.insert(Object::Pipe(r), file::RIGHT_READ)?;
    match table.insert(Object::Pipe(w), file::RIGHT_WRITE) {
        Ok(wh) => Ok((rh, wh)),
        Err(e) => {
            let _ = table.close(rh);
            Err(e)
        }
    }
}

/// Image module `i` as (name, bytes).
fn module(i: u64) -> Result<(&'static str, &'static [u8]), SyscallError> {
    let m = crate::boot::boot_info()
        .modules()
        .get(i as usize)
        .ok_or(SyscallError::NoSuchProgram)?;
    let name = m.name().ok_or(SyscallError::NoSuchProgram)?;
    let bytes = crate::user::module(name).ok_or(SyscallError::NoSuchProgram)?;
    Ok((name, bytes))
}

/// `FileCreate`: a new file object of index kind `kind`; a handle with
/// every right.
pub fn create(t: &Thread, kind: u64) -> Result<u64, SyscallError> {
    let p = &t.process;
    if kind > file::KIND_DISTRIBUTED {
        return Err(SyscallError::InvalidArgument);
    }
    let obj = FileObj::new(kind)?;
    trace::log(ev::fs::create(p.pid as u64, kind));
    p.files
        .lock()
        .insert(Object::File(obj, Arc::default()), file::RIGHTS_ALL)
}

/// `FileGrant`: give process `to` a handle to `h`'s object with
/// `rights` (a subset of the caller's).
pub fn grant(t: &Thread, h: u64, to: u64, rights: u64) -> Result<u64, SyscallError> {
    let p = &t.process;
    let (obj, have) = p.files.lock().get(h)?;
    if have & file::RIGHT_GRANT == 0 || rights & !have != 0 {
        return Err(SyscallError::NotPermitted);
    }
    let to = super::lookup(to.min(u32::MAX as u64) as u32).ok_or(SyscallError::NoSuchProcess)?;
    // Under the table's lock: once `ended` is set, the process's
    // handles are dropped after it (process_ended), never before.
    let mut table = to.files.lock();
    if to.state.lock().ended {
        return Err(SyscallError::NoSuchProcess);
    }
    // A granted handle starts at position 0 of its own.
    let obj = match obj {
        Object::File(f, _) => Object::File(f, Arc::default()),
        pipe => pipe,
    };
    table.insert(obj, rights)
}

/// `FileClose`.
pub fn close(t: &Thread, h: u64) -> Result<(), SyscallError> {
    let p = &t.process;
    let obj = p.files.lock().close(h)?;
    // The object may go now, outside the table's lock.
    drop(obj);
    Ok(())
}

/// `FileRead`: up to `len` bytes (at most `MAX_IO`) at `off` into the
/// caller's `buf`; the bytes read.
/// At [`file::AT_POSITION`], at the handle's position, which moves past
/// the bytes read.
pub fn read(t: &Thread, h: u64, off: u64, buf: u64, len: u64) -> Result<u64, SyscallError> {
    let p = &t.process;
    let (obj, pos) = handle_pos(p, h, file::RIGHT_READ)?;
    let at = if off == file::AT_POSITION {
        pos.load(Ordering::Acquire)
    } else {
        off
    };
    let n = obj.read(t.memory(), at, buf, len.min(MAX_IO))?;
    if off == file::AT_POSITION {
        pos.store(at + n, Ordering::Release);
    }
    trace::log(ev::fs::read(p.pid as u64, at, n));
    Ok(n)
}

/// `FileWrite`: `len` bytes (at most `MAX_IO`) of the caller's `buf` at
/// `off` (or the end, with `WRITE_APPEND`); the offset past them.
pub fn write(
    t: &Thread,
    h: u64,
    off: u64,
    buf: u64,
    len: u64,
    flags: u64,
) -> Result<u64, SyscallError> {
    let p = &t.process;
    let (obj, pos) = handle_pos(p, h, file::RIGHT_WRITE)?;
    let len = len.min(MAX_IO);
    if flags & !file::WRITE_APPEND != 0 {
        return Err(SyscallError::InvalidArgument);
    }
    let append = flags & file::WRITE_APPEND != 0;
    let at = if off == file::AT_POSITION {
        pos.load(Ordering::Acquire)
    } else {
        off
    };
    let end = obj.write(t.memory(), at, buf, len, append)?;
    obj.mtime.store(wall_ns(), Ordering::Release);
    if off == file::AT_POSITION {
        pos.store(end, Ordering::Release);
    }
    trace::log(ev::fs::write(p.pid as u64, end - len, len));
    Ok(end)
}

/// `FileSeek`: set handle `h`'s position to `off` from `whence` (0 the
/// start, 1 the position, 2 the end); the new position.
pub fn seek(t: &Thread, h: u64, off: i64, whence: u64) -> Result<u64, SyscallError> {
    let (obj, pos) = handle_pos(&t.process, h, 0)?;
    let base = match whence {
        0 => 0,
        1 => pos.load(Ordering::Acquire),
        2 => obj.size.load(Ordering::Acquire),
        _ => return Err(SyscallError::InvalidArgument),
    };
    let to = base
        .checked_add_signed(off)
        .filter(|&p| p <= i64::MAX as u64)
        .ok_or(SyscallError::InvalidArgument)?;
    pos.store(to, Ordering::Release);
    Ok(to)
}

/// `FileSize`.
pub fn size(t: &Thread, h: u64) -> Result<u64, SyscallError> {
    let p = &t.process;
    Ok(handle(p, h, 0)?.size.load(Ordering::Acquire))
}

/// `FileStat`: handle `h`'s file's size and modification time.
pub fn stat(t: &Thread, h: u64) -> Result<file::FileState, SyscallError> {
    let obj = handle(&t.process, h, 0)?;
    Ok(file::FileState {
        size: obj.size.load(Ordering::Acquire),
        mtime: obj.mtime.load(Ordering::Acquire),
    })
}

/// `FileSetTime`: set handle `h`'s file's modification time to `ns`.
pub fn set_time(t: &Thread, h: u64, ns: u64) -> Result<(), SyscallError> {
    let obj = handle(&t.process, h, file::RIGHT_WRITE)?;
    obj.mtime.store(ns, Ordering::Release);
    Ok(())
}

/// The wall clock, ns since 1970.
fn wall_ns() -> u64 {
    crate::time::epoch_ns() + crate::time::now_ns()
}

/// `FileTruncate`.
pub fn truncate(t: &Thread, h: u64, size: u64) -> Result<(), SyscallError> {
    let p = &t.process;
    let obj = handle(p, h, file::RIGHT_WRITE)?;
    obj.truncate(size)?;
    obj.mtime.store(wall_ns(), Ordering::Release);
    trace::log(ev::fs::truncate(p.pid as u64, size));
    Ok(())
}

/// `FileMap`: `len` bytes of the file from offset 0, writable if
/// `writable` is 1; the address.
pub fn map(t: &Thread, h: u64, len: u64, writable: u64) -> Result<u64, SyscallError> {
    let p = &t.process;
    let writable = match writable {
        0 => false,
        1 => true,
        _ => return Err(SyscallError::InvalidArgument),
    };
    let need = file::RIGHT_READ | if writable { file::RIGHT_WRITE } else { 0 };
    let obj = handle(p, h, need)?;
    let a = t.memory().map_file(obj, len, writable)?;
    trace::log(ev::fs::map(p.pid as u64, len));
    Ok(a)
}

/// `ModuleInfo`: module `i`'s name into the caller's `buf` (at most
/// `cap` bytes); its size.
pub fn module_info(t: &Thread, i: u64, buf: u64, cap: u64) -> Result<u64, SyscallError> {
    let (name, bytes) = module(i)?;
    let n = name.len().min(cap as usize);
    user::copy_out(t.memory(), buf, &name.as_bytes()[..n])?;
    Ok(bytes.len() as u64)
}

/// `ModuleRead`: up to `len` bytes (at most `MAX_IO`) at `off` of module
/// `i` into the caller's `buf`; the bytes read.
pub fn module_read(t: &Thread, i: u64, off: u64, buf: u64, len: u64) -> Result<u64, SyscallError> {
    let (_, bytes) = module(i)?;
    let off = (off as usize).min(bytes.len());
    let n = (len as usize).min(bytes.len() - off).min(MAX_IO as usize);
    user::copy_out(t.memory(), buf, &bytes[off..off + n])?;
    Ok(n as u64)
}
