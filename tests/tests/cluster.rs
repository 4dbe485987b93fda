//! One virtual server across node processes (software fabric over UDP): the workloads
//! give the exact results of one machine, and the statistics show that memory really
//! moved between nodes.

use tests::{cvmm_run, matmul_reference, sort_reference, Run};

const SHAPES: [(&str, &str, u64); 3] = [("2", "1", 2), ("4", "1", 4), ("2", "2", 4)];

fn check(run: &Run, want: &str) {
    assert_eq!(
        run.code, 0,
        "exit {}\n{:?}\n{}",
        run.code, run.lines, run.stderr
    );
    assert!(
        run.has_line(want),
        "no line {want:?} in {:?}\n{}",
        run.lines,
        run.stderr
    );
}

#[test]
fn workloads_give_exact_results_on_every_shape() {
    for (nodes, vps, total_vps) in SHAPES {
        let flags = ["--nodes", nodes, "--vps-per-node", vps];
        let run = cvmm_run(&flags, &["matmul", "64"]);
        check(
            &run,
            &format!("matmul 64 checksum = {}", matmul_reference(64)),
        );
        assert!(run.total("remote_read_faults") > 0, "{}", run.stats);

        let run = cvmm_run(&flags, &["sort", "1000"]);
        check(
            &run,
            &format!("sort 1000 checksum = {}", sort_reference(1000)),
        );

        let run = cvmm_run(&flags, &["counter", "2000"]);
        check(&run, &format!("counter = {}", total_vps * 2000));
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
    check(
        &run,
        &format!("matmul 64 checksum = {}", matmul_reference(64)),
    );
    let run2 = cvmm_run(&flags, &["counter", "2000"]);
    check(&run2, "counter = 8000");
    let run3 = cvmm_run(&flags, &["sort", "1000"]);
    check(
        &run3,
        &format!("sort 1000 checksum = {}", sort_reference(1000)),
    );
    let retransmits =
        run.total("retransmits") + run2.total("retransmits") + run3.total("retransmits");
    assert!(
        retransmits > 0,
        "no retransmissions with 5% loss: {}",
        run.stats
    );
}
