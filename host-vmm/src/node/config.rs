//! The shape of the virtual server as one node sees it, and the configuration table the
//! guest reads (`ConfigRead`) built from it.

use vima::config::{self, ConfigInput, DeviceDesc, DeviceKind, MemRange, NodeDesc, VpDesc};
use vima::layout::{MAX_LOGICAL_BYTES, MAX_VPS, MIN_LOGICAL_BYTES};

use super::NodeError;

/// The shape of the virtual server as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node.
    pub node_id: u32,
    /// Nodes in the virtual computer.
    pub nodes: u32,
    /// VPs on each node.
    pub vps_per_node: u32,
    /// Logical memory each node is home for, in MiB.
    pub mem_mib_per_node: u64,
    /// The guest command line.
    pub cmdline: String,
}

impl NodeConfig {
    /// Total logical memory in bytes.
    pub fn logical_bytes(&self) -> u64 {
        self.mem_mib_per_node.saturating_mul(u64::from(self.nodes)) << 20
    }

    /// Checks the shape; each error is one sentence a user can act on.
    pub fn validate(&self) -> Result<(), NodeError> {
        let vps = u64::from(self.nodes) * u64::from(self.vps_per_node);
        if self.nodes == 0 || self.vps_per_node == 0 {
            return Err(NodeError::Shape(
                "there must be at least one node and one VP per node".into(),
            ));
        }
        if vps > MAX_VPS as u64 {
            return Err(NodeError::Shape(format!(
                "{vps} VPs requested, at most {MAX_VPS} are supported"
            )));
        }
        if self.nodes as usize > vima::layout::MAX_NODES || self.node_id >= self.nodes {
            return Err(NodeError::Shape(format!(
                "node id {} is not below the node count {} (at most {})",
                self.node_id,
                self.nodes,
                vima::layout::MAX_NODES
            )));
        }
        let bytes = self.logical_bytes();
        if self.mem_mib_per_node << 20 < MIN_LOGICAL_BYTES || bytes > MAX_LOGICAL_BYTES {
            return Err(NodeError::Shape(format!(
                "memory per node must be at least {} MiB and in total at most {} MiB",
                MIN_LOGICAL_BYTES >> 20,
                MAX_LOGICAL_BYTES >> 20
            )));
        }
        if self.cmdline.len() > config::MAX_CMDLINE {
            return Err(NodeError::Shape(format!(
                "the guest command line is longer than {} bytes",
                config::MAX_CMDLINE
            )));
        }
        Ok(())
    }

    /// The node each VP runs on: VPs are numbered node by node.
    pub fn node_of_vp(&self, vp: u32) -> u32 {
        vp / self.vps_per_node
    }
}

/// Builds the boot configuration table the guest reads (epoch 0, every VP online).
pub fn build_config_table(cfg: &NodeConfig, tsc_khz: u64) -> Result<Vec<u8>, NodeError> {
    let boot_mib = vec![cfg.mem_mib_per_node; cfg.nodes as usize];
    config_table_at(cfg, tsc_khz, 0, 0, &boot_mib)
}

/// The configuration table at `epoch`, with the VPs of the `offline` mask offline and
/// node `n` homing the first `mem_mib[n]` MiB of its range (its range keeps the place
/// the boot shape gave it, so a node can grow back to it).
pub fn config_table_at(
    cfg: &NodeConfig,
    tsc_khz: u64,
    epoch: u32,
    offline: u64,
    mem_mib: &[u64],
) -> Result<Vec<u8>, NodeError> {
    let nodes: Vec<NodeDesc> = (0..cfg.nodes)
        .map(|n| NodeDesc {
            node_id: n,
            flags: 0,
        })
        .collect();
    let vps: Vec<VpDesc> = (0..cfg.nodes * cfg.vps_per_node)
        .map(|vp| VpDesc {
            vp_id: vp,
            node_id: cfg.node_of_vp(vp),
            flags: if vp < 64 && offline & (1u64 << vp) != 0 {
                config::VP_OFFLINE
            } else {
                0
            },
            reserved: 0,
        })
        .collect();
    let per_node = cfg.mem_mib_per_node << 20;
    let mem: Vec<MemRange> = (0..cfg.nodes)
        .map(|n| MemRange {
            base: u64::from(n) * per_node,
            size: mem_mib.get(n as usize).map_or(per_node, |mib| mib << 20),
            node_id: n,
            flags: 0,
        })
        .collect();
    let devices = [DeviceDesc {
        kind: DeviceKind::Console as u32,
        device_id: 0,
        node_id: 0,
        flags: 0,
    }];
    let input = ConfigInput {
        epoch,
        tsc_khz,
        logical_bytes: cfg.logical_bytes(),
        nodes: &nodes,
        vps: &vps,
        mem_ranges: &mem,
        devices: &devices,
        cmdline: cfg.cmdline.as_bytes(),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let len = config::encode(&input, &mut buf).map_err(NodeError::Config)?;
    buf.truncate(len);
    Ok(buf)
}
