//! Fabric counters and remote-fault latencies by kind, for `--stats-json`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::memory::LatencyHistogram;

/// The kinds of remote fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKindLatency {
    /// Read of an Invalid page.
    ReadMiss,
    /// Write of an Invalid page.
    WriteMiss,
    /// Write of a Shared page.
    Upgrade,
}

/// Counters of one node's fabric.
#[derive(Debug, Default)]
pub struct FabricStats {
    read_misses: AtomicU64,
    write_misses: AtomicU64,
    upgrades: AtomicU64,
    pages_sent: AtomicU64,
    bad_messages: AtomicU64,
    send_failures: AtomicU64,
    engine_errors: AtomicU64,
    all: LatencyHistogram,
    read: LatencyHistogram,
    write: LatencyHistogram,
    upgrade: LatencyHistogram,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// p50/p99/count of one latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencyUs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Samples.
    pub count: u64,
}

/// Upper bounds of the latency histograms (`--stats-json`, `/metrics`), in µs: from a
/// fast remote fault to a retransmitted one.
pub const HISTOGRAM_BOUNDS_US: [u64; 11] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000, 100_000, 1_000_000,
];

/// A latency histogram: how many faults took at most each bound.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Histogram {
    /// The bounds, µs ([`HISTOGRAM_BOUNDS_US`]).
    pub le_us: Vec<u64>,
    /// Faults at most each bound (cumulative, as Prometheus's buckets).
    pub cumulative: Vec<u64>,
    /// All faults.
    pub count: u64,
    /// Their total latency, µs.
    pub sum_us: f64,
}

fn histogram(h: &LatencyHistogram) -> Histogram {
    let bounds_ns: Vec<u64> = HISTOGRAM_BOUNDS_US.iter().map(|us| us * 1000).collect();
    Histogram {
        le_us: HISTOGRAM_BOUNDS_US.to_vec(),
        cumulative: h.cumulative_counts(&bounds_ns),
        count: h.count(),
        sum_us: h.sum_us(),
    }
}

/// Histograms by fault kind.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HistogramsByKind {
    /// Read misses.
    pub read_miss: Histogram,
    /// Write misses.
    pub write_miss: Histogram,
    /// Upgrades.
    pub upgrade: Histogram,
}

fn summary(h: &LatencyHistogram) -> LatencyUs {
    LatencyUs {
        p50: h.percentile(50.0).unwrap_or(0.0),
        p99: h.percentile(99.0).unwrap_or(0.0),
        count: h.count(),
    }
}

impl FabricStats {
    /// A remote fault started.
    pub fn count_fault(&self, kind: FaultKindLatency) {
        bump(match kind {
            FaultKindLatency::ReadMiss => &self.read_misses,
            FaultKindLatency::WriteMiss => &self.write_misses,
            FaultKindLatency::Upgrade => &self.upgrades,
        });
    }
    /// A remote fault completed after `d`.
    pub fn record(&self, kind: FaultKindLatency, d: Duration) {
        self.all.record(d);
        match kind {
            FaultKindLatency::ReadMiss => self.read.record(d),
            FaultKindLatency::WriteMiss => self.write.record(d),
            FaultKindLatency::Upgrade => self.upgrade.record(d),
        }
    }
    /// A page was sent.
    pub fn count_page_sent(&self) {
        bump(&self.pages_sent);
    }
    /// A message failed to decode or made no sense here.
    pub fn count_bad_message(&self) {
        bump(&self.bad_messages);
    }
    /// A send failed.
    pub fn count_send_failure(&self) {
        bump(&self.send_failures);
    }
    /// The engine refused an input.
    pub fn count_engine_error(&self) {
        bump(&self.engine_errors);
    }

    /// A plain copy.
    pub fn snapshot(&self) -> FabricStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FabricStatsSnapshot {
            remote_read_faults: get(&self.read_misses),
            remote_write_faults: get(&self.write_misses),
            upgrades: get(&self.upgrades),
            pages_sent: get(&self.pages_sent),
            bytes_sent: get(&self.pages_sent) * 4096,
            bad_messages: get(&self.bad_messages),
            send_failures: get(&self.send_failures),
            engine_errors: get(&self.engine_errors),
            fault_latency_us: summary(&self.all),
            fault_latency_by_kind_us: LatencyByKind {
                read_miss: summary(&self.read),
                write_miss: summary(&self.write),
                upgrade: summary(&self.upgrade),
            },
            fault_latency_histograms_us: HistogramsByKind {
                read_miss: histogram(&self.read),
                write_miss: histogram(&self.write),
                upgrade: histogram(&self.upgrade),
            },
        }
    }
}

/// Remote fault latency per kind.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencyByKind {
    /// Read misses.
    pub read_miss: LatencyUs,
    /// Write misses.
    pub write_miss: LatencyUs,
    /// Upgrades.
    pub upgrade: LatencyUs,
}

/// What `--stats-json` reports for the fabric of a node.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FabricStatsSnapshot {
    /// Reads of pages Invalid here.
    pub remote_read_faults: u64,
    /// Writes of pages Invalid here.
    pub remote_write_faults: u64,
    /// Writes of pages Shared here.
    pub upgrades: u64,
    /// Pages sent.
    pub pages_sent: u64,
    /// Page bytes sent.
    pub bytes_sent: u64,
    /// Messages dropped as malformed or misdirected.
    pub bad_messages: u64,
    /// Sends that failed (dead peer, shutdown).
    pub send_failures: u64,
    /// Inputs the engine refused.
    pub engine_errors: u64,
    /// Remote fault latency, fetch start to page mapped.
    pub fault_latency_us: LatencyUs,
    /// The same by kind.
    pub fault_latency_by_kind_us: LatencyByKind,
    /// The same latencies as histograms (for `/metrics`).
    pub fault_latency_histograms_us: HistogramsByKind,
}
