//! The fault-latency probe's pure parts: which kinds of access it times, which cluster
//! shapes each kind needs, how raw TSC samples become the result line, and the exact
//! format of that line (the `cvmm bench fault-latency` parser in
//! `bench/src/parse.rs` reads it; change both together).
//!
//! The kernel side (`src/kernel/workloads/probe.rs`) puts pages in the state a kind needs,
//! times one load or store per page with `rdtsc`, and hands the cycle counts here.
//!
//! Result line (one per run; numbers in decimal nanoseconds, `sharers=` only for
//! `invalidate`):
//!
//! ```text
//! probe read_miss count=200 min_ns=.. p50_ns=.. p99_ns=.. mean_ns=.. max_ns=..
//! probe invalidate sharers=2 count=200 min_ns=.. p50_ns=.. p99_ns=.. mean_ns=.. max_ns=..
//! ```
//!
//! Percentiles are nearest-rank: `p` of `n` sorted samples is the sample at 1-based rank
//! `ceil(p * n / 100)`.
//!
//! ```
//! use guest::probe::{summarize, ProbeKind, ProbeLine};
//! let mut cycles = [3000, 1000, 2000];
//! let summary = summarize(&mut cycles, 1_000_000).unwrap(); // 1 GHz: 1 cycle = 1 ns
//! assert_eq!(summary.p50_ns, 2000);
//! let line = ProbeLine { kind: ProbeKind::ReadMiss, sharers: 0, summary };
//! assert_eq!(
//!     format!("{line}"),
//!     "probe read_miss count=3 min_ns=1000 p50_ns=2000 p99_ns=3000 mean_ns=2000 max_ns=3000"
//! );
//! ```

use core::fmt;

/// Console line VP 0 prints just before its timed loop (the benchmark starts measuring
/// the serving nodes' CPU time when it sees it).
pub const PHASE_BEGIN: &str = "probe-phase begin";
/// Console line VP 0 prints just after its timed loop.
pub const PHASE_END: &str = "probe-phase end";
/// How long VP 0 sleeps after each phase line, so that whoever reads the console has the
/// line before anything else happens (milliseconds).
pub const PHASE_SETTLE_MS: u64 = 20;

/// What the probe times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// First store to pages homed on the writer's own node: the local fault floor.
    Local,
    /// Load of pages homed and last written on node 1.
    ReadMiss,
    /// Store to pages homed and owned by node 1, never read by node 0.
    WriteMiss,
    /// Store to pages homed on node 1 that node 0 holds Shared.
    Upgrade,
    /// Store to pages homed on node 0 and Shared on nodes 1..=k: the home waits for k
    /// invalidation acks.
    Invalidate,
}

impl ProbeKind {
    /// Every kind.
    pub const ALL: [ProbeKind; 5] = [
        ProbeKind::Local,
        ProbeKind::ReadMiss,
        ProbeKind::WriteMiss,
        ProbeKind::Upgrade,
        ProbeKind::Invalidate,
    ];

    /// The kind named `name` on the command line.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().as_bytes() == name)
    }

    /// The command line name, also printed in the result line.
    pub const fn name(self) -> &'static str {
        match self {
            ProbeKind::Local => "local",
            ProbeKind::ReadMiss => "read_miss",
            ProbeKind::WriteMiss => "write_miss",
            ProbeKind::Upgrade => "upgrade",
            ProbeKind::Invalidate => "invalidate",
        }
    }

    /// True when the timed access is a store.
    pub const fn is_write(self) -> bool {
        !matches!(self, ProbeKind::ReadMiss)
    }

    /// Fewest nodes the kind needs with `sharers` sharers.
    pub const fn nodes_needed(self, sharers: u32) -> u64 {
        match self {
            ProbeKind::Local => 1,
            ProbeKind::ReadMiss | ProbeKind::WriteMiss | ProbeKind::Upgrade => 2,
            ProbeKind::Invalidate => sharers as u64 + 1,
        }
    }

    /// Node whose memory holds the probed pages.
    pub const fn home_node(self) -> u32 {
        match self {
            ProbeKind::Local | ProbeKind::Invalidate => 0,
            ProbeKind::ReadMiss | ProbeKind::WriteMiss | ProbeKind::Upgrade => 1,
        }
    }
}

/// Why the probe cannot run (or found wrong data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The cluster has too few nodes for the kind.
    #[error("probe {kind} (sharers: {sharers}) needs at least {needed} nodes, there are {nodes}")]
    TooFewNodes {
        /// Kind name.
        kind: &'static str,
        /// Sharers asked for.
        sharers: u32,
        /// Nodes needed.
        needed: u64,
        /// Nodes present.
        nodes: u64,
    },
    /// A node has no VP to act for it.
    #[error("probe needs a VP on node {node}")]
    NoVpOnNode {
        /// The node.
        node: u32,
    },
    /// The probed pages did not all land on the node they must be homed on.
    #[error("probe could not place {pages} pages on node {node} (memory per node too small?)")]
    Placement {
        /// Pages asked for.
        pages: u64,
        /// Intended home.
        node: u32,
    },
    /// The configuration gives no TSC rate, so cycles cannot become nanoseconds.
    #[error("probe needs tsc_khz in the configuration, which is 0")]
    NoTscRate,
    /// A load returned something other than what the last writer stored: coherence broke.
    #[error("probe read {got:#x} from page {index}, expected {expected:#x}")]
    WrongData {
        /// Page index within the probed block.
        index: u64,
        /// Value stored.
        expected: u64,
        /// Value read.
        got: u64,
    },
}

/// Checks that `nodes` nodes are enough for `kind` with `sharers` sharers.
pub fn check_shape(kind: ProbeKind, sharers: u32, nodes: u64) -> Result<(), ProbeError> {
    let needed = kind.nodes_needed(sharers);
    if nodes < needed {
        return Err(ProbeError::TooFewNodes {
            kind: kind.name(),
            sharers,
            needed,
            nodes,
        });
    }
    Ok(())
}

/// The value the probe stores in word 0 of page `index` before reading it back: distinct
/// per page and never 0 (a page that was never written reads 0).
pub const fn page_pattern(index: u64) -> u64 {
    0x5052_4f42_0000_0000 | (index + 1)
}

/// Nanoseconds in `cycles` TSC cycles at `tsc_khz` (0 when the rate is unknown).
pub fn cycles_to_ns(cycles: u64, tsc_khz: u64) -> u64 {
    if tsc_khz == 0 {
        return 0;
    }
    let ns = u128::from(cycles) * 1_000_000 / u128::from(tsc_khz);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Index into `n` sorted samples of the nearest-rank `p`-th percentile (`n > 0`).
pub fn percentile_index(n: usize, p: u32) -> usize {
    let rank = (n * p as usize).div_ceil(100);
    rank.clamp(1, n.max(1)) - 1
}

/// Latency summary of one probe run, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSummary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min_ns: u64,
    /// Median (nearest rank).
    pub p50_ns: u64,
    /// 99th percentile (nearest rank).
    pub p99_ns: u64,
    /// Mean, rounded down.
    pub mean_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

/// Sorts `cycles` and summarizes it in nanoseconds; `None` when empty.
pub fn summarize(cycles: &mut [u64], tsc_khz: u64) -> Option<ProbeSummary> {
    if cycles.is_empty() {
        return None;
    }
    cycles.sort_unstable();
    let n = cycles.len();
    let sum: u128 = cycles.iter().map(|&c| u128::from(c)).sum();
    let mean = u64::try_from(sum / n as u128).unwrap_or(u64::MAX);
    let ns = |c: u64| cycles_to_ns(c, tsc_khz);
    Some(ProbeSummary {
        count: n as u64,
        min_ns: ns(cycles[0]),
        p50_ns: ns(cycles[percentile_index(n, 50)]),
        p99_ns: ns(cycles[percentile_index(n, 99)]),
        mean_ns: ns(mean),
        max_ns: ns(cycles[n - 1]),
    })
}

/// The result line of one run (see the module documentation for the format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeLine {
    /// What was timed.
    pub kind: ProbeKind,
    /// Sharers (printed for `invalidate` only).
    pub sharers: u32,
    /// The numbers.
    pub summary: ProbeSummary,
}

impl fmt::Display for ProbeLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "probe {}", self.kind.name())?;
        if self.kind == ProbeKind::Invalidate {
            write!(f, " sharers={}", self.sharers)?;
        }
        let s = &self.summary;
        write!(
            f,
            " count={} min_ns={} p50_ns={} p99_ns={} mean_ns={} max_ns={}",
            s.count, s.min_ns, s.p50_ns, s.p99_ns, s.mean_ns, s.max_ns
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in ProbeKind::ALL {
            assert_eq!(ProbeKind::from_name(kind.name().as_bytes()), Some(kind));
        }
        assert_eq!(ProbeKind::from_name(b"readmiss"), None);
        assert_eq!(ProbeKind::from_name(b""), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        // Ranks worked out by hand: ceil(p * n / 100).
        assert_eq!(percentile_index(1, 50), 0);
        assert_eq!(percentile_index(1, 99), 0);
        assert_eq!(percentile_index(2, 50), 0);
        assert_eq!(percentile_index(3, 50), 1);
        assert_eq!(percentile_index(100, 50), 49);
        assert_eq!(percentile_index(100, 99), 98);
        assert_eq!(percentile_index(200, 50), 99);
        assert_eq!(percentile_index(200, 99), 197);
        assert_eq!(percentile_index(20, 99), 19);
        assert_eq!(percentile_index(10, 100), 9);
    }

    #[test]
    fn summary_of_known_samples() {
        // 1..=200 cycles, shuffled; at 2 GHz one cycle is half a nanosecond.
        let mut cycles: Vec<u64> = (1..=200).map(|i| (i * 7919) % 200 + 1).collect();
        let mut sorted = cycles.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=200).collect::<Vec<_>>());
        let s = summarize(&mut cycles, 2_000_000).unwrap();
        assert_eq!(s.count, 200);
        assert_eq!(s.min_ns, 0); // 1 cycle = 0.5 ns, rounded down
        assert_eq!(s.p50_ns, 50); // rank 100 -> 100 cycles
        assert_eq!(s.p99_ns, 99); // rank 198 -> 198 cycles
        assert_eq!(s.mean_ns, 50); // mean 100.5 cycles -> 100 -> 50 ns
        assert_eq!(s.max_ns, 100);
        assert_eq!(cycles, sorted, "summarize sorts in place");
    }

    #[test]
    fn empty_and_unknown_rate() {
        assert_eq!(summarize(&mut [], 1000), None);
        assert_eq!(cycles_to_ns(12345, 0), 0);
        assert_eq!(cycles_to_ns(3_000_000, 3_000_000), 1_000_000);
        assert_eq!(cycles_to_ns(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn line_format() {
        let summary = ProbeSummary {
            count: 5,
            min_ns: 1,
            p50_ns: 2,
            p99_ns: 3,
            mean_ns: 4,
            max_ns: 5,
        };
        let line = ProbeLine {
            kind: ProbeKind::Invalidate,
            sharers: 3,
            summary,
        };
        assert_eq!(
            line.to_string(),
            "probe invalidate sharers=3 count=5 min_ns=1 p50_ns=2 p99_ns=3 mean_ns=4 max_ns=5"
        );
        let line = ProbeLine {
            kind: ProbeKind::Upgrade,
            sharers: 3,
            summary,
        };
        assert_eq!(
            line.to_string(),
            "probe upgrade count=5 min_ns=1 p50_ns=2 p99_ns=3 mean_ns=4 max_ns=5"
        );
    }

    #[test]
    fn shapes() {
        assert_eq!(check_shape(ProbeKind::Local, 0, 1), Ok(()));
        assert_eq!(check_shape(ProbeKind::ReadMiss, 0, 2), Ok(()));
        assert_eq!(check_shape(ProbeKind::Invalidate, 3, 4), Ok(()));
        assert_eq!(
            check_shape(ProbeKind::Invalidate, 2, 2),
            Err(ProbeError::TooFewNodes {
                kind: "invalidate",
                sharers: 2,
                needed: 3,
                nodes: 2
            })
        );
        assert!(check_shape(ProbeKind::Upgrade, 0, 1).is_err());
    }

    #[test]
    fn patterns_are_distinct_and_nonzero() {
        let mut seen: Vec<u64> = (0..1000).map(page_pattern).collect();
        assert!(seen.iter().all(|&p| p != 0));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 1000);
    }
}
