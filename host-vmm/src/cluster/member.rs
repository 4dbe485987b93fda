//! One member of a cluster, from its description to a finished node: the node's wire
//! endpoint (software path) or its NIC (offload path), the Linux program's part, the
//! [`NodeBuilder`], and the run. `cvmm node` is this plus printing; `cvmm nic` uses the
//! same wire endpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dpdk_transport::dpdk::{DpdkDatagram, DpdkError};
use dpdk_transport::{
    LossyDatagram, NodeId, ReliableTransport, Transport, TransportConfig, TransportError,
    UdpDatagram,
};
use thiserror::Error;
use vfio::client::{ClientError, UserClient};

use super::config::{ClusterConfig, ClusterConfigError, FabricKind, TransportKind};
use super::wire::{self, WireSettingsError};
use crate::boot::elf;
use crate::devices::console::StdoutSink;
use crate::fabric::NicProcess;
use crate::guest_image::GUEST_ELF;
use crate::node::{FabricSpec, LinuxSpec, NodeBuilder, NodeError, NodeReport};

/// How long a node waits for its NIC model to come up.
const NIC_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a member could not run.
#[derive(Debug, Error)]
pub enum MemberError {
    /// The description does not load.
    #[error(transparent)]
    Config(#[from] ClusterConfigError),
    /// The node is not in the description.
    #[error("node id {id} is not in the cluster description ({nodes} nodes)")]
    NoSuchNode {
        /// The id asked for.
        id: u32,
        /// Nodes described.
        nodes: usize,
    },
    /// The wire settings (key, injected faults) are unusable.
    #[error(transparent)]
    WireSettings(#[from] WireSettingsError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {address}")]
    Listen {
        /// The node's address.
        address: std::net::SocketAddr,
        /// Why not.
        #[source]
        source: dpdk_transport::DatagramError,
    },
    /// The DPDK port did not come up.
    #[error("cannot open the DPDK wire")]
    Dpdk(#[from] DpdkError),
    /// The reliable transport did not start.
    #[error("cannot start the transport")]
    Transport(#[from] TransportError),
    /// The NIC model process could not be started.
    #[error("failed to start the NIC process")]
    NicSpawn(#[source] std::io::Error),
    /// The NIC model process ended before it served.
    #[error("the NIC process of node {id} {how} before it served")]
    NicEnded {
        /// The node.
        id: u32,
        /// How it ended.
        how: String,
    },
    /// The NIC's socket did not answer.
    #[error("cannot reach the NIC at {}", socket.display())]
    NicUnreachable {
        /// The vfio-user socket.
        socket: PathBuf,
        /// The last attempt's error.
        #[source]
        source: ClientError,
    },
    /// The Linux program cannot be run.
    #[error("{}: {sentence}", path.display())]
    Program {
        /// The program.
        path: PathBuf,
        /// Why not, in one sentence.
        sentence: String,
    },
    /// The node could not be built or run.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// The node's wire endpoint: its address in the description, reliable transport to the
/// other nodes. The node owns it on the software path, its NIC on the offload path.
pub fn transport_for(config: &ClusterConfig, id: u32) -> Result<Arc<dyn Transport>, MemberError> {
    let me = config
        .nodes
        .get(id as usize)
        .ok_or(MemberError::NoSuchNode {
            id,
            nodes: config.nodes.len(),
        })?;
    let seed = u64::from(std::process::id()) << 8 | u64::from(id);
    let faults = wire::wire_faults(config, seed)?;
    let (auth, authenticated) = wire::authenticator(config)?;
    if !authenticated {
        eprintln!(
            "cvmm: node {id}: no [cluster] key_file or key_hex: node-to-node packets are \
             NOT authenticated"
        );
    }
    let tuning = TransportConfig {
        cluster_id: wire::transport_cluster_id(config),
        dead_after_ms: config.cluster.peer_timeout_ms,
        ..TransportConfig::default()
    };
    match config.cluster.transport {
        TransportKind::Udp => {
            let socket = UdpDatagram::bind(me.address).map_err(|source| MemberError::Listen {
                address: me.address,
                source,
            })?;
            let peers: Vec<_> = config
                .nodes
                .iter()
                .filter(|n| n.id != id)
                .map(|n| (NodeId(n.id), n.address))
                .collect();
            let lossy = LossyDatagram::new(socket, faults);
            let transport =
                ReliableTransport::with_authenticator(lossy, NodeId(id), &peers, tuning, auth)?;
            Ok(Arc::new(transport))
        }
        TransportKind::Dpdk => {
            let (endpoint, peers) = config.dpdk_endpoint(id)?;
            // Returns once every link is up (a memif link needs the peer's process), or
            // fails after a while naming the port that stayed down.
            let port = DpdkDatagram::open(&endpoint)?;
            let lossy = LossyDatagram::new(port, faults);
            let transport =
                ReliableTransport::with_authenticator(lossy, NodeId(id), &peers, tuning, auth)?;
            Ok(Arc::new(transport))
        }
    }
}

/// The NIC of node `id`: the one at its `nic_socket`, or a `cvmm nic` process started
/// here (with the description at `config_path`), once it answers.
fn connect_nic(
    config: &ClusterConfig,
    config_path: &Path,
    id: u32,
) -> Result<(UserClient, Option<NicProcess>), MemberError> {
    let given = config
        .nodes
        .get(id as usize)
        .and_then(|n| n.nic_socket.clone());
    let (socket, mut process) = match given {
        Some(socket) => (socket, None),
        None => {
            let socket =
                std::env::temp_dir().join(format!("cvmm-nic-{}-{id}.sock", std::process::id()));
            let _ = std::fs::remove_file(&socket);
            let process =
                NicProcess::spawn(config_path, id, &socket).map_err(MemberError::NicSpawn)?;
            (socket, Some(process))
        }
    };
    let deadline = Instant::now() + NIC_CONNECT_TIMEOUT;
    loop {
        match UserClient::connect(&socket, Duration::from_millis(100)) {
            Ok(client) => return Ok((client, process)),
            Err(source) => {
                if let Some(how) = process.as_mut().and_then(NicProcess::ended) {
                    return Err(MemberError::NicEnded { id, how });
                }
                if Instant::now() > deadline {
                    return Err(MemberError::NicUnreachable { socket, source });
                }
            }
        }
    }
}

/// A member that ran: its report (the fabric's counters included) and whether it ran a
/// Linux program (whose stderr is the program's alone).
#[derive(Debug)]
pub struct MemberRun {
    /// What the node reports.
    pub report: NodeReport,
    /// The server ran a Linux program.
    pub runs_program: bool,
}

/// Runs node `id` of the cluster described at `config_path` until its server ends,
/// serving its management API at `api_socket` if given.
pub fn run_member(
    config_path: &Path,
    id: u32,
    api_socket: Option<PathBuf>,
) -> Result<MemberRun, MemberError> {
    let config = ClusterConfig::load(config_path)?;
    if config.program.is_some() && std::env::var_os("RUST_LOG").is_none() {
        // A Linux program's stderr is the program's: the VMM's warnings (a frame
        // dropped at shutdown) stay out of it; its errors still show.
        log::set_max_level(log::LevelFilter::Error);
    }
    let cfg = config.node_config(id);
    if id >= cfg.nodes {
        return Err(MemberError::NoSuchNode {
            id,
            nodes: config.nodes.len(),
        });
    }
    let image = elf::parse(GUEST_ELF, cfg.logical_bytes()).map_err(NodeError::from)?;
    let vs_id = config.server.vs_id;
    let fabric = match config.fabric_of(id) {
        FabricKind::Software => FabricSpec::Software {
            vs_id,
            transport: transport_for(&config, id)?,
        },
        FabricKind::Offload => {
            let (client, process) = connect_nic(&config, config_path, id)?;
            FabricSpec::Offload {
                vs_id,
                nic: Box::new(client),
                process,
            }
        }
    };
    let mut builder = NodeBuilder::new(&cfg, &image, Box::new(StdoutSink { tag_node: true }))
        .fabric(fabric)
        .api_socket(api_socket);
    if let Some(spec) = &config.program {
        builder = builder.linux(if id == 0 {
            let home_end = config.server.mem_mib_per_node << 20;
            let program =
                spec.prepare(image.end, home_end)
                    .map_err(|sentence| MemberError::Program {
                        path: spec.path.clone(),
                        sentence,
                    })?;
            LinuxSpec::Load {
                program,
                root: spec.root.clone(),
            }
        } else {
            LinuxSpec::Threads
        });
    }
    let report = builder.build()?.run()?;
    Ok(MemberRun {
        report,
        runs_program: config.program.is_some(),
    })
}
