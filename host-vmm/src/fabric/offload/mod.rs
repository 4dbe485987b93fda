//! The offload fabric: the host's side of a node whose coherence engine runs on its NIC.
//!
//! The host keeps only what a NIC cannot do: its own mappings (userfaultfd, MADV_DONTNEED,
//! write protection) and the virtual server's control messages. A fault becomes one
//! descriptor on the submission ring and a doorbell write in shared memory; the firmware
//! fetches the page, writes it into the guest memfd by DMA, and posts completions. One
//! interrupt thread sleeps on the MSI-X eventfds, drains the completion ring in order,
//! applies each entry, and advances the ring's head *after* applying it: that head is the
//! acknowledgement the firmware waits for before it sends a page whose mapping changed
//! (the engine's ordering rule, see `nic_firmware::firmware`).
//!
//! Control messages go through the NIC both ways and are handled by the same code as on
//! the software path (`control.rs`).
//!
//! A dead NIC stops the node, never hangs it: the interrupt thread wakes at least every
//! [`POLL_INTERVAL`], checks the NIC process it started (exit status), the firmware's
//! heartbeat in BAR0 and, when the heartbeat stalls, whether the device still answers a
//! trapped access.

mod nic_process;

use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::warn;
use vfio::client::NicBackend;
use vfio::layout::{control as control_bits, reg, status, vector_slot, Counter, BUFFER_BYTES};
use vfio::ring::{
    Completion, CompletionConsumer, PageAccess, RingError, RingPollError, Submission,
    SubmissionProducer,
};
use vima::wire::{self, Body, MAX_MESSAGE_BYTES};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::core::{parse_config, CoreError, FabricCore};
use super::{Fabric, FabricEvents, LeaveError, LeaveReport};
use crate::memory::{FetchRequest, LogicalMemory, PageResolver, PageState};

pub use nic_process::NicProcess;

/// The NIC's `Left` completion: copies given up, pages moved, refused.
type LeftAnswer = (u64, u32, bool);

/// How often the interrupt thread looks at the NIC's health when no interrupt comes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// A heartbeat that does not move for this long means the firmware is gone.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a post waits for room in the submission ring before giving up.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the offload fabric could not start.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// The fault intake could not be set up.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The device is another node's NIC.
    #[error("The NIC serves node {found}, not node {expected}")]
    WrongNode {
        /// This node.
        expected: u32,
        /// What the NIC says.
        found: u32,
    },
    /// An eventfd could not be created.
    #[error("Failed to create an interrupt eventfd")]
    EventFd(#[source] std::io::Error),
    /// Setting up the device failed.
    #[error("Failed to set up the NIC")]
    Device(#[from] vfio::client::ClientError),
    /// The firmware did not start.
    #[error("The NIC firmware did not start within {0:?}")]
    NotRunning(Duration),
}

/// The host side of one node's offload fabric.
pub struct OffloadFabric {
    node: u16,
    nic: Box<dyn NicBackend>,
    memory: Arc<LogicalMemory>,
    events: Arc<dyn FabricEvents>,
    sq: Mutex<SubmissionProducer>,
    /// Held while the VP steering registers change.
    steering: Mutex<()>,
    vectors: Vec<EventFd>,
    process: Mutex<Option<NicProcess>>,
    doorbell: EventFd,
    stop: EventFd,
    /// The NIC's answer to a `Leave`, and its signal.
    left: (Mutex<Option<LeftAnswer>>, Condvar),
    /// Nodes in the cluster, and the ranges homed here at the start (for a leave's report).
    node_count: u16,
    own_ranges: usize,
    /// Fault intake, counters and latencies, as on the software path (the NIC's own
    /// counters are in BAR0).
    pub core: FabricCore,
}

impl std::fmt::Debug for OffloadFabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadFabric")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn host_state(state: PageAccess) -> PageState {
    match state {
        PageAccess::Invalid => PageState::Invalid,
        PageAccess::Shared => PageState::Shared,
        PageAccess::Exclusive => PageState::Exclusive,
    }
}

impl OffloadFabric {
    /// Sets up the NIC for node `node` of virtual server `vs_id`: interrupt vectors
    /// (vector 0 for the host, one per local VP), guest memory mapped at IOVA 0, the
    /// vector table, the initial page states (pages homed elsewhere Invalid), then enables
    /// the firmware and waits for it. The fabric reports to `events`.
    #[allow(clippy::too_many_arguments)]
    pub fn connect(
        nic: Box<dyn NicBackend>,
        config_table: &[u8],
        vs_id: u16,
        node: u32,
        local_vps: &[u32],
        memory: Arc<LogicalMemory>,
        process: Option<NicProcess>,
        events: Arc<dyn FabricEvents>,
    ) -> Result<Arc<Self>, OffloadError> {
        let bar = nic.bar0();
        let found = bar.load_u32(reg::NODE);
        if found != node {
            return Err(OffloadError::WrongNode {
                expected: node,
                found,
            });
        }
        let config = parse_config(config_table)?;
        let vectors: Vec<EventFd> = (0..=local_vps.len())
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<_, _>>()
            .map_err(OffloadError::EventFd)?;
        let fds: Vec<i32> = vectors.iter().map(AsRawFd::as_raw_fd).collect();
        nic.enable_vectors(&fds)?;
        let doorbell = EventFd::new(EFD_NONBLOCK).map_err(OffloadError::EventFd)?;
        nic.set_doorbell(doorbell.as_raw_fd())?;
        nic.map_dma(0, memory.size(), memory.memfd())?;
        let mut present = 0u64;
        for (index, vp) in local_vps.iter().enumerate() {
            let vector = u16::try_from(index + 1).expect("at most 64 VPs");
            let (at, shift) = vector_slot(*vp);
            let word = bar.load_u32(at) & !(0xffff << shift);
            bar.store_u32(at, word | u32::from(vector) << shift);
            present |= 1u64.checked_shl(*vp).unwrap_or(0);
        }
        bar.store_u64(reg::VP_PRESENT, present);
        let core = FabricCore::new(&config, node, vs_id, local_vps, memory.clone())?;
        let node_count = u16::try_from(config.node_count()).unwrap_or(u16::MAX);
        let own_ranges = config.mem_ranges().filter(|r| r.node_id == node).count();
        let sq = SubmissionProducer::new(bar);
        bar.store_u32(reg::CONTROL, control_bits::ENABLE);
        let deadline = Instant::now() + Duration::from_secs(10);
        while bar.load_u32(reg::STATUS) & status::RUNNING == 0 {
            if Instant::now() > deadline {
                return Err(OffloadError::NotRunning(Duration::from_secs(10)));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Arc::new(Self {
            node: core.node(),
            nic,
            memory,
            events,
            sq: Mutex::new(sq),
            steering: Mutex::new(()),
            vectors,
            process: Mutex::new(process),
            doorbell,
            stop: EventFd::new(EFD_NONBLOCK).map_err(OffloadError::EventFd)?,
            left: (Mutex::new(None), Condvar::new()),
            node_count,
            own_ranges,
            core,
        }))
    }

    /// The node leaves, as [`SoftwareFabric::leave`](super::SoftwareFabric::leave) does,
    /// but the NIC does the work: the host only asks and waits for the answer.
    pub fn leave(&self, to: u16, timeout: Duration) -> Result<LeaveReport, LeaveError> {
        if to == self.node || to >= self.node_count {
            return Err(LeaveError::BadTarget(to));
        }
        let started = Instant::now();
        let (slot, signal) = &self.left;
        *slot.lock().expect("leave lock") = None;
        self.submit(&Submission::Leave { to: u32::from(to) }, &[]);
        let answer = slot.lock().expect("leave lock");
        let (answer, wait) = signal
            .wait_timeout_while(answer, timeout, |a| a.is_none())
            .expect("leave lock");
        match *answer {
            Some((_, _, true)) => Err(LeaveError::Refused),
            Some((evicted, moved, false)) => Ok(LeaveReport {
                evicted,
                ranges_handed_over: self.own_ranges,
                pages_handed_over: u64::from(moved),
                took: started.elapsed(),
            }),
            None if wait.timed_out() => Err(LeaveError::TimedOut { timeout, left: 1 }),
            None => Err(LeaveError::Refused),
        }
    }

    /// A description of the NIC for messages.
    fn nic_name(&self) -> String {
        match self.process.lock().expect("process lock").as_ref() {
            Some(p) => format!("the NIC process of node {} (pid {})", self.node, p.pid()),
            None => format!("the NIC of node {}", self.node),
        }
    }

    fn fail(&self, message: String) {
        self.events.failed(message);
    }

    /// Posts a submission, waiting for room (the firmware consumes in microseconds; a
    /// ring full for seconds means the NIC is gone, which the interrupt thread reports).
    fn submit(&self, submission: &Submission, payload: &[u8]) {
        let bar = self.nic.bar0();
        let deadline = Instant::now() + POST_TIMEOUT;
        let mut sq = self.sq.lock().expect("submission lock");
        loop {
            match sq.push(bar, submission, payload) {
                Ok(()) => {
                    self.kick();
                    return;
                }
                Err(RingError::Full) if Instant::now() < deadline => {
                    if self.events.finished() {
                        return;
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => {
                    self.core.stats.count_send_failure();
                    warn!("posting to the NIC failed: {e}");
                    return;
                }
            }
        }
    }

    /// Wakes the firmware if it sleeps, after a doorbell store (a submission, or the
    /// completion head that acknowledges mapping changes it may be waiting for).
    fn kick(&self) {
        // Pairs with the firmware's fence between setting `nic_idle` and its last look at
        // the rings: either it sees our store or we see it sleep.
        fence(Ordering::SeqCst);
        if self.nic.bar0().load_u32(reg::NIC_IDLE) != 0 {
            let _ = self.doorbell.write(1);
        }
    }

    fn interrupt_loop(&self) {
        let bar = self.nic.bar0();
        let mut cq = CompletionConsumer::new(bar);
        let mut payload = vec![0u8; BUFFER_BYTES as usize];
        let mut last_beat = (bar.load_u64(reg::HEARTBEAT), Instant::now());
        let mut fds: Vec<libc::pollfd> = self
            .vectors
            .iter()
            .map(|e| e.as_raw_fd())
            .chain([self.stop.as_raw_fd()])
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout = i32::try_from(POLL_INTERVAL.as_millis()).unwrap_or(20);
        loop {
            let nfds = libc::nfds_t::try_from(fds.len()).expect("few vectors");
            // SAFETY: `fds` is a live array of `nfds` initialized pollfds.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout) };
            if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                self.fail(format!(
                    "waiting for NIC interrupts failed: {}",
                    std::io::Error::last_os_error()
                ));
                return;
            }
            if fds.last().is_some_and(|f| f.revents != 0) {
                return;
            }
            for vector in &self.vectors {
                let _ = vector.read();
            }
            if !self.drain(&mut cq, &mut payload) {
                return;
            }
            if self.events.finished() {
                return;
            }
            if let Some(message) = self.health(&mut last_beat) {
                self.fail(message);
                return;
            }
        }
    }

    /// Applies every completion waiting; false when the node must stop.
    fn drain(&self, cq: &mut CompletionConsumer, payload: &mut [u8]) -> bool {
        let bar = self.nic.bar0();
        let mut applied = false;
        loop {
            match cq.peek(bar, payload) {
                Ok(None) => {
                    if applied {
                        self.kick();
                    }
                    return true;
                }
                Ok(Some((completion, len))) => {
                    let keep_going = self.apply(completion, &payload[..len]);
                    cq.advance(bar);
                    applied = true;
                    if !keep_going {
                        return false;
                    }
                }
                Err(RingPollError::Descriptor(e)) => {
                    self.core.stats.count_bad_message();
                    warn!("{} posted a malformed completion: {e}", self.nic_name());
                    cq.advance(bar);
                }
                Err(RingPollError::Doorbell { head, tail }) => {
                    self.fail(format!(
                        "{} corrupted its completion ring (head {head}, tail {tail}); \
                         stopping node {}",
                        self.nic_name(),
                        self.node
                    ));
                    return false;
                }
            }
        }
    }

    /// Applies one completion; false when the node must stop.
    fn apply(&self, completion: Completion, payload: &[u8]) -> bool {
        let set = |page: u64, state: PageState| {
            if let Err(e) = self.memory.set_page_state(page, state) {
                warn!("setting page {page} to {state:?}: {e}");
            }
        };
        match completion {
            Completion::MapPage { page, state } => set(page, host_state(state)),
            Completion::Invalidate { page } => set(page, PageState::Invalid),
            Completion::Downgrade { page } => set(page, PageState::Shared),
            Completion::WakeWatchers { page } => {
                if let Err(e) = self.memory.notify_watchers(page) {
                    warn!("waking watchers of page {page}: {e}");
                }
            }
            Completion::FaultDone { page, state, .. } => {
                if let Err(e) = self.memory.complete_fetch(page, host_state(state)) {
                    warn!("completing the fetch of page {page}: {e}");
                }
                self.core.page_ready(page);
            }
            Completion::Control { .. } => {
                let msg = match wire::decode(payload) {
                    Ok(msg) if msg.dst == self.node && msg.vs_id == self.core.vs_id() => msg,
                    _ => {
                        self.core.stats.count_bad_message();
                        return true;
                    }
                };
                if !self.events.control(u32::from(msg.src), &msg.body) {
                    self.core.stats.count_bad_message();
                }
            }
            Completion::PeerDown { node } if self.core.is_departed(node) => {
                log::info!("node {node} left the cluster and is gone");
            }
            Completion::PeerDown { node } => {
                self.fail(format!(
                    "node {node} stopped responding; stopping the virtual server"
                ));
                return false;
            }
            Completion::Left {
                evicted,
                moved,
                refused,
            } => {
                let (slot, signal) = &self.left;
                *slot.lock().expect("leave lock") = Some((evicted, moved, refused));
                signal.notify_all();
            }
            Completion::WireFailed => {
                self.fail(format!(
                    "the wire of {} failed; stopping node {}",
                    self.nic_name(),
                    self.node
                ));
                return false;
            }
        }
        true
    }

    /// `Some(message)` when the NIC is gone.
    fn health(&self, last_beat: &mut (u64, Instant)) -> Option<String> {
        if let Some(process) = self.process.lock().expect("process lock").as_mut() {
            if let Some(how) = process.ended() {
                return Some(format!(
                    "the NIC process of node {} (pid {}) {how}; stopping node {}",
                    self.node,
                    process.pid(),
                    self.node
                ));
            }
        }
        let bar = self.nic.bar0();
        if bar.load_u32(reg::STATUS) & status::FAILED != 0 {
            return Some(format!(
                "{} reported a failure (error {}); stopping node {}",
                self.nic_name(),
                bar.load_u32(reg::ERROR),
                self.node
            ));
        }
        let beat = bar.load_u64(reg::HEARTBEAT);
        if beat != last_beat.0 {
            *last_beat = (beat, Instant::now());
            return None;
        }
        if last_beat.1.elapsed() < HEARTBEAT_TIMEOUT {
            return None;
        }
        let why = if self.nic.responds() {
            "stopped its heartbeat"
        } else {
            "does not answer any more"
        };
        Some(format!(
            "{} {why} for {:?}; stopping node {}",
            self.nic_name(),
            HEARTBEAT_TIMEOUT,
            self.node
        ))
    }

    /// A NIC counter.
    pub fn counter(&self, counter: Counter) -> u64 {
        self.nic.bar0().load_u64(reg::COUNTERS + 8 * counter as u64)
    }

    /// Stops: lets the NIC send what is queued, asks it to stop, waits for the NIC process
    /// (killing it after a grace period) and ends the interrupt thread.
    fn shutdown(&self) {
        let bar = self.nic.bar0();
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.sq.lock().expect("submission lock").drained(bar) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        bar.store_u32(reg::CONTROL, control_bits::ENABLE | control_bits::SHUTDOWN);
        let _ = self.stop.write(1);
        if let Some(process) = self.process.lock().expect("process lock").as_mut() {
            process.finish(Duration::from_secs(3));
        }
    }
}

impl Fabric for OffloadFabric {
    fn core(&self) -> &FabricCore {
        &self.core
    }

    /// Clears or sets the VP's bit in the NIC's `VP_PRESENT` register: the firmware
    /// steers a completion for a VP that is not present to the host vector (counted as
    /// `resteered`), as the steering table of the FPGA pipeline hands a removed VP's
    /// vectors on (`hdl_models::steering`).
    fn set_vp_present(&self, vp: u32, present: bool) {
        let Some(bit) = 1u64.checked_shl(vp) else {
            return;
        };
        let _steering = self.steering.lock().expect("steering lock");
        let bar = self.nic.bar0();
        let mask = bar.load_u64(reg::VP_PRESENT);
        let mask = if present { mask | bit } else { mask & !bit };
        bar.store_u64(reg::VP_PRESENT, mask);
    }

    /// Sends a control message to `node` through the NIC.
    fn send_control(&self, node: u32, body: Body<'_>) {
        let msg = self.core.control_message(node, body);
        let mut buf = [0u8; MAX_MESSAGE_BYTES];
        match wire::encode(&msg, &mut buf) {
            Ok(len) => {
                let len32 = u32::try_from(len).expect("messages fit a buffer");
                debug_assert!(len32 <= BUFFER_BYTES);
                self.submit(&Submission::SendControl { len: len32 }, &buf[..len]);
            }
            Err(e) => warn!("failed to encode a {:?} message: {e:?}", msg.body.kind()),
        }
    }

    fn engine_stats(&self) -> serde_json::Value {
        let c = |counter| self.counter(counter);
        serde_json::json!({
            "fabric": "offload",
            "invalidations_sent": c(Counter::InvalidationsSent),
            "invalidations_received": c(Counter::InvalidationsReceived),
            "forwards_sent": c(Counter::ForwardsSent),
            "requests_queued": c(Counter::RequestsQueued),
            "pages_received": c(Counter::PagesReceived),
            "pages_sent": c(Counter::PagesSent),
            "bytes_sent": c(Counter::PagesSent) * 4096,
            "retransmits": c(Counter::Retransmits),
            "nic": {
                "busy_rounds": c(Counter::BusyRounds),
                "submissions": c(Counter::Submissions),
                "bad_submissions": c(Counter::BadSubmissions),
                "completions": c(Counter::Completions),
                "interrupts": c(Counter::Interrupts),
                "messages_received": c(Counter::MessagesReceived),
                "messages_sent": c(Counter::MessagesSent),
                "bad_messages": c(Counter::BadMessages),
                "send_failures": c(Counter::SendFailures),
                "pages_served_without_host": c(Counter::PagesServedWithoutHost),
                "sends_held": c(Counter::SendsHeld),
                "receives_held": c(Counter::ReceivesHeld),
                "protocol_errors": c(Counter::ProtocolErrors),
                "resteered": c(Counter::Resteered),
                "faults_refused": c(Counter::FaultsRefused),
            },
        })
    }

    fn start(self: Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("nic-irq".into())
            .spawn(move || self.interrupt_loop())
    }

    fn stop(&self) -> serde_json::Value {
        // The NIC's counters are read before it stops (its BAR goes with its process).
        let stats = self.stats_json();
        self.shutdown();
        stats
    }

    fn into_resolver(self: Arc<Self>) -> Arc<dyn PageResolver> {
        self
    }
}

impl PageResolver for OffloadFabric {
    fn fetch(&self, _memory: &Arc<LogicalMemory>, request: FetchRequest) {
        let fault = self.core.intake(&request);
        self.submit(
            &Submission::Fetch {
                page: fault.page,
                write: fault.write,
                vp: fault.vp,
            },
            &[],
        );
    }
}

#[cfg(test)]
mod tests;
