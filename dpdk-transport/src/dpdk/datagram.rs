//! [`DpdkDatagram`]: the [`Datagram`] backend over DPDK ports.
//!
//! Sending copies the packet behind an Ethernet header into one mbuf and hands it to the
//! port's TX queue (under the port's lock: senders are any threads). Receiving polls the
//! ports round robin, keeps the rest of a burst for the next call, and copies each frame
//! straight from its mbuf into the caller's buffer. Frames that are not cvmm frames for
//! this node are dropped and counted. The receive loop busy-polls (yielding the core to
//! runnable threads between polls) while traffic is recent and then sleeps in growing
//! steps ([`PollConfig`]); a sleeper is woken early by
//! [`Datagram::interrupt`] through an eventfd, which is only written when someone sleeps
//! (an atomic flag is enough for a spinning receiver).

use std::collections::VecDeque;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{debug, warn};
use serde::Serialize;

use super::config::{DpdkAddr, DpdkConfig, PollConfig, FRAME_ROOM};
use super::eal::Eal;
use super::frame::{EthHeader, MacAddr, ETH_HEADER_LEN};
use super::sys::{self, Mbuf, Pool, Port, PortCounters, PortInfo};
use super::DpdkError;
use crate::datagram::{is_readable, Datagram, DatagramError};

/// First sleep after the spin phase; doubles up to `PollConfig::max_sleep`.
const FIRST_SLEEP: Duration = Duration::from_micros(10);
/// How often ports that failed to start or whose link is down are looked at again.
const START_RETRY: Duration = Duration::from_millis(5);
/// A memif client whose link is still down this long after starting is restarted; the
/// wait doubles after each restart, up to `MEMIF_RECONNECT_MAX`.
const MEMIF_RECONNECT: Duration = Duration::from_millis(250);
/// Longest wait between restarts of a memif client.
const MEMIF_RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Counters of the backend itself (the driver's are in [`PortStatus::driver`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DpdkCounters {
    /// Frames sent.
    pub tx_frames: u64,
    /// Frames dropped on sending (queue full, no buffer, link down).
    pub tx_dropped: u64,
    /// cvmm frames received for this node.
    pub rx_frames: u64,
    /// Frames received that were not for this node (other protocols, other nodes).
    pub rx_foreign: u64,
}

#[derive(Debug, Default)]
struct AtomicCounters {
    tx_frames: AtomicU64,
    tx_dropped: AtomicU64,
    rx_frames: AtomicU64,
    rx_foreign: AtomicU64,
}

/// A port and what is known about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortStatus {
    /// Index in the endpoint's port list (what [`DpdkAddr::port`] names).
    pub index: u16,
    /// The device name.
    pub name: String,
    /// The port's own MAC (frames carry cvmm addresses instead).
    pub hw_mac: String,
    /// MTU in force.
    pub mtu: u16,
    /// Link state now.
    pub link_up: bool,
    /// The driver's counters.
    pub driver: PortCounters,
}

#[derive(Debug, Default)]
struct RxState {
    /// Frames of earlier bursts, with the index of the port they came from.
    pending: VecDeque<(u16, Mbuf)>,
    /// Scratch for one burst.
    burst: Vec<Mbuf>,
    /// The port polled first next time (round robin).
    next_port: usize,
}

/// One DPDK endpoint (see the module docs). At most one per process.
#[derive(Debug)]
pub struct DpdkDatagram {
    // Field order is drop order: received mbufs go back to the pool first. The ports and
    // the pool are never released: closing a memif port hands its interrupt handles back
    // while the EAL's interrupt thread may still be polling them, and in DPDK 22.11 that
    // thread then dies of SIGSEGV (seen in a 4-node memif cluster on a loaded machine: the
    // node lost its statistics). One endpoint lives as long as its process (the EAL cannot
    // start twice), so the kernel releases the sockets and memory at exit, and a memif peer
    // sees the link drop then, as when a node is killed.
    rx: Mutex<RxState>,
    ports: ManuallyDrop<Vec<Port>>,
    infos: Vec<PortInfo>,
    pool: ManuallyDrop<Pool>,
    _eal: Eal,
    mac: MacAddr,
    local: DpdkAddr,
    poll: PollConfig,
    interrupted: AtomicBool,
    sleeping: AtomicBool,
    wake: OwnedFd,
    epoch: Instant,
    last_traffic_ns: AtomicU64,
    counters: AtomicCounters,
}

fn eventfd() -> Result<OwnedFd, DpdkError> {
    // SAFETY: eventfd has no memory arguments; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(DpdkError::WakeFd(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl DpdkDatagram {
    /// Initialises the EAL (once per process), creates the packet pool, configures and
    /// starts every port, and waits up to `connect_timeout` until every link is up (a
    /// memif link needs its peer process).
    pub fn open(config: &DpdkConfig) -> Result<Self, DpdkError> {
        if config.ports.is_empty() {
            return Err(DpdkError::InvalidConfig("no ports".into()));
        }
        if config.ports.len() > usize::from(u16::MAX) {
            return Err(DpdkError::InvalidConfig("too many ports".into()));
        }
        let prefix = format!("cvmm-{}", std::process::id());
        let eal = Eal::init(&config.eal_argv(&prefix))?;
        let pool =
            Pool::create("cvmm_frames", config.mbufs, FRAME_ROOM).map_err(DpdkError::Pool)?;
        let mut ports = Vec::with_capacity(config.ports.len());
        let mut infos = Vec::with_capacity(config.ports.len());
        for spec in &config.ports {
            let name = DpdkConfig::port_name(spec);
            let (port, info) = Port::configure(name, &pool, config.mtu).map_err(|source| {
                DpdkError::PortConfigure {
                    name: name.to_string(),
                    source,
                }
            })?;
            debug!(
                "DPDK port {name}: id {}, mac {}, mtu {}",
                info.id, info.hw_mac, info.mtu
            );
            ports.push(port);
            infos.push(info);
        }
        start_all(&ports, &config.ports, &infos, config.connect_timeout)?;
        let port0 = DpdkAddr {
            port: 0,
            mac: config.mac,
        };
        Ok(Self {
            rx: Mutex::new(RxState::default()),
            ports: ManuallyDrop::new(ports),
            infos,
            pool: ManuallyDrop::new(pool),
            _eal: eal,
            mac: config.mac,
            local: port0,
            poll: config.poll,
            interrupted: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            wake: eventfd()?,
            epoch: Instant::now(),
            last_traffic_ns: AtomicU64::new(0),
            counters: AtomicCounters::default(),
        })
    }

    /// Waits until every port's link is up, at most `timeout`; true if they are (they
    /// were when `open` returned; a link goes down when the peer's port closes).
    pub fn wait_links_up(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ports.iter().all(Port::link_up) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The ports, their link state and the driver's counters.
    pub fn ports(&self) -> Vec<PortStatus> {
        self.ports
            .iter()
            .zip(&self.infos)
            .enumerate()
            .map(|(index, (port, info))| PortStatus {
                index: u16::try_from(index).unwrap_or(u16::MAX),
                name: info.name.clone(),
                hw_mac: info.hw_mac.to_string(),
                mtu: info.mtu,
                link_up: port.link_up(),
                driver: port.counters(),
            })
            .collect()
    }

    /// This backend's counters.
    pub fn counters(&self) -> DpdkCounters {
        let c = &self.counters;
        DpdkCounters {
            tx_frames: c.tx_frames.load(Ordering::Relaxed),
            tx_dropped: c.tx_dropped.load(Ordering::Relaxed),
            rx_frames: c.rx_frames.load(Ordering::Relaxed),
            rx_foreign: c.rx_foreign.load(Ordering::Relaxed),
        }
    }

    /// This endpoint's MAC on the wire.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn note_traffic(&self) {
        self.last_traffic_ns.store(self.now_ns(), Ordering::Relaxed);
    }

    fn traffic_is_recent(&self) -> bool {
        let last = self.last_traffic_ns.load(Ordering::Relaxed);
        let spin = u64::try_from(self.poll.spin.as_nanos()).unwrap_or(u64::MAX);
        self.now_ns().saturating_sub(last) < spin
    }

    /// Copies a frame for this node into `buf`; `None` (and the frame dropped) otherwise.
    fn accept(&self, port: u16, mbuf: &Mbuf, buf: &mut [u8]) -> Option<(usize, DpdkAddr)> {
        let mut head = [0u8; ETH_HEADER_LEN];
        let header = (mbuf.read(0, &mut head) == ETH_HEADER_LEN)
            .then(|| EthHeader::parse(&head))
            .flatten();
        match header {
            Some(h) if h.is_for(self.mac) => {
                let len = mbuf.read(ETH_HEADER_LEN, buf);
                self.counters.rx_frames.fetch_add(1, Ordering::Relaxed);
                Some((len, DpdkAddr { port, mac: h.src }))
            }
            _ => {
                self.counters.rx_foreign.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// One burst from each port, starting at the round-robin position; true if
    /// anything came.
    fn poll_ports(&self, rx: &mut RxState) -> bool {
        let count = self.ports.len();
        let mut any = false;
        for step in 0..count {
            let index = (rx.next_port + step) % count;
            let mut burst = std::mem::take(&mut rx.burst);
            if self.ports[index].recv_burst(&mut burst) > 0 {
                let port = u16::try_from(index).unwrap_or(u16::MAX);
                rx.pending.extend(burst.drain(..).map(|m| (port, m)));
                any = true;
            }
            rx.burst = burst;
        }
        rx.next_port = (rx.next_port + 1) % count;
        any
    }

    /// `recv_from`, also ending when `ready` is readable.
    fn recv_until(
        &self,
        buf: &mut [u8],
        wait: Duration,
        ready: Option<BorrowedFd<'_>>,
    ) -> Result<Option<(usize, DpdkAddr)>, DatagramError> {
        let mut rx = self.rx.lock().expect("receive state lock poisoned");
        let start = Instant::now();
        let mut sleep_step = FIRST_SLEEP;
        loop {
            while let Some((port, mbuf)) = rx.pending.pop_front() {
                if let Some(got) = self.accept(port, &mbuf, buf) {
                    self.note_traffic();
                    return Ok(Some(got));
                }
            }
            if self.poll_ports(&mut rx) {
                continue;
            }
            if self.take_interrupt() || wait.is_zero() {
                return Ok(None);
            }
            let elapsed = start.elapsed();
            if elapsed >= wait {
                return Ok(None);
            }
            if self.traffic_is_recent() {
                // Poll again at once, but let a runnable thread have the core first: on a
                // machine with fewer cores than busy threads (2 cores here, VP threads
                // and fault handlers of several nodes), a pure spin starves the very
                // threads whose work the poller waits for. Measured with the
                // fault-latency probe on 2 nodes: pure spin made the service time
                // 3-10x worse than kernel UDP, spin with yield made it slightly better.
                std::thread::yield_now();
                if ready.is_some_and(is_readable) {
                    return Ok(None);
                }
                continue;
            }
            let nap = sleep_step.min(wait - elapsed);
            if self.sleep(nap, ready) {
                return Ok(None);
            }
            sleep_step = (sleep_step * 2).min(self.poll.max_sleep.max(FIRST_SLEEP));
        }
    }

    /// Consumes a pending interrupt; true if there was one.
    fn take_interrupt(&self) -> bool {
        if !self.interrupted.swap(false, Ordering::SeqCst) {
            return false;
        }
        self.drain_wake();
        true
    }

    fn drain_wake(&self) {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into `value`, which is 8 bytes long; the fd is ours and
        // non-blocking (an empty counter just fails with EAGAIN).
        let _ = unsafe {
            libc::read(
                self.wake.as_raw_fd(),
                std::ptr::from_mut(&mut value).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Sleeps up to `wait` unless interrupted or `ready` becomes readable; true then.
    fn sleep(&self, wait: Duration, ready: Option<BorrowedFd<'_>>) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        // An interrupt that came before `sleeping` was visible did not write the
        // eventfd: look at the flag after publishing `sleeping`.
        if self.take_interrupt() {
            self.sleeping.store(false, Ordering::SeqCst);
            return true;
        }
        let pollfd = |fd: i32| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [
            pollfd(self.wake.as_raw_fd()),
            pollfd(ready.map_or(-1, |fd| fd.as_raw_fd())),
        ];
        let timeout = libc::timespec {
            tv_sec: libc::time_t::try_from(wait.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(wait.subsec_nanos()),
        };
        // SAFETY: two valid pollfds (a negative fd is ignored), a valid timespec, no
        // signal mask; all live across the call.
        let count = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &timeout, std::ptr::null()) };
        self.sleeping.store(false, Ordering::SeqCst);
        if count > 0 && fds[0].revents & libc::POLLIN != 0 {
            // Also a wake-up meant for an earlier wait that ended by itself: consume it
            // so that it does not cut every later sleep short.
            self.drain_wake();
        }
        let readied = count > 0 && fds[1].revents & libc::POLLIN != 0;
        self.take_interrupt() || readied
    }
}

/// Starts every port and waits until every link is up, at most `timeout`.
///
/// Ports that fail to start (a memif client whose server is not listening yet) are
/// retried. Servers start on the first pass, so nodes that start together cannot wait
/// on each other. A memif client can also connect in the window between its server's
/// EAL creating the listener socket (at probe) and the server port starting; the server
/// then refuses it ("ID not found") and the client never retries by itself, so a client
/// whose link is still down a while after starting is restarted, by the EAL's interrupt
/// thread (see `Port::restart_soon`), at growing intervals so that a handshake that is
/// merely slow on a loaded machine gets the time to finish.
fn start_all(
    ports: &[Port],
    specs: &[String],
    infos: &[PortInfo],
    timeout: Duration,
) -> Result<(), DpdkError> {
    let deadline = Instant::now() + timeout;
    let mut started: Vec<Option<Instant>> = vec![None; ports.len()];
    let mut patience: Vec<Duration> = vec![MEMIF_RECONNECT; ports.len()];
    let mut last_error: Vec<Option<sys::DpdkCallError>> = vec![None; ports.len()];
    loop {
        let now = Instant::now();
        for (i, port) in ports.iter().enumerate() {
            match started[i] {
                None => match sys::with_quiet_logs(|| port.start()) {
                    Ok(()) => started[i] = Some(now),
                    Err(e) => last_error[i] = Some(e),
                },
                Some(at)
                    if DpdkConfig::is_memif_client(&specs[i])
                        && now.duration_since(at) >= patience[i]
                        && !port.link_up() =>
                {
                    debug!("DPDK port {}: no link yet, restarting it", infos[i].name);
                    if let Err(e) = port.restart_soon() {
                        last_error[i] = Some(e);
                    }
                    started[i] = Some(now);
                    patience[i] = (patience[i] * 2).min(MEMIF_RECONNECT_MAX);
                }
                Some(_) => {}
            }
        }
        let down = (0..ports.len()).find(|&i| started[i].is_none() || !ports[i].link_up());
        let Some(index) = down else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            let name = infos[index].name.clone();
            return Err(match (started[index], last_error[index].take()) {
                (None, Some(source)) => DpdkError::PortStart {
                    name,
                    timeout,
                    source,
                },
                _ => DpdkError::LinkDown { name, timeout },
            });
        }
        std::thread::sleep(START_RETRY);
    }
}

impl Datagram for DpdkDatagram {
    type Addr = DpdkAddr;

    fn local_addr(&self) -> DpdkAddr {
        self.local
    }

    fn send_to(&self, packet: &[u8], to: DpdkAddr) -> Result<(), DatagramError> {
        let Some(port) = self.ports.get(usize::from(to.port)) else {
            return Err(DatagramError::Send(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no port {} for {to}", to.port),
            )));
        };
        let header = EthHeader::cvmm(self.mac, to.mac).to_bytes();
        self.note_traffic();
        match port.send(&self.pool, &header, packet) {
            Ok(true) => {
                self.counters.tx_frames.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(false) => {
                self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(DatagramError::Send(io::Error::other(e))),
        }
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
        wait: Duration,
    ) -> Result<Option<(usize, DpdkAddr)>, DatagramError> {
        self.recv_until(buf, wait, None)
    }

    fn recv_from_or_ready(
        &self,
        buf: &mut [u8],
        wait: Duration,
        ready: BorrowedFd<'_>,
    ) -> Result<Option<(usize, DpdkAddr)>, DatagramError> {
        self.recv_until(buf, wait, Some(ready))
    }

    fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        if !self.sleeping.load(Ordering::SeqCst) {
            return;
        }
        let one = 1u64;
        // SAFETY: writes the 8 bytes of `one` to our eventfd. A full counter (EAGAIN)
        // means a wake-up is already pending, which is all we want.
        let _ = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                std::ptr::from_ref(&one).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl Drop for DpdkDatagram {
    fn drop(&mut self) {
        let c = self.counters();
        if c.tx_dropped > 0 {
            warn!(
                "DPDK endpoint {}: {} frames dropped on sending; {c:?}; ports {:?}",
                self.mac,
                c.tx_dropped,
                self.ports()
            );
        }
    }
}
