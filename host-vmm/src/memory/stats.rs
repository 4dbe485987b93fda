//! Fault statistics: lock-free counters the fault thread bumps, and a fixed log-scale
//! latency histogram, so recording costs a few atomic adds and never allocates.
//!
//! The histogram is log-linear (as HdrHistogram): values in nanoseconds, exact below 16,
//! then 16 linear sub-buckets per power of two, so any percentile is within 1/32 of the
//! true value (half a bucket) while the whole table is 592 counters up to 2^40 ns (18
//! minutes; larger values land in the last bucket).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::uffd::FaultKind;

const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Values at or above `2^MAX_EXP` ns share the last bucket.
const MAX_EXP: u32 = 40;
const BUCKETS: usize = (1 << SUB_BITS) * (1 + (MAX_EXP - SUB_BITS) as usize);

/// A concurrent histogram of durations; see the module docs.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUB {
        // Below 16: one bucket per value (fits usize).
        return usize::try_from(ns).unwrap_or(0);
    }
    let exp = 63 - ns.leading_zeros();
    if exp >= MAX_EXP {
        return BUCKETS - 1;
    }
    let shift = exp - SUB_BITS;
    let sub = (ns >> shift) - SUB;
    // exp < 40 and sub < 16, so the index is below BUCKETS.
    usize::try_from(SUB + u64::from(shift) * SUB + sub).unwrap_or(BUCKETS - 1)
}

/// `(lowest value, width)` of a bucket.
fn bucket_range(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, 1);
    }
    let shift = (index - SUB) / SUB;
    let sub = (index - SUB) % SUB;
    ((SUB + sub) << shift, 1 << shift)
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn record(&self, duration: Duration) {
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.record_ns(ns);
    }

    /// Records one value in nanoseconds.
    pub fn record_ns(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `p`-th percentile (0 < p <= 100, nearest rank) in microseconds, within half a
    /// bucket of the exact value; `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        // Nearest rank: the smallest value with at least p% of the values at or below it.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rank = ((p.clamp(0.0, 100.0) / 100.0 * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket_range(index);
                let mid = low + width / 2;
                return Some(mid as f64 / 1000.0);
            }
        }
        None
    }

    /// For each bound (ns, ascending): how many values are at most that bound, counting a
    /// bucket only once all of it is (so a count is never more than the exact one, and
    /// less by at most one bucket's values). The buckets of a Prometheus histogram.
    pub fn cumulative_counts(&self, bounds_ns: &[u64]) -> Vec<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        bounds_ns
            .iter()
            .map(|&bound| {
                counts
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| {
                        let (low, width) = bucket_range(*index);
                        low.saturating_add(width - 1) <= bound
                    })
                    .map(|(_, count)| count)
                    .sum()
            })
            .collect()
    }

    /// Sum of the values recorded, in microseconds.
    pub fn sum_us(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Largest value recorded, in microseconds.
    pub fn max_us(&self) -> f64 {
        self.max_ns.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Mean in microseconds (0 when empty).
    pub fn mean_us(&self) -> f64 {
        let count = self.count();
        if count == 0 {
            return 0.0;
        }
        self.sum_ns.load(Ordering::Relaxed) as f64 / count as f64 / 1000.0
    }
}

/// Counters of the fault path; see [`FaultStatsSnapshot`] for what each one counts.
#[derive(Debug, Default)]
pub struct FaultStats {
    missing: AtomicU64,
    minor: AtomicU64,
    write_protect: AtomicU64,
    coalesced: AtomicU64,
    resolved: AtomicU64,
    woken: AtomicU64,
    fetches: AtomicU64,
    errors: AtomicU64,
    latency: LatencyHistogram,
}

/// A latency summary in microseconds (all 0 when there are no samples).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

/// A plain copy of [`FaultStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct FaultStatsSnapshot {
    /// Events for pages with no page-cache page.
    pub missing_faults: u64,
    /// Events for page-cache pages without a PTE (after `drop_page`, or DMA-written).
    pub minor_faults: u64,
    /// Events for writes to write-protected pages.
    pub write_protect_faults: u64,
    /// Events answered by another event's resolution: duplicates in one batch, EEXIST
    /// from the kernel (someone mapped it first), or a fault on a page being fetched.
    pub coalesced: u64,
    /// Mapping ioctls that resolved a fault (ZEROPAGE/COPY/CONTINUE/unprotect).
    pub resolved: u64,
    /// UFFDIO_WAKE issued because the page was already mapped (EEXIST) or an ioctl failed.
    pub woken: u64,
    /// Faults handed to the page resolver (the fabric) because the local copy was not
    /// good enough.
    pub fetches: u64,
    /// Failed ioctls or unexpected events (logged).
    pub errors: u64,
    /// Fault service time: event read to resolution (or fetch completion).
    pub latency: LatencySummary,
}

impl FaultStats {
    /// All zero.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn count_fault(&self, kind: FaultKind) {
        let counter = match kind {
            FaultKind::Missing => &self.missing,
            FaultKind::Minor => &self.minor,
            FaultKind::WriteProtect => &self.write_protect,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn count_coalesced(&self) {
        self.coalesced.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn count_resolved(&self) {
        self.resolved.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn count_woken(&self) {
        self.woken.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn count_fetch(&self) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The service-time histogram.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// A consistent-enough copy (each counter is read once; counters racing with the
    /// fault thread may be off by the events in flight).
    pub fn snapshot(&self) -> FaultStatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let pct = |p| self.latency.percentile(p).unwrap_or(0.0);
        FaultStatsSnapshot {
            missing_faults: load(&self.missing),
            minor_faults: load(&self.minor),
            write_protect_faults: load(&self.write_protect),
            coalesced: load(&self.coalesced),
            resolved: load(&self.resolved),
            woken: load(&self.woken),
            fetches: load(&self.fetches),
            errors: load(&self.errors),
            latency: LatencySummary {
                samples: self.latency.count(),
                p50_us: pct(50.0),
                p90_us: pct(90.0),
                p99_us: pct(99.0),
                mean_us: self.latency.mean_us(),
                max_us: self.latency.max_us(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a deterministic spread of values over many octaves.
    fn values(n: usize, mut seed: u64) -> Vec<u64> {
        (0..n)
            .map(|_| {
                seed ^= seed >> 12;
                seed ^= seed << 25;
                seed ^= seed >> 27;
                let r = seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
                // Log-uniform from 1 ns to about 2^30 ns.
                (r >> 34) >> (r % 31)
            })
            .collect()
    }

    #[test]
    fn cumulative_counts_never_exceed_the_exact_ones_and_trail_by_one_bucket_at_most() {
        let vals = values(5000, 0x1234_5678);
        let h = LatencyHistogram::new();
        for v in &vals {
            h.record_ns(*v);
        }
        let bounds = [10u64, 1_000, 25_000, 100_000, 1_000_000, u64::MAX];
        let got = h.cumulative_counts(&bounds);
        for (bound, count) in bounds.iter().zip(&got) {
            let exact = vals.iter().filter(|v| *v <= bound).count() as u64;
            // Values in the bucket that straddles the bound are the only ones left out.
            let straddling = vals
                .iter()
                .filter(|v| **v > *bound / 17 * 16 && *v <= bound)
                .count() as u64;
            assert!(*count <= exact, "{bound}: {count} > {exact}");
            assert!(exact - count <= straddling, "{bound}: {count} vs {exact}");
        }
        assert_eq!(got.last(), Some(&5000));
        let sum: u64 = vals.iter().sum();
        assert!((h.sum_us() - sum as f64 / 1000.0).abs() < 1e-6);
    }

    fn exact_percentile(sorted: &[u64], p: f64) -> u64 {
        let n = sorted.len() as f64;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rank = ((p / 100.0 * n).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn percentiles_match_sorting_within_half_a_bucket() {
        for seed in [1, 7, 0x1234_5678, 99] {
            let vals = values(5000, seed);
            let h = LatencyHistogram::new();
            for &v in &vals {
                h.record_ns(v);
            }
            let mut sorted = vals.clone();
            sorted.sort_unstable();
            assert_eq!(h.count(), 5000);
            for p in [0.1, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 100.0] {
                let exact = exact_percentile(&sorted, p) as f64 / 1000.0;
                let got = h.percentile(p).expect("not empty");
                let tolerance = exact / 32.0 + 0.001;
                assert!(
                    (got - exact).abs() <= tolerance,
                    "seed {seed} p{p}: histogram {got} us, exact {exact} us"
                );
            }
            let max = *sorted.last().expect("not empty") as f64 / 1000.0;
            assert!((h.max_us() - max).abs() < 1e-9);
        }
    }

    #[test]
    fn small_values_are_exact_and_buckets_are_contiguous() {
        for v in 0..SUB {
            let (low, width) = bucket_range(bucket_of(v));
            assert_eq!((low, width), (v, 1));
        }
        // Every value lies in its bucket, and bucket i ends where bucket i + 1 starts.
        for i in 0..BUCKETS - 1 {
            let (low, width) = bucket_range(i);
            let (next, _) = bucket_range(i + 1);
            assert_eq!(low + width, next, "bucket {i}");
            assert_eq!(bucket_of(low), i);
            assert_eq!(bucket_of(low + width - 1), i);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(1 << MAX_EXP), BUCKETS - 1);
    }

    #[test]
    fn empty_histogram_has_no_percentile() {
        let h = LatencyHistogram::new();
        assert_eq!(h.percentile(50.0), None);
        assert_eq!(h.mean_us(), 0.0);
        let s = FaultStats::new().snapshot();
        assert_eq!(s, FaultStatsSnapshot::default());
    }

    #[test]
    fn snapshot_counts_by_kind() {
        let s = FaultStats::new();
        s.count_fault(FaultKind::Minor);
        s.count_fault(FaultKind::Minor);
        s.count_fault(FaultKind::WriteProtect);
        s.count_coalesced();
        s.latency().record(Duration::from_micros(10));
        let snap = s.snapshot();
        assert_eq!(
            (
                snap.missing_faults,
                snap.minor_faults,
                snap.write_protect_faults
            ),
            (0, 2, 1)
        );
        assert_eq!(snap.coalesced, 1);
        assert_eq!(snap.latency.samples, 1);
        // 10 us = 10_000 ns lies in a bucket of width 512 ns starting at 9_728 ns.
        assert!((snap.latency.p50_us - 9.984).abs() < 1e-9);
    }
}
