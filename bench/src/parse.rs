//! What a probe run leaves behind, read back: the guest's result and phase lines, the
//! nodes' `--stats-json` document, and which data paths `cvmm run --help` offers.
//!
//! The line formats are the guest's (`guest/src/probe.rs`); the strings are repeated here
//! because the guest is a separate, freestanding workspace. `tests/tests/probe.rs` runs
//! the real guest and parses its lines with this module, so the two cannot drift apart
//! unnoticed.

use serde_json::Value;

/// The console line VP 0 prints just before its timed loop (then the kind).
pub const PHASE_BEGIN: &str = "probe-phase begin";
/// The console line VP 0 prints just after its timed loop.
pub const PHASE_END: &str = "probe-phase end";
/// How long VP 0 sleeps after each phase line (milliseconds).
pub const PHASE_SETTLE_MS: u64 = 20;

/// What the guest probe times (`probe KIND ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// First touch of a page homed on the writer's node: the local fault floor.
    Local,
    /// Read of a page homed and last written on another node.
    ReadMiss,
    /// Write of a page homed and owned by another node.
    WriteMiss,
    /// Write of a page held Shared.
    Upgrade,
    /// Write at the home of a page Shared on k other nodes.
    Invalidate,
}

impl ProbeKind {
    /// Every kind, in report order.
    pub const ALL: [ProbeKind; 5] = [
        ProbeKind::Local,
        ProbeKind::ReadMiss,
        ProbeKind::WriteMiss,
        ProbeKind::Upgrade,
        ProbeKind::Invalidate,
    ];

    /// The guest's name for it.
    pub const fn name(self) -> &'static str {
        match self {
            ProbeKind::Local => "local",
            ProbeKind::ReadMiss => "read_miss",
            ProbeKind::WriteMiss => "write_miss",
            ProbeKind::Upgrade => "upgrade",
            ProbeKind::Invalidate => "invalidate",
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One thing the benchmark measures: a kind and, for `invalidate`, its sharers (else 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeCase {
    /// The kind.
    pub kind: ProbeKind,
    /// Sharers invalidated by each write (`invalidate` only).
    pub sharers: u32,
}

impl ProbeCase {
    /// A case without sharers.
    pub const fn plain(kind: ProbeKind) -> Self {
        Self { kind, sharers: 0 }
    }

    /// `read_miss`, or `invalidate/2` for two sharers.
    pub fn label(&self) -> String {
        match self.kind {
            ProbeKind::Invalidate => format!("invalidate/{}", self.sharers),
            kind => kind.name().to_string(),
        }
    }

    /// The guest command line for `pages` pages.
    pub fn workload(&self, pages: u64) -> Vec<String> {
        let mut words = vec![
            "probe".to_string(),
            self.kind.name().to_string(),
            pages.to_string(),
        ];
        if self.kind == ProbeKind::Invalidate {
            words.push(self.sharers.to_string());
        }
        words
    }

    /// Nodes that serve node 0's faults: the home (node 1) for misses and upgrades, the
    /// sharers (nodes 1..=k) for invalidations, nobody for local faults.
    pub fn serving_nodes(&self) -> Vec<u32> {
        match self.kind {
            ProbeKind::Local => Vec::new(),
            ProbeKind::ReadMiss | ProbeKind::WriteMiss | ProbeKind::Upgrade => vec![1],
            ProbeKind::Invalidate => (1..=self.sharers).collect(),
        }
    }
}

/// What the benchmark runs on `nodes` nodes: the local floor, then (with two nodes or
/// more) the three remote kinds and invalidation with 1..nodes-1 sharers.
pub fn cases(nodes: u32) -> Vec<ProbeCase> {
    let mut cases = vec![ProbeCase::plain(ProbeKind::Local)];
    if nodes >= 2 {
        cases.extend(
            [
                ProbeKind::ReadMiss,
                ProbeKind::WriteMiss,
                ProbeKind::Upgrade,
            ]
            .map(ProbeCase::plain),
        );
        cases.extend((1..nodes).map(|sharers| ProbeCase {
            kind: ProbeKind::Invalidate,
            sharers,
        }));
    }
    cases
}

/// The numbers of one probe result line, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeLine {
    /// What was timed.
    pub case: ProbeCase,
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Mean.
    pub mean_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

/// Why a line that starts like a probe result is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeLineError {
    /// The kind is not one the guest knows.
    #[error("Unknown probe kind {0:?}")]
    UnknownKind(String),
    /// A `key=value` field is missing.
    #[error("Probe line lacks {0}=")]
    MissingField(&'static str),
    /// A field is not `key=decimal`.
    #[error("Probe line field {0:?} is not key=number")]
    BadField(String),
    /// A field the format does not have.
    #[error("Probe line has an unknown field {0:?}")]
    UnknownField(String),
}

/// Strips the `[nN] ` tag a cluster puts in front of console lines.
pub fn untag(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix("[n") {
        if let Some(end) = rest.find("] ") {
            if rest[..end].bytes().all(|b| b.is_ascii_digit()) {
                return &rest[end + 2..];
            }
        }
    }
    line
}

/// Parses a probe result line (node tag allowed). `Ok(None)`: not a probe result line at
/// all (other console output, phase lines).
pub fn parse_probe_line(line: &str) -> Result<Option<ProbeLine>, ProbeLineError> {
    let line = untag(line.trim_end());
    let Some(rest) = line.strip_prefix("probe ") else {
        return Ok(None);
    };
    let mut words = rest.split_ascii_whitespace();
    let kind_name = words.next().unwrap_or_default();
    let kind = ProbeKind::from_name(kind_name)
        .ok_or_else(|| ProbeLineError::UnknownKind(kind_name.to_string()))?;
    const KEYS: [&str; 7] = [
        "sharers", "count", "min_ns", "p50_ns", "p99_ns", "mean_ns", "max_ns",
    ];
    let mut values: [Option<u64>; 7] = [None; 7];
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| ProbeLineError::BadField(word.to_string()))?;
        let slot = KEYS
            .iter()
            .position(|k| *k == key)
            .ok_or_else(|| ProbeLineError::UnknownField(key.to_string()))?;
        let number = value
            .parse::<u64>()
            .map_err(|_| ProbeLineError::BadField(word.to_string()))?;
        values[slot] = Some(number);
    }
    let get = |i: usize| values[i].ok_or(ProbeLineError::MissingField(KEYS[i]));
    let sharers = match kind {
        ProbeKind::Invalidate => u32::try_from(get(0)?)
            .map_err(|_| ProbeLineError::BadField(format!("sharers={:?}", values[0])))?,
        _ => 0,
    };
    Ok(Some(ProbeLine {
        case: ProbeCase { kind, sharers },
        count: get(1)?,
        min_ns: get(2)?,
        p50_ns: get(3)?,
        p99_ns: get(4)?,
        mean_ns: get(5)?,
        max_ns: get(6)?,
    }))
}

/// A phase line of the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The timed loop starts.
    Begin,
    /// The timed loop ended.
    End,
}

/// The phase a console line announces, if it is a phase line.
pub fn parse_phase(line: &str) -> Option<Phase> {
    let line = untag(line.trim_end());
    if line.starts_with(PHASE_BEGIN) {
        Some(Phase::Begin)
    } else if line.starts_with(PHASE_END) {
        Some(Phase::End)
    } else {
        None
    }
}

/// Fetch service time (fault event to page ready) as the node's fault thread saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServiceTime {
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Faults behind the numbers (the probe's, plus the few the run's barriers and
    /// console took on the same node).
    pub count: u64,
}

/// The service time of `case` on `node` from a merged `--stats-json` document:
/// `fault_latency_by_kind_us` (an invalidation is the home's upgrade). `None` for the
/// local floor: no fetch happens, and the fault thread's one histogram (`latency`) mixes
/// the probe's faults with every boot fault of the run (its p50 swung from 4 to 36 us
/// between identical runs), so it would be a misleading number.
pub fn service_time(stats: &Value, node: u32, case: ProbeCase) -> Option<ServiceTime> {
    let node_stats = stats
        .get("nodes")?
        .as_array()?
        .iter()
        .find(|n| n.get("id").and_then(Value::as_u64) == Some(u64::from(node)))?;
    let key = match case.kind {
        ProbeKind::Local => return None,
        ProbeKind::ReadMiss => "read_miss",
        ProbeKind::WriteMiss => "write_miss",
        ProbeKind::Upgrade | ProbeKind::Invalidate => "upgrade",
    };
    let summary = node_stats.get("fault_latency_by_kind_us")?.get(key)?;
    let count = summary.get("count")?.as_u64()?;
    if count == 0 {
        return None;
    }
    Some(ServiceTime {
        p50_us: summary.get("p50")?.as_f64()?,
        p99_us: summary.get("p99")?.as_f64()?,
        count,
    })
}

/// A data path: who runs the coherence engine, and the wire between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataPath {
    /// `software` or `offload`.
    pub fabric: &'static str,
    /// `udp` or `dpdk`.
    pub transport: &'static str,
}

impl DataPath {
    /// The baseline every ratio is relative to.
    pub const SOFTWARE_UDP: DataPath = DataPath {
        fabric: "software",
        transport: "udp",
    };
    /// Every path the benchmark knows, in report order.
    pub const ALL: [DataPath; 4] = [
        DataPath::SOFTWARE_UDP,
        DataPath {
            fabric: "offload",
            transport: "udp",
        },
        DataPath {
            fabric: "software",
            transport: "dpdk",
        },
        DataPath {
            fabric: "offload",
            transport: "dpdk",
        },
    ];

    /// `software/udp`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.fabric, self.transport)
    }
}

/// What `cvmm run` accepts, from its `--help` text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// `--fabric` exists.
    pub fabric_flag: bool,
    /// `--transport` exists.
    pub transport_flag: bool,
    /// The help mentions `offload`.
    pub offload: bool,
    /// The help mentions `dpdk`.
    pub dpdk: bool,
}

/// Reads the options out of `cvmm run --help`.
pub fn run_options(help: &str) -> RunOptions {
    RunOptions {
        fabric_flag: help.contains("--fabric"),
        transport_flag: help.contains("--transport"),
        offload: help.contains("offload"),
        dpdk: help.contains("dpdk"),
    }
}

impl RunOptions {
    /// Whether `path` can be asked for; `Err` says why not.
    pub fn supports(&self, path: DataPath) -> Result<(), String> {
        if path.fabric == "offload" && !(self.fabric_flag && self.offload) {
            return Err("`cvmm run` has no `--fabric offload` yet".to_string());
        }
        if path.transport == "dpdk" && !(self.transport_flag && self.dpdk) {
            return Err("`cvmm run` has no `--transport dpdk` yet".to_string());
        }
        Ok(())
    }

    /// The `cvmm run` flags that select `path` (none for options `cvmm run` lacks: the
    /// default is software/udp).
    pub fn flags(&self, path: DataPath) -> Vec<String> {
        let mut flags = Vec::new();
        if self.fabric_flag {
            flags.extend(["--fabric".to_string(), path.fabric.to_string()]);
        }
        if self.transport_flag {
            flags.extend(["--transport".to_string(), path.transport.to_string()]);
        }
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_lines() {
        let line = "[n0] probe read_miss count=200 min_ns=1 p50_ns=76724 p99_ns=199527 \
                    mean_ns=86277 max_ns=353046";
        let parsed = parse_probe_line(line).unwrap().unwrap();
        assert_eq!(
            parsed,
            ProbeLine {
                case: ProbeCase::plain(ProbeKind::ReadMiss),
                count: 200,
                min_ns: 1,
                p50_ns: 76724,
                p99_ns: 199527,
                mean_ns: 86277,
                max_ns: 353046,
            }
        );
        let line = "probe invalidate sharers=3 count=20 min_ns=5 p50_ns=6 p99_ns=7 mean_ns=8 \
                    max_ns=9\n";
        let parsed = parse_probe_line(line).unwrap().unwrap();
        assert_eq!(
            parsed.case,
            ProbeCase {
                kind: ProbeKind::Invalidate,
                sharers: 3
            }
        );
        assert_eq!((parsed.count, parsed.max_ns), (20, 9));
    }

    #[test]
    fn other_lines_are_not_results() {
        assert_eq!(parse_probe_line("[n1] hello from vp 1 on node 1"), Ok(None));
        assert_eq!(parse_probe_line("[n0] probe-phase begin local"), Ok(None));
        assert_eq!(parse_probe_line(""), Ok(None));
    }

    #[test]
    fn malformed_results_are_errors() {
        assert_eq!(
            parse_probe_line("probe sideways count=1"),
            Err(ProbeLineError::UnknownKind("sideways".into()))
        );
        assert_eq!(
            parse_probe_line("probe local count=1 min_ns=1 p50_ns=1 p99_ns=1 mean_ns=1"),
            Err(ProbeLineError::MissingField("max_ns"))
        );
        assert_eq!(
            parse_probe_line(
                "probe invalidate count=1 min_ns=1 p50_ns=1 p99_ns=1 mean_ns=1 max_ns=1"
            ),
            Err(ProbeLineError::MissingField("sharers"))
        );
        assert_eq!(
            parse_probe_line("probe local count=x"),
            Err(ProbeLineError::BadField("count=x".into()))
        );
        assert_eq!(
            parse_probe_line("probe local count"),
            Err(ProbeLineError::BadField("count".into()))
        );
        assert_eq!(
            parse_probe_line("probe local speed=3"),
            Err(ProbeLineError::UnknownField("speed".into()))
        );
    }

    #[test]
    fn phases_and_tags() {
        assert_eq!(
            parse_phase("[n0] probe-phase begin read_miss"),
            Some(Phase::Begin)
        );
        assert_eq!(parse_phase("probe-phase end local\n"), Some(Phase::End));
        assert_eq!(parse_phase("probe local count=1"), None);
        assert_eq!(untag("[n12] x"), "x");
        assert_eq!(untag("[nx] x"), "[nx] x");
        assert_eq!(untag("x"), "x");
    }

    #[test]
    fn cases_by_node_count() {
        let labels = |n| cases(n).iter().map(ProbeCase::label).collect::<Vec<_>>();
        assert_eq!(labels(1), ["local"]);
        assert_eq!(
            labels(2),
            [
                "local",
                "read_miss",
                "write_miss",
                "upgrade",
                "invalidate/1"
            ]
        );
        assert_eq!(labels(4).len(), 7);
        assert_eq!(labels(4)[6], "invalidate/3");
        let inv = ProbeCase {
            kind: ProbeKind::Invalidate,
            sharers: 2,
        };
        assert_eq!(inv.workload(20), ["probe", "invalidate", "20", "2"]);
        assert_eq!(inv.serving_nodes(), [1, 2]);
        assert_eq!(
            ProbeCase::plain(ProbeKind::Upgrade).workload(5),
            ["probe", "upgrade", "5"]
        );
        assert!(ProbeCase::plain(ProbeKind::Local)
            .serving_nodes()
            .is_empty());
    }

    #[test]
    fn service_times_from_stats() {
        let stats = serde_json::json!({"nodes": [
            {"id": 1, "latency": {"p50_us": 1.0, "p99_us": 2.0, "samples": 3},
             "fault_latency_by_kind_us": {"read_miss": {"p50": 9.0, "p99": 9.5, "count": 1}}},
            {"id": 0, "latency": {"p50_us": 30.0, "p99_us": 40.0, "samples": 250},
             "fault_latency_by_kind_us": {
                "read_miss": {"p50": 60.5, "p99": 99.0, "count": 204},
                "write_miss": {"p50": 0.0, "p99": 0.0, "count": 0},
                "upgrade": {"p50": 70.0, "p99": 80.0, "count": 203}}}
        ]});
        let read = service_time(&stats, 0, ProbeCase::plain(ProbeKind::ReadMiss)).unwrap();
        assert_eq!(
            read,
            ServiceTime {
                p50_us: 60.5,
                p99_us: 99.0,
                count: 204
            }
        );
        let inv = ProbeCase {
            kind: ProbeKind::Invalidate,
            sharers: 1,
        };
        assert_eq!(service_time(&stats, 0, inv).unwrap().p50_us, 70.0);
        assert_eq!(
            service_time(&stats, 0, ProbeCase::plain(ProbeKind::Local)),
            None
        );
        // No samples, no such node, no such document: nothing.
        assert_eq!(
            service_time(&stats, 0, ProbeCase::plain(ProbeKind::WriteMiss)),
            None
        );
        assert_eq!(
            service_time(&stats, 5, ProbeCase::plain(ProbeKind::ReadMiss)),
            None
        );
        assert_eq!(
            service_time(&Value::Null, 0, ProbeCase::plain(ProbeKind::ReadMiss)),
            None
        );
    }

    #[test]
    fn paths_from_help() {
        let old = run_options("Usage: cvmm run [OPTIONS] --nodes <NODES> --wire-loss <P>");
        assert_eq!(old, RunOptions::default());
        assert_eq!(old.supports(DataPath::SOFTWARE_UDP), Ok(()));
        assert!(old.supports(DataPath::ALL[1]).is_err());
        assert!(old.supports(DataPath::ALL[2]).is_err());
        assert!(old.flags(DataPath::SOFTWARE_UDP).is_empty());

        let offload_only = run_options("--fabric <FABRIC>  [possible values: software, offload]");
        assert_eq!(offload_only.supports(DataPath::ALL[1]), Ok(()));
        assert!(offload_only.supports(DataPath::ALL[3]).is_err());
        assert_eq!(
            offload_only.flags(DataPath::ALL[1]),
            ["--fabric", "offload"]
        );

        let all = run_options("--fabric <F> software|offload --transport <T> udp|dpdk");
        for path in DataPath::ALL {
            assert_eq!(all.supports(path), Ok(()));
        }
        assert_eq!(
            all.flags(DataPath::ALL[3]),
            ["--fabric", "offload", "--transport", "dpdk"]
        );
    }
}
