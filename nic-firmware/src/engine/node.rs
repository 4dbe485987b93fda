//! The node role: this node's copy of each page, its pending faults, and what it does when
//! the home (or, for a forwarded request, the old owner) talks to it.
//!
//! A node has at most one request in flight per page. Faults on a page that already has
//! one join it: read faults are satisfied by any grant, write faults by an Exclusive grant;
//! a write fault that joins a read request gets an upgrade request once the read is served.
//! Requests to a home that is this very node are not sent: they are marked `deferred` and
//! handed to the home role once the current input is done, so the home role never runs
//! inside itself.

use vima::wire::{Body, MessageKind, PAGE_BYTES};

use super::state::Want;
use super::{
    vp_bit, vps_of, Action, Actions, Engine, EngineError, LocalFault, LogicalPage, NodeId,
    PageSendKind, PageState, PendingFault,
};

/// What a requester receives from the home or a forwarded owner. `None` data means the
/// contents are already in this node's DMA window (the home granting to itself).
#[derive(Clone, Copy, Debug)]
pub(super) enum Grant<'a> {
    Shared(Option<&'a [u8; PAGE_BYTES]>),
    Exclusive(Option<&'a [u8; PAGE_BYTES]>),
    /// Exclusive on the Shared copy the requester still holds.
    Upgrade,
}

impl Engine<'_> {
    pub(super) fn node_fault<A: Actions + ?Sized>(
        &mut self,
        fault: LocalFault,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let page = fault.page.0;
        let state = self.local_state(page)?;
        let bit = vp_bit(fault.vp)?;
        self.counters.faults += 1;
        let allowed = match state {
            PageState::Exclusive => true,
            PageState::Shared => !fault.write,
            PageState::Invalid => false,
        };
        if allowed {
            self.counters.faults_resolved_locally += 1;
            actions.push(Action::FaultDone {
                page: fault.page,
                vp: fault.vp,
            });
            return Ok(());
        }
        if let Some(slot) = self.pending_slot(page) {
            // Coalesce: an Exclusive grant satisfies readers too; a writer joining a read
            // request gets its upgrade when the read is served (see `node_granted`); a
            // fault on a page being evicted waits for the `EvictAck` (see `evict`).
            self.counters.faults_coalesced += 1;
            let pending = &mut self.pending[slot];
            if fault.write {
                pending.write_vps |= bit;
            } else {
                pending.read_vps |= bit;
            }
            return Ok(());
        }
        let slot = self
            .pending
            .iter()
            .position(|p| !p.in_use())
            .ok_or(EngineError::PendingFull)?;
        self.pending[slot] = PendingFault {
            page,
            request_id: 0,
            read_vps: if fault.write { 0 } else { bit },
            write_vps: if fault.write { bit } else { 0 },
            want: if fault.write { Want::Write } else { Want::Read },
            held: PageState::Invalid,
            deferred: false,
        };
        self.issue(slot, actions)
    }

    /// Sends (or defers, when we are the home) the request of pending slot `slot` under a
    /// fresh request id.
    pub(super) fn issue<A: Actions + ?Sized>(
        &mut self,
        slot: usize,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let pending = self.pending[slot];
        let page = pending.page;
        let home = self.home_of(page)?;
        let write = pending.want == Want::Write;
        let has_copy = write && self.local_state(page)? == PageState::Shared;
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        if write {
            self.counters.write_requests += 1;
            if has_copy {
                self.counters.upgrade_requests += 1;
            }
        } else {
            self.counters.read_requests += 1;
        }
        self.pending[slot].request_id = request_id;
        if home == self.config.node {
            self.pending[slot].deferred = true;
            self.deferred += 1;
        } else {
            let body = if write {
                Body::WriteReq { page, has_copy }
            } else {
                Body::ReadReq { page }
            };
            self.send(home, request_id, body, actions);
        }
        Ok(())
    }

    /// Hands deferred requests (this node is their home) to the home role. Runs after each
    /// input; a request served at once may defer a follow-up (an upgrade), so it loops.
    pub(super) fn flush_deferred<A: Actions + ?Sized>(
        &mut self,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let mut result = Ok(());
        while self.deferred > 0 {
            let Some(slot) = self.pending.iter().position(|p| p.in_use() && p.deferred) else {
                self.deferred = 0;
                break;
            };
            self.pending[slot].deferred = false;
            self.deferred -= 1;
            let pending = self.pending[slot];
            let write = pending.want == Want::Write;
            let has_copy = write && self.local_state(pending.page)? == PageState::Shared;
            let served = self.home_request(
                self.config.node,
                pending.page,
                pending.request_id,
                write,
                has_copy,
                actions,
            );
            result = result.and(served);
        }
        result
    }

    /// The pending slot of `page`, if a request is in flight for it.
    pub(super) fn pending_slot(&self, page: u64) -> Option<usize> {
        self.pending
            .iter()
            .position(|p| p.in_use() && p.page == page)
    }

    /// Data or a grant for our request arrived (from the wire, or from our own home role
    /// with `src` = this node).
    pub(super) fn node_granted<A: Actions + ?Sized>(
        &mut self,
        src: NodeId,
        page: u64,
        request_id: u64,
        grant: Grant<'_>,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let home = self.home_of(page)?;
        let kind = match grant {
            Grant::Upgrade => MessageKind::UpgradeGrant,
            Grant::Shared(_) | Grant::Exclusive(_) => MessageKind::PageData,
        };
        let unexpected = EngineError::UnexpectedMessage { kind, page, src };
        let slot = self
            .pending_slot(page)
            .filter(|s| {
                let pending = self.pending[*s];
                pending.request_id == request_id && !pending.deferred
            })
            .ok_or(unexpected)?;
        let pending = self.pending[slot];
        let state = self.local_state(page)?;
        let all_vps = pending.read_vps | pending.write_vps;
        // The directory, not our own view, decides whether data comes: a node whose Shared
        // copy was invalidated while its upgrade waited gets data, and by then the
        // invalidation (sent earlier on the same home -> node link) has made it Invalid.
        let (new_state, data, done_vps) = match grant {
            Grant::Shared(data) if pending.want == Want::Read && state == PageState::Invalid => {
                (PageState::Shared, data, pending.read_vps)
            }
            Grant::Exclusive(data)
                if pending.want == Want::Write && state == PageState::Invalid =>
            {
                (PageState::Exclusive, data, all_vps)
            }
            Grant::Upgrade
                if pending.want == Want::Write && state == PageState::Shared && src == home =>
            {
                (PageState::Exclusive, None, all_vps)
            }
            _ => return Err(unexpected),
        };
        // Only our own home role may grant without data, and only our home grants
        // directly; anyone else is a forwarded owner, which the home must be expecting.
        let third_party = src != home;
        if data.is_none() && src != self.config.node && !matches!(grant, Grant::Upgrade) {
            return Err(unexpected);
        }
        if third_party && home == self.config.node && !self.home_expects_data(page, request_id, src)
        {
            return Err(unexpected);
        }
        self.set_local_state(page, new_state)?;
        if data.is_some() {
            self.counters.pages_received += 1;
        }
        let logical = LogicalPage(page);
        actions.push(Action::InstallPage {
            page: logical,
            state: new_state,
            data,
        });
        for vp in vps_of(done_vps) {
            actions.push(Action::FaultDone { page: logical, vp });
        }
        let upgrade_next = new_state == PageState::Shared && pending.write_vps != 0;
        if upgrade_next {
            self.pending[slot].read_vps = 0;
            self.pending[slot].want = Want::Write;
        } else {
            self.pending[slot] = PendingFault::default();
        }
        if third_party {
            // Data from a forwarded owner: the home holds the page busy until we say it
            // arrived, so its next message to us (an invalidation, a forward) cannot
            // overtake this data on the other link.
            if home == self.config.node {
                self.home_requester_done(page, request_id, src, actions)?;
            } else {
                self.send(home, request_id, Body::Unblock { page }, actions);
            }
        }
        if upgrade_next {
            self.issue(slot, actions)?;
        }
        Ok(())
    }

    /// The home takes our Shared copy away for a writer.
    pub(super) fn node_invalidate<A: Actions + ?Sized>(
        &mut self,
        src: NodeId,
        page: u64,
        request_id: u64,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let evicting = self.evicting_slot(page, PageState::Shared);
        if self.local_state(page)? != PageState::Shared && evicting.is_none() {
            return Err(EngineError::UnexpectedMessage {
                kind: MessageKind::Invalidate,
                page,
                src,
            });
        }
        // A pending upgrade stays pending: the home will answer it with data.
        self.counters.invalidations_received += 1;
        match evicting {
            // Unmapped when the eviction started: only the record changes.
            Some(slot) => {
                self.counters.evicting_copies_taken += 1;
                self.pending[slot].held = PageState::Invalid;
            }
            None => self.drop_local_copy(page, actions)?,
        }
        self.send(src, request_id, Body::InvalidateAck { page }, actions);
        Ok(())
    }

    /// The home forwards a request to us, the owner.
    pub(super) fn node_forward<A: Actions + ?Sized>(
        &mut self,
        home: NodeId,
        page: u64,
        request_id: u64,
        requester: NodeId,
        write: bool,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        // The home only forwards to the node its directory names Exclusive, and that node
        // got the page before the home started anything else on it (see docs/protocol.md,
        // "forward to a node that gave the page up"): we must be the owner.
        let evicting = self.evicting_slot(page, PageState::Exclusive);
        if self.local_state(page)? != PageState::Exclusive && evicting.is_none() {
            let kind = if write {
                MessageKind::ForwardWrite
            } else {
                MessageKind::ForwardRead
            };
            return Err(EngineError::UnexpectedMessage {
                kind,
                page,
                src: home,
            });
        }
        self.counters.forwards_served += 1;
        if let Some(slot) = evicting {
            // The copy is unmapped already (the eviction started it); the DMA window
            // still holds it.
            self.counters.evicting_copies_taken += 1;
            self.pending[slot].held = if write {
                PageState::Invalid
            } else {
                PageState::Shared
            };
        } else if write {
            self.drop_local_copy(page, actions)?;
        } else {
            self.set_local_state(page, PageState::Shared)?;
            actions.push(Action::Downgrade {
                page: LogicalPage(page),
            });
        }
        if write {
            self.send_page(
                requester,
                page,
                request_id,
                PageSendKind::Exclusive,
                actions,
            );
        } else {
            self.send_page(requester, page, request_id, PageSendKind::Shared, actions);
            if requester != home {
                // The home's memory becomes valid again: it serves later reads itself.
                self.send_page(home, page, request_id, PageSendKind::Writeback, actions);
            }
        }
        Ok(())
    }

    /// The home had no room to queue our request: send it again.
    pub(super) fn node_nack<A: Actions + ?Sized>(
        &mut self,
        src: NodeId,
        page: u64,
        request_id: u64,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let slot = self
            .pending_slot(page)
            .filter(|s| self.pending[*s].request_id == request_id)
            .ok_or(EngineError::UnexpectedMessage {
                kind: MessageKind::Nack,
                page,
                src,
            })?;
        self.counters.nacks_received += 1;
        if self.pending[slot].want == Want::Evict {
            // The page's entry had not reached its new home yet (`home_evict`).
            return self.send_evict(slot, actions);
        }
        self.issue(slot, actions)
    }

    /// Unmaps our copy: another node is about to write the page.
    pub(super) fn drop_local_copy<A: Actions + ?Sized>(
        &mut self,
        page: u64,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        self.set_local_state(page, PageState::Invalid)?;
        let page = LogicalPage(page);
        actions.push(Action::Invalidate { page });
        actions.push(Action::WakeWatchers { page });
        Ok(())
    }
}
