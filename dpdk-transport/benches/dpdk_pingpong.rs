//! Ping-pong over net_memif between two processes (feature `dpdk`): `memif_raw` is one
//! frame each way on the bare [`DpdkDatagram`]; `memif_transport` is one message each
//! way through the whole [`ReliableTransport`] (framing, sequencing, acks piggy-backed on
//! the answer, the driver hand-off), the same exchange `udp_pingpong` measures on kernel
//! UDP. 64 B and 4 KiB payloads.
//!
//! EAL initialises once per process, so the echo side is this bench binary started again
//! with `CVMM_DPDK_BENCH_ECHO` set. It echoes raw frames until told to switch, then puts
//! the same endpoint under a transport and echoes messages.
//!
//! `cargo bench -p dpdk-transport --features dpdk --bench dpdk_pingpong`; criterion
//! writes the medians to `target/criterion/<group>/<size>/new/estimates.json`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use dpdk_transport::dpdk::{DpdkAddr, DpdkConfig, DpdkDatagram, DpdkLink};
use dpdk_transport::{
    Datagram, DatagramError, Event, NodeId, ReliableTransport, Transport, TransportConfig,
};

const ECHO_ENV: &str = "CVMM_DPDK_BENCH_ECHO";
const SWITCH: &[u8] = b"switch to the transport";
const STOP: &[u8] = b"stop";
const SIZES: [usize; 2] = [64, 4096];

/// One endpoint shared by the raw phase and the transport phase.
#[derive(Debug)]
struct Shared(Arc<DpdkDatagram>);

impl Datagram for Shared {
    type Addr = DpdkAddr;

    fn local_addr(&self) -> DpdkAddr {
        self.0.local_addr()
    }

    fn send_to(&self, packet: &[u8], to: DpdkAddr) -> Result<(), DatagramError> {
        self.0.send_to(packet, to)
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
        wait: Duration,
    ) -> Result<Option<(usize, DpdkAddr)>, DatagramError> {
        self.0.recv_from(buf, wait)
    }

    fn interrupt(&self) {
        self.0.interrupt();
    }
}

fn endpoint(node: u32, socket: &str) -> (Arc<DpdkDatagram>, DpdkAddr) {
    let link = DpdkLink::Memif {
        socket_prefix: socket.to_string(),
    };
    let (config, peers) = DpdkConfig::for_cluster(&link, NodeId(node), &[NodeId(0), NodeId(1)]);
    let wire = DpdkDatagram::open(&config).expect("open the DPDK endpoint");
    (Arc::new(wire), peers[0].1)
}

fn echo(socket: &str) {
    let (wire, peer) = endpoint(1, socket);
    let mut buf = vec![0u8; dpdk_transport::wire::MAX_DATAGRAM + 1];
    loop {
        match wire.recv_from(&mut buf, Duration::from_secs(60)) {
            Ok(Some((len, from))) if &buf[..len] == SWITCH => {
                assert_eq!(from, peer);
                break;
            }
            Ok(Some((len, from))) => wire.send_to(&buf[..len], from).expect("echo"),
            Ok(None) => return,
            Err(e) => panic!("echo: {e}"),
        }
    }
    let transport = ReliableTransport::new(
        Shared(wire),
        NodeId(1),
        &[(NodeId(0), peer)],
        TransportConfig::default(),
    )
    .expect("echo transport");
    loop {
        match transport.recv(Duration::from_secs(60)) {
            Ok(Some(Event::Message { payload, .. })) if &*payload == STOP => break,
            Ok(Some(Event::Message { from, payload })) => {
                transport.send(from, &payload).expect("echo")
            }
            _ => break,
        }
    }
    let _ = transport.flush(Duration::from_secs(1));
}

fn spawn_echo(socket: &str) -> Child {
    Command::new(std::env::current_exe().expect("bench binary"))
        .env(ECHO_ENV, socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the echo process")
}

fn pingpong(c: &mut Criterion) {
    let socket = format!("cvmm-bench-{}", std::process::id());
    let mut child = spawn_echo(&socket);
    let (wire, peer) = endpoint(0, &socket);
    let mut buf = vec![0u8; dpdk_transport::wire::MAX_DATAGRAM + 1];
    // Frames sent in the moment both ends see the link come up can be lost (the memif
    // client resets its rings when the connection completes): ping until echoed.
    let echoed = (0..1000).any(|_| {
        wire.send_to(b"hello", peer).expect("send");
        matches!(
            wire.recv_from(&mut buf, Duration::from_millis(10)),
            Ok(Some(_))
        )
    });
    assert!(echoed, "the echo process does not answer");
    while let Ok(Some(_)) = wire.recv_from(&mut buf, Duration::from_millis(50)) {}

    let mut group = c.benchmark_group("memif_raw");
    for size in SIZES {
        let frame = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size}B"), |bench| {
            bench.iter(|| {
                wire.send_to(&frame, peer).expect("send");
                let got = wire
                    .recv_from(&mut buf, Duration::from_secs(10))
                    .expect("recv");
                assert_eq!(got.map(|(len, _)| len), Some(size), "echo lost");
            });
        });
    }
    group.finish();
    wire.send_to(SWITCH, peer).expect("switch");
    eprintln!("raw: {:?}", wire.counters());

    let transport = ReliableTransport::new(
        Shared(Arc::clone(&wire)),
        NodeId(0),
        &[(NodeId(1), peer)],
        TransportConfig::default(),
    )
    .expect("transport");
    let mut group = c.benchmark_group("memif_transport");
    for size in SIZES {
        let message = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size}B"), |bench| {
            bench.iter(|| {
                transport.send(NodeId(1), &message).expect("send");
                match transport.recv(Duration::from_secs(10)).expect("recv") {
                    Some(Event::Message { payload, .. }) => assert_eq!(payload.len(), size),
                    other => panic!("unexpected {other:?}"),
                }
            });
        });
    }
    group.finish();
    let stats = transport.stats();
    eprintln!(
        "transport: sent {} retransmits {} srtt_us {:?}",
        stats.peers[0].counters.sent, stats.peers[0].counters.retransmits, stats.peers[0].srtt_us
    );
    transport.send(NodeId(1), STOP).expect("stop");
    let _ = transport.flush(Duration::from_secs(1));
    let _ = child.wait();
}

fn main() {
    if let Ok(socket) = std::env::var(ECHO_ENV) {
        echo(&socket);
        return;
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5))
        .sample_size(50);
    pingpong(&mut c);
    c.final_summary();
}
