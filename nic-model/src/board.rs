//! The firmware's board in the NIC model process: the HAL traits of
//! `nic_firmware::firmware` over BAR0 shared memory (rings, vector table, counters), the
//! eventfds the host bound to the MSI-X vectors, the guest memfd mapped for DMA, and the
//! node's transport as the wire.
//!
//! One thread, as on a card: the firmware loop polls the wire itself (`recv` without
//! waiting) and the host's rings in shared memory. When it sleeps, it sleeps in the
//! transport (`recv_or_ready`) with the host's doorbell eventfd as the other wake-up, after
//! announcing its sleep in `nic_idle` (the host signals the doorbell only then); the
//! announce-then-check pair is ordered by SeqCst fences, so no wake-up is lost. A wire
//! message that arrives during the sleep wakes this thread directly. Why not a receive
//! thread feeding the loop: every message then cost two thread wake-ups, which on the
//! 2-core build machine made a remote fault through the NIC model 2-3x slower than the
//! software path (`cvmm bench fault-latency`, docs/bench.md).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dpdk_transport::{Event, NodeId, Transport};
use nic_firmware::engine::{Counters, PageState};
use nic_firmware::firmware::hal::{
    Board, DmaMemory, HostEvent, HostRequest, HostRings, Interrupts, RejectedRequest, Wire,
    WireEvent,
};
use nic_firmware::firmware::FirmwareCounters;
use vfio::device::DeviceState;
use vfio::layout::{control, reg, vector_slot, Counter, COUNTERS};
use vfio::region::{MappedRegion, SharedMemory};
use vfio::ring::{
    Completion, CompletionProducer, PageAccess, RingPollError, Submission, SubmissionConsumer,
};
use vima::wire::PAGE_BYTES;

/// How long the firmware keeps sending after the host asked it to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// The NIC model's board.
pub struct NicBoard {
    state: Arc<DeviceState>,
    bar: Arc<MappedRegion>,
    sq: SubmissionConsumer,
    cq: CompletionProducer,
    dma: Arc<MappedRegion>,
    dma_pages: u64,
    transport: Arc<dyn Transport>,
    /// An event the transport delivered while the firmware slept.
    woke_with: Option<Event>,
    doorbell: Option<File>,
    /// The transport failed; reported to the firmware once.
    wire_error: bool,
    wire_failed: bool,
    epoch: Instant,
    /// The completion head the firmware last looked at: a newer one is work (an
    /// acknowledgement a held message may wait for).
    seen_applied: std::cell::Cell<u64>,
    shutdown_seen: Option<Instant>,
    /// Completions refused because the host's head was impossible.
    pub bad_doorbells: u64,
}

impl std::fmt::Debug for NicBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NicBoard").finish_non_exhaustive()
    }
}

impl NicBoard {
    /// A board over the device state; `dma` is the host memory mapped at IOVA 0.
    pub fn new(
        state: Arc<DeviceState>,
        dma: Arc<MappedRegion>,
        transport: Arc<dyn Transport>,
    ) -> Self {
        let bar = state.bar0().clone();
        let sq = SubmissionConsumer::new(bar.as_ref());
        let cq = CompletionProducer::new(bar.as_ref());
        let dma_pages = dma.len() / PAGE_BYTES as u64;
        let doorbell = state.doorbell();
        Self {
            state,
            bar,
            sq,
            cq,
            dma,
            dma_pages,
            transport,
            woke_with: None,
            doorbell,
            wire_error: false,
            wire_failed: false,
            epoch: Instant::now(),
            seen_applied: std::cell::Cell::new(0),
            shutdown_seen: None,
            bad_doorbells: 0,
        }
    }

    fn page_offset(&self, page: u64) -> Option<u64> {
        (page < self.dma_pages).then(|| page * PAGE_BYTES as u64)
    }

    fn wire_event(&mut self, event: Event, buf: &mut [u8]) -> Option<WireEvent> {
        match event {
            Event::Message { from, payload } => {
                let bytes = payload.as_ref();
                let from = u16::try_from(from.0).ok()?;
                let out = buf.get_mut(..bytes.len())?;
                out.copy_from_slice(bytes);
                Some(WireEvent::Message {
                    from,
                    len: bytes.len(),
                })
            }
            Event::PeerDown(node) => u16::try_from(node.0).ok().map(WireEvent::PeerDown),
        }
    }
}

fn access(state: PageState) -> PageAccess {
    match state {
        PageState::Invalid => PageAccess::Invalid,
        PageState::Shared => PageAccess::Shared,
        PageState::Exclusive => PageAccess::Exclusive,
    }
}

impl HostRings for NicBoard {
    fn poll_request(&mut self, buf: &mut [u8]) -> Option<Result<HostRequest, RejectedRequest>> {
        match self.sq.pop(self.bar.as_ref(), buf) {
            Ok(None) => None,
            Ok(Some((Submission::Fetch { page, write, vp }, _))) => {
                Some(Ok(HostRequest::Fetch { page, write, vp }))
            }
            Ok(Some((Submission::SendControl { .. }, len))) => {
                Some(Ok(HostRequest::SendMessage { len }))
            }
            Ok(Some((Submission::Leave { to }, _))) => match u16::try_from(to) {
                Ok(to) => Some(Ok(HostRequest::Leave { to })),
                Err(_) => Some(Err(RejectedRequest)),
            },
            Err(RingPollError::Descriptor(_)) => Some(Err(RejectedRequest)),
            Err(RingPollError::Doorbell { .. }) => {
                // Nothing consumed; the host must fix its doorbell. Count and go on.
                self.bad_doorbells += 1;
                None
            }
        }
    }

    fn completion_room(&self) -> usize {
        self.cq.room(self.bar.as_ref()) as usize
    }

    fn post(&mut self, event: &HostEvent<'_>) -> Option<u64> {
        let (completion, payload): (Completion, &[u8]) = match *event {
            HostEvent::MapPage { page, state } => (
                Completion::MapPage {
                    page,
                    state: access(state),
                },
                &[],
            ),
            HostEvent::Invalidate { page } => (Completion::Invalidate { page }, &[]),
            HostEvent::Downgrade { page } => (Completion::Downgrade { page }, &[]),
            HostEvent::WakeWatchers { page } => (Completion::WakeWatchers { page }, &[]),
            HostEvent::FaultDone { page, state, vp } => (
                Completion::FaultDone {
                    page,
                    state: access(state),
                    vp,
                },
                &[],
            ),
            HostEvent::Control { bytes } => (
                Completion::Control {
                    len: u32::try_from(bytes.len()).ok()?,
                },
                bytes,
            ),
            HostEvent::PeerDown { node } => (
                Completion::PeerDown {
                    node: u32::from(node),
                },
                &[],
            ),
            HostEvent::WireFailed => (Completion::WireFailed, &[]),
            HostEvent::Left {
                evicted,
                moved,
                refused,
            } => (
                Completion::Left {
                    evicted,
                    moved: u32::try_from(moved).unwrap_or(u32::MAX),
                    refused,
                },
                &[],
            ),
        };
        self.cq.push(self.bar.as_ref(), &completion, payload).ok()
    }

    fn applied(&self) -> u64 {
        let applied = self.cq.applied(self.bar.as_ref());
        self.seen_applied.set(applied);
        applied
    }
}

impl Interrupts for NicBoard {
    fn vector_of(&self, vp: u32) -> Option<u16> {
        let present = self.bar.load_u64(reg::VP_PRESENT);
        if vp >= 64 || present & (1 << vp) == 0 {
            return None;
        }
        let (at, shift) = vector_slot(vp);
        let vector = (self.bar.load_u32(at) >> shift) & 0xffff;
        u16::try_from(vector).ok()
    }

    fn raise(&mut self, vector: u16) {
        if !self.state.raise(vector) && vector != 0 {
            // A vector without an eventfd: fall back to the host vector.
            self.state.raise(0);
        }
    }
}

impl DmaMemory for NicBoard {
    fn read_page(&mut self, page: u64, out: &mut [u8; PAGE_BYTES]) -> bool {
        self.page_offset(page)
            .is_some_and(|at| self.dma.read_bytes(at, out))
    }

    fn write_page(&mut self, page: u64, data: &[u8; PAGE_BYTES]) -> bool {
        self.page_offset(page)
            .is_some_and(|at| self.dma.write_bytes(at, data))
    }
}

impl Wire for NicBoard {
    fn send(&mut self, dst: u16, bytes: &[u8]) -> bool {
        self.transport.send(NodeId(u32::from(dst)), bytes).is_ok()
    }

    fn poll(&mut self, buf: &mut [u8]) -> Option<WireEvent> {
        let event = match self.woke_with.take() {
            Some(event) => Some(event),
            None if self.wire_error => None,
            None => match self.transport.recv(Duration::ZERO) {
                Ok(event) => event,
                Err(_) => {
                    self.wire_error = true;
                    None
                }
            },
        };
        match event {
            Some(event) => self.wire_event(event, buf),
            None if self.wire_error && !self.wire_failed => {
                self.wire_failed = true;
                Some(WireEvent::Failed)
            }
            None => None,
        }
    }
}

impl Board for NicBoard {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn relax(&mut self) {
        // Two cores shared by every node's VPs, host threads and NIC: let them run.
        std::thread::yield_now();
    }

    fn idle(&mut self, micros: u32) {
        let bar = self.bar.as_ref();
        bar.store_u32(reg::NIC_IDLE, 1);
        // Announce, then look: pairs with the host's fence after its doorbell store.
        fence(Ordering::SeqCst);
        let work = self.woke_with.is_some()
            || self.wire_error
            || !self.sq.is_empty(bar)
            || self.cq.applied(bar) != self.seen_applied.get();
        if !work {
            let wait = Duration::from_micros(u64::from(micros));
            let got = match self.doorbell.as_ref() {
                Some(doorbell) => self.transport.recv_or_ready(wait, doorbell.as_fd()),
                None => self.transport.recv(wait),
            };
            match got {
                Ok(event) => self.woke_with = event,
                Err(_) => self.wire_error = true,
            }
        }
        bar.store_u32(reg::NIC_IDLE, 0);
        if let Some(doorbell) = self.doorbell.as_mut() {
            let mut count = [0u8; 8];
            let _ = doorbell.read(&mut count);
        }
    }

    fn publish(&mut self, heartbeat: u64, fw: &FirmwareCounters, engine: &Counters) {
        let bar = self.bar.as_ref();
        bar.store_u64(reg::HEARTBEAT, heartbeat);
        let retransmits: u64 = self
            .transport
            .stats()
            .peers
            .iter()
            .map(|p| p.counters.retransmits)
            .sum();
        let values = [
            (Counter::BusyRounds, fw.busy_rounds),
            (Counter::Submissions, fw.requests),
            (
                Counter::BadSubmissions,
                fw.bad_requests + self.bad_doorbells,
            ),
            (Counter::Completions, fw.completions),
            (Counter::Interrupts, fw.interrupts),
            (Counter::MessagesReceived, fw.messages_received),
            (Counter::MessagesSent, fw.messages_sent),
            (Counter::BadMessages, fw.bad_messages),
            (Counter::SendFailures, fw.send_failures),
            (Counter::PagesSent, fw.pages_sent),
            (
                Counter::PagesServedWithoutHost,
                fw.pages_served_without_host,
            ),
            (Counter::SendsHeld, fw.sends_held),
            (Counter::ReceivesHeld, fw.receives_held),
            (Counter::InvalidationsSent, engine.invalidations_sent),
            (
                Counter::InvalidationsReceived,
                engine.invalidations_received,
            ),
            (Counter::ForwardsSent, engine.forwards_sent),
            (Counter::RequestsQueued, engine.requests_queued),
            (Counter::PagesReceived, engine.pages_received),
            (Counter::ProtocolErrors, engine.protocol_errors),
            (Counter::Retransmits, retransmits),
            (Counter::Resteered, fw.resteered),
            (Counter::FaultsRefused, fw.faults_refused),
        ];
        for (counter, value) in values {
            let slot = counter as usize;
            if slot < COUNTERS {
                bar.store_u64(reg::COUNTERS + 8 * slot as u64, value);
            }
        }
    }

    fn should_stop(&mut self, quiescent: bool) -> bool {
        if self.state.disconnected() {
            // The host is gone (it exited or died): nobody applies completions any more.
            return true;
        }
        let asked = self.bar.load_u32(reg::CONTROL) & control::SHUTDOWN != 0;
        if !asked {
            return false;
        }
        let since = *self.shutdown_seen.get_or_insert_with(Instant::now);
        let drained = self.sq.is_empty(self.bar.as_ref());
        (quiescent && drained) || since.elapsed() > SHUTDOWN_GRACE
    }
}
