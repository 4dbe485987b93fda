//! Eviction: a node gives up its copy of a page homed elsewhere, so it can leave the
//! cluster without taking anything with it (issue 12; `docs/protocol.md`, "Eviction").
//!
//! The node unmaps its copy at once (so no VP writes after the copy is taken) and sends
//! `Evict` to the home, with the page when it was the Exclusive copy. Until the home's
//! `EvictAck` the node keeps the contents in its DMA window and answers the forwards and
//! invalidations the home sent before the `Evict` arrived: the directory may still count
//! the copy. Faults on the page meanwhile wait in the eviction's pending slot and ask the
//! home again after the ack, behind the eviction on the same link.
//!
//! The home handles an `Evict` when it arrives, not in the page's FIFO queue: it only
//! takes the sender out of the directory (or, for the Exclusive copy, makes the home's
//! memory the valid copy), which no operation in flight depends on. The cases:
//! - `Exclusive(sender)`: the page cannot be busy (an operation that ends Exclusive at
//!   the sender waits only for the sender, which holds no request while it evicts), so the
//!   data is stored and the directory becomes `Shared(∅)`.
//! - `Shared(s)` with the sender in `s`: the sender leaves `s`. The data of an Exclusive
//!   eviction is then stale news: a forward-read the home started before the `Evict`
//!   arrived made the sender Shared, and its writeback (behind the `Evict` on the link)
//!   refreshes the home's memory.
//! - the directory does not count the sender: an earlier operation took the copy (its
//!   forward or invalidation reaches the sender before the ack); only the ack is sent.

use vima::wire::{Body, MessageKind, PAGE_BYTES};

use super::state::Want;
use super::{
    Action, Actions, DirectoryState, Engine, EngineError, LogicalPage, NodeId, PageSendKind,
    PageState, PendingFault,
};

/// Most evictions one engine keeps in flight. Each holds a pending slot, so
/// [`EngineStorage::pending`](super::EngineStorage::pending) must have this many beyond the
/// slots faults need, or a fault may find the table full.
pub const EVICTIONS_IN_FLIGHT: usize = 8;

/// What [`Engine::evict`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// The copy is unmapped and the `Evict` is on its way; the engine is not idle until
    /// the home acknowledges it.
    Started,
    /// This node holds no copy of the page: nothing to give up.
    NoCopy,
    /// A request (or an eviction) for the page is in flight: try again when it is done.
    InFlight,
    /// [`EVICTIONS_IN_FLIGHT`] evictions are under way: try again after an ack.
    TooMany,
}

impl Engine<'_> {
    /// Gives up this node's copy of `page`, which another node is the home of.
    ///
    /// Errors: the page is not coherent or unknown, this node is its home (a home hands
    /// its pages over instead of evicting them), no pending slot is free.
    pub fn evict<A: Actions + ?Sized>(
        &mut self,
        page: LogicalPage,
        actions: &mut A,
    ) -> Result<Eviction, EngineError> {
        let result = self.node_evict(page.0, actions);
        let flushed = self.flush_deferred(actions);
        let outcome = result?;
        flushed.map(|()| outcome)
    }

    fn node_evict<A: Actions + ?Sized>(
        &mut self,
        page: u64,
        actions: &mut A,
    ) -> Result<Eviction, EngineError> {
        let home = self.home_of(page)?;
        if home == self.config.node {
            return Err(EngineError::EvictAtHome { page });
        }
        if self.pending_slot(page).is_some() {
            return Ok(Eviction::InFlight);
        }
        let held = self.local_state(page)?;
        if held == PageState::Invalid {
            return Ok(Eviction::NoCopy);
        }
        let under_way = self
            .pending
            .iter()
            .filter(|p| p.want == Want::Evict)
            .count();
        if under_way >= EVICTIONS_IN_FLIGHT {
            return Ok(Eviction::TooMany);
        }
        let slot = self
            .pending
            .iter()
            .position(|p| !p.in_use())
            .ok_or(EngineError::PendingFull)?;
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.pending[slot] = PendingFault {
            page,
            request_id,
            want: Want::Evict,
            held,
            ..PendingFault::default()
        };
        self.counters.evictions_sent += 1;
        // Unmap first: the copy sent below is the last one a VP of ours could write.
        self.drop_local_copy(page, actions)?;
        self.send_evict(slot, actions)?;
        Ok(Eviction::Started)
    }

    /// Sends the `Evict` of the eviction in pending slot `slot` to the page's home, with
    /// the page while the copy is still the Exclusive one.
    pub(super) fn send_evict<A: Actions + ?Sized>(
        &mut self,
        slot: usize,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let pending = self.pending[slot];
        let (page, request_id) = (pending.page, pending.request_id);
        let home = self.home_of(page)?;
        if pending.held == PageState::Exclusive {
            self.send_page(home, page, request_id, PageSendKind::Evict, actions);
        } else {
            let body = Body::Evict { page, data: None };
            self.send(home, request_id, body, actions);
        }
        Ok(())
    }

    /// The pending slot of an eviction of `page` whose copy is still `held`.
    pub(super) fn evicting_slot(&self, page: u64, held: PageState) -> Option<usize> {
        self.pending_slot(page).filter(|s| {
            let pending = self.pending[*s];
            pending.want == Want::Evict && pending.held == held
        })
    }

    /// The home: `src` gives up its copy of `page`.
    pub(super) fn home_evict<A: Actions + ?Sized>(
        &mut self,
        src: NodeId,
        page: u64,
        request_id: u64,
        data: Option<&[u8; PAGE_BYTES]>,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let slot = self.directory_slot(page)?;
        let entry = self.directory[slot];
        let unexpected = EngineError::UnexpectedMessage {
            kind: MessageKind::Evict,
            page,
            src,
        };
        if entry.arriving() {
            // The page's entry is on its way here from its old home (`engine/handoff.rs`),
            // and the eviction cannot wait in the queue with its page: send it again.
            self.counters.nacks_sent += 1;
            self.send(src, request_id, Body::Nack { page }, actions);
            return Ok(());
        }
        match (entry.state(), data) {
            (DirectoryState::Exclusive(owner), Some(data)) if owner == src => {
                if entry.busy() {
                    return Err(unexpected);
                }
                // Our own copy is Invalid (the sender owned the page): store, don't map.
                self.counters.pages_received += 1;
                // Test builds only: the model checker's seeded bug (see `fault_injection`).
                #[cfg(test)]
                let store = super::fault_injection::stores_evicted_data();
                #[cfg(not(test))]
                let store = true;
                if store {
                    actions.push(Action::StorePage {
                        page: LogicalPage(page),
                        data,
                    });
                }
                self.directory[slot].set_state(DirectoryState::Shared(super::NodeSet::EMPTY));
            }
            // A Shared copy cannot be the owner's, nor can the Exclusive copy be evicted
            // by a node the directory counts as a sharer only unless a forward-read
            // downgraded it meanwhile (the module comment).
            (DirectoryState::Exclusive(owner), None) if owner == src => return Err(unexpected),
            (DirectoryState::Shared(sharers), _) if sharers.contains(src) => {
                self.directory[slot].set_state(DirectoryState::Shared(sharers.without(src)));
            }
            _ => {}
        }
        self.counters.evictions_received += 1;
        self.send(src, request_id, Body::EvictAck { page }, actions);
        Ok(())
    }

    /// The home acknowledged our eviction: the copy is gone. Faults that waited for it ask
    /// again.
    pub(super) fn node_evict_ack<A: Actions + ?Sized>(
        &mut self,
        src: NodeId,
        page: u64,
        request_id: u64,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let slot = self
            .pending_slot(page)
            .filter(|s| {
                let pending = self.pending[*s];
                pending.want == Want::Evict && pending.request_id == request_id
            })
            .ok_or(EngineError::UnexpectedMessage {
                kind: MessageKind::EvictAck,
                page,
                src,
            })?;
        let waiting = self.pending[slot];
        if waiting.read_vps | waiting.write_vps == 0 {
            self.pending[slot] = PendingFault::default();
            return Ok(());
        }
        self.pending[slot].held = PageState::Invalid;
        self.pending[slot].want = if waiting.write_vps != 0 {
            Want::Write
        } else {
            Want::Read
        };
        self.issue(slot, actions)
    }
}
