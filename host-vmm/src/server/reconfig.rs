//! Configuration changes while the server runs (paper 4.10): the configuration table the
//! guest reads, its epoch, which VPs are online, and the guest's acknowledgements.
//!
//! A VP count change is made by the node whose VPs change, since only its host can park a
//! VP thread or let it go on ([`super::VirtualServer::set_vp_count`] runs the two
//! phases). Every node keeps the same table: the changing node sends the others a
//! `ConfigUpdate` with the new epoch before it tells the guest. Removing runs first
//! (phase 1: the departing VPs move their threads away and park, acknowledging with
//! `ConfigAck`), adding second (phase 2: the VPs are online in the table before they are
//! let go, then each acknowledges from its guest).
//!
//! Every VP slot a node was started with keeps its vCPU; an offline VP is a parked VP
//! thread, so bringing it back costs no KVM setup.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vima::interrupt::VECTOR_CONFIG;
use vima::wire::Body;

use super::VirtualServer;
use crate::node::{config_table_at, NodeConfig, NodeError};

/// Why a configuration change was refused or did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// No such node.
    #[error("there is no node {0}")]
    UnknownNode(u32),
    /// The change would leave a node without VPs.
    #[error("node {0} must keep at least one VP (removing a whole node is DELETE /v1/nodes/{0})")]
    NoVpLeft(u32),
    /// More VPs than the node has slots for.
    #[error(
        "node {node} can run at most {slots} VPs (the VPs it was started with); {count} asked for"
    )]
    TooManyVps {
        /// The node.
        node: u32,
        /// VPs asked for.
        count: u32,
        /// VPs it can run.
        slots: u32,
    },
    /// The old and new configurations have no VP in common (paper 4.10).
    #[error("the new configuration shares no VP with the current one")]
    NothingShared,
    /// A memory size that cannot be.
    #[error(
        "node {node}'s logical memory must be between {min} and {max} MiB (the size it was \
         started with); {mib} asked for"
    )]
    BadMemory {
        /// The node.
        node: u32,
        /// MiB asked for.
        mib: u64,
        /// The least.
        min: u64,
        /// The most.
        max: u64,
    },
    /// The guest uses memory the change would take away.
    #[error(
        "node {node}'s logical memory cannot shrink to {mib} MiB: the guest uses pages \
         above it; nothing was changed"
    )]
    MemoryInUse {
        /// The node.
        node: u32,
        /// MiB asked for.
        mib: u64,
    },
    /// The change is not for this node.
    #[error("node {here} can change only its own VPs, not node {node}'s")]
    NotHere {
        /// The node asked.
        node: u32,
        /// This node.
        here: u32,
    },
    /// The guest cannot take the change.
    #[error("{0}")]
    Unsupported(String),
    /// Some VPs did not acknowledge in time; the change was taken back.
    #[error(
        "VPs {vps:?} did not acknowledge configuration {epoch} within {} s; the change was \
         taken back",
        timeout.as_secs()
    )]
    NoAcknowledgement {
        /// The epoch they did not acknowledge.
        epoch: u32,
        /// Who.
        vps: Vec<u32>,
        /// How long the VMM waited.
        timeout: Duration,
    },
    /// The server ended during the change.
    #[error("the virtual server ended during the change")]
    Finished,
}

impl ChangeError {
    /// The HTTP status of the refusal: 4xx for a request that can never work, 409 for one
    /// the current state forbids, 504 when the guest did not answer.
    pub fn http_status(&self) -> u16 {
        match self {
            ChangeError::UnknownNode(_) => 404,
            ChangeError::NoVpLeft(_)
            | ChangeError::BadMemory { .. }
            | ChangeError::TooManyVps { .. }
            | ChangeError::NothingShared
            | ChangeError::NotHere { .. } => 400,
            ChangeError::Unsupported(_)
            | ChangeError::Finished
            | ChangeError::MemoryInUse { .. } => 409,
            ChangeError::NoAcknowledgement { .. } => 504,
        }
    }
}

/// A VP's last acknowledgement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Ack {
    epoch: u32,
    /// 0, or why the guest could not apply it (`ConfigAck`'s `refused`).
    refused: u64,
}

#[derive(Debug)]
struct State {
    epoch: u32,
    /// Bit `v`: VP `v` is offline.
    offline: u64,
    /// The logical memory each node homes, in MiB.
    mem_mib: Vec<u64>,
    table: Arc<Vec<u8>>,
    acked: Vec<Ack>,
}

/// A node's part of a configuration: what only that node changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePart {
    /// Bit `v`: VP `v` is offline (only the node's own VPs count).
    pub offline: u64,
    /// The logical memory the node homes, in MiB.
    pub mem_mib: u64,
}

/// The configuration of the virtual server as this node holds it.
#[derive(Debug)]
pub struct Configuration {
    shape: NodeConfig,
    tsc_khz: u64,
    state: Mutex<State>,
    changed: Condvar,
    changing: Mutex<()>,
}

/// A bit per VP in `vps`.
pub fn vp_mask(vps: impl IntoIterator<Item = u32>) -> u64 {
    vps.into_iter()
        .filter(|vp| *vp < 64)
        .fold(0, |mask, vp| mask | (1u64 << vp))
}

/// The VPs of `mask`, in order.
pub fn vps_of(mask: u64) -> Vec<u32> {
    (0..64).filter(|vp| mask & (1u64 << vp) != 0).collect()
}

/// The paper's rule for a change (4.10): some VP of `vp_count` is online both before
/// (`old` offline mask) and after (`new`), so the guest has a VP to run the change on.
pub fn shares_a_vp(vp_count: u32, old: u64, new: u64) -> Result<(), ChangeError> {
    let all = vp_mask(0..vp_count);
    if all & !old & !new == 0 {
        return Err(ChangeError::NothingShared);
    }
    Ok(())
}

impl Configuration {
    /// The boot configuration of `shape` (epoch 0, every VP online).
    pub fn new(shape: NodeConfig, tsc_khz: u64) -> Result<Self, NodeError> {
        let mem_mib = vec![shape.mem_mib_per_node; shape.nodes as usize];
        let table = Arc::new(config_table_at(&shape, tsc_khz, 0, 0, &mem_mib)?);
        let vps = shape.nodes * shape.vps_per_node;
        Ok(Configuration {
            state: Mutex::new(State {
                epoch: 0,
                offline: 0,
                mem_mib,
                table,
                acked: vec![Ack::default(); vps as usize],
            }),
            shape,
            tsc_khz,
            changed: Condvar::new(),
            changing: Mutex::new(()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("configuration lock")
    }

    /// The shape the server was started with.
    pub fn shape(&self) -> &NodeConfig {
        &self.shape
    }

    /// The current table (`ConfigRead`).
    pub fn table(&self) -> Arc<Vec<u8>> {
        self.state().table.clone()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u32 {
        self.state().epoch
    }

    /// The offline VPs, a bit each.
    pub fn offline(&self) -> u64 {
        self.state().offline
    }

    /// The logical memory node `node` homes now, in MiB.
    pub fn mem_mib(&self, node: u32) -> u64 {
        self.state()
            .mem_mib
            .get(node as usize)
            .copied()
            .unwrap_or(0)
    }

    /// Node `node`'s part of the current configuration.
    pub fn node_part(&self, node: u32) -> NodePart {
        NodePart {
            offline: self.offline() & self.slots_of(node),
            mem_mib: self.mem_mib(node),
        }
    }

    /// Checks a new size for node `node`'s logical memory: at least the boot minimum,
    /// at most the size it was started with (its range keeps that place).
    pub fn plan_memory(&self, node: u32, mib: u64) -> Result<(), ChangeError> {
        let shape = &self.shape;
        if node >= shape.nodes {
            return Err(ChangeError::UnknownNode(node));
        }
        let min = vima::layout::MIN_LOGICAL_BYTES >> 20;
        let max = shape.mem_mib_per_node;
        if mib < min || mib > max {
            return Err(ChangeError::BadMemory {
                node,
                mib,
                min,
                max,
            });
        }
        Ok(())
    }

    /// True when VP `vp` is online in the current configuration.
    pub fn is_online(&self, vp: u32) -> bool {
        vp < 64 && self.offline() & (1u64 << vp) == 0
    }

    /// One change at a time: held by the node making a change, for all its phases.
    pub fn begin_change(&self) -> MutexGuard<'_, ()> {
        self.changing.lock().expect("change lock")
    }

    /// The offline mask that gives `node` `count` online VPs: its lowest-numbered slots
    /// stay online (the first VP of a node, which keeps the node's tick, never leaves).
    pub fn plan_vp_count(&self, node: u32, count: u32) -> Result<u64, ChangeError> {
        let shape = &self.shape;
        if node >= shape.nodes {
            return Err(ChangeError::UnknownNode(node));
        }
        if count == 0 {
            return Err(ChangeError::NoVpLeft(node));
        }
        if count > shape.vps_per_node {
            return Err(ChangeError::TooManyVps {
                node,
                count,
                slots: shape.vps_per_node,
            });
        }
        let first = node * shape.vps_per_node;
        let slots = first..first + shape.vps_per_node;
        let leaving = vp_mask(slots.clone().skip(count as usize));
        let old = self.offline();
        let new = (old & !vp_mask(slots)) | leaving;
        shares_a_vp(shape.nodes * shape.vps_per_node, old, new)?;
        Ok(new)
    }

    /// The VP slots of `node`, a bit each.
    fn slots_of(&self, node: u32) -> u64 {
        let first = node.saturating_mul(self.shape.vps_per_node);
        vp_mask(first..first.saturating_add(self.shape.vps_per_node))
    }

    /// Takes node `node`'s part (the online state of its VPs, its memory) from `part`;
    /// the rest stays as it is, since a node changes only its own part. The epoch moves
    /// to `epoch`. An update that is stale (not a later epoch) changes nothing and gives
    /// false.
    pub fn apply_node(&self, node: u32, epoch: u32, part: NodePart) -> Result<bool, NodeError> {
        let mut state = self.state();
        if epoch <= state.epoch || node >= self.shape.nodes {
            return Ok(false);
        }
        let slots = self.slots_of(node);
        let offline = (state.offline & !slots) | (part.offline & slots);
        let mut mem_mib = state.mem_mib.clone();
        mem_mib[node as usize] = part.mem_mib;
        state.table = Arc::new(config_table_at(
            &self.shape,
            self.tsc_khz,
            epoch,
            offline,
            &mem_mib,
        )?);
        state.epoch = epoch;
        state.offline = offline;
        state.mem_mib = mem_mib;
        drop(state);
        self.changed.notify_all();
        Ok(true)
    }

    /// `ConfigAck(epoch, refused)` of VP `vp`: records it if `epoch` is current; returns
    /// the current epoch.
    pub fn acknowledge(&self, vp: u32, epoch: u32, refused: u64) -> u32 {
        let mut state = self.state();
        if epoch == state.epoch {
            if let Some(slot) = state.acked.get_mut(vp as usize) {
                *slot = Ack { epoch, refused };
            }
            drop(state);
            self.changed.notify_all();
            return epoch;
        }
        state.epoch
    }

    /// Parks VP `vp` while it is offline; returns the epoch that brought it back, or
    /// `None` once `ended()` is true.
    pub fn park(&self, vp: u32, ended: impl Fn() -> bool) -> Option<u32> {
        let mut state = self.state();
        loop {
            if vp >= 64 || state.offline & (1u64 << vp) == 0 {
                return Some(state.epoch);
            }
            if ended() {
                return None;
            }
            // A timeout, so the end of the server is seen without a notification.
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .expect("configuration lock")
                .0;
        }
    }

    /// Waits until every VP of `vps` acknowledged `epoch`; returns the refusals
    /// (`(vp, reason)`), or the VPs that did not answer by `timeout` (or by the end of
    /// the server).
    pub fn wait_acks(
        &self,
        vps: &[u32],
        epoch: u32,
        timeout: Duration,
        ended: impl Fn() -> bool,
    ) -> Result<Vec<(u32, u64)>, Vec<u32>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            let acks: Vec<Ack> = vps
                .iter()
                .map(|vp| state.acked.get(*vp as usize).copied().unwrap_or_default())
                .collect();
            let missing: Vec<u32> = vps
                .iter()
                .zip(&acks)
                .filter(|(_, ack)| ack.epoch < epoch)
                .map(|(vp, _)| *vp)
                .collect();
            let now = Instant::now();
            if missing.is_empty() {
                return Ok(vps
                    .iter()
                    .zip(&acks)
                    .filter(|(_, ack)| ack.refused != 0)
                    .map(|(vp, ack)| (*vp, ack.refused))
                    .collect());
            }
            if now >= deadline || ended() {
                return Err(missing);
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            state = self
                .changed
                .wait_timeout(state, wait)
                .expect("configuration lock")
                .0;
        }
    }
}

/// How long the VMM waits for the guest to acknowledge a phase.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What a VP count change did (the answer to `PUT /v1/vps`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VpChange {
    /// The node.
    pub node: u32,
    /// The epoch the change ended at.
    pub config_epoch: u32,
    /// VPs that went offline (phase 1).
    pub removed: Vec<u32>,
    /// VPs that came online (phase 2).
    pub added: Vec<u32>,
    /// The node's online VPs afterwards.
    pub online: Vec<u32>,
    /// Milliseconds from the request to the last acknowledgement.
    pub took_ms: f64,
}

/// What a memory size change did (the answer to `PUT /v1/memory`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemoryChange {
    /// The node.
    pub node: u32,
    /// The epoch the change ended at.
    pub config_epoch: u32,
    /// MiB the node homed before.
    pub mib_before: u64,
    /// MiB it homes now.
    pub mib: u64,
    /// Milliseconds from the request to the guest's acknowledgement.
    pub took_ms: f64,
}

impl VirtualServer {
    /// What every change checks first: it is this node's, and the guest can take it.
    fn may_change(&self, node: u32, what: &str) -> Result<(), ChangeError> {
        if node != self.node_id {
            return Err(ChangeError::NotHere {
                node,
                here: self.node_id,
            });
        }
        if !self.runs_linux_program {
            return Err(ChangeError::Unsupported(format!(
                "{what} needs the guest's configuration handler and thread scheduler, which \
                 run Linux programs; a built-in workload runs one fixed share per VP"
            )));
        }
        Ok(())
    }

    /// Sets the number of online VPs of this node to `count` in two phases (the module
    /// docs): departing VPs are interrupted, move their threads away and park before
    /// their resources are taken; arriving VPs are online in the table before they go on.
    /// A refused change changes nothing; one the guest does not acknowledge in
    /// [`ACK_TIMEOUT`] is taken back.
    pub fn set_vp_count(&self, node: u32, count: u32) -> Result<VpChange, ChangeError> {
        let config = self.control.configuration();
        let _one_at_a_time = config.begin_change();
        let new = config.plan_vp_count(node, count)?;
        let old = config.node_part(node);
        let new = NodePart {
            offline: new & config.slots_of(node),
            ..old
        };
        if new != old {
            self.may_change(node, "VP hotplug")?;
        }
        let started = Instant::now();
        let removed = vps_of(new.offline & !old.offline);
        let added = vps_of(old.offline & !new.offline);
        if !removed.is_empty() {
            let leaving = NodePart {
                offline: old.offline | new.offline,
                ..old
            };
            let epoch = self.publish(leaving)?;
            self.interrupt(&removed);
            if let Err(err) = self.await_acks(&removed, epoch) {
                // The VPs that parked go on; those that did not will find themselves
                // online when they read the table.
                self.publish(old)?;
                return Err(err);
            }
            // Parked: nothing is steered to them any more.
            self.steer(&removed, false);
        }
        if !added.is_empty() {
            // Steered to and online in the table first: the parked VPs go on as soon as
            // they see it.
            self.steer(&added, true);
            let epoch = self.publish(new)?;
            self.await_acks(&added, epoch)?;
        }
        Ok(VpChange {
            node,
            config_epoch: config.epoch(),
            removed,
            added,
            online: vps_of(!new.offline & config.slots_of(node)),
            took_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Sets the logical memory this node homes to `mib` MiB (at most what it was started
    /// with). The table changes first; the node's first VP is interrupted and its guest
    /// gives the pages above the new end back (`MemDiscard`: the memory returns to the
    /// host) or takes the regrown ones into its allocator, and acknowledges. A guest that
    /// uses pages above the new end refuses, and the change is taken back.
    pub fn set_memory(&self, node: u32, mib: u64) -> Result<MemoryChange, ChangeError> {
        let config = self.control.configuration();
        let _one_at_a_time = config.begin_change();
        config.plan_memory(node, mib)?;
        let old = config.node_part(node);
        let started = Instant::now();
        if mib != old.mem_mib {
            self.may_change(node, "memory hotplug")?;
            let first = vps_of(config.slots_of(node))
                .into_iter()
                .find(|vp| config.is_online(*vp))
                .ok_or(ChangeError::NoVpLeft(node))?;
            let epoch = self.publish(NodePart {
                mem_mib: mib,
                ..old
            })?;
            self.interrupt(&[first]);
            let refused = self.await_acks(&[first], epoch).inspect_err(|_| {
                // Back to the old size; the guest looks again, in case it did apply it.
                if self.publish(old).is_ok() {
                    self.interrupt(&[first]);
                }
            })?;
            if !refused.is_empty() {
                self.publish(old)?;
                return Err(ChangeError::MemoryInUse { node, mib });
            }
        }
        Ok(MemoryChange {
            node,
            config_epoch: config.epoch(),
            mib_before: old.mem_mib,
            mib,
            took_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Tells the fabric that `vps` (this node's) left or came back.
    fn steer(&self, vps: &[u32], present: bool) {
        if let Some(fabric) = &self.fabric {
            for vp in vps {
                fabric.set_vp_present(*vp, present);
            }
        }
    }

    /// Raises the configuration interrupt on each of `vps` (this node's).
    fn interrupt(&self, vps: &[u32]) {
        for vp in vps {
            if let Some(control) = self.vp(*vp) {
                self.control.post_local(control, VECTOR_CONFIG);
            }
        }
    }

    /// Waits for `vps` to acknowledge `epoch`; returns their refusals.
    fn await_acks(&self, vps: &[u32], epoch: u32) -> Result<Vec<(u32, u64)>, ChangeError> {
        let config = self.control.configuration();
        config
            .wait_acks(vps, epoch, ACK_TIMEOUT, || self.is_finished())
            .map_err(|missing| {
                if self.is_finished() {
                    ChangeError::Finished
                } else {
                    ChangeError::NoAcknowledgement {
                        epoch,
                        vps: missing,
                        timeout: ACK_TIMEOUT,
                    }
                }
            })
    }

    /// Makes `part` this node's part of a new configuration, here and (by a
    /// `ConfigUpdate`) on every other node; returns its epoch.
    fn publish(&self, part: NodePart) -> Result<u32, ChangeError> {
        let config = self.control.configuration();
        let epoch = config.epoch() + 1;
        config
            .apply_node(self.node_id, epoch, part)
            .map_err(|err| ChangeError::Unsupported(err.to_string()))?;
        if let Some(fabric) = &self.fabric {
            let mem_mib = u32::try_from(part.mem_mib).unwrap_or(u32::MAX);
            fabric.broadcast(
                self.nodes,
                Body::ConfigUpdate {
                    epoch,
                    mem_mib,
                    offline: part.offline,
                },
            );
        }
        Ok(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(nodes: u32, vps_per_node: u32) -> NodeConfig {
        NodeConfig {
            node_id: 0,
            nodes,
            vps_per_node,
            mem_mib_per_node: 8,
            cmdline: "test".into(),
        }
    }

    /// Node `node`'s part with VPs `offline` offline and its memory as it is.
    fn part(config: &Configuration, node: u32, offline: u64) -> NodePart {
        NodePart {
            offline,
            mem_mib: config.mem_mib(node),
        }
    }

    fn online_vps(table: &[u8]) -> Vec<bool> {
        let config = vima::config::Config::parse(table).unwrap();
        config.vps().map(|vp| vp.is_online()).collect()
    }

    #[test]
    fn planning_keeps_the_first_slots_and_refuses_bad_counts() {
        let config = Configuration::new(shape(3, 2), 1_000).unwrap();
        // Node 1's slots are VPs 2 and 3: with one VP left, VP 3 leaves.
        assert_eq!(config.plan_vp_count(1, 1), Ok(1 << 3));
        assert_eq!(config.plan_vp_count(1, 2), Ok(0));
        assert_eq!(config.plan_vp_count(3, 1), Err(ChangeError::UnknownNode(3)));
        assert_eq!(config.plan_vp_count(0, 0), Err(ChangeError::NoVpLeft(0)));
        assert_eq!(
            config.plan_vp_count(0, 3),
            Err(ChangeError::TooManyVps {
                node: 0,
                count: 3,
                slots: 2
            })
        );
        // Planning changes nothing.
        assert_eq!(config.epoch(), 0);
        assert_eq!(config.offline(), 0);
    }

    #[test]
    fn planning_keeps_other_nodes_offline_vps() {
        let config = Configuration::new(shape(2, 3), 1_000).unwrap();
        assert!(config.apply_node(1, 1, part(&config, 1, 1 << 5)).unwrap());
        assert_eq!(
            config.plan_vp_count(0, 1),
            Ok((1 << 5) | (1 << 1) | (1 << 2))
        );
        assert_eq!(config.plan_vp_count(1, 3), Ok(0));
    }

    #[test]
    fn a_change_sharing_no_vp_is_refused() {
        // VP 0 online before, VP 1 after: nothing shared.
        assert_eq!(shares_a_vp(2, 0b10, 0b01), Err(ChangeError::NothingShared));
        assert_eq!(shares_a_vp(2, 0b10, 0b00), Ok(()));
        assert_eq!(
            shares_a_vp(3, 0b110, 0b011),
            Err(ChangeError::NothingShared)
        );
        // Bits past the VP count are not VPs.
        assert_eq!(shares_a_vp(1, 0b10, 0b10), Ok(()));
        assert_eq!(shares_a_vp(1, 0b1, 0b0), Err(ChangeError::NothingShared));
    }

    #[test]
    fn apply_rewrites_the_table_and_ignores_stale_updates() {
        let config = Configuration::new(shape(2, 2), 1_000).unwrap();
        assert_eq!(online_vps(&config.table()), [true; 4]);
        assert!(config.apply_node(1, 2, part(&config, 1, 1 << 3)).unwrap());
        assert_eq!(online_vps(&config.table()), [true, true, true, false]);
        let epoch = vima::config::Config::parse(&config.table())
            .unwrap()
            .header()
            .epoch;
        assert_eq!(epoch, 2);
        assert!(!config.apply_node(0, 2, part(&config, 0, 0)).unwrap());
        assert!(!config.apply_node(0, 1, part(&config, 0, 0)).unwrap());
        assert!(!config.is_online(3));
        assert!(config.is_online(2));
        // Node 0's update touches node 0's VPs only.
        assert!(config.apply_node(0, 3, part(&config, 0, u64::MAX)).unwrap());
        assert_eq!(online_vps(&config.table()), [false, false, true, false]);
    }

    #[test]
    fn memory_changes_stay_within_the_boot_size_and_rewrite_the_node_range() {
        let config = Configuration::new(shape(2, 1), 1_000).unwrap();
        let min = vima::layout::MIN_LOGICAL_BYTES >> 20;
        assert_eq!(config.plan_memory(1, 8), Ok(()));
        assert!(matches!(
            config.plan_memory(1, min - 1),
            Err(ChangeError::BadMemory { .. })
        ));
        assert!(matches!(
            config.plan_memory(1, 9),
            Err(ChangeError::BadMemory { max: 8, .. })
        ));
        assert_eq!(config.plan_memory(2, 8), Err(ChangeError::UnknownNode(2)));
        let shape = shape(2, 1);
        let bigger = Configuration::new(
            NodeConfig {
                mem_mib_per_node: 32,
                ..shape
            },
            1_000,
        )
        .unwrap();
        let part = NodePart {
            offline: 0,
            mem_mib: 12,
        };
        assert!(bigger.apply_node(1, 1, part).unwrap());
        assert_eq!(bigger.mem_mib(1), 12);
        let table = bigger.table();
        let config = vima::config::Config::parse(&table).unwrap();
        let ranges: Vec<(u64, u64, u32)> = config
            .mem_ranges()
            .map(|r| (r.base, r.size, r.node_id))
            .collect();
        // Node 1's range keeps its base (32 MiB) and homes 12 MiB of it.
        assert_eq!(ranges, [(0, 32 << 20, 0), (32 << 20, 12 << 20, 1)]);
    }

    #[test]
    fn acknowledgements_count_only_for_the_current_epoch() {
        let config = Configuration::new(shape(1, 2), 1_000).unwrap();
        assert!(config.apply_node(0, 1, part(&config, 0, 1 << 1)).unwrap());
        assert_eq!(config.acknowledge(1, 0, 0), 1);
        let short = Duration::from_millis(20);
        assert_eq!(config.wait_acks(&[1], 1, short, || false), Err(vec![1]));
        assert_eq!(config.acknowledge(1, 1, 0), 1);
        assert_eq!(config.wait_acks(&[1], 1, short, || false), Ok(vec![]));
    }

    #[test]
    fn a_parked_vp_goes_on_when_it_is_online_again_or_the_server_ends() {
        let config = Arc::new(Configuration::new(shape(1, 2), 1_000).unwrap());
        assert!(config.apply_node(0, 1, part(&config, 0, 1 << 1)).unwrap());
        let parked = {
            let config = config.clone();
            std::thread::spawn(move || config.park(1, || false))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!parked.is_finished());
        assert!(config.apply_node(0, 2, part(&config, 0, 0)).unwrap());
        assert_eq!(parked.join().unwrap(), Some(2));
        assert!(config.apply_node(0, 3, part(&config, 0, 1 << 1)).unwrap());
        assert_eq!(config.park(1, || true), None);
        // VP 0 is online: it never parks.
        assert_eq!(config.park(0, || false), Some(3));
    }
}
