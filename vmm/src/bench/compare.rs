//! Comparison with a baseline: the rule that decides whether a point
//! regressed, and the comparison of two whole results files.
//!
//! The rule ([`judge`]), for one benchmark, series and vCPU count with
//! throughput samples `old` (baseline) and `new`:
//!
//! 1. fewer than [`MIN_SAMPLES`] on either side: *too few samples* — no
//!    verdict, whatever the medians say;
//! 2. the ranges `[min, max]` overlap: *unchanged* (within the noise);
//! 3. the medians differ by no more than the threshold (default
//!    [`DEFAULT_THRESHOLD_PCT`]%): *unchanged*;
//! 4. otherwise *regressed* when the new median is lower, *improved* when
//!    higher (higher throughput is better).
//!
//! A regression needs all three: enough samples, separate ranges, and a
//! change that matters.

use serde::Serialize;

use super::results::{Results, Stats};

/// Samples each side needs before a point can be judged.
pub const MIN_SAMPLES: usize = 3;

/// The default `--threshold`, in percent.
pub const DEFAULT_THRESHOLD_PCT: f64 = 5.0;

/// What happened to one point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Slower beyond the noise and the threshold.
    Regressed,
    /// Faster beyond the noise and the threshold.
    Improved,
    /// Within the noise or the threshold.
    Unchanged,
    /// Fewer than [`MIN_SAMPLES`] samples on a side.
    TooFewSamples,
    /// Not in the baseline.
    New,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Regressed => "REGRESSED",
            Verdict::Improved => "improved",
            Verdict::Unchanged => "unchanged",
            Verdict::TooFewSamples => "too few samples",
            Verdict::New => "new",
        }
    }
}

/// Judge one point by the rule in the module documentation.
pub fn judge(old: &[f64], new: &[f64], threshold_pct: f64) -> Verdict {
    let (Some(o), Some(n)) = (Stats::of(old), Stats::of(new)) else {
        return Verdict::TooFewSamples;
    };
    if o.samples < MIN_SAMPLES || n.samples < MIN_SAMPLES {
        return Verdict::TooFewSamples;
    }
    if o.median <= 0.0 {
        return Verdict::Unchanged;
    }
    let change = n.median / o.median - 1.0;
    let t = threshold_pct / 100.0;
    if n.max < o.min && change < -t {
        Verdict::Regressed
    } else if n.min > o.max && change > t {
        Verdict::Improved
    } else {
        Verdict::Unchanged
    }
}

/// One point of the new results next to the baseline's.
#[derive(Clone, Debug, PartialEq)]
pub struct PointComparison {
    pub benchmark: String,
    pub series: String,
    pub vcpus: u32,
    pub overcommitted: bool,
    pub verdict: Verdict,
    /// The baseline's samples, when it has the point.
    pub old: Option<Stats>,
    pub new: Stats,
    /// New median / old median.
    pub ratio: Option<f64>,
}

/// The new results against a baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The baseline file, for the report.
    pub baseline: String,
    pub baseline_revision: String,
    pub baseline_started: String,
    pub baseline_class: String,
    pub class: String,
    pub threshold_pct: f64,
    /// Every point of the new results, in order.
    pub points: Vec<PointComparison>,
    /// Baseline points the new results lack: (benchmark, series, vCPUs).
    pub not_measured: Vec<(String, String, u32)>,
}

impl Comparison {
    /// Compare `new` with `baseline` (read from `baseline_path`).
    pub fn new(baseline_path: &str, baseline: &Results, new: &Results, threshold_pct: f64) -> Self {
        let points = new
            .points()
            .filter_map(|(b, s, p)| {
                let new_stats = p.stats()?;
                let old = baseline.point(&b.name, &s.label, p.vcpus);
                let verdict = match old {
                    None => Verdict::New,
                    Some(o) => judge(&o.throughputs(), &p.throughputs(), threshold_pct),
                };
                let old = old.and_then(|o| o.stats());
                Some(PointComparison {
                    benchmark: b.name.clone(),
                    series: s.label.clone(),
                    vcpus: p.vcpus,
                    overcommitted: p.overcommitted,
                    verdict,
                    ratio: old
                        .filter(|o| o.median > 0.0)
                        .map(|o| new_stats.median / o.median),
                    old,
                    new: new_stats,
                })
            })
            .collect();
        let not_measured = baseline
            .points()
            .filter(|(b, s, p)| new.point(&b.name, &s.label, p.vcpus).is_none())
            .map(|(b, s, p)| (b.name.clone(), s.label.clone(), p.vcpus))
            .collect();
        Self {
            baseline: baseline_path.into(),
            baseline_revision: baseline.provenance.git.revision.clone(),
            baseline_started: baseline.provenance.started.clone(),
            baseline_class: baseline.provenance.host.class.clone(),
            class: new.provenance.host.class.clone(),
            threshold_pct,
            points,
            not_measured,
        }
    }

    /// The points with verdict `v`.
    pub fn with(&self, v: Verdict) -> impl Iterator<Item = &PointComparison> {
        self.points.iter().filter(move |p| p.verdict == v)
    }

    pub fn count(&self, v: Verdict) -> usize {
        self.with(v).count()
    }

    pub fn has_regression(&self) -> bool {
        self.count(Verdict::Regressed) > 0
    }

    /// The point of `bench`/`series` at `vcpus`.
    pub fn point(&self, bench: &str, series: &str, vcpus: u32) -> Option<&PointComparison> {
        self.points
            .iter()
            .find(|p| p.benchmark == bench && p.series == series && p.vcpus == vcpus)
    }

    /// One line: how many points regressed, improved, and so on.
    pub fn tally(&self) -> String {
        format!(
            "{} regressed, {} improved, {} unchanged, {} with too few samples, {} new",
            self.count(Verdict::Regressed),
            self.count(Verdict::Improved),
            self.count(Verdict::Unchanged),
            self.count(Verdict::TooFewSamples),
            self.count(Verdict::New)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::tests::sample_results;

    const T: f64 = DEFAULT_THRESHOLD_PCT;

    #[test]
    fn a_clear_drop_is_a_regression() {
        let old = [100.0, 101.0, 102.0];
        let new = [80.0, 81.0, 82.0];
        assert_eq!(judge(&old, &new, T), Verdict::Regressed);
    }

    #[test]
    fn a_clear_gain_is_an_improvement() {
        let old = [100.0, 101.0, 102.0];
        let new = [120.0, 121.0, 119.0];
        assert_eq!(judge(&old, &new, T), Verdict::Improved);
    }

    #[test]
    fn overlapping_ranges_are_noise_however_far_the_medians_move() {
        // Medians 20% apart, but one slow new sample overlaps the old range.
        let old = [100.0, 101.0, 102.0];
        let new = [80.0, 81.0, 100.5];
        assert_eq!(judge(&old, &new, T), Verdict::Unchanged);
        let new = [101.5, 125.0, 126.0];
        assert_eq!(judge(&old, &new, T), Verdict::Unchanged);
    }

    #[test]
    fn separate_ranges_within_the_threshold_are_unchanged() {
        let old = [100.0, 100.5, 101.0];
        let new = [97.0, 97.5, 98.0]; // 3% slower, ranges apart
        assert_eq!(judge(&old, &new, T), Verdict::Unchanged);
        assert_eq!(judge(&old, &new, 2.0), Verdict::Regressed);
    }

    #[test]
    fn too_few_samples_are_never_judged() {
        let old = [100.0, 101.0, 102.0];
        assert_eq!(judge(&old, &[50.0, 51.0], T), Verdict::TooFewSamples);
        assert_eq!(
            judge(&[100.0, 101.0], &[50.0; 5], T),
            Verdict::TooFewSamples
        );
        assert_eq!(judge(&[], &[50.0; 5], T), Verdict::TooFewSamples);
    }

    #[test]
    fn whole_results_are_compared_point_by_point() {
        let base = sample_results(&[100.0, 101.0, 102.0], 1.0);
        // 1 vCPU unchanged; 2 vCPUs scales 30% worse.
        let new = sample_results(&[100.5, 101.0, 101.5], 0.7);
        let c = Comparison::new("base.json", &base, &new, T);
        assert_eq!(c.points.len(), 2);
        let p1 = c.point("platform.spin", "user", 1).unwrap();
        assert_eq!(p1.verdict, Verdict::Unchanged);
        let p2 = c.point("platform.spin", "user", 2).unwrap();
        assert_eq!(p2.verdict, Verdict::Regressed);
        assert!((p2.ratio.unwrap() - 0.7).abs() < 1e-9, "{:?}", p2.ratio);
        assert!(c.has_regression());
        assert!(
            c.tally()
                .starts_with("1 regressed, 0 improved, 1 unchanged")
        );
        assert!(c.not_measured.is_empty());
    }

    #[test]
    fn points_missing_on_either_side_are_listed() {
        let base = sample_results(&[100.0, 101.0, 102.0], 1.0);
        let mut new = base.clone();
        new.benchmarks[0].series[0].points.remove(0);
        let c = Comparison::new("b", &base, &new, T);
        assert_eq!(
            c.not_measured,
            vec![("platform.spin".into(), "user".into(), 1)]
        );
        let c = Comparison::new("b", &new, &base, T);
        assert_eq!(c.count(Verdict::New), 1);
        assert!(!c.has_regression());
    }
}
