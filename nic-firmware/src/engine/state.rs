//! The engine's tables: what one node knows about a page (its local copy, and at the home
//! the directory entry), the faults waiting for a reply, and the requests the home holds.
//!
//! Every entry is a small `Copy` value with a `Default` that means "free", so the caller can
//! allocate the tables however its platform allows (a `Vec` on the host, a static array on
//! a NIC core) and hand them to [`Engine::new`](super::Engine::new) as slices. The big
//! tables (one entry per page) are kept tiny: [`PageState`] is one byte, [`DirEntry`] four.

use vima::layout::MAX_NODES;

use super::NodeId;

// A NodeSet is a u16 bitmask.
const _: () = assert!(MAX_NODES <= 16);

/// The state of this node's copy of a page (the paper's physical page states).
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PageState {
    /// No valid copy: not mapped in the guest mapping.
    #[default]
    Invalid = 0,
    /// A read-only replica: mapped write-protected.
    Shared = 1,
    /// The one writable copy: mapped writable.
    Exclusive = 2,
}

/// A set of nodes (bit `n` = node `n`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeSet(u16);

impl NodeSet {
    /// No node.
    pub const EMPTY: Self = Self(0);

    /// The set holding only `node`.
    pub const fn single(node: NodeId) -> Self {
        Self(1 << node)
    }

    /// The raw bitmask.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The set of a raw bitmask.
    pub const fn from_bits(bits: u16) -> Self {
        Self(bits)
    }

    /// True when `node` is in the set.
    pub const fn contains(self, node: NodeId) -> bool {
        node < 16 && self.0 & (1 << node) != 0
    }

    /// The set with `node` added.
    #[must_use]
    pub const fn with(self, node: NodeId) -> Self {
        Self(self.0 | (1 << node))
    }

    /// The set with `node` removed.
    #[must_use]
    pub const fn without(self, node: NodeId) -> Self {
        Self(self.0 & !(1 << node))
    }

    /// True when the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of nodes in the set.
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// The nodes in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = NodeId> {
        (0..16u16).filter(move |n| self.contains(*n))
    }
}

/// The directory's view of a page, at its home.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectoryState {
    /// Every node in the set holds a read-only copy, and the home's DMA window holds the same
    /// contents (the home itself may or may not be in the set). An empty set is the
    /// classic "Uncached" state; the protocol never reaches it today (no node evicts), but
    /// it needs no special case.
    Shared(NodeSet),
    /// That node holds the only valid copy (when it is not the home, the home's DMA window
    /// is stale).
    Exclusive(NodeId),
}

/// A directory entry as [`Engine::directory_state`](super::Engine::directory_state) reports
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectoryView {
    /// The state. While `busy`, it is the state the operation in flight leads to.
    pub state: DirectoryState,
    /// An operation on the page is in flight: later requests queue.
    pub busy: bool,
}

const DIR_EXCLUSIVE: u8 = 1 << 0;
const DIR_BUSY: u8 = 1 << 1;
const DIR_QUEUED: u8 = 1 << 2;
const DIR_ARRIVING: u8 = 1 << 3;

/// One page of the home directory (4 bytes). `Default` is only a placeholder:
/// [`Engine::new`](super::Engine::new) starts every entry Exclusive at the home.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirEntry {
    sharers: NodeSet,
    owner: u8,
    flags: u8,
}

impl DirEntry {
    pub(super) fn exclusive(owner: NodeId) -> Self {
        let mut entry = Self::default();
        entry.set_state(DirectoryState::Exclusive(owner));
        entry
    }

    pub(super) fn state(self) -> DirectoryState {
        if self.flags & DIR_EXCLUSIVE != 0 {
            DirectoryState::Exclusive(NodeId::from(self.owner))
        } else {
            DirectoryState::Shared(self.sharers)
        }
    }

    pub(super) fn set_state(&mut self, state: DirectoryState) {
        match state {
            DirectoryState::Shared(sharers) => {
                self.flags &= !DIR_EXCLUSIVE;
                self.sharers = sharers;
                self.owner = 0;
            }
            DirectoryState::Exclusive(owner) => {
                self.flags |= DIR_EXCLUSIVE;
                self.sharers = NodeSet::EMPTY;
                // Node ids are below MAX_NODES (16): checked when the engine was built.
                self.owner = u8::try_from(owner).unwrap_or(u8::MAX);
            }
        }
    }

    pub(super) fn busy(self) -> bool {
        self.flags & DIR_BUSY != 0
    }

    pub(super) fn set_busy(&mut self, busy: bool) {
        self.set_flag(DIR_BUSY, busy);
    }

    /// Requests may be waiting for this page. Set when one is queued, cleared when the home
    /// drains the page and finds none; so `queued` implies busy or a drain in progress.
    pub(super) fn queued(self) -> bool {
        self.flags & DIR_QUEUED != 0
    }

    pub(super) fn set_queued(&mut self, queued: bool) {
        self.set_flag(DIR_QUEUED, queued);
    }

    /// The page's home moves here and its entry has not arrived yet (`HomeMove`):
    /// requests for it queue.
    pub(super) fn arriving(self) -> bool {
        self.flags & DIR_ARRIVING != 0
    }

    /// An entry waiting for its `HomeMove`.
    pub(super) fn arriving_entry() -> Self {
        Self {
            flags: DIR_ARRIVING,
            ..Self::default()
        }
    }

    fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }
}

/// What a pending fault asks the home for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Want {
    /// Slot free.
    #[default]
    Nothing,
    /// A Shared copy.
    Read,
    /// The Exclusive copy.
    Write,
    /// Nothing: the node is giving its copy up (`Evict` sent, `EvictAck` awaited). Faults
    /// on the page wait in the slot and issue a fresh request after the ack.
    Evict,
}

/// One page this node has asked the home for: the request in flight and the VPs waiting on
/// it. One slot per page at most: faults on a page coalesce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingFault {
    pub(super) page: u64,
    pub(super) request_id: u64,
    /// VPs (bit = VP id) blocked on a read of the page.
    pub(super) read_vps: u64,
    /// VPs blocked on a write of the page.
    pub(super) write_vps: u64,
    pub(super) want: Want,
    /// While evicting: the copy the directory may still count (Exclusive, Shared, or
    /// Invalid once a forward or an invalidation took it). It is unmapped already; the
    /// DMA window keeps its contents for forwards.
    pub(super) held: PageState,
    /// The request has not been handed to the home yet: the home is this node, and
    /// requests to ourselves run after the current input (see `Engine::flush_deferred`).
    pub(super) deferred: bool,
}

impl PendingFault {
    pub(super) fn in_use(&self) -> bool {
        self.want != Want::Nothing
    }
}

/// Where handing this node's range over to another node stands (`engine/handoff.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum HandoffStage {
    /// No handoff.
    #[default]
    Idle,
    /// Requests for the range queue; waiting for the operations in flight to end.
    Freezing,
    /// `HomeChange` sent to the new home; waiting for its ack.
    TellingNewHome,
    /// `HomeChange` sent to every other node; waiting for their acks.
    TellingOthers,
    /// Every node knows: the entries go to the new home, a few per step (`next` on).
    Moving,
}

/// The range this node is handing over, and to whom.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Handoff {
    pub(super) stage: HandoffStage,
    pub(super) first: u64,
    pub(super) count: u64,
    pub(super) to: NodeId,
    /// The acks still missing.
    pub(super) awaiting: NodeSet,
    /// Moving: the next page whose entry goes.
    pub(super) next: u64,
}

impl Handoff {
    /// True when `page` is in a range being handed over (its requests queue).
    pub(super) fn freezes(&self, page: u64) -> bool {
        self.stage != HandoffStage::Idle && page >= self.first && page - self.first < self.count
    }
}

/// Where a request record at the home is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Phase {
    /// Record free.
    #[default]
    Free,
    /// Queued behind the operation in flight on its page.
    Waiting,
    /// The operation in flight on its page.
    Active,
}

/// A request the home holds: queued behind an operation in flight on the same page, or
/// being that operation (waiting for invalidation acks, a writeback or an unblock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HomeRequest {
    pub(super) page: u64,
    pub(super) request_id: u64,
    /// Arrival order, for FIFO service per page.
    pub(super) seq: u64,
    pub(super) requester: NodeId,
    pub(super) phase: Phase,
    pub(super) write: bool,
    pub(super) has_copy: bool,
    /// Active write: the requester was a sharer when the home started it (grant without
    /// data).
    pub(super) requester_had_copy: bool,
    /// Active: invalidation acks still missing.
    pub(super) awaiting_acks: NodeSet,
    /// Active: the node a forward went to (the writeback comes from it).
    pub(super) forwarded_to: NodeId,
    /// Active forward: the requester has not confirmed the data yet.
    pub(super) await_requester: bool,
    /// Active forward-read: the old owner's writeback has not arrived yet.
    pub(super) await_writeback: bool,
}
