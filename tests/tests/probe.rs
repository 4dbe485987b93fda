//! The fault-latency probe on real clusters: every kind prints one result line that the
//! benchmark's parser accepts, with one sample per page, and the nodes' counters show
//! that each timed access really was the fault it claims (computed here from the kind,
//! the page count and the sharers, not from the guest's output). No timing is asserted.

use cvmm_bench::parse::{parse_probe_line, ProbeCase, ProbeKind, ProbeLine};
use tests::{cvmm_run, Run};

const PAGES: u64 = 40;

fn probe(nodes: u32, case: ProbeCase) -> (Run, ProbeLine) {
    let workload = case.workload(PAGES);
    let words: Vec<&str> = workload.iter().map(String::as_str).collect();
    let nodes = nodes.to_string();
    let run = cvmm_run(&["--nodes", &nodes, "--mem-mib", "16"], &words);
    assert_eq!(
        run.code, 0,
        "{workload:?}: exit {}\n{:?}\n{}",
        run.code, run.lines, run.stderr
    );
    let results = run.lines_starting("probe ");
    assert_eq!(results.len(), 1, "{workload:?}: {:?}", run.lines);
    let line = parse_probe_line(results[0])
        .expect("the line parses")
        .expect("it is a probe result line");
    assert_eq!(line.case, case, "{}", results[0]);
    assert_eq!(line.count, PAGES, "{}", results[0]);
    assert!(
        line.min_ns <= line.p50_ns
            && line.p50_ns <= line.p99_ns
            && line.p99_ns <= line.max_ns
            && line.min_ns <= line.mean_ns
            && line.mean_ns <= line.max_ns,
        "statistics out of order: {}",
        results[0]
    );
    assert!(line.min_ns > 0, "a fault takes time: {}", results[0]);
    // The phase lines bracket the timed loop, in order, before the result.
    let begin = run
        .lines
        .iter()
        .position(|l| l.starts_with("probe-phase begin"));
    let end = run
        .lines
        .iter()
        .position(|l| l.starts_with("probe-phase end"));
    let result = run.lines.iter().position(|l| l.starts_with("probe "));
    assert!(
        begin < end && end < result && begin.is_some(),
        "{:?}",
        run.lines
    );
    (run, line)
}

#[test]
fn every_kind_on_two_nodes() {
    let (run, _) = probe(2, ProbeCase::plain(ProbeKind::Local));
    // Local faults never leave the node: node 0 fetched nothing for them (its boot and
    // barrier faults are a handful, far below the page count).
    assert!(
        run.node_counter(0, "remote_write_faults") < PAGES,
        "{}",
        run.stats
    );

    let (run, _) = probe(2, ProbeCase::plain(ProbeKind::ReadMiss));
    assert!(
        run.node_counter(0, "remote_read_faults") >= PAGES,
        "{}",
        run.stats
    );

    let (run, _) = probe(2, ProbeCase::plain(ProbeKind::WriteMiss));
    assert!(
        run.node_counter(0, "remote_write_faults") >= PAGES,
        "{}",
        run.stats
    );

    let (run, _) = probe(2, ProbeCase::plain(ProbeKind::Upgrade));
    assert!(run.node_counter(0, "upgrades") >= PAGES, "{}", run.stats);
    assert!(
        run.node_counter(0, "remote_read_faults") >= PAGES,
        "{}",
        run.stats
    );

    let (run, _) = probe(
        2,
        ProbeCase {
            kind: ProbeKind::Invalidate,
            sharers: 1,
        },
    );
    assert!(
        run.node_counter(0, "invalidations_sent") >= PAGES,
        "{}",
        run.stats
    );
    assert!(
        run.node_counter(1, "invalidations_received") >= PAGES,
        "{}",
        run.stats
    );
}

#[test]
fn invalidation_with_one_and_two_sharers_on_three_nodes() {
    for sharers in [1u32, 2] {
        let case = ProbeCase {
            kind: ProbeKind::Invalidate,
            sharers,
        };
        let (run, _) = probe(3, case);
        let sent = run.node_counter(0, "invalidations_sent");
        assert!(
            sent >= u64::from(sharers) * PAGES,
            "{sharers}: {}",
            run.stats
        );
        for node in 1..=u64::from(sharers) {
            assert!(
                run.node_counter(node, "invalidations_received") >= PAGES,
                "sharer {node}: {}",
                run.stats
            );
        }
        if sharers == 1 {
            // Node 2 never read the pages: nothing to invalidate there.
            assert!(
                run.node_counter(2, "invalidations_received") < PAGES,
                "{}",
                run.stats
            );
        }
    }
}

#[test]
fn a_shape_the_kind_cannot_use_is_an_error() {
    let run = cvmm_run(&["--nodes", "2"], &["probe", "invalidate", "10", "2"]);
    assert_eq!(run.code, 1, "{:?}\n{}", run.lines, run.stderr);
    assert!(
        run.has_line("error: probe invalidate (sharers: 2) needs at least 3 nodes, there are 2"),
        "{:?}",
        run.lines
    );
    let run = cvmm_run(&["--nodes", "2"], &["probe", "sideways", "10"]);
    assert_eq!(run.code, 1, "{:?}\n{}", run.lines, run.stderr);
    assert!(run.lines_starting("probe ").is_empty());
}
