//! `k42vmm bench export`: a sweep's results in the formats of the
//! continuous-benchmarking services, for whoever sends them there.
//!
//! - `bmf`: Bencher Metric Format JSON (<https://bencher.dev/bmf.json>):
//!   `{ "benchmark/series/Nvcpu": { "throughput": { "value": median,
//!   "lower_value": min, "upper_value": max } } }`, in ops/s (Bencher's
//!   built-in `throughput` measure).
//! - `github-action-benchmark`: that action's `customBiggerIsBetter`
//!   input, an array of `{ "name", "unit", "value", "range", "extra" }`
//!   with the median as value, the min..max spread as range and the
//!   samples and revision as extra.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::BenchError;
use super::history::Metric;
use super::results::Results;

/// The formats `export` writes.
pub const FORMATS: [&str; 2] = ["bmf", "github-action-benchmark"];

/// Bencher Metric Format JSON of `r`.
pub fn bmf(r: &Results) -> Value {
    let mut out = Map::new();
    for (b, s, p) in r.points() {
        let name = Metric {
            benchmark: b.name.clone(),
            series: s.label.clone(),
            vcpus: p.vcpus,
        }
        .column();
        out.insert(
            name,
            json!({ "throughput": { "value": p.median, "lower_value": p.min, "upper_value": p.max } }),
        );
    }
    Value::Object(out)
}

/// github-action-benchmark's `customBiggerIsBetter` JSON of `r`.
pub fn github_action_benchmark(r: &Results) -> Value {
    let rev = &r.provenance.git.revision;
    Value::Array(
        r.points()
            .map(|(b, s, p)| {
                json!({
                    "name": Metric {
                        benchmark: b.name.clone(),
                        series: s.label.clone(),
                        vcpus: p.vcpus,
                    }
                    .column(),
                    "unit": b.unit,
                    "value": p.median,
                    "range": format!("{}..{}", p.min, p.max),
                    "extra": format!(
                        "{} samples{}; revision {rev}; host class {}",
                        p.samples.len(),
                        if p.overcommitted { ", overcommitted" } else { "" },
                        r.provenance.host.class
                    ),
                })
            })
            .collect(),
    )
}

/// `k42vmm bench export --format F RESULTS [--out FILE]`: write the JSON
/// to FILE, or to stdout.
pub fn export(format: &str, results: &Path, out: Option<&Path>) -> Result<u8, BenchError> {
    let convert: fn(&Results) -> Value = match format {
        "bmf" => bmf,
        "github-action-benchmark" => github_action_benchmark,
        _ => {
            return Err(BenchError::BadOption {
                option: "--format",
                value: format.into(),
                why: format!("unknown format (known: {})", FORMATS.join(", ")),
            });
        }
    };
    let json = convert(&Results::load(results)?);
    let text = serde_json::to_string_pretty(&json).expect("JSON always serialises") + "\n";
    match out {
        Some(p) => super::write_atomically(p, &text)?,
        None => print!("{text}"),
    }
    Ok(0)
}
