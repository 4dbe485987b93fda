//! One node: [`NodeBuilder`] assembles it (the KVM VM, logical memory, page tables, the
//! guest, the control plane, the fabric, the server), [`Node::run`] starts its threads
//! and waits for the virtual server to end.

mod builder;
mod config;
mod error;

use std::sync::Arc;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::Serialize;
use vima::layout::BOOT_STACK_TOP;

use crate::boot::elf;
use crate::devices::console::ConsoleSink;
use crate::memory::{LocalResolver, PageResolver};
use crate::metrics::VmmStatsSnapshot;
use crate::server::{Outcome, VirtualServer};
use crate::vp::{spawn_vp_thread, RunState};

use builder::PrivateRegion;
pub use builder::{FabricSpec, LinuxSpec, NodeBuilder, KVM_DEVICE_ENV};
pub use config::{build_config_table, config_table_at, NodeConfig};
pub use error::NodeError;

/// A node's counters, as `--stats-json` and the management API's `/v1/stats` give them.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCounters {
    /// Node id.
    pub id: u32,
    /// VP-side counters.
    #[serde(flatten)]
    pub vmm: VmmStatsSnapshot,
    /// Memory counters.
    #[serde(flatten)]
    pub memory: crate::memory::FaultStatsSnapshot,
    /// The fabric's counters (none on a single node): engine, wire or NIC.
    #[serde(flatten)]
    pub fabric: serde_json::Map<String, serde_json::Value>,
}

impl NodeCounters {
    /// The counters of `server` now, with the fabric's as `fabric` (its `stats_json`).
    pub fn of(server: &VirtualServer, fabric: serde_json::Value) -> Self {
        NodeCounters {
            id: server.node_id,
            vmm: server.stats.snapshot(),
            memory: server.memory.fault_stats().snapshot(),
            fabric: match fabric {
                serde_json::Value::Object(members) => members,
                _ => serde_json::Map::new(),
            },
        }
    }

    /// The counters of a running node's `server`.
    pub fn live(server: &VirtualServer) -> Self {
        let fabric = server
            .fabric
            .as_ref()
            .map_or(serde_json::Value::Null, |f| f.stats_json());
        Self::of(server, fabric)
    }
}

/// What a node reports when its server ended.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// The counters at the end.
    #[serde(flatten)]
    pub counters: NodeCounters,
    /// How the server ended, in words.
    #[serde(skip)]
    pub outcome: Outcome,
    /// Every console line, in order.
    #[serde(skip)]
    pub console: Vec<String>,
}

/// A node set up and ready to run: VM, memory, image loaded, VP threads not yet started.
#[derive(Debug)]
pub struct Node {
    /// The virtual server state shared by this node's threads.
    pub server: Arc<VirtualServer>,
    /// The management API, while the node runs (`--api-socket`).
    #[allow(dead_code)]
    api: Option<crate::api::ApiServer>,
    /// vCPUs of the VPs on this node, in VP order (taken by [`Node::run`]).
    pub vcpus: Vec<(u32, VcpuFd)>,
    entry: u64,
    // Drop order: the VM before the memory it maps.
    #[allow(dead_code)]
    vm: VmFd,
    #[allow(dead_code)]
    kvm: Kvm,
    #[allow(dead_code)]
    private_region: PrivateRegion,
}

impl Node {
    /// A single node of shape `cfg` booting `image` (a built-in workload or a raw guest):
    /// the builder with nothing added.
    pub fn create(
        cfg: &NodeConfig,
        image: &elf::GuestImage<'_>,
        sink: Box<dyn ConsoleSink>,
    ) -> Result<Node, NodeError> {
        NodeBuilder::new(cfg, image, sink).build()
    }

    /// Runs until the virtual server ends: the fabric's thread, the fault handler (pages
    /// not valid here go to the fabric), the timers and one thread per local VP; VP 0
    /// boots at the image entry on node 0. Then stops the fabric and reports.
    pub fn run(mut self) -> Result<NodeReport, NodeError> {
        let server = self.server.clone();
        let memory = server.memory.clone();
        let fabric_thread = match &server.fabric {
            Some(fabric) => Some(fabric.clone().start().map_err(NodeError::Thread)?),
            None => None,
        };
        let resolver: Arc<dyn PageResolver> = match &server.fabric {
            Some(fabric) => fabric.clone().into_resolver(),
            None => Arc::new(LocalResolver),
        };
        let fault_handler = memory.spawn_fault_handler_with(resolver)?;
        let timer_server = server.clone();
        let timer_thread = server
            .timers
            .spawn(Box::new(move |vp, vector| {
                let _ = timer_server.post_interrupt(vp, vector);
            }))
            .map_err(NodeError::Thread)?;
        let mut threads = Vec::new();
        for (vp, vcpu) in std::mem::take(&mut self.vcpus) {
            let control = server.vp(vp).expect("local VPs exist").clone();
            match spawn_vp_thread(server.clone(), vcpu, control) {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    server.finish(Outcome::VmmError(format!("failed to start VP thread: {e}")));
                    break;
                }
            }
        }
        if server.node_id == 0 && !server.is_finished() {
            let boot = RunState::StartRequested {
                entry: self.entry,
                stack_top: BOOT_STACK_TOP,
                arg: 0,
            };
            let vp0 = server.vp(0).expect("every server has VP 0");
            server.start_vp(vp0, boot).expect("VP 0 starts stopped");
        }
        let outcome = server.wait();
        server.timers.stop();
        for handle in threads {
            let _ = handle.join();
        }
        let _ = timer_thread.join();
        drop(fault_handler);
        let fabric = match &server.fabric {
            Some(fabric) => fabric.stop(),
            None => serde_json::Value::Null,
        };
        if let Some(thread) = fabric_thread {
            let _ = thread.join();
        }
        let console = server.control.console();
        console.flush(server.node_id);
        Ok(NodeReport {
            counters: NodeCounters::of(&server, fabric),
            outcome,
            console: console.lines(),
        })
    }
}

/// Runs a single node's virtual server from an ELF guest image until it ends.
pub fn run_node(
    cfg: &NodeConfig,
    guest_elf: &[u8],
    sink: Box<dyn ConsoleSink>,
) -> Result<NodeReport, NodeError> {
    let image = elf::parse(guest_elf, cfg.logical_bytes())?;
    Node::create(cfg, &image, sink)?.run()
}
