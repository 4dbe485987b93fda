//! Two offload fabrics, each with its NIC model (`nic_model::run_nic`) on a thread of this
//! process behind a real vfio-user socket, the NICs joined by the in-memory wire. The
//! remote read-then-write is the software fabric's test: both paths must serve it alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nic_model::{run_nic, NicSpec};
use vfio::client::UserClient;

use super::OffloadFabric;
use crate::fabric::testing::{
    console_line_crosses, leave_keeps_every_write, mem_transports_for, node_table,
    read_then_write_remote_page, Recorder, Side,
};
use crate::fabric::{Fabric, LeaveError};
use crate::memory::LogicalMemory;
use vfio::layout::reg;

fn two_nodes(name: &str) -> [Side<OffloadFabric>; 2] {
    let [a, b] = nodes(name, 2).try_into().ok().unwrap();
    [a, b]
}

/// `count` nodes, each an offload fabric with its NIC model on a thread.
fn nodes(name: &str, count: u32) -> Vec<Side<OffloadFabric>> {
    let (table, logical_bytes) = node_table(count);
    let transports = mem_transports_for(count);
    transports
        .into_iter()
        .zip(0u32..)
        .map(|(transport, node)| {
            let socket = std::env::temp_dir().join(format!(
                "cvmm-test-{name}-{}-{node}.sock",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&socket);
            let spec = NicSpec {
                config_table: table.clone(),
                vs_id: 1,
                node,
            };
            let nic_socket = socket.clone();
            std::thread::spawn(move || run_nic(&spec, &nic_socket, transport));
            let deadline = Instant::now() + Duration::from_secs(10);
            let client = loop {
                match UserClient::connect(&socket, Duration::from_millis(100)) {
                    Ok(client) => break client,
                    Err(e) if Instant::now() > deadline => panic!("NIC {node}: {e}"),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            let memory = LogicalMemory::new(logical_bytes).unwrap();
            let events = Arc::new(Recorder::default());
            let fabric = OffloadFabric::connect(
                Box::new(client),
                &table,
                1,
                node,
                &[node],
                memory.clone(),
                None,
                events.clone(),
            )
            .unwrap();
            Side::started(fabric, memory, events)
        })
        .collect()
}

#[test]
fn a_node_leaves_through_its_nic_and_every_write_stays() {
    let sides = nodes("offload-leave", 3);
    let submissions = |side: &Side<OffloadFabric>| {
        side.fabric.stats_json()["nic"]["submissions"]
            .as_u64()
            .unwrap()
    };
    let mut before = 0;
    leave_keeps_every_write(&sides, |leaving, to| {
        before = submissions(leaving);
        leaving.fabric.leave(to, Duration::from_secs(20)).unwrap()
    });
    // The NIC did the evictions and the handoff: the host submitted one request.
    assert_eq!(submissions(&sides[2]) - before, 1);
    assert_eq!(
        sides[1]
            .fabric
            .leave(1, Duration::from_secs(1))
            .unwrap_err(),
        LeaveError::BadTarget(1)
    );
    for side in &sides {
        assert!(side.events.failures.lock().unwrap().is_empty());
        side.fabric.stop();
    }
}

#[test]
fn a_completion_for_a_vp_that_left_goes_to_the_host_vector() {
    let [home, reader] = two_nodes("offload-steer");
    let present = |side: &Side<OffloadFabric>| side.fabric.nic.bar0().load_u64(reg::VP_PRESENT);
    // Node 1's VP is VP 1; an unregistered thread faults as the node's first VP.
    assert_eq!(present(&reader), 1 << 1);
    reader.fabric.set_vp_present(1, false);
    assert_eq!(present(&reader), 0);
    read_then_write_remote_page(
        (&home.memory, home.fabric.as_ref()),
        (&reader.memory, reader.fabric.as_ref()),
    );
    // Both completions (the read, the upgrade) were steered to the host vector, and
    // still completed.
    assert_eq!(reader.fabric.stats_json()["nic"]["resteered"], 2);
    reader.fabric.set_vp_present(1, true);
    assert_eq!(present(&reader), 1 << 1);
    for side in [&home, &reader] {
        side.fabric.stop();
    }
}

#[test]
fn a_remote_read_through_the_nics_brings_the_homes_bytes_and_a_write_takes_the_page() {
    let [home, reader] = two_nodes("offload-rw");
    read_then_write_remote_page(
        (&home.memory, home.fabric.as_ref()),
        (&reader.memory, reader.fabric.as_ref()),
    );
    let stats = reader.fabric.stats_json();
    assert_eq!(stats["fabric"], "offload");
    assert!(stats["nic"]["submissions"].as_u64().unwrap() >= 2);
    // A control message goes out through one NIC and in through the other.
    console_line_crosses(home.fabric.as_ref(), &reader.events);
    for side in [&home, &reader] {
        assert!(side.events.failures.lock().unwrap().is_empty());
        side.fabric.stop();
    }
}
