//! The coherence engine: a home-based directory protocol with one writer or many readers
//! per page, as a pure state machine.
//!
//! Inputs are local faults ([`Engine::fault`]) and received wire messages
//! ([`Engine::receive`]); outputs are [`Action`]s pushed into a sink. The engine does no I/O,
//! keeps no clock, allocates nothing and never blocks, so the same code runs on a host
//! thread, in the NIC model process and on a NIC core, and is tested here by simulation.
//!
//! Every node runs one engine per virtual server. It plays two roles:
//! - **node**: its own copy of each page ([`PageState`]) and the faults waiting for a reply
//!   (one request in flight per page; faults on a page coalesce);
//! - **home** for the pages of its memory ranges: the directory ([`DirectoryState`]) and
//!   the requests waiting for an operation on the same page to finish.
//!
//! When a node is the home of the page it faults on, the two roles talk by function call,
//! not by message; the protocol is the same. The protocol, its races and its invariants are
//! described in `docs/protocol.md`; the comments here point at the rules they implement.

#![forbid(unsafe_code)]

mod action;
mod error;
mod evict;
mod handoff;
mod home;
mod homes;
mod node;
#[cfg(any(feature = "alloc", test))]
mod setup;
mod state;

#[cfg(test)]
pub(crate) mod fault_injection;
#[cfg(test)]
mod sim;
#[cfg(test)]
pub(crate) mod snapshot;

use vima::layout::{MAX_NODES, MAX_VPS, PAGE_SIZE};
use vima::wire::{is_coherent_page, Body, Message};

pub use action::{Action, Actions, Counters, PageSend, PageSendKind};
pub use error::EngineError;
pub use evict::{Eviction, EVICTIONS_IN_FLIGHT};
pub use handoff::MOVES_PER_STEP;
pub use homes::{HomeMap, HomeRange, MAX_HOME_RANGES};
#[cfg(any(feature = "alloc", test))]
pub use setup::{build_engine, storage_lengths};
pub use state::{
    DirEntry, DirectoryState, DirectoryView, HomeRequest, NodeSet, PageState, PendingFault,
};

use state::{Handoff, HandoffStage, Phase};

/// A node id, as on the wire.
pub type NodeId = u16;

/// A logical page number: logical address / 4096.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogicalPage(pub u64);

impl LogicalPage {
    /// The page holding logical address `addr`.
    pub const fn containing(addr: u64) -> Self {
        Self(addr / PAGE_SIZE)
    }

    /// The first logical address of the page.
    pub const fn address(self) -> u64 {
        self.0 * PAGE_SIZE
    }
}

/// A VP of this node touched a page its local copy does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalFault {
    /// The page.
    pub page: LogicalPage,
    /// A write (else a read).
    pub write: bool,
    /// The VP (below [`MAX_VPS`]).
    pub vp: u32,
}

/// Who this engine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// The virtual server; messages of other virtual servers are refused.
    pub vs_id: u16,
    /// This node.
    pub node: NodeId,
    /// Nodes in the cluster (ids `0..node_count`).
    pub node_count: u16,
}

/// The tables the engine works in, allocated by the caller. Their contents on entry do
/// not matter: [`Engine::new`] sets the initial state.
#[derive(Debug)]
pub struct EngineStorage<'s> {
    /// One entry per logical page, at least [`HomeMap::page_limit`] long.
    pub local: &'s mut [PageState],
    /// One entry per logical page, like `local`: any node may become a page's home
    /// (`docs/protocol.md`, "Home handoff"); only the home's entry is live.
    pub directory: &'s mut [DirEntry],
    /// One slot per VP of this node that can fault at the same time.
    pub pending: &'s mut [PendingFault],
    /// Requests the home holds: longer than `pending` (one record per local pending fault
    /// is reserved, so the home never refuses itself). `pending.len()` plus (nodes - 1) x
    /// (VPs per remote node) never refuses anyone; shorter tables make the home answer
    /// `Nack` to remote requesters, which retry.
    pub requests: &'s mut [HomeRequest],
}

/// The coherence engine of one node for one virtual server.
#[derive(Debug)]
pub struct Engine<'s> {
    config: EngineConfig,
    homes: HomeMap,
    local: &'s mut [PageState],
    directory: &'s mut [DirEntry],
    pending: &'s mut [PendingFault],
    requests: &'s mut [HomeRequest],
    next_request_id: u64,
    next_seq: u64,
    /// Request records held for remote requesters (the rest are reserved for ours).
    remote_records: usize,
    /// Pending slots whose request to ourselves has not run yet.
    deferred: usize,
    /// The range being handed over to another node, if any.
    handoff: Handoff,
    counters: Counters,
}

impl<'s> Engine<'s> {
    /// Builds the engine in the initial state: every page Exclusive at its home (the home's
    /// memory holds the boot contents), Invalid everywhere else.
    pub fn new(
        config: EngineConfig,
        homes: HomeMap,
        storage: EngineStorage<'s>,
    ) -> Result<Self, EngineError> {
        let count = usize::from(config.node_count);
        if count == 0 || count > MAX_NODES || config.node >= config.node_count {
            return Err(EngineError::BadNodeConfig);
        }
        if homes.ranges().iter().any(|r| r.home >= config.node_count) {
            return Err(EngineError::BadHomeRange);
        }
        let fits = |len: usize, needed: u64| u64::try_from(len).is_ok_and(|len| len >= needed);
        if !fits(storage.local.len(), homes.page_limit())
            || !fits(storage.directory.len(), homes.page_limit())
            || storage.pending.is_empty()
            || storage.requests.len() <= storage.pending.len()
        {
            return Err(EngineError::StorageTooSmall);
        }
        storage.local.fill(PageState::Invalid);
        for range in homes.ranges().iter().filter(|r| r.home == config.node) {
            for page in range.first..range.first + range.count {
                // In range: page < page_limit <= local.len().
                if let Some(state) = usize::try_from(page)
                    .ok()
                    .and_then(|i| storage.local.get_mut(i))
                {
                    *state = PageState::Exclusive;
                }
            }
        }
        storage.directory.fill(DirEntry::exclusive(config.node));
        storage.pending.fill(PendingFault::default());
        storage.requests.fill(HomeRequest::default());
        Ok(Self {
            config,
            homes,
            local: storage.local,
            directory: storage.directory,
            pending: storage.pending,
            requests: storage.requests,
            next_request_id: 1,
            next_seq: 0,
            remote_records: 0,
            deferred: 0,
            handoff: Handoff::default(),
            counters: Counters::default(),
        })
    }

    /// A VP of this node faulted on `fault.page`. Emits `FaultDone` at once when the local
    /// copy already allows the access (a second VP faulting on a page just installed),
    /// else joins or starts the request for the page.
    ///
    /// Errors: the page is not coherent or has no home (the host must route per-node pages
    /// elsewhere), the VP is out of range, no pending slot is free.
    pub fn fault<A: Actions + ?Sized>(
        &mut self,
        fault: LocalFault,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let result = self.node_fault(fault, actions);
        self.finish(result, false, actions)
    }

    /// A coherence message arrived for this node. Control messages are refused
    /// ([`EngineError::NotCoherenceMessage`]): the caller routes those.
    pub fn receive<A: Actions + ?Sized>(
        &mut self,
        msg: &Message<'_>,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let result = self.dispatch(msg, actions);
        self.finish(result, true, actions)
    }

    /// The state of this node's copy of `page`.
    pub fn page_state(&self, page: LogicalPage) -> Result<PageState, EngineError> {
        let (index, _) = self.check_page(page.0)?;
        Ok(self.local[index])
    }

    /// The directory entry of `page`, which this node must be the home of.
    pub fn directory_state(&self, page: LogicalPage) -> Result<DirectoryView, EngineError> {
        let slot = self.directory_slot(page.0)?;
        let entry = self.directory[slot];
        Ok(DirectoryView {
            state: entry.state(),
            busy: entry.busy() || entry.arriving(),
        })
    }

    /// True when no fault is pending here, the home holds no request and no handoff is
    /// under way: nothing this node does is waiting for a message.
    pub fn is_idle(&self) -> bool {
        !self.pending.iter().any(PendingFault::in_use)
            && self.requests.iter().all(|r| r.phase == Phase::Free)
            && self.handoff.stage == HandoffStage::Idle
    }

    /// The home of every page, as this node knows it.
    pub fn homes(&self) -> &HomeMap {
        &self.homes
    }

    /// The event counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// This engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Runs the requests to ourselves queued while handling an input, then reports the
    /// first error (the input's own first).
    fn finish<A: Actions + ?Sized>(
        &mut self,
        result: Result<(), EngineError>,
        from_peer: bool,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let flushed = self.flush_deferred(actions);
        let advanced = self.advance_handoff(actions);
        let flushed = flushed.and(advanced);
        if from_peer && result.is_err() {
            self.counters.protocol_errors += 1;
        }
        result.and(flushed)
    }

    fn dispatch<A: Actions + ?Sized>(
        &mut self,
        msg: &Message<'_>,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        if msg.vs_id != self.config.vs_id {
            return Err(EngineError::WrongVirtualServer { vs_id: msg.vs_id });
        }
        if msg.dst != self.config.node {
            return Err(EngineError::WrongDestination { dst: msg.dst });
        }
        self.check_peer(msg.src)?;
        match msg.body {
            Body::HomeChange { first, count, home } => {
                return self.node_home_change(msg.src, first, count, home, actions)
            }
            Body::HomeChangeAck { first, count, home } => {
                return self.home_change_ack(msg.src, first, count, home, actions)
            }
            _ => {}
        }
        let kind = msg.body.kind();
        let page = msg
            .body
            .page()
            .ok_or(EngineError::NotCoherenceMessage { kind })?;
        let (_, home) = self.check_page(page)?;
        let src = msg.src;
        let to_home = || {
            if home == self.config.node {
                Ok(())
            } else {
                Err(EngineError::NotHome { page })
            }
        };
        let from_home = || {
            if home == src {
                Ok(())
            } else {
                Err(EngineError::NotFromHome { page, src })
            }
        };
        let rid = msg.request_id;
        match msg.body {
            Body::ReadReq { .. } => {
                to_home()?;
                self.home_request(src, page, rid, false, false, actions)
            }
            Body::WriteReq { has_copy, .. } => {
                to_home()?;
                self.home_request(src, page, rid, true, has_copy, actions)
            }
            Body::InvalidateAck { .. } => {
                to_home()?;
                self.home_invalidate_ack(src, page, rid, actions)
            }
            Body::Writeback { data, .. } => {
                to_home()?;
                self.home_writeback(src, page, rid, data, actions)
            }
            Body::Unblock { .. } => {
                to_home()?;
                self.home_unblock(src, page, rid, actions)
            }
            Body::Invalidate { .. } => {
                from_home()?;
                self.node_invalidate(src, page, rid, actions)
            }
            Body::ForwardRead { requester, .. } | Body::ForwardWrite { requester, .. } => {
                from_home()?;
                self.check_peer(requester)?;
                let write = matches!(msg.body, Body::ForwardWrite { .. });
                self.node_forward(src, page, rid, requester, write, actions)
            }
            Body::UpgradeGrant { .. } => {
                from_home()?;
                self.node_granted(src, page, rid, node::Grant::Upgrade, actions)
            }
            // From the home, or from the page's old home, whose `HomeChange` may have
            // arrived first (docs/protocol.md, "Home handoff"): the request id names our
            // request, wherever it went.
            Body::Nack { .. } => self.node_nack(src, page, rid, actions),
            Body::EvictAck { .. } => self.node_evict_ack(src, page, rid, actions),
            Body::Evict { data, .. } => {
                to_home()?;
                self.home_evict(src, page, rid, data, actions)
            }
            Body::HomeMove {
                exclusive,
                owner,
                sharers,
                data,
                ..
            } => {
                to_home()?;
                let state = if exclusive {
                    DirectoryState::Exclusive(owner)
                } else {
                    DirectoryState::Shared(NodeSet::from_bits(sharers))
                };
                self.home_move_in(src, page, state, data, actions)
            }
            Body::PageData {
                exclusive, data, ..
            } => {
                let grant = if exclusive {
                    node::Grant::Exclusive(Some(data))
                } else {
                    node::Grant::Shared(Some(data))
                };
                self.node_granted(src, page, rid, grant, actions)
            }
            Body::Ipi { .. }
            | Body::VpStart { .. }
            | Body::ConsoleLine { .. }
            | Body::VsExit { .. }
            | Body::Heartbeat { .. }
            | Body::ConfigUpdate { .. }
            | Body::HomeChange { .. }
            | Body::HomeChangeAck { .. } => Err(EngineError::NotCoherenceMessage { kind }),
        }
    }

    /// A node id that may talk to us: in the cluster and not ourselves.
    fn check_peer(&self, node: NodeId) -> Result<(), EngineError> {
        if node < self.config.node_count && node != self.config.node {
            Ok(())
        } else {
            Err(EngineError::BadSource { node })
        }
    }

    /// The local table index and the home of a page the engine may handle.
    fn check_page(&self, page: u64) -> Result<(usize, NodeId), EngineError> {
        if !is_coherent_page(page) {
            return Err(EngineError::NotCoherent { page });
        }
        let home = self
            .homes
            .home_of(LogicalPage(page))
            .ok_or(EngineError::UnknownPage { page })?;
        let index = usize::try_from(page)
            .ok()
            .filter(|i| *i < self.local.len())
            .ok_or(EngineError::UnknownPage { page })?;
        Ok((index, home))
    }

    fn home_of(&self, page: u64) -> Result<NodeId, EngineError> {
        self.check_page(page).map(|(_, home)| home)
    }

    fn directory_slot(&self, page: u64) -> Result<usize, EngineError> {
        let home = self.home_of(page)?;
        if home != self.config.node {
            return Err(EngineError::NotHome { page });
        }
        usize::try_from(page)
            .ok()
            .filter(|slot| *slot < self.directory.len())
            .ok_or(EngineError::UnknownPage { page })
    }

    fn local_state(&self, page: u64) -> Result<PageState, EngineError> {
        self.check_page(page).map(|(index, _)| self.local[index])
    }

    fn set_local_state(&mut self, page: u64, state: PageState) -> Result<(), EngineError> {
        let (index, _) = self.check_page(page)?;
        self.local[index] = state;
        Ok(())
    }

    fn message(&self, dst: NodeId, request_id: u64, body: Body<'static>) -> Message<'static> {
        Message {
            vs_id: self.config.vs_id,
            src: self.config.node,
            dst,
            request_id,
            body,
        }
    }

    fn send<A: Actions + ?Sized>(
        &self,
        dst: NodeId,
        request_id: u64,
        body: Body<'static>,
        actions: &mut A,
    ) {
        actions.push(Action::Send(self.message(dst, request_id, body)));
    }

    fn send_page<A: Actions + ?Sized>(
        &mut self,
        to: NodeId,
        page: u64,
        request_id: u64,
        kind: PageSendKind,
        actions: &mut A,
    ) {
        self.counters.pages_sent += 1;
        actions.push(Action::SendPage(PageSend {
            vs_id: self.config.vs_id,
            src: self.config.node,
            to,
            page: LogicalPage(page),
            request_id,
            kind,
        }));
    }
}

/// The bit of `vp` in a VP mask.
fn vp_bit(vp: u32) -> Result<u64, EngineError> {
    if usize::try_from(vp).is_ok_and(|vp| vp < MAX_VPS) {
        Ok(1 << vp)
    } else {
        Err(EngineError::BadVp { vp })
    }
}

const _: () = assert!(MAX_VPS <= 64, "VP masks are u64");

/// The VPs of a mask, lowest first.
fn vps_of(mask: u64) -> impl Iterator<Item = u32> {
    (0..64u32).filter(move |vp| mask & (1 << vp) != 0)
}
