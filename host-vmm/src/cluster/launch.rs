//! `cvmm run` with several nodes: writes a cluster description, starts one `cvmm node`
//! process per node, watches them, and merges their statistics.
//!
//! A node process that dies takes the server down: the others notice through the
//! transport's liveness check and stop naming it; the launcher also notices the exit,
//! says which node died, and kills whatever still runs after a grace period, so nothing
//! hangs.

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::api::ClusterApi;
use super::config::{
    ClusterConfig, ClusterSection, DpdkLinkKind, DpdkSection, FabricKind, NodeDpdk, NodeEntry,
    ServerSection, TransportKind,
};
use super::netns::NetnsCluster;
use super::wire::write_key_file;
use crate::api::ApiServer;
use crate::boot::invocation::ProgramSpec;
use crate::error::error_chain;
use dpdk_transport::ClusterKey;

/// What `cvmm run` asked for.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Nodes.
    pub nodes: u32,
    /// VPs per node.
    pub vps_per_node: u32,
    /// MiB of logical memory per node.
    pub mem_mib: u64,
    /// Guest command line.
    pub cmdline: String,
    /// Injected wire loss.
    pub wire_loss: f64,
    /// One network namespace per node.
    pub netns: bool,
    /// Merged statistics go here.
    pub stats_json: Option<PathBuf>,
    /// Fabric of each node, repeated over the nodes (`[offload]`, `[software, offload]`).
    pub fabrics: Vec<FabricKind>,
    /// The wire: UDP, or DPDK (memif between the processes, or af_packet on each
    /// namespace's veth with `netns`).
    pub transport: TransportKind,
    /// The virtual server's id on the wire (`cvmm run --servers` gives each its own).
    pub vs_id: u16,
    /// The Linux program to run, if any (`cmdline` is then `linux ...`).
    pub program: Option<ProgramSpec>,
    /// Serve the management API for the whole server here.
    pub api_socket: Option<PathBuf>,
}

impl LaunchOptions {
    /// The fabric of node `node`.
    pub fn fabric_of(&self, node: u32) -> FabricKind {
        match self.fabrics.len() {
            0 => FabricKind::Software,
            len => self.fabrics[node as usize % len],
        }
    }
}

/// How long the other nodes get to stop by themselves after one ended.
const GRACE: Duration = Duration::from_secs(8);
/// Port the nodes listen on inside their own namespaces.
const NETNS_PORT: u16 = 7100;

fn free_loopback_ports(count: u32) -> std::io::Result<Vec<SocketAddr>> {
    // Hold every socket until all are chosen so the kernel hands out distinct ports.
    let sockets: Vec<UdpSocket> = (0..count)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    sockets.iter().map(UdpSocket::local_addr).collect()
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_string(),
    }
}

struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the cluster, waits for it, returns the exit status for `cvmm`.
pub fn launch(opts: &LaunchOptions) -> i32 {
    match try_launch(opts) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("cvmm: {message}");
            1
        }
    }
}

/// A new directory of this run's own, readable by this user only. The name has the pid
/// and a counter: a run that was killed leaves its directory behind, and a later process
/// can get the same pid, so an existing directory is never reused.
fn fresh_run_dir() -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let pid = std::process::id();
    let mut last = None;
    for attempt in 0..1000u32 {
        let dir = base.join(format!("cvmm-run-{pid}-{attempt}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(dir),
            Err(e) => return Err(format!("failed to create {}: {e}", dir.display())),
        }
    }
    Err(format!(
        "failed to create a run directory: {} and 999 others exist",
        last.map_or_else(String::new, |d| d.display().to_string())
    ))
}

fn try_launch(opts: &LaunchOptions) -> Result<i32, String> {
    let dir = RunDir(fresh_run_dir()?);
    let netns = if opts.netns {
        Some(NetnsCluster::create(opts.nodes).map_err(|e| crate::error::error_chain(&e))?)
    } else {
        None
    };
    let addresses: Vec<SocketAddr> = match &netns {
        Some(ns) => (0..opts.nodes)
            .map(|n| SocketAddr::new(ns.address(n), NETNS_PORT))
            .collect(),
        None => free_loopback_ports(opts.nodes)
            .map_err(|e| format!("failed to find free ports: {e}"))?,
    };
    // A fresh key per run, readable by this user only: every packet between the nodes
    // is authenticated under it.
    let key_file = dir.0.join("cluster.key");
    let key = ClusterKey::generate()
        .map_err(|e| format!("cannot make a cluster key: {}", error_chain(&e)))?;
    write_key_file(&key_file, &key)
        .map_err(|e| format!("failed to write {}: {e}", key_file.display()))?;
    let dpdk = opts.transport == TransportKind::Dpdk;
    let node_dpdk = |node: u32| -> Result<Option<NodeDpdk>, String> {
        match (&netns, dpdk) {
            (Some(ns), true) => Ok(Some(NodeDpdk {
                port: Some(netns_iface(&ns.namespace(node))?),
                eal_args: None,
            })),
            _ => Ok(None),
        }
    };
    let config = ClusterConfig {
        dpdk: dpdk.then(|| DpdkSection {
            link: if netns.is_some() {
                DpdkLinkKind::AfPacket
            } else {
                DpdkLinkKind::Memif
            },
            // Unique per run: memif sockets are abstract names shared by the machine.
            memif_socket_prefix: format!("cvmm-{}", std::process::id()),
            ..DpdkSection::default()
        }),
        cluster: ClusterSection {
            transport: opts.transport,
            fabric: opts.fabric_of(0),
            wire_loss: opts.wire_loss,
            peer_timeout_ms: 3000,
            key_file: Some(key_file),
            key_hex: None,
        },
        server: ServerSection {
            vps_per_node: opts.vps_per_node,
            mem_mib_per_node: opts.mem_mib,
            cmdline: opts.cmdline.clone(),
            vs_id: opts.vs_id,
        },
        nodes: addresses
            .iter()
            .enumerate()
            .map(|(id, address)| {
                let id = u32::try_from(id).expect("few nodes");
                let fabric = opts.fabric_of(id);
                Ok(NodeEntry {
                    id,
                    address: *address,
                    fabric: (fabric != opts.fabric_of(0)).then_some(fabric),
                    nic_socket: None,
                    dpdk: node_dpdk(id)?,
                })
            })
            .collect::<Result<_, String>>()?,
        program: opts.program.clone(),
    };
    config.validate().map_err(|e| e.to_string())?;
    let config_path = dir.0.join("cluster.toml");
    std::fs::write(&config_path, config.to_toml())
        .map_err(|e| format!("failed to write the cluster description: {e}"))?;

    let exe = std::env::current_exe().map_err(|e| format!("cannot find the cvmm binary: {e}"))?;
    let node_socket = |node: u32| dir.0.join(format!("node-{node}.api"));
    let ended: Arc<Vec<AtomicBool>> =
        Arc::new((0..opts.nodes).map(|_| AtomicBool::new(false)).collect());
    // Started before the nodes, so a caller polling the socket sees them join.
    let _api = match &opts.api_socket {
        Some(path) => {
            let sockets = (0..opts.nodes).map(node_socket).collect();
            let source = Arc::new(ClusterApi::new(sockets, ended.clone()));
            Some(ApiServer::start(path, source).map_err(|e| error_chain(&e))?)
        }
        None => None,
    };
    let mut children = Vec::new();
    for node in 0..opts.nodes {
        let stats = dir.0.join(format!("node-{node}.json"));
        let mut command = match &netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.namespace(node)]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        command
            .arg("node")
            .arg("--config")
            .arg(&config_path)
            .arg("--id")
            .arg(node.to_string());
        command.arg("--stats-json").arg(&stats);
        if opts.api_socket.is_some() {
            command.arg("--api-socket").arg(node_socket(node));
        }
        die_with_parent(&mut command);
        match command.spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                kill_all(&mut children);
                return Err(format!("failed to start node {node}: {e}"));
            }
        }
    }
    let statuses = watch(&mut children, &ended);
    let code = match statuses.first().copied().flatten() {
        Some(status) => status.code().unwrap_or(1),
        None => 1,
    };
    if let Some(path) = &opts.stats_json {
        merge_stats(&dir.0, opts.nodes, path)?;
    }
    drop(netns);
    Ok(code)
}

/// The network interface of namespace `ns` (the veth `NetnsCluster` put there; the
/// only one besides `lo`), for af_packet.
fn netns_iface(ns: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show"])
        .output()
        .map_err(|e| format!("failed to run `ip -n {ns} link show`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`ip -n {ns} link show` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // Lines look like `2: cv123g0@if5: <BROADCAST,...> mtu 9000 ...`.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .find(|name| name != "lo")
        .ok_or_else(|| format!("namespace {ns} has no interface besides lo"))
}

/// Makes the child receive SIGKILL when this process dies, however it dies: a launcher
/// killed by a signal must not leave node processes running a workload that may never
/// end (found by the fault campaign: `kill` of `cvmm run` left its nodes running).
/// Survives the `exec` of `ip netns exec`. Call from the thread that will live as long as
/// the child should (the kernel ties the signal to the thread that forked).
pub(crate) fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and only makes two
    // async-signal-safe system calls (prctl, getppid); it touches no shared state.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then no signal will come.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other("the launcher is gone"));
            }
            Ok(())
        });
    }
}

fn kill_all(children: &mut [Child]) {
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits for every node; reports deaths; kills stragglers after the grace period.
fn watch(children: &mut [Child], ended: &[AtomicBool]) -> Vec<Option<ExitStatus>> {
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut first_end: Option<Instant> = None;
    loop {
        for (node, child) in children.iter_mut().enumerate() {
            if statuses[node].is_some() {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                statuses[node] = Some(status);
                if let Some(flag) = ended.get(node) {
                    flag.store(true, Ordering::Relaxed);
                }
                first_end.get_or_insert_with(Instant::now);
                let ended_badly = status.signal().is_some();
                if ended_badly {
                    eprintln!("cvmm: node {node} {}", describe(status));
                }
            }
        }
        if statuses.iter().all(Option::is_some) {
            return statuses;
        }
        if first_end.is_some_and(|t| t.elapsed() > GRACE) {
            for (node, child) in children.iter_mut().enumerate() {
                if statuses[node].is_none() {
                    eprintln!("cvmm: node {node} did not stop after the server ended; killing it");
                    let _ = child.kill();
                    statuses[node] = child.wait().ok();
                }
            }
            return statuses;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn merge_stats(dir: &Path, nodes: u32, out: &Path) -> Result<(), String> {
    let mut merged = Vec::new();
    for node in 0..nodes {
        let path = dir.join(format!("node-{node}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("cvmm: node {node} wrote no statistics");
            continue;
        };
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("node {node} wrote bad statistics: {e}"))?;
        if let Some(list) = value.get("nodes").and_then(|n| n.as_array()) {
            merged.extend(list.iter().cloned());
        }
    }
    let json = serde_json::json!({ "nodes": merged });
    let text = serde_json::to_string_pretty(&json).expect("JSON values serialize");
    std::fs::write(out, text).map_err(|e| format!("failed to write {}: {e}", out.display()))
}
