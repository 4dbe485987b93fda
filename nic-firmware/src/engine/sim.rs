//! A whole cluster in one test process: one engine per node, a network of FIFO links (one
//! per ordered node pair, delivered in any order across pairs, every message encoded and
//! decoded through `vima::wire`), page contents per node, and VPs that read and write.
//!
//! Page contents are a version number (how many writes the page has seen) stamped at both
//! ends of the 4 KiB, plus the page number, so a lost write, a stale read, a half-copied or
//! misdirected page all show. A VP's access succeeds only when its node's mapping allows it
//! (as a real guest access would); otherwise it faults and, after `FaultDone`, retries (and
//! may fault again if the page was taken away in between, as a real VP would).

use std::collections::VecDeque;

use vima::wire::{decode, encode, Body, MessageKind, MAX_MESSAGE_BYTES, PAGE_BYTES};

use super::*;

/// Logical page number of simulated page 0 (in ordinary coherent memory).
pub(super) const BASE_PAGE: u64 = 0x200;
const VS_ID: u16 = 7;
/// Version stamped into pages a node never received: reading it is a bug.
const NEVER_RECEIVED: u64 = u64::MAX;

fn contents(page: u64, version: u64) -> [u8; PAGE_BYTES] {
    let mut data = [0u8; PAGE_BYTES];
    data[..8].copy_from_slice(&version.to_le_bytes());
    data[8..16].copy_from_slice(&page.to_le_bytes());
    data[PAGE_BYTES - 8..].copy_from_slice(&version.to_le_bytes());
    data
}

fn version_of(data: &[u8; PAGE_BYTES], page: u64) -> u64 {
    let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
    assert_eq!(word(8), page, "page contents belong to another page");
    assert_eq!(word(0), word(PAGE_BYTES - 8), "page half copied");
    word(0)
}

/// What a simulated VP is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum VpState {
    Idle,
    /// Faulted; waiting for `FaultDone`.
    Blocked {
        page: usize,
        write: bool,
    },
    /// Got `FaultDone`; will retry the access.
    Ready {
        page: usize,
        write: bool,
    },
}

pub(super) struct SimNode {
    pub engine: Engine<'static>,
    /// The DMA window: contents per simulated page.
    pub memory: Vec<[u8; PAGE_BYTES]>,
    /// The guest mapping, as the actions left it.
    pub mapped: Vec<PageState>,
    pub vps: Vec<VpState>,
    pub wakes: u64,
}

pub(super) struct Cluster {
    pub nodes: Vec<SimNode>,
    links: Vec<VecDeque<Vec<u8>>>,
    pub homes: Vec<NodeId>,
    /// The version of the last write of each page.
    pub latest: Vec<u64>,
    vps_per_node: usize,
}

/// Applies one node's actions to the simulated host, as a host would.
struct Applier<'c> {
    node: NodeId,
    vps_per_node: usize,
    memory: &'c mut [[u8; PAGE_BYTES]],
    mapped: &'c mut [PageState],
    vps: &'c mut [VpState],
    wakes: &'c mut u64,
    links: &'c mut [VecDeque<Vec<u8>>],
    nodes: usize,
}

fn index_of(page: LogicalPage) -> usize {
    usize::try_from(page.0 - BASE_PAGE).unwrap()
}

impl Applier<'_> {
    fn transmit(&mut self, msg: &vima::wire::Message<'_>) {
        assert_eq!(msg.src, self.node);
        assert_eq!(msg.vs_id, VS_ID);
        let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
        let len = encode(msg, &mut buf).expect("engine messages encode");
        buf.truncate(len);
        let link = usize::from(msg.src) * self.nodes + usize::from(msg.dst);
        self.links[link].push_back(buf);
    }
}

impl Actions for Applier<'_> {
    fn push(&mut self, action: Action<'_>) {
        match action {
            Action::Send(msg) => {
                assert!(
                    !matches!(msg.body, Body::PageData { .. } | Body::Writeback { .. }),
                    "page contents go through SendPage"
                );
                self.transmit(&msg);
            }
            Action::SendPage(send) => {
                let data = self.memory[index_of(send.page)];
                self.transmit(&send.message(&data));
            }
            Action::InstallPage { page, state, data } => {
                let index = index_of(page);
                assert_ne!(state, PageState::Invalid);
                if let Some(data) = data {
                    self.memory[index] = *data;
                } else {
                    // In place: an upgrade of our Shared copy or the home mapping memory.
                    assert_ne!(self.mapped[index], PageState::Exclusive);
                }
                self.mapped[index] = state;
            }
            Action::StorePage { page, data } => {
                let index = index_of(page);
                assert_eq!(
                    self.mapped[index],
                    PageState::Invalid,
                    "writeback into a mapped page"
                );
                self.memory[index] = *data;
            }
            Action::Invalidate { page } => {
                let index = index_of(page);
                assert_ne!(self.mapped[index], PageState::Invalid);
                self.mapped[index] = PageState::Invalid;
            }
            Action::Downgrade { page } => {
                let index = index_of(page);
                assert_eq!(self.mapped[index], PageState::Exclusive);
                self.mapped[index] = PageState::Shared;
            }
            Action::FaultDone { page, vp } => {
                let local =
                    usize::try_from(vp).unwrap() - usize::from(self.node) * self.vps_per_node;
                match self.vps[local] {
                    VpState::Blocked { page: p, write } if p == index_of(page) => {
                        self.vps[local] = VpState::Ready { page: p, write };
                    }
                    other => panic!("FaultDone for VP {vp} in state {other:?}"),
                }
            }
            Action::WakeWatchers { .. } => *self.wakes += 1,
        }
    }
}

fn leak<T: Clone>(value: T, len: usize) -> &'static mut [T] {
    Box::leak(vec![value; len].into_boxed_slice())
}

impl Cluster {
    /// `homes[i]` is the home of simulated page i; each node has `vps_per_node` VPs and a
    /// home request table of `pending + extra_requests` records.
    pub fn new(nodes: usize, homes: &[NodeId], vps_per_node: usize, extra_requests: usize) -> Self {
        let mut map = HomeMap::new();
        for (i, home) in homes.iter().enumerate() {
            map.add(LogicalPage(BASE_PAGE + i as u64), 1, *home)
                .unwrap();
        }
        let node_count = u16::try_from(nodes).unwrap();
        let sim_nodes = (0..node_count)
            .map(|node| {
                let storage = EngineStorage {
                    local: leak(
                        PageState::Invalid,
                        usize::try_from(map.page_limit()).unwrap(),
                    ),
                    directory: leak(
                        DirEntry::default(),
                        usize::try_from(map.page_limit()).unwrap(),
                    ),
                    pending: leak(PendingFault::default(), vps_per_node),
                    requests: leak(HomeRequest::default(), vps_per_node + extra_requests),
                };
                let config = EngineConfig {
                    vs_id: VS_ID,
                    node,
                    node_count,
                };
                let engine = Engine::new(config, map, storage).unwrap();
                let memory = homes
                    .iter()
                    .enumerate()
                    .map(|(i, home)| {
                        let version = if *home == node { 0 } else { NEVER_RECEIVED };
                        contents(BASE_PAGE + i as u64, version)
                    })
                    .collect();
                let mapped = homes
                    .iter()
                    .map(|home| {
                        if *home == node {
                            PageState::Exclusive
                        } else {
                            PageState::Invalid
                        }
                    })
                    .collect();
                SimNode {
                    engine,
                    memory,
                    mapped,
                    vps: vec![VpState::Idle; vps_per_node],
                    wakes: 0,
                }
            })
            .collect();
        Self {
            nodes: sim_nodes,
            links: vec![VecDeque::new(); nodes * nodes],
            homes: homes.to_vec(),
            latest: vec![0; homes.len()],
            vps_per_node,
        }
    }

    pub fn page(index: usize) -> LogicalPage {
        LogicalPage(BASE_PAGE + index as u64)
    }

    fn vp_id(&self, node: usize, vp: usize) -> u32 {
        u32::try_from(node * self.vps_per_node + vp).unwrap()
    }

    /// Runs `f` on node `node`'s engine with its actions applied to the simulated host.
    fn with_node<R>(
        &mut self,
        node: usize,
        f: impl FnOnce(&mut Engine<'static>, &mut Applier<'_>) -> R,
    ) -> R {
        let nodes = self.nodes.len();
        let sim = &mut self.nodes[node];
        let mut applier = Applier {
            node: u16::try_from(node).unwrap(),
            vps_per_node: self.vps_per_node,
            memory: &mut sim.memory,
            mapped: &mut sim.mapped,
            vps: &mut sim.vps,
            wakes: &mut sim.wakes,
            links: &mut self.links,
            nodes,
        };
        f(&mut sim.engine, &mut applier)
    }

    pub fn state(&self, node: usize, page: usize) -> PageState {
        self.nodes[node]
            .engine
            .page_state(Self::page(page))
            .unwrap()
    }

    /// The node whose directory entry of `page` is live: the first home, until its map
    /// names another node (a handoff moved the page), then that node.
    pub fn home(&self, page: usize) -> usize {
        let first = usize::from(self.homes[page]);
        let named = self.nodes[first].engine.homes().home_of(Self::page(page));
        named.map_or(first, usize::from)
    }

    pub fn dir(&self, page: usize) -> DirectoryView {
        self.nodes[self.home(page)]
            .engine
            .directory_state(Self::page(page))
            .unwrap()
    }

    pub fn counters(&self, node: usize) -> Counters {
        *self.nodes[node].engine.counters()
    }

    pub fn vp(&self, node: usize, vp: usize) -> VpState {
        self.nodes[node].vps[vp]
    }

    pub fn version(&self, node: usize, page: usize) -> u64 {
        version_of(&self.nodes[node].memory[page], Self::page(page).0)
    }

    /// VP `vp` of `node` reads or writes `page`: at once if the mapping allows, else it
    /// faults and blocks.
    pub fn touch(&mut self, node: usize, vp: usize, page: usize, write: bool) {
        assert!(
            matches!(
                self.nodes[node].vps[vp],
                VpState::Idle | VpState::Ready { .. }
            ),
            "VP {node}.{vp} is blocked"
        );
        let mapped = self.nodes[node].mapped[page];
        let allowed = match mapped {
            PageState::Exclusive => true,
            PageState::Shared => !write,
            PageState::Invalid => false,
        };
        if allowed {
            let seen = self.version(node, page);
            assert_eq!(
                seen,
                self.latest[page],
                "node {node} VP {vp} {} page {page}: stale contents",
                if write { "writing" } else { "reading" }
            );
            if write {
                self.latest[page] += 1;
                self.nodes[node].memory[page] = contents(Self::page(page).0, self.latest[page]);
            }
            self.nodes[node].vps[vp] = VpState::Idle;
            return;
        }
        self.nodes[node].vps[vp] = VpState::Blocked { page, write };
        let fault = LocalFault {
            page: Self::page(page),
            write,
            vp: self.vp_id(node, vp),
        };
        self.with_node(node, |engine, applier| engine.fault(fault, applier))
            .expect("fault accepted");
    }

    /// Node `node` gives up its copy of `page`.
    pub fn evict(&mut self, node: usize, page: usize) -> Eviction {
        let logical = Self::page(page);
        let outcome = self
            .with_node(node, |engine, applier| engine.evict(logical, applier))
            .expect("eviction accepted");
        self.check();
        outcome
    }

    /// Node `node` starts handing page `page` (its own one-page range) over to `to`.
    pub fn hand_over(&mut self, node: usize, page: usize, to: u16) {
        let logical = Self::page(page);
        self.with_node(node, |engine, applier| {
            engine.hand_over(logical, 1, to, applier)
        })
        .expect("handoff accepted");
    }

    /// Retries the access of a VP that got `FaultDone`.
    pub fn retry(&mut self, node: usize, vp: usize) {
        let VpState::Ready { page, write } = self.nodes[node].vps[vp] else {
            panic!("VP {node}.{vp} is not ready");
        };
        self.touch(node, vp, page, write);
    }

    /// The kinds of the messages waiting on the `src` -> `dst` link, oldest first.
    pub fn link(&self, src: usize, dst: usize) -> Vec<MessageKind> {
        self.links[src * self.nodes.len() + dst]
            .iter()
            .map(|bytes| decode(bytes).unwrap().body.kind())
            .collect()
    }

    /// Delivers the oldest message on the `src` -> `dst` link and returns its kind.
    pub fn deliver(&mut self, src: usize, dst: usize) -> MessageKind {
        let n = self.nodes.len();
        let bytes = self.links[src * n + dst]
            .pop_front()
            .unwrap_or_else(|| panic!("nothing on link {src} -> {dst}"));
        let msg = decode(&bytes).expect("engine messages decode");
        let kind = msg.body.kind();
        self.with_node(dst, |engine, applier| engine.receive(&msg, applier))
            .unwrap_or_else(|e| panic!("node {dst} refused {kind:?} from {src}: {e}"));
        self.check();
        kind
    }

    /// Delivers from the `choice`-th nonempty link; false when the network is empty.
    pub fn deliver_any(&mut self, choice: usize) -> bool {
        let n = self.nodes.len();
        let busy: Vec<usize> = (0..n * n).filter(|l| !self.links[*l].is_empty()).collect();
        if busy.is_empty() {
            return false;
        }
        let link = busy[choice % busy.len()];
        self.deliver(link / n, link % n);
        true
    }

    /// Delivers until the network is empty, round robin over the links: every link is
    /// served within one turn, so the scheduler is fair (a requester the home refused and
    /// that retries at once cannot starve the messages that free the home's table).
    pub fn deliver_all(&mut self) {
        let n = self.nodes.len();
        let mut delivered = 0;
        loop {
            let mut any = false;
            for link in 0..n * n {
                if !self.links[link].is_empty() {
                    self.deliver(link / n, link % n);
                    any = true;
                    delivered += 1;
                }
            }
            if !any {
                break;
            }
            assert!(delivered < 100_000, "messages never stop");
        }
    }

    /// Delivers everything, then lets every ready VP finish its access (one at a time, so
    /// each one's retry is served before the next competes for the page).
    pub fn settle(&mut self) {
        let mut rounds = 0;
        loop {
            self.deliver_all();
            // Every fault completes once the messages are drained.
            for (node, sim) in self.nodes.iter().enumerate() {
                for (vp, state) in sim.vps.iter().enumerate() {
                    assert!(
                        !matches!(state, VpState::Blocked { .. }),
                        "VP {node}.{vp} stuck in {state:?}"
                    );
                }
            }
            let ready = (0..self.nodes.len()).find_map(|node| {
                (0..self.vps_per_node)
                    .find(|vp| matches!(self.nodes[node].vps[*vp], VpState::Ready { .. }))
                    .map(|vp| (node, vp))
            });
            let Some((node, vp)) = ready else { break };
            self.retry(node, vp);
            rounds += 1;
            assert!(rounds < 1_000, "VPs never finish");
        }
        for (node, sim) in self.nodes.iter().enumerate() {
            assert!(sim.engine.is_idle(), "node {node} still has requests");
            assert_eq!(sim.engine.counters().protocol_errors, 0);
        }
    }

    /// The invariants, checked after every step.
    pub fn check(&self) {
        for page in 0..self.homes.len() {
            let states: Vec<PageState> =
                (0..self.nodes.len()).map(|n| self.state(n, page)).collect();
            let exclusive = states
                .iter()
                .filter(|s| **s == PageState::Exclusive)
                .count();
            let shared = states.iter().filter(|s| **s == PageState::Shared).count();
            // One writer or many readers.
            assert!(
                exclusive <= 1,
                "page {page}: two Exclusive copies: {states:?}"
            );
            assert!(
                exclusive == 0 || shared == 0,
                "page {page}: Exclusive and Shared: {states:?}"
            );
            for (node, state) in states.iter().enumerate() {
                // The host did what the engine believes.
                assert_eq!(
                    self.nodes[node].mapped[page], *state,
                    "node {node} page {page}"
                );
                // Every valid copy is the latest.
                if *state != PageState::Invalid {
                    assert_eq!(
                        self.version(node, page),
                        self.latest[page],
                        "node {node} holds a stale page {page}"
                    );
                }
            }
            let home = self.home(page);
            let view = self.dir(page);
            if view.busy {
                continue;
            }
            // A free directory entry covers every valid copy, and in Shared the home's
            // memory is valid.
            match view.state {
                DirectoryState::Shared(sharers) => {
                    assert_eq!(
                        self.version(home, page),
                        self.latest[page],
                        "home memory stale"
                    );
                    for (node, state) in states.iter().enumerate() {
                        let node_id = u16::try_from(node).unwrap();
                        assert!(
                            *state == PageState::Invalid
                                || (*state == PageState::Shared && sharers.contains(node_id)),
                            "page {page}: node {node} {state:?} outside {sharers:?}"
                        );
                    }
                }
                DirectoryState::Exclusive(owner) => {
                    for (node, state) in states.iter().enumerate() {
                        assert!(
                            usize::from(owner) == node || *state == PageState::Invalid,
                            "page {page}: node {node} {state:?} but owner is {owner}"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use MessageKind::*;

    fn shared(nodes: &[u16]) -> DirectoryState {
        DirectoryState::Shared(nodes.iter().fold(NodeSet::EMPTY, |s, n| s.with(*n)))
    }

    /// Nodes `readers` read page 0 (home 0) and everything settles.
    fn shared_by(nodes: usize, readers: &[usize]) -> Cluster {
        let mut c = Cluster::new(nodes, &[0], 2, 8);
        for node in readers {
            c.touch(*node, 0, 0, false);
        }
        c.settle();
        c
    }

    #[test]
    fn read_miss_is_served_by_the_home() {
        let mut c = Cluster::new(3, &[0], 1, 4);
        c.touch(1, 0, 0, false);
        assert_eq!(c.link(1, 0), [ReadReq]);
        assert_eq!(c.deliver(1, 0), ReadReq);
        // The home keeps a read-only copy and answers from its memory at once.
        assert_eq!(c.state(0, 0), PageState::Shared);
        assert_eq!(
            c.dir(0),
            DirectoryView {
                state: shared(&[0, 1]),
                busy: false
            }
        );
        assert_eq!(c.deliver(0, 1), PageData);
        assert_eq!(c.state(1, 0), PageState::Shared);
        assert_eq!(
            c.vp(1, 0),
            VpState::Ready {
                page: 0,
                write: false
            }
        );
        c.settle();
        assert_eq!(c.counters(0).pages_sent, 1);
        assert_eq!(c.counters(1).read_requests, 1);
    }

    #[test]
    fn write_miss_takes_the_home_copy() {
        let mut c = Cluster::new(3, &[0], 1, 4);
        c.touch(1, 0, 0, true);
        assert_eq!(c.deliver(1, 0), WriteReq);
        assert_eq!(c.state(0, 0), PageState::Invalid);
        assert_eq!(c.nodes[0].wakes, 1);
        assert_eq!(
            c.dir(0),
            DirectoryView {
                state: DirectoryState::Exclusive(1),
                busy: false
            }
        );
        assert_eq!(c.deliver(0, 1), PageData);
        assert_eq!(c.state(1, 0), PageState::Exclusive);
        c.settle();
        assert_eq!(c.latest[0], 1);
        assert_eq!(c.version(1, 0), 1);
    }

    #[test]
    fn read_of_a_remote_owner_is_forwarded_and_written_back() {
        let mut c = Cluster::new(3, &[0], 1, 4);
        c.touch(1, 0, 0, true);
        c.settle();
        c.touch(2, 0, 0, false);
        assert_eq!(c.deliver(2, 0), ReadReq);
        assert_eq!(c.link(0, 1), [ForwardRead]);
        assert!(c.dir(0).busy);
        assert_eq!(c.deliver(0, 1), ForwardRead);
        // The owner keeps a read-only copy, sends one to the reader and one home.
        assert_eq!(c.state(1, 0), PageState::Shared);
        assert_eq!(c.link(1, 2), [PageData]);
        assert_eq!(c.link(1, 0), [Writeback]);
        assert_eq!(c.deliver(1, 0), Writeback);
        assert_eq!(c.version(0, 0), 1, "home memory refreshed");
        assert!(c.dir(0).busy, "still waiting for the reader");
        assert_eq!(c.deliver(1, 2), PageData);
        assert_eq!(c.deliver(2, 0), Unblock);
        assert_eq!(
            c.dir(0),
            DirectoryView {
                state: shared(&[1, 2]),
                busy: false
            }
        );
        c.settle();
        assert_eq!(c.counters(0).forwards_sent, 1);
        assert_eq!(c.counters(1).forwards_served, 1);
        assert_eq!(c.counters(0).writebacks_received, 1);
        // A later read is served by the home from the written-back memory.
        c.touch(0, 0, 0, false);
        c.settle();
        assert_eq!(c.dir(0).state, shared(&[0, 1, 2]));
        assert_eq!(c.counters(0).forwards_sent, 1);
    }

    #[test]
    fn write_invalidates_all_sharers_in_parallel() {
        let mut c = shared_by(4, &[1, 2, 3]);
        assert_eq!(c.dir(0).state, shared(&[0, 1, 2, 3]));
        c.touch(1, 0, 0, true);
        assert_eq!(c.deliver(1, 0), WriteReq);
        assert_eq!(c.counters(1).upgrade_requests, 1);
        // Every invalidation is out before any ack is in; the home dropped its own copy.
        assert_eq!(c.link(0, 2), [Invalidate]);
        assert_eq!(c.link(0, 3), [Invalidate]);
        assert_eq!(c.state(0, 0), PageState::Invalid);
        assert_eq!(c.counters(0).invalidations_sent, 2);
        c.deliver(0, 3);
        assert_eq!(c.deliver(3, 0), InvalidateAck);
        assert!(c.link(0, 1).is_empty(), "no grant before the last ack");
        c.deliver(0, 2);
        c.deliver(2, 0);
        // The writer still has its copy: a grant without data.
        assert_eq!(c.link(0, 1), [UpgradeGrant]);
        let sent = c.counters(0).pages_sent;
        c.settle();
        assert_eq!(c.counters(0).pages_sent, sent);
        assert_eq!(c.state(1, 0), PageState::Exclusive);
        assert_eq!((c.nodes[2].wakes, c.nodes[3].wakes), (1, 1));
        assert_eq!(c.version(1, 0), 1);
    }

    #[test]
    fn competing_upgrades_the_loser_gets_data() {
        // Two writers on a shared page; the second loses its copy before its upgrade runs.
        let mut c = shared_by(3, &[1, 2]);
        c.touch(1, 0, 0, true);
        c.touch(2, 0, 0, true);
        assert_eq!(c.deliver(1, 0), WriteReq);
        assert_eq!(c.link(0, 2), [Invalidate]);
        assert_eq!(c.deliver(2, 0), WriteReq);
        assert_eq!(c.counters(0).requests_queued, 1);
        // Node 2 loses its copy while its upgrade waits.
        assert_eq!(c.deliver(0, 2), Invalidate);
        assert_eq!(c.state(2, 0), PageState::Invalid);
        assert!(matches!(c.vp(2, 0), VpState::Blocked { .. }));
        assert_eq!(c.deliver(2, 0), InvalidateAck);
        // Node 1 is granted; the queued upgrade now needs the page from node 1.
        assert_eq!(c.link(0, 1), [UpgradeGrant, ForwardWrite]);
        assert_eq!(c.counters(0).upgrades_lost_copy, 1);
        c.deliver(0, 1);
        c.retry(1, 0); // node 1 writes before the forward arrives
        assert_eq!(c.latest[0], 1);
        c.deliver(0, 1);
        assert_eq!(c.link(1, 2), [PageData]);
        c.settle();
        assert_eq!(c.state(2, 0), PageState::Exclusive);
        assert_eq!(c.latest[0], 2);
        assert_eq!(c.version(2, 0), 2);
    }

    #[test]
    fn two_write_misses_are_serialized() {
        let mut c = Cluster::new(3, &[0], 1, 4);
        c.touch(1, 0, 0, true);
        c.touch(2, 0, 0, true);
        c.deliver(2, 0);
        c.deliver(1, 0);
        // The first is served at once; the second goes to the new owner, behind its data.
        assert_eq!(c.link(0, 2), [PageData, ForwardWrite]);
        assert_eq!(c.link(0, 1), []);
        assert_eq!(c.counters(0).requests_queued, 0);
        c.deliver(0, 2);
        assert_eq!(c.link(0, 2), [ForwardWrite]);
        c.retry(2, 0);
        c.settle();
        assert_eq!(c.latest[0], 2);
        assert_eq!(c.dir(0).state, DirectoryState::Exclusive(1));
        assert_eq!(c.version(1, 0), 2);
    }

    #[test]
    fn read_during_invalidation_waits_and_sees_the_write() {
        let mut c = shared_by(4, &[1, 2]);
        c.touch(1, 0, 0, true);
        c.deliver(1, 0);
        c.touch(3, 0, 0, false);
        c.deliver(3, 0);
        assert_eq!(c.counters(0).requests_queued, 1);
        assert!(c.link(0, 3).is_empty());
        c.deliver(0, 2);
        c.deliver(2, 0);
        c.deliver(0, 1);
        c.retry(1, 0);
        assert_eq!(c.latest[0], 1);
        // The queued read went to the new owner.
        assert_eq!(c.link(0, 1), [ForwardRead]);
        c.settle();
        assert_eq!(c.dir(0).state, shared(&[1, 3]));
        assert_eq!(c.version(3, 0), 1);
    }

    #[test]
    fn upgrade_while_another_node_reads() {
        for read_first in [true, false] {
            let mut c = shared_by(4, &[1, 2]);
            c.touch(1, 0, 0, true);
            c.touch(3, 0, 0, false);
            if read_first {
                // Served from the home's memory at once; then node 3 is a sharer too.
                c.deliver(3, 0);
                assert_eq!(c.link(0, 3), [PageData]);
                c.deliver(1, 0);
                assert_eq!(c.link(0, 3), [PageData, Invalidate]);
                assert_eq!(c.link(0, 2), [Invalidate]);
            } else {
                c.deliver(1, 0);
                c.deliver(3, 0);
                assert_eq!(c.counters(0).requests_queued, 1);
                assert_eq!(c.link(0, 3), []);
            }
            c.settle();
            assert_eq!(c.latest[0], 1);
            assert_eq!(c.dir(0).state, shared(&[1, 3]));
            assert_eq!(c.version(3, 0), 1);
        }
    }

    #[test]
    fn invalidation_never_overtakes_forwarded_data() {
        // Node 1 owns the page; node 2's read is forwarded; the data 1 -> 2 is slow.
        let mut c = Cluster::new(4, &[0], 1, 4);
        c.touch(1, 0, 0, true);
        c.settle();
        c.touch(2, 0, 0, false);
        c.deliver(2, 0);
        c.deliver(0, 1);
        c.deliver(1, 0); // writeback
                         // A writer arrives: the home waits for node 2's Unblock before invalidating it.
        c.touch(3, 0, 0, true);
        c.deliver(3, 0);
        assert!(c.dir(0).busy);
        assert_eq!(c.link(0, 2), []);
        c.deliver(1, 2);
        assert_eq!(c.state(2, 0), PageState::Shared);
        assert_eq!(c.version(2, 0), 1);
        assert_eq!(c.deliver(2, 0), Unblock);
        assert_eq!(c.link(0, 2), [Invalidate]);
        assert_eq!(c.link(0, 1), [Invalidate]);
        c.settle();
        assert_eq!(c.latest[0], 2);
    }

    #[test]
    fn forward_reaches_the_new_owner_only_after_it_has_the_data() {
        let mut c = Cluster::new(4, &[0], 1, 4);
        c.touch(1, 0, 0, true);
        c.settle();
        c.touch(2, 0, 0, true);
        c.deliver(2, 0);
        c.deliver(0, 1);
        assert_eq!(c.link(1, 2), [PageData]);
        c.touch(3, 0, 0, false);
        c.deliver(3, 0);
        assert_eq!(
            c.link(0, 2),
            [],
            "no forward to a node still waiting for the page"
        );
        c.deliver(1, 2);
        c.deliver(2, 0);
        assert_eq!(c.link(0, 2), [ForwardRead]);
        c.settle();
        assert_eq!(c.dir(0).state, shared(&[2, 3]));
        assert_eq!(c.version(3, 0), 2);
    }

    #[test]
    fn home_writes_while_others_share() {
        let mut c = shared_by(3, &[1, 2]);
        let sent = c.counters(0).pages_sent;
        c.touch(0, 0, 0, true);
        // The home's request runs inside its own engine: no message to itself, invalidations
        // to both sharers at once.
        assert_eq!(c.link(0, 1), [Invalidate]);
        assert_eq!(c.link(0, 2), [Invalidate]);
        assert_eq!(c.state(0, 0), PageState::Shared);
        assert!(c.dir(0).busy);
        c.settle();
        assert_eq!(c.state(0, 0), PageState::Exclusive);
        assert_eq!(c.counters(0).pages_sent, sent);
        assert_eq!(c.version(0, 0), 1);
    }

    #[test]
    fn home_reads_its_page_back_from_a_remote_owner() {
        let mut c = Cluster::new(3, &[0], 1, 4);
        c.touch(1, 0, 0, true);
        c.settle();
        c.touch(0, 0, 0, false);
        assert_eq!(c.link(0, 1), [ForwardRead]);
        c.deliver(0, 1);
        // One copy, to the home: it is both the reader's data and the writeback.
        assert_eq!(c.link(1, 0), [PageData]);
        c.deliver(1, 0);
        assert_eq!(
            c.dir(0),
            DirectoryView {
                state: shared(&[0, 1]),
                busy: false
            }
        );
        c.settle();
        assert_eq!(c.version(0, 0), 1);
    }

    #[test]
    fn faults_on_one_page_coalesce() {
        let mut c = Cluster::new(2, &[0], 3, 4);
        c.touch(1, 0, 0, false);
        c.touch(1, 1, 0, false);
        c.touch(1, 2, 0, true);
        assert_eq!(c.link(1, 0), [ReadReq]);
        assert_eq!(c.counters(1).faults_coalesced, 2);
        c.deliver(1, 0);
        c.deliver(0, 1);
        assert!(matches!(c.vp(1, 0), VpState::Ready { .. }));
        assert!(matches!(c.vp(1, 1), VpState::Ready { .. }));
        assert!(matches!(c.vp(1, 2), VpState::Blocked { .. }));
        // The writer's upgrade follows the read.
        assert_eq!(c.link(1, 0), [WriteReq]);
        c.settle();
        assert_eq!(c.latest[0], 1);
    }

    #[test]
    fn a_fault_on_a_valid_page_completes_at_once() {
        let mut c = Cluster::new(2, &[0], 1, 4);
        let mut actions = Vec::new();
        let fault = LocalFault {
            page: Cluster::page(0),
            write: true,
            vp: 0,
        };
        c.nodes[0]
            .engine
            .fault(fault, &mut |a: Action<'_>| actions.push(format!("{a:?}")))
            .unwrap();
        assert_eq!(
            actions,
            [format!(
                "{:?}",
                Action::FaultDone {
                    page: Cluster::page(0),
                    vp: 0
                }
            )]
        );
        assert_eq!(c.counters(0).faults_resolved_locally, 1);
    }

    #[test]
    fn per_node_and_unknown_pages_are_refused() {
        let mut c = Cluster::new(2, &[0], 1, 4);
        let engine = &mut c.nodes[1].engine;
        let mut sink = |_: Action<'_>| panic!("no action expected");
        for page in [0, 1, 4] {
            let fault = LocalFault {
                page: LogicalPage(page),
                write: false,
                vp: 0,
            };
            assert_eq!(
                engine.fault(fault, &mut sink),
                Err(EngineError::NotCoherent { page })
            );
        }
        let beyond = LogicalPage(BASE_PAGE + 1);
        let fault = LocalFault {
            page: beyond,
            write: false,
            vp: 0,
        };
        assert_eq!(
            engine.fault(fault, &mut sink),
            Err(EngineError::UnknownPage { page: beyond.0 })
        );
        let fault = LocalFault {
            page: Cluster::page(0),
            write: false,
            vp: 64,
        };
        assert_eq!(
            engine.fault(fault, &mut sink),
            Err(EngineError::BadVp { vp: 64 })
        );
        assert_eq!(
            engine.page_state(LogicalPage(2)),
            Err(EngineError::NotCoherent { page: 2 })
        );
        assert_eq!(
            engine.directory_state(Cluster::page(0)),
            Err(EngineError::NotHome { page: BASE_PAGE })
        );
        assert_eq!(engine.counters().faults, 0);
    }

    #[test]
    fn a_full_home_queue_nacks_and_the_requester_retries() {
        // One record per pending slot is reserved for the home itself; one more is all
        // remote requesters get.
        let mut c = Cluster::new(4, &[0], 1, 1);
        c.touch(1, 0, 0, true);
        c.settle();
        c.touch(2, 0, 0, false);
        c.deliver(2, 0); // forwarded: takes the one remote record
        c.touch(3, 0, 0, false);
        c.deliver(3, 0);
        assert_eq!(c.link(0, 3), [Nack]);
        assert_eq!(c.counters(0).nacks_sent, 1);
        c.deliver(0, 3);
        assert_eq!(c.link(3, 0), [ReadReq], "sent again");
        // The home's own request still finds room.
        c.touch(0, 0, 0, false);
        assert_eq!(c.counters(0).requests_queued, 1);
        c.settle();
        assert!(c.counters(3).nacks_received >= 1);
        assert_eq!(c.dir(0).state, shared(&[0, 1, 2, 3]));
    }

    #[test]
    fn messages_that_break_the_protocol_are_refused() {
        let mut c = Cluster::new(3, &[0], 1, 4);
        let page = BASE_PAGE;
        let data = [0u8; PAGE_BYTES];
        fn msg(src: u16, dst: u16, body: Body<'_>) -> vima::wire::Message<'_> {
            vima::wire::Message {
                vs_id: VS_ID,
                src,
                dst,
                request_id: 1,
                body,
            }
        }
        let cases: [(usize, vima::wire::Message<'_>, EngineError); 9] = [
            (
                1,
                vima::wire::Message {
                    vs_id: 9,
                    ..msg(0, 1, Body::Invalidate { page })
                },
                EngineError::WrongVirtualServer { vs_id: 9 },
            ),
            (
                1,
                msg(0, 2, Body::Invalidate { page }),
                EngineError::WrongDestination { dst: 2 },
            ),
            (
                1,
                msg(1, 1, Body::Invalidate { page }),
                EngineError::BadSource { node: 1 },
            ),
            (
                1,
                msg(2, 1, Body::Invalidate { page }),
                EngineError::NotFromHome { page, src: 2 },
            ),
            (
                1,
                msg(0, 1, Body::Invalidate { page }),
                EngineError::UnexpectedMessage {
                    kind: Invalidate,
                    page,
                    src: 0,
                },
            ),
            (
                1,
                msg(2, 1, Body::ReadReq { page }),
                EngineError::NotHome { page },
            ),
            (
                0,
                msg(1, 0, Body::InvalidateAck { page }),
                EngineError::UnexpectedMessage {
                    kind: InvalidateAck,
                    page,
                    src: 1,
                },
            ),
            (
                2,
                msg(
                    1,
                    2,
                    Body::PageData {
                        page,
                        exclusive: true,
                        data: &data,
                    },
                ),
                EngineError::UnexpectedMessage {
                    kind: PageData,
                    page,
                    src: 1,
                },
            ),
            (
                1,
                msg(0, 1, Body::Heartbeat { sequence: 1 }),
                EngineError::NotCoherenceMessage { kind: Heartbeat },
            ),
        ];
        for (index, (node, msg, expected)) in cases.iter().enumerate() {
            let refused = c.nodes[*node].engine.receive(msg, &mut |a: Action<'_>| {
                panic!("case {index}: action {a:?}")
            });
            assert_eq!(refused, Err(*expected), "case {index}");
        }
        // A forward to a node that does not own the page.
        let forward = msg(0, 1, Body::ForwardRead { page, requester: 2 });
        let refused = c.nodes[1].engine.receive(&forward, &mut |_: Action<'_>| {});
        assert!(matches!(
            refused,
            Err(EngineError::UnexpectedMessage { .. })
        ));
        assert_eq!(c.counters(1).protocol_errors, 8);
        // Nothing changed.
        c.check();
        assert!(c.nodes.iter().all(|n| n.engine.is_idle()));
    }

    #[test]
    fn an_evicted_exclusive_page_returns_to_the_home() {
        let mut c = Cluster::new(2, &[0], 1, 4);
        c.touch(1, 0, 0, true);
        c.settle();
        c.touch(1, 0, 0, true); // v2 at node 1 only
        assert_eq!(c.evict(1, 0), Eviction::Started);
        assert_eq!(c.state(1, 0), PageState::Invalid, "unmapped at once");
        assert_eq!(c.link(1, 0), [Evict]);
        assert_eq!(c.deliver(1, 0), Evict);
        assert_eq!(c.dir(0).state, shared(&[]));
        assert_eq!(c.version(0, 0), 2, "the home's memory took the page");
        assert_eq!(c.deliver(0, 1), EvictAck);
        assert!(c.nodes[1].engine.is_idle());
        // The home reads its memory back without asking anyone.
        c.touch(0, 0, 0, false);
        assert!(matches!(c.vp(0, 0), VpState::Idle | VpState::Ready { .. }));
        c.settle();
        assert_eq!(c.state(0, 0), PageState::Shared);
        assert_eq!(c.counters(1).evictions_sent, 1);
        assert_eq!(c.counters(0).evictions_received, 1);
    }

    #[test]
    fn an_eviction_that_crosses_a_forward_serves_it_from_memory() {
        let mut c = Cluster::new(3, &[0], 1, 4);
        c.touch(1, 0, 0, true);
        c.settle();
        // Node 2 reads (the home forwards to the owner, node 1) while node 1 evicts.
        c.touch(2, 0, 0, false);
        c.deliver(2, 0);
        assert_eq!(c.link(0, 1), [ForwardRead]);
        assert_eq!(c.evict(1, 0), Eviction::Started);
        assert_eq!(c.evict(1, 0), Eviction::InFlight);
        c.deliver(0, 1); // the forward: served from node 1's DMA window
        assert_eq!(c.counters(1).evicting_copies_taken, 1);
        assert_eq!(c.link(1, 0), [Evict, Writeback]);
        c.settle();
        assert_eq!(c.state(2, 0), PageState::Shared);
        assert_eq!(c.dir(0).state, shared(&[2]), "node 1 left the sharers");
        // A fault at the evicting node waits for the ack, then asks again.
        assert_eq!(c.evict(2, 0), Eviction::Started);
        c.touch(2, 0, 0, true);
        assert_eq!(c.link(2, 0), [Evict]);
        c.settle();
        assert_eq!(c.state(2, 0), PageState::Exclusive);
        assert_eq!(c.evict(1, 0), Eviction::NoCopy);
    }

    #[test]
    fn a_home_hands_its_page_over_while_others_use_it() {
        // Page 0 (home 0) is Exclusive at node 1; node 2 reads meanwhile.
        let mut c = Cluster::new(3, &[0], 1, 4);
        c.touch(1, 0, 0, true);
        c.settle();
        c.touch(2, 0, 0, false);
        c.hand_over(0, 0, 2);
        assert!(!c.nodes[0].engine.is_idle());
        // The read is frozen at the old home; the new home hears first.
        c.deliver(2, 0);
        assert_eq!(c.link(0, 2), [HomeChange]);
        assert!(
            c.link(0, 1).is_empty(),
            "the others wait for the new home's ack"
        );
        c.deliver(0, 2);
        c.deliver(2, 0);
        assert_eq!(c.link(0, 1), [HomeChange]);
        c.deliver(0, 1);
        c.deliver(1, 0);
        // Every node knows: the entry moves (no page: the owner has it), and the frozen
        // read is sent on.
        assert_eq!(c.link(0, 2), [HomeMove, Nack]);
        c.settle();
        assert!(c
            .nodes
            .iter()
            .all(|n| n.engine.homes().home_of(Cluster::page(0)) == Some(2)));
        assert_eq!(c.state(2, 0), PageState::Shared);
        assert_eq!(
            c.version(2, 0),
            1,
            "the owner's write, forwarded by the new home"
        );
        let moved = c.nodes[2].engine.directory_state(Cluster::page(0)).unwrap();
        assert_eq!(moved.state, shared(&[1, 2]));
        assert!(c.nodes[0].engine.directory_state(Cluster::page(0)).is_err());
        // The old home is an ordinary node now: it reads from the new home.
        c.touch(0, 0, 0, true);
        c.settle();
        assert_eq!(c.state(0, 0), PageState::Exclusive);
        assert_eq!(c.counters(0).homes_moved_out, 1);
        assert_eq!(c.counters(2).homes_moved_in, 1);
        assert_eq!(
            c.nodes[0]
                .engine
                .hand_over(Cluster::page(0), 1, 1, &mut |_: Action<'_>| {}),
            Err(EngineError::BadHomeRange),
            "not its range any more"
        );
    }

    #[test]
    fn evictions_that_break_the_protocol_are_refused() {
        let mut c = Cluster::new(2, &[0], 1, 4);
        let page = BASE_PAGE;
        c.touch(1, 0, 0, true);
        c.settle();
        assert_eq!(
            c.nodes[0]
                .engine
                .evict(LogicalPage(page), &mut |_: Action<'_>| {}),
            Err(EngineError::EvictAtHome { page })
        );
        let ack = vima::wire::Message {
            vs_id: VS_ID,
            src: 0,
            dst: 1,
            request_id: 5,
            body: Body::EvictAck { page },
        };
        let refused = c.nodes[1].engine.receive(&ack, &mut |_: Action<'_>| {});
        assert!(matches!(
            refused,
            Err(EngineError::UnexpectedMessage { kind: EvictAck, .. })
        ));
        // A Shared eviction by the node the directory says owns the page.
        let evict = vima::wire::Message {
            src: 1,
            dst: 0,
            body: Body::Evict { page, data: None },
            ..ack
        };
        let refused = c.nodes[0].engine.receive(&evict, &mut |_: Action<'_>| {});
        assert!(matches!(
            refused,
            Err(EngineError::UnexpectedMessage { kind: Evict, .. })
        ));
        c.check();
    }

    #[test]
    fn engine_checks_its_configuration() {
        let mut map = HomeMap::new();
        map.add(LogicalPage(BASE_PAGE), 4, 0).unwrap();
        let build =
            |map: HomeMap, node: u16, count: u16, dir: usize, pending: usize, requests: usize| {
                let storage = EngineStorage {
                    local: leak(PageState::Invalid, 0x204),
                    directory: leak(DirEntry::default(), dir),
                    pending: leak(PendingFault::default(), pending),
                    requests: leak(HomeRequest::default(), requests),
                };
                let config = EngineConfig {
                    vs_id: 0,
                    node,
                    node_count: count,
                };
                Engine::new(config, map, storage).map(|_| ())
            };
        // The directory covers every page (0x204), on every node: any may become a home.
        let pages = 0x204;
        assert_eq!(build(map, 0, 2, pages, 1, 2), Ok(()));
        assert_eq!(
            build(map, 2, 2, pages, 1, 2),
            Err(EngineError::BadNodeConfig)
        );
        assert_eq!(
            build(map, 0, 17, pages, 1, 2),
            Err(EngineError::BadNodeConfig)
        );
        assert_eq!(
            build(map, 0, 2, pages - 1, 1, 2),
            Err(EngineError::StorageTooSmall)
        );
        assert_eq!(
            build(map, 1, 2, 4, 1, 2),
            Err(EngineError::StorageTooSmall),
            "node 1 is home of nothing yet, but may become one"
        );
        assert_eq!(
            build(map, 0, 2, pages, 2, 2),
            Err(EngineError::StorageTooSmall)
        );
        assert_eq!(
            build(map, 0, 2, pages, 0, 2),
            Err(EngineError::StorageTooSmall)
        );
        map.add(LogicalPage(0x300), 1, 5).unwrap();
        assert_eq!(
            build(map, 0, 2, 0x301, 1, 2),
            Err(EngineError::BadHomeRange)
        );
    }

    /// One step of a random run: deliver a message or let a VP act.
    #[derive(Clone, Copy, Debug)]
    struct Step {
        deliver: bool,
        pick: usize,
        page: usize,
        write: bool,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            (0u8..4, any::<usize>(), any::<usize>(), any::<bool>()).prop_map(
                |(kind, pick, page, write)| Step {
                    deliver: kind != 0,
                    pick,
                    page,
                    write,
                },
            ),
            0..400,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// N nodes, a few pages with random homes, VPs reading and writing at random, a
        /// network that reorders across links: after every step one writer or many
        /// readers, every valid copy holds the last write, the directory covers every
        /// copy; at the end every fault completed and every engine is idle.
        #[test]
        fn random_clusters_stay_coherent(
            nodes in 3usize..=4,
            homes in proptest::collection::vec(0u16..4, 2..=4),
            vps_per_node in 1usize..=2,
            tight_queue in any::<bool>(),
            steps in steps(),
        ) {
            let homes: Vec<u16> = homes.iter().map(|h| h % u16::try_from(nodes).unwrap()).collect();
            let extra = if tight_queue { 1 } else { (nodes - 1) * vps_per_node };
            let mut c = Cluster::new(nodes, &homes, vps_per_node, extra);
            for step in steps {
                if step.deliver && c.deliver_any(step.pick) {
                    continue;
                }
                // A VP that is not blocked: retry a pending access or start a new one.
                let free: Vec<(usize, usize)> = (0..nodes)
                    .flat_map(|n| (0..vps_per_node).map(move |v| (n, v)))
                    .filter(|(n, v)| !matches!(c.vp(*n, *v), VpState::Blocked { .. }))
                    .collect();
                if free.is_empty() {
                    continue;
                }
                let (node, vp) = free[step.pick % free.len()];
                if matches!(c.vp(node, vp), VpState::Ready { .. }) {
                    c.retry(node, vp);
                } else {
                    c.touch(node, vp, step.page % homes.len(), step.write);
                }
                c.check();
            }
            c.settle();
            c.check();
            // Nobody evicts, so some node always holds a valid copy.
            for page in 0..homes.len() {
                let holders = (0..nodes).filter(|n| c.state(*n, page) != PageState::Invalid).count();
                prop_assert!(holders >= 1, "page {} has no valid copy", page);
            }
        }
    }
}
