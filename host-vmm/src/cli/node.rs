//! `cvmm node`: one node of a cluster described by a TOML file (on a rack, one per
//! machine; `cvmm run --nodes M` starts M of them on this machine).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use dpdk_transport::dpdk::DpdkDatagram;
use dpdk_transport::{
    LossyDatagram, NodeId, ReliableTransport, Transport, TransportConfig, UdpDatagram,
};

use super::run::error_chain;
use crate::boot::elf;
use crate::cluster::config::{ClusterConfig, FabricKind, TransportKind};
use crate::cluster::wire;
use crate::devices::console::StdoutSink;
use crate::fabric::{ClusterLink, Fabric, NicProcess, OffloadFabric};
use crate::guest_image::GUEST_ELF;
use crate::memory::PageResolver;
use crate::node::{Node, NodeConfig, NodeReport};
use crate::server::Outcome;
use vfio::client::UserClient;

/// Arguments of `cvmm node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The cluster description (`cluster.toml`; its keys are in host-vmm/src/cluster/config.rs
    /// and examples/cluster.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// This node's id in the description.
    #[arg(long)]
    pub id: u32,
    /// Write this node's counters as JSON to this file at exit.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
}

/// Runs the node; returns the exit status.
pub fn node(args: &NodeArgs) -> i32 {
    match run_node(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("cvmm node {}: {message}", args.id);
            1
        }
    }
}

/// The node's wire endpoint: its address in the description, reliable transport to the
/// other nodes. The node owns it on the software path, its NIC on the offload path.
pub(crate) fn transport_for(config: &ClusterConfig, id: u32) -> Result<Arc<dyn Transport>, String> {
    let me = config.nodes.get(id as usize).ok_or_else(|| {
        format!(
            "node id {id} is not in the cluster description ({} nodes)",
            config.nodes.len()
        )
    })?;
    let seed = u64::from(std::process::id()) << 8 | u64::from(id);
    let faults = wire::wire_faults(config, seed).map_err(|e| error_chain(&e))?;
    let (auth, authenticated) = wire::authenticator(config).map_err(|e| error_chain(&e))?;
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
    let started = |e: dpdk_transport::TransportError| {
        format!("cannot start the transport: {}", error_chain(&e))
    };
    match config.cluster.transport {
        TransportKind::Udp => {
            let socket = UdpDatagram::bind(me.address)
                .map_err(|e| format!("cannot listen on {}: {}", me.address, error_chain(&e)))?;
            let peers: Vec<_> = config
                .nodes
                .iter()
                .filter(|n| n.id != id)
                .map(|n| (NodeId(n.id), n.address))
                .collect();
            let lossy = LossyDatagram::new(socket, faults);
            let transport =
                ReliableTransport::with_authenticator(lossy, NodeId(id), &peers, tuning, auth)
                    .map_err(started)?;
            Ok(Arc::new(transport))
        }
        TransportKind::Dpdk => {
            let (endpoint, peers) = config.dpdk_endpoint(id).map_err(|e| error_chain(&e))?;
            // Returns once every link is up (a memif link needs the peer's process), or
            // fails after a while naming the port that stayed down.
            let port = DpdkDatagram::open(&endpoint)
                .map_err(|e| format!("cannot open the DPDK wire: {}", error_chain(&e)))?;
            let lossy = LossyDatagram::new(port, faults);
            let transport =
                ReliableTransport::with_authenticator(lossy, NodeId(id), &peers, tuning, auth)
                    .map_err(started)?;
            Ok(Arc::new(transport))
        }
    }
}

fn run_node(args: &NodeArgs) -> Result<i32, String> {
    let config = ClusterConfig::load(&args.config).map_err(|e| error_chain(&e))?;
    crate::fabric::set_vs_id(config.server.vs_id);
    if config.program.is_some() && std::env::var_os("RUST_LOG").is_none() {
        // A Linux program's stderr is the program's: the VMM's warnings (a frame
        // dropped at shutdown) stay out of it; its errors still show.
        log::set_max_level(log::LevelFilter::Error);
    }
    let cfg = config.node_config(args.id);
    if args.id >= cfg.nodes {
        return Err(format!(
            "node id {} is not below the node count {}",
            args.id, cfg.nodes
        ));
    }
    let image = elf::parse(GUEST_ELF, cfg.logical_bytes()).map_err(|e| error_chain(&e))?;
    let (report, stats) = match config.fabric_of(args.id) {
        FabricKind::Software => run_software(&config, args.id, &cfg, &image)?,
        FabricKind::Offload => run_offload(&config, args, &cfg, &image)?,
    };
    match &report.outcome {
        Outcome::GuestFault(fault) => eprintln!("cvmm node {}: {fault}", args.id),
        Outcome::VmmError(msg) => eprintln!("cvmm node {}: {msg}", args.id),
        Outcome::Exited(_) | Outcome::AllStopped => {}
    }
    // A Linux program's stderr is the program's alone.
    if config.program.is_none() {
        eprintln!("{}", summary(&stats));
    }
    if let Some(path) = &args.stats_json {
        let json = serde_json::json!({ "nodes": [stats] });
        let text = serde_json::to_string_pretty(&json).expect("JSON values serialize");
        std::fs::write(path, text)
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    }
    Ok(report.outcome.exit_code())
}

/// A Linux program's part of this node: node 0 prepares and loads it, the others map the
/// system call trampoline for the threads they will run.
fn ready_program(
    node: &mut Node,
    config: &ClusterConfig,
    image: &elf::GuestImage<'_>,
) -> Result<(), String> {
    let Some(spec) = &config.program else {
        return Ok(());
    };
    if node.server.node_id != 0 {
        node.enable_linux();
        return Ok(());
    }
    let home_end = config.server.mem_mib_per_node << 20;
    let program = spec
        .prepare(image.end, home_end)
        .map_err(|sentence| format!("{}: {sentence}", spec.path.display()))?;
    if let Some(root) = &spec.root {
        node.set_root(root).map_err(|e| error_chain(&e))?;
    }
    node.load_program(&program).map_err(|e| error_chain(&e))
}

/// The software path: this process owns the wire and runs the engine.
fn run_software(
    config: &ClusterConfig,
    id: u32,
    cfg: &NodeConfig,
    image: &elf::GuestImage<'_>,
) -> Result<(NodeReport, serde_json::Value), String> {
    let transport = transport_for(config, id)?;
    let mut node = Node::create(cfg, image, Box::new(StdoutSink { tag_node: true }))
        .map_err(|e| error_chain(&e))?;
    ready_program(&mut node, config, image)?;
    let server = node.server.clone();
    let local: Vec<u32> = node.vcpus.iter().map(|(vp, _)| *vp).collect();
    let fabric = Fabric::new(
        &server.config_table,
        id,
        &local,
        server.memory.clone(),
        transport.clone(),
    )
    .map_err(|e| error_chain(&e))?;
    fabric.attach(&server);
    server
        .fabric
        .set(fabric.clone() as Arc<dyn ClusterLink>)
        .expect("the fabric is set once");
    let receiver = fabric.spawn_receiver().map_err(|e| error_chain(&e))?;
    let resolver: Arc<dyn PageResolver> = fabric.clone();
    let report = node.run_with(resolver).map_err(|e| error_chain(&e))?;
    drain(transport.as_ref());
    fabric.shutdown();
    let _ = receiver.join();
    let stats = node_stats(&report, fabric.as_ref());
    Ok((report, stats))
}

/// How long a node waits for its NIC model to come up.
const NIC_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The offload path: the node's NIC (a `cvmm nic` process this node starts, or one at
/// `nic_socket`) owns the wire and runs the engine; this process keeps the mappings.
fn run_offload(
    config: &ClusterConfig,
    args: &NodeArgs,
    cfg: &NodeConfig,
    image: &elf::GuestImage<'_>,
) -> Result<(NodeReport, serde_json::Value), String> {
    let id = args.id;
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
            let process = NicProcess::spawn(&args.config, id, &socket)
                .map_err(|e| format!("failed to start the NIC process: {e}"))?;
            (socket, Some(process))
        }
    };
    let deadline = Instant::now() + NIC_CONNECT_TIMEOUT;
    let client = loop {
        match UserClient::connect(&socket, Duration::from_millis(100)) {
            Ok(client) => break client,
            Err(e) => {
                if let Some(how) = process.as_mut().and_then(NicProcess::ended) {
                    return Err(format!(
                        "the NIC process of node {id} {how} before it served"
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "cannot reach the NIC at {}: {}",
                        socket.display(),
                        error_chain(&e)
                    ));
                }
            }
        }
    };
    let mut node = Node::create(cfg, image, Box::new(StdoutSink { tag_node: true }))
        .map_err(|e| error_chain(&e))?;
    ready_program(&mut node, config, image)?;
    let server = node.server.clone();
    let local: Vec<u32> = node.vcpus.iter().map(|(vp, _)| *vp).collect();
    let fabric = OffloadFabric::connect(
        Box::new(client),
        &server.config_table,
        id,
        &local,
        server.memory.clone(),
        process,
    )
    .map_err(|e| error_chain(&e))?;
    fabric.attach(&server);
    server
        .fabric
        .set(fabric.clone() as Arc<dyn ClusterLink>)
        .expect("the fabric is set once");
    let interrupts = fabric
        .spawn_interrupt_thread()
        .map_err(|e| error_chain(&e))?;
    let resolver: Arc<dyn PageResolver> = fabric.clone();
    let report = node.run_with(resolver).map_err(|e| error_chain(&e))?;
    let stats = node_stats(&report, fabric.as_ref());
    fabric.shutdown();
    let _ = interrupts.join();
    Ok((report, stats))
}

/// Lets the last messages (the exit broadcast) reach the peers before the transport stops.
fn drain(transport: &dyn Transport) {
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        let stats = transport.stats();
        if stats.peers.iter().all(|p| p.in_flight == 0 || !p.alive) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The per-node JSON: VP counters and memory faults, plus the fabric's counters.
pub fn node_stats(report: &NodeReport, link: &dyn ClusterLink) -> serde_json::Value {
    let mut value = serde_json::to_value(report).expect("reports serialize");
    if let (Some(obj), Some(more)) = (value.as_object_mut(), link.stats_json().as_object()) {
        obj.extend(more.clone());
    }
    value
}

/// One line for people: what the node did.
pub fn summary(stats: &serde_json::Value) -> String {
    let n = |k: &str| {
        stats
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let lat = &stats["fault_latency_us"];
    format!(
        "cvmm: node {}: {} remote read faults, {} remote write faults, {} upgrades, \
         {} invalidations sent, {} received, {} pages sent, {} retransmits; \
         remote fault p50 {:.0} us p99 {:.0} us",
        n("id"),
        n("remote_read_faults"),
        n("remote_write_faults"),
        n("upgrades"),
        n("invalidations_sent"),
        n("invalidations_received"),
        n("pages_sent"),
        n("retransmits"),
        lat["p50"].as_f64().unwrap_or(0.0),
        lat["p99"].as_f64().unwrap_or(0.0),
    )
}
