//! The DPDK backend between processes over net_memif (feature `dpdk`).
//!
//! DPDK's EAL initialises once per process, so each endpoint is a child process: the
//! test re-runs this test binary on the ignored `endpoint` test with the role in the
//! environment, and the parent checks the children's exit status and what they report.
//! No test measures time: waits are bounded only so that a broken backend fails instead
//! of hanging.
#![cfg(feature = "dpdk")]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dpdk_transport::dpdk::{DpdkAddr, DpdkConfig, DpdkDatagram, DpdkError, DpdkLink, MacAddr};
use dpdk_transport::{
    Datagram, Event, FaultConfig, LossyDatagram, NodeId, ReliableTransport, Transport,
    TransportConfig,
};

/// How long a child gets before the parent kills it.
const CHILD_PATIENCE: Duration = Duration::from_secs(120);
/// How long a child waits for something that should come quickly.
const PATIENCE: Duration = Duration::from_secs(30);

const ROLE: &str = "CVMM_DPDK_TEST_ROLE";
const CASE: &str = "CVMM_DPDK_TEST_CASE";
const SOCKET: &str = "CVMM_DPDK_TEST_SOCKET";

// ---- the parent side ----

fn spawn_endpoint(case: &str, node: u32, socket: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "endpoint",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, node.to_string())
        .env(CASE, case)
        .env(SOCKET, socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn an endpoint process")
}

fn wait_or_kill(mut child: Child) -> Output {
    let deadline = Instant::now() + CHILD_PATIENCE;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait for the child").is_some() {
            return child.wait_with_output().expect("child output");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("child output");
    panic!(
        "endpoint did not finish within {CHILD_PATIENCE:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the EAL of process `pid` would have its runtime directory.
fn runtime_dirs(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("dpdk/cvmm-{pid}");
    let mut dirs = vec![
        PathBuf::from("/var/run").join(&prefix),
        PathBuf::from("/tmp").join(&prefix),
    ];
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR") {
        dirs.push(PathBuf::from(xdg).join(&prefix));
    }
    dirs
}

/// Runs a two-node case and returns what each endpoint printed on stderr.
fn run_pair(case: &str) -> [String; 2] {
    let socket = format!("cvmm-test-{}-{case}", std::process::id());
    let children = [
        spawn_endpoint(case, 0, &socket),
        spawn_endpoint(case, 1, &socket),
    ];
    let pids = children.each_ref().map(Child::id);
    let [a, b] = children.map(wait_or_kill);
    let mut logs = [String::new(), String::new()];
    for (node, out) in [a, b].iter().enumerate() {
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "node {node} failed:\n{log}");
        // The child's harness prints its result on stdout; make sure it really ran.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("1 passed"),
            "node {node} ran nothing:\n{stdout}\n{log}"
        );
        eprintln!("--- node {node} ---\n{log}");
        logs[node] = log;
    }
    for pid in pids {
        for dir in runtime_dirs(pid) {
            assert!(!dir.exists(), "{} was left behind", dir.display());
        }
    }
    logs
}

fn report<'a>(log: &'a str, key: &str) -> &'a str {
    log.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{log}"))
}

#[test]
fn memif_endpoints_exchange_datagrams_both_ways() {
    let logs = run_pair("datagram");
    for (node, log) in logs.iter().enumerate() {
        assert_eq!(
            report(log, "received="),
            DATAGRAMS.to_string(),
            "node {node}"
        );
        assert_eq!(report(log, "second_open="), "EalAlreadyUsed", "node {node}");
    }
}

#[test]
fn reliable_transport_over_lossy_memif_delivers_5000_each_way_exactly_once_in_order() {
    let logs = run_pair("reliable");
    for (node, log) in logs.iter().enumerate() {
        assert_eq!(
            report(log, "in_order="),
            MESSAGES.to_string(),
            "node {node}"
        );
        // The loss really happened and was really repaired.
        let dropped: u64 = report(log, "injected_drops=").parse().unwrap();
        let retransmits: u64 = report(log, "retransmits=").parse().unwrap();
        assert!(dropped > 0 && retransmits > 0, "node {node}:\n{log}");
    }
}

// ---- the child side ----

/// The child process body; does nothing unless started by a test above.
#[test]
#[ignore = "runs only as a child process of the memif tests"]
fn endpoint() {
    let (Ok(node), Ok(case), Ok(socket)) = (
        std::env::var(ROLE),
        std::env::var(CASE),
        std::env::var(SOCKET),
    ) else {
        return;
    };
    let node = NodeId(node.parse().expect("node id"));
    let peer = NodeId(1 - node.0);
    let link = DpdkLink::Memif {
        socket_prefix: socket,
    };
    let (config, peers) = DpdkConfig::for_cluster(&link, node, &[NodeId(0), NodeId(1)]);
    assert_eq!(peers.len(), 1);
    let wire = DpdkDatagram::open(&config).expect("open the DPDK endpoint");
    assert!(wire.wait_links_up(PATIENCE), "memif link did not come up");
    match case.as_str() {
        "datagram" => datagrams(&wire, &config, peers[0].1),
        "reliable" => reliable(wire, node, peer, peers[0].1),
        other => panic!("unknown case {other}"),
    }
}

const DATAGRAMS: u32 = 500;
const HELLO: u8 = 1;
const DATA: u8 = 2;

/// Datagram `index` from `node`: a kind byte, the index, the node, then filler that
/// depends on all three; lengths run from 2 bytes to the largest packet.
fn datagram(node: NodeId, index: u32) -> Vec<u8> {
    let len = match index % 5 {
        0 => dpdk_transport::wire::MAX_DATAGRAM,
        1 => 9,
        _ => 9 + (index as usize * 37) % 3000,
    };
    let mut d = vec![DATA];
    d.extend_from_slice(&index.to_le_bytes());
    d.extend_from_slice(&node.0.to_le_bytes());
    let salt = index.wrapping_mul(7) ^ node.0;
    d.extend(
        (d.len()..len)
            .map(|i| (i.to_le_bytes()[0] ^ salt.to_le_bytes()[0]).wrapping_add(i.to_le_bytes()[1])),
    );
    d
}

fn datagrams(wire: &DpdkDatagram, config: &DpdkConfig, to: DpdkAddr) {
    let me = NodeId(if config.mac == MacAddr::for_node(NodeId(0)) {
        0
    } else {
        1
    });
    let from = NodeId(1 - me.0);
    assert_eq!(to.mac, MacAddr::for_node(from));
    let mut buf = vec![0u8; dpdk_transport::wire::MAX_DATAGRAM + 1];
    // Handshake: HELLO(seen) until the peer's HELLO says it has seen ours, so that both
    // directions are known to work before the lock-step exchange (which has no resend).
    let deadline = Instant::now() + PATIENCE;
    let (mut seen_peer, mut peer_saw_us) = (false, false);
    while !(seen_peer && peer_saw_us) {
        assert!(Instant::now() < deadline, "handshake timed out");
        wire.send_to(&[HELLO, u8::from(seen_peer)], to)
            .expect("send hello");
        if let Some((len, src)) = wire
            .recv_from(&mut buf, Duration::from_millis(5))
            .expect("recv")
        {
            assert_eq!(src, to, "a frame from somewhere else");
            if buf[0] == HELLO && len == 2 {
                seen_peer = true;
                peer_saw_us |= buf[1] == 1;
            }
        }
    }
    // One more so the peer, which may still wait for our "seen", gets it.
    wire.send_to(&[HELLO, 1], to).expect("send hello");
    // Lock step: send i, then wait for the peer's i. Both directions carry every size.
    let mut received = 0;
    for index in 0..DATAGRAMS {
        wire.send_to(&datagram(me, index), to).expect("send");
        loop {
            let got = wire.recv_from(&mut buf, PATIENCE).expect("recv");
            let (len, src) = got.unwrap_or_else(|| panic!("datagram {index} did not come"));
            assert_eq!(src, to);
            if buf[0] == HELLO {
                continue;
            }
            let want = datagram(from, index);
            assert_eq!(len, want.len(), "length of datagram {index}");
            assert_eq!(&buf[..len], &want[..], "datagram {index}");
            received += 1;
            break;
        }
    }
    eprintln!("received={received}");
    // The peer may still wait for our last datagram's turn: give it time to read it
    // before the port closes (which discards the ring).
    thread::sleep(Duration::from_millis(300));
    let second = DpdkDatagram::open(config);
    let second = match second {
        Err(DpdkError::EalAlreadyUsed) => "EalAlreadyUsed".to_string(),
        other => format!("{other:?}"),
    };
    eprintln!("second_open={second}");
    let counters = wire.counters();
    eprintln!("counters={counters:?} ports={:?}", wire.ports());
}

const MESSAGES: u64 = 5_000;

/// Message `index` from `sender`: as in the UDP loopback tests, every seventh page-sized.
fn message(sender: u32, index: u64) -> Vec<u8> {
    let len = if index.is_multiple_of(7) {
        4096 + 64
    } else {
        16 + (index % 200) as usize
    };
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&index.to_le_bytes());
    m.extend_from_slice(&sender.to_le_bytes());
    let seed = index.wrapping_mul(31).wrapping_add(u64::from(sender));
    m.extend((0..len - 12).map(|i| (seed.wrapping_add(i as u64) % 251) as u8));
    m
}

fn reliable(wire: DpdkDatagram, me: NodeId, peer: NodeId, peer_addr: DpdkAddr) {
    let lossy = LossyDatagram::new(wire, FaultConfig::wire_loss(0.05, 17 + u64::from(me.0)));
    let transport = Arc::new(
        ReliableTransport::new(lossy, me, &[(peer, peer_addr)], TransportConfig::default())
            .expect("transport"),
    );
    let sender = {
        let t = Arc::clone(&transport);
        thread::spawn(move || {
            for index in 0..MESSAGES {
                t.send(peer, &message(me.0, index)).expect("send");
            }
        })
    };
    let mut in_order = 0;
    for index in 0..MESSAGES {
        match transport.recv(PATIENCE) {
            Ok(Some(Event::Message { from, payload })) => {
                assert_eq!(from, peer);
                assert_eq!(&*payload, &message(peer.0, index)[..], "message {index}");
                in_order += 1;
            }
            other => panic!("waiting for message {index}: {other:?}"),
        }
    }
    sender.join().expect("sender");
    assert!(
        transport.flush(PATIENCE),
        "our messages were not all acknowledged"
    );
    // Done: tell the peer, wait for its word, and linger so it can finish likewise.
    transport.send(peer, b"done").expect("send done");
    match transport.recv(PATIENCE) {
        Ok(Some(Event::Message { payload, .. })) => assert_eq!(&*payload, b"done"),
        other => panic!("expected the peer's done, got {other:?}"),
    }
    let _ = transport.flush(PATIENCE);
    thread::sleep(Duration::from_millis(500));
    let stats = transport.stats();
    let p = &stats.peers[0];
    eprintln!("in_order={in_order}");
    eprintln!(
        "injected_drops={}",
        p.injected.dropped_tx + p.injected.dropped_rx
    );
    eprintln!("retransmits={}", p.counters.retransmits);
    eprintln!("stats={}", serde_json::to_string(&stats).expect("json"));
    transport.shutdown();
}
