//! The reader of the K42-style trace buffers that `k42-trace` writes:
//! take complete sub-buffers, peek at the events of the one being
//! written, and drain everything once the writers have stopped. `no_std`
//! with `alloc`: k42vmm's collector and the kernel's tests use it, and
//! its host tests run many writer threads against one reader.
//!
//! The reader reaches the area through [`TraceMem`] (k42vmm reads guest
//! RAM; tests and the kernel read their own memory). It keeps its own
//! free-running `consumed` offset and publishes it in the control block
//! after zeroing each sub-buffer it took, which hands the sub-buffer back
//! to the writers:
//!
//! ```text
//! take:  commit[i] == (lap + 1) * S ?  ── no ──► nothing yet
//!            │ yes
//!            ▼
//!        copy sub-buffer, find its filler, zero it, consumed += S
//! peek:  walk the current sub-buffer from where the last peek stopped
//!        while header words are non-zero (a header is stored after its
//!        payload, and taken sub-buffers are zeroed)
//! drain: take what is complete, then the tail up to the writers'
//!        `offset`; writes that never finished are counted in bytes
//! ```
//!
//! Everything read is guest-controlled: framing errors come back as
//! [`ReadError`], never as a panic.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

use k42_abi::trace::{
    EXTENDED_EXTRA_WORDS, EventHeader, FILLER_ID, SUBBUF_HEADER_SIZE, SUBBUF_TSC_BEGIN, control,
    extend_tsc,
};

use k42_trace::{BufferSet, Geometry, Sharing};

/// Access to one CPU's area (control block and sub-buffers); offsets are
/// bytes from the area's start.
pub trait TraceMem {
    /// Load the aligned word at `off` atomically, with acquire ordering.
    fn load(&self, off: u64) -> u64;
    /// Store `value` to the aligned word at `off` atomically, with release
    /// ordering.
    fn store(&self, off: u64, value: u64);
    /// Copy the bytes at `off` into `buf`.
    fn read(&self, off: u64, buf: &mut [u8]);
    /// Zero `len` bytes at `off`.
    fn zero(&self, off: u64, len: u64);
}

/// A [`TraceMem`] over an area in this address space.
pub struct LocalMem {
    base: *mut u8,
    len: u64,
}

impl LocalMem {
    /// The area of `buffers`.
    pub fn new<S: Sharing>(buffers: &BufferSet<S>) -> Self {
        Self {
            base: buffers.base(),
            len: buffers.geometry().area_size(),
        }
    }

    fn at(&self, off: u64, len: u64) -> *mut u8 {
        assert!(off + len <= self.len, "read beyond the trace area");
        // SAFETY: checked to lie in the area, which BufferSet::new's
        // contract keeps valid.
        unsafe { self.base.add(off as usize) }
    }
}

impl TraceMem for LocalMem {
    fn load(&self, off: u64) -> u64 {
        // SAFETY: an aligned word in the area, accessed atomically.
        unsafe {
            core::sync::atomic::AtomicU64::from_ptr(self.at(off, 8).cast())
                .load(core::sync::atomic::Ordering::Acquire)
        }
    }

    fn store(&self, off: u64, value: u64) {
        // SAFETY: as in `load`.
        unsafe {
            core::sync::atomic::AtomicU64::from_ptr(self.at(off, 8).cast())
                .store(value, core::sync::atomic::Ordering::Release)
        }
    }

    fn read(&self, off: u64, buf: &mut [u8]) {
        let src = self.at(off, buf.len() as u64);
        // SAFETY: the protocol guarantees no writer touches these bytes
        // while they are read (committed, or published by their header).
        unsafe { core::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
    }

    fn zero(&self, off: u64, len: u64) {
        let dst = self.at(off, len);
        // SAFETY: the reader holds this sub-buffer: writers cannot enter
        // it until `consumed` moves past it.
        unsafe { core::ptr::write_bytes(dst, 0, len as usize) };
    }
}

/// The guest broke the protocol; reading this CPU's buffers stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// A sub-buffer header names another sub-buffer.
    BadSubbufHeader { expected_seq: u64, found_seq: u64 },
    /// A commit count is larger than its sub-buffer.
    CommitOverflow { seq: u64, committed: u64 },
    /// An event header with an impossible length, at this byte offset of
    /// sub-buffer `seq`.
    BadEvent { seq: u64, at: u64 },
}

impl core::fmt::Display for ReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReadError::BadSubbufHeader {
                expected_seq,
                found_seq,
            } => write!(
                f,
                "sub-buffer {expected_seq} has the header of sub-buffer {found_seq}"
            ),
            ReadError::CommitOverflow { seq, committed } => write!(
                f,
                "sub-buffer {seq} claims {committed} committed bytes, more than it holds"
            ),
            ReadError::BadEvent { seq, at } => {
                write!(f, "sub-buffer {seq} has a malformed event at byte {at}")
            }
        }
    }
}

/// Events of one sub-buffer (a CTF packet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Free-running sub-buffer number.
    pub seq: u64,
    /// The CPU's lost count when the sub-buffer was entered.
    pub lost_begin: u64,
    /// TSC of the first event.
    pub tsc_begin: u64,
    /// The event words after the sub-buffer header, up to the filler or
    /// the end of what was written.
    pub words: Vec<u64>,
    /// How many of its first events [`Reader::peek`] already returned.
    pub peeked: usize,
    /// Bytes reserved by writes that never finished (only in a drain
    /// after writers stopped in mid-event); the events after the first
    /// such write are not in `words`.
    pub incomplete_bytes: u64,
}

impl Packet {
    /// The packet's events.
    pub fn events(&self) -> Events<'_> {
        Events::new(&self.words, self.tsc_begin)
    }
}

/// Newly written events of the current sub-buffer (from [`Reader::peek`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// Event words.
    pub words: Vec<u64>,
    /// Full TSC of the event before the first one (for timestamp
    /// extension).
    pub tsc_prev: u64,
}

impl Chunk {
    /// The chunk's events.
    pub fn events(&self) -> Events<'_> {
        Events::new(&self.words, self.tsc_prev)
    }
}

/// One event, framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawEvent<'a> {
    /// Full TSC.
    pub tsc: u64,
    /// Event id.
    pub id: u16,
    /// Payload words.
    pub payload: &'a [u64],
    /// Whether the event was extended (carried its full TSC).
    pub extended: bool,
}

impl RawEvent<'_> {
    /// Words the event takes in its buffer.
    pub fn len_words(&self) -> usize {
        1 + self.payload.len()
            + if self.extended {
                EXTENDED_EXTRA_WORDS
            } else {
                0
            }
    }
}

/// Whether a header's length is possible.
fn length_ok(h: EventHeader, room_words: u64) -> bool {
    let len = h.len_words() as u64;
    let min = if h.extended() {
        1 + EXTENDED_EXTRA_WORDS as u64
    } else {
        1
    };
    len >= min && len <= room_words
}

/// Iterator over the events in a run of event words.
pub struct Events<'a> {
    words: &'a [u64],
    at: usize,
    tsc: u64,
}

impl<'a> Events<'a> {
    /// Events in `words`, the one before them at full TSC `tsc_prev`.
    pub fn new(words: &'a [u64], tsc_prev: u64) -> Self {
        Self {
            words,
            at: 0,
            tsc: tsc_prev,
        }
    }
}

impl<'a> Iterator for Events<'a> {
    /// An event, or the word offset of a malformed one (iteration ends).
    type Item = Result<RawEvent<'a>, usize>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.words[self.at..];
        let &h = rest.first()?;
        let hdr = EventHeader(h);
        let len = hdr.len_words();
        if !length_ok(hdr, rest.len() as u64) || hdr.id() == FILLER_ID {
            let at = self.at;
            self.at = self.words.len();
            return Some(Err(at));
        }
        let extended = hdr.extended();
        let (id, tsc, payload) = if extended {
            (
                rest[1] as u16,
                rest[2],
                &rest[1 + EXTENDED_EXTRA_WORDS..len],
            )
        } else {
            (hdr.id(), extend_tsc(self.tsc, hdr.tsc_low()), &rest[1..len])
        };
        self.tsc = tsc;
        self.at += len;
        Some(Ok(RawEvent {
            tsc,
            id,
            payload,
            extended,
        }))
    }
}

/// The reader of one CPU's buffer set.
#[derive(Clone, Debug)]
pub struct Reader {
    g: Geometry,
    /// Free-running offset of the next sub-buffer to take.
    consumed: u64,
    /// Byte offset in the current sub-buffer up to which `peek` has
    /// returned events (0: not even the header seen yet).
    peek_at: u64,
    /// Full TSC of the last event `peek` returned.
    peek_tsc: u64,
    /// Events of the current sub-buffer `peek` returned.
    peeked: usize,
}

impl Reader {
    /// A reader for an area whose writers have not started yet.
    pub fn new(g: Geometry) -> Self {
        Self {
            g,
            consumed: 0,
            peek_at: 0,
            peek_tsc: 0,
            peeked: 0,
        }
    }

    /// Events the writers dropped so far.
    pub fn lost(&self, mem: &impl TraceMem) -> u64 {
        mem.load(control::LOST)
    }

    /// Free-running offset of the next sub-buffer to take.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    fn current(&self) -> (u64, u64, u64) {
        let g = &self.g;
        let seq = self.consumed >> g.subbuf_shift;
        let lap = self.consumed / g.data_size();
        (seq, lap, g.area_offset(self.consumed))
    }

    fn committed(&self, mem: &impl TraceMem) -> u64 {
        let (_, lap, _) = self.current();
        let c = mem.load(self.g.commit_offset(self.g.subbuf_index(self.consumed)));
        c.wrapping_sub(lap * self.g.subbuf_size())
    }

    /// Take the next sub-buffer if every byte of it is committed, and
    /// hand it back to the writers.
    pub fn take(&mut self, mem: &impl TraceMem) -> Result<Option<Packet>, ReadError> {
        let s = self.g.subbuf_size();
        let committed = self.committed(mem);
        let (seq, _, _) = self.current();
        if committed < s {
            return Ok(None);
        }
        if committed > s {
            return Err(ReadError::CommitOverflow { seq, committed });
        }
        let packet = self.read_subbuf(mem, s, true)?;
        self.release(mem);
        Ok(Some(packet))
    }

    /// Zero the current sub-buffer and give it back to the writers.
    fn release(&mut self, mem: &impl TraceMem) {
        let (_, _, base) = self.current();
        mem.zero(base, self.g.subbuf_size());
        self.consumed += self.g.subbuf_size();
        mem.store(control::CONSUMED, self.consumed);
        self.peek_at = 0;
        self.peek_tsc = 0;
        self.peeked = 0;
    }

    /// Read the current sub-buffer's first `end` bytes: all of them
    /// committed when `complete`, else only up to the first event whose
    /// header was never written.
    fn read_subbuf(
        &self,
        mem: &impl TraceMem,
        end: u64,
        complete: bool,
    ) -> Result<Packet, ReadError> {
        let (seq, _, base) = self.current();
        let mut raw = vec![0u8; end as usize];
        mem.read(base, &mut raw);
        let words: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let hdr_words = (SUBBUF_HEADER_SIZE / 8) as usize;
        if words.len() < hdr_words || words[(SUBBUF_TSC_BEGIN / 8) as usize] == 0 {
            // Reserved but the entering writer never wrote the header.
            return Ok(Packet {
                seq,
                lost_begin: 0,
                tsc_begin: 0,
                words: Vec::new(),
                peeked: 0,
                incomplete_bytes: if complete { 0 } else { end },
            });
        }
        if words[0] != seq {
            return Err(ReadError::BadSubbufHeader {
                expected_seq: seq,
                found_seq: words[0],
            });
        }
        let lost_begin = words[1];
        let tsc_begin = words[2];
        let mut at = hdr_words;
        let mut incomplete_bytes = 0;
        while at < words.len() {
            let h = EventHeader(words[at]);
            if words[at] == 0 {
                if complete {
                    return Err(ReadError::BadEvent {
                        seq,
                        at: at as u64 * 8,
                    });
                }
                incomplete_bytes = end - at as u64 * 8;
                break;
            }
            if h.id() == FILLER_ID {
                break;
            }
            let len = h.len_words();
            if !length_ok(h, (words.len() - at) as u64) {
                return Err(ReadError::BadEvent {
                    seq,
                    at: at as u64 * 8,
                });
            }
            at += len;
        }
        Ok(Packet {
            seq,
            lost_begin,
            tsc_begin,
            words: words[hdr_words..at].to_vec(),
            peeked: self.peeked,
            incomplete_bytes,
        })
    }

    /// Events written to the current sub-buffer since the last peek (or
    /// take) that returned them; safe while writers run.
    pub fn peek(&mut self, mem: &impl TraceMem) -> Result<Chunk, ReadError> {
        let (seq, _, base) = self.current();
        let s = self.g.subbuf_size();
        let mut chunk = Chunk::default();
        if self.peek_at == 0 {
            let tsc_begin = mem.load(base + SUBBUF_TSC_BEGIN);
            if tsc_begin == 0 {
                return Ok(chunk);
            }
            let found = mem.load(base);
            if found != seq {
                return Err(ReadError::BadSubbufHeader {
                    expected_seq: seq,
                    found_seq: found,
                });
            }
            self.peek_at = SUBBUF_HEADER_SIZE;
            self.peek_tsc = tsc_begin;
        }
        chunk.tsc_prev = self.peek_tsc;
        while self.peek_at < s {
            let h = mem.load(base + self.peek_at);
            let hdr = EventHeader(h);
            if h == 0 || hdr.id() == FILLER_ID {
                break;
            }
            let len = hdr.len_words() as u64;
            if !length_ok(hdr, (s - self.peek_at) / 8) {
                return Err(ReadError::BadEvent {
                    seq,
                    at: self.peek_at,
                });
            }
            let first = chunk.words.len();
            chunk.words.resize(first + len as usize, 0);
            let mut raw = vec![0u8; (len * 8) as usize];
            mem.read(base + self.peek_at, &mut raw);
            for (w, c) in chunk.words[first..].iter_mut().zip(raw.chunks_exact(8)) {
                *w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            }
            // The header was loaded atomically; keep that value.
            chunk.words[first] = h;
            self.peek_tsc = if hdr.extended() {
                chunk.words[first + 2]
            } else {
                extend_tsc(self.peek_tsc, hdr.tsc_low())
            };
            self.peek_at += len * 8;
            self.peeked += 1;
        }
        Ok(chunk)
    }

    /// Once every writer has stopped: every complete sub-buffer, then the
    /// partly written ones up to the writers' offset. A write that a
    /// stopped writer left unfinished ends its packet; the bytes from
    /// there on are counted in `incomplete_bytes`.
    pub fn drain(&mut self, mem: &impl TraceMem) -> Result<Vec<Packet>, ReadError> {
        let mut out = Vec::new();
        while let Some(p) = self.take(mem)? {
            out.push(p);
        }
        let offset = mem.load(control::OFFSET);
        let s = self.g.subbuf_size();
        // At most one lap of reserved but untaken data exists.
        while offset > self.consumed && offset - self.consumed <= self.g.data_size() {
            let reserved = (offset - self.consumed).min(s);
            let committed = self.committed(mem);
            if committed > reserved {
                let (seq, _, _) = self.current();
                return Err(ReadError::CommitOverflow { seq, committed });
            }
            let p = self.read_subbuf(mem, reserved, committed == reserved)?;
            out.push(p);
            self.release(mem);
            if reserved < s {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
