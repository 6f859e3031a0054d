//! `DIR/<bench>.svg`: a benchmark's scaling curves, drawn with plotters'
//! SVG backend.
//!
//! One chart per benchmark: throughput (median over samples, with the
//! min..max range as an error bar) against vCPUs for each series, each
//! with its ideal-linear line (dashed, same colour: the series' figure at
//! the smallest vCPU count times N / N0), labelled axes and a legend. When
//! the sweep went past the usable host CPUs a grey dashed line marks where
//! overcommit starts.
//!
//! plotters is built without its font features: text goes into the SVG as
//! `<text>` elements for the viewer to render, and plotters only estimates
//! its extent for layout, so no system fonts or fontconfig are needed.

use plotters::prelude::*;

use super::results::BenchmarkResults;

/// Chart size in pixels.
const SIZE: (u32, u32) = (900, 560);

/// Line colours, one per series (cycled).
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// `x` with an SI prefix: 1.23G, 456k, 12.
pub fn si(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    let (v, p) = if a >= 1e12 {
        (x / 1e12, "T")
    } else if a >= 1e9 {
        (x / 1e9, "G")
    } else if a >= 1e6 {
        (x / 1e6, "M")
    } else if a >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{p}")
}

/// The legend label of a series' ideal-linear line.
pub fn ideal_label(series: &str, base_vcpus: u32) -> String {
    format!("{series} ideal (linear from {base_vcpus} vCPU)")
}

/// Draw `bench` as an SVG document. `host_cpus` marks where overcommit
/// starts when a point lies beyond it.
pub fn svg(bench: &BenchmarkResults, host_cpus: u32) -> Result<String, String> {
    let mut out = String::new();
    draw(bench, host_cpus, &mut out).map_err(|e| format!("cannot draw {}: {e}", bench.name))?;
    Ok(out)
}

fn draw(
    bench: &BenchmarkResults,
    host_cpus: u32,
    out: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let max_vcpus = bench
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.vcpus))
        .max()
        .ok_or("it has no points")?;
    // Ideal lines run from each series' first point.
    let ideals: Vec<Option<(u32, f64)>> = bench
        .series
        .iter()
        .map(|s| s.points.first().map(|p| (p.vcpus, p.median)))
        .collect();
    let ideal_at = |(n0, m0): (u32, f64), n: u32| n as f64 / n0 as f64 * m0;
    let top = bench
        .series
        .iter()
        .zip(&ideals)
        .flat_map(|(s, ideal)| {
            s.points
                .iter()
                .map(|p| p.max)
                .chain(ideal.map(|i| ideal_at(i, max_vcpus)))
        })
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let y_max = if top > 0.0 { top * 1.12 } else { 1.0 };
    let overcommitted = bench
        .series
        .iter()
        .any(|s| s.points.iter().any(|p| p.overcommitted));

    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: throughput vs vCPUs", bench.name),
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0u32..max_vcpus + 1, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("vCPUs")
        .y_desc(format!("throughput ({} per second)", bench.op))
        .y_label_formatter(&|y| si(*y))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;

    for (i, (s, ideal)) in bench.series.iter().zip(&ideals).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let medians: Vec<(u32, f64)> = s.points.iter().map(|p| (p.vcpus, p.median)).collect();
        chart
            .draw_series(LineSeries::new(medians.clone(), colour.stroke_width(2)))?
            .label(format!("{} (median of samples, min..max bars)", s.label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            medians
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 4, colour.filled())),
        )?;
        chart.draw_series(s.points.iter().map(|p| {
            ErrorBar::new_vertical(p.vcpus, p.min, p.median, p.max, colour.stroke_width(1), 8)
        }))?;
        if let Some(base) = *ideal {
            let line: Vec<(u32, f64)> = s
                .points
                .iter()
                .map(|p| (p.vcpus, ideal_at(base, p.vcpus)))
                .collect();
            chart
                .draw_series(DashedLineSeries::new(line, 8, 6, colour.stroke_width(1)))?
                .label(ideal_label(&s.label, base.0))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 8, y)], colour.stroke_width(1))
                });
        }
    }
    if overcommitted && host_cpus <= max_vcpus {
        let grey = RGBColor(0x80, 0x80, 0x80);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(host_cpus, 0.0), (host_cpus, y_max)],
                4,
                4,
                grey.stroke_width(1),
            ))?
            .label(format!(
                "usable host CPUs: {host_cpus} (points beyond are overcommitted)"
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], grey.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::tests::sample_results;

    fn texts(doc: &roxmltree::Document) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or("").trim().to_string())
            .collect()
    }

    #[test]
    fn plot_is_valid_svg_with_every_series_and_its_ideal_line() {
        let mut r = sample_results(&[1.0e9, 1.1e9, 1.2e9], 0.9);
        // A second implementation, so the legend has to tell them apart.
        let mut other = r.benchmarks[0].series[0].clone();
        other.label = "distributed".into();
        r.benchmarks[0].series.push(other);
        let svg = svg(&r.benchmarks[0], 2).unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("the plot is well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let t = texts(&doc);
        for want in [
            "platform.spin: throughput vs vCPUs",
            "vCPUs",
            "throughput (spin iterations per second)",
            "user (median of samples, min..max bars)",
            "distributed (median of samples, min..max bars)",
            &ideal_label("user", 1),
            &ideal_label("distributed", 1),
        ] {
            assert!(t.iter().any(|x| x == want), "no text '{want}' in {t:?}");
        }
        // Tick labels carry SI prefixes.
        assert!(t.iter().any(|x| x.ends_with('G')), "{t:?}");
        // Each series' median line is a polyline in its own colour.
        let stroke = |c: RGBColor| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
        for c in &COLOURS[..2] {
            let lines = doc
                .descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .filter(|n| n.attribute("stroke") == Some(stroke(*c).as_str()))
                .count();
            assert!(lines >= 2, "series {} has {lines} polylines", stroke(*c));
        }
        // No overcommit marker when nothing was overcommitted.
        assert!(!svg.contains("overcommitted"));
    }

    #[test]
    fn overcommitted_sweeps_mark_the_host_cpus() {
        let mut r = sample_results(&[1.0e6, 1.1e6, 1.2e6], 0.5);
        r.benchmarks[0].series[0].points[1].overcommitted = true;
        let svg = svg(&r.benchmarks[0], 1).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        assert!(
            texts(&doc)
                .iter()
                .any(|t| t == "usable host CPUs: 1 (points beyond are overcommitted)")
        );
    }

    #[test]
    fn si_prefixes() {
        assert_eq!(si(1.234e9), "1.23G");
        assert_eq!(si(45_600.0), "45.6k");
        assert_eq!(si(123.0), "123");
        assert_eq!(si(0.0), "0");
        assert_eq!(si(2.5), "2.50");
    }
}
