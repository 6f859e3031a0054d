//! The File Cache Manager (FCM), K42's memory object: the pages of one
//! region's contents — zero-filled anonymous memory, or a program
//! segment from the image — as a clustered object, reached through the
//! kernel's object table so that its implementation can be swapped (a
//! distributed page cache is the file server's; here one shared rep
//! serves every CPU).
//!
//! Pages belong to FCMs, never to page tables. An FCM resolves a page
//! for a fault and maps it *while holding its page lock* (through the
//! caller's `map`), so that no CPU maps a frame another has just
//! replaced. `fork` copies the page list for the child, counting one
//! more sharer of each page in [`SHARES`]; a write to a shared page
//! copies it (copy-on-write), a write to a page whose other sharers are
//! gone just makes it writable again. Read-only image pages that lie
//! whole in the image are mapped from it in place, owned by no one, with
//! their neighbours (fault-around).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use k42_abi::layout::PAGE_SIZE;
use k42_abi::syscall::SyscallError;
use k42_cobj::ObjRef;
use k42_cobj::env::CpuEnv;
use k42_cobj::root::{Rep, Root};

use super::memory::FaultError;
use crate::mm::{frame, pages};
use crate::sync::{InitOnce, SpinLock};
use crate::{arch, cobj};

/// Pages on each side of a faulting image page mapped with it.
const FAULT_AROUND: u64 = 8;

/// Tag in an FCM's page list: the frame is not the FCM's (an image page).
const NOT_OWNED: u64 = 1;

/// Share counts per page of the table: one frame of counters each.
const SHARES_PER_CHUNK: usize = (PAGE_SIZE / 2) as usize;

/// Extra sharers of each frame (0: one owner), by frame number, in
/// chunks of a frame each: one array would need a heap block of 2 bytes
/// per page of RAM (128 MiB at 256 GiB), far more than the kernel heap.
static SHARES: InitOnce<Box<[&'static [AtomicU16; SHARES_PER_CHUNK]]>> = InitOnce::new();

fn shares() -> &'static [&'static [AtomicU16; SHARES_PER_CHUNK]] {
    SHARES.get_or_init(|| {
        let top = crate::boot::boot_info().ram_end();
        let chunks = (top / PAGE_SIZE).div_ceil(SHARES_PER_CHUNK as u64);
        (0..chunks)
            .map(|_| frame::alloc_forever().expect("memory for the frame share counts"))
            .collect()
    })
}

fn share_count(pa: u64) -> &'static AtomicU16 {
    let f = (pa / PAGE_SIZE) as usize;
    &shares()[f / SHARES_PER_CHUNK][f % SHARES_PER_CHUNK]
}

/// Hold frame `pa` for a while (one more sharer), so that it is not freed
/// until [`release`]d even if its owners let go meanwhile. For a frame no
/// one ever releases (an image page mapped in place) the pair is a no-op.
pub(super) fn pin(pa: u64) {
    share_count(pa).fetch_add(1, Ordering::AcqRel);
}

/// Drop one owner's hold on frame `pa`; the last one frees it.
pub(super) fn release(pa: u64) {
    let s = share_count(pa);
    let mut n = s.load(Ordering::Acquire);
    loop {
        if n == 0 {
            pages::free(pa);
            return;
        }
        match s.compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(now) => n = now,
        }
    }
}

/// Where an FCM's pages come from.
#[derive(Clone)]
pub enum Source {
    /// Zero-filled pages (anonymous memory).
    Zero,
    /// A program segment: `file` bytes appear at region offset `at`; a
    /// PIE's relocations (address, value), applied as pages are filled,
    /// in a region starting at `start`.
    Image {
        file: &'static [u8],
        at: u64,
        start: u64,
        relocs: Arc<Vec<(u64, u64)>>,
    },
    /// A Linux program's segment, from its file's memory object: the
    /// file's bytes from `offset` (`len` of them) appear at region offset
    /// `at`. Read-only pages that lie whole in the file are the file's own
    /// frames, shared by every process running the program.
    File {
        file: Arc<super::files::FileObj>,
        offset: u64,
        len: u64,
        at: u64,
    },
}

impl Source {
    /// The relocations that fall in page `k`.
    fn relocs_in(&self, k: u64) -> &[(u64, u64)] {
        let Source::Image { start, relocs, .. } = self else {
            return &[];
        };
        let lo = start + k * PAGE_SIZE;
        let a = relocs.partition_point(|r| r.0 < lo);
        let b = relocs.partition_point(|r| r.0 < lo + PAGE_SIZE);
        &relocs[a..b]
    }
}

/// What a fault asks of an FCM.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    /// The page is written.
    pub write: bool,
    /// The region allows writing (else pages are mapped read-only).
    pub writable: bool,
    /// The pages `[first, end)` of the FCM that the faulting piece of
    /// the region covers (fault-around stays inside them).
    pub first: u64,
    pub end: u64,
}

/// An FCM's contents, moved whole between FCMs (a new region's, a fork
/// child's): its page lists, by stripe. Where new pages come from (the
/// [`Source`]) is the region's, passed to every [`Fcm::resolve`].
#[derive(Default)]
pub struct Contents {
    stripes: Vec<(usize, BTreeMap<u64, u64>)>,
}

/// The FCM interface.
pub trait Fcm: Send + Sync {
    /// Resolve page `k` for `access`: find it, fill it from `source`
    /// (charging each new
    /// private page with `charge`, which may refuse), or copy it on
    /// write, then `map(k, frame, writable)` it — and any neighbours
    /// mapped with it — while the page list is locked.
    fn resolve(
        &self,
        k: u64,
        access: Access,
        source: &Source,
        charge: &dyn Fn() -> bool,
        map: &mut dyn FnMut(u64, u64, bool) -> bool,
    ) -> Result<(), FaultError>;
    /// Put the caller's frame `pa` (zeroed or filled, charged) at page `k`.
    fn install(&self, k: u64, pa: u64);
    /// The contents, for a forked child's FCM: the same pages, now
    /// shared copy-on-write (one more sharer each); `protect(k)` is called
    /// for every private page so that the caller write-protects its
    /// mapping.
    fn snapshot(&self, protect: &mut dyn FnMut(u64)) -> Contents;
    /// Take new contents (an FCM from the pool, or a forked child's),
    /// letting go of any pages held.
    fn reset(&self, contents: Contents);
    /// Give up every page (the process ended).
    fn release_all(&self);
    /// Give up pages `[first, end)` (that part of the region was
    /// unmapped); how many of them were the FCM's own (charged).
    fn release_range(&self, first: u64, end: u64) -> u64;
}

/// The FCM's implementation: one rep shared by every CPU, its page list
/// split into [`STRIPES`] lists by runs of [`STRIPE_RUN`] pages, each
/// behind its own lock, so that threads faulting different parts of one
/// region do not wait for each other (a fault holds its list's lock
/// while it allocates, fills and maps the page: most of a millisecond
/// when emulated).
struct SharedFcm {
    /// Page index in the region → frame (| NOT_OWNED), by stripe.
    stripes: [SpinLock<BTreeMap<u64, u64>>; STRIPES],
    /// Stripes that may hold pages (bit per stripe), so that going over
    /// every page (fork, exit) locks only those: most regions use one or
    /// two, and each lock costs tens of emulated instructions.
    used: AtomicU32,
}

/// Page lists per FCM.
const STRIPES: usize = 16;
/// Consecutive pages kept in one list (fault-around stays within one).
const STRIPE_RUN: u64 = 16;

fn stripe_of(k: u64) -> usize {
    ((k / STRIPE_RUN) % STRIPES as u64) as usize
}

impl SharedFcm {
    fn new(contents: Contents) -> Self {
        let f = Self {
            stripes: [const { SpinLock::new(BTreeMap::new()) }; STRIPES],
            used: AtomicU32::new(0),
        };
        f.reset(contents);
        f
    }

    /// Put `e` at page `k`.
    fn insert(&self, k: u64, e: u64) {
        let i = stripe_of(k);
        self.stripes[i].lock().insert(k, e);
        self.mark(i);
    }

    /// Note that stripe `i` holds pages.
    fn mark(&self, i: usize) {
        if self.used.load(Ordering::Relaxed) & 1 << i == 0 {
            self.used.fetch_or(1 << i, Ordering::Relaxed);
        }
    }

    /// The stripes that may hold pages.
    fn used_stripes(&self) -> impl Iterator<Item = (usize, &SpinLock<BTreeMap<u64, u64>>)> {
        let used = self.used.load(Ordering::Acquire);
        self.stripes
            .iter()
            .enumerate()
            .filter(move |(i, _)| used & 1 << i != 0)
    }
}

impl Source {
    /// The image or file frame to map in place for page `k`, if the
    /// region is read-only and the page lies whole, page-aligned, in the
    /// image or file.
    fn in_place(&self, k: u64) -> Option<u64> {
        if let Source::File {
            file,
            offset,
            len,
            at,
        } = self
        {
            let lo = k * PAGE_SIZE;
            if lo < *at || lo + PAGE_SIZE > at + len {
                return None;
            }
            let off = offset + (lo - at);
            return if off.is_multiple_of(PAGE_SIZE) {
                file.frame(off / PAGE_SIZE)
            } else {
                None
            };
        }
        let Source::Image { file, at, .. } = *self else {
            return None;
        };
        if !self.relocs_in(k).is_empty() {
            return None;
        }
        let lo = k * PAGE_SIZE;
        if lo < at || lo + PAGE_SIZE > at + file.len() as u64 {
            return None;
        }
        let va = file.as_ptr() as u64 + (lo - at);
        if !va.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        arch::virt_to_phys(va)
    }

    /// A fresh frame for page `k`, filled from the source.
    fn fill(&self, k: u64) -> Result<u64, SyscallError> {
        let lo = k * PAGE_SIZE;
        let pa = pages::alloc_zeroed().ok_or(SyscallError::NoMemory)?;
        if let Source::File {
            file,
            offset,
            len,
            at,
        } = self
        {
            // The file's bytes that fall in this page, a file page at a
            // time (a hole, or bytes past the file's end, stay zero).
            let (mut from, to) = (lo.max(*at), (lo + PAGE_SIZE).min(at + len));
            while from < to {
                let off = offset + (from - at);
                let n = (PAGE_SIZE - off % PAGE_SIZE).min(to - from);
                if let Some(src) = file.frame(off / PAGE_SIZE) {
                    crate::mm::copy::copy_one(crate::mm::copy::Segment {
                        dst: pa + (from - lo),
                        src: src + off % PAGE_SIZE,
                        len: n,
                    });
                }
                from += n;
            }
            return Ok(pa);
        }
        if let Source::Image { file, at, .. } = *self {
            let (from, to) = (lo.max(at), (lo + PAGE_SIZE).min(at + file.len() as u64));
            if from < to {
                let src = &file[(from - at) as usize..(to - at) as usize];
                pages::write_frame(pa, from - lo, src);
            }
            for &(va, value) in self.relocs_in(k) {
                let off = va & (PAGE_SIZE - 1);
                // Relocations are 8-byte aligned (checked by
                // elf::Program): the word lies in the page.
                pages::write_frame(pa, off, &value.to_le_bytes());
            }
        }
        Ok(pa)
    }
}

impl Fcm for SharedFcm {
    fn resolve(
        &self,
        k: u64,
        access: Access,
        source: &Source,
        charge: &dyn Fn() -> bool,
        map: &mut dyn FnMut(u64, u64, bool) -> bool,
    ) -> Result<(), FaultError> {
        let stripe = stripe_of(k);
        let mut list = self.stripes[stripe].lock();
        self.mark(stripe);
        let (pa, writable) = match list.get(&k).copied() {
            None => {
                let in_place = if access.writable {
                    None
                } else {
                    source.in_place(k)
                };
                let e = match in_place {
                    Some(pa) => pa | NOT_OWNED,
                    None => {
                        if !charge() {
                            return Err(FaultError::OutOfMemory);
                        }
                        source.fill(k).map_err(|_| FaultError::OutOfMemory)?
                    }
                };
                list.insert(k, e);
                if e & NOT_OWNED != 0 {
                    fault_around(source, &mut list, k, access, map);
                }
                (e & !NOT_OWNED, access.writable && e & NOT_OWNED == 0)
            }
            Some(e) if e & NOT_OWNED != 0 && access.write => {
                // A page mapped in place while the region was read-only,
                // now written (it was made writable): a private copy.
                if !charge() {
                    return Err(FaultError::OutOfMemory);
                }
                let new = pages::alloc_zeroed().ok_or(FaultError::OutOfMemory)?;
                pages::copy_frame(e & !NOT_OWNED, new);
                list.insert(k, new);
                (new, true)
            }
            Some(e) if e & NOT_OWNED != 0 => (e & !NOT_OWNED, false),
            Some(e) if share_count(e).load(Ordering::Acquire) == 0 => (e, access.writable),
            Some(e) if access.write => {
                // Copy on write: this process's own copy of a shared page.
                if !charge() {
                    return Err(FaultError::OutOfMemory);
                }
                let new = pages::alloc_zeroed().ok_or(FaultError::OutOfMemory)?;
                // `e` is held (shared) by this FCM; `new` is ours.
                pages::copy_frame(e, new);
                list.insert(k, new);
                release(e);
                (new, true)
            }
            Some(e) => (e, false),
        };
        if map(k, pa, writable) {
            Ok(())
        } else {
            Err(FaultError::OutOfMemory)
        }
    }

    fn install(&self, k: u64, pa: u64) {
        self.insert(k, pa);
    }

    fn snapshot(&self, protect: &mut dyn FnMut(u64)) -> Contents {
        let mut stripes = Vec::new();
        for (i, s) in self.used_stripes() {
            let pages = s.lock();
            for (&k, &e) in pages.iter() {
                if e & NOT_OWNED == 0 {
                    share_count(e).fetch_add(1, Ordering::AcqRel);
                    protect(k);
                }
            }
            stripes.push((i, pages.clone()));
        }
        Contents { stripes }
    }

    fn reset(&self, contents: Contents) {
        self.release_all();
        for (i, pages) in contents.stripes {
            *self.stripes[i].lock() = pages;
            self.mark(i);
        }
    }

    fn release_all(&self) {
        for (_, s) in self.used_stripes() {
            let old = core::mem::take(&mut *s.lock());
            release_pages(&old);
        }
        self.used.store(0, Ordering::Release);
    }

    fn release_range(&self, first: u64, end: u64) -> u64 {
        let mut owned = 0;
        for (_, s) in self.used_stripes() {
            let mut list = s.lock();
            let mut cut = list.split_off(&first);
            let mut rest = cut.split_off(&end);
            list.append(&mut rest);
            drop(list);
            owned += release_pages(&cut);
        }
        owned
    }
}

/// Let go of every page in `pages` that is the FCM's own; how many.
fn release_pages(pages: &BTreeMap<u64, u64>) -> u64 {
    let mut owned = 0;
    for &e in pages.values() {
        if e & NOT_OWNED == 0 {
            release(e);
            owned += 1;
        }
    }
    owned
}

/// Map the image pages around page `k` that can be mapped in place too:
/// a program's code is read in a burst, and each fault costs hundreds of
/// emulated instructions.
fn fault_around(
    source: &Source,
    list: &mut BTreeMap<u64, u64>,
    k: u64,
    access: Access,
    map: &mut dyn FnMut(u64, u64, bool) -> bool,
) {
    // Within the run of pages whose list is locked.
    let run = k / STRIPE_RUN * STRIPE_RUN;
    let (lo, hi) = (
        k.saturating_sub(FAULT_AROUND).max(run).max(access.first),
        (k + FAULT_AROUND + 1).min(access.end).min(run + STRIPE_RUN),
    );
    for j in (lo..hi).filter(|&j| j != k) {
        if list.contains_key(&j) {
            continue;
        }
        let Some(pa) = source.in_place(j) else {
            continue;
        };
        if map(j, pa, false) {
            list.insert(j, pa | NOT_OWNED);
        }
    }
}

impl Drop for SharedFcm {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// The shared FCM's root: one rep for every CPU.
struct SharedRoot {
    rep: Rep<dyn Fcm>,
}

impl Root<dyn Fcm> for SharedRoot {
    fn rep_for(&self, _: usize, _: &dyn CpuEnv) -> &Rep<dyn Fcm> {
        &self.rep
    }
    fn name(&self) -> &'static str {
        "shared"
    }
}

/// FCM objects of ended processes, emptied, for new regions to reuse:
/// making and destroying a clustered object costs a millisecond or more
/// while the kernel runs emulated, and a reused object needs no
/// quiescence (only its process's threads ever called it, and they are
/// gone).
static POOL: SpinLock<Vec<ObjRef<dyn Fcm>>> = SpinLock::new(Vec::new());

/// An FCM object with `contents`: one from the pool, or new.
pub fn create(contents: Contents) -> Result<ObjRef<dyn Fcm>, SyscallError> {
    if let Some(obj) = POOL.lock().pop() {
        call(obj, |f| f.reset(contents));
        return Ok(obj);
    }
    let root: Box<dyn Root<dyn Fcm>> = Box::new(SharedRoot {
        rep: Rep::new(Box::new(SharedFcm::new(contents)) as Box<dyn Fcm>),
    });
    // When the table is full the root drops, letting go of the pages.
    cobj::system().create(root).ok_or(SyscallError::NoMemory)
}

/// A copy of FCM `obj` for a forked child (see [`Fcm::snapshot`]).
pub fn fork_object(
    obj: ObjRef<dyn Fcm>,
    protect: &mut dyn FnMut(u64),
) -> Result<ObjRef<dyn Fcm>, SyscallError> {
    create(call(obj, |f| f.snapshot(protect)))
}

/// Empty `obj` and keep it for reuse.
pub fn retire(obj: ObjRef<dyn Fcm>) {
    call(obj, |f| f.release_all());
    POOL.lock().push(obj);
}

/// Call `f` on the FCM `obj` from this CPU.
pub fn call<R>(obj: ObjRef<dyn Fcm>, f: impl FnOnce(&(dyn Fcm + 'static)) -> R) -> R {
    let cpu = cobj::cpu();
    obj.call(&cpu.request(), f)
}
