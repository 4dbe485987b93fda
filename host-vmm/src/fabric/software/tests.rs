//! Two software fabrics over the in-memory wire (`dpdk_transport::mem`), with their own
//! logical memories and a recording [`FabricEvents`]: a remote read brings the home's
//! bytes, a write takes the page from the home, control messages reach the other node's
//! events, and a bad one is counted, not taken.

use std::sync::Arc;

use dpdk_transport::NodeId;
use vima::wire::{Body, Message, MAX_MESSAGE_BYTES};

use super::SoftwareFabric;
use crate::fabric::testing::{
    console_line_crosses, mem_transports, read_then_write_remote_page, two_node_table, wait_for,
    Recorder, Side,
};
use crate::fabric::Fabric;
use crate::memory::LogicalMemory;

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
