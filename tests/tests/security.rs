//! Authenticated nodes (issue 6): an attacker on the machine sends page-read requests to
//! a running two-node cluster, forged (a well-formed transport packet carrying a valid
//! `vima::wire` ReadReq, with a wrong MAC or none), cut short, and replayed from real
//! traffic it captured with a raw socket (from its own address, and with the real
//! sender's address spoofed). None of it is acted on: no byte comes back to the attacker,
//! every kind of packet is dropped and counted in `--stats-json`, the engines report no
//! refused message, and the workload prints its exact result. The captured traffic also
//! shows that every packet between the nodes carries a MAC under the run's cluster key.
//!
//! Needs root (raw sockets), as the cluster tests with `--netns` do.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dpdk_transport::wire::{self, Header, PacketKind};
use dpdk_transport::{Authenticator, ClusterKey, HmacSha256Auth};
use host_vmm::cluster::config::ClusterConfig;
use socket2::{Domain, Protocol, Socket, Type};
use tests::{cvmm_bin, untag};

/// Long enough that the attack (well under a second) happens while the nodes run.
const ITERATIONS: u32 = 5_000;
const FORGED_BAD_TAG: u64 = 40;
const FORGED_NO_TAG: u64 = 40;
const TRUNCATED: usize = 20;
const REPLAYED_FROM_ATTACKER: usize = 20;
const REPLAYED_SPOOFED: usize = 20;

struct Launcher {
    child: Child,
    stats: PathBuf,
}

impl Launcher {
    fn start(workload: &[&str]) -> Self {
        let stats = std::env::temp_dir().join(format!("cvmm-security-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&stats);
        let child = Command::new(cvmm_bin())
            .args(["run", "--nodes", "2", "--mem-mib", "16", "--stats-json"])
            .arg(&stats)
            .arg("--")
            .args(workload)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cvmm runs");
        Self { child, stats }
    }

    /// The description `cvmm run` wrote for its nodes (and the key it made).
    fn cluster(&mut self) -> ClusterConfig {
        let start = Instant::now();
        loop {
            let path = tests::run_dir(self.child.id())
                .unwrap_or_default()
                .join("cluster.toml");
            if let Ok(config) = ClusterConfig::load(&path) {
                return config;
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "cvmm run ended ({status}) before it wrote {}",
                    path.display()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no cluster description"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the end; returns exit code, console lines, stderr and statistics.
    fn finish(mut self) -> (i32, Vec<String>, String, serde_json::Value) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > Duration::from_secs(600) {
                let _ = self.child.kill();
                panic!("the cluster did not finish within 10 minutes");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(out) = self.child.stdout.as_mut() {
            out.read_to_string(&mut stdout).expect("stdout");
        }
        if let Some(err) = self.child.stderr.as_mut() {
            err.read_to_string(&mut stderr).expect("stderr");
        }
        let stats = std::fs::read_to_string(&self.stats)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        let _ = std::fs::remove_file(&self.stats);
        let lines = stdout.lines().map(|l| untag(l).to_string()).collect();
        (status.code().unwrap_or(-1), lines, stderr, stats)
    }
}

/// One UDP datagram seen by the raw socket: the whole IPv4 packet and where the UDP
/// payload starts.
struct Captured {
    ip_packet: Vec<u8>,
    payload_at: usize,
}

impl Captured {
    fn payload(&self) -> &[u8] {
        &self.ip_packet[self.payload_at..]
    }
}

/// Reads UDP datagrams from `from` to `to` off a raw socket until `want` data packets of
/// the cvmm wire are in (every packet seen is returned, data or not).
fn capture(raw: &Socket, from: u16, to: u16, want: usize) -> Vec<Captured> {
    let mut seen = Vec::new();
    let mut data = 0;
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    while data < want {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "captured only {data} data packets"
        );
        let Ok(len) = (&*raw).read(&mut buf) else {
            continue;
        };
        let packet = &buf[..len];
        if len < 28 || packet[0] >> 4 != 4 || packet[9] != 17 {
            continue;
        }
        let ihl = usize::from(packet[0] & 0x0f) * 4;
        let udp = &packet[ihl..];
        let (src, dst) = (
            u16::from_be_bytes([udp[0], udp[1]]),
            u16::from_be_bytes([udp[2], udp[3]]),
        );
        if src != from || dst != to {
            continue;
        }
        let captured = Captured {
            ip_packet: packet.to_vec(),
            payload_at: ihl + 8,
        };
        if wire::decode(captured.payload())
            .is_ok_and(|p| p.header.kind == PacketKind::Data && p.header.payload_len > 0)
        {
            data += 1;
        }
        seen.push(captured);
    }
    seen
}

/// A transport data packet from node 1 to node 0 carrying a well-formed ReadReq for a
/// page node 0 is home for, with `tag` as its tag.
fn forged_read(header: Header, page: u64, tag: &[u8]) -> Vec<u8> {
    let msg = vima::wire::Message {
        vs_id: 1,
        src: 1,
        dst: 0,
        request_id: 0x5eed_0000 + page,
        body: vima::wire::Body::ReadReq { page },
    };
    let mut body = vec![0u8; vima::wire::MAX_MESSAGE_BYTES];
    let len = vima::wire::encode(&msg, &mut body).expect("a ReadReq encodes");
    body.truncate(len);
    let header = Header {
        kind: PacketKind::Data,
        tag_len: u8::try_from(tag.len()).expect("short tag"),
        payload_len: u16::try_from(body.len()).expect("short body"),
        ..header
    };
    let mut packet = wire::encode_to_vec(&header, &body).expect("encodes");
    let at = packet.len() - tag.len();
    packet[at..].copy_from_slice(tag);
    packet
}

fn transport_of(stats: &serde_json::Value, node: u64) -> serde_json::Value {
    stats["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"].as_u64() == Some(node)))
        .map(|n| n["transport"].clone())
        .unwrap_or_else(|| panic!("no statistics of node {node}: {stats}"))
}

fn counter(value: &serde_json::Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {key} in {value}"))
}

#[test]
fn forged_truncated_and_replayed_page_requests_are_dropped_and_counted() {
    let iterations = ITERATIONS.to_string();
    let mut run = Launcher::start(&["litmus", "mp", &iterations]);
    let cluster = run.cluster();
    let key = cluster::key(&cluster);
    let (node0, node1) = (cluster.nodes[0].address, cluster.nodes[1].address);

    // Capture real traffic from node 1 to node 0.
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
        .expect("a raw socket (the test needs root)");
    raw.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let captured = capture(&raw, node1.port(), node0.port(), 8);
    drop(raw);
    // Every packet between the nodes carries a MAC under this run's key.
    let auth = HmacSha256Auth::for_cluster(&key, 1);
    for c in &captured {
        let packet = wire::decode(c.payload()).expect("the nodes send well-formed packets");
        assert_eq!(usize::from(packet.header.tag_len), HmacSha256Auth::TAG_LEN);
        assert!(
            auth.verify(packet.authenticated, packet.tag),
            "a bad MAC on the wire"
        );
    }
    let data: Vec<&Captured> = captured
        .iter()
        .filter(|c| wire::decode(c.payload()).is_ok_and(|p| p.header.payload_len > 0))
        .collect();
    let template = wire::decode(data[0].payload()).expect("decodes").header;

    let attacker = UdpSocket::bind("127.0.0.1:0").expect("attacker socket");
    let send = |bytes: &[u8]| {
        attacker.send_to(bytes, node0).expect("send");
    };
    // Forged page reads: the live session and next sequence numbers (so only the MAC
    // stands in the way), a wrong tag or none, pages homed at node 0.
    for i in 0..FORGED_BAD_TAG {
        let header = Header {
            seq: template.seq + 1 + u32::try_from(i).expect("few"),
            ..template
        };
        send(&forged_read(
            header,
            16 + i,
            &[0xa5; HmacSha256Auth::TAG_LEN],
        ));
    }
    for i in 0..FORGED_NO_TAG {
        let header = Header {
            seq: template.seq + 1 + u32::try_from(i).expect("few"),
            ..template
        };
        send(&forged_read(header, 16 + i, &[]));
    }
    // Real packets cut short (their tag torn), and replayed whole from another address.
    for i in 0..TRUNCATED {
        let payload = data[i % data.len()].payload();
        send(&payload[..payload.len() - 1 - (i % HmacSha256Auth::TAG_LEN)]);
    }
    for i in 0..REPLAYED_FROM_ATTACKER {
        send(data[i % data.len()].payload());
    }
    // Replayed with node 1's own address: valid MAC, right source, old sequence number.
    let spoofer =
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).expect("a raw IP socket");
    let to: SocketAddr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into();
    for i in 0..REPLAYED_SPOOFED {
        let c = data[i % data.len()];
        spoofer
            .send_to(&c.ip_packet, &to.into())
            .expect("send a spoofed packet");
    }

    // Nothing comes back to the attacker: no page, no ack, no error.
    attacker
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let mut buf = [0u8; 9000];
    match attacker.recv_from(&mut buf) {
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
        Ok((len, from)) => panic!("the attacker received {len} bytes from {from}"),
    }

    let (code, lines, stderr, stats) = run.finish();
    assert_eq!(code, 0, "{lines:?}\n{stderr}");
    let want = format!("litmus mp forbidden = 0 allowed = {ITERATIONS}");
    assert!(lines.contains(&want), "{lines:?}\n{stderr}");

    let t0 = transport_of(&stats, 0);
    let t1 = transport_of(&stats, 1);
    // Each kind must be seen and dropped. Not necessarily every packet: on a loaded
    // machine the kernel may drop part of a burst at a full socket buffer before the
    // transport sees it (an uncounted drop is still a drop); half is far above noise.
    let most = |sent: u64| sent / 2;
    assert!(
        counter(&t0, "auth_failed_dropped") >= most(FORGED_BAD_TAG + FORGED_NO_TAG),
        "{t0}"
    );
    assert!(
        counter(&t0, "malformed_dropped") >= most(TRUNCATED as u64),
        "{t0}"
    );
    assert!(
        counter(&t0, "unknown_source_dropped") >= most(REPLAYED_FROM_ATTACKER as u64),
        "{t0}"
    );
    let from_node1 = t0["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["node"] == 1))
        .expect("node 0's link to node 1");
    assert!(
        counter(from_node1, "duplicates_dropped") >= most(REPLAYED_SPOOFED as u64),
        "{from_node1}"
    );
    // Between the genuine nodes nothing failed authentication.
    assert_eq!(counter(&t1, "auth_failed_dropped"), 0, "{t1}");
    // No engine was handed a message it had to refuse (a forged ReadReq acted on would
    // have sent node 1 a page it never asked for).
    for node in stats["nodes"].as_array().expect("nodes") {
        assert_eq!(node["engine_errors"].as_u64(), Some(0), "{node}");
        assert_eq!(node["bad_messages"].as_u64(), Some(0), "{node}");
    }
}

mod cluster {
    use super::*;

    /// The key `cvmm run` made (the test reads it as the machine's owner, to check the
    /// tags on the wire; the attacker above never uses it).
    pub fn key(config: &ClusterConfig) -> ClusterKey {
        let path = config
            .cluster
            .key_file
            .as_ref()
            .expect("cvmm run names a key file");
        ClusterKey::load(path).expect("the key file is readable by its owner")
    }
}
