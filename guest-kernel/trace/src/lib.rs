//! K42-style per-CPU trace buffers: the lock-free writer ([`BufferSet`])
//! and the reader ([`reader::Reader`]) of the layout `k42_abi::trace`
//! defines. `no_std` (with `alloc` for the reader); the same code runs in
//! the guest kernel, in guest user mode, in k42vmm's collector, and in
//! host unit tests with many threads.
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
//! An event more than 2^32 ticks after the buffer's last one is extended
//! (its id and full TSC in two more words), so 32 timestamp bits suffice
//! for the rest. A disabled class costs its caller one mask test; nothing
//! here runs.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod reader;

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

/// One CPU's buffer set: a view of its area (control block and
/// sub-buffers) in memory shared with the reader.
#[derive(Clone, Copy, Debug)]
pub struct BufferSet {
    base: *mut u8,
    geometry: Geometry,
}

// SAFETY: every access to the area goes through atomics or through slots
// that the reservation protocol gives to exactly one writer.
unsafe impl Send for BufferSet {}
// SAFETY: as above.
unsafe impl Sync for BufferSet {}

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

impl BufferSet {
    /// A view of the area at `base`.
    ///
    /// # Safety
    /// `base` must be 8-byte aligned and point at `geometry.area_size()`
    /// bytes that stay valid for as long as the view (and its copies) is
    /// used, that were zero when the first writer or reader used them, and
    /// that are accessed only through this protocol (writers through
    /// [`BufferSet`], one reader through [`reader::Reader`]).
    pub const unsafe fn new(base: *mut u8, geometry: Geometry) -> Self {
        Self { base, geometry }
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
                if offset
                    .compare_exchange_weak(off, off + len, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
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
            self.word(self.geometry.commit_offset(self.geometry.subbuf_index(pos)))
                .fetch_add(len + extra, Ordering::Release);
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
            self.word(control::LOST).fetch_add(1, Ordering::Relaxed);
            return Enter::Full;
        }
        // Taken before the CAS: every loss counted by the time a later
        // sub-buffer is entered is counted in that one's snapshot too.
        let lost = self.word(control::LOST).load(Ordering::Relaxed);
        let new = start + SUBBUF_HEADER_SIZE + len;
        if self
            .word(control::OFFSET)
            .compare_exchange(off, new, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
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
            self.word(g.commit_offset(g.subbuf_index(off)))
                .fetch_add(pad, Ordering::Release);
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

#[cfg(test)]
mod tests;
