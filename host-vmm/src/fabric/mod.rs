//! Fabrics: what joins one node's share of a virtual server to the other nodes. Each
//! keeps logical memory coherent (it resolves the faults the local copy cannot serve) and
//! carries the server's control messages (IPIs, remote VP start, console lines, exit).
//!
//! - [`SoftwareFabric`]: the coherence engine of `nic-firmware` on host threads, over the
//!   node-to-node transport this process owns.
//! - [`OffloadFabric`]: the engine runs on the node's NIC, reached through vfio-user; the
//!   host keeps only its own mappings.
//!
//! Both take faults in through [`FabricCore`] (which VP, which kind, latency, counters)
//! and differ only in who runs the engine. Neither points back at the server: what a
//! fabric needs the server to do (take a control message, stop because a peer or the
//! NIC is gone) it reports through the [`FabricEvents`] it is given when it is built.

mod core;
mod offload;
mod software;
mod stats;
#[cfg(test)]
mod testing;

use std::sync::Arc;
use std::thread::JoinHandle;

use vima::wire::Body;

use crate::memory::PageResolver;

pub use self::core::{CoreError, FabricCore, Intake};
pub use offload::{NicProcess, OffloadError, OffloadFabric};
pub use software::{FabricError, LeaveError, LeaveProgress, LeaveReport, SoftwareFabric};
pub use stats::{FabricStats, FabricStatsSnapshot, FaultKindLatency};

/// What a fabric reports to the server it serves (the server's control plane,
/// [`crate::server::ControlPlane`], implements it).
pub trait FabricEvents: Send + Sync + std::fmt::Debug {
    /// A control message from node `from`, already checked to come from `from` to this
    /// node for this virtual server. Returns false for a message the server does not take
    /// (a VP that is not on this node, a bad vector, a coherence message), which the
    /// fabric counts as bad.
    fn control(&self, from: u32, body: &Body<'_>) -> bool;
    /// The fabric cannot go on (a peer stopped responding, the wire or the NIC failed):
    /// the server stops with `why`.
    fn failed(&self, why: String);
    /// True once the server ended: the fabric's threads stop.
    fn finished(&self) -> bool;
}

/// What a node's virtual server needs from its fabric, whichever path (host threads or a
/// NIC) runs the coherence engine. It is also the node's [`PageResolver`].
pub trait Fabric: PageResolver + Send + Sync + std::fmt::Debug {
    /// The fault intake and counters the fabric shares with the other kind.
    fn core(&self) -> &FabricCore;
    /// This node.
    fn node(&self) -> u32 {
        u32::from(self.core().node())
    }
    /// Records the calling thread as VP `vp`'s (faults are steered by thread).
    fn register_vp_thread(&self, vp: u32) {
        self.core().register_vp_thread(vp);
    }
    /// VP `vp` of this node left (`present` false) or came back: whoever steers fault
    /// completions to VP threads stops or starts naming it. The software path steers by
    /// thread and a parked VP takes no faults, so only the NIC has something to change.
    fn set_vp_present(&self, vp: u32, present: bool) {
        let _ = (vp, present);
    }
    /// Sends a control message (IPI, VpStart, ConsoleLine, VsExit) to `node`.
    fn send_control(&self, node: u32, body: Body<'_>);
    /// Node `node` left the cluster (its leave is done): its silence is not a failure any
    /// more, and broadcasts skip it.
    fn forget_node(&self, node: u32) {
        self.core().forget_node(node);
    }
    /// Sends a control message to every node of `nodes` but this one (and but those that
    /// left).
    fn broadcast(&self, nodes: u32, body: Body<'_>) {
        let core = self.core();
        for node in (0..nodes).filter(|n| *n != self.node() && !core.is_departed(*n)) {
            self.send_control(node, body);
        }
    }
    /// Counters of whoever runs the engine (the engine and the wire, or the NIC), as JSON
    /// object members.
    fn engine_stats(&self) -> serde_json::Value;
    /// Every counter of the fabric: the core's faults and latencies and
    /// [`Fabric::engine_stats`].
    fn stats_json(&self) -> serde_json::Value {
        self.core().stats_json(self.engine_stats())
    }
    /// Starts the fabric's thread (the wire's receiver, or the NIC's interrupt thread); it
    /// ends when the server ends or the fabric stops.
    fn start(self: Arc<Self>) -> std::io::Result<JoinHandle<()>>;
    /// Stops the fabric at the end of the server: lets the last messages out, stops the
    /// wire or the NIC, and returns the final counters ([`Fabric::stats_json`]).
    fn stop(&self) -> serde_json::Value;
    /// The fabric as the resolver of the node's faults.
    fn into_resolver(self: Arc<Self>) -> Arc<dyn PageResolver>;
}
