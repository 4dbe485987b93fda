//! `cvmm bench reconfig`: how long the configuration changes of a running virtual server
//! take (docs/bench.md, "Reconfiguration"), with a multi-threaded Linux program busy on
//! every VP.
//!
//! Per fabric, one `cvmm run --api-socket` runs the hotplug test program
//! (`host-vmm/tests/linux/hotplug.c`, built here with `gcc -static`) on 2 nodes x 2 VPs,
//! and `cvmm ctl` makes `cycles` rounds of four changes through the launcher's socket:
//! node 1 from 2 VPs to 1 (phase 1: the VP hands its threads on and parks), back to 2
//! (phase 2), node 1's memory from the boot size to half (the guest gives the pages back)
//! and back. The figure of a change is the `took_ms` the VMM reports: from the request
//! reaching the node to the last acknowledgement of the guest, so process start-up of
//! `cvmm ctl` is not in it. At the end the program's output must equal a native run's;
//! a run whose output differs is reported as failed, not measured.
//!
//! Not measured yet: draining a whole node (its pages move to the others), which the
//! issue's drain-time table needs; that change does not exist yet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::report::median;

/// The program kept busy while the server changes.
pub const SOURCE: &str = include_str!("../../host-vmm/tests/linux/hotplug.c");

/// What `cvmm bench reconfig` was asked for.
#[derive(Clone, Debug)]
pub struct ReconfigOptions {
    /// The `cvmm` binary.
    pub exe: PathBuf,
    /// Rounds of the four changes per fabric.
    pub cycles: u32,
    /// Logical memory per node, in MiB.
    pub mem_mib: u64,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigError {
    /// gcc failed.
    #[error("cannot build the program with gcc -static (scripts/ensure-deps.sh installs gcc and libc6-dev): {0}")]
    Build(String),
    /// A temporary directory or file could not be made.
    #[error("cannot prepare a run: {0}")]
    Io(#[from] std::io::Error),
}

/// One kind of change on one fabric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReconfigRow {
    /// `software` or `offload`.
    pub fabric: &'static str,
    /// What changed.
    pub change: &'static str,
    /// Changes measured.
    pub count: usize,
    /// Median `took_ms`.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank) of `took_ms`.
    pub p99_ms: f64,
    /// Largest `took_ms`.
    pub max_ms: f64,
}

/// A fabric whose run did not give figures, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailedFabric {
    /// The fabric.
    pub fabric: &'static str,
    /// What went wrong.
    pub reason: String,
}

/// The benchmark's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReconfigReport {
    /// The command's options: cycles, memory per node.
    pub cycles: u32,
    /// MiB per node.
    pub mem_mib: u64,
    /// One row per fabric and change.
    pub rows: Vec<ReconfigRow>,
    /// Fabrics that did not run to the end.
    pub failed: Vec<FailedFabric>,
}

/// The changes of one round, in order: label, `cvmm ctl` arguments (after the socket).
fn round(mem_mib: u64) -> [(&'static str, Vec<String>); 4] {
    let s = |v: &str| v.to_string();
    [
        ("vp_remove", vec![s("vps"), s("1"), s("--node"), s("1")]),
        ("vp_add", vec![s("vps"), s("2"), s("--node"), s("1")]),
        (
            "memory_shrink",
            vec![s("memory"), (mem_mib / 2).to_string(), s("--node"), s("1")],
        ),
        (
            "memory_grow",
            vec![s("memory"), mem_mib.to_string(), s("--node"), s("1")],
        ),
    ]
}

/// The `q`-quantile of `values` by nearest rank (`None` when empty).
pub fn nearest_rank(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    // The smallest rank r with r >= q * n (at least 1).
    let n = sorted.len();
    let rank = (1..=n).find(|r| *r as f64 >= q * n as f64).unwrap_or(n);
    Some(sorted[rank - 1])
}

fn build(dir: &Path) -> Result<PathBuf, ReconfigError> {
    super::linux::build_static(dir, "hotplug", SOURCE).map_err(ReconfigError::Build)
}

/// Runs the benchmark, printing a progress line per fabric to `progress`.
pub fn reconfig_bench(
    options: &ReconfigOptions,
    progress: &mut dyn Write,
) -> Result<ReconfigReport, ReconfigError> {
    let dir = std::env::temp_dir().join(format!("cvmm-bench-reconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let program = build(&dir)?;
    let native = Command::new(&program).stdin(Stdio::null()).output()?;
    let mut report = ReconfigReport {
        cycles: options.cycles,
        mem_mib: options.mem_mib,
        rows: Vec::new(),
        failed: Vec::new(),
    };
    for fabric in ["software", "offload"] {
        let _ = writeln!(
            progress,
            "cvmm bench reconfig: {fabric}, {} rounds",
            options.cycles
        );
        match run_fabric(options, &dir, &program, fabric, &native.stdout) {
            Ok(times) => {
                for (change, values) in times {
                    report.rows.push(ReconfigRow {
                        fabric,
                        change,
                        count: values.len(),
                        p50_ms: median(&values).unwrap_or(f64::NAN),
                        p99_ms: nearest_rank(&values, 0.99).unwrap_or(f64::NAN),
                        max_ms: values.iter().copied().fold(f64::NAN, f64::max),
                    });
                }
            }
            Err(reason) => report.failed.push(FailedFabric { fabric, reason }),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// One fabric's run: the `took_ms` of each change, by change, in round order.
fn run_fabric(
    options: &ReconfigOptions,
    dir: &Path,
    program: &Path,
    fabric: &str,
    native_stdout: &[u8],
) -> Result<Vec<(&'static str, Vec<f64>)>, String> {
    let socket = dir.join(format!("{fabric}.sock"));
    let mut child = Command::new(&options.exe)
        .args([
            "run",
            "--nodes",
            "2",
            "--vps-per-node",
            "2",
            "--fabric",
            fabric,
        ])
        .args(["--mem-mib", &options.mem_mib.to_string(), "--api-socket"])
        .arg(&socket)
        .arg("--")
        .arg(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start cvmm: {e}"))?;
    let ctl = |args: &[String]| -> Result<serde_json::Value, String> {
        let out = Command::new(&options.exe)
            .args(["ctl", "--api-socket"])
            .arg(&socket)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run cvmm ctl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "cvmm ctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_str(&text).map_err(|e| format!("cvmm ctl answered {text:?}: {e}"))
    };
    let result = (|| {
        // Both nodes up: status answers with two active nodes.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = ctl(&["status".into()]).ok().is_some_and(|s| {
                s["nodes"]
                    .as_array()
                    .is_some_and(|n| n.iter().filter(|n| n["state"] == "active").count() == 2)
            });
            if up {
                break;
            }
            if Instant::now() > deadline {
                return Err("the server did not come up within 60 s".to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let changes = round(options.mem_mib);
        let mut times: Vec<(&'static str, Vec<f64>)> = changes
            .iter()
            .map(|(label, _)| (*label, Vec::new()))
            .collect();
        for _ in 0..options.cycles {
            for (index, (_, args)) in changes.iter().enumerate() {
                let done = ctl(args)?;
                let took = done["took_ms"]
                    .as_f64()
                    .ok_or_else(|| format!("no took_ms in {done}"))?;
                times[index].1.push(took);
                // Let the threads spread over the VPs again before the next change.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(times)
    })();
    // End of input: the program finishes and prints its checksum.
    drop(child.stdin.take());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cvmm did not end: {e}"))?;
    let times = result?;
    if !out.status.success() || out.stdout != native_stdout {
        return Err(format!(
            "the program's output differs from the native run's ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(times)
}

/// The report as a Markdown table.
pub fn table(report: &ReconfigReport) -> String {
    let mut out = String::from(
        "| fabric | change | changes | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n",
    );
    for row in &report.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} |\n",
            row.fabric, row.change, row.count, row.p50_ms, row.p99_ms, row.max_ms
        ));
    }
    for failed in &report.failed {
        out.push_str(&format!(
            "\n{}: not measured: {}\n",
            failed.fabric, failed.reason
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_the_ranked_value() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 0.99), Some(99.0));
        assert_eq!(nearest_rank(&values, 0.5), Some(50.0));
        assert_eq!(nearest_rank(&[3.0, 1.0, 2.0], 0.99), Some(3.0));
        assert_eq!(nearest_rank(&[7.0], 0.0), Some(7.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn a_round_is_the_four_changes_of_node_1() {
        let changes = round(64);
        let labels: Vec<&str> = changes.iter().map(|(l, _)| *l).collect();
        assert_eq!(
            labels,
            ["vp_remove", "vp_add", "memory_shrink", "memory_grow"]
        );
        assert_eq!(changes[2].1, ["memory", "32", "--node", "1"]);
    }
}
