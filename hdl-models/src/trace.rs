//! Random traces of coherence traffic through a cluster of `nic-firmware` engines, with a
//! hook that lets another implementation of one node (the RTL) shadow every input.
//!
//! Why a copy of a cluster simulator here: the engine's own simulator
//! (`nic-firmware/src/engine/sim.rs`) is test-only code of that crate. This one is
//! smaller (no page contents: the engine's invariants are checked there; here the point
//! is that another implementation does *the same* as the engine) and adds what the
//! differential test needs: every input of every node is handed to a [`Shadow`] together
//! with what the engine did ([`Expected`]), and junk inputs (messages the engine must
//! refuse, faults with bad arguments) and steering-table changes are mixed in.
//!
//! A trace is a list of [`Choice`]s; the [`Driver`] interprets each against the current
//! state (deliver the oldest message of some link, let some VP touch some page, inject
//! junk, move a VP's interrupt vectors), so every sub-list of a trace is a valid trace
//! and a failing trace can be shrunk ([`crate::shrink`]). Links are FIFO per ordered node
//! pair and delivered in any order across pairs, as the transport guarantees.

use std::collections::VecDeque;

use nic_firmware::engine::{
    Action, DirEntry, DirectoryView, Engine, EngineConfig, EngineStorage, HomeMap, HomeRequest,
    LocalFault, LogicalPage, PageState, PendingFault,
};
use vima::wire::{decode, encode, Body, Message, MessageKind, MAX_MESSAGE_BYTES, PAGE_BYTES};

use crate::observe::{error_code, observe_engine, NicView, Observed};
use crate::steering::SteeringModel;

/// Logical page number of trace page 0 (ordinary coherent memory).
pub const BASE_PAGE: u64 = 0x200;
/// The virtual server of every trace.
pub const VS_ID: u16 = 7;
/// Where the DMA window of every simulated node starts.
pub const WINDOW_BASE: u64 = 0x7f00_0000_0000;
/// The vector of mapping-change interrupts in every trace.
pub const MAP_VECTOR: u8 = 0;
/// Steering-table entries the trace programs.
pub const TRACE_VECTORS: usize = 16;

/// A small deterministic generator (SplitMix64), so a seed names a trace.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// The cluster a trace runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceConfig {
    /// Nodes (2..=16).
    pub nodes: usize,
    /// Home node of each trace page.
    pub homes: Vec<u16>,
    /// VPs per node (pending-fault slots per node too).
    pub vps_per_node: usize,
    /// Home request records per node (more than `vps_per_node`; small values make the
    /// home refuse with `Nack`).
    pub requests: usize,
    /// Mix in inputs the engine must refuse.
    pub junk: bool,
}

impl TraceConfig {
    /// A random cluster: 3 or 4 nodes, 2 to 4 pages with random homes, 1 or 2 VPs per
    /// node, roomy or tight request tables.
    pub fn random(rng: &mut SplitMix64) -> Self {
        let nodes = 3 + usize::from(rng.below(2) == 1);
        let pages = 2 + usize::try_from(rng.below(3)).unwrap_or(0);
        let homes = (0..pages)
            .map(|_| u16::try_from(rng.below(nodes as u64)).unwrap_or(0))
            .collect();
        let vps_per_node = 1 + usize::from(rng.below(2) == 1);
        let tight = rng.below(3) == 0;
        let requests = vps_per_node + if tight { 1 } else { (nodes - 1) * vps_per_node };
        Self {
            nodes,
            homes,
            vps_per_node,
            requests,
            junk: true,
        }
    }

    /// Trace pages.
    pub fn pages(&self) -> usize {
        self.homes.len()
    }

    /// The logical page number of trace page `index`.
    pub fn page(&self, index: usize) -> u64 {
        BASE_PAGE + index as u64
    }

    /// The NIC view of every node (same window base and mapping vector).
    pub fn view(&self) -> NicView {
        NicView {
            window_base: WINDOW_BASE,
            map_vector: MAP_VECTOR,
        }
    }

    /// The steering table every node starts with: vector `node + k + 1` for its `k`-th VP
    /// (so the nodes use different vectors), except that the last VP of a node with two
    /// has none (its completions use the mapping vector).
    pub fn initial_steering(&self, node: usize) -> SteeringModel {
        let mut table = SteeringModel::new(TRACE_VECTORS, MAP_VECTOR);
        let with_vector = if self.vps_per_node >= 2 {
            self.vps_per_node - 1
        } else {
            self.vps_per_node
        };
        for k in 0..with_vector {
            let vp = u32::try_from(node * self.vps_per_node + k).unwrap_or(u32::MAX);
            table.write(u8::try_from(node + k + 1).unwrap_or(u8::MAX), Some(vp));
        }
        table
    }
}

/// One random decision of a trace; the [`Driver`] interprets it against the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// What kind of step (delivery, VP access, junk, steering change).
    pub roll: u8,
    /// Which link / VP / node / junk kind.
    pub pick: u32,
    /// Which page a new access touches.
    pub page: u8,
    /// Whether a new access writes.
    pub write: bool,
}

impl Choice {
    /// `count` random choices.
    pub fn random_list(rng: &mut SplitMix64, count: usize) -> Vec<Self> {
        (0..count)
            .map(|_| {
                let b = rng.next_u64().to_le_bytes();
                Self {
                    roll: b[0],
                    pick: u32::from_le_bytes([b[1], b[2], b[3], b[4]]),
                    page: b[5],
                    write: b[6] & 1 == 1,
                }
            })
            .collect()
    }
}

/// One input to one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A VP of the node faulted.
    Fault(LocalFault),
    /// A frame (an encoded wire message) arrived.
    Message(&'a [u8]),
    /// VP `vp` is removed: its interrupt vectors go to VP `to`.
    SteerRemove {
        /// The removed VP.
        vp: u32,
        /// The VP that takes its vectors.
        to: u32,
    },
}

/// One page of one node after an input, as the engine has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedPage {
    /// The node's copy.
    pub local: PageState,
    /// The directory entry, when the node is the page's home.
    pub directory: Option<DirectoryView>,
}

/// What the engine did with one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// NIC-level effects, in order.
    pub actions: Vec<Observed>,
    /// The error code (0: accepted), see [`error_code`].
    pub error: u8,
    /// Every trace page after the input.
    pub pages: Vec<ExpectedPage>,
    /// No pending fault, no request record (`Engine::is_idle`).
    pub idle: bool,
}

/// Another implementation of the nodes, fed every input the engines get.
pub trait Shadow {
    /// Node `node` got `input`; the engine did `expected`. Err: the shadow did something
    /// else (the message says what).
    fn input(&mut self, node: usize, input: &Input<'_>, expected: &Expected) -> Result<(), String>;
}

/// A shadow that checks nothing (runs the engines alone).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoShadow;

impl Shadow for NoShadow {
    fn input(&mut self, _: usize, _: &Input<'_>, _: &Expected) -> Result<(), String> {
        Ok(())
    }
}

/// Where a trace failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Index of the input that failed (counting every input of the run).
    pub input: usize,
    /// What went wrong.
    pub detail: String,
    /// Every input of the run up to the failing one, one line each.
    pub log: Vec<String>,
}

impl core::fmt::Display for Divergence {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(f, "{} inputs:", self.log.len())?;
        for line in &self.log {
            writeln!(f, "  {line}")?;
        }
        write!(f, "input {} diverged: {}", self.input, self.detail)
    }
}

/// What a simulated VP is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VpState {
    Idle,
    Blocked { page: usize, write: bool },
    Ready { page: usize, write: bool },
}

fn leak<T: Clone>(value: T, len: usize) -> &'static mut [T] {
    Box::leak(vec![value; len].into_boxed_slice())
}

/// Runs traces on a cluster of engines, with a shadow.
pub struct Driver<'s> {
    config: TraceConfig,
    engines: Vec<Engine<'static>>,
    links: Vec<VecDeque<Vec<u8>>>,
    vps: Vec<VpState>,
    steering: Vec<SteeringModel>,
    shadow: &'s mut dyn Shadow,
    log: Vec<String>,
}

impl core::fmt::Debug for Driver<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Driver")
            .field("config", &self.config)
            .field("inputs", &self.log.len())
            .finish_non_exhaustive()
    }
}

/// Everything an action does to the simulated cluster besides what the shadow compares.
enum Effect {
    Frame { dst: usize, bytes: Vec<u8> },
    Done { vp: u32 },
}

const ZERO_PAGE: [u8; PAGE_BYTES] = [0; PAGE_BYTES];

fn frame(msg: &Message<'_>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    let len = encode(msg, &mut buf).ok()?;
    buf.truncate(len);
    Some(buf)
}

fn describe(bytes: &[u8]) -> String {
    match decode(bytes) {
        Ok(msg) => {
            let extra = match msg.body {
                Body::ForwardRead { requester, .. } | Body::ForwardWrite { requester, .. } => {
                    format!(" for node {requester}")
                }
                Body::WriteReq { has_copy: true, .. } => " (has copy)".into(),
                Body::PageData {
                    exclusive: true, ..
                } => " (exclusive)".into(),
                _ => String::new(),
            };
            let page = msg
                .body
                .page()
                .map(|p| format!(" page {p:#x}"))
                .unwrap_or_default();
            let vs = if msg.vs_id == VS_ID {
                String::new()
            } else {
                format!(" vs {}", msg.vs_id)
            };
            format!(
                "{:?}{extra}{page} rid {:#x} {} -> {}{vs}",
                msg.body.kind(),
                msg.request_id,
                msg.src,
                msg.dst
            )
        }
        Err(e) => format!("undecodable frame ({e})"),
    }
}

impl<'s> Driver<'s> {
    /// A cluster in the initial state (every page Exclusive at its home).
    pub fn new(config: TraceConfig, shadow: &'s mut dyn Shadow) -> Result<Self, String> {
        let mut map = HomeMap::new();
        for (i, home) in config.homes.iter().enumerate() {
            map.add(LogicalPage(config.page(i)), 1, *home)
                .map_err(|e| format!("home map: {e}"))?;
        }
        let node_count = u16::try_from(config.nodes).map_err(|_| "too many nodes")?;
        let local_len = usize::try_from(map.page_limit()).map_err(|_| "page limit")?;
        let mut engines = Vec::new();
        for node in 0..node_count {
            let dir_len = local_len;
            let storage = EngineStorage {
                local: leak(PageState::Invalid, local_len),
                directory: leak(DirEntry::default(), dir_len),
                pending: leak(PendingFault::default(), config.vps_per_node),
                requests: leak(HomeRequest::default(), config.requests),
            };
            let engine_config = EngineConfig {
                vs_id: VS_ID,
                node,
                node_count,
            };
            engines.push(Engine::new(engine_config, map, storage).map_err(|e| e.to_string())?);
        }
        let steering = (0..config.nodes)
            .map(|n| config.initial_steering(n))
            .collect();
        Ok(Self {
            links: vec![VecDeque::new(); config.nodes * config.nodes],
            vps: vec![VpState::Idle; config.nodes * config.vps_per_node],
            engines,
            steering,
            config,
            shadow,
            log: Vec::new(),
        })
    }

    /// The inputs so far, one line each.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    fn diverged(&self, detail: String) -> Divergence {
        Divergence {
            input: self.log.len().saturating_sub(1),
            detail,
            log: self.log.clone(),
        }
    }

    /// Feeds `input` to node `node`'s engine and to the shadow, and applies its effects.
    fn feed(&mut self, node: usize, input: Input<'_>, what: String) -> Result<(), Divergence> {
        self.log.push(format!("node {node}: {what}"));
        let view = self.config.view();
        let decoded = match input {
            Input::Message(bytes) => match decode(bytes) {
                Ok(msg) => Some(msg),
                Err(e) => return Err(self.diverged(format!("the trace built a bad frame: {e}"))),
            },
            _ => None,
        };
        let mut observed = Vec::new();
        let mut effects = Vec::new();
        let steering = &mut self.steering[node];
        let engine = &mut self.engines[node];
        let result = {
            let mut sink = |action: Action<'_>| {
                observed.push(observe_engine(&action, &view, steering));
                match action {
                    Action::Send(msg) => {
                        if let Some(bytes) = frame(&msg) {
                            effects.push(Effect::Frame {
                                dst: usize::from(msg.dst),
                                bytes,
                            });
                        }
                    }
                    Action::SendPage(send) => {
                        if let Some(bytes) = frame(&send.message(&ZERO_PAGE)) {
                            effects.push(Effect::Frame {
                                dst: usize::from(send.to),
                                bytes,
                            });
                        }
                    }
                    Action::FaultDone { vp, .. } => effects.push(Effect::Done { vp }),
                    _ => {}
                }
            };
            match input {
                Input::Fault(fault) => engine.fault(fault, &mut sink),
                Input::Message(_) => match decoded {
                    Some(msg) => engine.receive(&msg, &mut sink),
                    None => Ok(()),
                },
                Input::SteerRemove { vp, to } => {
                    steering.remove_vp(vp, to);
                    Ok(())
                }
            }
        };
        let engine = &self.engines[node];
        let pages = (0..self.config.pages())
            .map(|i| {
                let page = LogicalPage(self.config.page(i));
                ExpectedPage {
                    local: engine.page_state(page).unwrap_or(PageState::Invalid),
                    directory: engine.directory_state(page).ok(),
                }
            })
            .collect();
        let expected = Expected {
            actions: observed,
            error: result.as_ref().err().map_or(0, error_code),
            pages,
            idle: engine.is_idle(),
        };
        if let Err(detail) = self.shadow.input(node, &input, &expected) {
            return Err(self.diverged(detail));
        }
        for effect in effects {
            match effect {
                Effect::Frame { dst, bytes } => {
                    self.links[node * self.config.nodes + dst].push_back(bytes);
                }
                Effect::Done { vp } => {
                    let vp = usize::try_from(vp).unwrap_or(usize::MAX);
                    if let Some(VpState::Blocked { page, write }) = self.vps.get(vp).copied() {
                        self.vps[vp] = VpState::Ready { page, write };
                    }
                }
            }
        }
        Ok(())
    }

    /// Delivers the oldest message of the `pick`-th non-empty link. False: none waits.
    fn deliver(&mut self, pick: usize) -> Result<bool, Divergence> {
        let busy: Vec<usize> = (0..self.links.len())
            .filter(|l| !self.links[*l].is_empty())
            .collect();
        if busy.is_empty() {
            return Ok(false);
        }
        let link = busy[pick % busy.len()];
        let Some(bytes) = self.links[link].pop_front() else {
            return Ok(false);
        };
        let dst = link % self.config.nodes;
        let what = format!("receives {}", describe(&bytes));
        self.feed(dst, Input::Message(&bytes), what)?;
        Ok(true)
    }

    /// VP `vp` touches trace page `page`: at once if its node's copy allows (unless
    /// `force_fault`), else it faults and blocks.
    fn touch(
        &mut self,
        vp: usize,
        page: usize,
        write: bool,
        force_fault: bool,
    ) -> Result<(), Divergence> {
        let node = vp / self.config.vps_per_node;
        let state = self.engines[node]
            .page_state(LogicalPage(self.config.page(page)))
            .unwrap_or(PageState::Invalid);
        let allowed = match state {
            PageState::Exclusive => true,
            PageState::Shared => !write,
            PageState::Invalid => false,
        };
        if allowed && !force_fault {
            self.vps[vp] = VpState::Idle;
            return Ok(());
        }
        self.vps[vp] = VpState::Blocked { page, write };
        let fault = LocalFault {
            page: LogicalPage(self.config.page(page)),
            write,
            vp: u32::try_from(vp).unwrap_or(u32::MAX),
        };
        let what = format!(
            "VP {vp} {} fault on page {:#x}",
            if write { "write" } else { "read" },
            fault.page.0
        );
        self.feed(node, Input::Fault(fault), what)
    }

    fn vp_step(&mut self, choice: Choice) -> Result<(), Divergence> {
        let free: Vec<usize> = (0..self.vps.len())
            .filter(|v| !matches!(self.vps[*v], VpState::Blocked { .. }))
            .collect();
        if free.is_empty() {
            return Ok(());
        }
        let vp = free[usize::try_from(choice.pick).unwrap_or(0) % free.len()];
        let force = (choice.pick >> 20) & 7 == 0;
        match self.vps[vp] {
            VpState::Ready { page, write } => self.touch(vp, page, write, force),
            _ => {
                let page = usize::from(choice.page) % self.config.pages();
                self.touch(vp, page, choice.write, force)
            }
        }
    }

    /// An input the engine must refuse without changing anything.
    fn junk(&mut self, choice: Choice) -> Result<(), Divergence> {
        let n = self.config.nodes;
        let pick = usize::try_from(choice.pick).unwrap_or(0);
        let node = pick % n;
        let page_index = usize::from(choice.page) % self.config.pages();
        let page = self.config.page(page_index);
        let home = usize::from(self.config.homes[page_index]);
        let id = |x: usize| u16::try_from(x).unwrap_or(u16::MAX);
        let peer = |of: usize| (of + 1 + (pick / n) % (n - 1)) % n;
        let bogus_rid = (1u64 << 62) | u64::from(choice.pick);
        let msg = |src: usize, dst: usize, body: Body<'static>| Message {
            vs_id: VS_ID,
            src: id(src),
            dst: id(dst),
            request_id: bogus_rid,
            body,
        };
        let local = self.engines[node]
            .page_state(LogicalPage(page))
            .unwrap_or(PageState::Invalid);
        let other = peer(node);
        let mut misaddressed = false;
        let message = match (pick / 16) % 15 {
            0 => Message {
                vs_id: VS_ID + 1,
                ..msg(peer(home), home, Body::ReadReq { page })
            },
            1 => msg(peer(home), home, Body::InvalidateAck { page }),
            2 => msg(peer(home), home, Body::Unblock { page }),
            3 => msg(
                peer(home),
                home,
                Body::Writeback {
                    page,
                    data: &ZERO_PAGE,
                },
            ),
            4 => msg(
                peer(node),
                node,
                Body::PageData {
                    page,
                    exclusive: choice.write,
                    data: &ZERO_PAGE,
                },
            ),
            5 if node != home => msg(home, node, Body::UpgradeGrant { page }),
            6 if node != home => msg(home, node, Body::Nack { page }),
            7 if node != home && local == PageState::Shared => msg(
                home,
                node,
                Body::ForwardRead {
                    page,
                    requester: id(home),
                },
            ),
            7 if node != home => msg(home, node, Body::Invalidate { page }),
            8 if node != home => msg(peer(node), node, Body::ReadReq { page }),
            9 if n < 16 && choice.write => msg(15, node, Body::Invalidate { page }),
            9 if n >= 3 => {
                // From a node that is not the page's home.
                let stranger = (0..n).find(|x| *x != node && *x != home).unwrap_or(home);
                msg(stranger, node, Body::Invalidate { page })
            }
            10 => msg(peer(node), node, Body::Heartbeat { sequence: 1 }),
            11 => msg(
                peer(node),
                node,
                Body::ReadReq {
                    page: BASE_PAGE + 40 + u64::from(choice.page % 40),
                },
            ),
            12 => {
                let fault = LocalFault {
                    page: LogicalPage(page),
                    write: choice.write,
                    vp: 64 + choice.pick % 8,
                };
                return self.feed(node, Input::Fault(fault), format!("junk fault {fault:?}"));
            }
            13 => {
                // A per-node page (not coherent) or a page no home range covers.
                let fault = LocalFault {
                    page: LogicalPage(if choice.write { 2 } else { BASE_PAGE + 50 }),
                    write: choice.write,
                    vp: 0,
                };
                return self.feed(node, Input::Fault(fault), format!("junk fault {fault:?}"));
            }
            // Addressed to another node but delivered here.
            _ => {
                misaddressed = true;
                msg(peer(other), other, Body::Invalidate { page })
            }
        };
        let Some(bytes) = frame(&message) else {
            return Ok(());
        };
        // Every junk message goes to its destination except the misaddressed one.
        let target = if misaddressed {
            node
        } else {
            usize::from(message.dst)
        };
        let what = format!("junk {}", describe(&bytes));
        self.feed(target, Input::Message(&bytes), what)
    }

    /// Moves the interrupt vectors of one VP to another on one node.
    fn steer(&mut self, choice: Choice) -> Result<(), Divergence> {
        let vpn = self.config.vps_per_node;
        let pick = usize::try_from(choice.pick).unwrap_or(0);
        let node = pick % self.config.nodes;
        let vp = u32::try_from(node * vpn + (pick / 7) % vpn).unwrap_or(0);
        let to = u32::try_from((pick / 3) % (self.config.nodes * vpn)).unwrap_or(0);
        self.feed(
            node,
            Input::SteerRemove { vp, to },
            format!("VP {vp}'s vectors go to VP {to}"),
        )
    }

    /// Interprets one choice.
    pub fn step(&mut self, choice: Choice) -> Result<(), Divergence> {
        match choice.roll % 32 {
            0..=21 => {
                if !self.deliver(usize::try_from(choice.pick).unwrap_or(0))? {
                    self.vp_step(choice)?;
                }
                Ok(())
            }
            30 if self.config.junk => self.junk(choice),
            31 => self.steer(choice),
            _ => self.vp_step(choice),
        }
    }

    /// Delivers every message (round robin over the links) and lets every ready VP finish,
    /// until nothing moves; then every VP must be done and every engine idle.
    pub fn settle(&mut self) -> Result<(), Divergence> {
        for _round in 0..10_000 {
            let mut moved = false;
            for link in 0..self.links.len() {
                if !self.links[link].is_empty() {
                    let busy_before = (0..link).filter(|l| !self.links[*l].is_empty()).count();
                    self.deliver(busy_before)?;
                    moved = true;
                }
            }
            if moved {
                continue;
            }
            let ready = (0..self.vps.len()).find(|v| matches!(self.vps[*v], VpState::Ready { .. }));
            match ready {
                Some(vp) => {
                    if let VpState::Ready { page, write } = self.vps[vp] {
                        self.touch(vp, page, write, false)?;
                    }
                }
                None => break,
            }
        }
        if let Some(vp) = self
            .vps
            .iter()
            .position(|v| matches!(v, VpState::Blocked { .. }))
        {
            return Err(self.diverged(format!("VP {vp} never got its FaultDone")));
        }
        if let Some(node) = self.engines.iter().position(|e| !e.is_idle()) {
            return Err(self.diverged(format!("node {node} is not idle after settling")));
        }
        Ok(())
    }
}

/// Runs `choices` on a fresh cluster with `shadow`, then settles.
pub fn run(
    config: &TraceConfig,
    choices: &[Choice],
    shadow: &mut dyn Shadow,
) -> Result<usize, Divergence> {
    let mut driver = Driver::new(config.clone(), shadow).map_err(|detail| Divergence {
        input: 0,
        detail,
        log: Vec::new(),
    })?;
    for choice in choices {
        driver.step(*choice)?;
    }
    driver.settle()?;
    Ok(driver.log.len())
}

/// The kinds of message a trace sends, for coverage reports.
pub fn kind_of(frame: &[u8]) -> Option<MessageKind> {
    decode(frame).ok().map(|m| m.body.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_alone_settle_on_random_traces() {
        let mut rng = SplitMix64::new(1);
        let mut inputs = 0;
        for _ in 0..40 {
            let config = TraceConfig::random(&mut rng);
            let choices = Choice::random_list(&mut rng, 300);
            inputs += run(&config, &choices, &mut NoShadow).unwrap_or_else(|d| panic!("{d}"));
        }
        assert!(inputs > 40 * 100, "only {inputs} inputs");
    }

    /// A shadow with a planted bug: it "forgets" how to forward writes. The shrunk trace
    /// must still show it and be short: a write miss makes some node the owner, a
    /// second writer's request is forwarded to it.
    struct NoForwardWrite;

    impl Shadow for NoForwardWrite {
        fn input(&mut self, _: usize, _: &Input<'_>, expected: &Expected) -> Result<(), String> {
            let forwards = expected.actions.iter().any(|a| {
                matches!(a, Observed::Transmit { header, .. } if header[3] == MessageKind::ForwardWrite as u8)
            });
            if forwards {
                Err("ForwardWrite".into())
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn a_divergence_shrinks_to_a_short_trace() {
        let mut rng = SplitMix64::new(4);
        let (config, choices) = loop {
            let config = TraceConfig::random(&mut rng);
            let choices = Choice::random_list(&mut rng, 300);
            if run(&config, &choices, &mut NoForwardWrite).is_err() {
                break (config, choices);
            }
        };
        let fails = |t: &[Choice]| run(&config, t, &mut NoForwardWrite).is_err();
        let shortest = crate::shrink::shrink(&choices, 5000, fails);
        let divergence = run(&config, &shortest, &mut NoForwardWrite).unwrap_err();
        assert_eq!(divergence.detail, "ForwardWrite");
        // At least: two write faults and two deliveries of their requests (the first
        // request's grant may be in flight); a handful more is the shrinker's slack.
        assert!(divergence.log.len() >= 3, "{divergence}");
        assert!(
            divergence.log.len() <= 10,
            "not shrunk enough:\n{divergence}"
        );
        assert!(shortest.len() < choices.len() / 4);
    }

    /// A shadow that records what the engines did.
    #[derive(Default)]
    struct Recorder {
        errors: Vec<u8>,
        kinds: Vec<MessageKind>,
    }

    impl Shadow for Recorder {
        fn input(
            &mut self,
            _: usize,
            input: &Input<'_>,
            expected: &Expected,
        ) -> Result<(), String> {
            self.errors.push(expected.error);
            if let Input::Message(bytes) = input {
                self.kinds.extend(kind_of(bytes));
            }
            Ok(())
        }
    }

    #[test]
    fn traces_cover_the_protocol_and_the_refusals() {
        let mut rng = SplitMix64::new(2);
        let mut recorder = Recorder::default();
        for _ in 0..30 {
            let config = TraceConfig::random(&mut rng);
            let choices = Choice::random_list(&mut rng, 300);
            run(&config, &choices, &mut recorder).unwrap_or_else(|d| panic!("{d}"));
        }
        use MessageKind::*;
        for kind in [
            ReadReq,
            WriteReq,
            ForwardRead,
            ForwardWrite,
            Invalidate,
            InvalidateAck,
            PageData,
            UpgradeGrant,
            Writeback,
            Unblock,
            Nack,
        ] {
            assert!(recorder.kinds.contains(&kind), "no {kind:?} in the traces");
        }
        for code in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10] {
            assert!(
                recorder.errors.contains(&code),
                "no input ended with code {code}"
            );
        }
    }
}
