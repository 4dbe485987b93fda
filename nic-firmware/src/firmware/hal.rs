//! The firmware's view of its board: small traits a platform implements. The NIC model
//! process implements them over vfio-user shared memory, eventfds and a UDP transport;
//! the tests over plain arrays; a SmartNIC over its DMA engine, MSI-X block and MAC.

use vima::wire::PAGE_BYTES;

use crate::engine::{Counters, PageState};

use super::FirmwareCounters;

/// A request the host posted on the submission ring, already checked for shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostRequest {
    /// A VP faulted on `page`.
    Fetch {
        /// Logical page.
        page: u64,
        /// A writable copy is needed.
        write: bool,
        /// The faulting VP.
        vp: u32,
    },
    /// Send the wire message of `len` bytes now in the caller's buffer (a control
    /// message: IPI, VP start, console line, exit).
    SendMessage {
        /// Bytes.
        len: usize,
    },
    /// The node leaves the cluster: give up every copy of other nodes' pages, then hand
    /// every range homed here over to node `to`; answered by [`HostEvent::Left`].
    Leave {
        /// The node that takes this node's ranges.
        to: u16,
    },
}

/// A submission the platform refused as malformed (it was consumed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectedRequest;

/// What the firmware tells the host through the completion ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostEvent<'a> {
    /// Map the page (its contents are in memory) as `state`.
    MapPage {
        /// Logical page.
        page: u64,
        /// Shared or Exclusive.
        state: PageState,
    },
    /// Unmap the page.
    Invalidate {
        /// Logical page.
        page: u64,
    },
    /// Write-protect the page.
    Downgrade {
        /// Logical page.
        page: u64,
    },
    /// Wake the page's SpinWait watchers.
    WakeWatchers {
        /// Logical page.
        page: u64,
    },
    /// The fetch of `page` is done; the node holds it as `state`.
    FaultDone {
        /// Logical page.
        page: u64,
        /// The node's state of the page after the input that completed it.
        state: PageState,
        /// The VP it was steered to.
        vp: u32,
    },
    /// A control message from another node (a whole wire message).
    Control {
        /// The message bytes.
        bytes: &'a [u8],
    },
    /// Node `node` stopped responding.
    PeerDown {
        /// The node.
        node: u16,
    },
    /// The wire failed.
    WireFailed,
    /// The [`HostRequest::Leave`] is done, or was refused (a bad target, a leave already
    /// under way, or the engine refused a step).
    Left {
        /// Copies of other nodes' pages given up.
        evicted: u64,
        /// Pages whose home moved.
        moved: u64,
        /// Refused: nothing (more) was done.
        refused: bool,
    },
}

impl HostEvent<'_> {
    /// The page whose host mapping this event changes, if it changes one.
    pub fn changed_page(&self) -> Option<u64> {
        match *self {
            Self::MapPage { page, .. } | Self::Invalidate { page } | Self::Downgrade { page } => {
                Some(page)
            }
            _ => None,
        }
    }
}

/// The host's rings.
pub trait HostRings {
    /// The next host request, if any; a `SendMessage`'s bytes are copied into `buf`.
    /// `Some(Err(_))`: a malformed submission was consumed and must be ignored.
    fn poll_request(&mut self, buf: &mut [u8]) -> Option<Result<HostRequest, RejectedRequest>>;

    /// Free completion slots.
    fn completion_room(&self) -> usize;

    /// Posts a completion; returns its sequence number (free running from the first
    /// completion), or `None` when the ring is full.
    fn post(&mut self, event: &HostEvent<'_>) -> Option<u64>;

    /// Every completion with a lower sequence number has been applied by the host.
    fn applied(&self) -> u64;
}

/// MSI-X: the vector table the host programs and the interrupt the firmware raises.
pub trait Interrupts {
    /// VP `vp`'s vector, or `None` when that VP is gone (its completions are re-steered).
    fn vector_of(&self, vp: u32) -> Option<u16>;

    /// Raises `vector`.
    fn raise(&mut self, vector: u16);
}

/// The host memory the NIC reads and writes by DMA (the node's logical memory).
pub trait DmaMemory {
    /// Reads a logical page; false when it is not mapped for DMA.
    fn read_page(&mut self, page: u64, out: &mut [u8; PAGE_BYTES]) -> bool;

    /// Writes a logical page; false when it is not mapped for DMA.
    fn write_page(&mut self, page: u64, data: &[u8; PAGE_BYTES]) -> bool;
}

/// What the wire delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireEvent {
    /// A message of `len` bytes from `from` (in the caller's buffer).
    Message {
        /// Sending node.
        from: u16,
        /// Bytes.
        len: usize,
    },
    /// A peer stopped responding.
    PeerDown(u16),
    /// The wire failed for good.
    Failed,
}

/// The node-to-node wire (reliable, ordered per peer: the transport's guarantees).
pub trait Wire {
    /// Sends `bytes` to `dst`; false when that failed (dead peer, shut down).
    fn send(&mut self, dst: u16, bytes: &[u8]) -> bool;

    /// The next wire event, if one is waiting; messages land in `buf`.
    fn poll(&mut self, buf: &mut [u8]) -> Option<WireEvent>;
}

/// The rest of the board: idling, liveness and counters.
pub trait Board {
    /// A free-running clock in microseconds (a cycle counter on a card).
    fn now_us(&self) -> u64;
    /// Between hot idle rounds: lets other work on this core run (a dedicated core just
    /// spins).
    fn relax(&mut self);
    /// Waits up to `micros` µs, or less when the wire or the host has something (if the
    /// platform can tell).
    fn idle(&mut self, micros: u32);

    /// Publishes liveness and counters for the host (the heartbeat register).
    fn publish(&mut self, heartbeat: u64, firmware: &FirmwareCounters, engine: &Counters);

    /// Asked once per round: stop the main loop? `quiescent` says nothing is queued.
    fn should_stop(&mut self, quiescent: bool) -> bool;
}

/// Everything the main loop needs, in one place.
pub trait Platform: HostRings + Interrupts + DmaMemory + Wire + Board {}

impl<T: HostRings + Interrupts + DmaMemory + Wire + Board> Platform for T {}
