//! The collector thread: waits for the guest to register its trace
//! region, then every read interval takes each vCPU's complete
//! sub-buffers straight from guest RAM (no VM exit), writes them as CTF
//! packets, and feeds live clients; when every vCPU has stopped it drains
//! what is left, so nothing logged before the stop is lost.
//!
//! ```text
//! every interval, per vCPU:  take() complete sub-buffers ─► check events
//!                              ─► CTF packet ─► live events not yet peeked
//!                            peek() current sub-buffer (only while live
//!                              clients listen) ─► live events; when the
//!                              first client arrives, what is already
//!                              there is counted but not sent (a client
//!                              sees events from when it attached)
//! once a second:             top summary (while top clients listen)
//! at the end:                drain() ─► last packets, final lost counts
//! ```
//!
//! A vCPU whose buffers break the protocol (a guest bug or a hostile
//! guest) is no longer read; its error is reported, the others go on.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k42_abi::trace::{Kind, MASK_OFFSET, class};
use k42_trace_reader::{Events, Reader};
use serde::{Deserialize, Serialize};

use super::ctf::{self, StreamWriter, TraceMeta};
use super::live::{Server, TopRow, VmView};
use super::{GuestArea, Registration, TraceError, TraceHub, decode, ticks_to_ns};
use crate::memory::GuestRam;

/// What the collector saw, for the run report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TraceReport {
    /// The CTF trace directory, if one was written.
    pub dir: Option<String>,
    /// Whether the guest registered its trace buffers.
    pub registered: bool,
    /// The class mask the guest got at registration.
    pub initial_mask: u64,
    /// Events collected, all vCPUs.
    pub events: u64,
    /// Events the guest dropped because its buffers were full.
    pub lost: u64,
    pub vcpus: Vec<VcpuTrace>,
}

/// One vCPU's part of the trace.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VcpuTrace {
    pub vcpu: u32,
    pub events: u64,
    pub lost: u64,
    pub packets: u64,
    /// Bytes reserved by writes a stopped vCPU never finished.
    pub incomplete_bytes: u64,
    /// Why reading this vCPU's buffers stopped early, if it did.
    pub error: Option<String>,
}

/// Whether a poll looks at the sub-buffers being written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peek {
    /// No live client: only complete sub-buffers.
    No,
    /// Clients just arrived: account for what is there, send nothing.
    CatchUp,
    /// Send new events to the clients.
    Deliver,
}

/// One vCPU's reader and its outputs.
struct CpuStream {
    vcpu: u32,
    area: u64,
    reader: Reader,
    ctf: Option<StreamWriter>,
    stats: VcpuTrace,
    broken: bool,
    /// Live accounting for `top`.
    idle_since_ns: Option<u64>,
    idle_ns: u64,
    top_events: u64,
    top_idle_ns: u64,
}

struct Collection {
    reg: Registration,
    tsc_khz: u64,
    cpus: Vec<CpuStream>,
    /// Guest time (ns) of the last `top` summary.
    top_at_ns: u64,
    top_at: Instant,
}

/// Run the collector until `hub.finish()`; `server` is the bound
/// `--trace-socket` server, if any.
pub fn run(
    hub: &TraceHub,
    ram: &GuestRam,
    tsc_khz: &OnceLock<u32>,
    server: Option<Server>,
) -> Result<TraceReport, TraceError> {
    let mut server = server;
    let dir = hub.options.dir.clone();
    let interval = hub.options.interval();
    let mut coll: Option<Collection> = None;
    let mut was_live = false;
    let end_reason = loop {
        let (reg, finishing) = hub.wait(interval);
        if coll.is_none()
            && let Some(reg) = reg
        {
            let khz = tsc_khz.get().copied().unwrap_or(0) as u64;
            coll = Some(Collection::start(reg, khz, dir.as_deref())?);
        }
        let live = server
            .as_ref()
            .is_some_and(|s| s.wants_events() || s.wants_top());
        let peek = if !live {
            Peek::No
        } else if was_live {
            Peek::Deliver
        } else {
            Peek::CatchUp
        };
        if let Some(c) = &mut coll {
            c.poll(ram, server.as_mut(), peek)?;
            if peek == Peek::CatchUp {
                // Summaries start now, not with the backlog.
                c.top(ram);
            }
        }
        was_live = live;
        if let Some(s) = &mut server {
            let view = VmView {
                vcpus: coll.as_ref().map_or(0, |c| c.reg.header.ncpus),
                tsc_khz: coll.as_ref().map_or(0, |c| c.tsc_khz),
                mask: coll
                    .as_ref()
                    .and_then(|c| ram.load_u64(c.reg.gpa + MASK_OFFSET).ok()),
            };
            let mut set_mask = |m: u64| -> Result<u64, String> {
                let c = coll
                    .as_ref()
                    .ok_or("the guest has not registered its trace buffers yet")?;
                ram.store_u64(c.reg.gpa + MASK_OFFSET, m)
                    .map_err(|_| "the mask word is not in RAM".to_string())?;
                Ok(m)
            };
            s.poll(&view, &mut set_mask);
            if s.wants_top()
                && peek == Peek::Deliver
                && let Some(c) = &mut coll
                && c.top_at.elapsed() >= Duration::from_secs(1)
            {
                let (secs, rows) = c.top(ram);
                s.top(secs, rows);
            }
        }
        if finishing {
            break hub.end_reason();
        }
    };
    let mut report = TraceReport {
        dir: dir.as_ref().map(|d| d.display().to_string()),
        initial_mask: hub.options.initial_mask(),
        ..Default::default()
    };
    if let Some(c) = &mut coll {
        c.drain(ram, server.as_mut())?;
        report.registered = true;
        report.vcpus = c.cpus.iter().map(|s| s.stats.clone()).collect();
        report.events = report.vcpus.iter().map(|v| v.events).sum();
        report.lost = report.vcpus.iter().map(|v| v.lost).sum();
    } else if let Some(d) = &dir
        && let Some(&khz) = tsc_khz.get()
    {
        // An empty but valid trace: metadata and no streams.
        ctf::write_metadata(d, &TraceMeta::new(0, khz as u64))?;
    }
    if let Some(s) = server {
        s.end(&end_reason, Duration::from_secs(2));
    }
    Ok(report)
}

impl Collection {
    fn start(
        reg: Registration,
        tsc_khz: u64,
        dir: Option<&std::path::Path>,
    ) -> Result<Self, TraceError> {
        let ncpus = reg.header.ncpus;
        let g = reg.geometry();
        let meta = TraceMeta::new(ncpus, tsc_khz);
        if let Some(d) = dir {
            ctf::write_metadata(d, &meta)?;
        }
        let cpus = (0..ncpus)
            .map(|vcpu| {
                Ok(CpuStream {
                    vcpu,
                    area: reg.area(vcpu),
                    reader: Reader::new(g),
                    ctf: match dir {
                        Some(d) => Some(StreamWriter::create(d, vcpu, &meta)?),
                        None => None,
                    },
                    stats: VcpuTrace {
                        vcpu,
                        ..Default::default()
                    },
                    broken: false,
                    idle_since_ns: None,
                    idle_ns: 0,
                    top_events: 0,
                    top_idle_ns: 0,
                })
            })
            .collect::<Result<Vec<_>, TraceError>>()?;
        let top_at_ns = ticks_to_ns(reg.header.register_tsc, tsc_khz);
        Ok(Self {
            top_at: reg.at,
            reg,
            tsc_khz,
            cpus,
            top_at_ns,
        })
    }

    fn poll(
        &mut self,
        ram: &GuestRam,
        mut server: Option<&mut Server>,
        peek: Peek,
    ) -> Result<(), TraceError> {
        let khz = self.tsc_khz;
        for cpu in self.cpus.iter_mut().filter(|c| !c.broken) {
            let mem = GuestArea {
                ram,
                base: cpu.area,
            };
            // At most one lap per look: a guest that fakes complete
            // sub-buffers cannot keep the collector from the others.
            for _ in 0..self.reg.header.nsubbufs {
                match cpu.reader.take(&mem) {
                    Ok(Some(p)) => {
                        let to = if peek == Peek::CatchUp {
                            None
                        } else {
                            server.as_deref_mut()
                        };
                        cpu.packet(&p, khz, to)?
                    }
                    Ok(None) => break,
                    Err(e) => {
                        cpu.fail(e.to_string());
                        break;
                    }
                }
            }
            if peek != Peek::No && !cpu.broken {
                match cpu.reader.peek(&mem) {
                    Ok(chunk) => {
                        let to = if peek == Peek::Deliver {
                            server.as_deref_mut()
                        } else {
                            None
                        };
                        cpu.live_events(chunk.events(), 0, khz, to);
                    }
                    Err(e) => cpu.fail(e.to_string()),
                }
            }
        }
        Ok(())
    }

    fn drain(&mut self, ram: &GuestRam, mut server: Option<&mut Server>) -> Result<(), TraceError> {
        let khz = self.tsc_khz;
        for cpu in &mut self.cpus {
            let mem = GuestArea {
                ram,
                base: cpu.area,
            };
            if !cpu.broken {
                match cpu.reader.drain(&mem) {
                    Ok(packets) => {
                        for p in &packets {
                            cpu.stats.incomplete_bytes += p.incomplete_bytes;
                            if p.tsc_begin != 0 {
                                cpu.packet(p, khz, server.as_deref_mut())?;
                            }
                        }
                    }
                    Err(e) => cpu.fail(e.to_string()),
                }
            }
            cpu.stats.lost = cpu.reader.lost(&mem);
            if let Some(w) = &mut cpu.ctf {
                w.finish(cpu.stats.lost)?;
            }
        }
        Ok(())
    }

    /// Per-vCPU rates and idle shares since the last summary; starts the
    /// next interval.
    fn top(&mut self, ram: &GuestRam) -> (f64, Vec<TopRow>) {
        let elapsed = self.reg.at.elapsed();
        let now_ns =
            ticks_to_ns(self.reg.header.register_tsc, self.tsc_khz) + elapsed.as_nanos() as u64;
        let span_ns = now_ns.saturating_sub(self.top_at_ns).max(1);
        let idle_on = ram
            .load_u64(self.reg.gpa + MASK_OFFSET)
            .is_ok_and(|m| m & class::idle.bit() != 0);
        let rows = self
            .cpus
            .iter_mut()
            .map(|c| {
                let idle_total =
                    c.idle_ns + c.idle_since_ns.map_or(0, |s| now_ns.saturating_sub(s));
                let row = TopRow {
                    vcpu: c.vcpu,
                    events_per_s: (c.stats.events - c.top_events) as f64 * 1e9 / span_ns as f64,
                    idle: idle_on.then(|| {
                        (idle_total.saturating_sub(c.top_idle_ns) as f64 / span_ns as f64)
                            .clamp(0.0, 1.0)
                    }),
                    lost: ram
                        .load_u64(c.area + k42_abi::trace::control::LOST)
                        .unwrap_or(0),
                };
                c.top_events = c.stats.events;
                c.top_idle_ns = idle_total;
                row
            })
            .collect();
        self.top_at_ns = now_ns;
        self.top_at = Instant::now();
        (elapsed.as_secs_f64(), rows)
    }
}

impl CpuStream {
    fn fail(&mut self, why: String) {
        eprintln!(
            "k42vmm: warning: trace of vCPU {} is no longer read: {why}",
            self.vcpu
        );
        self.stats.error = Some(why);
        self.broken = true;
    }

    /// A taken sub-buffer: check its events, write the packet, pass on
    /// the events live clients have not seen.
    fn packet(
        &mut self,
        p: &k42_trace_reader::Packet,
        khz: u64,
        server: Option<&mut Server>,
    ) -> Result<(), TraceError> {
        // Only whole, known events reach the trace: a reader of the CTF
        // trace must never trip over one.
        let mut good_words = 0;
        let mut last_tsc = p.tsc_begin;
        let mut bad = None;
        for e in p.events() {
            match e {
                Ok(e) => match decode::describe(&e) {
                    Ok(_) => {
                        good_words += e.len_words();
                        last_tsc = e.tsc;
                    }
                    Err(d) => {
                        bad = Some(format!("sub-buffer {}: {d}", p.seq));
                        break;
                    }
                },
                Err(at) => {
                    bad = Some(format!(
                        "sub-buffer {}: malformed event at word {at}",
                        p.seq
                    ));
                    break;
                }
            }
        }
        let words = &p.words[..good_words];
        if let Some(w) = &mut self.ctf {
            w.packet(p.tsc_begin, last_tsc, p.lost_begin, words)?;
            self.stats.packets = w.packets();
        } else {
            self.stats.packets += 1;
        }
        self.live_events(Events::new(words, p.tsc_begin), p.peeked, khz, server);
        if let Some(why) = bad {
            self.fail(why);
        }
        Ok(())
    }

    /// Count events (skipping the first `skip`, already seen) and hand
    /// them to live clients.
    fn live_events(
        &mut self,
        events: Events,
        skip: usize,
        khz: u64,
        mut server: Option<&mut Server>,
    ) {
        for e in events.skip(skip) {
            let Ok(e) = e else { break };
            let Ok(d) = decode::describe(&e) else { break };
            self.stats.events += 1;
            let ns = ticks_to_ns(e.tsc, khz);
            if d.class == class::idle {
                match d.kind {
                    Kind::Begin => self.idle_since_ns = Some(ns),
                    Kind::End => {
                        if let Some(s) = self.idle_since_ns.take() {
                            self.idle_ns += ns.saturating_sub(s);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(s) = server.as_deref_mut() {
                s.event(self.vcpu, ns, e.id, e.payload);
            }
        }
    }
}
