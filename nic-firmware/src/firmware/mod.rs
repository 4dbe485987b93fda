//! The SmartNIC firmware main loop: the coherence [`Engine`] driven by the host's rings
//! and the wire, over the small HAL traits of [`hal`].
//!
//! One loop, no interrupts of its own: each round it
//! 1. retires the mapping changes the host acknowledged (the completion ring's head),
//! 2. sends queued messages that may leave (page contents read by DMA as they leave),
//! 3. takes host requests (fetches, control messages to send) and wire messages and feeds
//!    them to the engine,
//! 4. raises the interrupts the round's completions need, once per vector,
//! 5. when there was nothing to do, polls hot for a short window if it awaits a reply or
//!    an acknowledgement, else sleeps with a growing back-off (see `queues::Backoff`).
//!
//! **What the host sees.** The engine's actions become: wire sends (no host involvement;
//! a `SendPage` reads the page from host memory by DMA), DMA writes (`InstallPage` data,
//! `StorePage`), and completions for what only the host can do: map (`InstallPage`),
//! unmap (`Invalidate`), write-protect (`Downgrade`), wake watchers, resume a fault
//! (`FaultDone`, steered to the faulting VP's vector, or to the host vector when that VP
//! is gone), and control messages from other nodes. Remote reads of pages this node does
//! not have mapped writable therefore cost the host nothing.
//!
//! **The ordering rule** (actions on one page take effect in emission order) is kept
//! without waiting for the host on every action: a mapping change is a completion with a
//! sequence number, and the host acknowledges it by advancing the completion ring's head
//! after applying it. Until then:
//! - a message about that page (a page send, an invalidation ack, a writeback...) stays
//!   queued, and so does every later message to the same node, because the engine relies
//!   on per-link order; messages to other nodes go on;
//! - a received message carrying data for that page (whose DMA write would bypass the
//!   host's queue) waits, and so does the wire behind it.
//!
//! Back-pressure: an input is taken only when the completion ring, the out queue and the
//! change log have room for what one input can produce, so nothing is ever dropped.
#![forbid(unsafe_code)]

pub mod hal;
mod leave;
mod queues;

#[cfg(test)]
mod tests;

use vima::wire::{self, Body, Message, MAX_MESSAGE_BYTES, PAGE_BYTES};

use crate::engine::{Action, Actions, Engine, LocalFault, LogicalPage, PageState};
use hal::{HostEvent, HostRequest, Platform, WireEvent};
use queues::{Backoff, ChangeLog, OutItem, OutQueue, Wait};

pub use hal::{Board, DmaMemory, HostRings, Interrupts, RejectedRequest, Wire};

/// The vector for completions that are not a VP's (mapping changes, control messages).
pub const HOST_VECTOR: u16 = 0;
/// Messages waiting to leave.
const OUT_CAPACITY: usize = 256;
/// Mapping changes the host has not acknowledged (at least the completion ring's size).
const CHANGE_CAPACITY: usize = 1024;
/// What one input may need: completions, queued messages, change records. An input
/// touches one page, plus the requests to ourselves it releases; an invalidation fans out
/// to at most 15 nodes.
const INPUT_RESERVE: usize = 32;
/// Inputs of each kind per round, so neither source starves the other.
const BATCH: usize = 16;
/// Fault completions one input can produce before they are posted.
const DONE_CAPACITY: usize = 32;

/// Counters of the firmware (the engine keeps its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FirmwareCounters {
    /// Rounds that found work.
    pub busy_rounds: u64,
    /// Host requests taken.
    pub requests: u64,
    /// Host requests refused (malformed, or a message that is not ours to send).
    pub bad_requests: u64,
    /// Completions posted.
    pub completions: u64,
    /// Interrupts raised.
    pub interrupts: u64,
    /// Wire messages received.
    pub messages_received: u64,
    /// Wire messages sent.
    pub messages_sent: u64,
    /// Wire messages dropped as malformed or misdirected.
    pub bad_messages: u64,
    /// Wire sends that failed.
    pub send_failures: u64,
    /// Pages read by DMA and sent.
    pub pages_sent: u64,
    /// Of those, pages that never waited for the host.
    pub pages_served_without_host: u64,
    /// Messages that waited for the host to apply a mapping change.
    pub sends_held: u64,
    /// Data-carrying messages that waited for the host before their DMA write.
    pub receives_held: u64,
    /// Completions re-steered because their VP was gone.
    pub resteered: u64,
    /// Faults the engine refused (answered so that the VP retries).
    pub faults_refused: u64,
    /// Inputs the engine refused.
    pub engine_errors: u64,
    /// DMA reads or writes outside the mapped memory.
    pub dma_errors: u64,
}

/// The firmware of one node's NIC for one virtual server.
#[derive(Debug)]
pub struct Firmware<'s> {
    core: Core<'s>,
    /// Inputs, kept apart from `core` so that a message can be read from them while the
    /// core changes.
    stall_buf: [u8; MAX_MESSAGE_BYTES],
    rx_buf: [u8; MAX_MESSAGE_BYTES],
    host_buf: [u8; MAX_MESSAGE_BYTES],
}

#[derive(Debug)]
struct Core<'s> {
    engine: Engine<'s>,
    out: OutQueue<OUT_CAPACITY>,
    changes: ChangeLog<CHANGE_CAPACITY>,
    stalled: Option<usize>,
    tx_buf: [u8; MAX_MESSAGE_BYTES],
    page_buf: [u8; PAGE_BYTES],
    vectors: u128,
    heartbeat: u64,
    backoff: Backoff,
    counters: FirmwareCounters,
    /// The drain the host asked for, if one is under way.
    leave: leave::LeaveJob,
}

/// What to do with a received message.
enum Received {
    Done,
    /// Hold it (copy it aside) until the host applied a mapping change of its page.
    Stall,
}

/// Why [`Firmware::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The board asked to stop.
    Requested,
}

impl<'s> Firmware<'s> {
    /// The firmware around an engine built for this node.
    pub fn new(engine: Engine<'s>) -> Self {
        Self {
            core: Core {
                engine,
                out: OutQueue::new(),
                changes: ChangeLog::new(),
                stalled: None,
                tx_buf: [0; MAX_MESSAGE_BYTES],
                page_buf: [0; PAGE_BYTES],
                vectors: 0,
                heartbeat: 0,
                backoff: Backoff::default(),
                counters: FirmwareCounters::default(),
                leave: leave::LeaveJob::default(),
            },
            stall_buf: [0; MAX_MESSAGE_BYTES],
            rx_buf: [0; MAX_MESSAGE_BYTES],
            host_buf: [0; MAX_MESSAGE_BYTES],
        }
    }

    /// The engine (for its counters and states).
    pub fn engine(&self) -> &Engine<'s> {
        &self.core.engine
    }

    /// The firmware's counters.
    pub fn counters(&self) -> &FirmwareCounters {
        &self.core.counters
    }

    /// True when nothing waits to leave and no received message waits.
    pub fn is_quiescent(&self) -> bool {
        self.core.out.len() == 0 && self.core.stalled.is_none()
    }

    /// True when something this NIC waits for is due soon: a reply to its own request or
    /// to a request it serves, the host's acknowledgement of a mapping change, or a held
    /// message.
    pub fn is_awaiting(&self) -> bool {
        !self.is_quiescent()
            || self.core.changes.len() > 0
            || !self.core.engine.is_idle()
            || self.core.leave.stage != leave::LeaveStage::Idle
    }

    /// Runs rounds until the board asks to stop, idling between rounds without work.
    pub fn run<P: Platform>(&mut self, p: &mut P) -> StopReason {
        loop {
            let worked = self.poll(p);
            if p.should_stop(self.is_quiescent()) {
                self.core.publish(p);
                return StopReason::Requested;
            }
            let now = p.now_us();
            if worked {
                self.core.backoff.reset(now);
            } else {
                let awaiting = self.is_awaiting();
                match self.core.backoff.next(now, awaiting) {
                    Wait::Relax => p.relax(),
                    Wait::Sleep(micros) => p.idle(micros),
                }
            }
        }
    }

    /// One round; true when it did something.
    pub fn poll<P: Platform>(&mut self, p: &mut P) -> bool {
        let core = &mut self.core;
        core.heartbeat += 1;
        core.changes.retire(p.applied());
        let mut worked = core.flush(p);
        if let Some(len) = core.stalled {
            let bytes = &self.stall_buf[..len];
            let page = wire::decode(bytes).ok().and_then(|m| m.body.page());
            let blocked = page.is_some_and(|page| core.write_must_wait(page));
            if !blocked && core.has_room(p) {
                core.stalled = None;
                core.on_message(p, bytes);
                worked = true;
            }
        }
        for _ in 0..BATCH {
            if !core.has_room(p) {
                break;
            }
            let Some(request) = p.poll_request(&mut self.host_buf) else {
                break;
            };
            worked = true;
            core.counters.requests += 1;
            match request {
                Ok(request) => core.on_request(p, request, &self.host_buf),
                Err(_) => core.counters.bad_requests += 1,
            }
        }
        for _ in 0..BATCH {
            if core.stalled.is_some() || !core.has_room(p) {
                break;
            }
            let Some(event) = p.poll(&mut self.rx_buf) else {
                break;
            };
            worked = true;
            match event {
                WireEvent::Message { from, len } => {
                    core.counters.messages_received += 1;
                    let Some(bytes) = self.rx_buf.get(..len) else {
                        core.counters.bad_messages += 1;
                        continue;
                    };
                    if let Received::Stall = core.on_wire(p, from, bytes) {
                        self.stall_buf[..len].copy_from_slice(bytes);
                        core.stalled = Some(len);
                    }
                }
                WireEvent::PeerDown(node) => {
                    core.post(p, &HostEvent::PeerDown { node }, HOST_VECTOR);
                }
                WireEvent::Failed => core.post(p, &HostEvent::WireFailed, HOST_VECTOR),
            }
        }
        // A drain in progress gets its share of the round (no ring reads otherwise).
        if core.leave.stage != leave::LeaveStage::Idle && core.has_room(p) {
            worked |= core.advance_leave(p);
        }
        worked |= core.flush(p);
        core.raise(p);
        if worked {
            core.counters.busy_rounds += 1;
        }
        if worked || core.heartbeat.is_multiple_of(64) {
            core.publish(p);
        }
        worked
    }
}

impl<'s> Core<'s> {
    fn publish<P: Platform>(&mut self, p: &mut P) {
        p.publish(self.heartbeat, &self.counters, self.engine.counters());
    }

    fn has_room<P: Platform>(&self, p: &P) -> bool {
        p.completion_room() >= INPUT_RESERVE
            && self.out.room() >= INPUT_RESERVE
            && CHANGE_CAPACITY - self.changes.len() >= INPUT_RESERVE
    }

    fn on_request<P: Platform>(&mut self, p: &mut P, request: HostRequest, buf: &[u8]) {
        match request {
            HostRequest::Fetch { page, write, vp } => {
                let fault = LocalFault {
                    page: LogicalPage(page),
                    write,
                    vp,
                };
                if self
                    .input(p, |engine, sink| engine.fault(fault, sink))
                    .is_err()
                {
                    // Answer anyway so the VP retries instead of hanging.
                    self.counters.faults_refused += 1;
                    let state = self
                        .engine
                        .page_state(LogicalPage(page))
                        .unwrap_or(PageState::Invalid);
                    let vector = self.vector_of(p, vp);
                    self.post(p, &HostEvent::FaultDone { page, state, vp }, vector);
                }
            }
            HostRequest::SendMessage { len } => {
                let Some(bytes) = buf.get(..len) else {
                    self.counters.bad_requests += 1;
                    return;
                };
                let config = *self.engine.config();
                let ours = wire::decode(bytes).is_ok_and(|m| {
                    !m.body.kind().is_engine()
                        && m.vs_id == config.vs_id
                        && m.src == config.node
                        && m.dst != config.node
                        && m.dst < config.node_count
                });
                if !ours {
                    self.counters.bad_requests += 1;
                    return;
                }
                let dst = u16::from_le_bytes([bytes[10], bytes[11]]);
                self.send_bytes(p, dst, bytes);
            }
            HostRequest::Leave { to } => self.start_leave(p, to),
        }
    }

    fn on_wire<P: Platform>(&mut self, p: &mut P, from: u16, bytes: &[u8]) -> Received {
        let config = *self.engine.config();
        let Ok(msg) = wire::decode(bytes) else {
            self.counters.bad_messages += 1;
            return Received::Done;
        };
        if msg.src != from || msg.dst != config.node || msg.vs_id != config.vs_id {
            self.counters.bad_messages += 1;
            return Received::Done;
        }
        let carries_data = matches!(
            msg.body,
            Body::PageData { .. }
                | Body::Writeback { .. }
                | Body::Evict { data: Some(_), .. }
                | Body::HomeMove { data: Some(_), .. }
        );
        if carries_data
            && msg
                .body
                .page()
                .is_some_and(|page| self.write_must_wait(page))
        {
            self.counters.receives_held += 1;
            return Received::Stall;
        }
        self.on_message(p, bytes);
        Received::Done
    }

    /// A DMA write of `page` must wait: the host has not applied an earlier mapping change
    /// of it, or an earlier page send of it has not read it yet (it waits behind another
    /// message to the same node). Both are earlier actions on the page.
    fn write_must_wait(&self, page: u64) -> bool {
        self.changes.pending(page) || self.out.has_page_send(page)
    }

    /// A checked wire message: coherence (and home changes) to the engine, control to
    /// the host.
    fn on_message<P: Platform>(&mut self, p: &mut P, bytes: &[u8]) {
        let Ok(msg) = wire::decode(bytes) else {
            self.counters.bad_messages += 1;
            return;
        };
        if msg.body.kind().is_engine() {
            let _ = self.input(p, |engine, sink| engine.receive(&msg, sink));
        } else if matches!(msg.body, Body::Heartbeat { .. }) {
            // Liveness is the transport's business.
        } else {
            self.post(p, &HostEvent::Control { bytes }, HOST_VECTOR);
        }
    }

    /// Feeds one input to the engine and applies its actions; then completes the faults
    /// it resolved, with the page state after the whole input (as the software path does).
    fn input<P, F>(&mut self, p: &mut P, f: F) -> Result<(), crate::engine::EngineError>
    where
        P: Platform,
        F: FnOnce(&mut Engine<'s>, &mut Sink<'_, P>) -> Result<(), crate::engine::EngineError>,
    {
        let mut done = [(0u64, 0u32); DONE_CAPACITY];
        let mut done_len = 0;
        let result = {
            let mut sink = Sink {
                p,
                out: &mut self.out,
                changes: &mut self.changes,
                counters: &mut self.counters,
                vectors: &mut self.vectors,
                done: &mut done,
                done_len: &mut done_len,
            };
            f(&mut self.engine, &mut sink)
        };
        if result.is_err() {
            self.counters.engine_errors += 1;
        }
        for &(page, vp) in &done[..done_len] {
            let state = self
                .engine
                .page_state(LogicalPage(page))
                .unwrap_or(PageState::Invalid);
            let vector = self.vector_of(p, vp);
            self.post(p, &HostEvent::FaultDone { page, state, vp }, vector);
        }
        result
    }

    fn vector_of<P: Platform>(&mut self, p: &P, vp: u32) -> u16 {
        match p.vector_of(vp) {
            Some(vector) => vector,
            None => {
                self.counters.resteered += 1;
                HOST_VECTOR
            }
        }
    }

    fn post<P: Platform>(&mut self, p: &mut P, event: &HostEvent<'_>, vector: u16) {
        post(
            p,
            &mut self.changes,
            &mut self.counters,
            &mut self.vectors,
            event,
            vector,
        );
    }

    /// Raises every vector the round's completions asked for, once.
    fn raise<P: Platform>(&mut self, p: &mut P) {
        let mut pending = core::mem::take(&mut self.vectors);
        while pending != 0 {
            let vector = pending.trailing_zeros();
            pending &= pending - 1;
            if let Ok(vector) = u16::try_from(vector) {
                p.raise(vector);
                self.counters.interrupts += 1;
            }
        }
    }

    /// Sends what may leave; true when something left.
    fn flush<P: Platform>(&mut self, p: &mut P) -> bool {
        let mut blocked: u32 = 0;
        let mut sent = false;
        let mut i = 0;
        while i < self.out.len() {
            let Some((item, held)) = self.out.get(i) else {
                break;
            };
            let dst_bit = 1u32.checked_shl(u32::from(item.dst())).unwrap_or(0);
            if blocked & dst_bit != 0 {
                i += 1;
                continue;
            }
            if item.page().is_some_and(|page| self.changes.pending(page)) {
                if !held {
                    self.counters.sends_held += 1;
                    self.out.mark_held(i);
                }
                blocked |= dst_bit;
                i += 1;
                continue;
            }
            self.out.remove(i);
            sent = true;
            match item {
                OutItem::Message(msg) => {
                    send_message(p, &mut self.counters, &mut self.tx_buf, &msg);
                }
                OutItem::Page(send) => {
                    if !p.read_page(send.page.0, &mut self.page_buf) {
                        self.counters.dma_errors += 1;
                    }
                    self.counters.pages_sent += 1;
                    if !held {
                        self.counters.pages_served_without_host += 1;
                    }
                    let msg = send.message(&self.page_buf);
                    send_message(p, &mut self.counters, &mut self.tx_buf, &msg);
                }
            }
        }
        sent
    }

    fn send_bytes<P: Platform>(&mut self, p: &mut P, dst: u16, bytes: &[u8]) {
        send_bytes(p, &mut self.counters, dst, bytes);
    }
}

fn send_message<P: Platform>(
    p: &mut P,
    counters: &mut FirmwareCounters,
    buf: &mut [u8; MAX_MESSAGE_BYTES],
    msg: &Message<'_>,
) {
    match wire::encode(msg, buf) {
        Ok(len) => send_bytes(p, counters, msg.dst, &buf[..len]),
        Err(_) => counters.send_failures += 1,
    }
}

fn send_bytes<P: Platform>(p: &mut P, counters: &mut FirmwareCounters, dst: u16, bytes: &[u8]) {
    if p.send(dst, bytes) {
        counters.messages_sent += 1;
    } else {
        counters.send_failures += 1;
    }
}

fn post<P: Platform>(
    p: &mut P,
    changes: &mut ChangeLog<CHANGE_CAPACITY>,
    counters: &mut FirmwareCounters,
    vectors: &mut u128,
    event: &HostEvent<'_>,
    vector: u16,
) {
    // Room was checked before the input was taken (INPUT_RESERVE); a full ring here is a
    // platform that lied about its room: count it rather than lose track of the change.
    match p.post(event) {
        Some(seq) => {
            counters.completions += 1;
            if let Some(page) = event.changed_page() {
                let _ = changes.record(seq, page);
            }
            *vectors |= 1u128.checked_shl(u32::from(vector)).unwrap_or(0);
        }
        None => counters.engine_errors += 1,
    }
}

/// Applies the engine's actions as a NIC does.
struct Sink<'a, P> {
    p: &'a mut P,
    out: &'a mut OutQueue<OUT_CAPACITY>,
    changes: &'a mut ChangeLog<CHANGE_CAPACITY>,
    counters: &'a mut FirmwareCounters,
    vectors: &'a mut u128,
    done: &'a mut [(u64, u32); DONE_CAPACITY],
    done_len: &'a mut usize,
}

impl<P: Platform> Sink<'_, P> {
    fn post(&mut self, event: &HostEvent<'_>) {
        post(
            self.p,
            self.changes,
            self.counters,
            self.vectors,
            event,
            HOST_VECTOR,
        );
    }

    fn queue(&mut self, item: OutItem) {
        if !self.out.push(item) {
            // Cannot happen with INPUT_RESERVE; counted, never silent.
            self.counters.send_failures += 1;
        }
    }
}

impl<P: Platform> Actions for Sink<'_, P> {
    fn push(&mut self, action: Action<'_>) {
        match action {
            Action::Send(msg) => self.queue(OutItem::Message(msg)),
            Action::SendPage(send) => self.queue(OutItem::Page(send)),
            Action::InstallPage { page, state, data } => {
                if let Some(data) = data {
                    if !self.p.write_page(page.0, data) {
                        self.counters.dma_errors += 1;
                    }
                }
                self.post(&HostEvent::MapPage {
                    page: page.0,
                    state,
                });
            }
            Action::StorePage { page, data } => {
                if !self.p.write_page(page.0, data) {
                    self.counters.dma_errors += 1;
                }
            }
            Action::Invalidate { page } => self.post(&HostEvent::Invalidate { page: page.0 }),
            Action::Downgrade { page } => self.post(&HostEvent::Downgrade { page: page.0 }),
            Action::WakeWatchers { page } => {
                self.post(&HostEvent::WakeWatchers { page: page.0 });
            }
            Action::FaultDone { page, vp } => {
                let done = &self.done[..*self.done_len];
                if done.iter().any(|(p, _)| *p == page.0) {
                    return;
                }
                if *self.done_len < DONE_CAPACITY {
                    self.done[*self.done_len] = (page.0, vp);
                    *self.done_len += 1;
                } else {
                    // More pages than one input normally completes: wake the VP, which
                    // faults again and is answered from the local state.
                    self.post(&HostEvent::FaultDone {
                        page: page.0,
                        state: PageState::Invalid,
                        vp,
                    });
                }
            }
        }
    }
}
