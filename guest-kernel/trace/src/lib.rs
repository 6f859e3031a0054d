//! K42-style per-CPU trace buffers: the lock-free writer ([`BufferSet`])
//! of the layout `k42_abi::trace` defines. `no_std` and allocation-free:
//! the same code runs in the guest kernel and in guest user programs. The
//! reader, and the host tests that run many writer threads against it,
//! are in `k42-trace-reader`.
//!
//! One buffer set per CPU: a control block and `2^k` sub-buffers.
//!
//! ```text
//! offset (free-running) ───────────────────────────────────────────►
//! | sub-buffer 0        | sub-buffer 1        | sub-buffer 2  ...
//! | hdr ev ev ev filler | hdr ev ev ev ev     | (free)
//!   commit[0] == S        commit[1] < S: writers still at work
//! ```
//!
//! Writing an event:
//!
//! 1. Read `offset` and the clock; if the event fits in the current
//!    sub-buffer, reserve it with one compare-and-swap of `offset`. A
//!    failed CAS (another writer, or an interrupt that logged) retries
//!    with a fresh timestamp, so timestamps never go backwards in a
//!    buffer.
//! 2. Otherwise (the slow path) enter the next sub-buffer: if the reader
//!    has not released it, count the event in `lost` and return; else
//!    reserve the rest of the current sub-buffer (filler), the next
//!    sub-buffer's header and the event in one CAS.
//! 3. Write the payload, then the header word (release), then add the
//!    bytes to the sub-buffer's commit count (release).
//!
//! Per-CPU buffer sets, written only by code on their CPU, use plain
//! read-modify-write instructions ([`Local`], LTTng's `local_t`); buffer
//! sets that several CPUs write use lock-prefixed ones ([`Shared`]).
//!
//! An event more than 2^32 ticks after the buffer's last one is extended
//! (its id and full TSC in two more words), so 32 timestamp bits suffice
//! for the rest. A disabled class costs its caller one mask test; nothing
//! here runs.

#![no_std]

use core::sync::atomic::{AtomicU64, Ordering};

use k42_abi::trace::{
    CPU_CONTROL_SIZE, EXTENDED_EXTRA_WORDS, EXTENDED_ID, EventHeader, FILLER_ID, MAX_EVENT_WORDS,
    MAX_SUBBUF_SHIFT, MAX_SUBBUFS, MIN_SUBBUF_SHIFT, MIN_SUBBUFS, SUBBUF_HEADER_SIZE,
    SUBBUF_TSC_BEGIN, control, needs_full_tsc,
};

/// The shape of every CPU's buffer set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// log2 of the sub-buffer size in bytes.
    pub subbuf_shift: u32,
    /// Sub-buffers per CPU (a power of two).
    pub nsubbufs: u32,
}

impl Geometry {
    /// A geometry, if both numbers are in the ABI's ranges.
    pub const fn new(subbuf_shift: u32, nsubbufs: u32) -> Option<Self> {
        if subbuf_shift < MIN_SUBBUF_SHIFT
            || subbuf_shift > MAX_SUBBUF_SHIFT
            || nsubbufs < MIN_SUBBUFS
            || nsubbufs > MAX_SUBBUFS
            || !nsubbufs.is_power_of_two()
        {
            return None;
        }
        Some(Self {
            subbuf_shift,
            nsubbufs,
        })
    }

    /// Bytes in one sub-buffer.
    pub const fn subbuf_size(&self) -> u64 {
        1 << self.subbuf_shift
    }

    /// Bytes of all sub-buffers of one CPU.
    pub const fn data_size(&self) -> u64 {
        (self.nsubbufs as u64) << self.subbuf_shift
    }

    /// Bytes of one CPU's area: control block and sub-buffers.
    pub const fn area_size(&self) -> u64 {
        CPU_CONTROL_SIZE + self.data_size()
    }

    /// Index of the sub-buffer that free-running offset `pos` falls in.
    #[inline(always)]
    pub const fn subbuf_index(&self, pos: u64) -> u64 {
        (pos >> self.subbuf_shift) & (self.nsubbufs as u64 - 1)
    }

    /// Byte offset, in the area, of free-running offset `pos`.
    #[inline(always)]
    pub const fn area_offset(&self, pos: u64) -> u64 {
        CPU_CONTROL_SIZE + (pos & (self.data_size() - 1))
    }

    /// Byte offset, in the area, of sub-buffer `index`'s commit count.
    #[inline(always)]
    pub const fn commit_offset(&self, index: u64) -> u64 {
        control::COMMIT + 8 * index
    }
}

/// How the writers of a buffer set update its shared words: with
/// lock-prefixed read-modify-writes ([`Shared`]) or with plain ones
/// ([`Local`]), as LTTng does for per-CPU buffers.
pub trait Sharing: Copy {
    /// Compare-and-swap `word` from `old` to `new`; true if it was `old`.
    fn cas(word: &AtomicU64, old: u64, new: u64) -> bool;
    /// Add `v` to `word`; ordered after every store before it.
    fn add(word: &AtomicU64, v: u64);
}

/// Any number of CPUs may write the buffer set at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shared;

impl Sharing for Shared {
    #[inline(always)]
    fn cas(word: &AtomicU64, old: u64, new: u64) -> bool {
        word.compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    #[inline(always)]
    fn add(word: &AtomicU64, v: u64) {
        word.fetch_add(v, Ordering::Release);
    }
}

/// Only code running on one CPU writes the buffer set (interrupt handlers
/// may nest in a writer; other CPUs and the reader only read its words).
/// On x86_64 a single `cmpxchg` or `add` without `lock` is atomic with
/// respect to interrupts on its own CPU and takes no bus lock; aligned
/// stores are seen whole, and in order, by readers on other CPUs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Local;

impl Sharing for Local {
    #[inline(always)]
    fn cas(word: &AtomicU64, old: u64, new: u64) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let prev: u64;
            // SAFETY: `word` is a valid, aligned u64; only this CPU
            // modifies it (Local's contract), and one instruction cannot be
            // interrupted halfway. The asm clobbers memory, so it is also a
            // compiler barrier.
            unsafe {
                core::arch::asm!(
                    "cmpxchg qword ptr [{w}], {new}",
                    w = in(reg) word.as_ptr(),
                    new = in(reg) new,
                    inout("rax") old => prev,
                    options(nostack),
                );
            }
            prev == old
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Shared::cas(word, old, new)
        }
    }

    #[inline(always)]
    fn add(word: &AtomicU64, v: u64) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `cas`; x86 keeps this store after earlier ones.
        unsafe {
            core::arch::asm!(
                "add qword ptr [{w}], {v}",
                w = in(reg) word.as_ptr(),
                v = in(reg) v,
                options(nostack),
            );
        };
        #[cfg(not(target_arch = "x86_64"))]
        Shared::add(word, v);
    }
}

/// One CPU's buffer set: a view of its area (control block and
/// sub-buffers) in memory shared with the reader. `S` says who may write
/// it: see [`Shared`] and [`Local`].
#[derive(Clone, Copy, Debug)]
pub struct BufferSet<S: Sharing = Shared> {
    base: *mut u8,
    geometry: Geometry,
    _sharing: core::marker::PhantomData<S>,
}

// SAFETY: every access to the area goes through atomics or through slots
// that the reservation protocol gives to exactly one writer.
unsafe impl<S: Sharing> Send for BufferSet<S> {}
// SAFETY: as above.
unsafe impl<S: Sharing> Sync for BufferSet<S> {}

/// Outcome of the slow path.
enum Enter {
    /// The event goes at this free-running offset, after a new sub-buffer
    /// header.
    At(u64),
    /// Another writer moved `offset`: try again.
    Retry,
    /// Every sub-buffer is full: the event was counted as lost.
    Full,
}

impl<S: Sharing> BufferSet<S> {
    /// A view of the area at `base`.
    ///
    /// # Safety
    /// `base` must be 8-byte aligned and point at `geometry.area_size()`
    /// bytes that stay valid for as long as the view (and its copies) is
    /// used, that were zero when the first writer or reader used them, and
    /// that are accessed only through this protocol (writers through
    /// [`BufferSet`], one reader through `k42_trace_reader::Reader`).
    ///
    /// With `S` = [`Local`], only code running on one CPU may write the
    /// area.
    pub const unsafe fn new(base: *mut u8, geometry: Geometry) -> Self {
        Self {
            base,
            geometry,
            _sharing: core::marker::PhantomData,
        }
    }

    /// The geometry of this buffer set.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The area's base address.
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    #[inline(always)]
    fn word(&self, area_offset: u64) -> &AtomicU64 {
        // SAFETY: callers pass 8-aligned offsets inside the area, which
        // `new`'s contract keeps valid; all shared words are accessed
        // atomically.
        unsafe { AtomicU64::from_ptr(self.base.add(area_offset as usize).cast()) }
    }

    #[inline(always)]
    fn slot(&self, pos: u64) -> *mut u64 {
        // SAFETY: `area_offset` stays inside the area (masked).
        unsafe {
            self.base
                .add(self.geometry.area_offset(pos) as usize)
                .cast()
        }
    }

    /// Events dropped so far because every sub-buffer was full.
    pub fn lost(&self) -> u64 {
        self.word(control::LOST).load(Ordering::Relaxed)
    }

    /// Log event `id` with payload `words` at time `now()`. Returns false
    /// when every sub-buffer was full: the event was dropped and counted
    /// in `lost`. Never blocks; lock-free.
    #[inline(always)]
    pub fn log<const N: usize>(&self, now: impl Fn() -> u64, id: u16, words: &[u64; N]) -> bool {
        const {
            assert!(
                1 + EXTENDED_EXTRA_WORDS + N <= MAX_EVENT_WORDS,
                "event too long"
            )
        };
        let offset = self.word(control::OFFSET);
        let last_tsc = self.word(control::LAST_TSC);
        let s = self.geometry.subbuf_size();
        loop {
            let off = offset.load(Ordering::Relaxed);
            let tsc = now();
            let full = needs_full_tsc(tsc, last_tsc.load(Ordering::Relaxed));
            let nwords = 1 + N + if full { EXTENDED_EXTRA_WORDS } else { 0 };
            let len = (nwords * 8) as u64;
            let in_sb = off & (s - 1);
            let (pos, extra) = if in_sb != 0 && in_sb + len <= s {
                if !S::cas(offset, off, off + len) {
                    continue;
                }
                (off, 0)
            } else {
                match self.enter_subbuf(off, tsc, len) {
                    Enter::At(pos) => (pos, SUBBUF_HEADER_SIZE),
                    Enter::Retry => continue,
                    Enter::Full => return false,
                }
            };
            last_tsc.store(tsc, Ordering::Relaxed);
            let slot = self.slot(pos);
            // SAFETY: the CAS gave this writer `[pos, pos + len)`, which
            // lies in one sub-buffer of the area; nobody else writes it
            // and the reader does not read it before the header and
            // commit below publish it.
            unsafe {
                let mut p = slot.add(1);
                let mut header_id = id;
                if full {
                    p.write(id as u64);
                    p.add(1).write(tsc);
                    p = p.add(EXTENDED_EXTRA_WORDS);
                    header_id = EXTENDED_ID;
                }
                for (i, w) in words.iter().enumerate() {
                    p.add(i).write(*w);
                }
                AtomicU64::from_ptr(slot).store(
                    EventHeader::new(tsc, header_id, nwords as u8).0,
                    Ordering::Release,
                );
            }
            S::add(
                self.word(self.geometry.commit_offset(self.geometry.subbuf_index(pos))),
                len + extra,
            );
            return true;
        }
    }

    /// The slow path: the event does not fit in the current sub-buffer (or
    /// `off` is at a sub-buffer's start). Enter the next sub-buffer if the
    /// reader has released it.
    #[cold]
    #[inline(never)]
    fn enter_subbuf(&self, off: u64, tsc: u64, len: u64) -> Enter {
        let g = self.geometry;
        let s = g.subbuf_size();
        let in_sb = off & (s - 1);
        let start = if in_sb == 0 { off } else { off - in_sb + s };
        let consumed = self.word(control::CONSUMED).load(Ordering::Acquire);
        if start.wrapping_sub(consumed) > g.data_size() - s {
            S::add(self.word(control::LOST), 1);
            return Enter::Full;
        }
        // Taken before the CAS: every loss counted by the time a later
        // sub-buffer is entered is counted in that one's snapshot too.
        let lost = self.word(control::LOST).load(Ordering::Relaxed);
        let new = start + SUBBUF_HEADER_SIZE + len;
        if !S::cas(self.word(control::OFFSET), off, new) {
            return Enter::Retry;
        }
        if in_sb != 0 {
            let pad = s - in_sb;
            let words = (pad / 8).min(MAX_EVENT_WORDS as u64) as u8;
            // SAFETY: the CAS gave this writer `[off, start)`.
            unsafe {
                AtomicU64::from_ptr(self.slot(off))
                    .store(EventHeader::new(tsc, FILLER_ID, words).0, Ordering::Release);
            }
            S::add(self.word(g.commit_offset(g.subbuf_index(off))), pad);
        }
        let header = self.slot(start);
        // SAFETY: the CAS gave this writer the new sub-buffer's header;
        // `tsc_begin` is stored last and is never zero, so a reader that
        // sees it non-zero sees the whole header.
        unsafe {
            header.write(start >> g.subbuf_shift);
            header.add(1).write(lost);
            header.add(3).write(0);
            AtomicU64::from_ptr(header.add((SUBBUF_TSC_BEGIN / 8) as usize))
                .store(tsc.max(1), Ordering::Release);
        }
        Enter::At(start + SUBBUF_HEADER_SIZE)
    }
}
