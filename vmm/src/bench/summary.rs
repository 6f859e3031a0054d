//! What a person reads: the summary table printed on the terminal, and
//! `DIR/report.md`, the markdown report (provenance, verdict against the
//! baseline, regressions and improvements with old and new figures and
//! their ratio, then every point).

use std::fmt::Write;

use super::compare::{Comparison, MIN_SAMPLES, PointComparison, Verdict};
use super::plot::si;
use super::results::{PlacementRecord, Results, Stats, UNIT};

fn range(s: &Stats) -> String {
    format!("{}..{}", si(s.min), si(s.max))
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.3}x"))
}

fn efficiency(e: Option<f64>) -> String {
    e.map_or_else(|| "-".into(), |e| format!("{e:.2}"))
}

fn vcpus(n: u32, overcommitted: bool) -> String {
    if overcommitted {
        format!("{n}*")
    } else {
        n.to_string()
    }
}

/// The terminal summary: one row per point, with the baseline's median,
/// the ratio and the verdict when there is a comparison.
pub fn table(results: &Results, cmp: Option<&Comparison>) -> String {
    let mut rows: Vec<Vec<String>> = vec![{
        let mut h: Vec<String> = [
            "benchmark",
            "series",
            "vCPUs",
            &format!("median {UNIT}"),
            "min..max",
            "n",
            "efficiency",
        ]
        .map(String::from)
        .to_vec();
        if cmp.is_some() {
            h.extend(["baseline", "new/old", "verdict"].map(String::from));
        }
        h
    }];
    for (b, s, p) in results.points() {
        let Some(st) = p.stats() else { continue };
        let mut row = vec![
            b.name.clone(),
            s.label.clone(),
            vcpus(p.vcpus, p.overcommitted),
            si(st.median),
            range(&st),
            st.samples.to_string(),
            efficiency(p.efficiency),
        ];
        if let Some(c) = cmp {
            match c.point(&b.name, &s.label, p.vcpus) {
                Some(pc) => row.extend([
                    pc.old.map_or_else(|| "-".into(), |o| si(o.median)),
                    ratio(pc.ratio),
                    pc.verdict.name().into(),
                ]),
                None => row.extend(["-", "-", "-"].map(String::from)),
            }
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| {
                // Names left-aligned, figures right-aligned.
                if i < 2 || i == row.len() - 1 && cmp.is_some() {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    if results.points().any(|(_, _, p)| p.overcommitted) {
        out += "* overcommitted: more vCPUs than usable host CPUs\n";
    }
    out
}

fn point_rows(out: &mut String, points: &[&PointComparison]) {
    out.push_str(
        "| benchmark | series | vCPUs | old median | new median | new/old | old range (n) | new range (n) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        let (old_median, old_range) = p.old.map_or_else(
            || ("-".into(), "-".into()),
            |o| (si(o.median), format!("{} ({})", range(&o), o.samples)),
        );
        let _ = writeln!(
            out,
            "| {} | {} | {} | {old_median} | {} | {} | {old_range} | {} ({}) |",
            p.benchmark,
            p.series,
            vcpus(p.vcpus, p.overcommitted),
            si(p.new.median),
            ratio(p.ratio),
            range(&p.new),
            p.new.samples
        );
    }
}

/// One line on where the vCPUs of one count ran: the plan's pin and NUMA
/// policies and vCPU → host CPU, or the record's note when there is no
/// plan.
pub fn placement(p: &PlacementRecord) -> String {
    let over = if p.overcommitted {
        ", overcommitted"
    } else {
        ""
    };
    let Some(plan) = &p.plan else {
        return format!("{} vCPUs{over}: {}", p.vcpus, p.note);
    };
    let text = |k: &str| plan.get(k).and_then(|v| v.as_str()).unwrap_or("?");
    let map: Vec<String> = plan
        .get("vcpu")
        .and_then(|v| v.as_array())
        .map(|v| {
            v.iter()
                .map(|x| {
                    let cpu = x
                        .get("host_cpu")
                        .and_then(|c| c.as_u64())
                        .map_or_else(|| "unpinned".into(), |c| c.to_string());
                    format!(
                        "{}→{cpu}",
                        x.get("vcpu").and_then(|c| c.as_u64()).unwrap_or(0)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} vCPUs{over}: pin {}, numa {}; vCPU→host CPU {}",
        p.vcpus,
        text("pin"),
        text("numa"),
        map.join(", ")
    )
}

/// `DIR/report.md`.
pub fn markdown(results: &Results, cmp: Option<&Comparison>) -> String {
    let pv = &results.provenance;
    let h = &pv.host;
    let mut out = String::from("# k42vmm bench report\n\n");
    let dirty = match pv.git.tree_dirty {
        Some(true) => ", checkout had uncommitted changes",
        Some(false) => ", checkout clean",
        None => "",
    };
    let _ = writeln!(out, "- run: {} to {}", pv.started, pv.finished);
    let _ = writeln!(
        out,
        "- k42vmm {}, git revision {} ({}{dirty})",
        pv.k42vmm_version, pv.git.revision, pv.git.source
    );
    let _ = writeln!(
        out,
        "- guest: image '{}' ({}), sha256 {}, shared-abi {}",
        pv.guest.image_name, pv.guest.image, pv.guest.image_sha256, pv.guest.abi_version
    );
    let _ = writeln!(
        out,
        "- host class `{}`: {}, {} CPUs online ({} usable), {} cores, {} NUMA node(s), kernel {}, {}; guest supervisor mode {}",
        h.class,
        h.cpu_model,
        h.cpus_online,
        h.cpus_usable,
        h.cores.map_or_else(|| "?".into(), |c| c.to_string()),
        h.nodes,
        h.kernel,
        h.kvm,
        h.supervisor_mode.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(out, "- command: `{}`", pv.command_line.join(" "));
    for p in &pv.placement {
        let _ = writeln!(out, "- placement at {}", placement(p));
    }
    let _ = writeln!(out, "- {}", pv.rules.throughput);
    let _ = writeln!(out, "- {}", pv.rules.efficiency);

    out += "\n## Verdict\n\n";
    match cmp {
        None => out += "No baseline given: nothing was compared.\n",
        Some(c) => {
            let regressed: Vec<&PointComparison> = c.with(Verdict::Regressed).collect();
            let improved: Vec<&PointComparison> = c.with(Verdict::Improved).collect();
            if regressed.is_empty() {
                out += "**No regression**";
            } else {
                let _ = write!(
                    out,
                    "**REGRESSION: {} point(s) regressed**",
                    regressed.len()
                );
            }
            let _ = writeln!(
                out,
                " against baseline `{}` (revision {}, run {}, host class `{}`): {}.\n",
                c.baseline,
                c.baseline_revision,
                c.baseline_started,
                c.baseline_class,
                c.tally()
            );
            if c.baseline_class != c.class {
                let _ = writeln!(
                    out,
                    "Warning: the baseline is from host class `{}`, this run from `{}`; their figures may not be comparable.\n",
                    c.baseline_class, c.class
                );
            }
            let _ = writeln!(
                out,
                "Rule: a point regressed (or improved) only when both sides have at least {MIN_SAMPLES} samples, \
                 their ranges (min..max) do not overlap, and the medians differ by more than {}%. \
                 Figures are {UNIT}; higher is better.",
                c.threshold_pct
            );
            if !regressed.is_empty() {
                out += "\n## Regressions\n\n";
                point_rows(&mut out, &regressed);
            }
            if !improved.is_empty() {
                out += "\n## Improvements\n\n";
                point_rows(&mut out, &improved);
            }
            if !c.not_measured.is_empty() {
                out += "\nBaseline points this run did not measure: ";
                let v: Vec<String> = c
                    .not_measured
                    .iter()
                    .map(|(b, s, n)| format!("{b} {s} at {n} vCPUs"))
                    .collect();
                out += &v.join(", ");
                out += ".\n";
            }
        }
    }
    out += "\n## All points\n\n```text\n";
    out += &table(results, cmp);
    out += "```\n\nPlots: ";
    let plots: Vec<String> = results
        .benchmarks
        .iter()
        .map(|b| format!("[{0}]({0}.svg)", b.name))
        .collect();
    out += &plots.join(", ");
    out += "; every sample with its raw records: [results.json](results.json).\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::compare::DEFAULT_THRESHOLD_PCT;
    use crate::bench::results::tests::sample_results;

    #[test]
    fn placement_lines_come_from_the_plan_or_the_note() {
        let r = sample_results(&[1.0, 2.0, 3.0], 1.0);
        let mut p = r.provenance.placement[0].clone();
        p.plan = Some(serde_json::json!({
            "pin": "auto (default)",
            "numa": "off",
            "vcpu": [{"vcpu": 0, "host_cpu": 2}, {"vcpu": 1, "host_cpu": null}],
        }));
        assert_eq!(
            placement(&p),
            "2 vCPUs: pin auto (default), numa off; vCPU→host CPU 0→2, 1→unpinned"
        );
        p.plan = None;
        p.overcommitted = true;
        assert_eq!(placement(&p), "2 vCPUs, overcommitted: pinned");
        assert!(markdown(&r, None).contains("- placement at 2 vCPUs: pin"));
    }

    #[test]
    fn table_has_a_row_per_point() {
        let r = sample_results(&[1.0e9, 1.1e9, 1.2e9], 0.9);
        let t = table(&r, None);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("benchmark") && lines[0].contains("efficiency"));
        assert!(lines[1].contains("platform.spin") && lines[1].contains("1.10G"));
        assert!(
            lines[2].contains("1.98G") && lines[2].contains("0.90"),
            "{t}"
        );
        assert!(!t.contains("verdict"));
    }

    #[test]
    fn report_names_each_regression_with_old_new_and_ratio() {
        let base = sample_results(&[100.0, 101.0, 102.0], 1.0);
        let new = sample_results(&[100.5, 101.0, 101.5], 0.8);
        let c = Comparison::new("bench/baselines/x.json", &base, &new, DEFAULT_THRESHOLD_PCT);
        let md = markdown(&new, Some(&c));
        assert!(md.contains("**REGRESSION: 1 point(s) regressed**"), "{md}");
        let regressions = md
            .split("## Regressions")
            .nth(1)
            .unwrap()
            .split("##")
            .next()
            .unwrap();
        assert!(
            regressions.contains("| platform.spin | user | 2 | 202 | 162 | 0.800x |"),
            "{regressions}"
        );
        assert!(!md.contains("## Improvements"));
        let t = table(&new, Some(&c));
        assert!(t.contains("REGRESSED") && t.contains("0.800x"), "{t}");

        let md = markdown(&base, Some(&Comparison::new("b", &new, &base, 5.0)));
        assert!(
            md.contains("**No regression**") && md.contains("## Improvements"),
            "{md}"
        );
        assert!(markdown(&base, None).contains("No baseline given"));
    }
}
