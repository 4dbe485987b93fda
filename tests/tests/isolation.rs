//! Two isolated virtual servers on one cluster at once (issue 6, `cvmm run --servers 2`):
//! both run at the same time and print their own exact results; each has its own key,
//! its own wire id and its own processes; and packets of one server, real (captured and
//! replayed) or forged by a node of that server with its own key, are dropped and counted
//! by the other and never reach its engine.
//!
//! The guest side of isolation (a guest names memory only below its own logical memory,
//! every ViMA call refuses other addresses with `BadAddress`, and a page reads as zeros
//! the first time its server touches it) is covered by `vima::call`'s range tests and
//! host-vmm's `memory::logical` tests; see docs/design.md.
//!
//! Needs root (raw sockets), as the security test does.

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dpdk_transport::wire::{self, Header, PacketKind};
use dpdk_transport::{Authenticator, ClusterKey, HmacSha256Auth};
use host_vmm::cluster::config::ClusterConfig;
use socket2::{Domain, Protocol, Socket, Type};
use tests::cvmm_bin;

const ITERATIONS_1: u32 = 5_000;
const ITERATIONS_2: u32 = 4_000;
const REPLAYED: u64 = 20;
const FORGED_OWN_ID: u64 = 20;
const FORGED_OTHER_ID: u64 = 20;

/// The child launchers of `parent` (`cvmm run --vs-id K`), by server id.
fn server_launchers(parent: u32) -> Vec<(u16, u32)> {
    let out = Command::new("ps")
        .args(["-o", "pid=,args=", "--ppid", &parent.to_string()])
        .output()
        .expect("ps runs");
    let mut found: Vec<(u16, u32)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let pid: u32 = words.next()?.parse().ok()?;
            let args: Vec<&str> = words.collect();
            let at = args.iter().position(|w| *w == "--vs-id")?;
            Some((args.get(at + 1)?.parse().ok()?, pid))
        })
        .collect();
    found.sort_unstable();
    found
}

fn description(launcher: u32) -> Option<ClusterConfig> {
    let path = tests::run_dir(launcher)?.join("cluster.toml");
    ClusterConfig::load(&path).ok()
}

fn key(config: &ClusterConfig) -> ClusterKey {
    ClusterKey::load(config.cluster.key_file.as_ref().expect("a key file")).expect("key")
}

/// One data packet of the cvmm wire sent from port `from` to port `to`, read off a raw
/// socket (its UDP payload).
fn capture_data(from: u16, to: u16) -> Vec<u8> {
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
        .expect("a raw socket (the test needs root)");
    raw.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no packet captured"
        );
        let Ok(len) = (&raw).read(&mut buf) else {
            continue;
        };
        let packet = &buf[..len];
        if len < 28 || packet[0] >> 4 != 4 || packet[9] != 17 {
            continue;
        }
        let ihl = usize::from(packet[0] & 0x0f) * 4;
        let udp = &packet[ihl..];
        if u16::from_be_bytes([udp[0], udp[1]]) != from
            || u16::from_be_bytes([udp[2], udp[3]]) != to
        {
            continue;
        }
        let payload = &udp[8..];
        if wire::decode(payload).is_ok_and(|p| p.header.kind == PacketKind::Data) {
            return payload.to_vec();
        }
    }
}

/// A data packet carrying a ReadReq of `vs_id` from node 1 to node 0 of transport cluster
/// `cluster`, signed with `auth`.
fn forged(cluster: u32, vs_id: u16, auth: &dyn Authenticator, page: u64) -> Vec<u8> {
    let msg = vima::wire::Message {
        vs_id,
        src: 1,
        dst: 0,
        request_id: page,
        body: vima::wire::Body::ReadReq { page },
    };
    let mut body = vec![0u8; vima::wire::MAX_MESSAGE_BYTES];
    let len = vima::wire::encode(&msg, &mut body).expect("encodes");
    body.truncate(len);
    let header = Header {
        kind: PacketKind::Data,
        flags: 0,
        tag_len: u8::try_from(auth.tag_len()).expect("short"),
        cluster,
        src: 1,
        dst: 0,
        session: 0x1234_5678,
        seq: 0,
        ack: 0,
        sack: 0,
        payload_len: u16::try_from(body.len()).expect("short"),
        echo: 0,
    };
    let mut packet = wire::encode_to_vec(&header, &body).expect("encodes");
    let at = packet.len() - auth.tag_len();
    let (signed, tag) = packet.split_at_mut(at);
    auth.sign(signed, tag);
    packet
}

fn node_stats(stats: &serde_json::Value, vs_id: u64, node: u64) -> serde_json::Value {
    stats["nodes"]
        .as_array()
        .and_then(|nodes| {
            nodes
                .iter()
                .find(|n| n["vs_id"].as_u64() == Some(vs_id) && n["id"].as_u64() == Some(node))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no node {node} of server {vs_id} in {stats}"))
}

#[test]
fn two_virtual_servers_run_at_once_and_refuse_each_others_packets() {
    let stats_path: PathBuf =
        std::env::temp_dir().join(format!("cvmm-isolation-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&stats_path);
    let second = format!("litmus mp {ITERATIONS_2}");
    let mut launcher: Child = Command::new(cvmm_bin())
        .args(["run", "--servers", "2", "--nodes", "2", "--mem-mib", "16"])
        .args(["--server-workload", &second, "--stats-json"])
        .arg(&stats_path)
        .args(["--", "litmus", "mp", &ITERATIONS_1.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cvmm runs");

    // Both servers' descriptions, as their launchers wrote them.
    let start = Instant::now();
    let (one, two) = loop {
        let launchers = server_launchers(launcher.id());
        if let [(1, a), (2, b)] = launchers[..] {
            if let (Some(one), Some(two)) = (description(a), description(b)) {
                break (one, two);
            }
        }
        assert!(
            launcher.try_wait().expect("wait").is_none(),
            "cvmm run ended early"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "servers did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Each server has its own wire id, key and ports.
    assert_eq!((one.server.vs_id, two.server.vs_id), (1, 2));
    let (key1, key2) = (key(&one), key(&two));
    assert_ne!(key1, key2, "the servers share a key");
    for a in &one.nodes {
        assert!(two.nodes.iter().all(|b| a.address != b.address));
    }
    let target: SocketAddr = two.nodes[0].address;

    // Server 1's real traffic, replayed at server 2.
    let captured = capture_data(one.nodes[1].address.port(), one.nodes[0].address.port());
    let attacker = UdpSocket::bind("127.0.0.1:0").expect("socket");
    for _ in 0..REPLAYED {
        attacker.send_to(&captured, target).expect("send");
    }
    // A node of server 1 forging with everything it has: its key under its own id, and
    // its key under server 2's id.
    let own = HmacSha256Auth::for_cluster(&key1, 1);
    for page in 0..FORGED_OWN_ID {
        attacker
            .send_to(&forged(1, 1, &own, 16 + page), target)
            .expect("send");
    }
    let as_two = HmacSha256Auth::for_cluster(&key1, 2);
    for page in 0..FORGED_OTHER_ID {
        attacker
            .send_to(&forged(2, 2, &as_two, 16 + page), target)
            .expect("send");
    }
    // What a node of server 2 would sign is different: the keys differ, not just the ids.
    let mut tag = [0u8; HmacSha256Auth::TAG_LEN];
    HmacSha256Auth::for_cluster(&key2, 2).sign(b"probe", &mut tag);
    assert!(!as_two.verify(b"probe", &tag));
    attacker
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .expect("timeout");
    let mut buf = [0u8; 9000];
    assert!(attacker.recv_from(&mut buf).is_err(), "server 2 answered");

    let start = Instant::now();
    let status = loop {
        if let Some(status) = launcher.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(600) {
            let _ = launcher.kill();
            panic!("the servers did not finish within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(out) = launcher.stdout.as_mut() {
        out.read_to_string(&mut stdout).expect("stdout");
    }
    if let Some(err) = launcher.stderr.as_mut() {
        err.read_to_string(&mut stderr).expect("stderr");
    }
    assert!(status.success(), "{stdout}\n{stderr}");
    // Each server printed its own exact result, and only its own.
    let want =
        |vs: u16, iters: u32| format!("[vs{vs}] [n0] litmus mp forbidden = 0 allowed = {iters}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&want(1, ITERATIONS_1).as_str()), "{stdout}");
    assert!(lines.contains(&want(2, ITERATIONS_2).as_str()), "{stdout}");
    assert!(!lines.contains(&want(1, ITERATIONS_2).as_str()), "{stdout}");
    assert!(!lines.contains(&want(2, ITERATIONS_1).as_str()), "{stdout}");

    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_path).expect("statistics written"))
            .expect("JSON");
    let _ = std::fs::remove_file(&stats_path);
    for vs in [1u64, 2] {
        for node in [0u64, 1] {
            let n = node_stats(&stats, vs, node);
            assert_eq!(n["transport"]["cluster_id"].as_u64(), Some(vs), "{n}");
            assert_eq!(n["engine_errors"].as_u64(), Some(0), "{n}");
            assert_eq!(n["bad_messages"].as_u64(), Some(0), "{n}");
        }
    }
    let victim = node_stats(&stats, 2, 0);
    let transport = &victim["transport"];
    assert!(
        transport["foreign_cluster_dropped"].as_u64().unwrap_or(0) >= REPLAYED + FORGED_OWN_ID,
        "{transport}"
    );
    assert!(
        transport["auth_failed_dropped"].as_u64().unwrap_or(0) >= FORGED_OTHER_ID,
        "{transport}"
    );
    // Server 1 saw none of it.
    let bystander = node_stats(&stats, 1, 0);
    assert_eq!(
        bystander["transport"]["auth_failed_dropped"].as_u64(),
        Some(0),
        "{bystander}"
    );
}
