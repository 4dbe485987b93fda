//! The datagram layer: the only thing a backend (kernel UDP now, DPDK later) implements.
//!
//! A backend moves single, unreliable datagrams between addresses; it may lose, duplicate
//! or reorder them. Everything else (sequencing, acks, retransmission, peer liveness,
//! authentication) lives above it in [`crate::ReliableTransport`], written once for all
//! backends.
//!
//! Contract, chosen so a poll-mode DPDK port can implement it without a kernel:
//! - `send_to` may be called from several threads at once (a DPDK backend serialises its
//!   TX queue with a lock or uses one queue per thread); it never blocks for long, and a
//!   datagram it cannot queue may be dropped (the reliability layer resends).
//! - `recv_from` is called by one thread at a time (the transport's driver). It waits at
//!   most `wait` (`Duration::ZERO` polls without blocking) and returns `Ok(None)` when the
//!   time is up or [`Datagram::interrupt`] was called. A busy-polling backend simply spins
//!   until then.
//! - A datagram longer than the buffer is reported with its length clipped to the buffer,
//!   which the caller sizes one byte beyond the largest valid packet to detect it.
//!
//! How the DPDK backend (feature `dpdk`, not built yet) is meant to fit: `Addr` is the
//! peer's MAC address (plus a UDP port if it speaks UDP/IP for routed racks);
//! `send_to` copies the packet into an mbuf behind an Ethernet (and IP/UDP) header and
//! calls the TX burst wrapper under a lock; `recv_from` polls the RX burst wrapper until a
//! packet arrives, `wait` passes, or an atomic flag set by `interrupt` is seen, keeping
//! extra packets of a burst in a small local queue for the next call. Because a thread
//! waiting in `Transport::recv` reads the backend itself, that thread is the one that
//! busy-polls (as a poll-mode driver should), and the transport's driver thread only
//! polls while nobody waits. EAL initialises once per process, so one DPDK endpoint per
//! process (the NIC model process), as docs/platform.md measured.

use std::fmt::Debug;
use std::hash::Hash;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

/// Errors of a datagram backend.
#[derive(Debug, Error)]
pub enum DatagramError {
    /// Could not open or bind the endpoint.
    #[error("Failed to bind {addr}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Could not configure the endpoint.
    #[error("Failed to configure the endpoint: {what}")]
    Configure {
        /// What was being set.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Sending failed for a reason other than a full queue.
    #[error("Failed to send a datagram")]
    Send(#[source] io::Error),
    /// Receiving failed.
    #[error("Failed to receive a datagram")]
    Recv(#[source] io::Error),
}

/// Faults a test wrapper injected on the path to or from one address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InjectedFaults {
    /// Outgoing datagrams dropped.
    pub dropped_tx: u64,
    /// Incoming datagrams dropped.
    pub dropped_rx: u64,
    /// Datagrams delivered twice.
    pub duplicated: u64,
    /// Datagrams held back and delivered after a later one.
    pub reordered: u64,
}

/// Longest a backend that cannot watch a `ready` descriptor waits before letting its
/// caller look at it ([`Datagram::recv_from_or_ready`]).
pub const READY_SLICE: Duration = Duration::from_micros(100);

/// True when `fd` is readable now (a `poll` that does not wait).
pub fn is_readable(fd: BorrowedFd<'_>) -> bool {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd that lives across the call; timeout 0 does not block.
    let rc = unsafe { libc::poll(&mut pollfd, 1, 0) };
    rc > 0 && pollfd.revents & libc::POLLIN != 0
}

/// One unreliable datagram endpoint.
pub trait Datagram: Send + Sync + 'static {
    /// How this backend names an endpoint (a socket address, a MAC, a memif ring...).
    type Addr: Copy + Eq + Hash + Debug + Send + Sync + 'static;

    /// This endpoint's own address.
    fn local_addr(&self) -> Self::Addr;

    /// Sends one datagram. `Ok` does not mean it will arrive.
    fn send_to(&self, packet: &[u8], to: Self::Addr) -> Result<(), DatagramError>;

    /// Receives one datagram into `buf`, waiting at most `wait`. Returns its length and
    /// source, or `None` when the time is up or the wait was interrupted.
    fn recv_from(
        &self,
        buf: &mut [u8],
        wait: Duration,
    ) -> Result<Option<(usize, Self::Addr)>, DatagramError>;

    /// Like `recv_from`, but also returns `Ok(None)` soon after `ready` becomes readable
    /// (it is not read: the caller consumes it). For a thread that must wait on the wire
    /// and on one other source at once (the NIC model: wire and host doorbell) without a
    /// second thread and its wake-up. A backend that cannot watch `ready` waits at most
    /// [`READY_SLICE`] and lets the caller look.
    fn recv_from_or_ready(
        &self,
        buf: &mut [u8],
        wait: Duration,
        _ready: BorrowedFd<'_>,
    ) -> Result<Option<(usize, Self::Addr)>, DatagramError> {
        self.recv_from(buf, wait.min(READY_SLICE))
    }

    /// Makes a `recv_from` that is waiting (or the next one) return `Ok(None)` soon. Used
    /// to stop the driver and to tell it about a new, earlier timer.
    fn interrupt(&self);

    /// Faults injected on the path to and from `peer` (only test wrappers inject any).
    fn injected(&self, _peer: Self::Addr) -> InjectedFaults {
        InjectedFaults::default()
    }
}
