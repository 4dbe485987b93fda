//! Everything an engine holds, copied out of it and resumed later: what the model checker
//! (`crate::explore`) needs to store, compare and branch from millions of engine states.
//! Test builds only.
//!
//! It lives inside `engine` because the tables and registers are private to it, and
//! reading them here means the checker explores the engine's real state and runs its real
//! code, not a re-model. Nothing here changes what the engine does: [`EngineSnapshot::run`]
//! builds an ordinary [`Engine`] over the snapshot's own tables, exactly as a host would
//! over its allocations, except that the registers come from the snapshot instead of the
//! initial values.

use std::vec::Vec;

use super::state::{Handoff, HandoffStage, Phase, Want};
use super::{
    Counters, DirEntry, DirectoryState, DirectoryView, Engine, EngineConfig, EngineError, HomeMap,
    HomeRequest, LogicalPage, PageState, PendingFault,
};

/// The complete state of one engine: its home map, its four tables and the registers
/// beside them. The event counters are not part of it: they never influence a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EngineSnapshot {
    homes: HomeMap,
    handoff: Handoff,
    local: Vec<PageState>,
    directory: Vec<DirEntry>,
    pending: Vec<PendingFault>,
    requests: Vec<HomeRequest>,
    next_request_id: u64,
    next_seq: u64,
    remote_records: usize,
    deferred: usize,
}

impl EngineSnapshot {
    /// An engine in its initial state ([`Engine::new`]) with `pending` pending-fault slots
    /// and `requests` home request records.
    pub(crate) fn new(
        config: EngineConfig,
        homes: HomeMap,
        pending: usize,
        requests: usize,
    ) -> Result<Self, EngineError> {
        let len = |n: u64| usize::try_from(n).map_err(|_| EngineError::StorageTooSmall);
        let mut snapshot = Self {
            homes,
            handoff: Handoff::default(),
            local: vec![PageState::Invalid; len(homes.page_limit())?],
            directory: vec![DirEntry::default(); len(homes.page_limit())?],
            pending: vec![PendingFault::default(); pending],
            requests: vec![HomeRequest::default(); requests],
            next_request_id: 0,
            next_seq: 0,
            remote_records: 0,
            deferred: 0,
        };
        let engine = Engine::new(
            config,
            homes,
            super::EngineStorage {
                local: &mut snapshot.local,
                directory: &mut snapshot.directory,
                pending: &mut snapshot.pending,
                requests: &mut snapshot.requests,
            },
        )?;
        let (next_request_id, next_seq) = (engine.next_request_id, engine.next_seq);
        let (remote_records, deferred) = (engine.remote_records, engine.deferred);
        snapshot.next_request_id = next_request_id;
        snapshot.next_seq = next_seq;
        snapshot.remote_records = remote_records;
        snapshot.deferred = deferred;
        Ok(snapshot)
    }

    /// Resumes the engine over this snapshot's tables, runs `f` on it, and keeps the state
    /// it leaves. Returns `f`'s result and the counters of what happened during `f` (the
    /// resumed engine starts from zero counters).
    pub(crate) fn run<R>(
        &mut self,
        config: EngineConfig,
        f: impl FnOnce(&mut Engine<'_>) -> R,
    ) -> (R, Counters) {
        let mut engine = Engine {
            config,
            homes: self.homes,
            handoff: self.handoff,
            local: &mut self.local,
            directory: &mut self.directory,
            pending: &mut self.pending,
            requests: &mut self.requests,
            next_request_id: self.next_request_id,
            next_seq: self.next_seq,
            remote_records: self.remote_records,
            deferred: self.deferred,
            counters: Counters::default(),
        };
        let result = f(&mut engine);
        let counters = engine.counters;
        (self.homes, self.handoff) = (engine.homes, engine.handoff);
        let registers = (
            engine.next_request_id,
            engine.next_seq,
            engine.remote_records,
            engine.deferred,
        );
        (
            self.next_request_id,
            self.next_seq,
            self.remote_records,
            self.deferred,
        ) = registers;
        (result, counters)
    }

    /// This node's copy of `page` ([`Engine::page_state`]); Invalid for a page outside the
    /// table.
    pub(crate) fn page_state(&self, page: LogicalPage) -> PageState {
        usize::try_from(page.0)
            .ok()
            .and_then(|i| self.local.get(i))
            .copied()
            .unwrap_or(PageState::Invalid)
    }

    /// The directory entry of `page` ([`Engine::directory_state`]) when this node is its
    /// home by its own map (`node` is this node's id), and the entry has arrived.
    pub(crate) fn directory_view(&self, node: u16, page: LogicalPage) -> Option<DirectoryView> {
        if self.homes.home_of(page)? != node {
            return None;
        }
        let entry = self.directory.get(usize::try_from(page.0).ok()?)?;
        if entry.arriving() {
            return None;
        }
        Some(DirectoryView {
            state: entry.state(),
            busy: entry.busy(),
        })
    }

    /// The home of `page` by this node's map.
    pub(crate) fn home_of(&self, page: LogicalPage) -> Option<u16> {
        self.homes.home_of(page)
    }

    /// True when a request or an eviction for `page` is in flight here.
    pub(crate) fn has_pending(&self, page: LogicalPage) -> bool {
        self.pending.iter().any(|p| p.in_use() && p.page == page.0)
    }

    /// The copy an eviction of `page` under way still holds, if one is.
    pub(crate) fn evicting(&self, page: LogicalPage) -> Option<PageState> {
        self.pending
            .iter()
            .find(|p| p.want == Want::Evict && p.page == page.0)
            .map(|p| p.held)
    }

    /// [`Engine::is_idle`].
    pub(crate) fn is_idle(&self) -> bool {
        !self.pending.iter().any(PendingFault::in_use)
            && self.requests.iter().all(|r| r.phase == Phase::Free)
            && self.handoff.stage == HandoffStage::Idle
    }

    /// The next request id this node will use.
    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_request_id
    }

    /// Sets the next request id (the checker gives every node its own range).
    pub(crate) fn set_next_request_id(&mut self, id: u64) {
        self.next_request_id = id;
    }

    /// Every live request id in the tables: of the pending faults and of the home's
    /// records.
    pub(crate) fn request_ids(&self, mut f: impl FnMut(u64)) {
        for pending in self.pending.iter().filter(|p| p.in_use()) {
            f(pending.request_id);
        }
        for record in self.requests.iter().filter(|r| r.phase != Phase::Free) {
            f(record.request_id);
        }
    }

    /// Replaces every live request id by `rename(id)`. Ids are only ever compared for
    /// equality, so a renaming that is one-to-one and keeps each node's next id above its
    /// live ones leaves the engine's behaviour unchanged.
    pub(crate) fn rename_request_ids(&mut self, rename: impl Fn(u64) -> u64) {
        for pending in self.pending.iter_mut().filter(|p| p.in_use()) {
            pending.request_id = rename(pending.request_id);
        }
        for record in self.requests.iter_mut().filter(|r| r.phase != Phase::Free) {
            record.request_id = rename(record.request_id);
        }
    }

    /// Renumbers the home's arrival sequence numbers 0, 1, ... keeping their order. Only
    /// their order among live records matters (FIFO service), so this changes nothing the
    /// engine does, and states that differ only in how many requests ever arrived become
    /// equal.
    pub(crate) fn canonicalize_arrival_order(&mut self) {
        let mut seqs: Vec<u64> = self
            .requests
            .iter()
            .filter(|r| r.phase != Phase::Free)
            .map(|r| r.seq)
            .collect();
        seqs.sort_unstable();
        for record in self.requests.iter_mut().filter(|r| r.phase != Phase::Free) {
            let rank = seqs.partition_point(|s| *s < record.seq);
            record.seq = u64::try_from(rank).expect("a table index fits in u64");
        }
        self.next_seq = u64::try_from(seqs.len()).expect("a table length fits in u64");
    }

    /// Appends a byte encoding of the whole state (equal states, equal bytes).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        for range in self.homes.ranges() {
            out.extend_from_slice(&range.home.to_le_bytes());
        }
        let h = self.handoff;
        out.push(h.stage as u8);
        if h.stage != HandoffStage::Idle {
            out.extend_from_slice(&h.first.to_le_bytes());
            out.extend_from_slice(&h.count.to_le_bytes());
            out.extend_from_slice(&h.to.to_le_bytes());
            out.extend_from_slice(&h.awaiting.bits().to_le_bytes());
            out.extend_from_slice(&h.next.to_le_bytes());
        }
        out.extend(self.local.iter().map(|s| *s as u8));
        // State, busy and queued are the whole entry.
        for entry in &self.directory {
            let (exclusive, nodes) = match entry.state() {
                DirectoryState::Shared(sharers) => (0, sharers.bits()),
                DirectoryState::Exclusive(owner) => (1, owner),
            };
            out.push(exclusive);
            out.extend_from_slice(&nodes.to_le_bytes());
            out.push(
                u8::from(entry.busy())
                    | u8::from(entry.queued()) << 1
                    | u8::from(entry.arriving()) << 2,
            );
        }
        // Free slots and records (all fields at their defaults) are one byte.
        for p in &self.pending {
            if !p.in_use() {
                out.push(0);
                continue;
            }
            out.push(1);
            out.extend_from_slice(&p.page.to_le_bytes());
            out.extend_from_slice(&p.request_id.to_le_bytes());
            out.extend_from_slice(&p.read_vps.to_le_bytes());
            out.extend_from_slice(&p.write_vps.to_le_bytes());
            out.push(match p.want {
                Want::Nothing => 0,
                Want::Read => 1,
                Want::Write => 2,
                Want::Evict => 3,
            });
            out.push(p.held as u8);
            out.push(u8::from(p.deferred));
        }
        for r in &self.requests {
            if r.phase == Phase::Free {
                out.push(0);
                continue;
            }
            out.push(1);
            out.extend_from_slice(&r.page.to_le_bytes());
            out.extend_from_slice(&r.request_id.to_le_bytes());
            out.extend_from_slice(&r.seq.to_le_bytes());
            out.extend_from_slice(&r.requester.to_le_bytes());
            out.push(match r.phase {
                Phase::Free => 0,
                Phase::Waiting => 1,
                Phase::Active => 2,
            });
            out.push(u8::from(r.write));
            out.push(u8::from(r.has_copy));
            out.push(u8::from(r.requester_had_copy));
            out.extend_from_slice(&r.awaiting_acks.bits().to_le_bytes());
            out.extend_from_slice(&r.forwarded_to.to_le_bytes());
            out.push(u8::from(r.await_requester));
            out.push(u8::from(r.await_writeback));
        }
        for register in [
            self.next_request_id,
            self.next_seq,
            self.remote_records as u64,
            self.deferred as u64,
        ] {
            out.extend_from_slice(&register.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Action, LocalFault};

    fn setup() -> (EngineConfig, HomeMap) {
        let mut homes = HomeMap::new();
        homes.add(LogicalPage(5), 1, 0).unwrap();
        let config = EngineConfig {
            vs_id: 1,
            node: 0,
            node_count: 2,
        };
        (config, homes)
    }

    #[test]
    fn a_resumed_engine_continues_where_the_snapshot_left_it() {
        let (config, homes) = setup();
        let mut snapshot = EngineSnapshot::new(config, homes, 1, 2).unwrap();
        assert_eq!(snapshot.page_state(LogicalPage(5)), PageState::Exclusive);
        assert_eq!(snapshot.next_request_id(), 1);
        // Node 1 asks to read the home's page: the home downgrades and sends it.
        let read = vima::wire::Message {
            vs_id: 1,
            src: 1,
            dst: 0,
            request_id: 9,
            body: vima::wire::Body::ReadReq { page: 5 },
        };
        let mut actions = 0;
        let (result, counters) = snapshot.run(config, |engine| {
            engine.receive(&read, &mut |_: Action<'_>| actions += 1)
        });
        assert_eq!(result, Ok(()));
        assert_eq!(actions, 2, "Downgrade and SendPage");
        assert_eq!(counters.pages_sent, 1);
        assert_eq!(snapshot.page_state(LogicalPage(5)), PageState::Shared);
        let view = snapshot.directory_view(0, LogicalPage(5)).unwrap();
        assert_eq!(
            view.state,
            DirectoryState::Shared(crate::engine::NodeSet::single(0).with(1))
        );
        // A copy branches: the same write fault in both gives equal states, and the
        // counters start from zero in each run.
        let mut copy = snapshot.clone();
        let fault = LocalFault {
            page: LogicalPage(5),
            write: true,
            vp: 0,
        };
        for s in [&mut snapshot, &mut copy] {
            let (result, counters) = s.run(config, |e| e.fault(fault, &mut |_: Action<'_>| {}));
            assert_eq!(result, Ok(()));
            assert_eq!(counters.write_requests, 1);
            assert_eq!(counters.pages_sent, 0);
        }
        assert_eq!(snapshot, copy);
        assert!(!snapshot.is_idle(), "waiting for node 1's invalidation ack");
        assert_eq!(snapshot.next_request_id(), 2);
    }

    #[test]
    fn renaming_ids_and_arrival_order_reaches_every_live_entry() {
        let (config, homes) = setup();
        let mut snapshot = EngineSnapshot::new(config, homes, 1, 3).unwrap();
        // Node 1 reads (the page becomes Shared at 0 and 1), then the home writes: its
        // own request waits for node 1's invalidation ack.
        let read = vima::wire::Message {
            vs_id: 1,
            src: 1,
            dst: 0,
            request_id: 40,
            body: vima::wire::Body::ReadReq { page: 5 },
        };
        let fault = LocalFault {
            page: LogicalPage(5),
            write: true,
            vp: 0,
        };
        snapshot.run(config, |e| {
            e.receive(&read, &mut |_: Action<'_>| {}).unwrap();
            e.fault(fault, &mut |_: Action<'_>| {}).unwrap();
        });
        let mut ids = Vec::new();
        snapshot.request_ids(|id| ids.push(id));
        // The pending fault and the home's active record carry the same id.
        assert_eq!(ids, [1, 1]);
        snapshot.rename_request_ids(|id| id + 100);
        snapshot.canonicalize_arrival_order();
        let mut renamed = Vec::new();
        snapshot.request_ids(|id| renamed.push(id));
        assert_eq!(renamed, [101, 101]);
        let mut bytes = Vec::new();
        snapshot.encode(&mut bytes);
        let mut again = Vec::new();
        snapshot.clone().encode(&mut again);
        assert_eq!(bytes, again);
    }
}
