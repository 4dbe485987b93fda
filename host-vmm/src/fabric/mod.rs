//! The software fabric: the coherence engine of `nic-firmware` run on host threads over
//! the node-to-node transport, plus the control messages that make VPs on different
//! nodes one virtual server (IPIs, remote VP start, console lines, exit).
//!
//! Threads: the memory fault thread calls [`Fabric::fetch`] (through
//! [`crate::memory::PageResolver`]) for pages the local copy cannot serve; one receive
//! thread feeds wire messages to the engine or to the control handlers. The engine sits
//! behind one mutex and its actions are applied while it is held, which is the simplest
//! way to meet the engine's ordering rule (actions on one page take effect in emission
//! order); the work under the lock is a 4 KiB copy and one or two syscalls.

mod apply;
mod control;
mod core;
mod offload;
mod stats;

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use dpdk_transport::{Event, NodeId, Transport};
use log::warn;
use nic_firmware::engine::{
    DirEntry, Engine, EngineConfig, EngineStorage, HomeMap, HomeRequest, LocalFault, LogicalPage,
    PageState as EngineState, PendingFault,
};
use vima::wire::{self, Body, Message, MAX_MESSAGE_BYTES};

use crate::memory::{FetchRequest, LogicalMemory, PageResolver, PageState};
use crate::server::{Outcome, VirtualServer};

pub use self::core::{FabricCore, Intake};
pub use offload::{NicProcess, OffloadError, OffloadFabric};
pub use stats::{FabricStats, FabricStatsSnapshot, FaultKindLatency};

/// The virtual server id on the wire when the description names none.
pub const DEFAULT_VS_ID: u16 = 1;

static VS_ID: OnceLock<u16> = OnceLock::new();

/// Sets the virtual server this process serves, once, at start (`[server] vs_id`); false
/// if another one was set before. A node process and its NIC model serve exactly one
/// virtual server: several virtual servers on one cluster are several processes per
/// machine, each with its own memory, engine, ports and key (docs/design.md), so the id
/// is a property of the process.
pub fn set_vs_id(id: u16) -> bool {
    VS_ID.set(id).is_ok() || vs_id() == id
}

/// The virtual server this process serves: messages naming another are refused.
pub fn vs_id() -> u16 {
    VS_ID.get().copied().unwrap_or(DEFAULT_VS_ID)
}

/// Why the fabric could not start.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    /// The engine refused its configuration.
    #[error("Failed to start the coherence engine: {0:?}")]
    Engine(nic_firmware::engine::EngineError),
    /// The home map could not be built from the configuration.
    #[error("Failed to read the memory ranges of the configuration: {0:?}")]
    Config(vima::config::ConfigError),
    /// Setting the initial page states failed.
    #[error("Failed to set the initial page states")]
    Memory(#[from] crate::memory::MemoryError),
    /// The receive thread could not start.
    #[error("Failed to start the fabric receive thread")]
    Thread(#[source] std::io::Error),
}

/// What a node's virtual server needs from its fabric, whichever path (host threads or
/// a NIC) runs the coherence engine: control messages to other nodes, VP thread
/// registration for fault steering, and counters for `--stats-json`.
pub trait ClusterLink: Send + Sync + std::fmt::Debug {
    /// Records the calling thread as VP `vp`'s.
    fn register_vp_thread(&self, vp: u32);
    /// Sends a control message (IPI, VpStart, ConsoleLine, VsExit) to `node`.
    fn send_control(&self, node: u32, body: Body<'_>);
    /// Sends a control message to every node but this one.
    fn broadcast(&self, nodes: u32, body: Body<'_>);
    /// Counters of the fabric, the engine and the wire, as JSON object members.
    fn stats_json(&self) -> serde_json::Value;
}

/// One node's software fabric.
pub struct Fabric {
    node: u16,
    engine: Mutex<Engine<'static>>,
    transport: Arc<dyn Transport>,
    memory: Arc<LogicalMemory>,
    server: OnceLock<Weak<VirtualServer>>,
    /// Fault intake, counters and latencies (shared with the offload fabric).
    pub core: FabricCore,
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Leaks a table for the engine: the engine borrows its storage for the life of the node
/// process (it is firmware-shaped: fixed tables, no allocation).
fn table<T: Clone>(len: usize, fill: T) -> &'static mut [T] {
    Box::leak(vec![fill; len].into_boxed_slice())
}

impl Fabric {
    /// Builds the engine for `node` from the configuration table and sets the initial
    /// page states: pages homed here (and the per-node region) Exclusive, the rest Invalid.
    pub fn new(
        config_table: &[u8],
        node: u32,
        local_vps: &[u32],
        memory: Arc<LogicalMemory>,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Self>, FabricError> {
        let config = vima::config::Config::parse(config_table).map_err(FabricError::Config)?;
        let homes = HomeMap::from_config(&config).map_err(FabricError::Engine)?;
        let node16 = u16::try_from(node).expect("node ids are below MAX_NODES");
        let nodes = u16::try_from(config.node_count()).expect("at most MAX_NODES");
        let pages = usize::try_from(homes.page_limit()).expect("page count fits");
        let directory = usize::try_from(homes.home_page_count(node16)).expect("page count fits");
        let pending = local_vps.len() + 4;
        let requests = pending + config.vp_count() * 2 + 8;
        let storage = EngineStorage {
            local: table(pages, EngineState::Invalid),
            directory: table(directory, DirEntry::default()),
            pending: table(pending, PendingFault::default()),
            requests: table(requests, HomeRequest::default()),
        };
        let engine_config = EngineConfig {
            vs_id: vs_id(),
            node: node16,
            node_count: nodes,
        };
        let engine = Engine::new(engine_config, homes, storage).map_err(FabricError::Engine)?;
        let core = FabricCore::new(node16, homes, local_vps, memory.clone())?;
        Ok(Arc::new(Fabric {
            node: node16,
            engine: Mutex::new(engine),
            transport,
            memory,
            server: OnceLock::new(),
            core,
        }))
    }

    /// Connects the fabric to the server it serves (control messages need it).
    pub fn attach(&self, server: &Arc<VirtualServer>) {
        let _ = self.server.set(Arc::downgrade(server));
    }

    fn server(&self) -> Option<Arc<VirtualServer>> {
        self.server.get().and_then(Weak::upgrade)
    }

    /// This node.
    pub fn node(&self) -> u32 {
        u32::from(self.node)
    }

    /// Records the calling thread as VP `vp`'s (faults are steered by thread).
    pub fn register_vp_thread(&self, vp: u32) {
        self.core.register_vp_thread(vp);
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

    /// Sends a control message to `node`.
    pub fn send_control(&self, node: u32, body: Body<'_>) {
        let dst = u16::try_from(node).expect("node ids are below MAX_NODES");
        self.send(&Message {
            vs_id: vs_id(),
            src: self.node,
            dst,
            request_id: 0,
            body,
        });
    }

    /// Sends a control message to every other node.
    pub fn broadcast(&self, nodes: u32, body: Body<'_>) {
        for node in (0..nodes).filter(|n| *n != u32::from(self.node)) {
            self.send_control(node, body);
        }
    }

    /// Runs the engine on one input and applies its actions, under the engine lock.
    fn run_engine<F>(&self, input: F)
    where
        F: FnOnce(
            &mut Engine<'static>,
            &mut apply::Applier<'_>,
        ) -> Result<(), nic_firmware::engine::EngineError>,
    {
        let mut engine = self.engine.lock().expect("engine lock");
        let mut applier = apply::Applier::new(self);
        if let Err(e) = input(&mut engine, &mut applier) {
            self.core.stats.count_engine_error();
            warn!("coherence engine refused an input: {e:?}");
        }
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
    }

    /// Starts the receive thread; it ends when the server ends.
    pub fn spawn_receiver(self: &Arc<Self>) -> Result<JoinHandle<()>, FabricError> {
        let fabric = self.clone();
        std::thread::Builder::new()
            .name("fabric-rx".into())
            .spawn(move || fabric.receive_loop())
            .map_err(FabricError::Thread)
    }

    fn receive_loop(&self) {
        loop {
            let finished = self.server().is_none_or(|s| s.is_finished());
            if finished {
                return;
            }
            match self.transport.recv(Duration::from_millis(50)) {
                Ok(Some(Event::Message { from, payload })) => {
                    self.on_message(from, payload.as_ref())
                }
                Ok(Some(Event::PeerDown(node))) => {
                    if let Some(server) = self.server() {
                        server.finish(Outcome::VmmError(format!(
                            "node {} stopped responding; stopping the virtual server",
                            node.0
                        )));
                    }
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    if let Some(server) = self.server() {
                        server.finish(Outcome::VmmError(format!(
                            "the node-to-node transport failed: {e}"
                        )));
                    }
                    return;
                }
            }
        }
    }

    fn on_message(&self, from: NodeId, bytes: &[u8]) {
        let msg = match wire::decode(bytes) {
            Ok(msg)
                if u32::from(msg.src) == from.0 && msg.dst == self.node && msg.vs_id == vs_id() =>
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
        if msg.body.kind().is_coherence() {
            self.run_engine(|engine, applier| engine.receive(&msg, applier));
        } else if let Some(server) = self.server() {
            control::handle(&self.core.stats, &server, &msg);
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

    /// Stops the transport (at exit).
    pub fn shutdown(&self) {
        self.transport.shutdown();
    }
}

impl ClusterLink for Fabric {
    fn register_vp_thread(&self, vp: u32) {
        Fabric::register_vp_thread(self, vp);
    }

    fn send_control(&self, node: u32, body: Body<'_>) {
        Fabric::send_control(self, node, body);
    }

    fn broadcast(&self, nodes: u32, body: Body<'_>) {
        Fabric::broadcast(self, nodes, body);
    }

    fn stats_json(&self) -> serde_json::Value {
        let engine = self.engine_counters();
        let transport = self.transport_stats();
        let retransmits: u64 = transport.peers.iter().map(|p| p.counters.retransmits).sum();
        let mut value = serde_json::to_value(self.core.stats.snapshot()).expect("stats serialize");
        let extra = serde_json::json!({
            "fabric": "software",
            "invalidations_sent": engine.invalidations_sent,
            "invalidations_received": engine.invalidations_received,
            "forwards_sent": engine.forwards_sent,
            "requests_queued": engine.requests_queued,
            "pages_received": engine.pages_received,
            "retransmits": retransmits,
            "transport": transport,
        });
        if let (Some(obj), Some(more)) = (value.as_object_mut(), extra.as_object()) {
            obj.extend(more.clone());
        }
        value
    }
}

impl PageResolver for Fabric {
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
