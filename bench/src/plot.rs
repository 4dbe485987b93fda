//! The SVG chart of a benchmark report, drawn with `plotters` (its SVG backend only: text
//! is left to the viewer's fonts, so no font stack is needed to draw).
//!
//! One group of bars per kind; in a group, one bar per measured path: the bar is the
//! end-to-end p50, the whisker reaches the p99, and a diamond marks the fetch service p50.
//! Modeled rows, if any, are hollow bars of their predicted service time, in a series of
//! their own. The latency axis is logarithmic: the local floor, remote faults and their
//! tails span more than a decade. The legend, the skipped paths and the model's source
//! are in a column to the right. Each path keeps its colour whichever paths ran.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::parse::DataPath;
use super::report::BenchReport;

const LEGEND_WIDTH: u32 = 260;
const PLOT_HEIGHT: u32 = 480;
/// Width of one bar, and the room between groups.
const BAR_PIXELS: u32 = 20;
const GROUP_GAP_PIXELS: u32 = 28;
/// Narrowest group: room for a label like `invalidate/3` under one bar.
const MIN_GROUP_PIXELS: u32 = 96;
/// One colour per path of [`DataPath::ALL`].
const COLORS: [RGBColor; 4] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xe1, 0x57, 0x59),
];
const MODELED_COLOR: RGBColor = RGBColor(0x9c, 0x75, 0x5f);
const GREY: RGBColor = RGBColor(0x55, 0x55, 0x55);

/// The latency axis: whole decades around `[min, max]` (one at least).
#[expect(
    clippy::cast_possible_truncation,
    reason = "log10 of a finite positive f64 lies within +-400"
)]
fn decades(min: f64, max: f64) -> (f64, f64) {
    let min = if min > 0.0 && min.is_finite() {
        min
    } else {
        1.0
    };
    let max = max.max(min);
    let lo = min.log10().floor() as i32;
    let hi = (max.log10().ceil() as i32).max(lo + 1);
    (10f64.powi(lo), 10f64.powi(hi))
}

/// A path's colour, the same in every chart whichever paths ran.
fn color_of(path: &DataPath) -> RGBColor {
    let index = DataPath::ALL.iter().position(|p| p == path).unwrap_or(0);
    COLORS[index % COLORS.len()]
}

/// The label of a case under its group.
fn case_label(kind: &str, sharers: u32) -> String {
    if kind == "invalidate" {
        format!("invalidate/{sharers}")
    } else {
        kind.to_string()
    }
}

/// The chart of `report` as an SVG document.
pub fn svg(report: &BenchReport) -> String {
    let mut out = String::new();
    if let Err(e) = draw(report, &mut out) {
        // Drawing into a string fails only on a plotters bug; say so in the picture.
        let why = e.to_string().replace('&', "&amp;").replace('<', "&lt;");
        out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"400\" height=\"40\"><text x=\"10\" y=\"25\">chart failed: {why}</text></svg>\n"
        );
    }
    out
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(report: &BenchReport, out: &mut String) -> DrawResult {
    // Groups: every case in the order rows appear (measured first, then modeled-only).
    let mut cases: Vec<(String, u32)> = Vec::new();
    for (kind, sharers) in report
        .paths
        .iter()
        .map(|r| (&r.kind, r.sharers))
        .chain(report.rows_modeled.iter().map(|r| (&r.kind, r.sharers)))
    {
        if !cases.iter().any(|(k, s)| k == kind && *s == sharers) {
            cases.push((kind.clone(), sharers));
        }
    }
    let paths: Vec<DataPath> = DataPath::ALL
        .into_iter()
        .filter(|p| {
            report
                .paths
                .iter()
                .any(|r| r.fabric == p.fabric && r.transport == p.transport)
        })
        .collect();
    let modeled = !report.rows_modeled.is_empty();
    let series = paths.len() + usize::from(modeled);
    let series32 = u32::try_from(series.max(1)).unwrap_or(1);
    let groups = u32::try_from(cases.len().max(1)).unwrap_or(1);
    let group_pixels = (series32 * BAR_PIXELS + GROUP_GAP_PIXELS).max(MIN_GROUP_PIXELS);
    let plot_width = (groups * group_pixels + 100).max(520);
    let (lo, hi) = {
        let values = report
            .paths
            .iter()
            .flat_map(|r| [Some(r.p50_us), Some(r.p99_us), r.service_p50_us])
            .chain(report.rows_modeled.iter().map(|r| Some(r.service_p50_us)))
            .flatten()
            .filter(|v| v.is_finite() && *v > 0.0);
        let (min, max) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        decades(min, max)
    };

    let root =
        SVGBackend::with_string(out, (plot_width + LEGEND_WIDTH, PLOT_HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, legend) = root.split_horizontally(plot_width);
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            "cvmm fault latency by path, end to end in the guest",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..f64::from(groups), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("latency (µs, log scale)")
        .x_desc("fault kind (invalidate/k: k sharers)")
        .draw()?;

    // Bars, in group units: a group is 1.0 wide, each series a slice of it.
    let bar = f64::from(BAR_PIXELS) / f64::from(group_pixels);
    let first_bar = |g: usize| g as f64 + (1.0 - series as f64 * bar) / 2.0;
    for (g, (kind, sharers)) in cases.iter().enumerate() {
        for (i, path) in paths.iter().enumerate() {
            let Some(row) = report.paths.iter().find(|r| {
                r.fabric == path.fabric
                    && r.transport == path.transport
                    && &r.kind == kind
                    && r.sharers == *sharers
            }) else {
                continue;
            };
            let x = first_bar(g) + i as f64 * bar;
            let centre = x + bar / 2.0;
            let (p50, p99) = (row.p50_us.max(lo), row.p99_us.max(lo));
            chart.draw_series([Rectangle::new(
                [(x + bar * 0.05, lo), (x + bar * 0.95, p50)],
                color_of(path).filled(),
            )])?;
            chart.draw_series([PathElement::new(vec![(centre, p50), (centre, p99)], BLACK)])?;
            chart
                .draw_series([EmptyElement::at((centre, p99))
                    + PathElement::new(vec![(-5, 0), (5, 0)], BLACK)])?;
            if let Some(service) = row.service_p50_us {
                let diamond = vec![(0, -5), (5, 0), (0, 5), (-5, 0), (0, -5)];
                chart.draw_series([EmptyElement::at((centre, service.max(lo)))
                    + Polygon::new(diamond.clone(), WHITE.filled())
                    + PathElement::new(diamond, BLACK)])?;
            }
        }
        if let Some(row) = report
            .rows_modeled
            .iter()
            .find(|r| &r.kind == kind && r.sharers == *sharers)
        {
            let x = first_bar(g) + paths.len() as f64 * bar;
            chart.draw_series([Rectangle::new(
                [
                    (x + bar * 0.05, lo),
                    (x + bar * 0.95, row.service_p50_us.max(lo)),
                ],
                MODELED_COLOR.stroke_width(2),
            )])?;
        }
    }
    // Case labels under their groups, in pixels (the x axis has no ticks of its own).
    let label_style = ("sans-serif", 13)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (g, (kind, sharers)) in cases.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(g as f64 + 0.5, lo));
        plot.draw(&Text::new(
            case_label(kind, *sharers),
            (px, py + 6),
            label_style.clone(),
        ))?;
    }
    draw_legend(&legend, report, &paths, modeled)?;
    root.present()?;
    Ok(())
}

/// The legend column: a swatch per series, what the marks mean, the run's shape, what
/// was not run.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    report: &BenchReport,
    paths: &[DataPath],
    modeled: bool,
) -> DrawResult {
    let text = ("sans-serif", 13).into_font().color(&BLACK);
    let small = ("sans-serif", 11).into_font().color(&GREY);
    let bold = ("sans-serif", 13).into_font().style(FontStyle::Bold);
    let mut y = 50;
    area.draw(&Text::new("path", (10, y), bold))?;
    for path in paths {
        y += 22;
        area.draw(&Rectangle::new(
            [(10, y), (24, y + 14)],
            color_of(path).filled(),
        ))?;
        let label = format!("{} (measured)", path.label());
        area.draw(&Text::new(label, (32, y), text.clone()))?;
    }
    if modeled {
        y += 22;
        area.draw(&Rectangle::new(
            [(10, y), (24, y + 14)],
            MODELED_COLOR.stroke_width(2),
        ))?;
        area.draw(&Text::new(
            "fpga (modeled) service p50",
            (32, y),
            text.clone(),
        ))?;
    }
    y += 28;
    area.draw(&PathElement::new(vec![(17, y), (17, y + 14)], BLACK))?;
    area.draw(&PathElement::new(vec![(12, y), (22, y)], BLACK))?;
    area.draw(&Text::new("whisker: p99", (32, y), text.clone()))?;
    y += 24;
    let diamond = vec![(17, y), (22, y + 5), (17, y + 10), (12, y + 5), (17, y)];
    area.draw(&PathElement::new(diamond, BLACK))?;
    area.draw(&Text::new(
        "diamond: fetch service p50",
        (32, y),
        text.clone(),
    ))?;
    y += 30;
    let mut notes = vec![
        format!("{} nodes, {} pages per run,", report.nodes, report.pages),
        format!("median of {} repeat(s); lower is better", report.repeat),
    ];
    notes.extend(
        report
            .rows_modeled
            .first()
            .map(|r| format!("model: {}", r.source)),
    );
    notes.extend(
        report
            .skipped
            .iter()
            .map(|s| format!("not run: {}/{}", s.fabric, s.transport)),
    );
    for note in notes {
        area.draw(&Text::new(note, (10, y), small.clone()))?;
        y += 16;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::modeled::modeled_row;
    use super::super::parse::{ProbeCase, ProbeKind};
    use super::super::report::{Method, PathRow, SkippedPath};
    use super::*;

    fn row(path: DataPath, kind: &str, sharers: u32, p50: f64) -> PathRow {
        PathRow {
            fabric: path.fabric.into(),
            transport: path.transport.into(),
            kind: kind.into(),
            sharers,
            p50_us: p50,
            p99_us: p50 * 4.0,
            mean_us: p50,
            max_us: p50 * 5.0,
            count: 20,
            repeats: 1,
            service_p50_us: Some(p50 / 2.0),
            service_p99_us: None,
            service_count: None,
            host_serve_cpu_us_per_fault: None,
            nic_serve_cpu_us_per_fault: None,
            ratio_to_software_udp: None,
            service_ratio_to_software_udp: None,
        }
    }

    fn report() -> BenchReport {
        BenchReport {
            benchmark: "fault-latency",
            unix_time: 0,
            nodes: 2,
            pages: 20,
            repeat: 1,
            paths: vec![
                row(DataPath::SOFTWARE_UDP, "local", 0, 40.0),
                row(DataPath::SOFTWARE_UDP, "read_miss", 0, 80.0),
                row(DataPath::ALL[3], "read_miss", 0, 30.0),
                row(DataPath::SOFTWARE_UDP, "invalidate", 1, 90.0),
            ],
            rows_modeled: vec![modeled_row(
                ProbeCase::plain(ProbeKind::ReadMiss),
                2.0,
                "a<b",
            )],
            skipped: vec![SkippedPath {
                fabric: "offload".into(),
                transport: "udp".into(),
                reason: "x".into(),
            }],
            failed_runs: vec![],
            method: Method::current(),
        }
    }

    #[test]
    fn the_axis_spans_whole_decades() {
        assert_eq!(decades(30.0, 700.0), (10.0, 1000.0));
        assert_eq!(decades(100.0, 100.0), (100.0, 1000.0));
        assert_eq!(decades(f64::INFINITY, 0.0), (1.0, 10.0), "no values");
        assert_eq!(decades(0.5, 3.0), (0.1, 10.0));
    }

    #[test]
    fn chart_has_every_bar_legend_and_labels() {
        let svg = svg(&report());
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        // One filled bar per measured row of each path and one swatch in the legend: three
        // software/udp rows, one offload/dpdk row (its own colour, the fourth), and one
        // hollow modeled bar.
        let filled = |color: &str| svg.matches(&format!("fill=\"{color}\"")).count();
        assert_eq!(filled("#4E79A7"), 3 + 1, "{svg}");
        assert_eq!(filled("#E15759"), 1 + 1, "{svg}");
        assert_eq!(svg.matches("stroke=\"#9C755F\"").count(), 1 + 1, "{svg}");
        for text in [
            "software/udp (measured)",
            "offload/dpdk (measured)",
            "fpga (modeled) service p50",
            "latency (µs, log scale)",
            "fault kind",
            "invalidate/1",
            "not run: offload/udp",
            "a&lt;b",
        ] {
            assert!(svg.contains(text), "missing {text}");
        }
        assert_eq!(svg.matches("<svg").count(), 1);
    }

    #[test]
    fn empty_report_still_draws() {
        let mut empty = report();
        empty.paths.clear();
        empty.rows_modeled.clear();
        let svg = svg(&empty);
        assert!(svg.contains("</svg>"));
    }
}
