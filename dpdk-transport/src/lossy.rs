//! Fault injection: a [`Datagram`] wrapper that drops, duplicates and reorders.
//!
//! The network the design assumes loses, duplicates and reorders packets; loopback does
//! none of that, so tests (and the VMM's `--wire-loss P`) wrap the real backend in
//! [`LossyDatagram`]. Faults are drawn from a seeded generator, so a failing run can be
//! repeated with its seed (exactly so in one thread; with several senders the draws
//! interleave in scheduling order).
//!
//! Each fault applies on the paths the [`FaultConfig`] selects: on sending (to each
//! destination) and on receiving (from each source). With both on, which is what
//! [`FaultConfig::wire_loss`] gives, a node's traffic suffers the faults in both
//! directions even if its peer is not wrapped; if both ends of a link are wrapped, each
//! datagram meets two wrappers. Reordering holds one datagram back and releases it right
//! after the next one (or when the receiver would otherwise time out).
//!
//! Delay jitter (receiving only): each datagram that survives the other faults waits a
//! random time, uniform in `0..=delay_jitter_us`, before the receiver sees it, so
//! datagrams overtake each other as on a network whose queues vary. This stands in for
//! `tc qdisc ... netem delay` where the kernel has no `sch_netem` (as on the build
//! machine); the wait happens inside `recv_from`, which the transport calls continually.
//!
//! [`FaultConfig::from_spec`] reads the compact form the fault campaign passes to node
//! processes in `CVMM_WIRE_FAULTS` (`drop=0.01,dup=0.05,reorder=0.05,jitter_us=500`).

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::datagram::{Datagram, DatagramError, InjectedFaults, READY_SLICE};

/// SplitMix64: tiny, seedable, good enough to pick faults.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p` (clamped to 0..=1).
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // 53 random bits as a fraction in [0, 1).
        #[allow(clippy::cast_precision_loss)]
        let x = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        x < p
    }
}

/// What [`LossyDatagram`] does to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Probability that a datagram is dropped.
    pub drop_probability: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate_probability: f64,
    /// Probability that a datagram is held back and delivered after the next one.
    pub reorder_probability: f64,
    /// Apply faults to datagrams this endpoint sends.
    pub on_send: bool,
    /// Apply faults to datagrams this endpoint receives.
    pub on_receive: bool,
    /// Seed of the fault generator.
    pub seed: u64,
    /// Received datagrams are delayed by a random time up to this many microseconds
    /// (needs `on_receive`; 0: no delay).
    #[serde(default)]
    pub delay_jitter_us: u64,
}

/// Why a fault specification (`CVMM_WIRE_FAULTS`) was rejected.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FaultSpecError {
    /// An item is not `key=value`.
    #[error("Fault item {item:?} is not key=value")]
    NotKeyValue {
        /// The item.
        item: String,
    },
    /// A key that is not one of drop, dup, reorder, jitter_us, seed, send, receive.
    #[error(
        "Unknown fault {key:?} (expected drop, dup, reorder, jitter_us, seed, send or receive)"
    )]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A value that does not parse or is out of range.
    #[error("Bad value {value:?} for {key} ({expected})")]
    BadValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

impl FaultConfig {
    /// No faults: the wrapper passes everything straight through.
    pub fn none() -> Self {
        Self {
            drop_probability: 0.0,
            duplicate_probability: 0.0,
            reorder_probability: 0.0,
            on_send: false,
            on_receive: false,
            seed: 0,
            delay_jitter_us: 0,
        }
    }

    /// Reads `key=value` items separated by commas: `drop`, `dup`, `reorder`
    /// (probabilities 0..=1), `jitter_us` (microseconds of receive delay jitter), `seed`,
    /// `send` and `receive` (0 or 1: which paths; both by default). Faults not named are
    /// off; `seed` defaults to `default_seed`. An empty string is no faults.
    ///
    /// ```
    /// use dpdk_transport::FaultConfig;
    /// let c = FaultConfig::from_spec("dup=0.05,jitter_us=300", 7).unwrap();
    /// assert_eq!(c.duplicate_probability, 0.05);
    /// assert_eq!((c.drop_probability, c.delay_jitter_us, c.seed), (0.0, 300, 7));
    /// assert!(FaultConfig::from_spec("dorp=0.1", 7).is_err());
    /// ```
    pub fn from_spec(spec: &str, default_seed: u64) -> Result<Self, FaultSpecError> {
        let mut config = Self {
            on_send: true,
            on_receive: true,
            seed: default_seed,
            ..Self::none()
        };
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| FaultSpecError::NotKeyValue { item: item.into() })?;
            let (key, value) = (key.trim(), value.trim());
            let bad = |expected| FaultSpecError::BadValue {
                key: key.into(),
                value: value.into(),
                expected,
            };
            let probability = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| bad("a probability between 0 and 1"))
            };
            let number = || value.parse::<u64>().map_err(|_| bad("a whole number"));
            let flag = || match value {
                "0" => Ok(false),
                "1" => Ok(true),
                _ => Err(bad("0 or 1")),
            };
            match key {
                "drop" => config.drop_probability = probability()?,
                "dup" => config.duplicate_probability = probability()?,
                "reorder" => config.reorder_probability = probability()?,
                "jitter_us" => config.delay_jitter_us = number()?,
                "seed" => config.seed = number()?,
                "send" => config.on_send = flag()?,
                "receive" => config.on_receive = flag()?,
                _ => return Err(FaultSpecError::UnknownKey { key: key.into() }),
            }
        }
        Ok(config)
    }

    /// The VMM's `--wire-loss P`: drop, duplicate and reorder each with probability `p`,
    /// on sending and on receiving.
    pub fn wire_loss(p: f64, seed: u64) -> Self {
        let p = p.clamp(0.0, 1.0);
        Self {
            drop_probability: p,
            duplicate_probability: p,
            reorder_probability: p,
            on_send: true,
            on_receive: true,
            seed,
            delay_jitter_us: 0,
        }
    }

    fn is_active(&self) -> bool {
        (self.on_send || self.on_receive)
            && (self.drop_probability > 0.0
                || self.duplicate_probability > 0.0
                || self.reorder_probability > 0.0
                || self.delay_jitter_us > 0)
    }
}

#[derive(Debug)]
struct RxState<A> {
    /// A datagram to return before reading the backend (a duplicate or a released one).
    pending: Vec<(Vec<u8>, A)>,
    /// The datagram held back for reordering.
    held: Option<(Vec<u8>, A)>,
    /// Datagrams waiting out their delay (jitter), with the time each may be returned.
    delayed: Vec<(Instant, Vec<u8>, A)>,
}

/// A [`Datagram`] that injects faults into an inner backend.
#[derive(Debug)]
pub struct LossyDatagram<D: Datagram> {
    inner: D,
    config: FaultConfig,
    active: bool,
    rng: Mutex<SplitMix64>,
    held_tx: Mutex<Option<(Vec<u8>, D::Addr)>>,
    rx: Mutex<RxState<D::Addr>>,
    counts: Mutex<HashMap<D::Addr, InjectedFaults>>,
}

enum Fate {
    Drop,
    Duplicate,
    Hold,
    Pass,
}

impl<D: Datagram> LossyDatagram<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, config: FaultConfig) -> Self {
        Self {
            inner,
            active: config.is_active(),
            config,
            rng: Mutex::new(SplitMix64::new(config.seed)),
            held_tx: Mutex::new(None),
            rx: Mutex::new(RxState {
                pending: Vec::new(),
                held: None,
                delayed: Vec::new(),
            }),
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    fn fate(&self) -> Fate {
        let mut rng = self.rng.lock().expect("fault generator lock poisoned");
        if rng.chance(self.config.drop_probability) {
            Fate::Drop
        } else if rng.chance(self.config.duplicate_probability) {
            Fate::Duplicate
        } else if rng.chance(self.config.reorder_probability) {
            Fate::Hold
        } else {
            Fate::Pass
        }
    }

    fn count(&self, addr: D::Addr, f: impl FnOnce(&mut InjectedFaults)) {
        let mut counts = self.counts.lock().expect("fault counter lock poisoned");
        f(counts.entry(addr).or_default());
    }

    /// Copies a received datagram out of the caller's buffer.
    fn stash(buf: &[u8], len: usize) -> Vec<u8> {
        buf[..len.min(buf.len())].to_vec()
    }

    fn deliver(buf: &mut [u8], (data, from): (Vec<u8>, D::Addr)) -> Option<(usize, D::Addr)> {
        let len = data.len().min(buf.len());
        buf[..len].copy_from_slice(&data[..len]);
        Some((len, from))
    }
}

impl<D: Datagram> Datagram for LossyDatagram<D> {
    type Addr = D::Addr;

    fn local_addr(&self) -> D::Addr {
        self.inner.local_addr()
    }

    fn send_to(&self, packet: &[u8], to: D::Addr) -> Result<(), DatagramError> {
        if !self.active || !self.config.on_send {
            return self.inner.send_to(packet, to);
        }
        // Holding the lock across the sends keeps "held, then released after a later one"
        // true when several threads send.
        let mut held = self.held_tx.lock().expect("held datagram lock poisoned");
        match self.fate() {
            Fate::Drop => self.count(to, |c| c.dropped_tx += 1),
            Fate::Duplicate => {
                self.count(to, |c| c.duplicated += 1);
                self.inner.send_to(packet, to)?;
                self.inner.send_to(packet, to)?;
            }
            Fate::Hold if held.is_none() => {
                self.count(to, |c| c.reordered += 1);
                *held = Some((packet.to_vec(), to));
                return Ok(());
            }
            Fate::Hold | Fate::Pass => self.inner.send_to(packet, to)?,
        }
        if let Some((old, old_to)) = held.take() {
            self.inner.send_to(&old, old_to)?;
        }
        Ok(())
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
        wait: Duration,
    ) -> Result<Option<(usize, D::Addr)>, DatagramError> {
        if !self.active || !self.config.on_receive {
            return self.inner.recv_from(buf, wait);
        }
        let mut rx = self.rx.lock().expect("receive fault state lock poisoned");
        if self.config.delay_jitter_us == 0 {
            return self.recv_faulty(&mut rx, buf, wait);
        }
        let deadline = Instant::now() + wait;
        loop {
            let now = Instant::now();
            let due = rx
                .delayed
                .iter()
                .enumerate()
                .min_by_key(|(_, (at, _, _))| *at)
                .map(|(index, (at, _, _))| (index, *at));
            if let Some((index, at)) = due {
                if at <= now {
                    let (_, data, from) = rx.delayed.swap_remove(index);
                    return Ok(Self::deliver(buf, (data, from)));
                }
            }
            let until = due.map_or(deadline, |(_, at)| at.min(deadline));
            let slice = until.saturating_duration_since(now);
            match self.recv_faulty(&mut rx, buf, slice)? {
                Some((len, from)) => {
                    let jitter = self
                        .rng
                        .lock()
                        .expect("fault generator lock poisoned")
                        .next_u64()
                        % (self.config.delay_jitter_us + 1);
                    let at = Instant::now() + Duration::from_micros(jitter);
                    rx.delayed.push((at, Self::stash(buf, len), from));
                }
                None => {
                    // Interrupted (before `until`), or the caller's wait is over. Else a
                    // delayed datagram is due: returned on the next turn.
                    if Instant::now() < until || until >= deadline {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn recv_from_or_ready(
        &self,
        buf: &mut [u8],
        wait: Duration,
        ready: BorrowedFd<'_>,
    ) -> Result<Option<(usize, D::Addr)>, DatagramError> {
        if !self.active || !self.config.on_receive {
            return self.inner.recv_from_or_ready(buf, wait, ready);
        }
        self.recv_from(buf, wait.min(READY_SLICE))
    }

    fn interrupt(&self) {
        self.inner.interrupt();
    }

    fn injected(&self, peer: D::Addr) -> InjectedFaults {
        let counts = self.counts.lock().expect("fault counter lock poisoned");
        counts.get(&peer).copied().unwrap_or_default()
    }
}

impl<D: Datagram> LossyDatagram<D> {
    /// Receives with drops, duplicates and reordering applied (not the delay).
    fn recv_faulty(
        &self,
        rx: &mut RxState<D::Addr>,
        buf: &mut [u8],
        wait: Duration,
    ) -> Result<Option<(usize, D::Addr)>, DatagramError> {
        if let Some(item) = rx.pending.pop() {
            return Ok(Self::deliver(buf, item));
        }
        let deadline = Instant::now() + wait;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some((len, from)) = self.inner.recv_from(buf, remaining)? else {
                // Nothing more is coming now: let the held datagram go rather than
                // stall the protocol on it.
                return Ok(rx.held.take().and_then(|item| Self::deliver(buf, item)));
            };
            match self.fate() {
                Fate::Drop => {
                    self.count(from, |c| c.dropped_rx += 1);
                    continue;
                }
                Fate::Duplicate => {
                    self.count(from, |c| c.duplicated += 1);
                    rx.pending.push((Self::stash(buf, len), from));
                }
                Fate::Hold if rx.held.is_none() => {
                    self.count(from, |c| c.reordered += 1);
                    rx.held = Some((Self::stash(buf, len), from));
                    continue;
                }
                Fate::Hold | Fate::Pass => {}
            }
            if let Some(item) = rx.held.take() {
                // Returned after this one: pending is a stack, so push it under any
                // duplicate of this datagram.
                rx.pending.insert(0, item);
            }
            return Ok(Some((len, from)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemNetwork;

    fn recv_all<D: Datagram>(d: &D) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        while let Some((len, _)) = d.recv_from(&mut buf, Duration::ZERO).unwrap() {
            out.push(buf[..len].to_vec());
        }
        out
    }

    #[test]
    fn rng_matches_reference_splitmix64() {
        // First outputs of SplitMix64 seeded with 1234567 (from the reference C code).
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn chance_frequency_is_close_to_p() {
        let mut rng = SplitMix64::new(99);
        let hits = (0..100_000).filter(|_| rng.chance(0.2)).count();
        assert!((19_000..21_000).contains(&hits), "{hits}");
        assert!(!(0..1000).any(|_| rng.chance(0.0)));
        assert!((0..1000).all(|_| rng.chance(1.0)));
    }

    #[test]
    fn no_faults_pass_everything_in_order() {
        let net = MemNetwork::new();
        let a = LossyDatagram::new(net.endpoint(1), FaultConfig::none());
        let b = net.endpoint(2);
        for i in 0..10u8 {
            a.send_to(&[i], 2).unwrap();
        }
        let got = recv_all(&b);
        assert_eq!(got, (0..10u8).map(|i| vec![i]).collect::<Vec<_>>());
        assert_eq!(a.injected(2), InjectedFaults::default());
    }

    #[test]
    fn drop_all_on_send() {
        let net = MemNetwork::new();
        let config = FaultConfig {
            drop_probability: 1.0,
            on_send: true,
            ..FaultConfig::none()
        };
        let a = LossyDatagram::new(net.endpoint(1), config);
        let b = net.endpoint(2);
        for i in 0..10u8 {
            a.send_to(&[i], 2).unwrap();
        }
        assert!(recv_all(&b).is_empty());
        assert_eq!(a.injected(2).dropped_tx, 10);
    }

    #[test]
    fn duplicate_all_on_send() {
        let net = MemNetwork::new();
        let config = FaultConfig {
            duplicate_probability: 1.0,
            on_send: true,
            ..FaultConfig::none()
        };
        let a = LossyDatagram::new(net.endpoint(1), config);
        let b = net.endpoint(2);
        a.send_to(&[1], 2).unwrap();
        a.send_to(&[2], 2).unwrap();
        assert_eq!(recv_all(&b), vec![vec![1], vec![1], vec![2], vec![2]]);
        assert_eq!(a.injected(2).duplicated, 2);
    }

    #[test]
    fn reorder_on_send_swaps_neighbours() {
        let net = MemNetwork::new();
        let config = FaultConfig {
            reorder_probability: 1.0,
            on_send: true,
            ..FaultConfig::none()
        };
        let a = LossyDatagram::new(net.endpoint(1), config);
        let b = net.endpoint(2);
        for i in 0..4u8 {
            a.send_to(&[i], 2).unwrap();
        }
        // 0 held, 1 sent then 0 released, 2 held, 3 sent then 2 released.
        assert_eq!(recv_all(&b), vec![vec![1], vec![0], vec![3], vec![2]]);
        assert_eq!(a.injected(2).reordered, 2);
    }

    #[test]
    fn receive_side_faults() {
        let net = MemNetwork::new();
        let a = net.endpoint(1);
        let drop_rx = LossyDatagram::new(
            net.endpoint(2),
            FaultConfig {
                drop_probability: 1.0,
                on_receive: true,
                ..FaultConfig::none()
            },
        );
        a.send_to(&[1], 2).unwrap();
        assert!(recv_all(&drop_rx).is_empty());
        assert_eq!(drop_rx.injected(1).dropped_rx, 1);

        let reorder_rx = LossyDatagram::new(
            net.endpoint(3),
            FaultConfig {
                reorder_probability: 1.0,
                on_receive: true,
                ..FaultConfig::none()
            },
        );
        for i in 0..3u8 {
            a.send_to(&[i], 3).unwrap();
        }
        // 0 held, 1 returned, 0 released, 2 held and released when nothing else comes.
        assert_eq!(recv_all(&reorder_rx), vec![vec![1], vec![0], vec![2]]);

        let dup_rx = LossyDatagram::new(
            net.endpoint(4),
            FaultConfig {
                duplicate_probability: 1.0,
                on_receive: true,
                ..FaultConfig::none()
            },
        );
        a.send_to(&[5], 4).unwrap();
        assert_eq!(recv_all(&dup_rx), vec![vec![5], vec![5]]);
    }

    #[test]
    fn jitter_delays_and_reorders_but_loses_nothing() {
        let net = MemNetwork::new();
        let a = net.endpoint(1);
        let config = FaultConfig::from_spec("jitter_us=20000,send=0", 3).unwrap();
        let b = LossyDatagram::new(net.endpoint(2), config);
        let start = Instant::now();
        for i in 0..50u8 {
            a.send_to(&[i], 2).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        while got.len() < 50 {
            let (len, from) = b
                .recv_from(&mut buf, Duration::from_secs(5))
                .unwrap()
                .expect("every datagram arrives");
            assert_eq!((len, from), (1, 1));
            got.push(buf[0]);
        }
        // All 50 sent at once over 20 ms of jitter: some overtake others.
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50u8).collect::<Vec<_>>());
        assert_ne!(got, sorted, "no datagram was overtaken");
        assert!(start.elapsed() >= Duration::from_millis(1));
        assert!(b.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
    }

    #[test]
    fn an_interrupt_ends_a_wait_for_a_delayed_datagram() {
        let net = MemNetwork::new();
        let a = net.endpoint(1);
        let config = FaultConfig::from_spec("jitter_us=10000000,send=0", 3).unwrap();
        let b = std::sync::Arc::new(LossyDatagram::new(net.endpoint(2), config));
        a.send_to(&[1], 2).unwrap();
        let reader = {
            let b = std::sync::Arc::clone(&b);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8];
                b.recv_from(&mut buf, Duration::from_secs(3600)).unwrap()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        b.interrupt();
        assert_eq!(reader.join().unwrap(), None);
    }

    #[test]
    fn fault_specs_parse_and_reject_mistakes() {
        let c = FaultConfig::from_spec(" drop=0.01 , dup=0.2,reorder=1,seed=9,send=0 ", 1).unwrap();
        assert_eq!(c.drop_probability, 0.01);
        assert_eq!(c.duplicate_probability, 0.2);
        assert_eq!(c.reorder_probability, 1.0);
        assert_eq!(c.seed, 9);
        assert!(!c.on_send && c.on_receive);
        assert!(c.is_active());
        let none = FaultConfig::from_spec("", 4).unwrap();
        assert!(!none.is_active());
        assert_eq!(none.seed, 4);
        assert!(matches!(
            FaultConfig::from_spec("drop", 0),
            Err(FaultSpecError::NotKeyValue { .. })
        ));
        assert!(matches!(
            FaultConfig::from_spec("loss=0.1", 0),
            Err(FaultSpecError::UnknownKey { .. })
        ));
        for bad in ["drop=1.5", "dup=-0.1", "jitter_us=-3", "send=yes", "seed=x"] {
            assert!(
                matches!(
                    FaultConfig::from_spec(bad, 0),
                    Err(FaultSpecError::BadValue { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn wire_loss_rates_are_close_to_p() {
        let net = MemNetwork::new();
        let a = LossyDatagram::new(net.endpoint(1), FaultConfig::wire_loss(0.1, 7));
        let b = net.endpoint(2);
        let mut received = 0usize;
        for i in 0..20_000u32 {
            a.send_to(&i.to_le_bytes(), 2).unwrap();
            received += recv_all(&b).len();
        }
        let faults = a.injected(2);
        // Every datagram sent is received once, twice (duplicate) or not at all (drop),
        // except one that may still be held back.
        let sent = 20_000 - faults.dropped_tx + faults.duplicated;
        assert!(received as u64 == sent || received as u64 + 1 == sent);
        assert!((1_800..2_200).contains(&faults.dropped_tx), "{faults:?}");
    }
}
