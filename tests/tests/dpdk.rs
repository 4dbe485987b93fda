//! Whole clusters on the DPDK wire (`--transport dpdk`): net_memif between the node (or
//! NIC model) processes on this machine, net_af_packet on veths between network
//! namespaces. Every workload must print exactly what one machine computes, on the
//! software and the offload path and on a cluster that mixes them on one wire, and the
//! DPDK runtime directories must not outlive the processes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::node_children;
use tests::{cvmm_bin, cvmm_run, matmul_reference, sort_reference};

fn dpdk_flags<'a>(nodes: &'a str, vps: &'a str, fabric: &'a str) -> [&'a str; 8] {
    [
        "--nodes",
        nodes,
        "--vps-per-node",
        vps,
        "--fabric",
        fabric,
        "--transport",
        "dpdk",
    ]
}

/// EAL runtime directories of processes that no longer run (`cvmm-<pid>` is ours).
/// Tests compare the set before and after their runs, so that a directory some other
/// crashed process left (one that died inside `rte_eal_init`, before the directory is
/// removed) does not fail them.
fn leaked_runtime_dirs() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/var/run/dpdk") else {
        return Vec::new();
    };
    let mut leaked: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            name.strip_prefix("cvmm-")
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    leaked.sort();
    leaked
}

/// Leaked directories that are not in `before`.
fn new_leaks(before: &[String]) -> Vec<String> {
    leaked_runtime_dirs()
        .into_iter()
        .filter(|d| !before.contains(d))
        .collect()
}

#[test]
fn matmul_on_two_software_nodes_over_memif() {
    let before = leaked_runtime_dirs();
    let run = cvmm_run(&dpdk_flags("2", "1", "software"), &["matmul", "64"]);
    run.check("matmul 64 checksum = 60153385783");
    assert_eq!(matmul_reference(64), 60153385783);
    assert!(run.total("remote_read_faults") > 0, "{}", run.stats);
    assert!(run.total("pages_sent") > 0, "{}", run.stats);
    assert!(!run.stderr.contains("EAL: Error"), "{}", run.stderr);
    assert_eq!(new_leaks(&before), Vec::<String>::new());
}

#[test]
fn matmul_on_two_offload_nodes_over_memif() {
    let before = leaked_runtime_dirs();
    let run = cvmm_run(&dpdk_flags("2", "1", "offload"), &["matmul", "64"]);
    run.check("matmul 64 checksum = 60153385783");
    assert!(run.total("remote_read_faults") > 0, "{}", run.stats);
    assert_eq!(new_leaks(&before), Vec::<String>::new());
}

#[test]
fn workloads_on_two_and_four_nodes_on_both_paths() {
    for fabric in ["software", "offload"] {
        for (nodes, vps, total_vps) in [("2", "2", 4), ("4", "1", 4)] {
            let flags = dpdk_flags(nodes, vps, fabric);
            let run = cvmm_run(&flags, &["counter", "2000"]);
            run.check(&format!("counter = {}", total_vps * 2000));
            assert!(run.total("invalidations_sent") > 0, "{}", run.stats);
            let run = cvmm_run(&flags, &["sort", "1000"]);
            run.check(&format!("sort 1000 checksum = {}", sort_reference(1000)));
            let run = cvmm_run(&flags, &["matmul", "64"]);
            run.check(&format!("matmul 64 checksum = {}", matmul_reference(64)));
            assert_eq!(
                run.stats["nodes"].as_array().map(Vec::len),
                Some(nodes.parse().unwrap()),
                "{fabric} on {nodes} nodes: every node writes its statistics\n{}",
                run.stderr
            );
        }
    }
}

#[test]
fn a_mixed_cluster_shares_one_dpdk_wire() {
    // Nodes alternate offload and software; both speak the same frames on memif.
    for nodes in ["2", "4"] {
        let flags = dpdk_flags(nodes, "1", "offload,software");
        let run = cvmm_run(&flags, &["matmul", "64"]);
        run.check(&format!("matmul 64 checksum = {}", matmul_reference(64)));
        let run = cvmm_run(&flags, &["counter", "2000"]);
        let total: u64 = nodes.parse::<u64>().unwrap() * 2000;
        run.check(&format!("counter = {total}"));
    }
}

#[test]
fn litmus_tests_over_dpdk() {
    for (nodes, fabric, name, iters) in [
        ("2", "software", "mp", 2_000),
        ("2", "offload", "sb", 2_000),
        ("4", "offload", "iriw", 1_000),
    ] {
        let mut flags = dpdk_flags(nodes, "1", fabric).to_vec();
        flags.extend(["--mem-mib", "16"]);
        let run = cvmm_run(&flags, &["litmus", name, &iters.to_string()]);
        run.check(&format!("litmus {name} forbidden = 0 allowed = {iters}"));
    }
}

#[test]
fn a_lossy_dpdk_wire_gives_the_same_results() {
    let mut flags = dpdk_flags("2", "2", "software").to_vec();
    flags.extend(["--wire-loss", "0.05"]);
    let run = cvmm_run(&flags, &["counter", "2000"]);
    run.check("counter = 8000");
    let run2 = cvmm_run(&flags, &["matmul", "64"]);
    run2.check(&format!("matmul 64 checksum = {}", matmul_reference(64)));
    assert!(
        run.total("retransmits") + run2.total("retransmits") > 0,
        "no retransmissions with 5% loss: {}",
        run.stats
    );
}

#[test]
fn af_packet_between_network_namespaces() {
    let before = leaked_runtime_dirs();
    for fabric in ["software", "offload"] {
        let mut flags = dpdk_flags("2", "1", fabric).to_vec();
        flags.push("--netns");
        let run = cvmm_run(&flags, &["matmul", "64"]);
        run.check(&format!("matmul 64 checksum = {}", matmul_reference(64)));
        assert!(run.total("remote_read_faults") > 0, "{}", run.stats);
    }
    assert_eq!(new_leaks(&before), Vec::<String>::new());
}

#[test]
fn killing_a_node_on_the_dpdk_wire_stops_the_others() {
    let before = leaked_runtime_dirs();
    let mut launcher = Command::new(cvmm_bin())
        .args([
            "run",
            "--nodes",
            "3",
            "--mem-mib",
            "16",
            "--transport",
            "dpdk",
        ])
        .args(["--", "litmus", "mp", "100000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let victim = loop {
        let children = node_children(launcher.id());
        if let Some((pid, _)) = children.iter().find(|(_, id)| *id == 1) {
            if children.len() == 3 && start.elapsed() > Duration::from_secs(2) {
                break *pid;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nodes did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let status = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let killed_at = Instant::now();
    let code = loop {
        if let Some(status) = launcher.try_wait().unwrap() {
            break status.code();
        }
        if killed_at.elapsed() > Duration::from_secs(30) {
            let _ = launcher.kill();
            panic!("the cluster did not stop after node 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read;
    launcher
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("node 1"), "{stderr}");
    // The killed node's EAL directory was removed when it started, not at exit.
    assert_eq!(new_leaks(&before), Vec::<String>::new());
}
