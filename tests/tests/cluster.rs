//! One virtual server across node processes (software fabric over UDP): the workloads
//! give the exact results of one machine, and the statistics show that memory really
//! moved between nodes.

use tests::{cvmm_run, matmul_reference, sort_reference, Run};

const SHAPES: [(&str, &str, u64); 3] = [("2", "1", 2), ("4", "1", 4), ("2", "2", 4)];

#[test]
fn workloads_give_exact_results_on_every_shape() {
    for (nodes, vps, total_vps) in SHAPES {
        let flags = ["--nodes", nodes, "--vps-per-node", vps];
        let run = cvmm_run(&flags, &["matmul", "64"]);
        run.check(&format!("matmul 64 checksum = {}", matmul_reference(64)));
        assert!(run.total("remote_read_faults") > 0, "{}", run.stats);

        let run = cvmm_run(&flags, &["sort", "1000"]);
        run.check(&format!("sort 1000 checksum = {}", sort_reference(1000)));

        let run = cvmm_run(&flags, &["counter", "2000"]);
        run.check(&format!("counter = {}", total_vps * 2000));
        assert!(run.total("invalidations_sent") > 0, "{}", run.stats);
        assert_eq!(
            run.total("invalidations_sent"),
            run.total("invalidations_received") + invalidations_at_home(&run),
            "{}",
            run.stats
        );
        assert_eq!(
            run.stats["nodes"].as_array().map(Vec::len),
            Some(nodes.parse().unwrap())
        );
    }
}

/// Invalidations a home sends to itself are not messages; the engine counts only remote
/// ones on both sides, so this is zero and the sums must match.
fn invalidations_at_home(_run: &Run) -> u64 {
    0
}

#[test]
fn every_vp_greets_from_its_own_node() {
    let run = cvmm_run(&["--nodes", "2", "--vps-per-node", "2"], &["hello"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for vp in 0..4 {
        let want = format!("hello from vp {vp} on node {}", vp / 2);
        assert!(run.has_line(&want), "missing {want:?} in {:?}", run.lines);
    }
}

#[test]
fn lossy_wire_gives_the_same_results() {
    let flags = ["--nodes", "2", "--vps-per-node", "2", "--wire-loss", "0.05"];
    let run = cvmm_run(&flags, &["matmul", "64"]);
    run.check(&format!("matmul 64 checksum = {}", matmul_reference(64)));
    let run2 = cvmm_run(&flags, &["counter", "2000"]);
    run2.check("counter = 8000");
    let run3 = cvmm_run(&flags, &["sort", "1000"]);
    run3.check(&format!("sort 1000 checksum = {}", sort_reference(1000)));
    let retransmits =
        run.total("retransmits") + run2.total("retransmits") + run3.total("retransmits");
    assert!(
        retransmits > 0,
        "no retransmissions with 5% loss: {}",
        run.stats
    );
}

#[test]
fn nodes_in_separate_network_namespaces() {
    let run = cvmm_run(&["--nodes", "2", "--netns"], &["matmul", "64"]);
    run.check(&format!("matmul 64 checksum = {}", matmul_reference(64)));
    assert!(run.total("remote_read_faults") > 0, "{}", run.stats);
}

#[test]
fn cvmm_node_runs_a_cluster_from_a_toml_file() {
    let dir = std::env::temp_dir().join(format!("cvmm-toml-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    let toml = format!(
        "[cluster]\n\n[server]\nvps_per_node = 1\nmem_mib_per_node = 16\ncmdline = \"sort 1000\"\n\n\
         [[nodes]]\nid = 0\naddress = \"127.0.0.1:{}\"\n\n[[nodes]]\nid = 1\naddress = \"127.0.0.1:{}\"\n",
        ports[0], ports[1]
    );
    let path = dir.join("cluster.toml");
    std::fs::write(&path, toml).unwrap();
    let spawn = |id: &str| {
        std::process::Command::new(tests::cvmm_bin())
            .args(["node", "--config"])
            .arg(&path)
            .args(["--id", id])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let node1 = spawn("1");
    let node0 = spawn("0");
    let out0 = node0.wait_with_output().unwrap();
    let out1 = node1.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out0.stdout);
    assert_eq!(
        out0.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out0.stderr)
    );
    assert_eq!(
        out1.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out1.stderr)
    );
    let want = format!("sort 1000 checksum = {}", sort_reference(1000));
    assert!(stdout.lines().any(|l| tests::untag(l) == want), "{stdout}");

    // A typo in the file is one clear sentence, not a default.
    std::fs::write(&path, "[cluster]\nwire_los = 0.1\n").unwrap();
    let out = spawn("0").wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("wire_los"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
