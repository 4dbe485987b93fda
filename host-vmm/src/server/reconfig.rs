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
            | ChangeError::TooManyVps { .. }
            | ChangeError::NothingShared
            | ChangeError::NotHere { .. } => 400,
            ChangeError::Unsupported(_) | ChangeError::Finished => 409,
            ChangeError::NoAcknowledgement { .. } => 504,
        }
    }
}

#[derive(Debug)]
struct State {
    epoch: u32,
    /// Bit `v`: VP `v` is offline.
    offline: u64,
    table: Arc<Vec<u8>>,
    /// The last epoch each VP acknowledged.
    acked: Vec<u32>,
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
        let table = Arc::new(config_table_at(&shape, tsc_khz, 0, 0)?);
        let vps = shape.nodes * shape.vps_per_node;
        Ok(Configuration {
            state: Mutex::new(State {
                epoch: 0,
                offline: 0,
                table,
                acked: vec![0; vps as usize],
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

    /// Takes the online state of `node`'s VPs from `offline` (the other bits stay as they
    /// are: a node changes only its own VPs) and moves the epoch to `epoch` if that is
    /// later. An update that is stale (not a later epoch) changes nothing and gives false.
    pub fn apply_node_vps(&self, node: u32, epoch: u32, offline: u64) -> Result<bool, NodeError> {
        let mut state = self.state();
        if epoch <= state.epoch || node >= self.shape.nodes {
            return Ok(false);
        }
        let slots = self.slots_of(node);
        let offline = (state.offline & !slots) | (offline & slots);
        state.table = Arc::new(config_table_at(&self.shape, self.tsc_khz, epoch, offline)?);
        state.epoch = epoch;
        state.offline = offline;
        drop(state);
        self.changed.notify_all();
        Ok(true)
    }

    /// `ConfigAck(epoch)` of VP `vp`: records it if `epoch` is current; returns the
    /// current epoch.
    pub fn acknowledge(&self, vp: u32, epoch: u32) -> u32 {
        let mut state = self.state();
        if epoch == state.epoch {
            if let Some(slot) = state.acked.get_mut(vp as usize) {
                *slot = epoch;
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

    /// Waits until every VP of `vps` acknowledged `epoch`; the ones that did not by
    /// `timeout` (or by the end of the server) are returned.
    pub fn wait_acks(
        &self,
        vps: &[u32],
        epoch: u32,
        timeout: Duration,
        ended: impl Fn() -> bool,
    ) -> Result<(), Vec<u32>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            let missing: Vec<u32> = vps
                .iter()
                .copied()
                .filter(|vp| state.acked.get(*vp as usize).is_none_or(|e| *e < epoch))
                .collect();
            let now = Instant::now();
            if missing.is_empty() {
                return Ok(());
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

impl VirtualServer {
    /// Sets the number of online VPs of this node to `count` in two phases (the module
    /// docs): departing VPs are interrupted, move their threads away and park before
    /// their resources are taken; arriving VPs are online in the table before they go on.
    /// A refused change changes nothing; one the guest does not acknowledge in
    /// [`ACK_TIMEOUT`] is taken back.
    pub fn set_vp_count(&self, node: u32, count: u32) -> Result<VpChange, ChangeError> {
        let config = self.control.configuration();
        let _one_at_a_time = config.begin_change();
        let old = config.offline();
        let new = config.plan_vp_count(node, count)?;
        if node != self.node_id {
            return Err(ChangeError::NotHere {
                node,
                here: self.node_id,
            });
        }
        if new != old && !self.runs_linux_program {
            return Err(ChangeError::Unsupported(
                "VP hotplug moves threads of the guest scheduler, which runs Linux programs; \
                 a built-in workload runs one fixed share per VP"
                    .into(),
            ));
        }
        let started = Instant::now();
        let removed = vps_of(new & !old);
        let added = vps_of(old & !new);
        if !removed.is_empty() {
            let epoch = self.publish(old | new)?;
            for vp in &removed {
                if let Some(control) = self.vp(*vp) {
                    self.control.post_local(control, VECTOR_CONFIG);
                }
            }
            if let Err(missing) =
                config.wait_acks(&removed, epoch, ACK_TIMEOUT, || self.is_finished())
            {
                if self.is_finished() {
                    return Err(ChangeError::Finished);
                }
                // The VPs that parked go on; those that did not will find themselves
                // online when they read the table.
                self.publish(old)?;
                return Err(ChangeError::NoAcknowledgement {
                    epoch,
                    vps: missing,
                    timeout: ACK_TIMEOUT,
                });
            }
        }
        if !added.is_empty() {
            // Online in the table first: the parked VPs go on as soon as they see it.
            let epoch = self.publish(new)?;
            if let Err(missing) =
                config.wait_acks(&added, epoch, ACK_TIMEOUT, || self.is_finished())
            {
                if self.is_finished() {
                    return Err(ChangeError::Finished);
                }
                return Err(ChangeError::NoAcknowledgement {
                    epoch,
                    vps: missing,
                    timeout: ACK_TIMEOUT,
                });
            }
        }
        let online = vps_of(!new & config.slots_of(node));
        Ok(VpChange {
            node,
            config_epoch: config.epoch(),
            removed,
            added,
            online,
            took_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Makes this node's VPs of `offline` the new configuration, here and (by a
    /// `ConfigUpdate`) on every other node; returns its epoch.
    fn publish(&self, offline: u64) -> Result<u32, ChangeError> {
        let config = self.control.configuration();
        let epoch = config.epoch() + 1;
        config
            .apply_node_vps(self.node_id, epoch, offline)
            .map_err(|err| ChangeError::Unsupported(err.to_string()))?;
        if let Some(fabric) = &self.fabric {
            fabric.broadcast(self.nodes, Body::ConfigUpdate { epoch, offline });
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
        assert!(config.apply_node_vps(1, 1, 1 << 5).unwrap());
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
        assert!(config.apply_node_vps(1, 2, 1 << 3).unwrap());
        assert_eq!(online_vps(&config.table()), [true, true, true, false]);
        let epoch = vima::config::Config::parse(&config.table())
            .unwrap()
            .header()
            .epoch;
        assert_eq!(epoch, 2);
        assert!(!config.apply_node_vps(0, 2, 0).unwrap());
        assert!(!config.apply_node_vps(0, 1, 0).unwrap());
        assert!(!config.is_online(3));
        assert!(config.is_online(2));
        // Node 0's update touches node 0's VPs only.
        assert!(config.apply_node_vps(0, 3, u64::MAX).unwrap());
        assert_eq!(online_vps(&config.table()), [false, false, true, false]);
    }

    #[test]
    fn acknowledgements_count_only_for_the_current_epoch() {
        let config = Configuration::new(shape(1, 2), 1_000).unwrap();
        assert!(config.apply_node_vps(0, 1, 1 << 1).unwrap());
        assert_eq!(config.acknowledge(1, 0), 1);
        let short = Duration::from_millis(20);
        assert_eq!(config.wait_acks(&[1], 1, short, || false), Err(vec![1]));
        assert_eq!(config.acknowledge(1, 1), 1);
        assert_eq!(config.wait_acks(&[1], 1, short, || false), Ok(()));
    }

    #[test]
    fn a_parked_vp_goes_on_when_it_is_online_again_or_the_server_ends() {
        let config = Arc::new(Configuration::new(shape(1, 2), 1_000).unwrap());
        assert!(config.apply_node_vps(0, 1, 1 << 1).unwrap());
        let parked = {
            let config = config.clone();
            std::thread::spawn(move || config.park(1, || false))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!parked.is_finished());
        assert!(config.apply_node_vps(0, 2, 0).unwrap());
        assert_eq!(parked.join().unwrap(), Some(2));
        assert!(config.apply_node_vps(0, 3, 1 << 1).unwrap());
        assert_eq!(config.park(1, || true), None);
        // VP 0 is online: it never parks.
        assert_eq!(config.park(0, || false), Some(3));
    }
}
