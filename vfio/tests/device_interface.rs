//! The device interface end to end in one process: a vfio-user device (the NIC model's
//! side) on a thread, the host's client on the test thread, talking over a real socket
//! with real shared memory and eventfds.
#![allow(clippy::cast_possible_truncation)] // test values are small

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vfio::client::{NicBackend, UserClient};
use vfio::config_space::MSIX_CAP_OFFSET;
use vfio::device::{DeviceServer, DeviceState};
use vfio::layout::{self, reg, BUFFER_BYTES, DEVICE_ID, MSIX_VECTORS, VENDOR_ID};
use vfio::region::{create_memfd, MappedRegion, SharedMemory};
use vfio::ring::{
    Completion, CompletionConsumer, CompletionProducer, PageAccess, Submission, SubmissionConsumer,
    SubmissionProducer,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vfio-test-{}-{name}.sock", std::process::id()))
}

struct Rig {
    state: Arc<DeviceState>,
    client: UserClient,
    _server: std::thread::JoinHandle<()>,
    path: PathBuf,
}

impl Rig {
    fn new(name: &str, node: u32) -> Self {
        let path = socket_path(name);
        let _ = std::fs::remove_file(&path);
        let state = DeviceState::new(node).unwrap();
        let server = DeviceServer::listen(&path, state.clone()).unwrap();
        let handle = std::thread::spawn(move || {
            let _ = server.serve();
        });
        let client = UserClient::connect(&path, Duration::from_secs(5)).unwrap();
        Rig {
            state,
            client,
            _server: handle,
            path,
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn config_space_carries_our_ids_and_msix() {
    let rig = Rig::new("config", 3);
    let mut ids = [0u8; 4];
    rig.client.config_read(0, &mut ids).unwrap();
    assert_eq!(u16::from_le_bytes([ids[0], ids[1]]), VENDOR_ID);
    assert_eq!(u16::from_le_bytes([ids[2], ids[3]]), DEVICE_ID);
    let mut cap = [0u8; 4];
    rig.client
        .config_read(MSIX_CAP_OFFSET as u64, &mut cap)
        .unwrap();
    assert_eq!(cap[0], 0x11);
    assert_eq!(
        u32::from(u16::from_le_bytes([cap[2], cap[3]]) & 0x7ff) + 1,
        MSIX_VECTORS
    );
    // BAR sizing through the trapped path.
    rig.client
        .config_write(0x10, &u32::MAX.to_le_bytes())
        .unwrap();
    let mut bar = [0u8; 4];
    rig.client.config_read(0x10, &mut bar).unwrap();
    assert_eq!(
        u64::from(!(u32::from_le_bytes(bar) & !0xf)) + 1,
        layout::BAR0_SIZE
    );
    assert!(rig.client.responds());
}

#[test]
fn bar0_is_shared_memory_and_trapped_access_agrees() {
    let rig = Rig::new("bar", 5);
    let bar = rig.client.bar0();
    assert_eq!(bar.load_u32(reg::NODE), 5);
    assert_eq!(bar.load_u32(reg::MAGIC), layout::MAGIC);
    // The host writes through its mapping; the device sees it in its own.
    bar.store_u64(reg::VP_PRESENT, 0xa5);
    assert_eq!(rig.state.bar0().load_u64(reg::VP_PRESENT), 0xa5);
    // The device writes; the host reads it both directly and through a trapped read.
    rig.state.bar0().store_u64(reg::HEARTBEAT, 77);
    assert_eq!(bar.load_u64(reg::HEARTBEAT), 77);
    let mut word = [0u8; 8];
    rig.client.bar_read(reg::HEARTBEAT, &mut word).unwrap();
    assert_eq!(u64::from_le_bytes(word), 77);
    // A trapped write lands in the shared memory.
    rig.client
        .bar_write(reg::CONTROL, &layout::control::ENABLE.to_le_bytes())
        .unwrap();
    assert_eq!(
        rig.state.bar0().load_u32(reg::CONTROL),
        layout::control::ENABLE
    );
    // An unaligned trapped access is refused (reads as all ones, as a master abort), and
    // the connection survives it.
    let mut odd = [0u8; 4];
    rig.client.bar_read(3, &mut odd).unwrap();
    assert_eq!(odd, [0xff; 4]);
    rig.client.bar_write(5, &[1, 2, 3, 4]).unwrap();
    assert_eq!(rig.state.bar0().load_u64(0), bar.load_u64(0));
    assert!(rig.client.responds());
}

#[test]
fn rings_carry_descriptors_and_payloads_both_ways() {
    let rig = Rig::new("rings", 0);
    let host = rig.client.bar0();
    let nic = rig.state.bar0().as_ref();
    let mut sq = SubmissionProducer::new(host);
    let mut sq_nic = SubmissionConsumer::new(nic);
    let line = b"a control message of some bytes, longer than a header".to_vec();
    sq.push(
        host,
        &Submission::Fetch {
            page: 0x345,
            write: true,
            vp: 2,
        },
        &[],
    )
    .unwrap();
    sq.push(
        host,
        &Submission::SendControl {
            len: line.len() as u32,
        },
        &line,
    )
    .unwrap();
    let mut buf = vec![0u8; BUFFER_BYTES as usize];
    assert_eq!(
        sq_nic.pop(nic, &mut buf).unwrap(),
        Some((
            Submission::Fetch {
                page: 0x345,
                write: true,
                vp: 2
            },
            0
        ))
    );
    let (sub, len) = sq_nic.pop(nic, &mut buf).unwrap().unwrap();
    assert_eq!(
        sub,
        Submission::SendControl {
            len: line.len() as u32
        }
    );
    assert_eq!(&buf[..len], &line[..]);
    assert!(sq.drained(host));

    let mut cq_nic = CompletionProducer::new(nic);
    let mut cq = CompletionConsumer::new(host);
    let done = Completion::FaultDone {
        page: 0x345,
        state: PageAccess::Exclusive,
        vp: 2,
    };
    let seq = cq_nic.push(nic, &done, &[]).unwrap();
    assert_eq!(cq_nic.applied(nic), seq);
    assert_eq!(cq.peek(host, &mut buf).unwrap(), Some((done, 0)));
    cq.advance(host);
    assert_eq!(cq_nic.applied(nic), seq + 1);
}

#[test]
fn an_interrupt_arrives_on_the_vectors_eventfd() {
    let rig = Rig::new("irq", 0);
    let events: Vec<EventFd> = (0..3)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let fds: Vec<i32> = events.iter().map(|e| e.as_raw_fd()).collect();
    rig.client.enable_vectors(&fds).unwrap();
    assert_eq!(rig.state.vectors_set(), 3);
    assert!(events[2].read().is_err(), "no interrupt yet");
    assert!(rig.state.raise(2));
    assert!(rig.state.raise(2));
    assert_eq!(events[2].read().unwrap(), 2);
    assert!(events[0].read().is_err() && events[1].read().is_err());
    assert!(!rig.state.raise(40), "vector 40 has no eventfd");
}

#[test]
fn the_doorbell_eventfd_reaches_the_device() {
    let rig = Rig::new("doorbell", 0);
    assert!(rig.state.doorbell().is_none());
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    rig.client.set_doorbell(kick.as_raw_fd()).unwrap();
    let mut seen = rig.state.doorbell().expect("set");
    kick.write(3).unwrap();
    let mut count = [0u8; 8];
    std::io::Read::read_exact(&mut seen, &mut count).unwrap();
    assert_eq!(u64::from_le_bytes(count), 3);
}

#[test]
fn the_nic_reads_what_the_host_wrote_in_the_mapped_memfd() {
    let rig = Rig::new("dma", 0);
    let memfd = create_memfd(c"guest", 64 << 10).unwrap();
    let host_view = MappedRegion::map(memfd.as_fd(), 0, 64 << 10).unwrap();
    let page: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    assert!(host_view.write_bytes(3 * 4096, &page));
    rig.client.map_dma(0, 64 << 10, memfd.as_fd()).unwrap();
    let (region, offset) = rig.state.dma(3 * 4096, 4096).expect("mapped");
    let mut seen = vec![0u8; 4096];
    assert_eq!(offset, 3 * 4096);
    assert!(region.read_bytes(offset, &mut seen));
    assert_eq!(seen, page);
    // And the host sees what the NIC writes (a page arriving from the wire).
    assert!(region.write_bytes(5 * 4096, &[9u8; 4096]));
    let mut back = vec![0u8; 4096];
    assert!(host_view.read_bytes(5 * 4096, &mut back));
    assert!(back.iter().all(|b| *b == 9));
    assert!(
        rig.state.dma(60 << 10, 8192).is_none(),
        "beyond the mapping"
    );
    rig.client.unmap_dma(0, 64 << 10).unwrap();
    assert!(!rig.state.has_dma());
}

#[test]
fn the_device_notices_when_the_host_goes_away() {
    let path = socket_path("hangup");
    let _ = std::fs::remove_file(&path);
    let state = DeviceState::new(0).unwrap();
    let server = DeviceServer::listen(&path, state.clone()).unwrap();
    let handle = std::thread::spawn(move || server.serve());
    let client = UserClient::connect(&path, Duration::from_secs(5)).unwrap();
    assert!(!state.disconnected());
    drop(client);
    assert!(handle.join().unwrap().is_ok());
    assert!(state.disconnected());
    assert!(!path.exists(), "the socket is removed with the server");
}
