//! Exhaustive model checking of the coherence engine: every interleaving of a small
//! cluster's VPs and network, run through the real [`crate::engine`] code.
//!
//! The random simulation in `engine/sim.rs` samples schedules; this explores all of them
//! for a small configuration (3 nodes, 2 pages, a few accesses per VP, every choice of page
//! and read/write) and checks, in every reachable state:
//! - one writer or many readers per page (never a Shared copy beside an Exclusive one);
//! - every valid copy holds the last write, and every read or write a VP performs sees it;
//! - the directory covers every copy when the page is not busy, the host mappings equal
//!   the engines' page states, no engine refuses a message;
//! - every request eventually completes under fair scheduling: from every reachable state,
//!   a state with every access done, every engine idle and the network empty is reachable
//!   (no deadlock, no livelock).
//!
//! Engines are stored as [`EngineSnapshot`](crate::engine::snapshot::EngineSnapshot)s (the
//! real tables and registers) and resumed for each step, so what is explored is the engine
//! itself, not a model of it.
//!
//! **The network.** The engine assumes its transport delivers exactly once and in order
//! per link, with no order across links. Two models (see [`network`]):
//! [`NetworkModel::Reliable`] explores every interleaving across links at the level the
//! engine sees (loss and duplication are invisible there: a retransmission is a delay,
//! a duplicate is dropped by sequence number, and every delay is an interleaving);
//! [`NetworkModel::Lossy`] feeds a wire that loses, duplicates and reorders packets
//! (within and across links) into a small model of the transport's sequence/ack layer,
//! checking end to end at a smaller workload. The reliable level is the one that scales;
//! the lossy level shows the composition holds.
//!
//! **Sizes.** `cargo test -p nic-firmware explore` runs the CI-sized checks (about 20 s in
//! a debug build on two cores) and prints their state counts past the harness's capture:
//! 3 nodes, 2 pages, reliable links, 2+2+1 accesses: 462 940 states; the lossy wire with
//! 1+1+1 accesses: 258 603 states. Larger runs go through
//! `configured_by_the_environment` (`#[ignore]`d, `--release`): 2+2+2 accesses, reliable:
//! 4 567 611 states in about a minute and 1.3 GB; two VPs a node, 1+1/1+1/1+0 accesses:
//! 15 192 213 states in about 5 minutes and 5.6 GB.
//!
//! Test builds only: the snapshots and the seeded bug it needs exist only there.

mod checker;
mod model;
mod network;

pub(crate) use checker::{explore, Report, Violation};
pub(crate) use model::ModelConfig;
pub(crate) use network::NetworkModel;

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::engine::fault_injection::{DropEvictedData, MoveWithoutAcks, SkipOneInvalidation};

    /// Three nodes; page 0 is homed at node 0, page 1 at node 1; one VP per node; request
    /// tables big enough that no home ever refuses.
    fn three_nodes_two_pages(accesses: &[u8], network: NetworkModel) -> ModelConfig {
        ModelConfig {
            nodes: 3,
            homes: vec![0, 1],
            vps_per_node: 1,
            accesses: accesses.to_vec(),
            extra_requests: 2,
            evictions: 0,
            handoff: None,
            network,
            max_states: 5_000_000,
        }
    }

    /// Writes past the test harness's capture, so the counts show in CI logs.
    fn say(what: &str, report: &Report) {
        let _ = writeln!(std::io::stderr(), "model check, {what}: {report}");
    }

    fn pass(what: &str, config: ModelConfig) -> Report {
        match explore(config) {
            Ok(report) => {
                say(what, &report);
                report
            }
            Err(violation) => panic!("{what}: {violation}"),
        }
    }

    #[test]
    fn three_nodes_two_pages_reliable_network() {
        let report = pass(
            "3 nodes, 2 pages, 2+2+1 accesses, reliable links",
            three_nodes_two_pages(&[2, 2, 1], NetworkModel::Reliable),
        );
        assert!(report.goal_states > 0);
        // The exploration reached the protocol's races, not only its easy paths.
        let c = report.coverage;
        assert!(c.forwards_sent > 0 && c.writebacks_received > 0);
        assert!(c.invalidations_sent > 0 && c.requests_queued > 0);
        assert!(c.upgrades_lost_copy > 0, "race 3 of docs/protocol.md");
        assert_eq!(c.nacks_sent, 0, "tables sized to never refuse");
    }

    #[test]
    fn three_nodes_two_pages_lossy_network() {
        // A window of 3 never fills at this size: nothing is pruned.
        let network = NetworkModel::Lossy {
            wire_capacity: 2,
            window: 3,
            retransmit: true,
        };
        let report = pass(
            "3 nodes, 2 pages, 1+1+1 accesses, lossy/duplicating/reordering wire",
            three_nodes_two_pages(&[1, 1, 1], network),
        );
        assert!(report.goal_states > 0);
        assert_eq!(report.pruned, 0);
        assert!(report.coverage.invalidations_sent > 0 && report.coverage.forwards_sent > 0);
    }

    #[test]
    fn two_vps_on_a_node_coalesce_their_faults() {
        // Node 0: VPs 0 (two accesses) and 1 (one); node 2: VP 4 (one access).
        let config = ModelConfig {
            vps_per_node: 2,
            accesses: vec![2, 1, 0, 0, 1, 0],
            extra_requests: 4,
            ..three_nodes_two_pages(&[0, 0, 0], NetworkModel::Reliable)
        };
        let report = pass(
            "3 nodes, 2 pages, 2 VPs a node, 2+1/0+0/1+0 accesses",
            config,
        );
        assert!(report.coverage.faults_coalesced > 0);
        assert!(report.coverage.upgrades_lost_copy > 0);
    }

    #[test]
    fn evictions_race_reads_writes_and_invalidations() {
        // Each node may give up one copy at any moment, while the others read and write.
        let config = ModelConfig {
            evictions: 1,
            ..three_nodes_two_pages(&[1, 1, 1], NetworkModel::Reliable)
        };
        let report = pass(
            "3 nodes, 2 pages, 1+1+1 accesses, one eviction a node, reliable links",
            config,
        );
        let c = report.coverage;
        assert!(c.evictions_sent > 0 && c.evictions_received > 0);
        // The races of docs/protocol.md "Eviction": a forward or an invalidation that
        // reaches a node after it sent its Evict, and a fault waiting behind an eviction
        // (one VP a node: nothing else coalesces).
        assert!(c.evicting_copies_taken > 0);
        assert!(c.faults_coalesced > 0);
    }

    #[test]
    fn evictions_over_a_lossy_wire() {
        let network = NetworkModel::Lossy {
            wire_capacity: 2,
            window: 3,
            retransmit: true,
        };
        let config = ModelConfig {
            evictions: 1,
            ..three_nodes_two_pages(&[1, 1, 0], network)
        };
        let report = pass(
            "3 nodes, 2 pages, 1+1+0 accesses, one eviction a node, lossy wire",
            config,
        );
        assert!(report.coverage.evictions_sent > 0);
        assert_eq!(report.pruned, 0);
    }

    #[test]
    fn a_home_handoff_races_reads_and_writes() {
        let config = ModelConfig {
            handoff: Some((0, 2)),
            ..three_nodes_two_pages(&[1, 1, 1], NetworkModel::Reliable)
        };
        let report = pass(
            "3 nodes, 2 pages, 1+1+1 accesses, page 0 handed from node 0 to node 2, reliable \
             links",
            config,
        );
        let c = report.coverage;
        assert!(c.homes_moved_out > 0 && c.homes_moved_in > 0);
        assert!(
            c.nacks_sent > 0,
            "requests queued at the old home are sent on"
        );
        assert!(c.forwards_sent > 0 && c.invalidations_sent > 0);
    }

    #[test]
    fn a_home_handoff_races_reads_writes_and_evictions() {
        // Page 0's home (node 0) hands it to node 2 at some moment while every node reads
        // and writes both pages; one eviction a node on top.
        // (1+1+1 accesses: 4 078 004 states, about 6 minutes in a debug build; run it with
        // `configured_by_the_environment`.)
        let config = ModelConfig {
            handoff: Some((0, 2)),
            evictions: 1,
            ..three_nodes_two_pages(&[1, 1, 0], NetworkModel::Reliable)
        };
        let report = pass(
            "3 nodes, 2 pages, 1+1+0 accesses, page 0 handed from node 0 to node 2, one \
             eviction a node, reliable links",
            config,
        );
        let c = report.coverage;
        assert!(c.homes_moved_out > 0 && c.homes_moved_in > 0);
        assert!(
            c.nacks_sent > 0,
            "requests queued at the old home are sent on"
        );
        assert!(c.evictions_received > 0);
    }

    #[test]
    fn a_handoff_to_a_node_that_shares_the_page() {
        // The new home is a reader of the page (node 1), over a lossy wire.
        let network = NetworkModel::Lossy {
            wire_capacity: 2,
            window: 3,
            retransmit: true,
        };
        let config = ModelConfig {
            handoff: Some((0, 1)),
            ..three_nodes_two_pages(&[1, 1, 0], network)
        };
        let report = pass(
            "3 nodes, 2 pages, 1+1+0 accesses, page 0 handed from node 0 to node 1, lossy wire",
            config,
        );
        assert!(report.coverage.homes_moved_in > 0);
        assert_eq!(report.pruned, 0);
    }

    #[test]
    fn a_full_home_queue_nacks_and_still_completes() {
        // One request record for remote requesters: the home refuses and they retry.
        let config = ModelConfig {
            extra_requests: 1,
            ..three_nodes_two_pages(&[1, 1, 1], NetworkModel::Reliable)
        };
        let report = pass("3 nodes, 2 pages, 1+1+1 accesses, tiny home table", config);
        assert!(report.coverage.nacks_sent > 0);
    }

    #[test]
    fn a_seeded_bug_is_caught() {
        // The home forgets to invalidate one sharer (test builds only, this thread only).
        let _bug = SkipOneInvalidation::enable();
        let violation = explore(three_nodes_two_pages(&[2, 2, 1], NetworkModel::Reliable))
            .expect_err("the checker must catch a skipped invalidation");
        let _ = writeln!(
            std::io::stderr(),
            "model check with a seeded bug fails as it must: {violation}"
        );
        let Violation::Invariant { message, trace } = violation else {
            panic!("expected a broken invariant, got {violation}");
        };
        assert!(
            message.contains("while one is Exclusive") || message.contains("sees version"),
            "{message}"
        );
        // The shortest counterexample: a read by a remote node, a write by another, and
        // the write's invalidation round.
        assert!(trace.len() >= 3, "{trace:?}");
    }

    #[test]
    fn a_home_that_drops_an_evicted_page_is_caught() {
        let _bug = DropEvictedData::enable();
        let config = ModelConfig {
            evictions: 1,
            ..three_nodes_two_pages(&[1, 1, 0], NetworkModel::Reliable)
        };
        let violation = explore(config).expect_err("the checker must catch a lost eviction");
        let _ = writeln!(
            std::io::stderr(),
            "model check with a dropped eviction fails as it must: {violation}"
        );
        let Violation::Invariant { message, trace } = violation else {
            panic!("expected a broken invariant, got {violation}");
        };
        assert!(message.contains("home's memory holds"), "{message}");
        assert!(trace.iter().any(|t| t.contains("evicts")), "{trace:?}");
    }

    #[test]
    fn a_handoff_without_the_fence_is_caught() {
        let _bug = MoveWithoutAcks::enable();
        let config = ModelConfig {
            handoff: Some((0, 2)),
            ..three_nodes_two_pages(&[1, 1, 1], NetworkModel::Reliable)
        };
        let violation = explore(config).expect_err("the checker must catch a missing fence");
        let _ = writeln!(
            std::io::stderr(),
            "model check of a handoff without acks fails as it must: {violation}"
        );
        let Violation::Invariant { trace, .. } = violation else {
            panic!("expected a broken invariant, got {violation}");
        };
        assert!(
            trace.iter().any(|t| t.contains("handing it over")),
            "{trace:?}"
        );
    }

    #[test]
    fn a_transport_that_never_retransmits_is_caught() {
        // A lost message is lost for good: some request can never complete.
        let network = NetworkModel::Lossy {
            wire_capacity: 2,
            window: 2,
            retransmit: false,
        };
        let violation = explore(three_nodes_two_pages(&[1, 0, 0], network))
            .expect_err("without retransmission a loss must stop progress");
        let _ = writeln!(
            std::io::stderr(),
            "model check without retransmission fails as it must: {violation}"
        );
        let (Violation::Deadlock { trace } | Violation::Livelock { trace }) = violation else {
            panic!("expected a state with no way to the goal, got {violation}");
        };
        assert!(
            trace.last().is_some_and(|t| t.contains("is lost")),
            "{trace:?}"
        );
    }

    #[test]
    fn a_model_that_cannot_run_is_refused() {
        let config = ModelConfig {
            homes: vec![5],
            ..three_nodes_two_pages(&[1, 1, 1], NetworkModel::Reliable)
        };
        assert!(matches!(explore(config), Err(Violation::BadModel(_))));
        let config = ModelConfig {
            max_states: 10,
            ..three_nodes_two_pages(&[1, 1, 1], NetworkModel::Reliable)
        };
        assert!(matches!(
            explore(config),
            Err(Violation::TooManyStates { limit: 10 })
        ));
    }

    /// Any configuration, from the environment (all optional):
    /// `CVMM_MC_ACCESSES=2,2,2` (accesses per VP), `CVMM_MC_VPS=1` (VPs per node),
    /// `CVMM_MC_EXTRA=2` (extra home records), `CVMM_MC_EVICTIONS=0` (evictions a
    /// node), `CVMM_MC_HANDOFF=0:2` (page 0's home goes to node 2), `CVMM_MC_NETWORK=reliable|lossy:CAP:WINDOW`,
    /// `CVMM_MC_MAX_STATES=50000000`. Run with
    /// `cargo test -p nic-firmware --release -- --ignored --nocapture explore::tests::configured`.
    #[test]
    #[ignore = "a larger run, by hand, with --release"]
    fn configured_by_the_environment() {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        let number =
            |name: &str, default: &str| -> usize { var(name, default).parse().expect("a number") };
        let accesses: Vec<u8> = var("CVMM_MC_ACCESSES", "2,2,2")
            .split(',')
            .map(|a| a.trim().parse().expect("accesses per VP"))
            .collect();
        let network = match var("CVMM_MC_NETWORK", "reliable").as_str() {
            "reliable" => NetworkModel::Reliable,
            lossy => {
                let parts: Vec<usize> = lossy
                    .strip_prefix("lossy:")
                    .expect("reliable or lossy:CAP:WINDOW")
                    .split(':')
                    .map(|p| p.parse().expect("a number"))
                    .collect();
                NetworkModel::Lossy {
                    wire_capacity: parts[0],
                    window: parts[1],
                    retransmit: true,
                }
            }
        };
        let config = ModelConfig {
            vps_per_node: number("CVMM_MC_VPS", "1"),
            extra_requests: number("CVMM_MC_EXTRA", "2"),
            evictions: u8::try_from(number("CVMM_MC_EVICTIONS", "0")).expect("a small number"),
            handoff: std::env::var("CVMM_MC_HANDOFF").ok().map(|h| {
                let (page, to) = h.split_once(':').expect("PAGE:TO");
                (page.parse().expect("a page"), to.parse().expect("a node"))
            }),
            max_states: number("CVMM_MC_MAX_STATES", "50000000"),
            ..three_nodes_two_pages(&accesses, network)
        };
        let what = format!("{config:?}");
        pass(&what, config);
    }
}
