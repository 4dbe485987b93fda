//! Why the engine refused an input.
//!
//! The variants are plain data (no strings, no sources) so a NIC core can store the last one
//! in a register-sized slot; `Display` gives the sentence for host logs. thiserror is not
//! used because the workspace pulls it in with `std`, which a NIC target does not have.

use vima::wire::MessageKind;

use super::NodeId;

/// Why the engine refused a configuration, a fault or a message. Inputs that fail leave the
/// engine unchanged except where noted, and count in
/// [`Counters::protocol_errors`](super::Counters::protocol_errors) when they came from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// The node id is not below the node count, or the count is 0 or above
    /// [`vima::layout::MAX_NODES`].
    BadNodeConfig,
    /// A home range is empty, overflows, overlaps another, names an unknown node, or the
    /// table is full.
    BadHomeRange,
    /// A storage slice is too short for the home map, or `requests` is not longer than
    /// `pending` (the home reserves one request record per local pending fault).
    StorageTooSmall,
    /// The page is not coherent (null page or per-node page): the host must never ask.
    NotCoherent {
        /// The page.
        page: u64,
    },
    /// No home range covers the page, or it lies past the local state table.
    UnknownPage {
        /// The page.
        page: u64,
    },
    /// The VP id is not below [`vima::layout::MAX_VPS`].
    BadVp {
        /// The VP.
        vp: u32,
    },
    /// Every pending-fault slot is in use (size the table by the VPs of this node).
    PendingFull,
    /// The message belongs to another virtual server.
    WrongVirtualServer {
        /// Its virtual server id.
        vs_id: u16,
    },
    /// The message is addressed to another node.
    WrongDestination {
        /// Its destination.
        dst: NodeId,
    },
    /// The source (or a forwarded requester) is this node or not a node of the cluster.
    BadSource {
        /// The offending node id.
        node: NodeId,
    },
    /// A control message was handed to the coherence engine.
    NotCoherenceMessage {
        /// Its kind.
        kind: MessageKind,
    },
    /// A message only the home of the page may receive reached another node.
    NotHome {
        /// The page.
        page: u64,
    },
    /// A message only the home of the page may send came from another node.
    NotFromHome {
        /// The page.
        page: u64,
        /// The sender.
        src: NodeId,
    },
    /// The message does not fit the page's state here: a protocol violation by the peer
    /// (or a bug). Nothing was changed.
    UnexpectedMessage {
        /// Its kind.
        kind: MessageKind,
        /// The page.
        page: u64,
        /// The sender.
        src: NodeId,
    },
    /// A handoff of this node's range is already under way.
    HandoffUnderWay,
    /// A node was asked to evict a page it is the home of.
    EvictAtHome {
        /// The page.
        page: u64,
    },
}

impl core::fmt::Display for EngineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadNodeConfig => f.write_str("Node id or node count out of range"),
            Self::BadHomeRange => f.write_str("Home range empty, overlapping or out of range"),
            Self::StorageTooSmall => f.write_str("Engine storage too small for the home map"),
            Self::NotCoherent { page } => write!(f, "Page {page:#x} is not coherent"),
            Self::UnknownPage { page } => write!(f, "Page {page:#x} has no home"),
            Self::BadVp { vp } => write!(f, "VP {vp} out of range"),
            Self::PendingFull => f.write_str("No free pending-fault slot"),
            Self::WrongVirtualServer { vs_id } => {
                write!(f, "Message for virtual server {vs_id}")
            }
            Self::WrongDestination { dst } => write!(f, "Message for node {dst}"),
            Self::BadSource { node } => write!(f, "Node {node} cannot send this"),
            Self::NotCoherenceMessage { kind } => write!(f, "{kind:?} is not a coherence message"),
            Self::NotHome { page } => write!(f, "Not the home of page {page:#x}"),
            Self::NotFromHome { page, src } => {
                write!(f, "Node {src} is not the home of page {page:#x}")
            }
            Self::UnexpectedMessage { kind, page, src } => {
                write!(f, "Unexpected {kind:?} for page {page:#x} from node {src}")
            }
            Self::HandoffUnderWay => f.write_str("A home handoff is already under way"),
            Self::EvictAtHome { page } => {
                write!(
                    f,
                    "Page {page:#x} is homed here: it moves, it is not evicted"
                )
            }
        }
    }
}

impl core::error::Error for EngineError {}
