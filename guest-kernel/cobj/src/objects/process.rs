//! The process object's region list (K42's Process): which region of the
//! address space covers an address — the lookup every page fault makes.
//!
//! - [`shared`]: one sorted list behind one lock.
//! - [`replicated`]: the root holds the authoritative list; each CPU's rep
//!   caches the regions it has used (sorted, like the root's list), so a
//!   fault usually reads only per-CPU data. Removing a region locks the root and drops it from every cache;
//!   a lookup that misses fills its cache while holding the root lock, so
//!   no cache keeps a removed region.
//!
//! Lock order: root, then caches. State-transfer format
//! [`FORMAT_REGIONS`]: every region as a `Vec<Region>`.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::{Contention, Padded, Relax, lock_watched};
use crate::env::CpuEnv;
use crate::root::{Format, Formats, Rep, RepSet, Root, TransferState};
use crate::sync::SpinLock;

/// A region of an address space: `[start, end)` with its protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
}

impl Region {
    fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }
    fn overlaps(&self, o: &Region) -> bool {
        self.start < o.end && o.start < self.end
    }
}

/// The process (region-list) interface.
pub trait Process: Send + Sync {
    /// The region covering `addr` (the page-fault path).
    fn find_region(&self, addr: u64) -> Option<Region>;
    /// Add `r`; false if it is empty or overlaps an existing region.
    fn add_region(&self, r: Region) -> bool;
    /// Remove the region starting at `start`.
    fn remove_region(&self, start: u64) -> Option<Region>;
    /// Regions in the address space.
    fn regions(&self) -> usize;
}

/// Every region, as a `Vec<Region>`.
pub const FORMAT_REGIONS: Format = 0;

fn find(list: &[Region], addr: u64) -> Option<Region> {
    let i = list.partition_point(|r| r.end <= addr);
    list.get(i).filter(|r| r.contains(addr)).copied()
}

fn add(list: &mut Vec<Region>, r: Region) -> bool {
    if r.start >= r.end || list.iter().any(|o| o.overlaps(&r)) {
        return false;
    }
    let i = list.partition_point(|o| o.start < r.start);
    list.insert(i, r);
    true
}

struct SharedState {
    list: SpinLock<Vec<Region>>,
    contention: Option<Arc<Contention>>,
    relax: Relax,
}

impl SharedState {
    fn lock(&self) -> crate::sync::Guard<'_, Vec<Region>> {
        lock_watched(&self.list, self.contention.as_deref(), self.relax)
    }
}

struct SharedRep(Arc<SharedState>);

impl Process for SharedRep {
    fn find_region(&self, addr: u64) -> Option<Region> {
        find(&self.0.lock(), addr)
    }
    fn add_region(&self, r: Region) -> bool {
        add(&mut self.0.lock(), r)
    }
    fn remove_region(&self, start: u64) -> Option<Region> {
        let mut l = self.0.lock();
        let i = l.iter().position(|r| r.start == start)?;
        Some(l.remove(i))
    }
    fn regions(&self) -> usize {
        self.0.lock().len()
    }
}

/// One region list for all CPUs.
pub struct SharedRoot {
    state: Arc<SharedState>,
    rep: Rep<dyn Process>,
}

/// A process whose region list is shared by all CPUs.
pub fn shared(contention: Option<Arc<Contention>>, relax: Relax) -> Box<dyn Root<dyn Process>> {
    let state = Arc::new(SharedState {
        list: SpinLock::new(Vec::new()),
        contention,
        relax,
    });
    let rep = Rep::new(Box::new(SharedRep(state.clone())) as Box<dyn Process>);
    Box::new(SharedRoot { state, rep })
}

impl Root<dyn Process> for SharedRoot {
    fn rep_for(&self, _: usize, _: &dyn CpuEnv) -> &Rep<dyn Process> {
        &self.rep
    }
    fn name(&self) -> &'static str {
        "shared"
    }
    fn export_formats(&self) -> Formats {
        Formats::of(FORMAT_REGIONS)
    }
    fn import_formats(&self) -> Formats {
        Formats::of(FORMAT_REGIONS)
    }
    fn export(&self, _: Format) -> Option<TransferState> {
        Some(Box::new(core::mem::take(&mut *self.state.lock())))
    }
    fn import(&self, _: Format, state: TransferState) -> bool {
        match state.downcast::<Vec<Region>>() {
            Ok(regions) => regions.into_iter().all(|r| add(&mut self.state.lock(), r)),
            Err(_) => false,
        }
    }
}

/// A region at the root, with the CPU groups whose caches hold it.
struct Entry {
    region: Region,
    replicas: [u64; 4],
}

struct ReplState {
    root: SpinLock<Vec<Entry>>,
    caches: Box<[Padded<SpinLock<Vec<Region>>>]>,
    relax: Relax,
}

fn root_index(root: &[Entry], addr: u64) -> Option<usize> {
    let i = root.partition_point(|e| e.region.end <= addr);
    root.get(i).filter(|e| e.region.contains(addr)).map(|_| i)
}

struct ReplRep {
    state: Arc<ReplState>,
    me: usize,
}

impl Process for ReplRep {
    fn find_region(&self, addr: u64) -> Option<Region> {
        let s = &*self.state;
        if let Some(r) = find(&s.caches[self.me].lock_with(s.relax), addr) {
            return Some(r);
        }
        let mut root = s.root.lock_with(s.relax);
        let i = root_index(&root, addr)?;
        let e = &mut root[i];
        e.replicas[self.me / 64] |= 1 << (self.me % 64);
        let r = e.region;
        let mut cache = s.caches[self.me].lock_with(s.relax);
        let i = cache.partition_point(|o| o.start < r.start);
        cache.insert(i, r);
        Some(r)
    }

    fn add_region(&self, r: Region) -> bool {
        let s = &*self.state;
        let mut root = s.root.lock_with(s.relax);
        if r.start >= r.end || root.iter().any(|e| e.region.overlaps(&r)) {
            return false;
        }
        let i = root.partition_point(|e| e.region.start < r.start);
        root.insert(
            i,
            Entry {
                region: r,
                replicas: [0; 4],
            },
        );
        true
    }

    fn remove_region(&self, start: u64) -> Option<Region> {
        let s = &*self.state;
        let mut root = s.root.lock_with(s.relax);
        let i = root.iter().position(|e| e.region.start == start)?;
        let e = root.remove(i);
        // Only the caches that hold it.
        for (w, &word) in e.replicas.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let g = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                s.caches[g].lock_with(s.relax).retain(|x| x.start != start);
            }
        }
        Some(e.region)
    }

    fn regions(&self) -> usize {
        let s = &*self.state;
        s.root.lock_with(s.relax).len()
    }
}

/// The authoritative list at the root, regions cached per CPU group.
pub struct ReplicatedRoot {
    state: Arc<ReplState>,
    reps: RepSet<dyn Process>,
}

/// A process whose regions are cached per group of `group_size` CPUs.
pub fn replicated(ncpus: usize, group_size: usize, relax: Relax) -> Box<dyn Root<dyn Process>> {
    let reps = RepSet::new(ncpus, group_size);
    let caches = (0..reps.groups())
        .map(|_| Padded(SpinLock::new(Vec::new())))
        .collect();
    Box::new(ReplicatedRoot {
        state: Arc::new(ReplState {
            root: SpinLock::new(Vec::new()),
            caches,
            relax,
        }),
        reps,
    })
}

impl Root<dyn Process> for ReplicatedRoot {
    fn rep_for(&self, cpu: usize, _env: &dyn CpuEnv) -> &Rep<dyn Process> {
        self.reps.get_or_create(cpu, |g| {
            Box::new(ReplRep {
                state: self.state.clone(),
                me: g,
            })
        })
    }
    fn name(&self) -> &'static str {
        "replicated"
    }
    fn export_formats(&self) -> Formats {
        Formats::of(FORMAT_REGIONS)
    }
    fn import_formats(&self) -> Formats {
        Formats::of(FORMAT_REGIONS)
    }
    fn export(&self, _: Format) -> Option<TransferState> {
        let s = &*self.state;
        for c in s.caches.iter() {
            c.lock_with(s.relax).clear();
        }
        let root = core::mem::take(&mut *s.root.lock_with(s.relax));
        Some(Box::new(
            root.into_iter().map(|e| e.region).collect::<Vec<Region>>(),
        ))
    }
    fn import(&self, _: Format, state: TransferState) -> bool {
        let s = &*self.state;
        match state.downcast::<Vec<Region>>() {
            Ok(regions) => {
                let mut root = s.root.lock_with(s.relax);
                root.clear();
                root.extend(regions.into_iter().map(|region| Entry {
                    region,
                    replicas: [0; 4],
                }));
                root.windows(2)
                    .all(|w| w[0].region.end <= w[1].region.start)
            }
            Err(_) => false,
        }
    }
}
