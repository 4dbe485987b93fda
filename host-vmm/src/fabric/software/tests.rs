//! Two software fabrics over the in-memory wire (`dpdk_transport::mem`), with their own
//! logical memories and a recording [`FabricEvents`]: a remote read brings the home's
//! bytes, a write takes the page from the home, control messages reach the other node's
//! events, and a bad one is counted, not taken.

use std::sync::Arc;

use dpdk_transport::NodeId;
use vima::wire::{Body, Message, MAX_MESSAGE_BYTES};

use super::SoftwareFabric;
use std::time::Duration;

use vima::layout::PAGE_SIZE;
use vima::wire::PAGE_BYTES;

use super::{LeaveError, LeaveProgress};
use crate::fabric::testing::{
    console_line_crosses, mem_transports, mem_transports_for, node_table, page_range,
    read_then_write_remote_page, two_node_table, wait_for, Recorder, Side,
};
use crate::fabric::Fabric;
use crate::memory::{FetchRequest, LogicalMemory, PageResolver, PageState};

fn two_nodes() -> [Side<SoftwareFabric>; 2] {
    let (table, logical_bytes) = two_node_table();
    let [t0, t1] = mem_transports();
    [(0u32, t0), (1, t1)].map(|(node, transport)| {
        let memory = LogicalMemory::new(logical_bytes).unwrap();
        let events = Arc::new(Recorder::default());
        let fabric = SoftwareFabric::new(
            &table,
            1,
            node,
            &[node],
            memory.clone(),
            transport,
            events.clone(),
        )
        .unwrap();
        Side::started(fabric, memory, events)
    })
}

#[test]
fn a_remote_read_brings_the_homes_bytes_and_a_write_takes_the_page() {
    let [home, reader] = two_nodes();
    read_then_write_remote_page(
        (&home.memory, home.fabric.as_ref()),
        (&reader.memory, reader.fabric.as_ref()),
    );
    let stats = reader.fabric.stats_json();
    assert_eq!(stats["fabric"], "software");
    assert!(home.events.failures.lock().unwrap().is_empty());
}

#[test]
fn control_messages_reach_the_other_nodes_events_and_bad_ones_are_counted() {
    let [zero, one] = two_nodes();
    console_line_crosses(zero.fabric.as_ref(), &one.events);
    // The recorder takes no VpStart: the fabric counts it as bad.
    let bad_before = one.fabric.core.stats.snapshot().bad_messages;
    zero.fabric.broadcast(
        2,
        Body::VpStart {
            vp: 1,
            entry: 0,
            stack_top: 0,
            arg: 0,
        },
    );
    wait_for("the refused message to be counted", || {
        one.fabric.core.stats.snapshot().bad_messages == bad_before + 1
    });
    // A message naming another virtual server is refused before the events see it.
    let mut buf = [0u8; MAX_MESSAGE_BYTES];
    let foreign = Message {
        vs_id: 2,
        src: 0,
        dst: 1,
        request_id: 0,
        body: Body::ConsoleLine { vp: 0, line: b"x" },
    };
    let len = vima::wire::encode(&foreign, &mut buf).unwrap();
    zero.fabric.transport.send(NodeId(1), &buf[..len]).unwrap();
    wait_for("the foreign message to be counted", || {
        one.fabric.core.stats.snapshot().bad_messages == bad_before + 2
    });
    assert_eq!(one.events.control.lock().unwrap().len(), 1);
}

fn nodes(count: u32) -> Vec<Side<SoftwareFabric>> {
    let (table, logical_bytes) = node_table(count);
    mem_transports_for(count)
        .into_iter()
        .zip(0u32..)
        .map(|(transport, node)| {
            let memory = LogicalMemory::new(logical_bytes).unwrap();
            let events = Arc::new(Recorder::default());
            let fabric = SoftwareFabric::new(
                &table,
                1,
                node,
                &[node],
                memory.clone(),
                transport,
                events.clone(),
            )
            .unwrap();
            Side::started(fabric, memory, events)
        })
        .collect()
}

/// Node `side` takes `page` for reading or writing, as a VP fault would.
fn take(side: &Side<SoftwareFabric>, page: u64, write: bool) {
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

fn write_page(side: &Side<SoftwareFabric>, page: u64, writer: u8) {
    take(side, page, true);
    let range = page_range(&side.memory, page);
    side.memory.write(range, &stamp(page, writer)).unwrap();
}

fn read_page(side: &Side<SoftwareFabric>, page: u64) -> Vec<u8> {
    take(side, page, false);
    let mut out = vec![0u8; PAGE_BYTES];
    side.memory
        .read(page_range(&side.memory, page), &mut out)
        .unwrap();
    out
}

#[test]
fn a_node_leaves_and_every_page_and_write_stays() {
    // Three nodes of 8 MiB each: node k homes pages [k * 2048, (k + 1) * 2048).
    let sides = nodes(3);
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

    let mut steps = Vec::new();
    let report = sides[2]
        .fabric
        .leave(0, Duration::from_secs(20), &mut |p| steps.push(p))
        .unwrap();
    assert_eq!(report.evicted, 2);
    assert_eq!(report.ranges_handed_over, 1);
    assert_eq!(report.pages_handed_over, per_node);
    assert!(steps.contains(&LeaveProgress::HandingOver { index: 0, total: 1 }));
    // Node 2 holds nothing any more, and every node names node 0 as the new home.
    for page in [home_of(0, 0), home_of(1, 1), home_of(2, 0), home_of(2, 2)] {
        assert_eq!(
            sides[2].memory.page_state(page).unwrap(),
            PageState::Invalid
        );
    }
    for side in &sides {
        let engine = side.fabric.engine.lock().unwrap();
        let page = nic_firmware::engine::LogicalPage(home_of(2, 0));
        assert_eq!(engine.homes().home_of(page), Some(0));
        assert!(engine.is_idle());
    }
    // Every write is still there, read from nodes 0 and 1 (never from node 2).
    assert_eq!(read_page(&sides[1], home_of(0, 0)), stamp(home_of(0, 0), 2));
    assert_eq!(read_page(&sides[1], home_of(2, 0)), stamp(home_of(2, 0), 2));
    assert_eq!(read_page(&sides[1], home_of(2, 1)), stamp(home_of(2, 1), 0));
    assert_eq!(read_page(&sides[0], home_of(2, 2)), stamp(home_of(2, 2), 2));
    write_page(&sides[1], home_of(2, 2), 1);
    assert_eq!(read_page(&sides[0], home_of(2, 2)), stamp(home_of(2, 2), 1));
    let counters = sides[2].fabric.engine_counters();
    assert_eq!(counters.homes_moved_out, per_node);
    assert_eq!(sides[0].fabric.engine_counters().homes_moved_in, per_node);
    assert_eq!(sides[0].fabric.core.stats.snapshot().engine_errors, 0);
    // Leaving towards itself or a stranger is refused before anything happens.
    assert_eq!(
        sides[1]
            .fabric
            .leave(1, Duration::from_secs(1), &mut |_| {})
            .unwrap_err(),
        LeaveError::BadTarget(1)
    );
    assert_eq!(
        sides[1]
            .fabric
            .leave(7, Duration::from_secs(1), &mut |_| {})
            .unwrap_err(),
        LeaveError::BadTarget(7)
    );
}
