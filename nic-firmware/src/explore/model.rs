//! The explored system as one value: every node's engine (its real tables, through
//! [`EngineSnapshot`]), every node's simulated host (DMA window and guest mapping per page),
//! the VPs, and the network. One step is one event: a VP touches a page (and maybe faults
//! into its engine), or the network does something to one link (and maybe hands a message
//! to an engine). The engine's actions are applied to the host as `sim.rs` applies them.
//!
//! Page contents are a version number (how many writes the page has seen) stamped at both
//! ends of the 4 KiB with the page number, as in `sim.rs`, so a stale read, a lost write, a
//! half-copied or misdirected page all show.
//!
//! States that differ only in the *values* of request ids or arrival sequence numbers are
//! merged: the engine only compares request ids for equality and arrival numbers for order,
//! so renaming them (keeping each node's ids in its own range, above which it keeps
//! allocating) changes nothing it does. Without this, a VP that loses its page before it
//! retries and faults again would make the state space infinite.

use std::vec::Vec;

use vima::wire::{Body, Message, PAGE_BYTES};

use crate::engine::snapshot::EngineSnapshot;
use crate::engine::{
    Action, Actions, Counters, DirectoryState, Engine, EngineConfig, EngineError, HomeMap,
    LogicalPage, NodeId, PageState,
};

use super::network::{Arrival, Link, NetworkModel, Packet, PacketBody};

/// Logical page number of explored page 0: the first coherent page (pages 1..=4 are the
/// per-node region).
pub(super) const BASE_PAGE: u64 = 5;
const VS_ID: u16 = 3;
/// Version a node's DMA window holds for a page it never received: reading it is a bug.
const NEVER_RECEIVED: u16 = u16::MAX;
/// Node `k`'s request ids are `k << ID_SHIFT | n`: disjoint ranges, so renaming ids per
/// node never makes two transactions' ids collide (or stop colliding).
const ID_SHIFT: u32 = 32;

/// What to explore.
#[derive(Clone, Debug)]
pub(crate) struct ModelConfig {
    /// Nodes in the cluster.
    pub nodes: u16,
    /// The home of each explored page.
    pub homes: Vec<NodeId>,
    /// VPs on every node.
    pub vps_per_node: usize,
    /// How many accesses each VP makes (VP `v` of node `n` at `n * vps_per_node + v`);
    /// each access is to any page, a read or a write: every choice is explored.
    pub accesses: Vec<u8>,
    /// Home request records beyond one per pending slot; `(nodes - 1) * vps_per_node`
    /// never refuses a request, fewer makes the home answer `Nack`.
    pub extra_requests: usize,
    /// How many copies each node may evict (`Engine::evict`, at any moment, of any page
    /// it holds and is not the home of): 0 explores the protocol without eviction.
    pub evictions: u8,
    /// Explored page `.0` (its own one-page range) has its home handed over to node
    /// `.1` at some moment (`Engine::hand_over`), while the VPs run.
    pub handoff: Option<(u8, NodeId)>,
    /// How the network behaves.
    pub network: NetworkModel,
    /// Stop (and fail) beyond this many states.
    pub max_states: usize,
}

/// One access of a VP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Op {
    pub page: u8,
    pub write: bool,
}

/// A simulated VP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Vp {
    /// Accesses not started yet.
    ops_left: u8,
    /// The access under way (faulted, maybe resolved and to be retried).
    current: Option<Op>,
    /// Faulted and waiting for `FaultDone`.
    blocked: bool,
}

/// One node's simulated host: what the actions left in its DMA window and guest mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Host {
    memory: Vec<u16>,
    mapped: Vec<PageState>,
}

/// The whole explored system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct State {
    engines: Vec<EngineSnapshot>,
    hosts: Vec<Host>,
    /// VP `v` of node `n` is `n * vps_per_node + v` (also its VP id in faults).
    vps: Vec<Vp>,
    /// The link `src -> dst` is `src * nodes + dst`.
    links: Vec<Link>,
    /// The version of the last write of each page.
    latest: Vec<u16>,
    /// Evictions each node may still start.
    evictions_left: Vec<u8>,
    /// The configured handoff has not started yet.
    handoff_pending: bool,
}

/// One step of the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// An idle VP starts its next access.
    Access { vp: u8, op: Op },
    /// A VP whose fault was resolved tries its access again.
    Retry { vp: u8 },
    /// A node gives up its copy of a page homed elsewhere.
    Evict { node: u8, page: u8 },
    /// The configured handoff starts.
    HandOver,
    /// Reliable network: the oldest message of a link is delivered.
    Deliver { link: u8 },
    /// Lossy: a copy on the wire reaches the receiver's transport.
    Arrive { link: u8, seq: u8 },
    /// Lossy: the receiver's transport hands up a buffered message whose gap was filled.
    Release { link: u8 },
    /// Lossy: a copy on the wire is lost.
    Lose { link: u8, seq: u8 },
    /// Lossy: the network duplicates a copy on the wire.
    Duplicate { link: u8, seq: u8 },
    /// Lossy: the sender retransmits a message not handed up yet.
    Retransmit { link: u8, seq: u8 },
}

/// The result of one step. (`Next` is large, but a step builds a new state anyway and the
/// value moves once, into the search queue.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Step {
    /// The next state (canonical, invariants hold) and the engine counters of the step.
    Next(State, Counters),
    /// The step would overflow a link's send window: not explored.
    Pruned,
}

/// The explored system's fixed parts.
#[derive(Debug)]
pub(super) struct Model {
    config: ModelConfig,
    homes: HomeMap,
}

/// The contents of `page` after `version` writes.
pub(super) fn contents(page: u64, version: u16) -> [u8; PAGE_BYTES] {
    let mut data = [0u8; PAGE_BYTES];
    let version = u64::from(version);
    data[..8].copy_from_slice(&version.to_le_bytes());
    data[8..16].copy_from_slice(&page.to_le_bytes());
    data[PAGE_BYTES - 8..].copy_from_slice(&version.to_le_bytes());
    data
}

/// The version `data` holds, checking that it is a whole copy of `page`.
fn version_of(data: &[u8; PAGE_BYTES], page: u64) -> Result<u16, String> {
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&data[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    if word(8) != page {
        return Err(format!(
            "contents of page {:#x} arrived as page {page:#x}",
            word(8)
        ));
    }
    if word(0) != word(PAGE_BYTES - 8) {
        return Err(format!("page {page:#x} half copied"));
    }
    u16::try_from(word(0)).map_err(|_| format!("page {page:#x}: bad version"))
}

fn index_u8(index: usize) -> u8 {
    u8::try_from(index).expect("explored systems are small")
}

impl Model {
    pub(super) fn new(config: ModelConfig) -> Result<Self, String> {
        let nodes = usize::from(config.nodes);
        if !(2..=8).contains(&nodes)
            || config.homes.is_empty()
            || config.homes.len() > 8
            || config.homes.iter().any(|h| *h >= config.nodes)
            || config.vps_per_node == 0
            || nodes * config.vps_per_node > 64
            || config.accesses.len() != nodes * config.vps_per_node
        {
            return Err(format!("model too large or inconsistent: {config:?}"));
        }
        if let NetworkModel::Lossy {
            wire_capacity,
            window,
            ..
        } = config.network
        {
            if wire_capacity == 0 || window == 0 || window > 32 {
                return Err(format!("bad lossy network: {:?}", config.network));
            }
        }
        let mut homes = HomeMap::new();
        for (i, home) in config.homes.iter().enumerate() {
            let page = LogicalPage(BASE_PAGE + u64::from(index_u8(i)));
            homes
                .add(page, 1, *home)
                .map_err(|e| format!("home map: {e}"))?;
        }
        Ok(Self { config, homes })
    }

    pub(super) fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn nodes(&self) -> usize {
        usize::from(self.config.nodes)
    }

    fn pages(&self) -> usize {
        self.config.homes.len()
    }

    fn engine_config(&self, node: usize) -> EngineConfig {
        EngineConfig {
            vs_id: VS_ID,
            node: NodeId::from(index_u8(node)),
            node_count: self.config.nodes,
        }
    }

    fn logical(page: usize) -> LogicalPage {
        LogicalPage(BASE_PAGE + u64::from(index_u8(page)))
    }

    /// Every page Exclusive at its home, every VP idle with all its accesses ahead.
    pub(super) fn initial(&self) -> Result<State, String> {
        // A slot per VP, and one per eviction a node may have in flight (the engine's rule:
        // faults never wait for a slot).
        let evictions = usize::from(self.config.evictions).min(crate::engine::EVICTIONS_IN_FLIGHT);
        let pending = self.config.vps_per_node + evictions;
        let requests = pending + self.config.extra_requests;
        let mut engines = Vec::new();
        let mut hosts = Vec::new();
        for node in 0..self.nodes() {
            let config = self.engine_config(node);
            let mut engine = EngineSnapshot::new(config, self.homes, pending, requests)
                .map_err(|e| format!("engine {node}: {e}"))?;
            engine.set_next_request_id((u64::from(config.node) << ID_SHIFT) | 1);
            engines.push(engine);
            let mine = |home: &NodeId| usize::from(*home) == node;
            hosts.push(Host {
                memory: self
                    .config
                    .homes
                    .iter()
                    .map(|h| if mine(h) { 0 } else { NEVER_RECEIVED })
                    .collect(),
                mapped: self
                    .config
                    .homes
                    .iter()
                    .map(|h| {
                        if mine(h) {
                            PageState::Exclusive
                        } else {
                            PageState::Invalid
                        }
                    })
                    .collect(),
            });
        }
        let vps = self
            .config
            .accesses
            .iter()
            .map(|ops| Vp {
                ops_left: *ops,
                current: None,
                blocked: false,
            })
            .collect();
        let mut state = State {
            engines,
            hosts,
            vps,
            links: vec![Link::default(); self.nodes() * self.nodes()],
            latest: vec![0; self.pages()],
            evictions_left: vec![self.config.evictions; self.nodes()],
            handoff_pending: self.config.handoff.is_some(),
        };
        self.check(&state)?;
        self.canonicalize(&mut state);
        Ok(state)
    }

    /// Every VP done, every engine idle, nothing on the network.
    pub(super) fn is_goal(&self, state: &State) -> bool {
        state
            .vps
            .iter()
            .all(|vp| vp.ops_left == 0 && vp.current.is_none())
            && state.engines.iter().all(EngineSnapshot::is_idle)
            && state.links.iter().all(Link::is_empty)
            && !state.handoff_pending
    }

    /// The events possible in `state`.
    pub(super) fn events(&self, state: &State, out: &mut Vec<Event>) {
        out.clear();
        for (index, vp) in state.vps.iter().enumerate() {
            let id = index_u8(index);
            match (vp.current, vp.blocked) {
                (_, true) => {}
                (Some(_), false) => out.push(Event::Retry { vp: id }),
                (None, false) if vp.ops_left > 0 => {
                    for page in 0..self.pages() {
                        for write in [false, true] {
                            let op = Op {
                                page: index_u8(page),
                                write,
                            };
                            out.push(Event::Access { vp: id, op });
                        }
                    }
                }
                (None, false) => {}
            }
        }
        for (node, left) in state.evictions_left.iter().enumerate() {
            if *left == 0 {
                continue;
            }
            for page in 0..self.pages() {
                let home = state.engines[node].home_of(Self::logical(page));
                let evictable = home.map(usize::from) != Some(node)
                    && state.engines[node].page_state(Self::logical(page)) != PageState::Invalid
                    && !state.engines[node].has_pending(Self::logical(page));
                if evictable {
                    out.push(Event::Evict {
                        node: index_u8(node),
                        page: index_u8(page),
                    });
                }
            }
        }
        if state.handoff_pending {
            out.push(Event::HandOver);
        }
        for (index, link) in state.links.iter().enumerate() {
            let id = index_u8(index);
            match self.config.network {
                NetworkModel::Reliable => {
                    if !link.queue.is_empty() {
                        out.push(Event::Deliver { link: id });
                    }
                }
                NetworkModel::Lossy {
                    wire_capacity,
                    retransmit,
                    ..
                } => {
                    let room = link.wire.len() < wire_capacity;
                    for seq in link.distinct_on_wire() {
                        out.push(Event::Arrive { link: id, seq });
                        out.push(Event::Lose { link: id, seq });
                        if room {
                            out.push(Event::Duplicate { link: id, seq });
                        }
                    }
                    if link.buffered & 1 != 0 {
                        out.push(Event::Release { link: id });
                    }
                    if room && retransmit {
                        // One already on the wire is the Duplicate above.
                        for seq in 0..index_u8(link.queue.len()) {
                            if !link.wire.contains(&seq) && link.buffered & (1 << seq) == 0 {
                                out.push(Event::Retransmit { link: id, seq });
                            }
                        }
                    }
                }
            }
        }
    }

    /// Applies `event` to a copy of `state`; checks the invariants in the result.
    pub(super) fn step(&self, state: &State, event: Event) -> Result<Step, String> {
        let mut next = state.clone();
        let capacity = match self.config.network {
            NetworkModel::Lossy { wire_capacity, .. } => wire_capacity,
            NetworkModel::Reliable => 0,
        };
        let missing = || format!("{event:?} is not possible here");
        let mut outcome = Ok((Counters::default(), false));
        match event {
            Event::Access { vp, op } => {
                let slot = &mut next.vps[usize::from(vp)];
                if slot.blocked || slot.current.is_some() || slot.ops_left == 0 {
                    return Err(missing());
                }
                slot.ops_left -= 1;
                outcome = self.touch(&mut next, usize::from(vp), op);
            }
            Event::Retry { vp } => {
                let slot = next.vps[usize::from(vp)];
                let op = slot.current.filter(|_| !slot.blocked).ok_or_else(missing)?;
                outcome = self.touch(&mut next, usize::from(vp), op);
            }
            Event::Evict { node, page } => {
                let node = usize::from(node);
                let left = next.evictions_left[node]
                    .checked_sub(1)
                    .ok_or_else(missing)?;
                next.evictions_left[node] = left;
                let logical = Self::logical(usize::from(page));
                let mut started = None;
                outcome = self.run_engine(&mut next, node, |engine, applier| {
                    engine.evict(logical, applier).map(|e| started = Some(e))
                });
                if started != Some(crate::engine::Eviction::Started) && outcome.is_ok() {
                    return Err(format!("{event:?}: the engine answered {started:?}"));
                }
            }
            Event::HandOver => {
                let (page, to) = self
                    .config
                    .handoff
                    .filter(|_| next.handoff_pending)
                    .ok_or_else(missing)?;
                next.handoff_pending = false;
                let from = usize::from(self.config.homes[usize::from(page)]);
                let logical = Self::logical(usize::from(page));
                outcome = self.run_engine(&mut next, from, |engine, applier| {
                    engine.hand_over(logical, 1, to, applier)
                });
            }
            Event::Deliver { link } => {
                let packet = next.links[usize::from(link)]
                    .pop_oldest()
                    .ok_or_else(missing)?;
                outcome = self.deliver(&mut next, packet);
            }
            Event::Arrive { link, seq } => {
                match next.links[usize::from(link)]
                    .arrive(seq)
                    .ok_or_else(missing)?
                {
                    Arrival::Deliver(packet) => outcome = self.deliver(&mut next, packet),
                    Arrival::Buffered | Arrival::Duplicate => {}
                }
            }
            Event::Release { link } => {
                let packet = next.links[usize::from(link)]
                    .release()
                    .ok_or_else(missing)?;
                outcome = self.deliver(&mut next, packet);
            }
            Event::Lose { link, seq } => {
                next.links[usize::from(link)]
                    .lose(seq)
                    .ok_or_else(missing)?;
            }
            Event::Duplicate { link, seq } => {
                next.links[usize::from(link)]
                    .duplicate(seq, capacity)
                    .ok_or_else(missing)?;
            }
            Event::Retransmit { link, seq } => {
                next.links[usize::from(link)]
                    .retransmit(seq, capacity)
                    .ok_or_else(missing)?;
            }
        }
        let (counters, pruned) = outcome?;
        if pruned {
            return Ok(Step::Pruned);
        }
        self.check(&next)?;
        self.canonicalize(&mut next);
        Ok(Step::Next(next, counters))
    }

    /// VP `vp` reads or writes a page: at once if its node's mapping allows (checking it
    /// sees the last write), else it faults into its engine.
    fn touch(&self, state: &mut State, vp: usize, op: Op) -> Result<(Counters, bool), String> {
        let node = vp / self.config.vps_per_node;
        let page = usize::from(op.page);
        let host = &mut state.hosts[node];
        let allowed = match host.mapped[page] {
            PageState::Exclusive => true,
            PageState::Shared => !op.write,
            PageState::Invalid => false,
        };
        let slot = &mut state.vps[vp];
        if !allowed {
            slot.current = Some(op);
            slot.blocked = true;
            let fault = crate::engine::LocalFault {
                page: Self::logical(page),
                write: op.write,
                vp: u32::from(index_u8(vp)),
            };
            return self.run_engine(state, node, |engine, applier| engine.fault(fault, applier));
        }
        let seen = host.memory[page];
        if seen != state.latest[page] {
            return Err(format!(
                "node {node} VP {vp} {} page {page} and sees {}, but the last write made v{}",
                if op.write { "writes" } else { "reads" },
                show_version(seen),
                state.latest[page]
            ));
        }
        if op.write {
            state.latest[page] += 1;
            host.memory[page] = state.latest[page];
        }
        slot.current = None;
        Ok((Counters::default(), false))
    }

    /// Hands `packet` to its destination's engine.
    fn deliver(&self, state: &mut State, packet: Packet) -> Result<(Counters, bool), String> {
        let node = usize::from(packet.dst);
        let mut buf = [0u8; PAGE_BYTES];
        let logical = Self::logical(usize::from(packet.page)).0;
        let msg = packet.message(VS_ID, logical, &mut buf);
        self.run_engine(state, node, |engine, applier| engine.receive(&msg, applier))
            .map_err(|e| format!("{e} (delivering {})", packet.describe()))
    }

    /// Runs `f` on `node`'s engine, applying its actions to the host, the VPs and the
    /// network. Returns the step's counters and whether a send overflowed a window.
    fn run_engine(
        &self,
        state: &mut State,
        node: usize,
        f: impl FnOnce(&mut Engine<'_>, &mut Applier<'_>) -> Result<(), EngineError>,
    ) -> Result<(Counters, bool), String> {
        let State {
            engines,
            hosts,
            vps,
            links,
            ..
        } = state;
        let mut applier = Applier {
            model: self,
            node,
            host: &mut hosts[node],
            vps,
            links,
            error: None,
            pruned: false,
        };
        let (result, counters) =
            engines[node].run(self.engine_config(node), |e| f(e, &mut applier));
        result.map_err(|e| format!("node {node} refused: {e}"))?;
        if let Some(error) = applier.error {
            return Err(format!("node {node}: {error}"));
        }
        if counters.protocol_errors != 0 {
            return Err(format!("node {node} counted a protocol error"));
        }
        Ok((counters, applier.pruned))
    }

    /// The invariants of `docs/protocol.md`, in one state.
    pub(super) fn check(&self, state: &State) -> Result<(), String> {
        for page in 0..self.pages() {
            let logical = Self::logical(page);
            let states: Vec<PageState> = state
                .engines
                .iter()
                .map(|e| e.page_state(logical))
                .collect();
            let count = |s: PageState| states.iter().filter(|x| **x == s).count();
            let (exclusive, shared) = (count(PageState::Exclusive), count(PageState::Shared));
            if exclusive > 1 {
                return Err(format!("page {page}: two writable copies: {states:?}"));
            }
            if exclusive == 1 && shared > 0 {
                return Err(format!(
                    "page {page}: a Shared copy while one is Exclusive: {states:?}"
                ));
            }
            for (node, local) in states.iter().enumerate() {
                let host = &state.hosts[node];
                if host.mapped[page] != *local {
                    return Err(format!(
                        "node {node} page {page}: mapped {:?} but the engine says {local:?}",
                        host.mapped[page]
                    ));
                }
                if *local != PageState::Invalid && host.memory[page] != state.latest[page] {
                    return Err(format!(
                        "node {node} holds page {page} {local:?} at {}, last write is v{}",
                        show_version(host.memory[page]),
                        state.latest[page]
                    ));
                }
            }
            // The home: the node whose own map says so and whose entry has arrived. None
            // while an entry travels to its new home (a `HomeMove` on the wire).
            let mut homes = (0..self.nodes()).filter_map(|n| {
                let id = NodeId::from(index_u8(n));
                state.engines[n]
                    .directory_view(id, logical)
                    .map(|v| (id, v))
            });
            let Some((home, view)) = homes.next() else {
                continue;
            };
            if let Some((other, _)) = homes.next() {
                return Err(format!("page {page}: two homes, {home} and {other}"));
            }
            if view.busy {
                continue;
            }
            match view.state {
                DirectoryState::Shared(sharers) => {
                    let memory = state.hosts[usize::from(home)].memory[page];
                    if memory != state.latest[page] {
                        return Err(format!(
                            "page {page} directory Shared but the home's memory holds {}, last \
                             write is v{}",
                            show_version(memory),
                            state.latest[page]
                        ));
                    }
                    for (node, local) in states.iter().enumerate() {
                        let id = NodeId::from(index_u8(node));
                        let covered = *local == PageState::Invalid
                            || (*local == PageState::Shared && sharers.contains(id));
                        if !covered {
                            return Err(format!(
                                "page {page}: node {node} {local:?} outside the sharers {:?}",
                                sharers.iter().collect::<Vec<_>>()
                            ));
                        }
                    }
                }
                DirectoryState::Exclusive(owner) => {
                    // An owner evicting its copy has it unmapped, and serves forwards
                    // from its memory: that must still be the last write.
                    let memory = state.hosts[usize::from(owner)].memory[page];
                    let evicting = state.engines[usize::from(owner)].evicting(logical)
                        == Some(PageState::Exclusive);
                    if evicting && memory != state.latest[page] {
                        return Err(format!(
                            "page {page} owned by node {owner}, whose memory holds {}, last \
                             write is v{}",
                            show_version(memory),
                            state.latest[page]
                        ));
                    }
                    for (node, local) in states.iter().enumerate() {
                        if node != usize::from(owner) && *local != PageState::Invalid {
                            return Err(format!(
                                "page {page}: node {node} {local:?} but the owner is {owner}"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Renames request ids (per node, in order, from 1 in the node's range) and arrival
    /// numbers (from 0): see the module comment.
    fn canonicalize(&self, state: &mut State) {
        let mut ids = Vec::new();
        for engine in &state.engines {
            engine.request_ids(|id| ids.push(id));
        }
        for link in &state.links {
            // Id 0: the handoff's messages, which no transaction names.
            ids.extend(link.packets().map(|p| p.request_id).filter(|id| *id != 0));
        }
        ids.sort_unstable();
        ids.dedup();
        let first_of = |owner: u64| ids.partition_point(|x| *x < owner << ID_SHIFT);
        let rename = |id: u64| {
            if id == 0 {
                return 0;
            }
            let owner = id >> ID_SHIFT;
            let rank = ids.partition_point(|x| *x < id) - first_of(owner);
            (owner << ID_SHIFT) | (rank as u64 + 1)
        };
        for (node, engine) in state.engines.iter_mut().enumerate() {
            engine.rename_request_ids(rename);
            engine.canonicalize_arrival_order();
            let owner = node as u64;
            let live = first_of(owner + 1) - first_of(owner);
            engine.set_next_request_id((owner << ID_SHIFT) | (live as u64 + 1));
        }
        for link in &mut state.links {
            for packet in link.packets_mut() {
                packet.request_id = rename(packet.request_id);
            }
        }
    }

    /// The state as bytes (equal states, equal bytes).
    pub(super) fn encode(&self, state: &State, out: &mut Vec<u8>) {
        out.clear();
        for engine in &state.engines {
            engine.encode(out);
        }
        for host in &state.hosts {
            for version in &host.memory {
                out.extend_from_slice(&version.to_le_bytes());
            }
            out.extend(host.mapped.iter().map(|m| *m as u8));
        }
        for vp in &state.vps {
            let current = vp
                .current
                .map_or(0, |op| 1 + 2 * op.page + u8::from(op.write));
            out.extend_from_slice(&[vp.ops_left, current, u8::from(vp.blocked)]);
        }
        for link in &state.links {
            link.encode(out);
        }
        for version in &state.latest {
            out.extend_from_slice(&version.to_le_bytes());
        }
        out.extend_from_slice(&state.evictions_left);
        out.push(u8::from(state.handoff_pending));
    }

    fn describe_access(&self, state: &State, vp: u8, op: Op, verb: &str) -> String {
        let vp = usize::from(vp);
        let node = vp / self.config.vps_per_node;
        let page = usize::from(op.page);
        format!(
            "node {node} VP {vp} {verb} a {} of page {page} (mapped {:?}, holds {}, last \
             write v{})",
            if op.write { "write" } else { "read" },
            state.hosts[node].mapped[page],
            show_version(state.hosts[node].memory[page]),
            state.latest[page]
        )
    }

    /// What `event` does in `state`, for a counterexample trace.
    pub(super) fn describe(&self, state: &State, event: Event) -> String {
        let ends = |link: u8| {
            let link = usize::from(link);
            (link / self.nodes(), link % self.nodes())
        };
        match event {
            Event::Access { vp, op } => self.describe_access(state, vp, op, "starts"),
            Event::HandOver => {
                let (page, to) = self.config.handoff.unwrap_or_default();
                format!("the home of page {page} starts handing it over to node {to}")
            }
            Event::Evict { node, page } => format!(
                "node {node} evicts page {page} (mapped {:?})",
                state.hosts[usize::from(node)].mapped[usize::from(page)]
            ),
            Event::Retry { vp } => match state.vps[usize::from(vp)].current {
                Some(op) => self.describe_access(state, vp, op, "retries"),
                None => format!("VP {vp} retries nothing"),
            },
            Event::Deliver { link } => {
                let (src, dst) = ends(link);
                let what = state.links[usize::from(link)]
                    .queue
                    .front()
                    .map_or_else(|| "nothing".to_string(), Packet::describe);
                format!("deliver {src} -> {dst}: {what}")
            }
            Event::Arrive { link, seq } | Event::Lose { link, seq } => {
                let (src, dst) = ends(link);
                let what = state.links[usize::from(link)]
                    .message_at(seq)
                    .map_or_else(|| "?".to_string(), Packet::describe);
                let verb = if matches!(event, Event::Arrive { .. }) {
                    "arrives"
                } else {
                    "is lost"
                };
                format!("wire {src} -> {dst}: copy of #{seq} ({what}) {verb}")
            }
            Event::Release { link } => {
                let (src, dst) = ends(link);
                format!("transport {src} -> {dst}: hands up the buffered message")
            }
            Event::Duplicate { link, seq } => {
                let (src, dst) = ends(link);
                format!("wire {src} -> {dst}: copy of #{seq} duplicated")
            }
            Event::Retransmit { link, seq } => {
                let (src, dst) = ends(link);
                format!("transport {src} -> {dst}: retransmits #{seq}")
            }
        }
    }
}

fn show_version(version: u16) -> String {
    if version == NEVER_RECEIVED {
        "no copy ever".to_string()
    } else {
        format!("v{version}")
    }
}

/// Applies one engine's actions to the explored system, as a host would (in order).
struct Applier<'a> {
    model: &'a Model,
    node: usize,
    host: &'a mut Host,
    vps: &'a mut [Vp],
    links: &'a mut [Link],
    /// The first action that broke a rule.
    error: Option<String>,
    /// A send found its link's window full.
    pruned: bool,
}

impl Actions for Applier<'_> {
    fn push(&mut self, action: Action<'_>) {
        if let Err(error) = self.apply(action) {
            self.error.get_or_insert(error);
        }
    }
}

impl Applier<'_> {
    fn page_index(&self, page: LogicalPage) -> Result<usize, String> {
        page.0
            .checked_sub(BASE_PAGE)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < self.host.memory.len())
            .ok_or_else(|| format!("action on unexplored page {:#x}", page.0))
    }

    fn apply(&mut self, action: Action<'_>) -> Result<(), String> {
        match action {
            Action::Send(msg) => {
                if matches!(
                    msg.body,
                    Body::PageData { .. }
                        | Body::Writeback { .. }
                        | Body::Evict { data: Some(_), .. }
                ) {
                    return Err("page contents sent without SendPage".to_string());
                }
                self.transmit(&msg)
            }
            Action::SendPage(send) => {
                let index = self.page_index(send.page)?;
                let data = contents(send.page.0, self.host.memory[index]);
                self.transmit(&send.message(&data))
            }
            Action::InstallPage { page, state, data } => {
                let index = self.page_index(page)?;
                if state == PageState::Invalid {
                    return Err("InstallPage as Invalid".to_string());
                }
                match data {
                    Some(data) => self.host.memory[index] = version_of(data, page.0)?,
                    None if self.host.mapped[index] == PageState::Exclusive => {
                        return Err(format!("page {index} installed in place over Exclusive"));
                    }
                    None => {}
                }
                self.host.mapped[index] = state;
                Ok(())
            }
            Action::StorePage { page, data } => {
                let index = self.page_index(page)?;
                if self.host.mapped[index] != PageState::Invalid {
                    return Err(format!("writeback stored into mapped page {index}"));
                }
                self.host.memory[index] = version_of(data, page.0)?;
                Ok(())
            }
            Action::Invalidate { page } => {
                let index = self.page_index(page)?;
                if self.host.mapped[index] == PageState::Invalid {
                    return Err(format!("page {index} invalidated while not mapped"));
                }
                self.host.mapped[index] = PageState::Invalid;
                Ok(())
            }
            Action::Downgrade { page } => {
                let index = self.page_index(page)?;
                if self.host.mapped[index] != PageState::Exclusive {
                    return Err(format!("page {index} downgraded while not Exclusive"));
                }
                self.host.mapped[index] = PageState::Shared;
                Ok(())
            }
            Action::FaultDone { page, vp } => {
                let index = self.page_index(page)?;
                let per_node = self.model.config.vps_per_node;
                let vp = usize::try_from(vp).map_err(|_| "VP id".to_string())?;
                let slot = self
                    .vps
                    .get_mut(vp)
                    .filter(|_| vp / per_node == self.node)
                    .ok_or_else(|| format!("FaultDone for VP {vp}, not on this node"))?;
                match slot.current {
                    Some(op) if slot.blocked && usize::from(op.page) == index => {
                        slot.blocked = false;
                        Ok(())
                    }
                    _ => Err(format!("FaultDone for VP {vp} in state {slot:?}")),
                }
            }
            Action::WakeWatchers { .. } => Ok(()),
        }
    }

    fn transmit(&mut self, msg: &Message<'_>) -> Result<(), String> {
        let nodes = self.model.nodes();
        let (src, dst) = (usize::from(msg.src), usize::from(msg.dst));
        if src != self.node || dst >= nodes || dst == src || msg.vs_id != VS_ID {
            return Err(format!("bad message header: {msg:?}"));
        }
        // A home change names its range by the first page.
        let named = match msg.body {
            Body::HomeChange { first, .. } | Body::HomeChangeAck { first, .. } => Some(first),
            _ => msg.body.page(),
        };
        let page = named
            .and_then(|p| p.checked_sub(BASE_PAGE))
            .and_then(|i| u8::try_from(i).ok())
            .filter(|i| usize::from(*i) < self.host.memory.len())
            .ok_or_else(|| format!("message about an unexplored page: {msg:?}"))?;
        let logical = msg.body.page().unwrap_or_default();
        let body = match msg.body {
            Body::ReadReq { .. } => PacketBody::ReadReq,
            Body::WriteReq { has_copy, .. } => PacketBody::WriteReq { has_copy },
            Body::ForwardRead { requester, .. } => PacketBody::ForwardRead { requester },
            Body::ForwardWrite { requester, .. } => PacketBody::ForwardWrite { requester },
            Body::Invalidate { .. } => PacketBody::Invalidate,
            Body::InvalidateAck { .. } => PacketBody::InvalidateAck,
            Body::PageData {
                exclusive, data, ..
            } => PacketBody::PageData {
                exclusive,
                version: version_of(data, logical)?,
            },
            Body::UpgradeGrant { .. } => PacketBody::UpgradeGrant,
            Body::Writeback { data, .. } => PacketBody::Writeback {
                version: version_of(data, logical)?,
            },
            Body::Unblock { .. } => PacketBody::Unblock,
            Body::Nack { .. } => PacketBody::Nack,
            Body::Evict { data, .. } => PacketBody::Evict {
                version: data.map(|d| version_of(d, logical)).transpose()?,
            },
            Body::EvictAck { .. } => PacketBody::EvictAck,
            Body::HomeMove {
                exclusive,
                owner,
                sharers,
                data,
                ..
            } => PacketBody::HomeMove {
                exclusive,
                owner,
                sharers,
                version: data.map(|d| version_of(d, logical)).transpose()?,
            },
            Body::HomeChange { count, home, .. } => PacketBody::HomeChange {
                count: u8::try_from(count).map_err(|_| "range too long".to_string())?,
                home,
            },
            Body::HomeChangeAck { count, home, .. } => PacketBody::HomeChangeAck {
                count: u8::try_from(count).map_err(|_| "range too long".to_string())?,
                home,
            },
            other => return Err(format!("engine sent a control message: {other:?}")),
        };
        let packet = Packet {
            src: msg.src,
            dst: msg.dst,
            request_id: msg.request_id,
            page,
            body,
        };
        if !self.links[src * nodes + dst].send(packet, self.model.config.network) {
            self.pruned = true;
        }
        Ok(())
    }
}
