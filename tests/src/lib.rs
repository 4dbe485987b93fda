//! Whole-cluster integration tests of cvmm: they start real `cvmm` processes (one per
//! node) and check what the guest prints against values computed here, independently of
//! the guest. The tests live in `tests/tests/`; this library holds what they share.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `cvmm` binary of this workspace, built on first use if the test run did not build
/// it (`cargo test -p tests` alone).
pub fn cvmm_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // current_exe is target/<profile>/deps/<test>-<hash>.
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target/<profile>")
            .to_path_buf();
        let bin = profile_dir.join("cvmm");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "host-vmm", "--bin", "cvmm"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building cvmm failed");
        assert!(bin.exists(), "cvmm not found at {}", bin.display());
        bin
    })
    .clone()
}

/// Pids of the `cvmm node` children of `parent` with their node ids.
pub fn node_children(parent: u32) -> Vec<(u32, u32)> {
    let out = Command::new("ps")
        .args(["-o", "pid=,args=", "--ppid", &parent.to_string()])
        .output()
        .expect("ps runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let pid: u32 = words.next()?.parse().ok()?;
            let args: Vec<&str> = words.collect();
            let at = args.iter().position(|w| *w == "--id")?;
            Some((pid, args.get(at + 1)?.parse().ok()?))
        })
        .collect()
}

/// What one `cvmm run` printed.
#[derive(Debug)]
pub struct Run {
    /// Exit status (-1 if killed).
    pub code: i32,
    /// Console lines with the `[nN] ` node tag removed.
    pub lines: Vec<String>,
    /// Standard error.
    pub stderr: String,
    /// The `--stats-json` document.
    pub stats: serde_json::Value,
}

impl Run {
    /// Asserts a clean run: exit 0, the console line `want`, and no node process that
    /// died of a signal (even after the result was printed: a node that crashes while
    /// it shuts down loses its statistics).
    pub fn check(&self, want: &str) {
        assert_eq!(
            self.code, 0,
            "exit {}\n{:?}\n{}",
            self.code, self.lines, self.stderr
        );
        assert!(
            self.has_line(want),
            "no line {want:?} in {:?}\n{}",
            self.lines,
            self.stderr
        );
        assert!(
            !self.stderr.contains("was killed by signal"),
            "a node died\n{}",
            self.stderr
        );
    }

    /// True when a console line equals `want`.
    pub fn has_line(&self, want: &str) -> bool {
        self.lines.iter().any(|l| l == want)
    }

    /// A counter of node `id` (0 when absent).
    pub fn node_counter(&self, id: u64, key: &str) -> u64 {
        self.stats["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"].as_u64() == Some(id)))
            .and_then(|n| n[key].as_u64())
            .unwrap_or(0)
    }

    /// Console lines that start with `prefix`.
    pub fn lines_starting(&self, prefix: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .map(String::as_str)
            .collect()
    }

    /// Sum of a per-node counter over all nodes.
    pub fn total(&self, key: &str) -> u64 {
        self.stats["nodes"]
            .as_array()
            .map(|nodes| nodes.iter().filter_map(|n| n[key].as_u64()).sum())
            .unwrap_or(0)
    }
}

/// Strips a leading `[nN] ` node tag.
pub fn untag(line: &str) -> &str {
    if line.starts_with("[n") {
        if let Some(end) = line.find("] ") {
            return &line[end + 2..];
        }
    }
    line
}

/// Runs `cvmm run` with `flags` and the workload; collects output and statistics.
pub fn cvmm_run(flags: &[&str], workload: &[&str]) -> Run {
    let stats_path = std::env::temp_dir().join(format!(
        "cvmm-test-{}-{}.json",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let out: Output = Command::new(cvmm_bin())
        .arg("run")
        .args(flags)
        .arg("--stats-json")
        .arg(&stats_path)
        .arg("--")
        .args(workload)
        .output()
        .expect("cvmm runs");
    let stats = std::fs::read_to_string(&stats_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    let _ = std::fs::remove_file(&stats_path);
    Run {
        code: out.status.code().unwrap_or(-1),
        lines: String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| untag(l).to_string())
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stats,
    }
}

/// The matmul checksum, computed directly.
pub fn matmul_reference(n: u64) -> u64 {
    let a = |i: u64, j: u64| (i * 31 + j * 17) % 101;
    let b = |i: u64, j: u64| (i * 7 + j * 13) % 97;
    let mut sum = 0u64;
    for i in 0..n {
        for j in 0..n {
            let c = (0..n).fold(0u64, |acc, k| {
                acc.wrapping_add(a(i, k).wrapping_mul(b(k, j)))
            });
            sum = sum.wrapping_add(c.wrapping_mul(i + 2 * j + 1));
        }
    }
    sum
}

/// The sort checksum, computed directly.
pub fn sort_reference(n: usize) -> u64 {
    let mut x: u64 = 88172645463325252;
    let mut values: Vec<u64> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect();
    values.sort_unstable();
    values.iter().enumerate().fold(0u64, |acc, (i, v)| {
        acc.wrapping_add(v.wrapping_mul(i as u64 + 1))
    })
}

/// The run directory (`cvmm-run-PID-N` in the temp directory) of the `cvmm run` process
/// `launcher`, once it exists: the newest (highest N) of that pid, since a killed run
/// leaves its directory behind and pids come back.
pub fn run_dir(launcher: u32) -> Option<PathBuf> {
    let prefix = format!("cvmm-run-{launcher}-");
    std::fs::read_dir(std::env::temp_dir())
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let n: u32 = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, name))
        })
        .max()
        .map(|(_, name)| std::env::temp_dir().join(name))
}

/// What the command lines of a run's node processes contain: the start of its run
/// directory's name.
pub fn run_dir_mark(launcher: u32) -> String {
    format!("cvmm-run-{launcher}-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_match_the_specification() {
        assert_eq!(matmul_reference(64), 60153385783);
        assert_eq!(sort_reference(1000), 8247610901320931311);
    }

    #[test]
    fn untag_strips_only_node_tags() {
        assert_eq!(untag("[n3] counter = 4"), "counter = 4");
        assert_eq!(untag("counter = 4"), "counter = 4");
        assert_eq!(untag("[nothing"), "[nothing");
    }
}
