//! The hash table behind file caches (K42's DHashTable): maps keys (file
//! offsets) to values (pages).
//!
//! - [`shared`]: one table behind one lock.
//! - [`distributed`]: a master table (buckets, each with its own lock) and
//!   a local table per CPU. A lookup that hits its CPU's local table
//!   touches only per-CPU data; a miss locks the master bucket, copies the
//!   entry into the local table and records the CPU in the entry's replica
//!   set. Inserts and removals lock the master bucket and every replica,
//!   so local tables never hold a stale value.
//!
//! Lock order: master bucket, then local tables.
//!
//! State-transfer format [`FORMAT_ENTRIES`]: every entry as a
//! `Vec<(u64, u64)>`.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::{Contention, Padded, Relax, lock_watched};
use crate::env::CpuEnv;
use crate::root::{Format, Formats, Rep, RepSet, Root, TransferState};
use crate::sync::SpinLock;

/// The hash-table interface.
pub trait HashTable: Send + Sync {
    /// Set `key` to `value`; returns the previous value.
    fn insert(&self, key: u64, value: u64) -> Option<u64>;
    fn lookup(&self, key: u64) -> Option<u64>;
    fn remove(&self, key: u64) -> Option<u64>;
    /// Remove every entry whose key is `from` or more; their values.
    /// (Work in proportion to the entries, never to the key range.)
    fn remove_from(&self, from: u64) -> Vec<u64>;
    /// Entries in the table.
    fn len(&self) -> usize;
    /// Whether the table has no entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every entry, as a `Vec<(u64, u64)>`.
pub const FORMAT_ENTRIES: Format = 0;

struct SharedState {
    map: SpinLock<BTreeMap<u64, u64>>,
    contention: Option<Arc<Contention>>,
    relax: Relax,
}

impl SharedState {
    fn lock(&self) -> crate::sync::Guard<'_, BTreeMap<u64, u64>> {
        lock_watched(&self.map, self.contention.as_deref(), self.relax)
    }
}

struct SharedRep(Arc<SharedState>);

impl HashTable for SharedRep {
    fn insert(&self, key: u64, value: u64) -> Option<u64> {
        self.0.lock().insert(key, value)
    }
    fn lookup(&self, key: u64) -> Option<u64> {
        self.0.lock().get(&key).copied()
    }
    fn remove(&self, key: u64) -> Option<u64> {
        self.0.lock().remove(&key)
    }
    fn remove_from(&self, from: u64) -> Vec<u64> {
        self.0.lock().split_off(&from).into_values().collect()
    }
    fn len(&self) -> usize {
        self.0.lock().len()
    }
}

/// One locked table for all CPUs.
pub struct SharedRoot {
    state: Arc<SharedState>,
    rep: Rep<dyn HashTable>,
}

/// A shared hash table.
pub fn shared(contention: Option<Arc<Contention>>, relax: Relax) -> Box<dyn Root<dyn HashTable>> {
    let state = Arc::new(SharedState {
        map: SpinLock::new(BTreeMap::new()),
        contention,
        relax,
    });
    let rep = Rep::new(Box::new(SharedRep(state.clone())) as Box<dyn HashTable>);
    Box::new(SharedRoot { state, rep })
}

impl Root<dyn HashTable> for SharedRoot {
    fn rep_for(&self, _: usize, _: &dyn CpuEnv) -> &Rep<dyn HashTable> {
        &self.rep
    }
    fn name(&self) -> &'static str {
        "shared"
    }
    fn export_formats(&self) -> Formats {
        Formats::of(FORMAT_ENTRIES)
    }
    fn import_formats(&self) -> Formats {
        Formats::of(FORMAT_ENTRIES)
    }
    fn export(&self, _: Format) -> Option<TransferState> {
        let entries: Vec<(u64, u64)> = core::mem::take(&mut *self.state.lock())
            .into_iter()
            .collect();
        Some(Box::new(entries))
    }
    fn import(&self, _: Format, state: TransferState) -> bool {
        state
            .downcast::<Vec<(u64, u64)>>()
            .map(|e| self.state.lock().extend(*e))
            .is_ok()
    }
}

/// A master entry: the value and the CPU groups holding a replica.
struct MasterEntry {
    value: u64,
    replicas: [u64; 4],
}

/// A master bucket or a local table, each with its own lock and line.
type Table<V> = Padded<SpinLock<BTreeMap<u64, V>>>;

struct DistState {
    master: Box<[Table<MasterEntry>]>,
    locals: Box<[Table<u64>]>,
    relax: Relax,
}

impl DistState {
    fn bucket(&self, key: u64) -> &SpinLock<BTreeMap<u64, MasterEntry>> {
        let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        &self.master[(h % self.master.len() as u64) as usize]
    }

    /// Apply `f` to the local table of every replica of `e`.
    fn each_replica(&self, e: &MasterEntry, mut f: impl FnMut(&mut BTreeMap<u64, u64>)) {
        for (w, &word) in e.replicas.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let g = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                f(&mut self.locals[g].lock_with(self.relax));
            }
        }
    }
}

struct DistRep {
    state: Arc<DistState>,
    me: usize,
}

impl HashTable for DistRep {
    fn lookup(&self, key: u64) -> Option<u64> {
        let s = &*self.state;
        if let Some(&v) = s.locals[self.me].lock_with(s.relax).get(&key) {
            return Some(v);
        }
        let mut bucket = s.bucket(key).lock_with(s.relax);
        let e = bucket.get_mut(&key)?;
        e.replicas[self.me / 64] |= 1 << (self.me % 64);
        s.locals[self.me].lock_with(s.relax).insert(key, e.value);
        Some(e.value)
    }

    fn insert(&self, key: u64, value: u64) -> Option<u64> {
        let s = &*self.state;
        let mut bucket = s.bucket(key).lock_with(s.relax);
        match bucket.get_mut(&key) {
            Some(e) => {
                let old = e.value;
                e.value = value;
                s.each_replica(e, |local| {
                    local.insert(key, value);
                });
                Some(old)
            }
            None => {
                bucket.insert(
                    key,
                    MasterEntry {
                        value,
                        replicas: [0; 4],
                    },
                );
                None
            }
        }
    }

    fn remove(&self, key: u64) -> Option<u64> {
        let s = &*self.state;
        let mut bucket = s.bucket(key).lock_with(s.relax);
        let e = bucket.remove(&key)?;
        s.each_replica(&e, |local| {
            local.remove(&key);
        });
        Some(e.value)
    }

    fn remove_from(&self, from: u64) -> Vec<u64> {
        let s = &*self.state;
        let mut out = Vec::new();
        for b in s.master.iter() {
            let mut bucket = b.lock_with(s.relax);
            for (key, e) in bucket.split_off(&from) {
                s.each_replica(&e, |local| {
                    local.remove(&key);
                });
                out.push(e.value);
            }
        }
        out
    }

    fn len(&self) -> usize {
        let s = &*self.state;
        s.master.iter().map(|b| b.lock_with(s.relax).len()).sum()
    }
}

/// A master table plus local tables per group of CPUs.
pub struct DistributedRoot {
    state: Arc<DistState>,
    reps: RepSet<dyn HashTable>,
}

/// A distributed hash table for `ncpus` CPUs (at most 256 groups) with one
/// local table per `group_size` CPUs and `buckets` master buckets.
pub fn distributed(
    ncpus: usize,
    group_size: usize,
    buckets: usize,
    relax: Relax,
) -> Box<dyn Root<dyn HashTable>> {
    let reps = RepSet::new(ncpus, group_size);
    assert!(reps.groups() <= 256, "replica sets hold 256 groups");
    let master = (0..buckets.max(1))
        .map(|_| Padded(SpinLock::new(BTreeMap::new())))
        .collect();
    let locals = (0..reps.groups())
        .map(|_| Padded(SpinLock::new(BTreeMap::new())))
        .collect();
    Box::new(DistributedRoot {
        state: Arc::new(DistState {
            master,
            locals,
            relax,
        }),
        reps,
    })
}

impl Root<dyn HashTable> for DistributedRoot {
    fn rep_for(&self, cpu: usize, _env: &dyn CpuEnv) -> &Rep<dyn HashTable> {
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
        Formats::of(FORMAT_ENTRIES)
    }
    fn import_formats(&self) -> Formats {
        Formats::of(FORMAT_ENTRIES)
    }
    fn export(&self, _: Format) -> Option<TransferState> {
        let s = &*self.state;
        let mut entries = Vec::new();
        for b in s.master.iter() {
            entries.extend(
                core::mem::take(&mut *b.lock_with(s.relax))
                    .into_iter()
                    .map(|(k, e)| (k, e.value)),
            );
        }
        for l in s.locals.iter() {
            l.lock_with(s.relax).clear();
        }
        Some(Box::new(entries))
    }
    fn import(&self, _: Format, state: TransferState) -> bool {
        let s = &*self.state;
        match state.downcast::<Vec<(u64, u64)>>() {
            Ok(entries) => {
                for (k, v) in *entries {
                    s.bucket(k).lock_with(s.relax).insert(
                        k,
                        MasterEntry {
                            value: v,
                            replicas: [0; 4],
                        },
                    );
                }
                true
            }
            Err(_) => false,
        }
    }
}
