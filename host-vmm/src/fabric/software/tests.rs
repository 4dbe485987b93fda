//! Two software fabrics over the in-memory wire (`dpdk_transport::mem`), with their own
//! logical memories and a recording [`FabricEvents`]: a remote read brings the home's
//! bytes, a write takes the page from the home, control messages reach the other node's
//! events, and a bad one is counted, not taken. Three fabrics: a node leaves and every
//! write stays; a node that left is forgotten and its silence is no failure.

use std::sync::Arc;
use std::time::Duration;

use dpdk_transport::{NodeId, Transport, TransportConfig};
use vima::wire::{Body, Message, MAX_MESSAGE_BYTES};

use super::{LeaveError, LeaveProgress, SoftwareFabric};
use crate::fabric::testing::{
    console_line_crosses, leave_keeps_every_write, mem_transports_for, mem_transports_with,
    node_table, read_then_write_remote_page, wait_for, Recorder, Side,
};
use crate::fabric::Fabric;
use crate::memory::LogicalMemory;

fn two_nodes() -> [Side<SoftwareFabric>; 2] {
    let [a, b] = nodes(2).try_into().ok().unwrap();
    [a, b]
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
    nodes_over(count, mem_transports_for(count))
}

fn nodes_over(count: u32, transports: Vec<Arc<dyn Transport>>) -> Vec<Side<SoftwareFabric>> {
    let (table, logical_bytes) = node_table(count);
    transports
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

#[test]
fn a_node_leaves_and_every_page_and_write_stays() {
    let sides = nodes(3);
    let mut steps = Vec::new();
    let per_node = leave_keeps_every_write(&sides, |leaving, to| {
        leaving
            .fabric
            .leave(to, Duration::from_secs(20), &mut |p| steps.push(p))
            .unwrap()
    });
    assert!(steps.contains(&LeaveProgress::HandingOver { index: 0, total: 1 }));
    // Every node names node 0 as the new home.
    for side in &sides {
        let engine = side.fabric.engine.lock().unwrap();
        let page = nic_firmware::engine::LogicalPage(2 * per_node);
        assert_eq!(engine.homes().home_of(page), Some(0));
        assert!(engine.is_idle());
    }
    assert_eq!(sides[2].fabric.engine_counters().homes_moved_out, per_node);
    assert_eq!(sides[0].fabric.engine_counters().homes_moved_in, per_node);
    assert_eq!(sides[0].fabric.core.stats.snapshot().engine_errors, 0);
    // Leaving towards itself or a stranger is refused before anything happens.
    for to in [1, 7] {
        let refused = sides[1]
            .fabric
            .leave(to, Duration::from_secs(1), &mut |_| {});
        assert_eq!(refused.unwrap_err(), LeaveError::BadTarget(to));
    }
}

#[test]
fn a_node_that_left_is_forgotten_and_its_silence_is_no_failure() {
    // Fast liveness, so the silence shows soon.
    let config = TransportConfig {
        heartbeat_interval_ms: 20,
        dead_after_ms: 200,
        ..TransportConfig::default()
    };
    let sides = nodes_over(3, mem_transports_with(3, config));
    sides[2]
        .fabric
        .leave(0, Duration::from_secs(20), &mut |_| {})
        .unwrap();
    // Node 0 forgets node 2; node 1 does not, and stops as before when node 2 goes quiet.
    sides[0].fabric.forget_node(2);
    sides[2].fabric.stop();
    wait_for("node 1 to see node 2 go", || {
        !sides[1].events.failures.lock().unwrap().is_empty()
    });
    assert!(sides[1].events.failures.lock().unwrap()[0].contains("node 2 stopped responding"));
    let alive = |side: &Side<SoftwareFabric>| {
        let stats = side.fabric.transport_stats();
        stats.peers.iter().any(|p| p.node == NodeId(2) && p.alive)
    };
    wait_for("node 0's transport to see node 2 go", || !alive(&sides[0]));
    // Node 0 went on past the peer-down event: a message sent after it still arrives.
    sides[1].fabric.send_control(
        0,
        Body::ConsoleLine {
            vp: 1,
            line: b"after",
        },
    );
    wait_for("the line at node 0", || {
        sides[0]
            .events
            .control
            .lock()
            .unwrap()
            .iter()
            .any(|(_, l)| l == "after")
    });
    assert!(sides[0].events.failures.lock().unwrap().is_empty());
    // A broadcast from node 0 skips the departed node: one message to node 1 (whose
    // transport still takes it), none to node 2.
    let sent_to = |node: u32| {
        let stats = sides[0].fabric.transport_stats();
        let peer = stats.peers.iter().find(|p| p.node == NodeId(node)).unwrap();
        peer.counters.sent
    };
    let before = [sent_to(1), sent_to(2)];
    sides[0].fabric.broadcast(
        3,
        Body::ConsoleLine {
            vp: 0,
            line: b"all",
        },
    );
    assert_eq!([sent_to(1), sent_to(2)], [before[0] + 1, before[1]]);
}
