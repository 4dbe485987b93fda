//! Home handoff: a node gives the home role of one of its page ranges to another node,
//! while the other nodes keep reading and writing those pages (issue 12; docs/protocol.md,
//! "Home handoff"). With eviction, it is what lets a node leave the cluster.
//!
//! The old home D and the new home N, for a range R:
//! 1. **Freeze.** Requests for R queue at D (busy or not), so no new operation starts;
//!    D waits until no page of R is busy. Evictions are still taken on arrival: they only
//!    change the directory.
//! 2. **Tell the new home.** D sends `HomeChange(R, N)` to N. N switches its home map
//!    and marks the pages of R *arriving*: requests for them queue at N. It acks.
//! 3. **Tell everyone else.** Only then (so nobody asks N before N knows) D sends
//!    `HomeChange` to every other node; each switches its map and acks. An ack also
//!    fences the link: every grant D sent that node before (links are FIFO) has arrived,
//!    so N's later forwards and invalidations cannot overtake them, and nothing the node
//!    sent D about R is still on the way.
//! 4. **Move.** D sends each page's directory entry to N (`HomeMove`, with the page when
//!    N's memory must take it), dropping its own copy; the entry no longer counts D. It
//!    answers the requests it queued with `Nack` (after the `HomeChange` on the same
//!    link, so the requester asks N), and re-issues its own. N installs each entry and
//!    serves the requests that waited for it.
//!
//! D's own VPs may keep running: a fault of D's on a page of R is a request like any
//! other. Only one range is handed over at a time; a page still arriving at N cannot be
//! handed on before it arrived.

use vima::wire::{Body, MessageKind, PAGE_BYTES};

use super::state::Want;

/// Directory entries one step sends to the new home ([`Engine::continue_handoff`]).
pub const MOVES_PER_STEP: u64 = 8;
use super::{
    Action, Actions, DirEntry, DirectoryState, Engine, EngineError, Handoff, HandoffStage,
    LogicalPage, NodeId, NodeSet, PageSendKind, PageState,
};

impl Engine<'_> {
    /// Starts handing the range of `count` pages from `first` (one whole range of the
    /// home map, homed here) over to node `to`. The handoff goes on as messages arrive;
    /// [`Engine::is_idle`] is false until it is done, and [`Engine::homes`] then names
    /// `to`.
    ///
    /// Errors: a handoff is already under way, `to` is not a peer, the range is not one of
    /// this node's ranges or some of it has not arrived here yet.
    pub fn hand_over<A: Actions + ?Sized>(
        &mut self,
        first: LogicalPage,
        count: u64,
        to: NodeId,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        if self.handoff.stage != HandoffStage::Idle {
            return Err(EngineError::HandoffUnderWay);
        }
        self.check_peer(to)?;
        let range = self
            .homes
            .range(first, count)
            .filter(|r| r.home == self.config.node)
            .ok_or(EngineError::BadHomeRange)?;
        for page in range.first..range.first + range.count {
            let arrived = usize::try_from(page)
                .ok()
                .and_then(|i| self.directory.get(i))
                .is_some_and(|e| !e.arriving());
            if !arrived {
                return Err(EngineError::BadHomeRange);
            }
        }
        self.handoff = Handoff {
            stage: HandoffStage::Freezing,
            first: range.first,
            count: range.count,
            to,
            awaiting: NodeSet::EMPTY,
            next: 0,
        };
        let result = self.advance_handoff(actions);
        self.finish(result, false, actions)
    }

    /// Moves a handoff on that has nothing to wait for but itself (its entries going to
    /// the new home, [`MOVES_PER_STEP`] at a time); a host calls it when no input came
    /// for a while. True when no handoff is under way any more.
    pub fn continue_handoff<A: Actions + ?Sized>(
        &mut self,
        actions: &mut A,
    ) -> Result<bool, EngineError> {
        let result = self.advance_handoff(actions);
        self.finish(result, false, actions)?;
        Ok(self.handoff.stage == HandoffStage::Idle)
    }

    /// Moves the handoff on when what it waits for is done. Runs after every input.
    pub(super) fn advance_handoff<A: Actions + ?Sized>(
        &mut self,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let handoff = self.handoff;
        match handoff.stage {
            HandoffStage::Freezing => {
                let busy = (handoff.first..handoff.first + handoff.count).any(|page| {
                    usize::try_from(page)
                        .ok()
                        .and_then(|i| self.directory.get(i))
                        .is_some_and(|e| e.busy())
                });
                if !busy {
                    self.handoff.stage = HandoffStage::TellingNewHome;
                    self.handoff.awaiting = NodeSet::single(handoff.to);
                    self.send_home_change(handoff.to, actions);
                }
                Ok(())
            }
            HandoffStage::TellingNewHome | HandoffStage::TellingOthers
                if !handoff.awaiting.is_empty() =>
            {
                Ok(())
            }
            HandoffStage::TellingNewHome => {
                let others = (0..self.config.node_count)
                    .filter(|n| *n != self.config.node && *n != handoff.to)
                    .fold(NodeSet::EMPTY, NodeSet::with);
                self.handoff.stage = HandoffStage::TellingOthers;
                self.handoff.awaiting = others;
                for node in others.iter() {
                    self.send_home_change(node, actions);
                }
                // Test builds only: the model checker's seeded bug (see `fault_injection`).
                #[cfg(test)]
                let others = if super::fault_injection::waits_for_acks() {
                    others
                } else {
                    NodeSet::EMPTY
                };
                if others.is_empty() {
                    self.start_moving(actions)
                } else {
                    Ok(())
                }
            }
            HandoffStage::TellingOthers => self.start_moving(actions),
            HandoffStage::Moving => self.move_some(actions),
            HandoffStage::Idle => Ok(()),
        }
    }

    fn send_home_change<A: Actions + ?Sized>(&self, node: NodeId, actions: &mut A) {
        let Handoff {
            first, count, to, ..
        } = self.handoff;
        let body = Body::HomeChange {
            first,
            count,
            home: to,
        };
        self.send(node, 0, body, actions);
    }

    /// Step 4: every node knows the new home; the entries go to it. Nothing reaches this
    /// node's home role for the range any more (every node acked, and our own map names
    /// the new home), so the entries may go a few at a time: a NIC's queues are sized for
    /// what one input produces.
    fn start_moving<A: Actions + ?Sized>(&mut self, actions: &mut A) -> Result<(), EngineError> {
        let Handoff {
            first, count, to, ..
        } = self.handoff;
        self.homes.rehome(LogicalPage(first), count, to)?;
        self.handoff.stage = HandoffStage::Moving;
        self.handoff.next = first;
        self.move_some(actions)
    }

    fn move_some<A: Actions + ?Sized>(&mut self, actions: &mut A) -> Result<(), EngineError> {
        let Handoff {
            first,
            count,
            to,
            next,
            ..
        } = self.handoff;
        let end = first + count;
        let stop = end.min(next.saturating_add(MOVES_PER_STEP));
        self.handoff.next = stop;
        if stop == end {
            self.handoff = Handoff::default();
        }
        let mut result = Ok(());
        for page in next..stop {
            result = result.and(self.move_page(page, to, actions));
        }
        result
    }

    fn move_page<A: Actions + ?Sized>(
        &mut self,
        page: u64,
        to: NodeId,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let me = self.config.node;
        let index = usize::try_from(page).map_err(|_| EngineError::UnknownPage { page })?;
        let entry = *self
            .directory
            .get(index)
            .ok_or(EngineError::UnknownPage { page })?;
        // The entry as it leaves: without us. In Shared our memory is valid, so the page
        // goes along unless the new home holds a copy itself.
        let (state, data) = match entry.state() {
            DirectoryState::Exclusive(owner) if owner == me => {
                (DirectoryState::Shared(NodeSet::EMPTY), true)
            }
            DirectoryState::Exclusive(owner) => (DirectoryState::Exclusive(owner), false),
            DirectoryState::Shared(sharers) => {
                let sharers = sharers.without(me);
                (DirectoryState::Shared(sharers), !sharers.contains(to))
            }
        };
        if self.local_state(page)? != PageState::Invalid {
            self.drop_local_copy(page, actions)?;
        }
        self.counters.homes_moved_out += 1;
        let (exclusive, owner, sharers) = match state {
            DirectoryState::Exclusive(owner) => (true, owner, 0),
            DirectoryState::Shared(sharers) => (false, 0, sharers.bits()),
        };
        if data {
            let kind = PageSendKind::HomeMove { sharers };
            self.send_page(to, page, 0, kind, actions);
        } else {
            let body = Body::HomeMove {
                page,
                exclusive,
                owner,
                sharers,
                data: None,
            };
            self.send(to, 0, body, actions);
        }
        self.directory[index] = DirEntry::default();
        // The requests that waited here, oldest first: ours go to the new home, the
        // others are told to.
        while let Some(record) = self.oldest_waiting(page) {
            let waiting = self.requests[record];
            self.free_record(record);
            if waiting.requester == me {
                if let Some(slot) = self.pending_slot(page).filter(|s| {
                    let p = self.pending[*s];
                    p.request_id == waiting.request_id && p.want != Want::Evict
                }) {
                    self.issue(slot, actions)?;
                }
            } else {
                self.counters.nacks_sent += 1;
                let body = Body::Nack { page };
                self.send(waiting.requester, waiting.request_id, body, actions);
            }
        }
        Ok(())
    }

    /// `src` says the range of `count` pages from `first` is homed at `home` from now on.
    pub(super) fn node_home_change<A: Actions + ?Sized>(
        &mut self,
        src: NodeId,
        first: u64,
        count: u64,
        home: NodeId,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let unexpected = EngineError::UnexpectedMessage {
            kind: MessageKind::HomeChange,
            page: first,
            src,
        };
        // Only the range's home gives it away, and not to itself.
        let range = self
            .homes
            .range(LogicalPage(first), count)
            .filter(|r| r.home == src && home != src && home < self.config.node_count)
            .ok_or(unexpected)?;
        self.homes.rehome(LogicalPage(first), count, home)?;
        if home == self.config.node {
            for page in range.first..range.first + range.count {
                if let Some(entry) = usize::try_from(page)
                    .ok()
                    .and_then(|i| self.directory.get_mut(i))
                {
                    *entry = DirEntry::arriving_entry();
                }
            }
        }
        let body = Body::HomeChangeAck { first, count, home };
        self.send(src, 0, body, actions);
        Ok(())
    }

    /// The old home: `src` acknowledges our `HomeChange`.
    pub(super) fn home_change_ack<A: Actions + ?Sized>(
        &mut self,
        src: NodeId,
        first: u64,
        count: u64,
        home: NodeId,
        _actions: &mut A,
    ) -> Result<(), EngineError> {
        let handoff = self.handoff;
        let telling = matches!(
            handoff.stage,
            HandoffStage::TellingNewHome | HandoffStage::TellingOthers
        );
        if !telling
            || (handoff.first, handoff.count, handoff.to) != (first, count, home)
            || !handoff.awaiting.contains(src)
        {
            return Err(EngineError::UnexpectedMessage {
                kind: MessageKind::HomeChangeAck,
                page: first,
                src,
            });
        }
        self.handoff.awaiting = handoff.awaiting.without(src);
        Ok(())
    }

    /// The new home: a page's directory entry arrives from its old home.
    pub(super) fn home_move_in<A: Actions + ?Sized>(
        &mut self,
        src: NodeId,
        page: u64,
        state: DirectoryState,
        data: Option<&[u8; PAGE_BYTES]>,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let slot = self.directory_slot(page)?;
        let me = self.config.node;
        let local = self.local_state(page)?;
        let nodes_ok = match state {
            DirectoryState::Exclusive(owner) => owner < self.config.node_count && owner != src,
            DirectoryState::Shared(sharers) => {
                sharers.iter().all(|n| n < self.config.node_count) && !sharers.contains(src)
            }
        };
        // The entry must agree with our own copy, and our memory must end up valid when
        // the page is Shared.
        let consistent = match state {
            DirectoryState::Exclusive(owner) => (owner == me) == (local == PageState::Exclusive),
            DirectoryState::Shared(sharers) => {
                let ours = sharers.contains(me);
                (ours == (local == PageState::Shared)) && (ours || data.is_some())
            }
        };
        if !self.directory[slot].arriving() || !nodes_ok || !consistent {
            return Err(EngineError::UnexpectedMessage {
                kind: MessageKind::HomeMove,
                page,
                src,
            });
        }
        if let (Some(data), PageState::Invalid) = (data, local) {
            actions.push(Action::StorePage {
                page: LogicalPage(page),
                data,
            });
        }
        self.counters.homes_moved_in += 1;
        let queued = self.directory[slot].queued();
        let mut entry = DirEntry::default();
        entry.set_state(state);
        entry.set_queued(queued);
        self.directory[slot] = entry;
        self.drain(page, actions)
    }
}
