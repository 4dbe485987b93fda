//! The cluster description, `cluster.toml`: the same file on every node of a rack.
//!
//! ```toml
//! [cluster]
//! transport = "udp"        # the node-to-node wire
//! fabric = "software"      # who runs the coherence engine
//! wire_loss = 0.0          # drop (and duplicate, reorder) this fraction of datagrams: testing only
//! peer_timeout_ms = 3000   # a silent peer is declared dead after this long
//! key_file = "cluster.key" # 64 hex digits, mode 0600: authenticates every packet
//!
//! [server]
//! vps_per_node = 2
//! mem_mib_per_node = 64
//! cmdline = "matmul 64"
//! vs_id = 1                # this virtual server's id on the wire
//!
//! [[nodes]]
//! id = 0
//! address = "192.168.10.1:7100"
//!
//! [[nodes]]
//! id = 1
//! address = "192.168.10.2:7100"
//! fabric = "offload"       # this node's engine runs on its NIC (overrides [cluster])
//! ```
//!
//! The DPDK wire (`transport = "dpdk"`, see docs/dpdk.md) takes an optional `[dpdk]`
//! section and per-node `dpdk` tables; the `address` of a node then only identifies it:
//!
//! ```toml
//! [cluster]
//! transport = "dpdk"
//!
//! [dpdk]
//! link = "device"          # memif (one machine, the default) | af_packet | device
//! eal_args = ["-l", "0", "--log-level=5"]   # optional: replaces the defaults
//! poll_spin_us = 200       # busy-poll this long after traffic, then back off
//! poll_max_sleep_us = 1000 # to sleeps of at most this
//!
//! [[nodes]]
//! id = 0
//! address = "192.168.10.1:7100"
//! dpdk = { port = "0000:3b:00.0" }   # af_packet: an interface; device: a PCI address
//! ```
//!
//! A Linux program (`cvmm run --nodes M -- PATH ARGS...` writes this for its nodes) is a
//! `[program]` section, with `cmdline = "linux"` (plus `strace`, `trap-syscalls`, `load-placement`) in
//! `[server]`; only node 0 reads the file (docs/linux-abi.md):
//!
//! ```toml
//! [program]
//! path = "/opt/app/server"
//! argv = ["/opt/app/server", "--port", "80"]
//! env = ["HOME=/"]
//! random_hex = "00112233445566778899aabbccddeeff"   # AT_RANDOM
//! ```
//!
//! A cluster may mix fabrics: both run the same engine and speak the same wire format.
//! An offload node starts its NIC model (`cvmm nic`) itself, unless `nic_socket` names
//! the vfio-user socket of one already running.
//!
//! Unknown keys are errors (`deny_unknown_fields`): a typo must not silently fall back to a
//! default on one node of a rack.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use dpdk_transport::dpdk::{DpdkAddr, DpdkConfig, DpdkLink, PollConfig};
use dpdk_transport::NodeId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::node::NodeConfig;

/// Why a cluster description is unusable.
#[derive(Debug, Error)]
pub enum ClusterConfigError {
    /// The file could not be read.
    #[error("Failed to read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit the schema.
    #[error("Invalid cluster description {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The description parses but says something impossible.
    #[error("Invalid cluster description: {0}")]
    Invalid(String),
}

/// The node-to-node wire. Every node of a cluster uses the same one (a UDP socket and a
/// DPDK port cannot talk to each other); software and offload nodes share either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Kernel UDP sockets: works on any Ethernet.
    #[default]
    Udp,
    /// DPDK poll-mode ports (memif, af_packet or a NIC the EAL drives): see `[dpdk]`.
    Dpdk,
}

/// The kind of DPDK port the nodes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DpdkLinkKind {
    /// net_memif between processes on one machine (a port per pair of nodes).
    #[default]
    Memif,
    /// net_af_packet on a kernel interface (`dpdk.port` of each node names it).
    AfPacket,
    /// A NIC the EAL drives (`dpdk.port` of each node is its PCI address).
    Device,
}

fn default_memif_prefix() -> String {
    "cvmm-memif".to_string()
}

/// `[dpdk]`: the DPDK wire, when `transport = "dpdk"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkSection {
    /// The kind of port.
    #[serde(default)]
    pub link: DpdkLinkKind,
    /// memif: prefix of the (abstract) socket names; unique per cluster on a machine.
    #[serde(default = "default_memif_prefix")]
    pub memif_socket_prefix: String,
    /// EAL arguments replacing the defaults (which run without hugepages for memif and
    /// af_packet); `--file-prefix` and the ports are added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eal_args: Option<Vec<String>>,
    /// Busy-poll this long after the last traffic before backing off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_spin_us: Option<u64>,
    /// Longest sleep between polls when idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_max_sleep_us: Option<u64>,
}

impl Default for DpdkSection {
    fn default() -> Self {
        Self {
            link: DpdkLinkKind::default(),
            memif_socket_prefix: default_memif_prefix(),
            eal_args: None,
            poll_spin_us: None,
            poll_max_sleep_us: None,
        }
    }
}

/// A node's own DPDK settings (`[[nodes]] dpdk = { ... }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeDpdk {
    /// af_packet: the interface; device: the PCI address (with devargs if needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// EAL arguments for this node only (replacing `[dpdk] eal_args`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eal_args: Option<Vec<String>>,
}

/// Who runs the coherence engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FabricKind {
    /// Host threads (the software path).
    #[default]
    Software,
    /// The node's NIC, reached over vfio-user (the offload path).
    Offload,
}

fn default_peer_timeout_ms() -> u64 {
    3000
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The wire.
    #[serde(default)]
    pub transport: TransportKind,
    /// The engine's placement.
    #[serde(default)]
    pub fabric: FabricKind,
    /// Injected loss probability (0 on real deployments).
    #[serde(default)]
    pub wire_loss: f64,
    /// Silence after which a peer is dead.
    #[serde(default = "default_peer_timeout_ms")]
    pub peer_timeout_ms: u64,
    /// The cluster key's file (64 hex digits, mode 0600; relative to this description):
    /// every node-to-node packet is authenticated under it (see `cluster::wire`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<std::path::PathBuf>,
    /// The cluster key inline, instead of `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hex: Option<String>,
}

fn default_vs_id() -> u16 {
    1
}

/// `[server]`: the virtual server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// VPs on each node.
    pub vps_per_node: u32,
    /// Logical memory each node is home for, in MiB.
    pub mem_mib_per_node: u64,
    /// The guest command line.
    pub cmdline: String,
    /// This virtual server's id on the wire (1..): several virtual servers on one
    /// cluster each have their own node processes, ports, key and id.
    #[serde(default = "default_vs_id")]
    pub vs_id: u16,
}

/// `[[nodes]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Node id: ids are 0..M.
    pub id: u32,
    /// `ip:port` the node listens on for the wire.
    pub address: SocketAddr,
    /// This node's fabric, when it differs from `[cluster] fabric`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fabric: Option<FabricKind>,
    /// Offload only: the socket of a NIC model started separately (else the node starts
    /// one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_socket: Option<std::path::PathBuf>,
    /// DPDK wire only: this node's port and EAL arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpdk: Option<NodeDpdk>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `[cluster]`.
    pub cluster: ClusterSection,
    /// `[server]`.
    pub server: ServerSection,
    /// `[dpdk]` (only with `transport = "dpdk"`; defaults apply when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpdk: Option<DpdkSection>,
    /// `[[nodes]]`.
    pub nodes: Vec<NodeEntry>,
    /// `[program]`: the Linux program the server runs (`cvmm run -- PATH`; with it the
    /// command line is `linux ...`). Node 0 reads the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<crate::boot::invocation::ProgramSpec>,
}

impl ClusterConfig {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Self, ClusterConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        if let (Some(key), Some(dir)) = (&config.cluster.key_file, path.parent()) {
            if key.is_relative() {
                config.cluster.key_file = Some(dir.join(key));
            }
        }
        Ok(config)
    }

    /// Parses and checks TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ClusterConfigError> {
        let config: ClusterConfig =
            toml::from_str(text).map_err(|e| ClusterConfigError::Parse {
                path: origin.to_string(),
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The TOML text of this description.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a valid description always serializes")
    }

    /// Checks what the schema cannot.
    pub fn validate(&self) -> Result<(), ClusterConfigError> {
        let invalid = |m: String| Err(ClusterConfigError::Invalid(m));
        if self.nodes.is_empty() {
            return invalid("there are no [[nodes]]".into());
        }
        for (index, node) in self.nodes.iter().enumerate() {
            if node.id as usize != index {
                return invalid(format!(
                    "node ids must be 0, 1, 2... in order; entry {index} has id {}",
                    node.id
                ));
            }
            if self.nodes[..index]
                .iter()
                .any(|other| other.address == node.address)
            {
                return invalid(format!(
                    "nodes {} and another share the address {}",
                    node.id, node.address
                ));
            }
        }
        if !(0.0..=0.5).contains(&self.cluster.wire_loss) {
            return invalid(format!(
                "wire_loss {} is not between 0 and 0.5",
                self.cluster.wire_loss
            ));
        }
        if self.cluster.peer_timeout_ms < 100 {
            return invalid("peer_timeout_ms must be at least 100".into());
        }
        let linux = self.server.cmdline.split_whitespace().next() == Some("linux");
        if linux != self.program.is_some() {
            return invalid(
                "a [program] section goes with the command line `linux ...`, and only with it"
                    .into(),
            );
        }
        super::wire::check_key_settings(&self.cluster)
            .map_err(|e| ClusterConfigError::Invalid(crate::error::error_chain(&e)))?;
        if self.server.vs_id == 0 {
            return invalid("vs_id must be at least 1".into());
        }
        self.validate_dpdk()?;
        self.node_config(0)
            .validate()
            .map_err(|e| ClusterConfigError::Invalid(e.to_string()))?;
        Ok(())
    }

    fn validate_dpdk(&self) -> Result<(), ClusterConfigError> {
        let invalid = |m: String| Err(ClusterConfigError::Invalid(m));
        let node_dpdk = self.nodes.iter().find(|n| n.dpdk.is_some());
        if self.cluster.transport != TransportKind::Dpdk {
            if self.dpdk.is_some() {
                return invalid("a [dpdk] section needs transport = \"dpdk\"".into());
            }
            if let Some(node) = node_dpdk {
                return invalid(format!(
                    "node {} has dpdk settings but the transport is not \"dpdk\"",
                    node.id
                ));
            }
            return Ok(());
        }
        let section = self.dpdk.clone().unwrap_or_default();
        if section.link != DpdkLinkKind::Memif {
            if let Some(node) = self
                .nodes
                .iter()
                .find(|n| n.dpdk.as_ref().and_then(|d| d.port.as_ref()).is_none())
            {
                return invalid(format!(
                    "node {} needs dpdk = {{ port = \"...\" }} (the interface or PCI address of its {} port)",
                    node.id,
                    if section.link == DpdkLinkKind::AfPacket { "af_packet" } else { "device" }
                ));
            }
        } else if section.memif_socket_prefix.is_empty() || section.memif_socket_prefix.len() > 80 {
            return invalid("memif_socket_prefix must be 1 to 80 characters".into());
        }
        Ok(())
    }

    /// The DPDK endpoint of node `id` and the wire address of every other node (for
    /// `transport = "dpdk"`; the description was validated).
    pub fn dpdk_endpoint(
        &self,
        id: u32,
    ) -> Result<(DpdkConfig, Vec<(NodeId, DpdkAddr)>), ClusterConfigError> {
        let section = self.dpdk.clone().unwrap_or_default();
        let node = self.nodes.get(id as usize).ok_or_else(|| {
            ClusterConfigError::Invalid(format!("node id {id} is not in the description"))
        })?;
        let own = node.dpdk.clone().unwrap_or_default();
        let port = || {
            own.port
                .clone()
                .ok_or_else(|| ClusterConfigError::Invalid(format!("node {id} has no dpdk port")))
        };
        let link = match section.link {
            DpdkLinkKind::Memif => DpdkLink::Memif {
                socket_prefix: section.memif_socket_prefix.clone(),
            },
            DpdkLinkKind::AfPacket => DpdkLink::AfPacket { iface: port()? },
            DpdkLinkKind::Device => DpdkLink::Device { name: port()? },
        };
        let nodes: Vec<NodeId> = self.nodes.iter().map(|n| NodeId(n.id)).collect();
        let (mut config, peers) = DpdkConfig::for_cluster(&link, NodeId(id), &nodes);
        config.eal_args = own.eal_args.or(section.eal_args);
        let defaults = PollConfig::default();
        config.poll = PollConfig {
            spin: section
                .poll_spin_us
                .map_or(defaults.spin, Duration::from_micros),
            max_sleep: section
                .poll_max_sleep_us
                .map_or(defaults.max_sleep, Duration::from_micros),
        };
        Ok((config, peers))
    }

    /// The fabric of node `id`: its own setting, else the cluster's.
    pub fn fabric_of(&self, id: u32) -> FabricKind {
        self.nodes
            .get(id as usize)
            .and_then(|n| n.fabric)
            .unwrap_or(self.cluster.fabric)
    }

    /// The shape of the server as node `id` sees it.
    pub fn node_config(&self, id: u32) -> NodeConfig {
        NodeConfig {
            node_id: id,
            nodes: u32::try_from(self.nodes.len()).unwrap_or(u32::MAX),
            vps_per_node: self.server.vps_per_node,
            mem_mib_per_node: self.server.mem_mib_per_node,
            cmdline: self.server.cmdline.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [cluster]
        wire_loss = 0.05

        [server]
        vps_per_node = 2
        mem_mib_per_node = 32
        cmdline = "matmul 64"

        [[nodes]]
        id = 0
        address = "127.0.0.1:7100"

        [[nodes]]
        id = 1
        address = "127.0.0.1:7101"
    "#;

    #[test]
    fn parses_the_documented_example_and_round_trips() {
        let config = ClusterConfig::parse(GOOD, "test").unwrap();
        assert_eq!(config.nodes.len(), 2);
        assert_eq!(config.cluster.transport, TransportKind::Udp);
        assert_eq!(config.cluster.peer_timeout_ms, 3000);
        assert_eq!(config.node_config(1).node_id, 1);
        assert_eq!(config.node_config(1).logical_bytes(), 64 << 20);
        let again = ClusterConfig::parse(&config.to_toml(), "again").unwrap();
        assert_eq!(again, config);
        // The module doc example is valid too.
        let doc = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        ClusterConfig::parse(&doc, "doc").unwrap();
    }

    #[test]
    fn a_node_may_override_the_cluster_fabric() {
        let mixed = GOOD.replace(
            "address = \"127.0.0.1:7101\"",
            "address = \"127.0.0.1:7101\"\nfabric = \"offload\"",
        );
        let config = ClusterConfig::parse(&mixed, "mixed").unwrap();
        assert_eq!(config.fabric_of(0), FabricKind::Software);
        assert_eq!(config.fabric_of(1), FabricKind::Offload);
        let again = ClusterConfig::parse(&config.to_toml(), "again").unwrap();
        assert_eq!(again.fabric_of(1), FabricKind::Offload);
        let all = GOOD.replace("wire_loss = 0.05", "fabric = \"offload\"");
        let config = ClusterConfig::parse(&all, "all").unwrap();
        assert_eq!(config.fabric_of(0), FabricKind::Offload);
        let typo = mixed.replace("\"offload\"", "\"offlaod\"");
        assert!(ClusterConfig::parse(&typo, "typo").is_err());
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../../examples/cluster.toml");
        let config = ClusterConfig::parse(text, "examples/cluster.toml").unwrap();
        assert_eq!(config.nodes.len(), 2);
        assert_eq!(config.server.cmdline, "matmul 256");
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let typo = GOOD.replace("wire_loss", "wire_los");
        let err = ClusterConfig::parse(&typo, "t").unwrap_err().to_string();
        assert!(err.contains("wire_los"), "{err}");
        let loss = GOOD.replace("0.05", "0.9");
        assert!(ClusterConfig::parse(&loss, "t")
            .unwrap_err()
            .to_string()
            .contains("wire_loss"));
        let ids = GOOD.replace("id = 1", "id = 5");
        assert!(ClusterConfig::parse(&ids, "t")
            .unwrap_err()
            .to_string()
            .contains("in order"));
        let addr = GOOD.replace("7101", "7100");
        assert!(ClusterConfig::parse(&addr, "t")
            .unwrap_err()
            .to_string()
            .contains("share the address"));
        let vps = GOOD.replace("vps_per_node = 2", "vps_per_node = 0");
        assert!(ClusterConfig::parse(&vps, "t").is_err());
        let transport = GOOD.replace("wire_loss = 0.05", "transport = \"carrier-pigeon\"");
        assert!(ClusterConfig::parse(&transport, "t").is_err());
    }

    #[test]
    fn a_program_section_goes_with_the_linux_command_line() {
        let program = "\n[program]\npath = \"./a.out\"\nargv = [\"./a.out\", \"x\"]\n\
                       env = [\"A=1\"]\nrandom_hex = \"00112233445566778899aabbccddeeff\"\n";
        let linux = GOOD.replace("cmdline = \"matmul 64\"", "cmdline = \"linux strace\"");
        let config = ClusterConfig::parse(&format!("{linux}{program}"), "t").unwrap();
        let spec = config.program.as_ref().unwrap();
        assert_eq!(spec.argv, ["./a.out", "x"]);
        assert_eq!(
            ClusterConfig::parse(&config.to_toml(), "again").unwrap(),
            config
        );
        for text in [format!("{GOOD}{program}"), linux] {
            let err = ClusterConfig::parse(&text, "t").unwrap_err().to_string();
            assert!(err.contains("[program]"), "{err}");
        }
    }

    /// The second TOML block of the module docs (the DPDK one), with a second node.
    fn dpdk_doc_example() -> String {
        let block: Vec<&str> = include_str!("config.rs")
            .lines()
            .filter(|l| l.starts_with("//!"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect();
        let starts: Vec<usize> = (0..block.len())
            .filter(|&i| block[i] == "```toml")
            .collect();
        let start = starts[1] + 1;
        let len = block[start..].iter().position(|l| *l == "```").unwrap();
        let mut text = block[start..start + len].join("\n");
        text.push_str(
            "\n[server]\nvps_per_node = 1\nmem_mib_per_node = 16\ncmdline = \"matmul 64\"\n\
             [[nodes]]\nid = 1\naddress = \"192.168.10.2:7100\"\ndpdk = { port = \"0000:5e:00.1\" }\n",
        );
        text
    }

    #[test]
    fn dpdk_wire_on_a_rack_names_each_nodes_device() {
        let config = ClusterConfig::parse(&dpdk_doc_example(), "doc").unwrap();
        assert_eq!(config.cluster.transport, TransportKind::Dpdk);
        let (endpoint, peers) = config.dpdk_endpoint(1).unwrap();
        assert_eq!(endpoint.ports, vec!["0000:5e:00.1".to_string()]);
        assert_eq!(
            endpoint.mac,
            dpdk_transport::dpdk::MacAddr::for_node(NodeId(1))
        );
        assert_eq!(
            endpoint.eal_args,
            Some(vec!["-l".to_string(), "0".into(), "--log-level=5".into()])
        );
        assert_eq!(endpoint.poll.spin, Duration::from_micros(200));
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].0, NodeId(0));
        assert_eq!(peers[0].1.port, 0);
        let again = ClusterConfig::parse(&config.to_toml(), "again").unwrap();
        assert_eq!(again, config);
        // A device link without a port on some node is refused up front.
        let missing = dpdk_doc_example().replace("dpdk = { port = \"0000:5e:00.1\" }", "");
        let err = ClusterConfig::parse(&missing, "t").unwrap_err().to_string();
        assert!(err.contains("node 1 needs dpdk"), "{err}");
    }

    #[test]
    fn dpdk_defaults_to_a_memif_mesh_and_udp_refuses_dpdk_settings() {
        let dpdk = GOOD.replace("wire_loss = 0.05", "transport = \"dpdk\"");
        let config = ClusterConfig::parse(&dpdk, "t").unwrap();
        let (endpoint, peers) = config.dpdk_endpoint(0).unwrap();
        assert_eq!(endpoint.ports.len(), 1);
        assert!(
            endpoint.ports[0].starts_with("net_memif0,role=server,id=0,socket=cvmm-memif-0-1"),
            "{:?}",
            endpoint.ports
        );
        assert_eq!(endpoint.eal_args, None);
        assert_eq!(peers[0].0, NodeId(1));
        let (endpoint, _) = config.dpdk_endpoint(1).unwrap();
        assert!(endpoint.ports[0].contains("role=client"));

        let stray = format!("{GOOD}\n[dpdk]\nlink = \"memif\"\n");
        let err = ClusterConfig::parse(&stray, "t").unwrap_err().to_string();
        assert!(err.contains("needs transport"), "{err}");
        let per_node = GOOD.replace(
            "address = \"127.0.0.1:7101\"",
            "address = \"127.0.0.1:7101\"\ndpdk = { port = \"eth1\" }",
        );
        let err = ClusterConfig::parse(&per_node, "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("node 1 has dpdk settings"), "{err}");
    }
}
