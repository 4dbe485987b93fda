//! One probe run: `cvmm run` as a child process, its console read line by line while it
//! runs, the serving nodes' CPU time sampled at the guest's phase lines, its statistics
//! read at the end.
//!
//! Why a child process rather than calling the launcher: the bench must not depend on
//! launcher internals that other paths (offload, DPDK) are still changing; the command
//! line is the stable interface, and `--help` says which paths exist.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::cpu::{self, ServeCpu};
use super::parse::{self, Phase, ProbeCase, ProbeLine, ProbeLineError, ServiceTime};
use super::report::RunSample;

/// What one run needs.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The `cvmm` binary.
    pub exe: PathBuf,
    /// `--fabric`/`--transport` flags for the path.
    pub path_flags: Vec<String>,
    /// Nodes.
    pub nodes: u32,
    /// MiB per node.
    pub mem_mib: u64,
    /// Pages to probe.
    pub pages: u64,
    /// What to probe.
    pub case: ProbeCase,
    /// Longest the run may take.
    pub timeout: Duration,
}

/// Why a run gave no result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `cvmm run` could not start.
    #[error("Failed to start {exe}")]
    Spawn {
        /// The binary.
        exe: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The run took too long and was killed.
    #[error("Run did not finish within {0:?} and was killed")]
    TimedOut(Duration),
    /// `cvmm run` failed.
    #[error("cvmm run exited with status {code}: {stderr}")]
    Exit {
        /// Exit status (-1: killed by a signal).
        code: i32,
        /// The end of its standard error.
        stderr: String,
    },
    /// It succeeded without a result line.
    #[error("cvmm run printed no probe result line: {stderr}")]
    NoResult {
        /// The end of its standard error.
        stderr: String,
    },
    /// The result line is malformed.
    #[error("Bad probe result line")]
    BadLine(#[from] ProbeLineError),
    /// The result is for another case or size than asked for.
    #[error("Probe printed {got} with count {count}, expected {want} with count {pages}")]
    WrongResult {
        /// What was asked.
        want: String,
        /// What came.
        got: String,
        /// Pages asked.
        pages: u64,
        /// Count printed.
        count: u64,
    },
}

/// The last `max` characters of `text`, on one line.
fn tail(text: &str, max: usize) -> String {
    let flat: String = text.trim().replace('\n', " | ");
    let skip = flat.chars().count().saturating_sub(max);
    flat.chars().skip(skip).collect()
}

fn stats_path() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("cvmm-bench-{}-{nanos}.json", std::process::id()))
}

/// Latest a CPU sample may complete after its phase line arrived: three quarters of the
/// guest's pause after the line.
const SAMPLE_DEADLINE: Duration = Duration::from_millis(parse::PHASE_SETTLE_MS * 3 / 4);

/// Kills the node (and NIC) processes a hung launcher started, by pid: killing only the
/// launcher would leave them running.
fn kill_tree(launcher: u32) {
    for process in cpu::snapshot(launcher) {
        let Ok(pid) = libc::pid_t::try_from(process.pid) else {
            continue;
        };
        // SAFETY: kill(2) on a pid we just found among our own descendants; it has no
        // memory effects in this process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Runs the probe once.
pub fn run_probe(spec: &RunSpec) -> Result<RunSample, RunError> {
    let stats = stats_path();
    let mut command = Command::new(&spec.exe);
    command
        .arg("run")
        .args(["--nodes", &spec.nodes.to_string()])
        .args(["--vps-per-node", "1"])
        .args(["--mem-mib", &spec.mem_mib.to_string()])
        .arg("--stats-json")
        .arg(&stats)
        .args(&spec.path_flags)
        .arg("--")
        .args(spec.case.workload(spec.pages))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| RunError::Spawn {
        exe: spec.exe.display().to_string(),
        source,
    })?;
    let launcher = child.id();
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });

    let deadline = Instant::now() + spec.timeout;
    let mut before: Option<Vec<cpu::ProcessCpu>> = None;
    let mut serve = ServeCpu::default();
    let mut late = false;
    let mut result: Option<Result<ProbeLine, ProbeLineError>> = None;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((received, line)) => match parse::parse_phase(&line) {
                // Sample at once: the guest sleeps after each phase line for this. A
                // sample taken after most of that pause is dropped: it may have missed
                // the start of the timed loop or caught what follows its end.
                Some(Phase::Begin) => {
                    before = Some(cpu::snapshot(launcher));
                    late |= received.elapsed() > SAMPLE_DEADLINE;
                }
                Some(Phase::End) => {
                    if let Some(earlier) = before.take() {
                        let after = cpu::snapshot(launcher);
                        late |= received.elapsed() > SAMPLE_DEADLINE;
                        serve = cpu::serve_cpu(&earlier, &after, &spec.case.serving_nodes());
                    }
                }
                None => {
                    if let Some(parsed) = parse::parse_probe_line(&line).transpose() {
                        result.get_or_insert(parsed);
                    }
                }
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                kill_tree(launcher);
                let _ = child.kill();
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait();
    let _ = reader.join();
    let stderr = stderr_reader.join().unwrap_or_default();
    let stats_doc = std::fs::read_to_string(&stats)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    let _ = std::fs::remove_file(&stats);
    if timed_out {
        return Err(RunError::TimedOut(spec.timeout));
    }
    let code = status.map_or(-1, |s| s.code().unwrap_or(-1));
    if code != 0 {
        return Err(RunError::Exit {
            code,
            stderr: tail(&stderr, 300),
        });
    }
    let line = match result {
        Some(parsed) => parsed?,
        None => {
            return Err(RunError::NoResult {
                stderr: tail(&stderr, 300),
            })
        }
    };
    if line.case != spec.case || line.count != spec.pages {
        return Err(RunError::WrongResult {
            want: spec.case.label(),
            got: line.case.label(),
            pages: spec.pages,
            count: line.count,
        });
    }
    let service: Option<ServiceTime> = stats_doc
        .as_ref()
        .and_then(|doc| parse::service_time(doc, 0, spec.case));
    if late {
        serve = ServeCpu::default();
    }
    Ok(RunSample {
        line,
        service,
        host_serve_ns: serve.host_ns,
        nic_serve_ns: serve.nic_ns,
        cpu_sample_late: late,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_are_short_and_flat() {
        assert_eq!(tail("a\nb\n", 10), "a | b");
        assert_eq!(tail("0123456789", 4), "6789");
        assert_eq!(tail("", 4), "");
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error() {
        let spec = RunSpec {
            exe: PathBuf::from("/nonexistent/cvmm"),
            path_flags: vec![],
            nodes: 2,
            mem_mib: 64,
            pages: 1,
            case: ProbeCase::plain(parse::ProbeKind::Local),
            timeout: Duration::from_secs(1),
        };
        assert!(matches!(run_probe(&spec), Err(RunError::Spawn { .. })));
    }

    #[test]
    fn a_failing_command_is_an_exit_error() {
        // `false` ignores its arguments and exits 1 without output.
        let spec = RunSpec {
            exe: PathBuf::from("false"),
            path_flags: vec![],
            nodes: 2,
            mem_mib: 64,
            pages: 1,
            case: ProbeCase::plain(parse::ProbeKind::Local),
            timeout: Duration::from_secs(10),
        };
        assert!(matches!(
            run_probe(&spec),
            Err(RunError::Exit { code: 1, .. })
        ));
    }
}
