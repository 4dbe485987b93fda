//! The node-to-node wire of a cvmm cluster.
//!
//! The coherence engine needs messages between nodes to arrive exactly once and in order
//! per pair of nodes, and it needs to know when a node is gone. Networks give neither, so
//! this crate builds them, once, over the smallest backend interface that both the kernel
//! and a DPDK poll-mode port can offer:
//!
//! ```text
//!  host-vmm / NIC firmware          Transport trait: send(peer, bytes), recv() -> Event
//!            |
//!  ReliableTransport<D>             sequencing, acks, retransmission, liveness, auth hook
//!            |                      (peer.rs: pure state machine; transport.rs: threads)
//!  [LossyDatagram<D>]               optional fault injection (tests, --wire-loss P)
//!            |
//!  D: Datagram                      UdpDatagram (kernel UDP, always built)
//!                                   DpdkDatagram (feature `dpdk`: memif, af_packet, PCI)
//! ```
//!
//! Design rules: backends implement only [`Datagram`]; the protocol logic in `peer.rs` has
//! no I/O and no clock, so it is unit-tested with made-up instants; everything read from
//! the wire is validated ([`wire::decode`] never panics, a property test checks it); a
//! whole message travels in one datagram (no fragmentation: on a real LAN the links need
//! jumbo frames, MTU >= 4.5 KB).
//!
//! # Protocol (copy of the text for docs/protocol.md)
//!
//! **Packet.** `header (48 bytes) | payload (0..=4352 bytes) | tag (0..=32 bytes)`. All
//! integers little-endian:
//!
//! | off | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 4 | magic | `"CVMW"` |
//! | 4 | 1 | version | 1 |
//! | 5 | 1 | kind | 1 data, 2 ack, 3 heartbeat |
//! | 6 | 1 | flags | none defined, must be 0 |
//! | 7 | 1 | tag_len | bytes of authentication tag after the payload |
//! | 8 | 4 | cluster | virtual computer / server id; other clusters' packets are dropped |
//! | 12 | 4 | src | sending node |
//! | 16 | 4 | dst | receiving node |
//! | 20 | 4 | session | sender's incarnation of this link (random per link creation) |
//! | 24 | 4 | seq | data: sequence number (per ordered node pair, from 0, never wrapping); ack/heartbeat: the sender's control counter |
//! | 28 | 4 | ack | cumulative: every seq below this was received |
//! | 32 | 8 | sack | bit i: seq `ack + 1 + i` was received |
//! | 40 | 2 | payload_len | bytes of payload (only data packets have any) |
//! | 42 | 4 | echo | the receiver's session as the sender knows it (0: not heard yet) |
//! | 46 | 2 | reserved | 0 |
//!
//! A datagram is accepted only if it decodes (magic, version, kind, flags, reserved,
//! lengths add up exactly, payload only on data), its cluster and dst match, its tag
//! verifies, its src is a configured peer sending from that peer's address, the peer is not
//! dead, its `echo` is this link's own session and its session is the peer's confirmed one
//! (so packets of a previous run, or of a link removed and added again, cannot be mistaken
//! for this one's, even replayed under the same key), and, for an ack or heartbeat, its
//! control counter is newer than the last one accepted. Everything else is dropped and
//! counted ([`TransportStats`]); nothing is answered, except that an unconfirmed packet
//! from the peer's address gets an ack that tells the peer which session to echo.
//!
//! **Authentication** ([`HmacSha256Auth`], issue 6): every packet carries HMAC-SHA256
//! truncated to 16 bytes, over header and payload, under a key derived from the cluster
//! key ([`ClusterKey`]) and the cluster id. Replays are the sessions' and sequence
//! numbers' business (`peer.rs` says how none is acted on twice).
//!
//! **Sending.** Each message gets the next seq and stays in the send window until
//! acknowledged; a sender blocks when `window_packets` (default 64) are unacknowledged.
//! Every packet of any kind carries the current ack and sack, so replies acknowledge
//! for free. Retransmission: per-packet timer of RTO, computed as in RFC 6298 from
//! round-trip samples of packets sent once (Karn), clamped to 1 ms..200 ms, doubled on each
//! timeout (capped), reset when an ack makes progress. RTT samples come only from the
//! newest packet an ack newly covers (older ones waited behind a hole). Fast retransmit,
//! without waiting for the timer: a packet sent once is resent when 3 later packets were
//! selectively acknowledged; a packet already resent is resent again as soon as a packet
//! whose latest copy was sent after its own latest copy is acknowledged (the RACK idea,
//! RFC 8985). Selectively acknowledged packets are never resent. A retransmission
//! refreshes its ack fields and tag.
//!
//! **Receiving.** `seq < next expected`: duplicate, dropped, acked at once. `seq ==
//! next`: delivered, then every consecutive packet waiting in the reorder buffer.
//! `next < seq < next + 1024`: buffered (a second copy is a duplicate), acked at once so
//! the sender sees the hole. Further ahead: dropped. In-order data is acked after 4
//! packets or 200 µs, whichever first, unless a packet towards the sender carries it.
//!
//! **Liveness.** A node sends a heartbeat to a peer it has sent nothing to for 250 ms.
//! A peer not heard from (no accepted packet) for `dead_after_ms` (default 3 s) is dead:
//! its queued data is discarded, `send` to it fails with [`TransportError::PeerDead`],
//! its later packets are dropped, and `recv` returns [`Event::PeerDown`] once. A dead or
//! restarted peer comes back only by cluster reconfiguration (`remove_peer`/`add_peer`).
//!
//! **Invariants.** Per ordered pair (src, dst) within one session: the application at
//! dst receives a prefix of the messages src sent, in order, each once. Nothing is
//! delivered twice even if the network duplicates; nothing is skipped: a gap blocks
//! delivery until it is filled or the peer is declared dead. A session numbers at most
//! 2^32 - 1 data packets (and as many control packets); a link that used them up is
//! declared dead rather than reuse a number a captured packet could carry.
//!
//! **Threads.** A driver thread per transport runs timers and reads the backend when no
//! application thread waits in `recv` (a waiting `recv` reads it itself, which saves a
//! thread switch per message; `transport.rs` says why there is a driver at all); `send`
//! and `recv` may be called from any thread. Received messages wait in an unbounded queue: the
//! window bounds what is in flight, not what the application has yet to read, because
//! acknowledging only consumed messages lets two nodes that answer from their receive
//! thread deadlock each other.
//!
//! **Fault injection.** [`LossyDatagram`] with [`FaultConfig::wire_loss`]`(p, seed)` (the
//! VMM's `--wire-loss P`) drops, duplicates and reorders each with probability `p`, on
//! sending and on receiving; counts per peer appear in [`PeerStats::injected`].
//! [`FaultConfig::from_spec`] sets the faults apart and adds receive delay jitter (the
//! VMM's `CVMM_WIRE_FAULTS`, for the fault campaign).

#![deny(missing_docs)]

mod auth;
mod datagram;
pub mod dpdk;
mod lossy;
#[cfg(any(test, feature = "test-utils"))]
pub mod mem;
mod payload;
mod peer;
mod transport;
mod udp;
pub mod wire;

use std::fmt;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use auth::{Authenticator, ClusterKey, ClusterKeyError, HmacSha256Auth, NoAuth};
pub use datagram::{Datagram, DatagramError, InjectedFaults, READY_SLICE};
pub use lossy::{FaultConfig, FaultSpecError, LossyDatagram};
pub use payload::Payload;
pub use peer::{PeerCounters, MAX_WINDOW};
pub use transport::{PeerStats, ReliableTransport, TransportConfig, TransportStats};
pub use udp::UdpDatagram;

/// A node of the virtual computer (the `node_id` of the ViMA configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// What [`Transport::recv`] returns.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A message from a peer, in that peer's sending order.
    Message {
        /// The sender.
        from: NodeId,
        /// The message.
        payload: Payload,
    },
    /// The peer has been silent too long and is now dead (reported once).
    PeerDown(NodeId),
}

/// Errors of the transport.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The node is not a peer of this transport.
    #[error("{node} is not a peer")]
    UnknownPeer {
        /// The node asked for.
        node: NodeId,
    },
    /// The node is already a peer, is this node, or its address is taken.
    #[error("{node} is already a peer or its address is in use")]
    DuplicatePeer {
        /// The node asked for.
        node: NodeId,
    },
    /// The peer was declared dead.
    #[error("{node} is dead")]
    PeerDead {
        /// The peer.
        node: NodeId,
    },
    /// A message that does not fit one packet.
    #[error("Message of {len} bytes exceeds the {max}-byte limit")]
    PayloadTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The transport has been shut down.
    #[error("Transport is shut down")]
    Shutdown,
    /// The configuration is unusable.
    #[error("Invalid transport configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// The driver thread could not be started.
    #[error("Failed to start the transport driver thread")]
    SpawnDriver {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A packet could not be encoded (an authenticator with an oversized tag).
    #[error("Failed to encode a packet")]
    Encode {
        /// The cause.
        #[source]
        source: wire::WireError,
    },
    /// The backend failed.
    #[error("Datagram backend failed")]
    Datagram(#[from] DatagramError),
}

/// The node-to-node transport the VMM uses: reliable, ordered, exactly-once messages per
/// peer, and peer failure events. Object safe (`Arc<dyn Transport>`).
pub trait Transport: Send + Sync {
    /// This node.
    fn local_node(&self) -> NodeId;

    /// Queues `payload` (at most [`wire::MAX_PAYLOAD`] bytes) for `peer`. Blocks while the
    /// peer's send window is full; fails if the peer is unknown or dead or the transport is
    /// shut down. Returns once the message is sent the first time, not when acknowledged.
    fn send(&self, peer: NodeId, payload: &[u8]) -> Result<(), TransportError>;

    /// The next event, waiting at most `timeout` (`Ok(None)` when it passes).
    fn recv(&self, timeout: Duration) -> Result<Option<Event>, TransportError>;

    /// Like [`Transport::recv`], but also returns `Ok(None)` soon after `ready` becomes
    /// readable (it is not read). One thread can so wait on the wire and on one other
    /// event source, such as the NIC model's host doorbell. This default checks `ready`
    /// every [`datagram::READY_SLICE`]; [`ReliableTransport`] over the UDP and DPDK
    /// backends wakes on it at once.
    fn recv_or_ready(
        &self,
        timeout: Duration,
        ready: BorrowedFd<'_>,
    ) -> Result<Option<Event>, TransportError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            let event = self.recv(remaining.min(datagram::READY_SLICE))?;
            if event.is_some() || remaining.is_zero() || datagram::is_readable(ready) {
                return Ok(event);
            }
        }
    }

    /// True when `peer` was declared dead (or is not a peer).
    fn peer_dead(&self, peer: NodeId) -> bool;

    /// Waits until every message sent so far to a live peer is acknowledged, at most
    /// `timeout`; true if so. `send` returns before delivery, so a node that is about to
    /// shut down calls this first: dropping the transport abandons what is in flight.
    fn flush(&self, timeout: Duration) -> bool;

    /// A snapshot of the counters.
    fn stats(&self) -> TransportStats;

    /// Stops the driver; blocked and later `send` and `recv` calls fail with
    /// [`TransportError::Shutdown`]. Dropping the transport does this too.
    fn shutdown(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_is_object_safe_and_shareable() {
        fn assert_send_sync<T: Send + Sync + ?Sized>() {}
        assert_send_sync::<dyn Transport>();
        assert_send_sync::<ReliableTransport<UdpDatagram>>();
        assert_send_sync::<ReliableTransport<LossyDatagram<mem::MemDatagram>>>();
        assert_eq!(NodeId(3).to_string(), "node 3");
    }
}
