//! The SVG chart of a benchmark report, written by hand (a few rectangles and lines do not
//! need a plotting library and its font stack).
//!
//! One group of bars per kind; in a group, one bar per measured path: the bar is the
//! end-to-end p50, the whisker reaches the p99, and a diamond marks the fetch service p50.
//! Modeled rows, if any, are hollow dashed bars of their predicted service time, in a
//! series of their own. The latency axis is logarithmic: the local floor, remote faults
//! and their tails span more than a decade.

use std::fmt::Write;

use super::parse::DataPath;
use super::report::BenchReport;

const WIDTH_LEGEND: f64 = 230.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_TOP: f64 = 60.0;
const PLOT_HEIGHT: f64 = 340.0;
const MARGIN_BOTTOM: f64 = 70.0;
const BAR_WIDTH: f64 = 20.0;
const GROUP_GAP: f64 = 28.0;
/// Narrowest group: room for a label like `invalidate/3` under one bar.
const MIN_GROUP_WIDTH: f64 = 96.0;
const COLORS: [&str; 4] = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"];
const MODELED_COLOR: &str = "#9c755f";

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A logarithmic axis from `lo` to `hi` (decades), mapped to `[bottom, top]` pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
struct LogAxis {
    lo_exp: i32,
    hi_exp: i32,
    bottom: f64,
    top: f64,
}

impl LogAxis {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "log10 of a finite positive f64 lies within +-400"
    )]
    fn new(min: f64, max: f64, bottom: f64, top: f64) -> Self {
        let min = if min > 0.0 { min } else { 1.0 };
        let max = max.max(min);
        let lo_exp = min.log10().floor() as i32;
        let hi_exp = (max.log10().ceil() as i32).max(lo_exp + 1);
        Self {
            lo_exp,
            hi_exp,
            bottom,
            top,
        }
    }

    fn y(&self, value: f64) -> f64 {
        let v = value.max(10f64.powi(self.lo_exp)).log10();
        let span = f64::from(self.hi_exp - self.lo_exp);
        self.bottom - (v - f64::from(self.lo_exp)) / span * (self.bottom - self.top)
    }

    /// 1, 2, 5 times each power of ten in range.
    fn ticks(&self) -> Vec<f64> {
        let mut ticks = Vec::new();
        for exp in self.lo_exp..=self.hi_exp {
            for m in [1.0, 2.0, 5.0] {
                let v = m * 10f64.powi(exp);
                if v <= 10f64.powi(self.hi_exp) * 1.0001 {
                    ticks.push(v);
                }
            }
        }
        ticks
    }
}

fn tick_label(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// The chart of `report` as an SVG document.
pub fn svg(report: &BenchReport) -> String {
    // Groups: every case in the order rows appear (measured first, then modeled-only).
    let mut cases: Vec<(String, u32)> = Vec::new();
    let mut add_case = |kind: &str, sharers: u32| {
        if !cases.iter().any(|(k, s)| k == kind && *s == sharers) {
            cases.push((kind.to_string(), sharers));
        }
    };
    for row in &report.paths {
        add_case(&row.kind, row.sharers);
    }
    for row in &report.rows_modeled {
        add_case(&row.kind, row.sharers);
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
    let group_width = (series.max(1) as f64 * BAR_WIDTH + GROUP_GAP).max(MIN_GROUP_WIDTH);
    let plot_width = (cases.len().max(1) as f64 * group_width).max(420.0);
    let width = MARGIN_LEFT + plot_width + WIDTH_LEGEND;
    let height = MARGIN_TOP + PLOT_HEIGHT + MARGIN_BOTTOM;
    let bottom = MARGIN_TOP + PLOT_HEIGHT;

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
    let axis = LogAxis::new(
        if min.is_finite() { min } else { 1.0 },
        max,
        bottom,
        MARGIN_TOP,
    );

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{MARGIN_LEFT}" y="22" font-size="15" font-weight="bold">cvmm fault latency by path, end to end in the guest</text>"#
    );
    let _ = writeln!(
        s,
        r##"<text x="{MARGIN_LEFT}" y="40" fill="#555">bar: p50, whisker: p99, diamond: fetch service p50; {} nodes, {} pages per run, median of {} repeat(s); lower is better</text>"##,
        report.nodes, report.pages, report.repeat
    );
    // Grid and y ticks.
    for tick in axis.ticks() {
        let y = axis.y(tick);
        let _ = writeln!(
            s,
            r##"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            MARGIN_LEFT + plot_width,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            tick_label(tick)
        );
    }
    // Axes and their labels.
    let _ = writeln!(
        s,
        r#"<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" y2="{bottom}" stroke="black"/><line x1="{MARGIN_LEFT}" y1="{bottom}" x2="{:.1}" y2="{bottom}" stroke="black"/>"#,
        MARGIN_LEFT + plot_width
    );
    let mid_y = MARGIN_TOP + PLOT_HEIGHT / 2.0;
    let _ = writeln!(
        s,
        r#"<text x="20" y="{mid_y:.1}" text-anchor="middle" transform="rotate(-90 20 {mid_y:.1})">latency (µs, log scale)</text>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">fault kind (invalidate/k: k sharers)</text>"#,
        MARGIN_LEFT + plot_width / 2.0,
        height - 18.0
    );

    for (g, (kind, sharers)) in cases.iter().enumerate() {
        // Bars centred in their group.
        let x0 =
            MARGIN_LEFT + g as f64 * group_width + (group_width - series as f64 * BAR_WIDTH) / 2.0;
        let label = if kind == "invalidate" {
            format!("invalidate/{sharers}")
        } else {
            kind.clone()
        };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + series as f64 * BAR_WIDTH / 2.0,
            bottom + 18.0,
            escape(&label)
        );
        for (i, path) in paths.iter().enumerate() {
            let Some(row) = report.paths.iter().find(|r| {
                r.fabric == path.fabric
                    && r.transport == path.transport
                    && &r.kind == kind
                    && r.sharers == *sharers
            }) else {
                continue;
            };
            let x = x0 + i as f64 * BAR_WIDTH;
            let top = axis.y(row.p50_us);
            let color = COLORS[i % COLORS.len()];
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{} {}: p50 {:.1} µs, p99 {:.1} µs</title></rect>"#,
                x + 1.0,
                BAR_WIDTH - 2.0,
                (bottom - top).max(0.0),
                escape(&path.label()),
                escape(&label),
                row.p50_us,
                row.p99_us
            );
            let cx = x + BAR_WIDTH / 2.0;
            let y99 = axis.y(row.p99_us);
            let _ = writeln!(
                s,
                r#"<line x1="{cx:.1}" y1="{top:.1}" x2="{cx:.1}" y2="{y99:.1}" stroke="black"/><line x1="{:.1}" y1="{y99:.1}" x2="{:.1}" y2="{y99:.1}" stroke="black"/>"#,
                cx - 5.0,
                cx + 5.0
            );
            if let Some(service) = row.service_p50_us {
                let y = axis.y(service);
                let _ = writeln!(
                    s,
                    r#"<path d="M {cx:.1} {:.1} L {:.1} {y:.1} L {cx:.1} {:.1} L {:.1} {y:.1} Z" fill="white" stroke="black"><title>service p50 {service:.1} µs</title></path>"#,
                    y - 5.0,
                    cx + 5.0,
                    y + 5.0,
                    cx - 5.0
                );
            }
        }
        if let Some(row) = report
            .rows_modeled
            .iter()
            .find(|r| &r.kind == kind && r.sharers == *sharers)
        {
            let x = x0 + paths.len() as f64 * BAR_WIDTH;
            let top = axis.y(row.service_p50_us);
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="{MODELED_COLOR}" stroke-dasharray="4 2"><title>{}: service p50 {:.2} µs ({})</title></rect>"#,
                x + 1.0,
                BAR_WIDTH - 2.0,
                (bottom - top).max(0.0),
                escape(&row.label),
                row.service_p50_us,
                escape(&row.source)
            );
        }
    }

    // Legend.
    let lx = MARGIN_LEFT + plot_width + 20.0;
    let mut ly = MARGIN_TOP + 10.0;
    let _ = writeln!(
        s,
        r#"<text x="{lx}" y="{ly}" font-weight="bold">path</text>"#
    );
    for (i, path) in paths.iter().enumerate() {
        ly += 20.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{:.1}" width="14" height="14" fill="{}"/><text x="{:.1}" y="{ly:.1}">{} (measured)</text>"#,
            ly - 11.0,
            COLORS[i % COLORS.len()],
            lx + 20.0,
            escape(&path.label())
        );
    }
    if modeled {
        ly += 20.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{:.1}" width="14" height="14" fill="none" stroke="{MODELED_COLOR}" stroke-dasharray="4 2"/><text x="{:.1}" y="{ly:.1}">fpga (modeled) service p50</text>"#,
            ly - 11.0,
            lx + 20.0
        );
    }
    ly += 26.0;
    let _ = writeln!(
        s,
        r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/><text x="{:.1}" y="{ly:.1}">whisker: p99</text>"#,
        lx + 7.0,
        ly - 12.0,
        lx + 7.0,
        ly + 2.0,
        lx + 20.0
    );
    ly += 22.0;
    let _ = writeln!(
        s,
        r#"<path d="M {:.1} {:.1} L {:.1} {:.1} L {:.1} {:.1} L {:.1} {:.1} Z" fill="white" stroke="black"/><text x="{:.1}" y="{ly:.1}">fetch service p50</text>"#,
        lx + 7.0,
        ly - 10.0,
        lx + 12.0,
        ly - 5.0,
        lx + 7.0,
        ly,
        lx + 2.0,
        ly - 5.0,
        lx + 20.0
    );
    for skipped in &report.skipped {
        ly += 20.0;
        let _ = writeln!(
            s,
            r##"<text x="{lx}" y="{ly:.1}" fill="#888" font-size="10">not run: {}/{}</text>"##,
            escape(skipped.fabric.as_str()),
            escape(skipped.transport.as_str())
        );
    }
    s.push_str("</svg>\n");
    s
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
    fn log_axis() {
        let axis = LogAxis::new(30.0, 700.0, 400.0, 100.0);
        assert_eq!((axis.lo_exp, axis.hi_exp), (1, 3));
        assert_eq!(axis.y(10.0), 400.0);
        assert_eq!(axis.y(1000.0), 100.0);
        assert!((axis.y(100.0) - 250.0).abs() < 1e-9);
        assert_eq!(axis.y(0.0), 400.0, "values below the axis sit on it");
        assert_eq!(
            axis.ticks(),
            [10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
        );
        let flat = LogAxis::new(100.0, 100.0, 1.0, 0.0);
        assert_eq!((flat.lo_exp, flat.hi_exp), (2, 3));
    }

    #[test]
    fn chart_has_every_bar_legend_and_labels() {
        let svg = svg(&report());
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        // One filled bar per measured row, one hollow dashed bar per modeled row.
        assert_eq!(svg.matches("<rect x=").count() - 3, 4 + 1, "{svg}");
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
