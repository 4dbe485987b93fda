//! `cvmm bench linux`: what running a Linux program on the virtual server costs, next to
//! the same binary run natively on the same host, in one invocation
//! (docs/bench.md, "Linux programs").
//!
//! One small C program ([`SOURCE`], built here with `gcc -static`) measures one thing per
//! run and prints a `RESULT` line: the null system call, thread create + join, a futex
//! ping-pong between two threads, a multi-threaded computation over each thread's own
//! memory, and threads that rewrite their own memory between barriers (placed by memory
//! weight and by load alone, `cvmm run --placement`). Each case runs `repeat` times; a row is the median of the runs' medians
//! and p99s (per-operation times over 64 batches of a run), with the mean, the ratio to
//! the native row of the same measurement, and for cluster runs the remote faults per
//! operation from `--stats-json`. Runs are interleaved (repeat, then case) so drift on a
//! shared machine hits every case alike.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use super::report::median;

/// The benchmark program.
pub const SOURCE: &str = include_str!("linuxbench.c");

/// What `cvmm bench linux` was asked for.
#[derive(Clone, Debug)]
pub struct LinuxBenchOptions {
    /// The `cvmm` binary.
    pub exe: PathBuf,
    /// Runs per case.
    pub repeat: u32,
    /// Scale of every case's operation count (1.0: the default counts).
    pub scale: f64,
}

/// Where a case runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Shape {
    /// `None`: natively on the host.
    pub nodes: Option<u32>,
    /// VPs per node.
    pub vps_per_node: u32,
    /// `software` or `offload`.
    pub fabric: &'static str,
    /// `cvmm run --placement`: `memory` (the default) or `load`.
    pub placement: &'static str,
}

impl Shape {
    const NATIVE: Shape = Shape {
        nodes: None,
        vps_per_node: 0,
        fabric: "",
        placement: "",
    };

    const fn cvmm(nodes: u32, vps_per_node: u32, fabric: &'static str) -> Shape {
        Shape {
            nodes: Some(nodes),
            vps_per_node,
            fabric,
            placement: "memory",
        }
    }

    /// The same shape with threads placed by load alone.
    const fn by_load(self) -> Shape {
        Shape {
            placement: "load",
            ..self
        }
    }

    fn label(&self) -> String {
        match self.nodes {
            None => "native".into(),
            Some(n) if self.placement == "load" => format!(
                "cvmm {n}x{} {}, placement by load",
                self.vps_per_node, self.fabric
            ),
            Some(n) => format!("cvmm {n}x{} {}", self.vps_per_node, self.fabric),
        }
    }
}

/// One measurement in one place.
#[derive(Clone, Debug, Serialize)]
pub struct Case {
    /// `getpid`, `spawn`, `pingpong`, `compute`.
    pub mode: &'static str,
    /// The program's arguments after the mode.
    pub args: Vec<String>,
    /// Where.
    pub shape: Shape,
}

/// A row of the result.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What was measured.
    pub case: Case,
    /// Runs that produced a result.
    pub runs: usize,
    /// Median per-operation time, ns (median over runs).
    pub median_ns: Option<f64>,
    /// p99 per-operation time, ns (median over runs).
    pub p99_ns: Option<f64>,
    /// Whole-run time per operation, ns (median over runs); for `compute`, the wall time.
    pub mean_ns: Option<f64>,
    /// Remote page faults per operation (cluster runs).
    pub remote_faults_per_op: Option<f64>,
    /// Why runs failed, if they did.
    pub errors: Vec<String>,
}

/// The whole result.
#[derive(Clone, Debug, Serialize)]
pub struct LinuxBenchReport {
    /// Every row, in case order.
    pub rows: Vec<Row>,
}

/// Why the benchmark could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum LinuxBenchError {
    /// The program could not be built.
    #[error("cannot build the benchmark program with gcc -static (scripts/ensure-deps.sh installs gcc and libc6-dev): {0}")]
    Build(String),
    /// The scratch directory could not be made.
    #[error("cannot make a scratch directory: {0}")]
    Scratch(#[source] std::io::Error),
}

fn cases(scale: f64) -> Vec<Case> {
    // Bounded: scale is checked to lie in (0, 100], so the product fits a u64.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = |base: u64| ((base as f64 * scale).round() as u64).max(64).to_string();
    let case = |mode, args: Vec<String>, shape| Case { mode, args, shape };
    let mut all = Vec::new();
    for shape in [Shape::NATIVE, Shape::cvmm(1, 1, "software")] {
        all.push(case("getpid", vec![n(200_000)], shape));
    }
    for shape in [
        Shape::NATIVE,
        Shape::cvmm(1, 1, "software"),
        Shape::cvmm(1, 2, "software"),
    ] {
        all.push(case("spawn", vec![n(256)], shape));
    }
    for shape in [
        Shape::NATIVE,
        Shape::cvmm(1, 1, "software"),
        Shape::cvmm(1, 2, "software"),
    ] {
        all.push(case("pingpong", vec![n(20_000)], shape));
    }
    for shape in [Shape::cvmm(2, 1, "software"), Shape::cvmm(2, 1, "offload")] {
        all.push(case("pingpong", vec![n(640)], shape));
    }
    // 2 MiB per thread read 256 times: ~20 ms of work, so the rows measure the
    // computation and not the cross-node wake-up of the start barrier.
    let passes = n(256);
    let compute = |threads: u32, shape| {
        case(
            "compute",
            vec![threads.to_string(), "512".into(), passes.clone()],
            shape,
        )
    };
    all.push(compute(1, Shape::NATIVE));
    all.push(compute(2, Shape::NATIVE));
    all.push(compute(1, Shape::cvmm(1, 1, "software")));
    all.push(compute(2, Shape::cvmm(1, 2, "software")));
    all.push(compute(2, Shape::cvmm(2, 1, "software")));
    all.push(compute(4, Shape::cvmm(4, 1, "software")));
    all.push(compute(2, Shape::cvmm(2, 1, "offload")));
    // Placement: more threads than VPs, each rewriting its own 1 MiB between barriers,
    // so threads wake and are stolen across nodes; memory-weighted against load alone.
    let rounds = n(200);
    let phases = |threads: u32, shape| {
        case(
            "phases",
            vec![threads.to_string(), "256".into(), rounds.clone()],
            shape,
        )
    };
    all.push(phases(3, Shape::NATIVE));
    for shape in [Shape::cvmm(2, 1, "software"), Shape::cvmm(4, 1, "software")] {
        let threads = if shape.nodes == Some(2) { 3 } else { 6 };
        all.push(phases(threads, shape.clone()));
        all.push(phases(threads, shape.by_load()));
    }
    all.push(phases(3, Shape::cvmm(2, 1, "offload")));
    all.push(phases(3, Shape::cvmm(2, 1, "offload").by_load()));
    all
}

/// Builds the program into `dir`.
fn build(dir: &Path) -> Result<PathBuf, LinuxBenchError> {
    build_static(dir, "linuxbench", SOURCE).map_err(LinuxBenchError::Build)
}

/// Writes C `source` to `dir/NAME.c` and builds it with `gcc -static -O2 -pthread`
/// into `dir/NAME`; the error is gcc's message (or why it could not run).
pub fn build_static(dir: &Path, name: &str, source: &str) -> Result<PathBuf, String> {
    let src = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&src, source).map_err(|e| e.to_string())?;
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(bin)
}

/// One run's numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sample {
    ops: f64,
    median_ns: f64,
    p99_ns: f64,
    wall_ns: f64,
    remote_faults: Option<f64>,
}

/// Reads the `RESULT` line.
fn parse_result(stdout: &str) -> Option<Sample> {
    let line = stdout.lines().find(|l| l.starts_with("RESULT "))?;
    let field = |name: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some(Sample {
        ops: field("ops")?,
        median_ns: field("median_ns")?,
        p99_ns: field("p99_ns")?,
        wall_ns: field("wall_ns")?,
        remote_faults: None,
    })
}

/// Remote read and write faults of every node in a `--stats-json` file.
fn remote_faults(stats: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(stats).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let nodes = json.get("nodes")?.as_array()?;
    let sum: u64 = nodes
        .iter()
        .map(|n| {
            ["remote_read_faults", "remote_write_faults", "upgrades"]
                .iter()
                .filter_map(|k| n.get(*k).and_then(serde_json::Value::as_u64))
                .sum::<u64>()
        })
        .sum();
    Some(sum as f64)
}

fn run_case(exe: &Path, bin: &Path, case: &Case, scratch: &Path) -> Result<Sample, String> {
    let stats = scratch.join("stats.json");
    let _ = std::fs::remove_file(&stats);
    let mut command = match case.shape.nodes {
        None => Command::new(bin),
        Some(nodes) => {
            let mut c = Command::new(exe);
            c.arg("run")
                .args(["--nodes", &nodes.to_string()])
                .args(["--vps-per-node", &case.shape.vps_per_node.to_string()])
                .args(["--mem-mib", "256", "--fabric", case.shape.fabric])
                .args(["--placement", case.shape.placement])
                .arg("--stats-json")
                .arg(&stats)
                .arg("--")
                .arg(bin);
            c
        }
    };
    command.arg(case.mode).args(&case.args);
    let out = command.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{} exited with {:?}: {}",
            case.shape.label(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut sample = parse_result(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| "no RESULT line".to_string())?;
    if case.shape.nodes.is_some() {
        sample.remote_faults = remote_faults(&stats);
    }
    Ok(sample)
}

/// Runs every case `repeat` times, interleaved, printing progress to `log`.
pub fn linux_bench(
    options: &LinuxBenchOptions,
    log: &mut dyn std::io::Write,
) -> Result<LinuxBenchReport, LinuxBenchError> {
    let scratch = std::env::temp_dir().join(format!("cvmm-bench-linux-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(LinuxBenchError::Scratch)?;
    let built = build(&scratch);
    let bin = match built {
        Ok(bin) => bin,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
    };
    let cases = cases(options.scale);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cases.len()];
    let mut errors: Vec<Vec<String>> = vec![Vec::new(); cases.len()];
    for round in 0..options.repeat.max(1) {
        for (i, case) in cases.iter().enumerate() {
            let _ = writeln!(
                log,
                "cvmm bench linux: run {}/{} {} {} on {}",
                round + 1,
                options.repeat,
                case.mode,
                case.args.join(" "),
                case.shape.label()
            );
            match run_case(&options.exe, &bin, case, &scratch) {
                Ok(sample) => samples[i].push(sample),
                Err(e) => errors[i].push(e),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let rows = cases
        .into_iter()
        .zip(samples.iter().zip(errors))
        .map(|(case, (runs, errors))| {
            let pick = |f: fn(&Sample) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
            let compute = case.mode == "compute";
            Row {
                runs: runs.len(),
                median_ns: pick(|s| s.median_ns),
                p99_ns: pick(|s| s.p99_ns),
                mean_ns: if compute {
                    pick(|s| s.wall_ns)
                } else {
                    pick(|s| s.wall_ns / s.ops.max(1.0))
                },
                remote_faults_per_op: median(
                    &runs
                        .iter()
                        .filter_map(|s| s.remote_faults.map(|f| f / s.ops.max(1.0)))
                        .collect::<Vec<_>>(),
                ),
                errors,
                case,
            }
        })
        .collect();
    Ok(LinuxBenchReport { rows })
}

fn fmt_ns(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(ns) if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        Some(ns) if ns >= 1e4 => format!("{:.1} us", ns / 1e3),
        Some(ns) => format!("{ns:.0} ns"),
    }
}

/// The report as a Markdown table: per-operation medians and p99 with the ratio to the
/// native row of the same measurement; for `compute`, the wall time and the speed-up
/// (work done per time) over the one-VP cvmm row.
pub fn table(report: &LinuxBenchReport) -> String {
    let mut out = String::from(
        "| measurement | where | runs | median | p99 | mean | vs native | remote faults/op |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let native_of = |row: &Row| {
        report
            .rows
            .iter()
            .find(|r| {
                r.case.mode == row.case.mode
                    && r.case.shape.nodes.is_none()
                    && (row.case.mode != "compute" || r.case.args == row.case.args)
            })
            .and_then(|r| {
                if row.case.mode == "compute" {
                    r.mean_ns
                } else {
                    r.median_ns
                }
            })
    };
    let base_compute = report
        .rows
        .iter()
        .find(|r| r.case.mode == "compute" && r.case.shape == Shape::cvmm(1, 1, "software"))
        .and_then(|r| r.mean_ns);
    for row in &report.rows {
        let compute = row.case.mode == "compute";
        let mine = if compute { row.mean_ns } else { row.median_ns };
        let ratio = match (mine, native_of(row)) {
            (Some(m), Some(n)) if n > 0.0 && row.case.shape.nodes.is_some() => {
                format!("{:.2}x", m / n)
            }
            _ => "-".into(),
        };
        let what = if compute {
            let threads: f64 = row.case.args[0].parse().unwrap_or(1.0);
            let speedup = match (base_compute, row.mean_ns) {
                (Some(b), Some(w)) if w > 0.0 && row.case.shape.nodes.is_some() => {
                    format!(", speed-up {:.2}", threads * b / w)
                }
                _ => String::new(),
            };
            format!("compute, {} threads{speedup}", row.case.args[0])
        } else {
            format!("{} x{}", row.case.mode, row.case.args.join(" "))
        };
        let faults = row
            .remote_faults_per_op
            .map_or("-".into(), |f| format!("{f:.3}"));
        out.push_str(&format!(
            "| {what} | {} | {} | {} | {} | {} | {ratio} | {faults} |\n",
            row.case.shape.label(),
            row.runs,
            if compute {
                "-".into()
            } else {
                fmt_ns(row.median_ns)
            },
            if compute {
                "-".into()
            } else {
                fmt_ns(row.p99_ns)
            },
            fmt_ns(row.mean_ns),
        ));
        for e in &row.errors {
            out.push_str(&format!(
                "|  | failed: {} |  |  |  |  |  |  |\n",
                e.replace('|', "/")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_parse() {
        let s = parse_result("checksum 5\nRESULT mode=getpid ops=1000 median_ns=74.3 p99_ns=208.3 wall_ns=18295369\n")
            .unwrap();
        assert_eq!(s.ops, 1000.0);
        assert_eq!(s.median_ns, 74.3);
        assert_eq!(s.p99_ns, 208.3);
        assert_eq!(s.wall_ns, 18_295_369.0);
        assert!(parse_result("RESULT mode=x ops=1").is_none());
        assert!(parse_result("nothing").is_none());
    }

    #[test]
    fn every_measurement_has_a_native_row_to_compare_with() {
        let all = cases(1.0);
        for mode in ["getpid", "spawn", "pingpong", "compute", "phases"] {
            assert!(
                all.iter()
                    .any(|c| c.mode == mode && c.shape.nodes.is_none()),
                "{mode}"
            );
        }
        assert!(all
            .iter()
            .any(|c| c.shape == Shape::cvmm(1, 1, "software") && c.mode == "compute"));
    }
}
