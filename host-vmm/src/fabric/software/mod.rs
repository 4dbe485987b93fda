//! The software fabric: the coherence engine of `nic-firmware` run on host threads over
//! the node-to-node transport this process owns, which also carries the server's control
//! messages (handed to the server's [`FabricEvents`]).
//!
//! Threads: the memory fault thread calls [`SoftwareFabric::fetch`] (through
//! [`crate::memory::PageResolver`]) for pages the local copy cannot serve; one receive
//! thread feeds wire messages to the engine or to the control handlers. The engine sits
//! behind one mutex and its actions are applied while it is held, which is the simplest
//! way to meet the engine's ordering rule (actions on one page take effect in emission
//! order); the work under the lock is a 4 KiB copy and one or two syscalls.

mod apply;
mod leave;

pub use leave::{LeaveError, LeaveProgress, LeaveReport};

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dpdk_transport::{Event, NodeId, Transport};
use log::warn;
use nic_firmware::engine::{
    build_engine, Engine, LocalFault, LogicalPage, PageState as EngineState,
};
use vima::wire::{self, Body, Message, MAX_MESSAGE_BYTES};

use super::core::{parse_config, CoreError};
use super::{Fabric, FabricCore, FabricEvents};
use crate::memory::{FetchRequest, LogicalMemory, PageResolver, PageState};

/// Why the software fabric could not start.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    /// The fault intake could not be set up.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The engine refused its configuration.
    #[error("Failed to start the coherence engine: {0:?}")]
    Engine(nic_firmware::engine::EngineError),
}

/// One node's software fabric.
pub struct SoftwareFabric {
    node: u16,
    engine: Mutex<Engine<'static>>,
    transport: Arc<dyn Transport>,
    memory: Arc<LogicalMemory>,
    events: Arc<dyn FabricEvents>,
    /// Fault intake, counters and latencies (shared with the offload fabric).
    pub core: FabricCore,
}

impl std::fmt::Debug for SoftwareFabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareFabric")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl SoftwareFabric {
    /// Builds the engine of node `node` of virtual server `vs_id` from the configuration
    /// table and sets the initial page states: pages homed here (and the per-node region)
    /// Exclusive, the rest Invalid. The fabric reports to `events`.
    pub fn new(
        config_table: &[u8],
        vs_id: u16,
        node: u32,
        local_vps: &[u32],
        memory: Arc<LogicalMemory>,
        transport: Arc<dyn Transport>,
        events: Arc<dyn FabricEvents>,
    ) -> Result<Arc<Self>, FabricError> {
        let config = parse_config(config_table)?;
        let core = FabricCore::new(&config, node, vs_id, local_vps, memory.clone())?;
        let engine =
            build_engine(&config, vs_id, node, local_vps.len()).map_err(FabricError::Engine)?;
        Ok(Arc::new(SoftwareFabric {
            node: core.node(),
            engine: Mutex::new(engine),
            transport,
            memory,
            events,
            core,
        }))
    }

    /// Encodes and sends a message; a dead peer or a shut-down transport is logged and
    /// counted, never fatal here (the receive thread reports dead peers).
    pub fn send(&self, msg: &Message<'_>) {
        let mut buf = [0u8; MAX_MESSAGE_BYTES];
        match wire::encode(msg, &mut buf) {
            Ok(len) => {
                if let Err(e) = self.transport.send(NodeId(u32::from(msg.dst)), &buf[..len]) {
                    self.core.stats.count_send_failure();
                    warn!("send to node {} failed: {e}", msg.dst);
                }
            }
            Err(e) => warn!("failed to encode a {:?} message: {e:?}", msg.body.kind()),
        }
    }

    /// Runs the engine on one input and applies its actions, under the engine lock; a
    /// refused input is counted and logged.
    fn run_engine<F>(&self, input: F)
    where
        F: FnOnce(
            &mut Engine<'static>,
            &mut apply::Applier<'_>,
        ) -> Result<(), nic_firmware::engine::EngineError>,
    {
        if let Err(e) = self.run_engine_step(input) {
            self.core.stats.count_engine_error();
            warn!("coherence engine refused an input: {e:?}");
        }
    }

    /// Runs the engine on one input and applies its actions, under the engine lock, and
    /// returns the engine's answer.
    fn run_engine_step<F>(&self, input: F) -> Result<(), nic_firmware::engine::EngineError>
    where
        F: FnOnce(
            &mut Engine<'static>,
            &mut apply::Applier<'_>,
        ) -> Result<(), nic_firmware::engine::EngineError>,
    {
        let mut engine = self.engine.lock().expect("engine lock");
        let mut applier = apply::Applier::new(self);
        let result = input(&mut engine, &mut applier);
        let done = applier.finish();
        for page in done {
            let state = match engine.page_state(page) {
                Ok(EngineState::Exclusive) => PageState::Exclusive,
                Ok(EngineState::Shared) => PageState::Shared,
                _ => PageState::Invalid,
            };
            if let Err(e) = self.memory.complete_fetch(page.0, state) {
                warn!("completing the fetch of page {}: {e}", page.0);
            }
            self.core.page_ready(page.0);
        }
        result
    }

    fn receive_loop(&self) {
        loop {
            if self.events.finished() {
                return;
            }
            match self.transport.recv(Duration::from_millis(50)) {
                Ok(Some(Event::Message { from, payload })) => {
                    self.on_message(from, payload.as_ref())
                }
                Ok(Some(Event::PeerDown(node))) if self.core.is_departed(node.0) => {
                    log::info!("node {} left the cluster and is gone", node.0);
                }
                Ok(Some(Event::PeerDown(node))) => {
                    self.events.failed(format!(
                        "node {} stopped responding; stopping the virtual server",
                        node.0
                    ));
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    self.events
                        .failed(format!("the node-to-node transport failed: {e}"));
                    return;
                }
            }
        }
    }

    fn on_message(&self, from: NodeId, bytes: &[u8]) {
        let msg = match wire::decode(bytes) {
            Ok(msg)
                if u32::from(msg.src) == from.0
                    && msg.dst == self.node
                    && msg.vs_id == self.core.vs_id() =>
            {
                msg
            }
            Ok(_) => {
                self.core.stats.count_bad_message();
                return;
            }
            Err(_) => {
                self.core.stats.count_bad_message();
                return;
            }
        };
        if msg.body.kind().is_engine() {
            self.run_engine(|engine, applier| engine.receive(&msg, applier));
        } else if !self.events.control(u32::from(msg.src), &msg.body) {
            self.core.stats.count_bad_message();
        }
    }

    /// Transport counters.
    pub fn transport_stats(&self) -> dpdk_transport::TransportStats {
        self.transport.stats()
    }

    /// Engine counters.
    pub fn engine_counters(&self) -> nic_firmware::engine::Counters {
        *self.engine.lock().expect("engine lock").counters()
    }

    /// Lets the last messages (the exit broadcast) reach the peers before the transport
    /// stops.
    fn drain(&self) {
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            let stats = self.transport.stats();
            if stats.peers.iter().all(|p| p.in_flight == 0 || !p.alive) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Fabric for SoftwareFabric {
    fn core(&self) -> &FabricCore {
        &self.core
    }

    fn send_control(&self, node: u32, body: Body<'_>) {
        self.send(&self.core.control_message(node, body));
    }

    fn engine_stats(&self) -> serde_json::Value {
        let engine = self.engine_counters();
        let transport = self.transport_stats();
        let retransmits: u64 = transport.peers.iter().map(|p| p.counters.retransmits).sum();
        serde_json::json!({
            "fabric": "software",
            "invalidations_sent": engine.invalidations_sent,
            "invalidations_received": engine.invalidations_received,
            "forwards_sent": engine.forwards_sent,
            "requests_queued": engine.requests_queued,
            "pages_received": engine.pages_received,
            "retransmits": retransmits,
            "transport": transport,
        })
    }

    fn start(self: Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("fabric-rx".into())
            .spawn(move || self.receive_loop())
    }

    fn stop(&self) -> serde_json::Value {
        self.drain();
        self.transport.shutdown();
        self.stats_json()
    }

    fn into_resolver(self: Arc<Self>) -> Arc<dyn PageResolver> {
        self
    }
}

impl PageResolver for SoftwareFabric {
    fn fetch(&self, _memory: &Arc<LogicalMemory>, request: FetchRequest) {
        let fault = self.core.intake(&request);
        self.run_engine(|engine, applier| {
            engine.fault(
                LocalFault {
                    page: LogicalPage(fault.page),
                    write: fault.write,
                    vp: fault.vp,
                },
                applier,
            )
        });
    }
}

#[cfg(test)]
mod tests;
