//! Host tests of the buffer protocol: one writer, many writer threads with
//! one reader thread, losses, full timestamps, peeking, and a drain after
//! a writer stopped in mid-event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::vec::Vec;

use k42_abi::trace::{EventHeader, FILLER_ID, SUBBUF_HEADER_SIZE, control, event_id};

use k42_trace::{BufferSet, Geometry};

use crate::{LocalMem, Packet, Reader, TraceMem};

/// A zeroed, page-aligned area for `g`.
struct Area {
    mem: Vec<AtomicU64>,
    buffers: BufferSet,
}

impl Area {
    fn new(g: Geometry) -> Arc<Self> {
        // 4096-byte alignment is not needed by the protocol; 8 is.
        let mem: Vec<AtomicU64> = (0..g.area_size() / 8).map(|_| AtomicU64::new(0)).collect();
        let base = mem.as_ptr() as *mut u8;
        // SAFETY: `mem` is zeroed, 8-aligned, area_size bytes, and lives
        // as long as the Area that holds the view.
        let buffers = unsafe { BufferSet::new(base, g) };
        Arc::new(Self { mem, buffers })
    }

    fn reader_mem(&self) -> LocalMem {
        let _ = &self.mem;
        LocalMem::new(&self.buffers)
    }
}

const ID: u16 = event_id(10, 3);

fn counter_clock(c: &AtomicU64) -> impl Fn() -> u64 + '_ {
    move || c.fetch_add(1, Ordering::SeqCst) + 1
}

fn all_events(packets: &[Packet]) -> Vec<(u64, u16, Vec<u64>)> {
    packets
        .iter()
        .flat_map(|p| {
            p.events()
                .map(|e| {
                    let e = e.expect("well-framed");
                    (e.tsc, e.id, e.payload.to_vec())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn one_writer_round_trip() {
    let g = Geometry::new(12, 4).unwrap();
    let area = Area::new(g);
    let clock = AtomicU64::new(100);
    let mem = area.reader_mem();
    let mut r = Reader::new(g);
    let mut packets = Vec::new();
    for i in 0..1000u64 {
        assert!(area.buffers.log(counter_clock(&clock), ID, &[i, i * 2, !i]));
        // The reader keeps up with the writer here: take as we go.
        while let Some(p) = r.take(&mem).unwrap() {
            packets.push(p);
        }
    }
    packets.extend(r.drain(&mem).unwrap());
    let events = all_events(&packets);
    assert_eq!(events.len(), 1000);
    let mut last = 0;
    for (i, (tsc, id, payload)) in events.iter().enumerate() {
        let i = i as u64;
        assert_eq!(*id, ID);
        assert_eq!(payload, &vec![i, i * 2, !i]);
        assert!(*tsc > last);
        last = *tsc;
    }
    assert_eq!(r.lost(&mem), 0);
}

/// The per-CPU variant, with an "interrupt" (a nested writer) logging in
/// the middle of an event: every event whole and in reservation order.
#[test]
fn local_writers_nest() {
    let g = Geometry::new(12, 2).unwrap();
    let area = Area::new(g);
    // SAFETY: the same area, written by this thread only.
    let local = unsafe { BufferSet::<k42_trace::Local>::new(area.buffers.base(), g) };
    let clock = AtomicU64::new(1);
    let nested = std::cell::Cell::new(false);
    for i in 0..100u64 {
        // The clock "interrupts" the first attempt of every 10th event
        // with an event of its own, so the outer CAS fails and retries.
        let now = || {
            if i % 10 == 0 && !nested.replace(true) {
                assert!(local.log(counter_clock(&clock), ID, &[1000 + i]));
            }
            clock.fetch_add(1, Ordering::SeqCst) + 1
        };
        assert!(local.log(now, ID, &[i]));
        nested.set(false);
    }
    let mem = area.reader_mem();
    let packets = Reader::new(g).drain(&mem).unwrap();
    let seen: Vec<u64> = packets
        .iter()
        .flat_map(|p| {
            p.events()
                .map(|e| e.unwrap().payload[0])
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(seen.len(), 110);
    let expected: Vec<u64> = (0..100u64)
        .flat_map(|i| {
            if i % 10 == 0 {
                vec![1000 + i, i]
            } else {
                vec![i]
            }
        })
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn full_buffers_count_every_loss() {
    let g = Geometry::new(12, 2).unwrap();
    let area = Area::new(g);
    let clock = AtomicU64::new(1);
    let mut logged = 0u64;
    let mut dropped = 0u64;
    for i in 0..5000u64 {
        if area.buffers.log(counter_clock(&clock), ID, &[i, 0, 0]) {
            logged += 1;
        } else {
            dropped += 1;
        }
    }
    // Two 4 KiB sub-buffers of 32-byte events (one header each).
    let per_subbuf = (4096 - SUBBUF_HEADER_SIZE) / 32;
    assert_eq!(logged, 2 * per_subbuf);
    assert_eq!(dropped, 5000 - logged);
    let mem = area.reader_mem();
    let mut r = Reader::new(g);
    assert_eq!(r.lost(&mem), dropped);
    let packets = r.drain(&mem).unwrap();
    assert_eq!(all_events(&packets).len() as u64, logged);
    assert_eq!(packets[0].lost_begin, 0);
    assert_eq!(packets[1].lost_begin, 0);
    // Once the reader released them, writers get room again and the next
    // sub-buffer records how many were lost before it.
    assert!(area.buffers.log(counter_clock(&clock), ID, &[1, 2, 3]));
    let p = r.drain(&mem).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].lost_begin, dropped);
}

#[test]
fn fillers_end_sub_buffers() {
    let g = Geometry::new(12, 4).unwrap();
    let area = Area::new(g);
    let clock = AtomicU64::new(1);
    // 40-byte events do not divide the 4064 bytes after the header.
    for i in 0..300u64 {
        assert!(area.buffers.log(counter_clock(&clock), ID, &[i, 0, 0, 0]));
    }
    let mem = area.reader_mem();
    let filler_at = g.area_offset(0) + SUBBUF_HEADER_SIZE + 101 * 40;
    let filler = EventHeader(mem.load(filler_at));
    assert_eq!(filler.id(), FILLER_ID, "a filler follows the last event");
    let mut r = Reader::new(g);
    let first = r.take(&mem).unwrap().expect("a full sub-buffer");
    assert_eq!(first.words.len(), 101 * 5, "the packet ends at the filler");
    assert_eq!(first.events().count(), 101);
    assert_eq!(mem.load(filler_at), 0, "taken sub-buffers are zeroed");
    let rest = r.drain(&mem).unwrap();
    let n: usize = rest.iter().map(|p| p.events().count()).sum();
    assert_eq!(n + 101, 300);
}

#[test]
fn far_apart_events_carry_full_timestamps() {
    let g = Geometry::new(12, 2).unwrap();
    let area = Area::new(g);
    let times = [5u64, 10, 10 + (1 << 32), 20 + (7 << 33), 21 + (7 << 33)];
    for (i, t) in times.iter().enumerate() {
        assert!(area.buffers.log(|| *t, ID, &[i as u64]));
    }
    let mem = area.reader_mem();
    let mut r = Reader::new(g);
    let packets = r.drain(&mem).unwrap();
    let got: Vec<(u64, bool)> = packets[0]
        .events()
        .map(|e| {
            let e = e.unwrap();
            (e.tsc, e.extended)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (5, false),
            (10, false),
            (10 + (1 << 32), true),
            (20 + (7 << 33), true),
            (21 + (7 << 33), false)
        ]
    );
}

#[test]
fn peek_sees_events_before_the_sub_buffer_completes() {
    let g = Geometry::new(12, 4).unwrap();
    let area = Area::new(g);
    let clock = AtomicU64::new(1);
    let mem = area.reader_mem();
    let mut r = Reader::new(g);
    assert!(r.peek(&mem).unwrap().words.is_empty());
    for i in 0..10u64 {
        area.buffers.log(counter_clock(&clock), ID, &[i]);
    }
    let c = r.peek(&mem).unwrap();
    let seen: Vec<u64> = c.events().map(|e| e.unwrap().payload[0]).collect();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    assert!(r.peek(&mem).unwrap().words.is_empty());
    // Fill the sub-buffer: take() reports how many were already peeked.
    for i in 10..300u64 {
        area.buffers.log(counter_clock(&clock), ID, &[i]);
    }
    let more = r.peek(&mem).unwrap();
    let per_subbuf = ((4096 - SUBBUF_HEADER_SIZE) / 16) as usize;
    assert_eq!(more.events().count(), per_subbuf - 10);
    let p = r.take(&mem).unwrap().unwrap();
    assert_eq!(p.peeked, per_subbuf);
    let p2 = r.peek(&mem).unwrap();
    assert_eq!(
        p2.events().next().unwrap().unwrap().payload[0],
        per_subbuf as u64
    );
}

#[test]
fn drain_stops_at_a_write_that_never_finished() {
    let g = Geometry::new(12, 2).unwrap();
    let area = Area::new(g);
    let clock = AtomicU64::new(1);
    for i in 0..5u64 {
        area.buffers.log(counter_clock(&clock), ID, &[i]);
    }
    // A writer reserves 16 bytes and stops before writing them.
    let mem = area.reader_mem();
    let off = mem.load(control::OFFSET);
    mem.store(control::OFFSET, off + 16);
    // An interrupt on the same CPU logs two events after it.
    for i in 5..7u64 {
        area.buffers.log(counter_clock(&clock), ID, &[i]);
    }
    let mut r = Reader::new(g);
    let packets = r.drain(&mem).unwrap();
    assert_eq!(packets.len(), 1);
    let seen: Vec<u64> = packets[0].events().map(|e| e.unwrap().payload[0]).collect();
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    assert_eq!(packets[0].incomplete_bytes, 16 + 2 * 16);
}

#[test]
fn corrupt_commit_counts_are_errors_not_panics() {
    let g = Geometry::new(12, 2).unwrap();
    let area = Area::new(g);
    let mem = area.reader_mem();
    mem.store(g.commit_offset(0), 1 << 20);
    let mut r = Reader::new(g);
    assert!(r.take(&mem).is_err());
}

/// Many writer threads, one reader thread, small buffers so that the
/// writers overrun the reader: every event read is whole, each writer's
/// events arrive in order, and read + lost == written exactly.
#[test]
fn many_writers_one_reader() {
    const WRITERS: u64 = 8;
    const PER_WRITER: u64 = 100_000;
    let g = Geometry::new(12, 4).unwrap();
    let area = Area::new(g);
    let clock = Arc::new(AtomicU64::new(1));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let area = area.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mem = area.reader_mem();
            let mut r = Reader::new(g);
            let mut packets = Vec::new();
            let mut peeked_events = 0usize;
            loop {
                let finished = done.load(Ordering::SeqCst);
                while let Some(p) = r.take(&mem).unwrap() {
                    packets.push(p);
                }
                // Peeking must never return a torn event either.
                let c = r.peek(&mem).unwrap();
                for e in c.events() {
                    let e = e.unwrap();
                    assert_eq!(e.payload[2], check_word(e.payload[0], e.payload[1]));
                    peeked_events += 1;
                }
                if finished {
                    break;
                }
                std::thread::yield_now();
            }
            packets.extend(r.drain(&mem).unwrap());
            (packets, r.lost(&mem), peeked_events)
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let area = area.clone();
            let clock = clock.clone();
            std::thread::spawn(move || {
                let mut logged = 0u64;
                let mut seqs = Vec::new();
                for seq in 0..PER_WRITER {
                    let ok = area.buffers.log(
                        || clock.fetch_add(1, Ordering::SeqCst),
                        ID,
                        &[w, seq, check_word(w, seq)],
                    );
                    if ok {
                        logged += 1;
                        seqs.push(seq);
                    }
                    if seq % 1024 == 0 {
                        // Let the reader in now and then on small hosts.
                        std::thread::yield_now();
                    }
                }
                (logged, seqs)
            })
        })
        .collect();
    let results: Vec<(u64, Vec<u64>)> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    let (packets, lost, _) = reader.join().unwrap();
    assert!(
        packets.len() > 2 * 4,
        "the reader took only {} sub-buffers: the buffers never wrapped",
        packets.len()
    );

    let logged: u64 = results.iter().map(|r| r.0).sum();
    assert_eq!(
        logged + lost,
        WRITERS * PER_WRITER,
        "written + lost != attempted"
    );
    assert!(lost > 0, "the writers were meant to overrun the reader");
    let mut per_writer: Vec<Vec<u64>> = vec![Vec::new(); WRITERS as usize];
    let mut last_tsc = 0;
    let mut last_lost = 0;
    for p in &packets {
        assert_eq!(p.incomplete_bytes, 0);
        assert!(p.lost_begin >= last_lost, "lost snapshots never go back");
        last_lost = p.lost_begin;
        for e in p.events() {
            let e = e.expect("no torn event");
            assert_eq!(e.id, ID);
            let (w, seq) = (e.payload[0], e.payload[1]);
            assert_eq!(e.payload[2], check_word(w, seq), "torn event");
            assert!(e.tsc >= last_tsc, "timestamps go back in one buffer");
            last_tsc = e.tsc;
            per_writer[w as usize].push(seq);
        }
    }
    for (w, seen) in per_writer.iter().enumerate() {
        assert_eq!(
            seen, &results[w].1,
            "writer {w}: the reader saw other events, or in another order"
        );
    }
}

fn check_word(w: u64, seq: u64) -> u64 {
    (w << 48 ^ seq).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}
