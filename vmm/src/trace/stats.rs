//! `k42vmm trace stats DIR`: events per class per vCPU, lost events and
//! the time span of a trace, as a table or as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k42_abi::trace::{CLASSES, Class, class_name};
use serde::Serialize;

use super::ctf::TraceData;
use super::{TraceError, decode, ticks_to_ns};

/// One vCPU's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VcpuStats {
    pub vcpu: u32,
    pub events: u64,
    pub lost: u64,
    pub packets: u64,
    /// Guest time of the first and last event, in ns.
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    /// Events per class name.
    pub classes: BTreeMap<String, u64>,
}

/// A whole trace's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TraceStats {
    pub vcpus: u32,
    pub tsc_khz: u64,
    pub events: u64,
    pub lost: u64,
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    pub span_ns: u64,
    /// Events per class name, all vCPUs.
    pub classes: BTreeMap<String, u64>,
    pub per_vcpu: Vec<VcpuStats>,
}

/// Count everything in `t`.
pub fn compute(t: &TraceData, dir: &std::path::Path) -> Result<TraceStats, TraceError> {
    let khz = t.meta.tsc_khz;
    let mut s = TraceStats {
        vcpus: t.meta.vcpus,
        tsc_khz: khz,
        ..Default::default()
    };
    for stream in &t.streams {
        let mut v = VcpuStats {
            vcpu: stream.vcpu,
            lost: stream.discarded(),
            packets: stream.packets.len() as u64,
            ..Default::default()
        };
        for p in &stream.packets {
            for e in p.events() {
                let e = e.map_err(|at| {
                    TraceError::Read(
                        dir.to_path_buf(),
                        format!(
                            "vCPU {} packet {}: malformed event at word {at}",
                            stream.vcpu, p.seq
                        ),
                    )
                })?;
                let d = decode::describe(&e).map_err(|err| {
                    TraceError::Read(
                        dir.to_path_buf(),
                        format!("vCPU {} packet {}: {err}", stream.vcpu, p.seq),
                    )
                })?;
                let ns = ticks_to_ns(e.tsc, khz);
                v.first_ns.get_or_insert(ns);
                v.last_ns = Some(ns);
                v.events += 1;
                let name = class_name(d.class).unwrap_or("?").to_string();
                *v.classes.entry(name).or_default() += 1;
            }
        }
        s.events += v.events;
        s.lost += v.lost;
        for (k, n) in &v.classes {
            *s.classes.entry(k.clone()).or_default() += n;
        }
        s.first_ns = match (s.first_ns, v.first_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        s.last_ns = s.last_ns.max(v.last_ns);
        s.per_vcpu.push(v);
    }
    s.span_ns = match (s.first_ns, s.last_ns) {
        (Some(a), Some(b)) => b - a,
        _ => 0,
    };
    Ok(s)
}

fn secs(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// The figures as a table.
pub fn render(s: &TraceStats, dir: &std::path::Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace {}: {} vCPUs, TSC {:.3} GHz, {} events, {} lost",
        dir.display(),
        s.vcpus,
        s.tsc_khz as f64 / 1e6,
        s.events,
        s.lost
    );
    match (s.first_ns, s.last_ns) {
        (Some(a), Some(b)) => {
            let _ = writeln!(
                out,
                "time span {} s (guest time {} s to {} s)",
                secs(s.span_ns),
                secs(a),
                secs(b)
            );
        }
        _ => {
            let _ = writeln!(out, "no events");
        }
    }
    let classes: Vec<(Class, &str)> = CLASSES
        .iter()
        .filter(|(_, n)| s.classes.contains_key(*n))
        .copied()
        .collect();
    let mut header = format!(
        "\n{:>5} {:>9} {:>8} {:>13}",
        "vCPU", "events", "lost", "span (s)"
    );
    for (_, n) in &classes {
        let _ = write!(header, " {:>9}", n);
    }
    let _ = writeln!(out, "{header}");
    let row =
        |label: String, events: u64, lost: u64, span: Option<u64>, cls: &BTreeMap<String, u64>| {
            let mut r = format!(
                "{:>5} {:>9} {:>8} {:>13}",
                label,
                events,
                lost,
                span.map_or("-".into(), secs)
            );
            for (_, n) in &classes {
                let _ = write!(r, " {:>9}", cls.get(*n).copied().unwrap_or(0));
            }
            r
        };
    for v in &s.per_vcpu {
        let span = v.first_ns.zip(v.last_ns).map(|(a, b)| b - a);
        let _ = writeln!(
            out,
            "{}",
            row(v.vcpu.to_string(), v.events, v.lost, span, &v.classes)
        );
    }
    let _ = writeln!(
        out,
        "{}",
        row("all".into(), s.events, s.lost, Some(s.span_ns), &s.classes)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::ctf::{PacketData, StreamData, TraceMeta};
    use k42_abi::trace::{EventHeader, ev};

    fn word_events(list: &[(u64, k42_abi::trace::Event<1>)]) -> Vec<u64> {
        list.iter()
            .flat_map(|(t, e)| [EventHeader::new(*t, e.id, 2).0, e.words[0]])
            .collect()
    }

    #[test]
    fn counts_per_class_and_vcpu() {
        let words = word_events(&[
            (1_000, ev::timer::fire(1)),
            (2_000, ev::timer::fire(2)),
            (3_000, ev::boot::cpu_online(1)),
        ]);
        let t = TraceData {
            meta: TraceMeta::new(2, 1_000_000),
            streams: vec![
                StreamData {
                    vcpu: 0,
                    packets: vec![],
                },
                StreamData {
                    vcpu: 1,
                    packets: vec![
                        PacketData {
                            tsc_begin: 1_000,
                            tsc_end: 3_000,
                            seq: 0,
                            discarded: 0,
                            words,
                        },
                        PacketData {
                            tsc_begin: 3_000,
                            tsc_end: 3_000,
                            seq: 1,
                            discarded: 4,
                            words: vec![],
                        },
                    ],
                },
            ],
        };
        let s = compute(&t, std::path::Path::new("t")).unwrap();
        assert_eq!(s.events, 3);
        assert_eq!(s.lost, 4);
        assert_eq!(s.classes["timer"], 2);
        assert_eq!(s.per_vcpu[1].classes["boot"], 1);
        assert_eq!(s.span_ns, 2_000);
        let text = render(&s, std::path::Path::new("t"));
        assert!(text.contains("2 vCPUs"), "{text}");
        assert!(
            text.lines().any(|l| l.trim_start().starts_with("all")),
            "{text}"
        );
    }
}
