//! The page manager (K42's PMRoot): hands out page frames.
//!
//! - [`shared`]: one free list behind one lock.
//! - [`distributed`]: each CPU's rep keeps a cache of free pages, capped
//!   at a few chunks; an empty cache refills a chunk from the root's list,
//!   a full one spills a chunk back. Most allocations touch only per-CPU
//!   data. When the root runs dry a rep takes pages from other caches, so
//!   an allocation fails only when no page is free anywhere.
//!
//! Pages are opaque `u64`s (frame addresses in the kernel). State-transfer
//! format [`FORMAT_FREE_PAGES`]: every free page as a `Vec<u64>`.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::{Contention, Padded, Relax, lock_watched};
use crate::env::CpuEnv;
use crate::root::{Format, Formats, Rep, RepSet, Root, TransferState};
use crate::sync::SpinLock;

/// The page-manager interface.
pub trait PageManager: Send + Sync {
    /// A free page, or `None` when there is none.
    fn alloc(&self) -> Option<u64>;
    /// Return a page.
    fn free(&self, page: u64);
    /// Free pages in the whole object (exact when no call is running).
    fn free_pages(&self) -> usize;
}

/// Every free page, as a `Vec<u64>`.
pub const FORMAT_FREE_PAGES: Format = 0;

/// Where a page manager gets more pages when all its lists are empty
/// (the kernel's boot-time frame allocator, for instance).
pub trait PageSource: Send + Sync {
    /// Append up to `n` pages to `into`.
    fn take(&self, n: usize, into: &mut Vec<u64>);
}

/// Pages to take from the source at once for a shared list.
const SHARED_REFILL: usize = 16;

struct SharedState {
    list: SpinLock<Vec<u64>>,
    contention: Option<Arc<Contention>>,
    source: Option<Arc<dyn PageSource>>,
    relax: Relax,
}

impl SharedState {
    fn lock(&self) -> crate::sync::Guard<'_, Vec<u64>> {
        lock_watched(&self.list, self.contention.as_deref(), self.relax)
    }
}

struct SharedRep(Arc<SharedState>);

impl PageManager for SharedRep {
    fn alloc(&self) -> Option<u64> {
        let mut list = self.0.lock();
        if list.is_empty()
            && let Some(src) = &self.0.source
        {
            src.take(SHARED_REFILL, &mut list);
        }
        list.pop()
    }
    fn free(&self, page: u64) {
        self.0.lock().push(page);
    }
    fn free_pages(&self) -> usize {
        self.0.lock().len()
    }
}

/// One free list for all CPUs.
pub struct SharedRoot {
    state: Arc<SharedState>,
    rep: Rep<dyn PageManager>,
}

/// A shared page manager holding `pages`, refilling from `source` when
/// empty.
pub fn shared(
    pages: Vec<u64>,
    source: Option<Arc<dyn PageSource>>,
    contention: Option<Arc<Contention>>,
    relax: Relax,
) -> Box<dyn Root<dyn PageManager>> {
    let state = Arc::new(SharedState {
        list: SpinLock::new(pages),
        contention,
        source,
        relax,
    });
    let rep = Rep::new(Box::new(SharedRep(state.clone())) as Box<dyn PageManager>);
    Box::new(SharedRoot { state, rep })
}

impl Root<dyn PageManager> for SharedRoot {
    fn rep_for(&self, _: usize, _: &dyn CpuEnv) -> &Rep<dyn PageManager> {
        &self.rep
    }
    fn name(&self) -> &'static str {
        "shared"
    }
    fn export_formats(&self) -> Formats {
        Formats::of(FORMAT_FREE_PAGES)
    }
    fn import_formats(&self) -> Formats {
        Formats::of(FORMAT_FREE_PAGES)
    }
    fn export(&self, _: Format) -> Option<TransferState> {
        Some(Box::new(core::mem::take(&mut *self.state.lock())))
    }
    fn import(&self, _: Format, state: TransferState) -> bool {
        state
            .downcast::<Vec<u64>>()
            .map(|pages| self.state.lock().extend(*pages))
            .is_ok()
    }
}

struct DistState {
    global: SpinLock<Vec<u64>>,
    /// Pages in `global`, readable without its lock: a CPU that finds it
    /// zero goes to the source without touching the root's lock.
    global_len: AtomicUsize,
    caches: Box<[Padded<SpinLock<Vec<u64>>>]>,
    chunk: usize,
    source: Option<Arc<dyn PageSource>>,
    relax: Relax,
}

struct DistRep {
    state: Arc<DistState>,
    me: usize,
}

impl DistRep {
    /// The root is empty: take a page from another CPU's cache (rare, when
    /// memory is nearly exhausted), so that `alloc` fails only when no page
    /// is free anywhere.
    #[cold]
    fn steal(&self) -> Option<u64> {
        let s = &*self.state;
        let n = s.caches.len();
        (1..n).find_map(|d| s.caches[(self.me + d) % n].lock_with(s.relax).pop())
    }
}

impl PageManager for DistRep {
    fn alloc(&self) -> Option<u64> {
        let s = &*self.state;
        let mut cache = s.caches[self.me].lock_with(s.relax);
        if let Some(p) = cache.pop() {
            return Some(p);
        }
        // Refill one chunk from the root; if the root is empty, straight
        // from the source, without holding the root's lock.
        if s.global_len.load(Ordering::Relaxed) != 0 {
            let mut global = s.global.lock_with(s.relax);
            let take = s.chunk.min(global.len());
            let at = global.len() - take;
            cache.extend(global.drain(at..));
            s.global_len.store(global.len(), Ordering::Relaxed);
        }
        if cache.is_empty()
            && let Some(src) = &s.source
        {
            src.take(s.chunk, &mut cache);
        }
        if let Some(p) = cache.pop() {
            return Some(p);
        }
        drop(cache);
        self.steal()
    }

    fn free(&self, page: u64) {
        let s = &*self.state;
        let mut cache = s.caches[self.me].lock_with(s.relax);
        cache.push(page);
        if cache.len() >= 3 * s.chunk {
            // Spill one chunk back so pages do not pile up on one CPU.
            let at = cache.len() - s.chunk;
            let mut global = s.global.lock_with(s.relax);
            global.extend(cache.drain(at..));
            s.global_len.store(global.len(), Ordering::Relaxed);
        }
    }

    fn free_pages(&self) -> usize {
        // One lock at a time: `alloc` takes a cache lock, then the root's.
        let s = &*self.state;
        let global = s.global.lock_with(s.relax).len();
        global
            + s.caches
                .iter()
                .map(|c| c.lock_with(s.relax).len())
                .sum::<usize>()
    }
}

/// Per-CPU (or per-group) caches in front of a root list.
pub struct DistributedRoot {
    state: Arc<DistState>,
    reps: RepSet<dyn PageManager>,
}

/// A distributed page manager for `ncpus` CPUs holding `pages`, with one
/// cache per `group_size` CPUs, moving `chunk` pages at a time, refilling
/// from `source` when every list is empty.
pub fn distributed(
    ncpus: usize,
    group_size: usize,
    chunk: usize,
    pages: Vec<u64>,
    source: Option<Arc<dyn PageSource>>,
    relax: Relax,
) -> Box<dyn Root<dyn PageManager>> {
    let reps = RepSet::new(ncpus, group_size);
    let caches = (0..reps.groups())
        .map(|_| Padded(SpinLock::new(Vec::new())))
        .collect();
    let state = Arc::new(DistState {
        global_len: AtomicUsize::new(pages.len()),
        global: SpinLock::new(pages),
        caches,
        chunk: chunk.max(1),
        source,
        relax,
    });
    Box::new(DistributedRoot { state, reps })
}

impl Root<dyn PageManager> for DistributedRoot {
    fn rep_for(&self, cpu: usize, _env: &dyn CpuEnv) -> &Rep<dyn PageManager> {
        self.reps.get_or_create(cpu, |g| {
            Box::new(DistRep {
                state: self.state.clone(),
                me: g,
            })
        })
    }
    fn name(&self) -> &'static str {
        "distributed"
    }
    fn export_formats(&self) -> Formats {
        Formats::of(FORMAT_FREE_PAGES)
    }
    fn import_formats(&self) -> Formats {
        Formats::of(FORMAT_FREE_PAGES)
    }
    fn export(&self, _: Format) -> Option<TransferState> {
        let s = &*self.state;
        let mut all = core::mem::take(&mut *s.global.lock_with(s.relax));
        s.global_len.store(0, Ordering::Relaxed);
        for c in s.caches.iter() {
            all.append(&mut c.lock_with(s.relax));
        }
        Some(Box::new(all))
    }
    fn import(&self, _: Format, state: TransferState) -> bool {
        let s = &*self.state;
        state
            .downcast::<Vec<u64>>()
            .map(|pages| {
                let mut global = s.global.lock_with(s.relax);
                global.extend(*pages);
                s.global_len.store(global.len(), Ordering::Relaxed);
            })
            .is_ok()
    }
}
