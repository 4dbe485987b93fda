//! Ping-pong over kernel UDP loopback through the whole reliable transport: one thread
//! sends a message and waits for the echo, another transport's thread echoes it. Each
//! iteration is one round trip (two messages, each acknowledged by the other's payload).
//! `raw_udp` is the baseline: the same exchange on two bare blocking sockets, so the
//! transport's own cost (framing, state, the driver thread hand-off) is the difference.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dpdk_transport::{
    Datagram, Event, NodeId, ReliableTransport, Transport, TransportConfig, UdpDatagram,
};

fn pair() -> (
    ReliableTransport<UdpDatagram>,
    ReliableTransport<UdpDatagram>,
) {
    let a = UdpDatagram::bind("127.0.0.1:0".parse().expect("address")).expect("bind a");
    let b = UdpDatagram::bind("127.0.0.1:0".parse().expect("address")).expect("bind b");
    let (addr_a, addr_b) = (a.local_addr(), b.local_addr());
    let config = TransportConfig::default();
    let a = ReliableTransport::new(a, NodeId(0), &[(NodeId(1), addr_b)], config).expect("a");
    let b = ReliableTransport::new(b, NodeId(1), &[(NodeId(0), addr_a)], config).expect("b");
    (a, b)
}

fn pingpong(c: &mut Criterion) {
    let mut group = c.benchmark_group("udp_pingpong");
    for size in [64usize, 4096] {
        let (a, b) = pair();
        let b = Arc::new(b);
        let stop = Arc::new(AtomicBool::new(false));
        let echo = {
            let (b, stop) = (Arc::clone(&b), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Some(Event::Message { from, payload })) =
                        b.recv(Duration::from_millis(50))
                    {
                        b.send(from, &payload).expect("echo");
                    }
                }
            })
        };
        let message = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size}B"), |bench| {
            bench.iter(|| {
                a.send(NodeId(1), &message).expect("send");
                match a.recv(Duration::from_secs(10)).expect("recv") {
                    Some(Event::Message { payload, .. }) => assert_eq!(payload.len(), size),
                    other => panic!("unexpected {other:?}"),
                }
            });
        });
        stop.store(true, Ordering::Relaxed);
        echo.join().expect("echo thread");
        let stats = a.stats();
        eprintln!(
            "{size}B: sent {} retransmits {} srtt_us {:?}",
            stats.peers[0].counters.sent,
            stats.peers[0].counters.retransmits,
            stats.peers[0].srtt_us
        );
    }
    group.finish();
}

fn raw_udp(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw_udp");
    for size in [64usize, 4096] {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind a");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind b");
        b.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        a.connect(b.local_addr().expect("addr")).expect("connect a");
        b.connect(a.local_addr().expect("addr")).expect("connect b");
        let stop = Arc::new(AtomicBool::new(false));
        let echo = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 8192];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(len) = b.recv(&mut buf) {
                        b.send(&buf[..len]).expect("echo");
                    }
                }
            })
        };
        let message = vec![0x5au8; size];
        let mut buf = vec![0u8; 8192];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size}B"), |bench| {
            bench.iter(|| {
                a.send(&message).expect("send");
                let len = a.recv(&mut buf).expect("recv");
                assert_eq!(len, size);
            });
        });
        stop.store(true, Ordering::Relaxed);
        echo.join().expect("echo thread");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(50);
    targets = pingpong, raw_udp
}
criterion_main!(benches);
