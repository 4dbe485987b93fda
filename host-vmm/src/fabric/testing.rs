//! What the fabrics' unit tests share: an N-node configuration, the in-memory wire
//! between N transports, a recording [`FabricEvents`], and the scenarios both fabrics
//! must serve alike (a remote read-then-write; a node leaving with every write kept).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dpdk_transport::mem::MemNetwork;
use dpdk_transport::{NodeId, ReliableTransport, Transport, TransportConfig};
use vima::call::UncheckedRange;
use vima::layout::PAGE_SIZE;
use vima::wire::{Body, PAGE_BYTES};

use super::{Fabric, FabricEvents};
use crate::memory::{FetchRequest, LogicalMemory, PageState};
use crate::node::{build_config_table, NodeConfig};

/// What a fabric reported.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) control: Mutex<Vec<(u32, String)>>,
    pub(crate) failures: Mutex<Vec<String>>,
}

impl FabricEvents for Recorder {
    fn control(&self, from: u32, body: &Body<'_>) -> bool {
        match body {
            Body::ConsoleLine { line, .. } => {
                let text = String::from_utf8_lossy(line).into_owned();
                self.control.lock().unwrap().push((from, text));
                true
            }
            _ => false,
        }
    }

    fn failed(&self, why: String) {
        self.failures.lock().unwrap().push(why);
    }

    fn finished(&self) -> bool {
        false
    }
}

/// One node of a test: its fabric (started), memory and events.
pub(crate) struct Side<F> {
    pub(crate) fabric: Arc<F>,
    pub(crate) memory: Arc<LogicalMemory>,
    pub(crate) events: Arc<Recorder>,
}

impl<F: Fabric + 'static> Side<F> {
    /// Starts `fabric`'s thread.
    pub(crate) fn started(
        fabric: Arc<F>,
        memory: Arc<LogicalMemory>,
        events: Arc<Recorder>,
    ) -> Self {
        fabric.clone().start().unwrap();
        Side {
            fabric,
            memory,
            events,
        }
    }
}

/// The configuration table of `nodes` nodes with one VP and 8 MiB each, and the bytes of
/// logical memory.
pub(crate) fn node_table(nodes: u32) -> (Vec<u8>, u64) {
    let cfg = NodeConfig {
        node_id: 0,
        nodes,
        vps_per_node: 1,
        mem_mib_per_node: 8,
        cmdline: "test".into(),
    };
    (
        build_config_table(&cfg, 1_000_000).unwrap(),
        cfg.logical_bytes(),
    )
}

/// Reliable transports for nodes `0..nodes`, each a peer of all the others, over one
/// in-memory network.
pub(crate) fn mem_transports_for(nodes: u32) -> Vec<Arc<dyn Transport>> {
    mem_transports_with(nodes, TransportConfig::default())
}

/// As [`mem_transports_for`], with `config`.
pub(crate) fn mem_transports_with(nodes: u32, config: TransportConfig) -> Vec<Arc<dyn Transport>> {
    let net = MemNetwork::new();
    (0..nodes)
        .map(|node| {
            let peers: Vec<(NodeId, u32)> = (0..nodes)
                .filter(|n| *n != node)
                .map(|n| (NodeId(n), n))
                .collect();
            let transport =
                ReliableTransport::new(net.endpoint(node), NodeId(node), &peers, config).unwrap();
            Arc::new(transport) as Arc<dyn Transport>
        })
        .collect()
}

pub(crate) fn page_range(memory: &LogicalMemory, page: u64) -> vima::call::LogicalRange {
    UncheckedRange::new(page * PAGE_SIZE, PAGE_SIZE)
        .check(memory.size(), PAGE_SIZE)
        .unwrap()
}

pub(crate) fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A page homed on node 0 (whose memory is the first 8 MiB), past the per-node region.
pub(crate) const PAGE: u64 = (4 << 20) / PAGE_SIZE;

/// Node 1 reads a page homed on node 0 and gets the home's bytes (both then hold it
/// Shared); then writes it and holds the only copy (the home's is invalidated).
pub(crate) fn read_then_write_remote_page(
    (home_memory, _home): (&LogicalMemory, &dyn Fabric),
    (memory, fabric): (&Arc<LogicalMemory>, &dyn Fabric),
) {
    let contents: Vec<u8> = (0..PAGE_BYTES)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    home_memory
        .write(page_range(home_memory, PAGE), &contents)
        .unwrap();
    assert_eq!(memory.page_state(PAGE).unwrap(), PageState::Invalid);
    fabric.fetch(
        memory,
        FetchRequest {
            page: PAGE,
            write: false,
            thread_id: 0,
        },
    );
    wait_for("the read to complete", || {
        memory.page_state(PAGE).unwrap() == PageState::Shared
    });
    let mut copy = vec![0u8; PAGE_BYTES];
    memory.read(page_range(memory, PAGE), &mut copy).unwrap();
    assert_eq!(copy, contents);
    assert_eq!(home_memory.page_state(PAGE).unwrap(), PageState::Shared);
    fabric.fetch(
        memory,
        FetchRequest {
            page: PAGE,
            write: true,
            thread_id: 0,
        },
    );
    wait_for("the upgrade to complete", || {
        memory.page_state(PAGE).unwrap() == PageState::Exclusive
    });
    assert_eq!(home_memory.page_state(PAGE).unwrap(), PageState::Invalid);
    let stats = fabric.stats_json();
    assert_eq!(stats["remote_read_faults"], 1);
    assert_eq!(stats["upgrades"], 1);
}

/// A console line sent by `from` reaches `to`'s events, once.
pub(crate) fn console_line_crosses(from: &dyn Fabric, to: &Recorder) {
    let before = to.control.lock().unwrap().len();
    from.send_control(1, Body::ConsoleLine { vp: 0, line: b"hi" });
    wait_for("the console line", || {
        to.control.lock().unwrap().len() > before
    });
    assert_eq!(
        to.control.lock().unwrap()[before..],
        [(from.node(), "hi".to_string())]
    );
}

/// Node `side` takes `page` for reading or writing, as a VP fault would.
fn take<F: Fabric>(side: &Side<F>, page: u64, write: bool) {
    let want = if write {
        PageState::Exclusive
    } else {
        PageState::Shared
    };
    let held = side.memory.page_state(page).unwrap();
    if held == PageState::Exclusive || held == want {
        return;
    }
    side.fabric.fetch(
        &side.memory,
        FetchRequest {
            page,
            write,
            thread_id: 0,
        },
    );
    wait_for("the fetch", || {
        let now = side.memory.page_state(page).unwrap();
        now == want || now == PageState::Exclusive
    });
}

fn stamp(page: u64, writer: u8) -> Vec<u8> {
    (0..PAGE_BYTES)
        .map(|i| (i as u64 ^ page).to_le_bytes()[0] ^ writer)
        .collect()
}

fn write_page<F: Fabric>(side: &Side<F>, page: u64, writer: u8) {
    take(side, page, true);
    let range = page_range(&side.memory, page);
    side.memory.write(range, &stamp(page, writer)).unwrap();
}

fn read_page<F: Fabric>(side: &Side<F>, page: u64) -> Vec<u8> {
    take(side, page, false);
    let mut out = vec![0u8; PAGE_BYTES];
    side.memory
        .read(page_range(&side.memory, page), &mut out)
        .unwrap();
    out
}

/// Node 2 of three (8 MiB each) holds copies of other homes' pages and its own pages are
/// written and shared by the others; then it leaves towards node 0 (`leave`). Every write
/// is still there, read from nodes 0 and 1, and node 2 holds nothing. Returns the pages
/// a node homes.
pub(crate) fn leave_keeps_every_write<F: Fabric>(
    sides: &[Side<F>],
    leave: impl FnOnce(&Side<F>, u16) -> super::LeaveReport,
) -> u64 {
    let per_node = (8 << 20) / PAGE_SIZE;
    let home_of = |node: u64, i: u64| node * per_node + 1024 + i;
    // Node 2 holds copies of other homes' pages: one written (Exclusive), one read.
    write_page(&sides[2], home_of(0, 0), 2);
    write_page(&sides[1], home_of(1, 1), 1);
    assert_eq!(read_page(&sides[2], home_of(1, 1)), stamp(home_of(1, 1), 1));
    // Node 2's own pages: one it wrote itself, one node 0 owns, one node 1 shares.
    write_page(&sides[2], home_of(2, 0), 2);
    write_page(&sides[0], home_of(2, 1), 0);
    write_page(&sides[2], home_of(2, 2), 2);
    assert_eq!(read_page(&sides[1], home_of(2, 2)), stamp(home_of(2, 2), 2));

    let report = leave(&sides[2], 0);
    assert_eq!(report.evicted, 2);
    assert_eq!(report.ranges_handed_over, 1);
    assert_eq!(report.pages_handed_over, per_node);
    for page in [home_of(0, 0), home_of(1, 1), home_of(2, 0), home_of(2, 2)] {
        assert_eq!(
            sides[2].memory.page_state(page).unwrap(),
            PageState::Invalid
        );
    }
    // Every write is still there, read from nodes 0 and 1 (never from node 2).
    assert_eq!(read_page(&sides[1], home_of(0, 0)), stamp(home_of(0, 0), 2));
    assert_eq!(read_page(&sides[1], home_of(2, 0)), stamp(home_of(2, 0), 2));
    assert_eq!(read_page(&sides[1], home_of(2, 1)), stamp(home_of(2, 1), 0));
    assert_eq!(read_page(&sides[0], home_of(2, 2)), stamp(home_of(2, 2), 2));
    write_page(&sides[1], home_of(2, 2), 1);
    assert_eq!(read_page(&sides[0], home_of(2, 2)), stamp(home_of(2, 2), 1));
    per_node
}
