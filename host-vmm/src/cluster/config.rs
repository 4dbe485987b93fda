//! The cluster description, `cluster.toml`: the same file on every node of a rack.
//!
//! ```toml
//! [cluster]
//! transport = "udp"        # the node-to-node wire
//! fabric = "software"      # who runs the coherence engine
//! wire_loss = 0.0          # drop (and duplicate, reorder) this fraction of datagrams: testing only
//! peer_timeout_ms = 3000   # a silent peer is declared dead after this long
//!
//! [server]
//! vps_per_node = 2
//! mem_mib_per_node = 64
//! cmdline = "matmul 64"
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
//! A cluster may mix fabrics: both run the same engine and speak the same wire format.
//! An offload node starts its NIC model (`cvmm nic`) itself, unless `nic_socket` names
//! the vfio-user socket of one already running.
//!
//! Unknown keys are errors (`deny_unknown_fields`): a typo must not silently fall back to a
//! default on one node of a rack.

use std::net::SocketAddr;
use std::path::Path;

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

/// The node-to-node wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Kernel UDP sockets: works on any Ethernet.
    #[default]
    Udp,
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
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `[cluster]`.
    pub cluster: ClusterSection,
    /// `[server]`.
    pub server: ServerSection,
    /// `[[nodes]]`.
    pub nodes: Vec<NodeEntry>,
}

impl ClusterConfig {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Self, ClusterConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
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
        self.node_config(0)
            .validate()
            .map_err(|e| ClusterConfigError::Invalid(e.to_string()))?;
        Ok(())
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
}
