//! From runs to rows: medians across repeats, ratios to software/udp, the JSON document
//! and the human table.
//!
//! Every number of a row is the median, across the repeats, of that number in each run
//! (the median of the runs' p50s, of their p99s, ...): a run is one cluster boot, and
//! boots differ more than samples within a run do, so this is robust to one bad boot.

use serde::Serialize;

use super::parse::{DataPath, ProbeCase, ProbeLine, ServiceTime};

/// What one successful probe run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunSample {
    /// The guest's result line.
    pub line: ProbeLine,
    /// Fetch service time on node 0, from the statistics.
    pub service: Option<ServiceTime>,
    /// Serving threads of the serving nodes' host processes, over the timed phase (ns).
    pub host_serve_ns: Option<u64>,
    /// NIC model processes of the serving nodes, over the timed phase (ns).
    pub nic_serve_ns: Option<u64>,
    /// The CPU samples came too late to bracket the timed phase and were dropped.
    pub cpu_sample_late: bool,
}

/// One measured row: a path and a kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PathRow {
    /// `software` or `offload`.
    pub fabric: String,
    /// `udp` or `dpdk`.
    pub transport: String,
    /// `local`, `read_miss`, `write_miss`, `upgrade` or `invalidate`.
    pub kind: String,
    /// Sharers invalidated per write (`invalidate`), else 0.
    pub sharers: u32,
    /// End to end (guest access to resume): median over repeats of each run's p50.
    pub p50_us: f64,
    /// The same for p99.
    pub p99_us: f64,
    /// The same for the mean.
    pub mean_us: f64,
    /// The same for the maximum.
    pub max_us: f64,
    /// Samples per run (the probe's pages).
    pub count: u64,
    /// Runs that produced a result.
    pub repeats: u32,
    /// Fetch service time on the faulting node (fault event to page ready), p50.
    pub service_p50_us: Option<f64>,
    /// The same, p99.
    pub service_p99_us: Option<f64>,
    /// Faults behind the service numbers in one run (the probe's plus a few of the run's
    /// own barriers and console).
    pub service_count: Option<u64>,
    /// Host CPU time on the serving node(s), serving threads only, over the timed phase,
    /// divided by the faults timed.
    pub host_serve_cpu_us_per_fault: Option<f64>,
    /// CPU time of the serving nodes' NIC model processes, per fault (offload path).
    pub nic_serve_cpu_us_per_fault: Option<f64>,
    /// `p50_us` over software/udp's `p50_us` for the same kind in this benchmark run.
    pub ratio_to_software_udp: Option<f64>,
    /// `service_p50_us` over software/udp's.
    pub service_ratio_to_software_udp: Option<f64>,
}

impl PathRow {
    /// `software/udp`.
    pub fn path_label(&self) -> String {
        format!("{}/{}", self.fabric, self.transport)
    }

    /// `read_miss` or `invalidate/2`.
    pub fn case_label(&self) -> String {
        if self.kind == "invalidate" {
            format!("invalidate/{}", self.sharers)
        } else {
            self.kind.clone()
        }
    }
}

/// A row of the FPGA latency model: predicted, never measured, and kept apart from the
/// measured rows (see [`super::modeled`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModeledRow {
    /// Always `fpga (modeled)`.
    pub label: String,
    /// As in [`PathRow::kind`].
    pub kind: String,
    /// As in [`PathRow::sharers`].
    pub sharers: u32,
    /// Predicted fetch service time, p50.
    pub service_p50_us: f64,
    /// Where the number comes from (model and parameters).
    pub source: String,
}

/// A path that was not measured, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SkippedPath {
    /// `software` or `offload`.
    pub fabric: String,
    /// `udp` or `dpdk`.
    pub transport: String,
    /// Why.
    pub reason: String,
}

/// A run that produced no result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailedRun {
    /// `software/udp`.
    pub path: String,
    /// `read_miss`, `invalidate/2`.
    pub case: String,
    /// 1-based repeat.
    pub repeat: u32,
    /// What went wrong.
    pub error: String,
}

/// How the numbers were taken, for whoever reads the JSON later.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Method {
    /// End-to-end numbers.
    pub end_to_end: &'static str,
    /// Service numbers.
    pub service: &'static str,
    /// CPU numbers.
    pub host_serve_cpu: &'static str,
    /// Aggregation.
    pub aggregation: &'static str,
}

impl Method {
    /// The method of this implementation.
    pub const fn current() -> Self {
        Self {
            end_to_end: "guest rdtsc around one load/store per page (interrupts masked), \
                         tsc_khz from the configuration; VP 0 on node 0",
            service: "node 0's --stats-json: fault_latency_by_kind_us (invalidate = the \
                      home's upgrade); none for local faults (no fetch)",
            host_serve_cpu: "sum of /proc/<pid>/task/*/schedstat run time of the serving \
                             nodes' cvmm node threads except vpN and timers, between the \
                             guest's probe-phase begin/end lines (20 ms settle after each), \
                             divided by the faults timed",
            aggregation: "median across repeats of each run's statistic",
        }
    }
}

/// The whole benchmark result (the `--json` document).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    /// `fault-latency`.
    pub benchmark: &'static str,
    /// Seconds since the Unix epoch when the benchmark started.
    pub unix_time: u64,
    /// Nodes per cluster (one VP each).
    pub nodes: u32,
    /// Pages per probe run.
    pub pages: u64,
    /// Runs per path and kind.
    pub repeat: u32,
    /// Measured rows.
    pub paths: Vec<PathRow>,
    /// Modeled rows (FPGA latency model), never mixed with `paths`.
    pub rows_modeled: Vec<ModeledRow>,
    /// Paths not measured.
    pub skipped: Vec<SkippedPath>,
    /// Runs without a result.
    pub failed_runs: Vec<FailedRun>,
    /// How the numbers were taken.
    pub method: Method,
}

/// The median (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

fn median_of<T>(samples: &[RunSample], get: impl Fn(&RunSample) -> Option<T>) -> Option<f64>
where
    T: Into<f64>,
{
    let values: Vec<f64> = samples
        .iter()
        .filter_map(|s| get(s).map(Into::into))
        .collect();
    median(&values)
}

/// The lower median of whole numbers (a count stays a count).
fn lower_median(values: impl Iterator<Item = u64>) -> Option<u64> {
    let mut sorted: Vec<u64> = values.collect();
    sorted.sort_unstable();
    let mid = sorted.len().checked_sub(1)? / 2;
    sorted.get(mid).copied()
}

fn ns_to_us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The row of `path` and `case` from its successful runs; `None` without any.
pub fn aggregate(path: DataPath, case: ProbeCase, samples: &[RunSample]) -> Option<PathRow> {
    let first = samples.first()?;
    let per_fault = |ns: u64, s: &RunSample| ns_to_us(ns) / s.line.count.max(1) as f64;
    Some(PathRow {
        fabric: path.fabric.to_string(),
        transport: path.transport.to_string(),
        kind: case.kind.name().to_string(),
        sharers: case.sharers,
        p50_us: median_of(samples, |s| Some(ns_to_us(s.line.p50_ns)))?,
        p99_us: median_of(samples, |s| Some(ns_to_us(s.line.p99_ns)))?,
        mean_us: median_of(samples, |s| Some(ns_to_us(s.line.mean_ns)))?,
        max_us: median_of(samples, |s| Some(ns_to_us(s.line.max_ns)))?,
        count: first.line.count,
        repeats: u32::try_from(samples.len()).unwrap_or(u32::MAX),
        service_p50_us: median_of(samples, |s| s.service.map(|t| t.p50_us)),
        service_p99_us: median_of(samples, |s| s.service.map(|t| t.p99_us)),
        service_count: lower_median(samples.iter().filter_map(|s| s.service.map(|t| t.count))),
        host_serve_cpu_us_per_fault: median_of(samples, |s| {
            s.host_serve_ns.map(|ns| per_fault(ns, s))
        }),
        nic_serve_cpu_us_per_fault: median_of(samples, |s| {
            s.nic_serve_ns.map(|ns| per_fault(ns, s))
        }),
        ratio_to_software_udp: None,
        service_ratio_to_software_udp: None,
    })
}

fn ratio(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => Some(v / b),
        _ => None,
    }
}

/// Fills the ratios of every row against the software/udp row of the same case.
pub fn set_ratios(rows: &mut [PathRow]) {
    let base = DataPath::SOFTWARE_UDP;
    let bases: Vec<(String, u32, f64, Option<f64>)> = rows
        .iter()
        .filter(|r| r.fabric == base.fabric && r.transport == base.transport)
        .map(|r| (r.kind.clone(), r.sharers, r.p50_us, r.service_p50_us))
        .collect();
    for row in rows.iter_mut() {
        let found = bases
            .iter()
            .find(|(kind, sharers, _, _)| *kind == row.kind && *sharers == row.sharers);
        row.ratio_to_software_udp = ratio(Some(row.p50_us), found.map(|b| b.2));
        row.service_ratio_to_software_udp = ratio(row.service_p50_us, found.and_then(|b| b.3));
    }
}

fn cell(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

/// The human table: one line per measured row, then the modeled rows apart.
pub fn table(report: &BenchReport) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<14} {:<13} {:>8} {:>8} {:>8} {:>5} {:>8} {:>8} {:>9} {:>9} {:>6} {:>6}",
        "path",
        "kind",
        "p50 us",
        "p99 us",
        "mean us",
        "n",
        "svc p50",
        "svc p99",
        "host cpu",
        "nic cpu",
        "ratio",
        "svc r"
    );
    out.push_str(&header);
    out.push('\n');
    out.push_str(&"-".repeat(header.len()));
    out.push('\n');
    for row in &report.paths {
        out.push_str(&format!(
            "{:<14} {:<13} {:>8.1} {:>8.1} {:>8.1} {:>5} {:>8} {:>8} {:>9} {:>9} {:>6} {:>6}\n",
            row.path_label(),
            row.case_label(),
            row.p50_us,
            row.p99_us,
            row.mean_us,
            row.count,
            cell(row.service_p50_us, 1),
            cell(row.service_p99_us, 1),
            cell(row.host_serve_cpu_us_per_fault, 1),
            cell(row.nic_serve_cpu_us_per_fault, 1),
            cell(row.ratio_to_software_udp, 2),
            cell(row.service_ratio_to_software_udp, 2),
        ));
    }
    for row in &report.rows_modeled {
        let case = if row.kind == "invalidate" {
            format!("invalidate/{}", row.sharers)
        } else {
            row.kind.clone()
        };
        out.push_str(&format!(
            "{:<14} {:<13} {:>8} {:>8} {:>8} {:>5} {:>8.1}   ({})\n",
            row.label, case, "-", "-", "-", "-", row.service_p50_us, row.source
        ));
    }
    for skipped in &report.skipped {
        out.push_str(&format!(
            "skipped {}/{}: {}\n",
            skipped.fabric, skipped.transport, skipped.reason
        ));
    }
    for failed in &report.failed_runs {
        out.push_str(&format!(
            "failed {} {} run {}: {}\n",
            failed.path, failed.case, failed.repeat, failed.error
        ));
    }
    out.push_str(
        "p50/p99/mean: end to end in the guest (access to resume), median over repeats; \
         svc: fetch service time on node 0; host cpu: us of serving-node host CPU per \
         fault; nic cpu: the same for NIC model processes; ratio: p50 / software/udp p50.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse::ProbeKind;
    use super::*;

    fn sample(p50_ns: u64, service_p50_us: Option<f64>, host_ns: Option<u64>) -> RunSample {
        RunSample {
            line: ProbeLine {
                case: ProbeCase::plain(ProbeKind::ReadMiss),
                count: 200,
                min_ns: 1,
                p50_ns,
                p99_ns: p50_ns * 3,
                mean_ns: p50_ns + 10,
                max_ns: p50_ns * 10,
            },
            service: service_p50_us.map(|p50_us| ServiceTime {
                p50_us,
                p99_us: p50_us * 2.0,
                count: 205,
            }),
            host_serve_ns: host_ns,
            nic_serve_ns: None,
            cpu_sample_late: false,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
        assert_eq!(lower_median([].into_iter()), None);
        assert_eq!(lower_median([7, 1, 4, 9].into_iter()), Some(4));
        assert_eq!(lower_median([7, 1, 4].into_iter()), Some(4));
    }

    #[test]
    fn aggregation_takes_medians_per_statistic() {
        let case = ProbeCase::plain(ProbeKind::ReadMiss);
        let samples = [
            sample(80_000, Some(60.0), Some(2_000_000)),
            sample(70_000, None, Some(4_000_000)),
            sample(90_000, Some(50.0), None),
        ];
        let row = aggregate(DataPath::SOFTWARE_UDP, case, &samples).unwrap();
        assert_eq!(row.kind, "read_miss");
        assert_eq!(row.p50_us, 80.0);
        assert_eq!(row.p99_us, 240.0);
        assert_eq!(row.mean_us, 80.01);
        assert_eq!(row.max_us, 800.0);
        assert_eq!(row.count, 200);
        assert_eq!(row.repeats, 3);
        // Two runs had service numbers: their median is their mean.
        assert_eq!(row.service_p50_us, Some(55.0));
        assert_eq!(row.service_p99_us, Some(110.0));
        assert_eq!(row.service_count, Some(205));
        // 2 ms and 4 ms over 200 faults: 10 and 20 us per fault, median 15.
        assert_eq!(row.host_serve_cpu_us_per_fault, Some(15.0));
        assert_eq!(row.nic_serve_cpu_us_per_fault, None);
        assert_eq!(aggregate(DataPath::SOFTWARE_UDP, case, &[]), None);
    }

    fn row(path: DataPath, kind: &str, sharers: u32, p50: f64, svc: Option<f64>) -> PathRow {
        let case = ProbeCase {
            kind: ProbeKind::from_name(kind).unwrap(),
            sharers,
        };
        let mut s = sample(1, None, None);
        s.line.case = case;
        let mut row = aggregate(path, case, &[s]).unwrap();
        row.p50_us = p50;
        row.service_p50_us = svc;
        row
    }

    #[test]
    fn ratios_pair_rows_of_the_same_case() {
        let offload = DataPath::ALL[3];
        let mut rows = vec![
            row(DataPath::SOFTWARE_UDP, "read_miss", 0, 100.0, Some(40.0)),
            row(DataPath::SOFTWARE_UDP, "invalidate", 1, 80.0, None),
            row(DataPath::SOFTWARE_UDP, "invalidate", 2, 120.0, Some(0.0)),
            row(offload, "read_miss", 0, 50.0, Some(10.0)),
            row(offload, "invalidate", 2, 90.0, Some(30.0)),
            row(offload, "upgrade", 0, 70.0, Some(30.0)),
        ];
        set_ratios(&mut rows);
        let ratios: Vec<_> = rows.iter().map(|r| r.ratio_to_software_udp).collect();
        assert_eq!(
            ratios,
            [Some(1.0), Some(1.0), Some(1.0), Some(0.5), Some(0.75), None]
        );
        let service: Vec<_> = rows
            .iter()
            .map(|r| r.service_ratio_to_software_udp)
            .collect();
        assert_eq!(service, [Some(1.0), None, None, Some(0.25), None, None]);
    }

    #[test]
    fn json_has_the_documented_keys() {
        let mut rows = vec![row(
            DataPath::SOFTWARE_UDP,
            "read_miss",
            0,
            100.0,
            Some(40.0),
        )];
        set_ratios(&mut rows);
        let report = BenchReport {
            benchmark: "fault-latency",
            unix_time: 1,
            nodes: 2,
            pages: 200,
            repeat: 1,
            paths: rows,
            rows_modeled: vec![ModeledRow {
                label: "fpga (modeled)".into(),
                kind: "read_miss".into(),
                sharers: 0,
                service_p50_us: 2.5,
                source: "test".into(),
            }],
            skipped: vec![],
            failed_runs: vec![],
            method: Method::current(),
        };
        let json = serde_json::to_value(&report).unwrap();
        let row = &json["paths"][0];
        for key in [
            "fabric",
            "transport",
            "kind",
            "p50_us",
            "p99_us",
            "mean_us",
            "service_p50_us",
            "count",
            "host_serve_cpu_us_per_fault",
            "ratio_to_software_udp",
        ] {
            assert!(row.get(key).is_some(), "missing {key} in {row}");
        }
        assert_eq!(row["fabric"], "software");
        assert_eq!(row["ratio_to_software_udp"], 1.0);
        assert_eq!(json["rows_modeled"][0]["label"], "fpga (modeled)");
        let text = table(&report);
        assert!(text.contains("software/udp   read_miss"), "{text}");
        assert!(text.contains("fpga (modeled)"), "{text}");
    }
}
