//! The firmware loop against the real engine, on in-memory fakes of the board: host rings
//! that record completions and acknowledge them when the test says so, DMA memory as a
//! map of pages, and a wire of queues between the nodes' fakes.
#![allow(clippy::cast_possible_truncation)] // test values are small

use std::collections::{HashMap, VecDeque};

use vima::wire::{self, Body, Message, MAX_MESSAGE_BYTES, PAGE_BYTES};

use super::hal::*;
use super::*;
use crate::engine::{
    Counters, DirEntry, EngineConfig, EngineStorage, HomeMap, HomeRequest, PageState, PendingFault,
};

/// A completion as the fake host keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Posted {
    Map(u64, PageState),
    Invalidate(u64),
    Downgrade(u64),
    Wake(u64),
    Done(u64, PageState, u32),
    Control(Vec<u8>),
    PeerDown(u16),
    WireFailed,
    Left(u64, u64, bool),
}

#[derive(Default)]
struct FakeBoard {
    requests: VecDeque<Result<HostRequest, RejectedRequest>>,
    payloads: VecDeque<Vec<u8>>,
    posted: Vec<Posted>,
    /// Completions the host applied (the ring's head).
    applied: u64,
    room: usize,
    memory: HashMap<u64, [u8; PAGE_BYTES]>,
    outbox: Vec<(u16, Vec<u8>)>,
    inbox: VecDeque<(u16, Vec<u8>)>,
    wire_events: VecDeque<WireEvent>,
    vectors: HashMap<u32, u16>,
    raised: Vec<u16>,
    idles: Vec<u32>,
    relaxes: u32,
    /// The board clock: a relaxed round takes 1 µs, a sleep its length.
    clock_us: u64,
    heartbeat: u64,
    rounds_left: u32,
}

impl FakeBoard {
    fn new() -> Self {
        Self {
            room: 512,
            rounds_left: u32::MAX,
            ..Self::default()
        }
    }

    fn fetch(&mut self, page: u64, write: bool, vp: u32) {
        self.requests
            .push_back(Ok(HostRequest::Fetch { page, write, vp }));
    }

    fn send_control(&mut self, bytes: Vec<u8>) {
        self.requests
            .push_back(Ok(HostRequest::SendMessage { len: bytes.len() }));
        self.payloads.push_back(bytes);
    }

    /// The host applies every completion posted so far.
    fn apply_all(&mut self) {
        self.applied = self.posted.len() as u64;
    }

    fn take_posted(&mut self) -> Vec<Posted> {
        self.posted.clone()
    }
}

impl HostRings for FakeBoard {
    fn poll_request(&mut self, buf: &mut [u8]) -> Option<Result<HostRequest, RejectedRequest>> {
        let request = self.requests.pop_front()?;
        if let Ok(HostRequest::SendMessage { len }) = request {
            let bytes = self.payloads.pop_front().expect("payload queued");
            buf[..len].copy_from_slice(&bytes);
        }
        Some(request)
    }

    fn completion_room(&self) -> usize {
        self.room
    }

    fn post(&mut self, event: &HostEvent<'_>) -> Option<u64> {
        let posted = match *event {
            HostEvent::MapPage { page, state } => Posted::Map(page, state),
            HostEvent::Invalidate { page } => Posted::Invalidate(page),
            HostEvent::Downgrade { page } => Posted::Downgrade(page),
            HostEvent::WakeWatchers { page } => Posted::Wake(page),
            HostEvent::FaultDone { page, state, vp } => Posted::Done(page, state, vp),
            HostEvent::Control { bytes } => Posted::Control(bytes.to_vec()),
            HostEvent::PeerDown { node } => Posted::PeerDown(node),
            HostEvent::WireFailed => Posted::WireFailed,
            HostEvent::Left {
                evicted,
                moved,
                refused,
            } => Posted::Left(evicted, moved, refused),
        };
        self.posted.push(posted);
        Some(self.posted.len() as u64 - 1)
    }

    fn applied(&self) -> u64 {
        self.applied
    }
}

impl Interrupts for FakeBoard {
    fn vector_of(&self, vp: u32) -> Option<u16> {
        self.vectors.get(&vp).copied()
    }

    fn raise(&mut self, vector: u16) {
        self.raised.push(vector);
    }
}

impl DmaMemory for FakeBoard {
    fn read_page(&mut self, page: u64, out: &mut [u8; PAGE_BYTES]) -> bool {
        *out = self.memory.get(&page).copied().unwrap_or([0; PAGE_BYTES]);
        true
    }

    fn write_page(&mut self, page: u64, data: &[u8; PAGE_BYTES]) -> bool {
        self.memory.insert(page, *data);
        true
    }
}

impl Wire for FakeBoard {
    fn send(&mut self, dst: u16, bytes: &[u8]) -> bool {
        self.outbox.push((dst, bytes.to_vec()));
        true
    }

    fn poll(&mut self, buf: &mut [u8]) -> Option<WireEvent> {
        if let Some(event) = self.wire_events.pop_front() {
            return Some(event);
        }
        let (from, bytes) = self.inbox.pop_front()?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        Some(WireEvent::Message {
            from,
            len: bytes.len(),
        })
    }
}

impl Board for FakeBoard {
    fn now_us(&self) -> u64 {
        self.clock_us
    }

    fn relax(&mut self) {
        self.relaxes += 1;
        self.clock_us += 1;
    }

    fn idle(&mut self, micros: u32) {
        self.idles.push(micros);
        self.clock_us += u64::from(micros);
    }

    fn publish(&mut self, heartbeat: u64, _firmware: &FirmwareCounters, _engine: &Counters) {
        self.heartbeat = heartbeat;
    }

    fn should_stop(&mut self, _quiescent: bool) -> bool {
        self.rounds_left = self.rounds_left.saturating_sub(1);
        self.rounds_left == 0
    }
}

const PAGES_PER_NODE: u64 = 0x100;

fn homes(nodes: u16) -> HomeMap {
    let mut map = HomeMap::new();
    for n in 0..nodes {
        map.add(
            LogicalPage(0x100 + u64::from(n) * PAGES_PER_NODE),
            PAGES_PER_NODE,
            n,
        )
        .unwrap();
    }
    map
}

fn firmware(node: u16, nodes: u16) -> Firmware<'static> {
    let map = homes(nodes);
    let pages = usize::try_from(map.page_limit()).unwrap();
    let storage = EngineStorage {
        local: Box::leak(vec![PageState::Invalid; pages].into_boxed_slice()),
        directory: Box::leak(vec![DirEntry::default(); pages].into_boxed_slice()),
        pending: Box::leak(vec![PendingFault::default(); 8].into_boxed_slice()),
        requests: Box::leak(vec![HomeRequest::default(); 64].into_boxed_slice()),
    };
    let config = EngineConfig {
        vs_id: 1,
        node,
        node_count: nodes,
    };
    Firmware::new(Engine::new(config, map, storage).unwrap())
}

struct Cluster {
    fws: Vec<Firmware<'static>>,
    boards: Vec<FakeBoard>,
    /// Hosts apply their completions as soon as they are posted.
    auto_apply: bool,
}

impl Cluster {
    fn new(nodes: u16) -> Self {
        Self {
            fws: (0..nodes).map(|n| firmware(n, nodes)).collect(),
            boards: (0..nodes).map(|_| FakeBoard::new()).collect(),
            auto_apply: true,
        }
    }

    /// Moves every sent message to its destination's inbox; the number moved.
    fn deliver(&mut self) -> usize {
        let mut moved = 0;
        for from in 0..self.boards.len() {
            for (dst, bytes) in std::mem::take(&mut self.boards[from].outbox) {
                moved += 1;
                self.boards[usize::from(dst)]
                    .inbox
                    .push_back((from as u16, bytes));
            }
        }
        moved
    }

    /// Polls and delivers until nothing moves.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut worked = false;
            for (fw, board) in self.fws.iter_mut().zip(&mut self.boards) {
                worked |= fw.poll(board);
                if self.auto_apply {
                    board.apply_all();
                }
            }
            if self.deliver() == 0 && !worked {
                return;
            }
        }
        panic!("the cluster did not settle");
    }
}

fn page_of(node: u16) -> u64 {
    0x100 + u64::from(node) * PAGES_PER_NODE + 5
}

#[test]
fn a_remote_read_waits_for_the_homes_downgrade_then_completes_with_the_data() {
    let mut c = Cluster::new(2);
    c.auto_apply = false;
    let page = page_of(0);
    c.boards[0].memory.insert(page, [0xab; PAGE_BYTES]);
    c.boards[1].vectors.insert(3, 4);
    c.boards[1].fetch(page, false, 3);
    c.settle();
    // The home must write-protect its own copy before the page leaves: the data waits.
    assert_eq!(c.boards[0].take_posted(), [Posted::Downgrade(page)]);
    assert!(
        c.boards[1].posted.is_empty(),
        "no data before the home's ack"
    );
    assert_eq!(c.fws[0].counters().sends_held, 1);
    assert_eq!(c.boards[0].raised, [HOST_VECTOR]);
    // The home's host applies the downgrade: the page goes out.
    c.boards[0].apply_all();
    c.settle();
    assert_eq!(
        c.boards[1].take_posted(),
        [
            Posted::Map(page, PageState::Shared),
            Posted::Done(page, PageState::Shared, 3)
        ]
    );
    assert_eq!(c.boards[1].memory[&page], [0xab; PAGE_BYTES]);
    // The completion went to VP 3's vector (after the mapping's host vector).
    assert!(c.boards[1].raised.contains(&4));
    assert_eq!(c.fws[0].counters().pages_sent, 1);
    assert_eq!(c.fws[0].counters().pages_served_without_host, 0);
}

#[test]
fn a_shared_page_is_served_from_memory_without_the_home_host() {
    let mut c = Cluster::new(3);
    let page = page_of(0);
    c.boards[0].memory.insert(page, [0x5a; PAGE_BYTES]);
    c.boards[1].fetch(page, false, 1);
    c.settle();
    let home_completions = c.boards[0].posted.len();
    let home_interrupts = c.boards[0].raised.len();
    // A second reader: the page is Shared at the home, nothing for its host to do.
    c.boards[2].fetch(page, false, 2);
    c.settle();
    assert_eq!(
        c.boards[0].posted.len(),
        home_completions,
        "no host work at the home"
    );
    assert_eq!(
        c.boards[0].raised.len(),
        home_interrupts,
        "no interrupt at the home"
    );
    assert_eq!(c.fws[0].counters().pages_served_without_host, 1);
    assert_eq!(c.boards[2].memory[&page], [0x5a; PAGE_BYTES]);
    assert!(c.boards[2]
        .posted
        .contains(&Posted::Done(page, PageState::Shared, 2)));
}

#[test]
fn invalidations_fan_out_before_any_ack_returns() {
    let mut c = Cluster::new(4);
    let page = page_of(0);
    for reader in 1..3 {
        c.boards[reader].fetch(page, false, reader as u32);
    }
    c.settle();
    // Node 3 writes: the home must invalidate nodes 1 and 2 (and its own copy).
    c.boards[3].fetch(page, true, 3);
    c.fws[3].poll(&mut c.boards[3]);
    c.deliver();
    c.fws[0].poll(&mut c.boards[0]);
    c.boards[0].apply_all();
    c.fws[0].poll(&mut c.boards[0]);
    let invalidated: Vec<u16> = c.boards[0]
        .outbox
        .iter()
        .filter_map(|(dst, bytes)| {
            matches!(wire::decode(bytes).unwrap().body, Body::Invalidate { .. }).then_some(*dst)
        })
        .collect();
    assert_eq!(invalidated, [1, 2], "both sharers at once, before any ack");
    c.settle();
    for sharer in 1..3 {
        assert!(c.boards[sharer].posted.contains(&Posted::Invalidate(page)));
    }
    assert!(c.boards[3]
        .posted
        .contains(&Posted::Done(page, PageState::Exclusive, 3)));
    assert_eq!(c.fws[0].engine().counters().invalidations_sent, 2);
}

#[test]
fn an_invalidation_ack_waits_for_the_sharers_unmap() {
    let mut c = Cluster::new(3);
    let page = page_of(0);
    c.boards[1].fetch(page, false, 1);
    c.settle();
    c.auto_apply = false;
    c.boards[2].fetch(page, true, 2);
    c.boards[0].apply_all();
    c.settle();
    c.boards[0].apply_all();
    c.settle();
    // Node 1 was told to unmap; until its host did, its ack stays queued.
    assert!(c.boards[1]
        .posted
        .ends_with(&[Posted::Invalidate(page), Posted::Wake(page)]));
    assert!(!c.boards[2]
        .posted
        .iter()
        .any(|p| matches!(p, Posted::Done(..))));
    c.boards[1].apply_all();
    c.settle();
    c.boards[2].apply_all();
    assert!(c.boards[2]
        .posted
        .contains(&Posted::Done(page, PageState::Exclusive, 2)));
}

#[test]
fn completions_for_a_vp_that_is_gone_go_to_the_host_vector() {
    let mut c = Cluster::new(2);
    let page = page_of(0);
    c.boards[1].fetch(page, false, 7); // no vector for VP 7
    c.settle();
    assert!(c.boards[1]
        .posted
        .contains(&Posted::Done(page, PageState::Shared, 7)));
    assert_eq!(c.fws[1].counters().resteered, 1);
    assert!(c.boards[1].raised.iter().all(|v| *v == HOST_VECTOR));
}

fn control(src: u16, dst: u16, body: Body<'_>) -> Vec<u8> {
    let mut buf = [0u8; MAX_MESSAGE_BYTES];
    let msg = Message {
        vs_id: 1,
        src,
        dst,
        request_id: 0,
        body,
    };
    let len = wire::encode(&msg, &mut buf).unwrap();
    buf[..len].to_vec()
}

#[test]
fn control_messages_cross_through_the_rings() {
    let mut c = Cluster::new(2);
    let ipi = control(1, 0, Body::Ipi { vp: 0, vector: 40 });
    c.boards[1].send_control(ipi.clone());
    c.settle();
    assert_eq!(c.boards[0].posted, [Posted::Control(ipi)]);
    assert_eq!(c.boards[0].raised, [HOST_VECTOR]);
}

#[test]
fn malformed_host_requests_are_refused_and_the_loop_goes_on() {
    let mut c = Cluster::new(2);
    c.boards[1].requests.push_back(Err(RejectedRequest));
    // A coherence message is not the host's to send.
    let forged = control(1, 0, Body::ReadReq { page: page_of(0) });
    c.boards[1].send_control(forged);
    // Neither is a message claiming another source.
    let spoofed = control(0, 1, Body::VsExit { status: 0 });
    c.boards[1].send_control(spoofed);
    // Garbage bytes.
    c.boards[1].send_control(vec![0xff; 40]);
    // A fault on a page nobody is home for is answered so that the VP does not hang.
    c.boards[1].fetch(0x9_0000, false, 0);
    c.settle();
    assert_eq!(c.fws[1].counters().bad_requests, 4);
    assert_eq!(c.fws[1].counters().faults_refused, 1);
    assert!(c.boards[1]
        .posted
        .contains(&Posted::Done(0x9_0000, PageState::Invalid, 0)));
    assert!(c.boards[0].posted.is_empty());
    // Still works.
    c.boards[1].fetch(page_of(0), false, 1);
    c.settle();
    assert!(c.boards[1]
        .posted
        .contains(&Posted::Done(page_of(0), PageState::Shared, 1)));
}

#[test]
fn a_nic_drains_its_node_on_the_hosts_leave() {
    let mut c = Cluster::new(2);
    // Node 1 reads a page of node 0 and writes one of its own that node 0 then reads.
    c.boards[1].fetch(page_of(0), false, 1);
    c.settle();
    // A leave towards itself is refused at once; towards node 0 it runs to the end.
    c.boards[1]
        .requests
        .push_back(Ok(HostRequest::Leave { to: 1 }));
    c.boards[1]
        .requests
        .push_back(Ok(HostRequest::Leave { to: 0 }));
    c.settle();
    let left: Vec<&Posted> = c.boards[1]
        .posted
        .iter()
        .filter(|p| matches!(p, Posted::Left(..)))
        .collect();
    let moved = c.fws[1].engine().counters().homes_moved_out;
    assert!(moved > 0);
    assert_eq!(
        left,
        [&Posted::Left(0, 0, true), &Posted::Left(1, moved, false)]
    );
    assert_eq!(c.fws[1].engine().counters().evictions_sent, 1);
    assert!(c.fws[1].engine().is_idle());
    // Node 0 homes everything now and still serves its own page.
    let homes = c.fws[0].engine().homes();
    assert_eq!(homes.home_of(LogicalPage(page_of(1))), Some(0));
    c.boards[0].fetch(page_of(1), true, 0);
    c.settle();
    assert!(c.boards[0]
        .posted
        .contains(&Posted::Done(page_of(1), PageState::Exclusive, 0)));
}

#[test]
fn bad_wire_messages_and_peer_loss() {
    let mut c = Cluster::new(2);
    // From node 1 but claiming to be from node 0... to node 0.
    c.boards[0]
        .inbox
        .push_back((1, control(0, 1, Body::VsExit { status: 1 })));
    c.boards[0].inbox.push_back((1, vec![1, 2, 3]));
    c.boards[0].wire_events.push_back(WireEvent::PeerDown(1));
    c.settle();
    assert_eq!(c.fws[0].counters().bad_messages, 2);
    assert_eq!(c.boards[0].posted, [Posted::PeerDown(1)]);
}

#[test]
fn a_stalled_receive_is_held_until_the_ack() {
    // Drive one firmware by hand: post a mapping change, then deliver data for that page.
    let mut fw = firmware(1, 2);
    let mut board = FakeBoard::new();
    let page = page_of(0);
    // Node 1 asks for the page (a ReadReq goes out).
    board.fetch(page, false, 1);
    fw.poll(&mut board);
    let (_, req) = board.outbox.pop().unwrap();
    let request_id = wire::decode(&req).unwrap().request_id;
    // Pretend an earlier change of the page is still in the host's queue.
    board.post(&HostEvent::Invalidate { page });
    fw.core.changes.record(0, page);
    let data = [0x42u8; PAGE_BYTES];
    let reply = {
        let mut buf = [0u8; MAX_MESSAGE_BYTES];
        let msg = Message {
            vs_id: 1,
            src: 0,
            dst: 1,
            request_id,
            body: Body::PageData {
                page,
                exclusive: false,
                data: &data,
            },
        };
        let len = wire::encode(&msg, &mut buf).unwrap();
        buf[..len].to_vec()
    };
    board.inbox.push_back((0, reply));
    fw.poll(&mut board);
    assert!(
        !board.memory.contains_key(&page),
        "no DMA write under the host"
    );
    assert_eq!(fw.counters().receives_held, 1);
    assert!(!fw.is_quiescent());
    board.applied = 1;
    fw.poll(&mut board);
    assert_eq!(board.memory[&page], data);
    assert!(fw.is_quiescent());
    assert!(board.posted.ends_with(&[
        Posted::Map(page, PageState::Shared),
        Posted::Done(page, PageState::Shared, 1)
    ]));
}

#[test]
fn an_idle_loop_sleeps_with_back_off_to_milliseconds_and_stops_when_asked() {
    let mut fw = firmware(0, 2);
    let mut board = FakeBoard::new();
    board.rounds_left = 400;
    assert_eq!(fw.run(&mut board), StopReason::Requested);
    // Nothing awaited: no hot polling at all.
    assert_eq!(board.relaxes, 0);
    assert!(board.idles.len() > 200);
    assert_eq!(board.idles[0], queues::FIRST_SLEEP_US);
    assert_eq!(*board.idles.last().unwrap(), queues::MAX_SLEEP_US);
    assert!(board.heartbeat >= 399, "the heartbeat moves while idle");
}

#[test]
fn a_nic_awaiting_a_reply_polls_hot_for_the_window_then_sleeps() {
    let mut fw = firmware(0, 2);
    let mut board = FakeBoard::new();
    let hot = u32::try_from(queues::HOT_WINDOW_US).unwrap();
    // A fetch of a page homed on node 1: the request leaves, the reply is awaited.
    board.fetch(page_of(1), false, 0);
    board.rounds_left = hot + 50;
    fw.run(&mut board);
    assert!(fw.is_awaiting());
    // One relaxed round per fake microsecond of the window after the work, then sleeps.
    assert!(
        board.relaxes >= hot - 2 && board.relaxes <= hot,
        "{}",
        board.relaxes
    );
    assert_eq!(board.idles[0], queues::FIRST_SLEEP_US);
}

#[test]
fn data_waits_for_a_queued_send_of_the_same_page() {
    let mut fw = firmware(1, 2);
    let mut board = FakeBoard::new();
    let page = page_of(0);
    let other = page_of(1);
    board.fetch(page, false, 1);
    fw.poll(&mut board);
    let (_, req) = board.outbox.pop().unwrap();
    let request_id = wire::decode(&req).unwrap().request_id;
    // A message about `other` waits for the host, and a page send of `page` to the same
    // node waits behind it.
    board.post(&HostEvent::Downgrade { page: other });
    fw.core.changes.record(0, other);
    let blocker = Message {
        vs_id: 1,
        src: 1,
        dst: 0,
        request_id: 9,
        body: Body::Unblock { page: other },
    };
    assert!(fw.core.out.push(queues::OutItem::Message(blocker)));
    assert!(fw
        .core
        .out
        .push(queues::OutItem::Page(crate::engine::PageSend {
            vs_id: 1,
            src: 1,
            to: 0,
            page: LogicalPage(page),
            request_id: 8,
            kind: crate::engine::PageSendKind::Writeback,
        })));
    board.memory.insert(page, [1; PAGE_BYTES]);
    let data = [2u8; PAGE_BYTES];
    let mut buf = [0u8; MAX_MESSAGE_BYTES];
    let reply = Message {
        vs_id: 1,
        src: 0,
        dst: 1,
        request_id,
        body: Body::PageData {
            page,
            exclusive: false,
            data: &data,
        },
    };
    let len = wire::encode(&reply, &mut buf).unwrap();
    board.inbox.push_back((0, buf[..len].to_vec()));
    fw.poll(&mut board);
    assert_eq!(
        board.memory[&page], [1; PAGE_BYTES],
        "not overwritten before the send"
    );
    assert_eq!(fw.counters().receives_held, 1);
    board.applied = 1;
    fw.poll(&mut board);
    // The queued send left with the old contents, then the data was written.
    let sent: Vec<_> = board
        .outbox
        .iter()
        .map(|(_, bytes)| wire::decode(bytes).unwrap().body)
        .collect();
    assert!(sent
        .iter()
        .any(|b| matches!(b, Body::Writeback { data, .. } if data[0] == 1)));
    assert_eq!(board.memory[&page], data);
}
