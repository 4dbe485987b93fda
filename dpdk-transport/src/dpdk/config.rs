//! What a DPDK endpoint is made of, and how a cluster's nodes get their ports: pure
//! data, built without libdpdk so that a `cvmm` without the `dpdk` feature still reads
//! and checks a cluster description that asks for it.
//!
//! Three kinds of wire ([`DpdkLink`]):
//! - **memif** between processes on one machine. memif is point to point, so every pair
//!   of nodes gets its own port: the lower node id is the server of the pair's socket,
//!   the higher the client. Sockets are abstract (no files to clean up), named
//!   `<prefix>-<a>-<b>`, with a prefix unique to the cluster. Buffers are 8 KiB
//!   (`bsize=8192`) so that every frame fits one memif descriptor: with the default
//!   2 KiB buffers, page-sized frames are chained over three descriptors, and under
//!   load DPDK 22.11.11's memif delivered such frames again and again (a node received
//!   a million frames its peer never sent, and the duplicate acks fed the storm).
//! - **af_packet** on a kernel interface: one port reaching every peer over the
//!   interface's Ethernet (a veth on a bridge between network namespaces, or a NIC the
//!   kernel drives). Frames up to 8 KiB (`framesz=8192`): the interface needs MTU 9000.
//! - **device**: a NIC the EAL drives itself (a PCI address, bound to vfio-pci) on a
//!   rack; one port reaching every peer through the switch. Hugepages are expected.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::frame::MacAddr;
use crate::NodeId;

/// Where a datagram goes on the DPDK wire: a port of the endpoint (its index in
/// [`DpdkConfig::ports`]) and the MAC of the node behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DpdkAddr {
    /// Index of the port in the endpoint's port list.
    pub port: u16,
    /// The node's cvmm address ([`MacAddr::for_node`]).
    pub mac: MacAddr,
}

impl std::fmt::Display for DpdkAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@port{}", self.mac, self.port)
    }
}

/// How long the receive path busy-polls and how it backs off.
///
/// A poll-mode driver wants a core spinning on the queue; a 2-core machine running
/// several nodes cannot give each one. So a receiver spins (yielding to runnable
/// threads between polls) while traffic is recent
/// (`spin` since the last frame sent or received: a node that just sent a request
/// expects the answer within microseconds), then sleeps in growing steps up to
/// `max_sleep`, which bounds the extra latency of the first frame after a quiet period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollConfig {
    /// Busy-poll this long after the last traffic.
    pub spin: Duration,
    /// Longest sleep between polls when idle.
    pub max_sleep: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            spin: Duration::from_micros(200),
            max_sleep: Duration::from_micros(1000),
        }
    }
}

/// One DPDK endpoint: an EAL with its ports (one per process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkConfig {
    /// EAL arguments (without the program name). `None`: [`DpdkConfig::default_eal_args`].
    /// `--file-prefix` is added when missing, and each port's `--vdev` or `-a` always.
    pub eal_args: Option<Vec<String>>,
    /// The ports. A spec starting with `net_` is a virtual device given to the EAL as
    /// `--vdev <spec>` (`net_memif0,role=server,socket=x`); anything else is a device
    /// allowed with `-a <spec>` (`0000:3b:00.0`). The port's name is the spec up to the
    /// first comma.
    pub ports: Vec<String>,
    /// This endpoint's address on the wire (its node's [`MacAddr::for_node`]).
    pub mac: MacAddr,
    /// Packet buffers in the pool (shared by all ports).
    pub mbufs: u32,
    /// Largest MTU asked of the ports (drivers may allow less; memif and af_packet carry
    /// larger frames regardless).
    pub mtu: u16,
    /// Receive polling.
    pub poll: PollConfig,
    /// How long ports get to start (a memif client waits for its server).
    pub connect_timeout: Duration,
}

/// Bytes of frame a packet buffer holds: a jumbo frame.
pub const FRAME_ROOM: u16 = 9216;

impl DpdkConfig {
    /// An endpoint for `node` on `ports`, with defaults.
    pub fn new(node: NodeId, ports: Vec<String>) -> Self {
        Self {
            eal_args: None,
            ports,
            mac: MacAddr::for_node(node),
            mbufs: 2048,
            mtu: 9000,
            poll: PollConfig::default(),
            connect_timeout: Duration::from_secs(20),
        }
    }

    /// The endpoint of `local` in a cluster of `nodes` on `link`, and the address of
    /// every other node, ready for [`crate::ReliableTransport::new`].
    pub fn for_cluster(
        link: &DpdkLink,
        local: NodeId,
        nodes: &[NodeId],
    ) -> (Self, Vec<(NodeId, DpdkAddr)>) {
        let peers: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != local).collect();
        let (ports, addrs) = match link {
            DpdkLink::Memif { socket_prefix } => {
                let ports = peers
                    .iter()
                    .enumerate()
                    .map(|(index, &peer)| {
                        let (low, high) = if local < peer { (local, peer) } else { (peer, local) };
                        let role = if local == low { "server" } else { "client" };
                        format!(
                            "net_memif{index},role={role},id=0,socket={socket_prefix}-{}-{},socket-abstract=yes,bsize=8192,rsize=9",
                            low.0, high.0
                        )
                    })
                    .collect();
                let addrs = peers
                    .iter()
                    .enumerate()
                    .map(|(index, &peer)| {
                        let port = u16::try_from(index).unwrap_or(u16::MAX);
                        (
                            peer,
                            DpdkAddr {
                                port,
                                mac: MacAddr::for_node(peer),
                            },
                        )
                    })
                    .collect();
                (ports, addrs)
            }
            DpdkLink::AfPacket { iface } => (
                vec![format!(
                    "net_af_packet0,iface={iface},framesz=8192,blocksz=8192,framecnt=512,qpairs=1"
                )],
                single_port_peers(&peers),
            ),
            DpdkLink::Device { name } => (vec![name.clone()], single_port_peers(&peers)),
        };
        (Self::new(local, ports), addrs)
    }

    /// True when a port spec names a virtual device (`--vdev`) rather than a device the
    /// EAL probes on a bus (`-a`).
    pub fn is_vdev(spec: &str) -> bool {
        spec.starts_with("net_")
    }

    /// True when a port spec is a memif client (memif's default role).
    pub fn is_memif_client(spec: &str) -> bool {
        spec.starts_with("net_memif") && !spec.split(',').any(|kv| kv == "role=server")
    }

    /// The device name of a port spec: up to the first comma.
    pub fn port_name(spec: &str) -> &str {
        spec.split(',').next().unwrap_or(spec)
    }

    /// The EAL arguments used when none are given: no hugepages (IOVA as VA), 256 MiB,
    /// one lcore, no telemetry socket, warnings and worse logged; no PCI scan unless a
    /// port is a bus device, in which case hugepages are expected as on any DPDK host.
    pub fn default_eal_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-l", "0", "--no-telemetry", "--log-level=5"]
            .map(String::from)
            .to_vec();
        if self.ports.iter().all(|p| Self::is_vdev(p)) {
            args.extend(["--no-huge", "-m", "256", "--no-pci"].map(String::from));
        }
        args
    }

    /// The whole argv for `rte_eal_init`: program name, the EAL arguments, a
    /// `--file-prefix` unless given, then the ports.
    pub fn eal_argv(&self, file_prefix: &str) -> Vec<String> {
        let mut argv = vec!["cvmm".to_string()];
        let base = self
            .eal_args
            .clone()
            .unwrap_or_else(|| self.default_eal_args());
        let has_prefix = base.iter().any(|a| a.starts_with("--file-prefix"));
        argv.extend(base);
        if !has_prefix {
            argv.push(format!("--file-prefix={file_prefix}"));
        }
        for spec in &self.ports {
            argv.push(if Self::is_vdev(spec) { "--vdev" } else { "-a" }.to_string());
            argv.push(spec.clone());
        }
        argv
    }
}

fn single_port_peers(peers: &[NodeId]) -> Vec<(NodeId, DpdkAddr)> {
    peers
        .iter()
        .map(|&peer| {
            (
                peer,
                DpdkAddr {
                    port: 0,
                    mac: MacAddr::for_node(peer),
                },
            )
        })
        .collect()
}

/// The kind of DPDK wire a cluster runs on (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpdkLink {
    /// memif between processes on one machine, a port per pair of nodes.
    Memif {
        /// Prefix of the abstract socket names; unique per cluster on the machine.
        socket_prefix: String,
    },
    /// af_packet on a kernel interface, one port for all peers.
    AfPacket {
        /// The interface (in the node's network namespace).
        iface: String,
    },
    /// A device the EAL drives (a PCI address, optionally with devargs), one port for
    /// all peers.
    Device {
        /// The device, e.g. `0000:3b:00.0`.
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u32) -> Vec<NodeId> {
        (0..n).map(NodeId).collect()
    }

    #[test]
    fn memif_mesh_pairs_every_node_once_with_one_server_and_one_client() {
        let link = DpdkLink::Memif {
            socket_prefix: "cvmm-7".into(),
        };
        let nodes = ids(4);
        // Every socket name must appear exactly twice across the cluster: once as
        // server (on the lower id) and once as client (on the higher).
        let mut seen = std::collections::BTreeMap::<String, Vec<(u32, String)>>::new();
        for &node in &nodes {
            let (config, peers) = DpdkConfig::for_cluster(&link, node, &nodes);
            assert_eq!(config.ports.len(), 3);
            assert_eq!(peers.len(), 3);
            assert_eq!(config.mac, MacAddr::for_node(node));
            for (peer, addr) in &peers {
                assert_ne!(*peer, node);
                assert_eq!(addr.mac, MacAddr::for_node(*peer));
                let spec = &config.ports[usize::from(addr.port)];
                assert_eq!(
                    DpdkConfig::port_name(spec),
                    format!("net_memif{}", addr.port)
                );
                let socket = spec
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("socket="))
                    .unwrap()
                    .to_string();
                let (low, high) = (node.0.min(peer.0), node.0.max(peer.0));
                assert_eq!(socket, format!("cvmm-7-{low}-{high}"));
                let role = spec
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("role="))
                    .unwrap()
                    .to_string();
                seen.entry(socket).or_default().push((node.0, role));
            }
        }
        assert_eq!(seen.len(), 6, "4 nodes make 6 pairs");
        for (socket, ends) in seen {
            let mut ends = ends;
            ends.sort();
            assert_eq!(ends.len(), 2, "{socket}");
            assert_eq!(ends[0].1, "server", "{socket}: the lower id serves");
            assert_eq!(ends[1].1, "client", "{socket}");
        }
    }

    #[test]
    fn shared_media_use_one_port_for_every_peer() {
        let nodes = ids(3);
        let link = DpdkLink::AfPacket {
            iface: "veth1".into(),
        };
        let (config, peers) = DpdkConfig::for_cluster(&link, NodeId(1), &nodes);
        assert_eq!(config.ports.len(), 1);
        assert!(config.ports[0].starts_with("net_af_packet0,iface=veth1,framesz=8192"));
        assert_eq!(
            peers,
            vec![
                (
                    NodeId(0),
                    DpdkAddr {
                        port: 0,
                        mac: MacAddr::for_node(NodeId(0))
                    }
                ),
                (
                    NodeId(2),
                    DpdkAddr {
                        port: 0,
                        mac: MacAddr::for_node(NodeId(2))
                    }
                ),
            ]
        );
        let link = DpdkLink::Device {
            name: "0000:3b:00.0".into(),
        };
        let (config, _) = DpdkConfig::for_cluster(&link, NodeId(0), &nodes);
        assert_eq!(config.ports, vec!["0000:3b:00.0".to_string()]);
    }

    #[test]
    fn eal_argv_adds_prefix_and_ports_and_keeps_given_arguments() {
        let config = DpdkConfig::new(
            NodeId(0),
            vec!["net_memif0,role=server".into(), "0000:3b:00.0".into()],
        );
        let argv = config.eal_argv("cvmm-42");
        assert_eq!(argv[0], "cvmm");
        assert!(argv.contains(&"--file-prefix=cvmm-42".to_string()));
        // A bus device present: hugepages expected, PCI scanned.
        assert!(!argv.contains(&"--no-huge".to_string()));
        assert!(!argv.contains(&"--no-pci".to_string()));
        let tail = &argv[argv.len() - 4..];
        assert_eq!(
            tail,
            ["--vdev", "net_memif0,role=server", "-a", "0000:3b:00.0"]
        );

        let vdev_only = DpdkConfig::new(NodeId(0), vec!["net_memif0".into()]);
        let argv = vdev_only.eal_argv("p");
        for want in ["--no-huge", "--no-pci", "--no-telemetry"] {
            assert!(argv.contains(&want.to_string()), "{want} in {argv:?}");
        }

        let mut given = vdev_only.clone();
        given.eal_args = Some(vec!["--file-prefix=mine".into(), "-m".into(), "64".into()]);
        let argv = given.eal_argv("p");
        assert_eq!(
            argv,
            [
                "cvmm",
                "--file-prefix=mine",
                "-m",
                "64",
                "--vdev",
                "net_memif0"
            ]
        );
    }

    #[test]
    fn port_names_and_kinds() {
        assert_eq!(
            DpdkConfig::port_name("net_memif3,role=client"),
            "net_memif3"
        );
        assert_eq!(DpdkConfig::port_name("0000:3b:00.0"), "0000:3b:00.0");
        assert!(DpdkConfig::is_vdev("net_af_packet0,iface=x"));
        assert!(!DpdkConfig::is_vdev("0000:3b:00.0"));
        assert!(DpdkConfig::is_memif_client("net_memif0,role=client,id=0"));
        assert!(DpdkConfig::is_memif_client("net_memif1,socket=x"));
        assert!(!DpdkConfig::is_memif_client("net_memif0,role=server"));
        assert!(!DpdkConfig::is_memif_client("net_af_packet0,iface=x"));
    }
}
