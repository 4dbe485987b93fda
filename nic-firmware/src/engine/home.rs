//! The home role: the directory of the pages this node is home for, and the serialization
//! of every operation on them.
//!
//! One operation per page at a time. An operation that completes in one step (the home
//! answers from its own memory, or hands out its own Exclusive copy) leaves the page free
//! at once: everything the home sends the requester later travels the same home ->
//! requester link, behind it. An operation that needs other nodes (invalidation acks, a
//! forward to the owner) makes the page *busy* until the last of them is in; requests that
//! arrive meanwhile wait in FIFO order and run when it ends (`drain`).
//!
//! Rules that keep the home's memory and the directory honest:
//! - In `Shared`, the home's DMA window always holds the page: an owner that downgrades
//!   writes the page back, so reads in `Shared` and writes by non-sharers are served by the
//!   home itself, and only an `Exclusive` owner is ever forwarded to.
//! - A forward ends only when the requester confirms the data (`Unblock`, or the data
//!   itself when the home is the requester), and a forward-read also waits for the
//!   writeback.

use vima::wire::{Body, MessageKind, PAGE_BYTES};

use super::node::Grant;
use super::{
    Action, Actions, DirectoryState, Engine, EngineError, HomeRequest, LogicalPage, NodeId,
    NodeSet, PageSendKind, PageState, Phase,
};

/// A request as the home sees it.
#[derive(Clone, Copy, Debug)]
struct Request {
    requester: NodeId,
    page: u64,
    request_id: u64,
    write: bool,
    has_copy: bool,
}

/// What the home does with a request, decided before anything changes.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Read in Shared: send from memory, add the requester.
    ReadShared(NodeSet),
    /// Read while the home owns the page: downgrade our own copy, send from memory.
    ReadFromHome,
    /// Read while another node owns the page: forward to it.
    ForwardRead(NodeId),
    /// Write while the home owns the page: drop our own copy, send from memory.
    WriteFromHome,
    /// Write while another node owns the page: forward to it.
    ForwardWrite(NodeId),
    /// Write in Shared: invalidate every other sharer (our own copy directly, the others
    /// all at once), then grant, with data unless the requester is still a sharer.
    WriteShared {
        requester_had_copy: bool,
        home_copy: bool,
        remote: NodeSet,
    },
}

impl Plan {
    /// True when the operation needs other nodes and keeps the page busy.
    fn keeps_busy(&self) -> bool {
        match self {
            Self::ForwardRead(_) | Self::ForwardWrite(_) => true,
            Self::WriteShared { remote, .. } => !remote.is_empty(),
            Self::ReadShared(_) | Self::ReadFromHome | Self::WriteFromHome => false,
        }
    }
}

impl Engine<'_> {
    /// A read or write request for a page we are home for, from a peer or from ourselves.
    pub(super) fn home_request<A: Actions + ?Sized>(
        &mut self,
        requester: NodeId,
        page: u64,
        request_id: u64,
        write: bool,
        has_copy: bool,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let slot = self.directory_slot(page)?;
        let request = Request {
            requester,
            page,
            request_id,
            write,
            has_copy,
        };
        let entry = self.directory[slot];
        // A page being handed over (here) or whose entry has not arrived yet (at the new
        // home) starts nothing: its requests wait (`engine/handoff.rs`).
        if entry.busy() || entry.queued() || entry.arriving() || self.handoff.freezes(page) {
            let Some(record) = self.alloc_record(&request) else {
                return self.refuse(&request, actions);
            };
            self.requests[record].phase = Phase::Waiting;
            self.directory[slot].set_queued(true);
            self.counters.requests_queued += 1;
            return Ok(());
        }
        self.home_start(&request, None, actions).map(|_| ())
    }

    /// Starts `request` on its (free) page. `record` is its request record when it was
    /// queued. Returns true when the page is now busy with it.
    fn home_start<A: Actions + ?Sized>(
        &mut self,
        request: &Request,
        record: Option<usize>,
        actions: &mut A,
    ) -> Result<bool, EngineError> {
        let page = request.page;
        let slot = self.directory_slot(page)?;
        let home = self.config.node;
        let requester = request.requester;
        let state = self.directory[slot].state();
        let plan = self.plan(request, state)?;
        let record = if plan.keeps_busy() {
            match record.or_else(|| self.alloc_record(request)) {
                Some(record) => Some(record),
                None => return self.refuse(request, actions).map(|()| false),
            }
        } else {
            if let Some(record) = record {
                self.free_record(record);
            }
            None
        };
        // The upgrade race: the requester was a sharer when it asked, but a competing writer
        // took its copy before this request ran. The directory decides: data is sent.
        let still_shared = matches!(state, DirectoryState::Shared(s) if s.contains(requester));
        if request.write && request.has_copy && !still_shared {
            self.counters.upgrades_lost_copy += 1;
        }
        let rid = request.request_id;
        let mut active = HomeRequest {
            page,
            request_id: rid,
            requester,
            phase: Phase::Active,
            write: request.write,
            has_copy: request.has_copy,
            ..HomeRequest::default()
        };
        match plan {
            Plan::ReadShared(sharers) => {
                self.directory[slot].set_state(DirectoryState::Shared(sharers.with(requester)));
                self.deliver(requester, page, rid, Grant::Shared(None), actions)?;
            }
            Plan::ReadFromHome => {
                self.set_local_state(page, PageState::Shared)?;
                actions.push(Action::Downgrade {
                    page: LogicalPage(page),
                });
                let sharers = NodeSet::single(home).with(requester);
                self.directory[slot].set_state(DirectoryState::Shared(sharers));
                self.send_page(requester, page, rid, PageSendKind::Shared, actions);
            }
            Plan::ForwardRead(owner) => {
                let sharers = NodeSet::single(owner).with(requester);
                self.directory[slot].set_state(DirectoryState::Shared(sharers));
                active.forwarded_to = owner;
                active.await_requester = true;
                // When we are the requester, the owner sends one copy, to us: it is both.
                active.await_writeback = requester != home;
                self.counters.forwards_sent += 1;
                let body = Body::ForwardRead { page, requester };
                self.send(owner, rid, body, actions);
            }
            Plan::WriteFromHome => {
                self.drop_local_copy(page, actions)?;
                self.directory[slot].set_state(DirectoryState::Exclusive(requester));
                self.send_page(requester, page, rid, PageSendKind::Exclusive, actions);
            }
            Plan::ForwardWrite(owner) => {
                self.directory[slot].set_state(DirectoryState::Exclusive(requester));
                active.forwarded_to = owner;
                active.await_requester = true;
                self.counters.forwards_sent += 1;
                let body = Body::ForwardWrite { page, requester };
                self.send(owner, rid, body, actions);
            }
            Plan::WriteShared {
                requester_had_copy,
                home_copy,
                remote,
            } => {
                if home_copy {
                    self.drop_local_copy(page, actions)?;
                }
                self.directory[slot].set_state(DirectoryState::Exclusive(requester));
                if remote.is_empty() {
                    self.grant_write(requester, page, rid, requester_had_copy, actions)?;
                } else {
                    // Fan out every invalidation now; the grant waits for the last ack.
                    active.awaiting_acks = remote;
                    active.requester_had_copy = requester_had_copy;
                    for node in remote.iter() {
                        self.counters.invalidations_sent += 1;
                        self.send(node, rid, Body::Invalidate { page }, actions);
                    }
                }
            }
        }
        let Some(record) = record else {
            return Ok(false);
        };
        active.seq = self.requests[record].seq;
        self.requests[record] = active;
        self.directory[slot].set_busy(true);
        Ok(true)
    }

    /// Decides what to do with `request` in directory state `state`, or refuses a request
    /// the directory says the requester cannot be making.
    fn plan(&self, request: &Request, state: DirectoryState) -> Result<Plan, EngineError> {
        let home = self.config.node;
        let requester = request.requester;
        let refuse = EngineError::UnexpectedMessage {
            kind: if request.write {
                MessageKind::WriteReq
            } else {
                MessageKind::ReadReq
            },
            page: request.page,
            src: requester,
        };
        // A node asks only for what it lacks, and keeps at most one request per page in
        // flight; so a reader is never already a sharer and nobody asks for a page it
        // owns.
        Ok(match (request.write, state) {
            (_, DirectoryState::Exclusive(owner)) if owner == requester => return Err(refuse),
            (false, DirectoryState::Shared(sharers)) if sharers.contains(requester) => {
                return Err(refuse)
            }
            (false, DirectoryState::Shared(sharers)) => Plan::ReadShared(sharers),
            (false, DirectoryState::Exclusive(owner)) if owner == home => Plan::ReadFromHome,
            (false, DirectoryState::Exclusive(owner)) => Plan::ForwardRead(owner),
            (true, DirectoryState::Exclusive(owner)) if owner == home => Plan::WriteFromHome,
            (true, DirectoryState::Exclusive(owner)) => Plan::ForwardWrite(owner),
            (true, DirectoryState::Shared(sharers)) => {
                let others = sharers.without(requester);
                let remote = others.without(home);
                // Test builds only: the model checker's seeded bug (off unless a test
                // turns it on; see `fault_injection`).
                #[cfg(test)]
                let remote = super::fault_injection::sharers_to_invalidate(remote);
                Plan::WriteShared {
                    requester_had_copy: sharers.contains(requester),
                    home_copy: others.contains(home),
                    remote,
                }
            }
        })
    }

    /// Sends a page from our memory to `requester`, or grants it to ourselves in place.
    fn deliver<A: Actions + ?Sized>(
        &mut self,
        requester: NodeId,
        page: u64,
        request_id: u64,
        grant: Grant<'_>,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let home = self.config.node;
        if requester == home {
            return self.node_granted(home, page, request_id, grant, actions);
        }
        match grant {
            Grant::Upgrade => {
                self.send(requester, request_id, Body::UpgradeGrant { page }, actions)
            }
            Grant::Shared(_) => {
                self.send_page(requester, page, request_id, PageSendKind::Shared, actions);
            }
            Grant::Exclusive(_) => {
                self.send_page(
                    requester,
                    page,
                    request_id,
                    PageSendKind::Exclusive,
                    actions,
                );
            }
        }
        Ok(())
    }

    /// Grants a write after every other copy is gone. In Shared our memory is valid, so the
    /// data comes from here unless the requester kept its copy.
    fn grant_write<A: Actions + ?Sized>(
        &mut self,
        requester: NodeId,
        page: u64,
        request_id: u64,
        requester_had_copy: bool,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let grant = if requester_had_copy {
            Grant::Upgrade
        } else {
            Grant::Exclusive(None)
        };
        self.deliver(requester, page, request_id, grant, actions)
    }

    /// The operation in flight on `page`, if its request id is `request_id`.
    fn active_record(&self, page: u64, request_id: u64) -> Option<usize> {
        self.requests
            .iter()
            .position(|r| r.phase == Phase::Active && r.page == page && r.request_id == request_id)
    }

    pub(super) fn home_invalidate_ack<A: Actions + ?Sized>(
        &mut self,
        src: NodeId,
        page: u64,
        request_id: u64,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let record = self
            .active_record(page, request_id)
            .filter(|r| self.requests[*r].awaiting_acks.contains(src))
            .ok_or(EngineError::UnexpectedMessage {
                kind: MessageKind::InvalidateAck,
                page,
                src,
            })?;
        let active = &mut self.requests[record];
        active.awaiting_acks = active.awaiting_acks.without(src);
        let active = *active;
        if active.awaiting_acks.is_empty() {
            self.grant_write(
                active.requester,
                page,
                request_id,
                active.requester_had_copy,
                actions,
            )?;
        }
        self.maybe_complete(record, actions)
    }

    pub(super) fn home_writeback<A: Actions + ?Sized>(
        &mut self,
        src: NodeId,
        page: u64,
        request_id: u64,
        data: &[u8; PAGE_BYTES],
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let record = self
            .active_record(page, request_id)
            .filter(|r| {
                let active = self.requests[*r];
                active.await_writeback && active.forwarded_to == src
            })
            .ok_or(EngineError::UnexpectedMessage {
                kind: MessageKind::Writeback,
                page,
                src,
            })?;
        // Our own copy is Invalid here (neither owner nor requester), so the contents go
        // into the DMA window without a mapping.
        self.counters.writebacks_received += 1;
        self.counters.pages_received += 1;
        actions.push(Action::StorePage {
            page: LogicalPage(page),
            data,
        });
        self.requests[record].await_writeback = false;
        self.maybe_complete(record, actions)
    }

    pub(super) fn home_unblock<A: Actions + ?Sized>(
        &mut self,
        src: NodeId,
        page: u64,
        request_id: u64,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let record = self
            .active_record(page, request_id)
            .filter(|r| {
                let active = self.requests[*r];
                active.await_requester && active.requester == src
            })
            .ok_or(EngineError::UnexpectedMessage {
                kind: MessageKind::Unblock,
                page,
                src,
            })?;
        self.requests[record].await_requester = false;
        self.maybe_complete(record, actions)
    }

    /// True when a forwarded operation for our own request is waiting for `src`'s data.
    pub(super) fn home_expects_data(&self, page: u64, request_id: u64, src: NodeId) -> bool {
        self.active_record(page, request_id).is_some_and(|r| {
            let active = self.requests[r];
            active.requester == self.config.node
                && active.await_requester
                && active.forwarded_to == src
        })
    }

    /// We were the requester of a forwarded operation and the owner's data is installed:
    /// it also refreshed our memory, so it stands for the writeback too.
    pub(super) fn home_requester_done<A: Actions + ?Sized>(
        &mut self,
        page: u64,
        request_id: u64,
        src: NodeId,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        if !self.home_expects_data(page, request_id, src) {
            return Err(EngineError::UnexpectedMessage {
                kind: MessageKind::PageData,
                page,
                src,
            });
        }
        let record =
            self.active_record(page, request_id)
                .ok_or(EngineError::UnexpectedMessage {
                    kind: MessageKind::PageData,
                    page,
                    src,
                })?;
        self.requests[record].await_requester = false;
        self.requests[record].await_writeback = false;
        self.maybe_complete(record, actions)
    }

    /// Ends the operation of `record` if nothing is missing any more, and starts the next
    /// queued request of its page.
    fn maybe_complete<A: Actions + ?Sized>(
        &mut self,
        record: usize,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let active = self.requests[record];
        if !active.awaiting_acks.is_empty() || active.await_requester || active.await_writeback {
            return Ok(());
        }
        self.free_record(record);
        let slot = self.directory_slot(active.page)?;
        self.directory[slot].set_busy(false);
        self.drain(active.page, actions)
    }

    /// Runs the queued requests of `page` in arrival order until one keeps it busy.
    pub(super) fn drain<A: Actions + ?Sized>(
        &mut self,
        page: u64,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        let slot = self.directory_slot(page)?;
        if self.handoff.freezes(page) || self.directory[slot].arriving() {
            return Ok(());
        }
        let mut result = Ok(());
        loop {
            let Some(record) = self.oldest_waiting(page) else {
                self.directory[slot].set_queued(false);
                break;
            };
            let waiting = self.requests[record];
            let request = Request {
                requester: waiting.requester,
                page,
                request_id: waiting.request_id,
                write: waiting.write,
                has_copy: waiting.has_copy,
            };
            match self.home_start(&request, Some(record), actions) {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => {
                    // A request the directory says cannot be: drop it, serve the rest.
                    if self.requests[record].phase == Phase::Waiting {
                        self.free_record(record);
                    }
                    result = result.and(Err(error));
                }
            }
        }
        result
    }

    /// Takes a free request record for `request`, keeping `pending.len()` of them for our
    /// own requests (we have at most one per pending slot), so the home never refuses
    /// itself.
    fn alloc_record(&mut self, request: &Request) -> Option<usize> {
        let remote = request.requester != self.config.node;
        if remote && self.remote_records >= self.requests.len() - self.pending.len() {
            return None;
        }
        let record = self.requests.iter().position(|r| r.phase == Phase::Free)?;
        self.requests[record] = HomeRequest {
            page: request.page,
            request_id: request.request_id,
            seq: self.next_seq,
            requester: request.requester,
            phase: Phase::Waiting,
            write: request.write,
            has_copy: request.has_copy,
            ..HomeRequest::default()
        };
        self.next_seq += 1;
        if remote {
            self.remote_records += 1;
        }
        Some(record)
    }

    /// The request record that has waited longest for `page`.
    pub(super) fn oldest_waiting(&self, page: u64) -> Option<usize> {
        self.requests
            .iter()
            .enumerate()
            .filter(|(_, r)| r.phase == Phase::Waiting && r.page == page)
            .min_by_key(|(_, r)| r.seq)
            .map(|(index, _)| index)
    }

    pub(super) fn free_record(&mut self, record: usize) {
        let held = self.requests[record];
        if held.phase != Phase::Free && held.requester != self.config.node {
            self.remote_records -= 1;
        }
        self.requests[record] = HomeRequest::default();
    }

    /// No room for `request`: a peer is told to retry; our own requests always have room.
    fn refuse<A: Actions + ?Sized>(
        &mut self,
        request: &Request,
        actions: &mut A,
    ) -> Result<(), EngineError> {
        if request.requester == self.config.node {
            return Err(EngineError::StorageTooSmall);
        }
        self.counters.nacks_sent += 1;
        let body = Body::Nack { page: request.page };
        self.send(request.requester, request.request_id, body, actions);
        Ok(())
    }
}
