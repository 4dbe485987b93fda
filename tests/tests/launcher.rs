//! A launcher that is killed takes its cluster with it: node processes (and their NIC
//! models, and the launchers of `--servers`) must not go on running a workload that may
//! never end. The fault campaign found them orphaned, running, after a `kill` of
//! `cvmm run`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::cvmm_bin;

/// Pids of every process whose command line mentions the run directory of `launcher`
/// (its nodes and their NIC models).
fn processes_of(launcher: u32) -> Vec<u32> {
    let out = Command::new("ps")
        .args(["-e", "-o", "pid=,args="])
        .output()
        .expect("ps runs");
    let mark = tests::run_dir_mark(launcher);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&mark))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Children of `parent` whose command line contains `what`.
fn children(parent: u32, what: &str) -> Vec<u32> {
    let out = Command::new("ps")
        .args(["-o", "pid=,args=", "--ppid", &parent.to_string()])
        .output()
        .expect("ps runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill9(pid: u32) {
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill runs")
        .success());
}

#[test]
fn killing_the_launcher_stops_its_nodes_and_nics() {
    let mut launcher = Command::new(cvmm_bin())
        .args([
            "run",
            "--nodes",
            "2",
            "--mem-mib",
            "16",
            "--fabric",
            "software,offload",
        ])
        .args(["--", "litmus", "mp", "100000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cvmm runs");
    let pid = launcher.id();
    // Two nodes and node 1's NIC model.
    wait_for("the nodes and the NIC start", || {
        processes_of(pid).len() >= 3
    });
    kill9(pid);
    let _ = launcher.wait();
    wait_for("the nodes and the NIC stop", || {
        processes_of(pid).is_empty()
    });
}

#[test]
fn killing_a_multi_server_launcher_stops_every_server() {
    let mut launcher = Command::new(cvmm_bin())
        .args(["run", "--servers", "2", "--nodes", "2", "--mem-mib", "16"])
        .args(["--", "litmus", "mp", "100000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cvmm runs");
    let top = launcher.id();
    let mut servers = Vec::new();
    wait_for("both servers start their nodes", || {
        servers = children(top, "--vs-id");
        servers.len() == 2 && servers.iter().all(|s| processes_of(*s).len() >= 2)
    });
    kill9(top);
    let _ = launcher.wait();
    wait_for("every server's nodes stop", || {
        servers.iter().all(|s| processes_of(*s).is_empty())
    });
}
