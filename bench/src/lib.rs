//! `cvmm bench fault-latency`: the guest fault-latency probe on every data path this
//! `cvmm` offers, in one invocation, with medians across repeats, ratios to software/udp,
//! serving-node CPU per fault, a JSON document and an SVG chart; and `cvmm bench linux`
//! ([`linux`]) and `cvmm bench reconfig` ([`reconfig`]).
//!
//! A crate of its own: it drives `cvmm` from outside, as a user would (child processes,
//! their output and `/proc`), and needs nothing of the VMM's insides. `cvmm bench` is its
//! command line.
//!
//! Design rules:
//! - The measurement is the guest's (`probe KIND PAGES [SHARERS]`, see
//!   `guest/src/kernel/workloads/probe.rs`): rdtsc around one access, end to end. The host
//!   adds what only it can see: the fetch service time from the nodes' statistics and the
//!   serving nodes' CPU time from `/proc`, sampled at the probe's phase lines.
//! - Clusters are started through `cvmm run` as a child process, with only flags that
//!   `cvmm run --help` lists; a path whose flags are missing is skipped with the reason.
//! - Paths are interleaved (repeat, then kind, then path), so drift on a shared machine
//!   hits every path alike and ratios compare runs taken close together.
//! - Predicted numbers (the FPGA model) live in `rows_modeled`, never among measured rows
//!   ([`modeled`]).
//!
//! ```no_run
//! use cvmm_bench::{fault_latency, FaultLatencyOptions};
//! let options = FaultLatencyOptions::new(std::env::current_exe()?, 2, 20, 1);
//! let report = fault_latency(&options, &mut std::io::stderr())?;
//! println!("{}", cvmm_bench::report::table(&report));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

pub mod cpu;
pub mod linux;
pub mod modeled;
pub mod parse;
pub mod plot;
pub mod reconfig;
pub mod report;
pub mod runner;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use parse::{DataPath, ProbeCase, RunOptions};
use report::{BenchReport, FailedRun, Method, RunSample, SkippedPath};
use runner::{run_probe, RunSpec};

/// What `cvmm bench fault-latency` was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultLatencyOptions {
    /// The `cvmm` binary to run clusters with.
    pub exe: PathBuf,
    /// Nodes (one VP each).
    pub nodes: u32,
    /// Pages per run.
    pub pages: u64,
    /// Runs per path and kind.
    pub repeat: u32,
    /// Logical memory per node, MiB.
    pub mem_mib: u64,
    /// Longest one run may take.
    pub run_timeout: Duration,
    /// Only these paths (`software/udp`, ...); all when empty.
    pub only_paths: Vec<String>,
}

impl FaultLatencyOptions {
    /// Defaults for everything but the shape.
    pub fn new(exe: PathBuf, nodes: u32, pages: u64, repeat: u32) -> Self {
        Self {
            exe,
            nodes,
            pages,
            repeat,
            mem_mib: 64,
            run_timeout: Duration::from_secs(120),
            only_paths: Vec::new(),
        }
    }
}

/// Why the benchmark could not run at all (single runs that fail are reported in the
/// result instead).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// `cvmm run --help` could not be run.
    #[error("Failed to run {exe} run --help")]
    Help {
        /// The binary.
        exe: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The shape is unusable.
    #[error("Invalid benchmark: {0}")]
    Shape(String),
}

/// Asks `cvmm run --help` which paths exist.
pub fn probe_run_options(exe: &PathBuf) -> Result<RunOptions, BenchError> {
    let output = Command::new(exe)
        .args(["run", "--help"])
        .output()
        .map_err(|source| BenchError::Help {
            exe: exe.display().to_string(),
            source,
        })?;
    Ok(parse::run_options(&String::from_utf8_lossy(&output.stdout)))
}

/// Runs the benchmark; progress lines go to `progress`.
pub fn fault_latency(
    options: &FaultLatencyOptions,
    progress: &mut dyn Write,
) -> Result<BenchReport, BenchError> {
    if options.nodes == 0 || options.pages == 0 || options.repeat == 0 {
        return Err(BenchError::Shape(
            "nodes, pages and repeat must all be at least 1".into(),
        ));
    }
    let unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let run_options = probe_run_options(&options.exe)?;
    let mut skipped = Vec::new();
    let mut paths = Vec::new();
    for path in DataPath::ALL {
        let label = path.label();
        let reason = if !options.only_paths.is_empty() && !options.only_paths.contains(&label) {
            Some("not selected with --paths".to_string())
        } else {
            run_options.supports(path).err()
        };
        match reason {
            Some(reason) => {
                let _ = writeln!(progress, "skipping {label}: {reason}");
                skipped.push(SkippedPath {
                    fabric: path.fabric.into(),
                    transport: path.transport.into(),
                    reason,
                });
            }
            None => paths.push(path),
        }
    }
    let cases = parse::cases(options.nodes);
    let total = paths.len() * cases.len() * options.repeat as usize;
    let mut step = 0;
    let mut samples: HashMap<(DataPath, ProbeCase), Vec<RunSample>> = HashMap::new();
    let mut failed_runs = Vec::new();
    let mut disabled: Vec<DataPath> = Vec::new();
    let mut succeeded: Vec<DataPath> = Vec::new();
    for repeat in 1..=options.repeat {
        for case in &cases {
            for path in &paths {
                step += 1;
                if disabled.contains(path) {
                    continue;
                }
                let _ = writeln!(
                    progress,
                    "[{step}/{total}] {} {} run {repeat}/{} ...",
                    path.label(),
                    case.label(),
                    options.repeat
                );
                let spec = RunSpec {
                    exe: options.exe.clone(),
                    path_flags: run_options.flags(*path),
                    nodes: options.nodes,
                    mem_mib: options.mem_mib,
                    pages: options.pages,
                    case: *case,
                    timeout: options.run_timeout,
                };
                let started = Instant::now();
                match run_probe(&spec) {
                    Ok(sample) => {
                        let _ = writeln!(progress, "        {}", describe(&sample, started));
                        samples.entry((*path, *case)).or_default().push(sample);
                        if !succeeded.contains(path) {
                            succeeded.push(*path);
                        }
                    }
                    Err(error) => {
                        // The error and its sources on one line.
                        let error =
                            std::iter::successors(Some(&error as &dyn std::error::Error), |e| {
                                e.source()
                            })
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(": ");
                        let _ = writeln!(progress, "        failed: {error}");
                        // A path whose very first run fails is not usable here (flags
                        // accepted, backend missing): skip the rest of it. The baseline
                        // is never skipped: its ratios anchor everything.
                        if !succeeded.contains(path) && *path != DataPath::SOFTWARE_UDP {
                            disabled.push(*path);
                            skipped.push(SkippedPath {
                                fabric: path.fabric.into(),
                                transport: path.transport.into(),
                                reason: format!("its first run failed: {error}"),
                            });
                        }
                        failed_runs.push(FailedRun {
                            path: path.label(),
                            case: case.label(),
                            repeat,
                            error,
                        });
                    }
                }
            }
        }
    }
    let mut rows = Vec::new();
    for path in &paths {
        for case in &cases {
            let runs = samples.get(&(*path, *case)).map_or(&[][..], Vec::as_slice);
            if let Some(row) = report::aggregate(*path, *case, runs) {
                rows.push(row);
            }
        }
    }
    report::set_ratios(&mut rows);
    let rows_modeled = modeled::modeled_rows(
        modeled::ModelInput {
            nodes: options.nodes,
            pages: options.pages,
        },
        &cases,
    );
    Ok(BenchReport {
        benchmark: "fault-latency",
        unix_time,
        nodes: options.nodes,
        pages: options.pages,
        repeat: options.repeat,
        paths: rows,
        rows_modeled,
        skipped,
        failed_runs,
        method: Method::current(),
    })
}

fn describe(sample: &RunSample, started: Instant) -> String {
    let mut text = format!(
        "p50 {:.1} us p99 {:.1} us",
        sample.line.p50_ns as f64 / 1000.0,
        sample.line.p99_ns as f64 / 1000.0
    );
    if let Some(service) = sample.service {
        text.push_str(&format!(", service p50 {:.1} us", service.p50_us));
    }
    if let Some(ns) = sample.host_serve_ns {
        let per_fault = ns as f64 / 1000.0 / sample.line.count.max(1) as f64;
        text.push_str(&format!(", serving host cpu {per_fault:.1} us/fault"));
    }
    if let Some(ns) = sample.nic_serve_ns {
        let per_fault = ns as f64 / 1000.0 / sample.line.count.max(1) as f64;
        text.push_str(&format!(", nic cpu {per_fault:.1} us/fault"));
    }
    if sample.cpu_sample_late {
        text.push_str(", cpu samples late (dropped)");
    }
    text.push_str(&format!(" ({:.1} s)", started.elapsed().as_secs_f64()));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_shapes_are_refused_before_anything_runs() {
        let options = FaultLatencyOptions::new(PathBuf::from("/nonexistent"), 0, 10, 1);
        let err = fault_latency(&options, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, BenchError::Shape(_)), "{err}");
    }

    #[test]
    fn a_binary_that_cannot_run_is_a_help_error() {
        let options = FaultLatencyOptions::new(PathBuf::from("/nonexistent/cvmm"), 2, 10, 1);
        let err = fault_latency(&options, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, BenchError::Help { .. }), "{err}");
    }

    #[test]
    fn failing_runs_are_reported_not_fatal() {
        // `false run --help` prints nothing: only software/udp, and every run fails.
        let options = FaultLatencyOptions::new(PathBuf::from("false"), 2, 10, 2);
        let mut progress = Vec::new();
        let report = fault_latency(&options, &mut progress).unwrap();
        assert!(report.paths.is_empty());
        // 5 cases on 2 nodes, 2 repeats, one path.
        assert_eq!(report.failed_runs.len(), 10);
        assert_eq!(report.skipped.len(), 3);
        let progress = String::from_utf8(progress).unwrap();
        assert!(
            progress.contains("[1/10] software/udp local run 1/2 ..."),
            "{progress}"
        );
        assert!(progress.contains("[10/10] software/udp invalidate/1 run 2/2 ..."));
        assert!(progress.contains("skipping offload/dpdk"));
    }
}
