//! The server's control plane on one node: the local VPs' pending interrupts and start
//! requests, console printing, and how the server ends.
//!
//! It is what a fabric reports to ([`FabricEvents`]). Control messages from other nodes
//! arrive here, and each is checked as guest input would be: a VP id from the wire is a
//! claim, like one from a register. The control plane holds no fabric, so the fabric and
//! the server never point at each other. The server ([`super::VirtualServer`]) owns both
//! and routes what leaves the node (an IPI to a remote VP, a line for node 0's console)
//! through its fabric.

use std::sync::{Arc, Condvar, Mutex};

use vima::call::{LogicalRange, UncheckedRange};
use vima::interrupt::{is_external_vector, VP_SHARED_PENDING_OFFSET};
use vima::layout::vp_shared_addr;
use vima::wire::Body;
use vima::Status;

use super::reconfig::{Configuration, NodePart};
use super::Outcome;
use crate::devices::console::Console;
use crate::fabric::FabricEvents;
use crate::memory::LogicalMemory;
use crate::vp::{RunState, VpControl};

/// One node's control plane.
#[derive(Debug)]
pub struct ControlPlane {
    node_id: u32,
    memory: Arc<LogicalMemory>,
    vps: Vec<Arc<VpControl>>,
    console: Console,
    configuration: Configuration,
    outcome: Mutex<Option<Outcome>>,
    finished: Condvar,
}

impl ControlPlane {
    /// The control plane of node `node_id`, for every VP of the server (`vps`, in id
    /// order; those on this node have threads here), over `memory`, starting from
    /// `configuration`.
    pub fn new(
        node_id: u32,
        memory: Arc<LogicalMemory>,
        vps: Vec<Arc<VpControl>>,
        console: Console,
        configuration: Configuration,
    ) -> Self {
        ControlPlane {
            node_id,
            memory,
            vps,
            console,
            configuration,
            outcome: Mutex::new(None),
            finished: Condvar::new(),
        }
    }

    /// This node.
    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    /// Every VP of the virtual server, in id order.
    pub fn vps(&self) -> &[Arc<VpControl>] {
        &self.vps
    }

    /// VP `id`, if it exists.
    pub fn vp(&self, id: u32) -> Option<&Arc<VpControl>> {
        self.vps.get(usize::try_from(id).ok()?)
    }

    /// VP `id` if it runs on this node.
    fn local_vp(&self, id: u32) -> Option<&Arc<VpControl>> {
        self.vp(id).filter(|vp| vp.node == self.node_id)
    }

    /// The node's logical memory.
    pub fn memory(&self) -> &Arc<LogicalMemory> {
        &self.memory
    }

    /// The configuration (table, epoch, online VPs).
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }

    /// The console of this node.
    pub fn console(&self) -> &Console {
        &self.console
    }

    fn vp_shared_range(&self, vp: u32, offset: u64, len: u64) -> LogicalRange {
        UncheckedRange::new(vp_shared_addr(vp) + offset, len)
            .check(self.memory.size(), len.min(8))
            .expect("the per-node region is inside logical memory")
    }

    /// Writes the guest-visible copy of `vp`'s pending bits.
    pub fn mirror_pending(&self, vp: u32, pending: u64) {
        let range = self.vp_shared_range(vp, VP_SHARED_PENDING_OFFSET, 8);
        self.memory
            .write_u64(range, pending)
            .expect("per-node region is always local");
    }

    /// Makes `vector` pending on `vp`, a VP of this node, and kicks it.
    pub fn post_local(&self, vp: &VpControl, vector: u8) {
        {
            let mut pending = vp.pending.lock().expect("pending lock");
            *pending |= 1u64 << vector;
            self.mirror_pending(vp.id, *pending);
        }
        vp.kick();
    }

    /// Asks `vp`, a stopped VP of this node, to start.
    pub fn start_local(&self, vp: &VpControl, request: RunState) -> Result<(), Status> {
        let mut state = vp.state.lock().expect("state lock");
        if *state != RunState::Stopped {
            return Err(Status::VpBusy);
        }
        *state = request;
        vp.started.notify_all();
        Ok(())
    }

    /// True when no VP of the server runs (meaningful on a single node only: a node does
    /// not see the other nodes' VPs).
    pub fn all_stopped(&self) -> bool {
        self.vps
            .iter()
            .all(|vp| *vp.state.lock().expect("state lock") == RunState::Stopped)
    }

    /// Ends the server with `outcome` (the first outcome wins) and wakes every VP.
    pub fn finish(&self, outcome: Outcome) {
        {
            let mut slot = self.outcome.lock().expect("outcome lock");
            if slot.is_none() {
                *slot = Some(outcome);
            }
        }
        self.finished.notify_all();
        for vp in &self.vps {
            // Take the state lock so a VP parked in wait_for_start cannot miss this.
            let _state = vp.state.lock().expect("state lock");
            vp.started.notify_all();
            vp.kick();
        }
    }

    /// True once the server ended.
    pub fn is_finished(&self) -> bool {
        self.outcome.lock().expect("outcome lock").is_some()
    }

    /// Blocks until the server ends.
    pub fn wait(&self) -> Outcome {
        let mut slot = self.outcome.lock().expect("outcome lock");
        loop {
            if let Some(outcome) = slot.as_ref() {
                return outcome.clone();
            }
            slot = self.finished.wait(slot).expect("outcome lock");
        }
    }
}

impl FabricEvents for ControlPlane {
    fn control(&self, from: u32, body: &Body<'_>) -> bool {
        match *body {
            Body::Ipi { vp, vector } => {
                let Some(control) = self.local_vp(vp) else {
                    return false;
                };
                if !is_external_vector(u64::from(vector)) {
                    return false;
                }
                self.post_local(control, vector);
                true
            }
            Body::VpStart {
                vp,
                entry,
                stack_top,
                arg,
            } => {
                let Some(control) = self.local_vp(vp) else {
                    return false;
                };
                let request = RunState::StartRequested {
                    entry,
                    stack_top,
                    arg,
                };
                if self.start_local(control, request).is_err() {
                    log::warn!("node {from} asked to start vp {vp}, which is running");
                }
                true
            }
            Body::ConsoleLine { vp, line } => {
                self.console
                    .print_line(vp, from, &String::from_utf8_lossy(line));
                true
            }
            Body::VsExit { status } => {
                self.finish(Outcome::Exited(status));
                true
            }
            Body::Heartbeat { .. } => true,
            Body::ConfigUpdate {
                epoch,
                mem_mib,
                offline,
            } => {
                // The sender changes only its own part; the rest of the table stays ours.
                let part = NodePart {
                    offline,
                    mem_mib: u64::from(mem_mib),
                };
                match self.configuration.apply_node(from, epoch, part) {
                    Ok(_) => {}
                    Err(err) => log::warn!("node {from}'s configuration {epoch}: {err}"),
                }
                true
            }
            _ => false,
        }
    }

    fn failed(&self, why: String) {
        self.finish(Outcome::VmmError(why));
    }

    fn finished(&self) -> bool {
        self.is_finished()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::console::ConsoleSink;

    #[derive(Debug, Default)]
    struct Quiet;

    impl ConsoleSink for Quiet {
        fn line(&self, _vp: u32, _node: u32, _line: &str) {}
    }

    /// Node 1 of two, one VP each: VP 0 is remote, VP 1 local.
    fn plane() -> ControlPlane {
        let memory = LogicalMemory::new(16 << 20).unwrap();
        let vps = vec![
            Arc::new(VpControl::new(0, 0)),
            Arc::new(VpControl::new(1, 1)),
        ];
        let shape = crate::node::NodeConfig {
            node_id: 1,
            nodes: 2,
            vps_per_node: 1,
            mem_mib_per_node: 8,
            cmdline: "test".into(),
        };
        ControlPlane::new(
            1,
            memory,
            vps,
            Console::new(Box::new(Quiet)),
            Configuration::new(shape, 1_000).unwrap(),
        )
    }

    fn guest_pending(plane: &ControlPlane, vp: u32) -> u64 {
        let range = plane.vp_shared_range(vp, VP_SHARED_PENDING_OFFSET, 8);
        plane.memory.read_u64(range).unwrap()
    }

    #[test]
    fn an_ipi_for_a_local_vp_is_pending_in_its_shared_block() {
        let plane = plane();
        let vector = 0x30;
        assert!(plane.control(0, &Body::Ipi { vp: 1, vector }));
        let expected = 1u64 << vector;
        assert_eq!(*plane.vps[1].pending.lock().unwrap(), expected);
        assert_eq!(guest_pending(&plane, 1), expected);
    }

    #[test]
    fn an_ipi_for_a_remote_or_missing_vp_or_an_exception_vector_is_refused() {
        let plane = plane();
        assert!(!plane.control(
            0,
            &Body::Ipi {
                vp: 0,
                vector: 0x30
            }
        ));
        assert!(!plane.control(
            0,
            &Body::Ipi {
                vp: 7,
                vector: 0x30
            }
        ));
        // Vector 14 is the page fault: no node may inject an exception; 64 is past the
        // pending word.
        assert!(!plane.control(0, &Body::Ipi { vp: 1, vector: 14 }));
        assert!(!plane.control(0, &Body::Ipi { vp: 1, vector: 64 }));
        assert_eq!(*plane.vps[1].pending.lock().unwrap(), 0);
        assert_eq!(guest_pending(&plane, 1), 0);
    }

    #[test]
    fn vp_start_starts_a_stopped_local_vp_once() {
        let plane = plane();
        let start = Body::VpStart {
            vp: 1,
            entry: 0x1000,
            stack_top: 0x8000,
            arg: 5,
        };
        assert!(plane.control(0, &start));
        assert_eq!(
            *plane.vps[1].state.lock().unwrap(),
            RunState::StartRequested {
                entry: 0x1000,
                stack_top: 0x8000,
                arg: 5
            }
        );
        // A second start of a VP that is not stopped changes nothing.
        let again = Body::VpStart {
            vp: 1,
            entry: 0x2000,
            stack_top: 0x9000,
            arg: 6,
        };
        assert!(plane.control(0, &again));
        assert!(matches!(
            *plane.vps[1].state.lock().unwrap(),
            RunState::StartRequested { entry: 0x1000, .. }
        ));
        let remote = Body::VpStart {
            vp: 0,
            entry: 0x1000,
            stack_top: 0x8000,
            arg: 0,
        };
        assert!(!plane.control(0, &remote));
        assert_eq!(*plane.vps[0].state.lock().unwrap(), RunState::Stopped);
    }

    #[test]
    fn the_first_outcome_wins() {
        let plane = plane();
        assert!(!plane.is_finished());
        assert!(plane.control(0, &Body::VsExit { status: 3 }));
        plane.failed("late".into());
        assert_eq!(plane.wait(), Outcome::Exited(3));
        assert!(plane.finished());
    }

    #[test]
    fn console_lines_from_other_nodes_are_kept_in_order() {
        let plane = plane();
        for line in [&b"one"[..], b"two"] {
            assert!(plane.control(0, &Body::ConsoleLine { vp: 0, line }));
        }
        assert_eq!(plane.console.lines(), vec!["one", "two"]);
    }

    #[test]
    fn coherence_messages_are_not_control_messages() {
        let plane = plane();
        assert!(!plane.control(0, &Body::ReadReq { page: 1 }));
    }
}
