//! The offload path: every node's coherence engine runs in its NIC model process (`cvmm
//! nic`, a vfio-user device the node drives), on the kernel-UDP wire. The workloads must
//! print exactly what one machine computes, alone and mixed with software-path nodes, and
//! a NIC that dies must stop its node with a message that names it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{cvmm_bin, cvmm_run, matmul_reference, sort_reference, Run};

/// The fabric each node reported in its statistics.
fn fabrics(run: &Run) -> Vec<String> {
    run.stats["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| n["fabric"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn matmul_on_two_offload_nodes() {
    let run = cvmm_run(&["--nodes", "2", "--fabric", "offload"], &["matmul", "64"]);
    run.check("matmul 64 checksum = 60153385783");
    assert_eq!(matmul_reference(64), 60153385783);
    assert_eq!(fabrics(&run), ["offload", "offload"], "{}", run.stats);
    assert!(run.total("remote_read_faults") > 0, "{}", run.stats);
    assert!(run.total("pages_sent") > 0, "{}", run.stats);
}

#[test]
fn workloads_on_offload_clusters_of_two_and_four_nodes() {
    for (nodes, vps, total_vps) in [("2", "2", 4), ("4", "1", 4)] {
        let flags = [
            "--nodes",
            nodes,
            "--vps-per-node",
            vps,
            "--fabric",
            "offload",
        ];
        let run = cvmm_run(&flags, &["counter", "2000"]);
        run.check(&format!("counter = {}", total_vps * 2000));
        assert!(run.total("invalidations_sent") > 0, "{}", run.stats);
        assert_eq!(
            run.total("invalidations_sent"),
            run.total("invalidations_received"),
            "{}",
            run.stats
        );
        let run = cvmm_run(&flags, &["sort", "1000"]);
        run.check(&format!("sort 1000 checksum = {}", sort_reference(1000)));
        let run = cvmm_run(&flags, &["matmul", "64"]);
        run.check(&format!("matmul 64 checksum = {}", matmul_reference(64)));
        assert_eq!(
            run.stats["nodes"].as_array().map(Vec::len),
            Some(nodes.parse().unwrap())
        );
        // The NICs did the serving: nothing was refused, nothing malformed.
        let all = run.stats["nodes"].as_array().unwrap();
        for node in all {
            assert_eq!(node["nic"]["bad_submissions"], 0, "{node}");
            assert_eq!(node["nic"]["bad_messages"], 0, "{node}");
            assert_eq!(node["nic"]["protocol_errors"], 0, "{node}");
        }
        if nodes == "4" {
            // With three readers of node 0's matrices, the second and third read of a
            // page find it Shared at the home: its NIC sends it without its host.
            let served: u64 = all
                .iter()
                .filter_map(|n| n["nic"]["pages_served_without_host"].as_u64())
                .sum();
            assert!(served > 0, "{}", run.stats);
        }
    }
}

#[test]
fn a_lossy_wire_gives_the_same_results_on_the_offload_path() {
    let flags = [
        "--nodes",
        "2",
        "--vps-per-node",
        "2",
        "--wire-loss",
        "0.05",
        "--fabric",
        "offload",
    ];
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

fn litmus(nodes: &str, fabric: &str, name: &str, iters: u32) {
    let run = cvmm_run(
        &["--nodes", nodes, "--mem-mib", "16", "--fabric", fabric],
        &["litmus", name, &iters.to_string()],
    );
    run.check(&format!("litmus {name} forbidden = 0 allowed = {iters}"));
}

#[test]
fn litmus_tests_on_offload_nodes() {
    litmus("2", "offload", "mp", 2_000);
    litmus("2", "offload", "sb", 2_000);
    litmus("4", "offload", "iriw", 1_000);
}

#[test]
fn a_mixed_cluster_gives_the_same_results() {
    // Nodes alternate: 0 offload, 1 software, 2 offload, 3 software.
    let flags = [
        "--nodes",
        "2",
        "--vps-per-node",
        "2",
        "--fabric",
        "offload,software",
    ];
    let run = cvmm_run(&flags, &["matmul", "64"]);
    run.check(&format!("matmul 64 checksum = {}", matmul_reference(64)));
    assert_eq!(fabrics(&run), ["offload", "software"], "{}", run.stats);
    let run = cvmm_run(&flags, &["counter", "2000"]);
    run.check("counter = 8000");
    let flags4 = ["--nodes", "4", "--fabric", "software,offload"];
    let run = cvmm_run(&flags4, &["sort", "1000"]);
    run.check(&format!("sort 1000 checksum = {}", sort_reference(1000)));
    assert_eq!(
        fabrics(&run),
        ["software", "offload", "software", "offload"],
        "{}",
        run.stats
    );
    litmus("4", "offload,software", "iriw", 1_000);
}

/// Children of `parent` as (pid, arguments).
fn children(parent: u32) -> Vec<(u32, Vec<String>)> {
    let out = Command::new("ps")
        .args(["-o", "pid=,args=", "--ppid", &parent.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let pid: u32 = words.next()?.parse().ok()?;
            Some((pid, words.map(str::to_string).collect()))
        })
        .collect()
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z")
        })
        .unwrap_or(false)
}

fn has_args(args: &[String], sub: &str, id: u32) -> bool {
    args.iter().any(|a| a == sub)
        && args
            .windows(2)
            .any(|w| w[0] == "--id" && w[1] == id.to_string())
}

#[test]
fn a_killed_nic_stops_its_node_with_a_clear_message() {
    let mut launcher = Command::new(cvmm_bin())
        .args([
            "run",
            "--nodes",
            "2",
            "--mem-mib",
            "16",
            "--fabric",
            "offload",
            "--",
            "litmus",
            "mp",
            "100000000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let victim = loop {
        let node1 = children(launcher.id())
            .into_iter()
            .find(|(_, args)| has_args(args, "node", 1));
        let nic = node1.and_then(|(pid, _)| {
            children(pid)
                .into_iter()
                .find(|(_, args)| has_args(args, "nic", 1))
        });
        if let Some((pid, _)) = nic {
            if start.elapsed() > Duration::from_secs(2) {
                break pid;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the NIC of node 1 did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Every node and NIC process of the cluster, to check none is left behind.
    let mut everyone = Vec::new();
    for (node, _) in children(launcher.id()) {
        everyone.push(node);
        everyone.extend(children(node).into_iter().map(|(pid, _)| pid));
    }
    assert!(everyone.len() >= 4, "two nodes and two NICs: {everyone:?}");
    let killed_at = Instant::now();
    assert!(Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(status) = launcher.try_wait().unwrap() {
            break status;
        }
        if killed_at.elapsed() > Duration::from_secs(30) {
            let _ = launcher.kill();
            panic!("the cluster did not stop within 30 s of a NIC dying");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stopped_after = killed_at.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(launcher.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    let want = format!("the NIC process of node 1 (pid {victim}) was killed by signal 9");
    assert!(stderr.contains(&want), "no {want:?} in:\n{stderr}");
    assert!(
        stopped_after < Duration::from_secs(15),
        "took {stopped_after:?}\n{stderr}"
    );
    let left: Vec<u32> = everyone.into_iter().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}\n{stderr}");
}
