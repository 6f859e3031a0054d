//! `k42vmm trace export --format perfetto`: the Chrome JSON trace format,
//! which ui.perfetto.dev (and chrome://tracing) open.
//!
//! One process ("k42 guest") with one thread track per vCPU. Events of a
//! begin/end pair (interrupt, hypercall, idle, …) become slices on their
//! vCPU's track, nested as they happened; an end whose begin was lost is
//! dropped and a begin never ended is closed at the track's last event.
//! Instant events become instants; counter events become counters, and so
//! does each vCPU's count of lost events. Timestamps are microseconds of
//! guest time (fractional, so nanoseconds survive).

use k42_abi::trace::{Class, EventDesc, Kind, class_name};
use serde_json::{Map, Value, json};

use super::ctf::TraceData;
use super::{TraceError, decode, ticks_to_ns};

const PID: u32 = 1;

fn args(d: &EventDesc, payload: &[u64]) -> Value {
    let mut m = Map::new();
    for (f, w) in d.fields.iter().zip(payload) {
        let v = match f.ty {
            k42_abi::trace::FieldType::Hex => Value::from(format!("{w:#x}")),
            ty => decode::value_json(ty, *w),
        };
        m.insert(f.name.to_string(), v);
    }
    Value::Object(m)
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// A slice's name: its class, and the begin event's first field (for a
/// hypercall, its name).
fn slice_name(d: &EventDesc, payload: &[u64]) -> String {
    let class = class_name(d.class).unwrap_or("?");
    if d.class == k42_abi::trace::class::hypercall
        && let Some(nr) = payload
            .first()
            .and_then(|&n| u32::try_from(n).ok())
            .and_then(k42_abi::HypercallNr::from_raw)
    {
        return format!("hypercall {nr:?}");
    }
    match (d.fields.first(), payload.first()) {
        (Some(f), Some(w)) => format!("{class} {}={}", f.name, decode::value_text(f.ty, *w)),
        _ => class.to_string(),
    }
}

/// The trace as a Chrome JSON object.
pub fn export(t: &TraceData, dir: &std::path::Path) -> Result<Value, TraceError> {
    let khz = t.meta.tsc_khz;
    let mut events: Vec<(u64, Value)> = Vec::new();
    let mut meta = vec![json!({
        "ph": "M", "name": "process_name", "pid": PID,
        "args": { "name": format!("k42 guest ({} vCPUs)", t.meta.vcpus) }
    })];
    for vcpu in 0..t.meta.vcpus {
        meta.push(json!({
            "ph": "M", "name": "thread_name", "pid": PID, "tid": vcpu,
            "args": { "name": format!("vCPU {vcpu}") }
        }));
        meta.push(json!({
            "ph": "M", "name": "thread_sort_index", "pid": PID, "tid": vcpu,
            "args": { "sort_index": vcpu }
        }));
    }
    for stream in &t.streams {
        let tid = stream.vcpu;
        let mut open: Vec<Class> = Vec::new();
        let mut last_ns = 0;
        let mut lost = 0;
        let end = |ns: u64| json!({ "ph": "E", "pid": PID, "tid": tid, "ts": us(ns) });
        for p in &stream.packets {
            if p.discarded > lost {
                lost = p.discarded;
                let ns = ticks_to_ns(p.tsc_begin, khz);
                events.push((
                    ns,
                    json!({
                        "ph": "C", "name": format!("vCPU {tid} lost events"), "pid": PID,
                        "ts": us(ns), "args": { "lost": lost }
                    }),
                ));
            }
            for e in p.events() {
                let bad = |m: String| TraceError::Read(dir.to_path_buf(), m);
                let e = e.map_err(|at| bad(format!("vCPU {tid}: malformed event at word {at}")))?;
                let d = decode::describe(&e).map_err(|err| bad(format!("vCPU {tid}: {err}")))?;
                let ns = ticks_to_ns(e.tsc, khz);
                last_ns = ns;
                let cat = class_name(d.class).unwrap_or("?");
                match d.kind {
                    Kind::Begin => {
                        open.push(d.class);
                        events.push((
                            ns,
                            json!({
                                "ph": "B", "name": slice_name(d, e.payload), "cat": cat,
                                "pid": PID, "tid": tid, "ts": us(ns),
                                "args": args(d, e.payload)
                            }),
                        ));
                    }
                    Kind::End => {
                        if let Some(depth) = open.iter().rposition(|c| *c == d.class) {
                            // Close what was opened inside it and never
                            // ended (its end was lost), then it.
                            while open.len() > depth + 1 {
                                open.pop();
                                events.push((ns, end(ns)));
                            }
                            open.pop();
                            let mut e_ev = end(ns);
                            e_ev["args"] = args(d, e.payload);
                            events.push((ns, e_ev));
                        }
                    }
                    Kind::Instant => events.push((
                        ns,
                        json!({
                            "ph": "i", "s": "t", "name": d.name, "cat": cat,
                            "pid": PID, "tid": tid, "ts": us(ns),
                            "args": args(d, e.payload)
                        }),
                    )),
                    Kind::Counter => events.push((
                        ns,
                        json!({
                            "ph": "C", "name": d.name, "pid": PID, "ts": us(ns),
                            "args": args(d, e.payload)
                        }),
                    )),
                }
            }
        }
        for _ in open.drain(..) {
            events.push((last_ns, end(last_ns)));
        }
    }
    // Stable: each track keeps its order where timestamps tie.
    events.sort_by_key(|(ns, _)| *ns);
    meta.extend(events.into_iter().map(|(_, v)| v));
    Ok(json!({
        "traceEvents": meta,
        "displayTimeUnit": "ns",
        "otherData": {
            "generator": format!("k42vmm {}", env!("CARGO_PKG_VERSION")),
            "vcpus": t.meta.vcpus,
            "tsc_khz": khz,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::ctf::{PacketData, StreamData, TraceMeta};
    use k42_abi::trace::{EventHeader, ev};

    fn push<const N: usize>(w: &mut Vec<u64>, tsc: u64, e: k42_abi::trace::Event<N>) {
        w.push(EventHeader::new(tsc, e.id, (1 + N) as u8).0);
        w.extend_from_slice(&e.words);
    }

    #[test]
    fn slices_nest_per_vcpu() {
        let mut w = Vec::new();
        push(&mut w, 1000, ev::idle::enter());
        push(&mut w, 2000, ev::interrupt::entry(0x30));
        push(&mut w, 3000, ev::timer::fire(5));
        push(&mut w, 4000, ev::interrupt::exit(0x30));
        push(&mut w, 5000, ev::hypercall::exit(1, 0)); // begin lost: dropped
        push(&mut w, 6000, ev::idle::exit());
        push(&mut w, 7000, ev::hypercall::enter(2)); // Shutdown: never ends
        push(&mut w, 8000, ev::mem::free_frames(99));
        let t = TraceData {
            meta: TraceMeta::new(2, 1_000_000),
            streams: vec![
                StreamData {
                    vcpu: 0,
                    packets: vec![],
                },
                StreamData {
                    vcpu: 1,
                    packets: vec![PacketData {
                        tsc_begin: 1000,
                        tsc_end: 8000,
                        seq: 0,
                        discarded: 3,
                        words: w,
                    }],
                },
            ],
        };
        let v = export(&t, std::path::Path::new("t")).unwrap();
        let evs = v["traceEvents"].as_array().unwrap();
        let threads: Vec<&Value> = evs.iter().filter(|e| e["name"] == "thread_name").collect();
        assert_eq!(threads.len(), 2, "one track per vCPU");
        let phases: String = evs
            .iter()
            .filter(|e| e["tid"] == 1 && e["ph"] != "M")
            .map(|e| e["ph"].as_str().unwrap())
            .collect();
        assert_eq!(phases, "BBiEEBE");
        let b = evs.iter().find(|e| e["ph"] == "B").unwrap();
        assert_eq!(b["name"], "idle");
        assert_eq!(b["ts"], 1.0);
        let irq = evs.iter().filter(|e| e["ph"] == "B").nth(1).unwrap();
        assert_eq!(irq["name"], "interrupt vector=0x30");
        let hc = evs.iter().filter(|e| e["ph"] == "B").nth(2).unwrap();
        assert_eq!(hc["name"], "hypercall Shutdown");
        let counters: Vec<&Value> = evs.iter().filter(|e| e["ph"] == "C").collect();
        assert_eq!(counters.len(), 2);
        assert_eq!(counters[0]["args"]["lost"], 3);
        assert_eq!(counters[1]["args"]["frames"], 99);
    }
}
