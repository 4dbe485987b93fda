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

use std::sync::Arc;
use std::thread::JoinHandle;

use vima::wire::Body;

use crate::memory::PageResolver;

pub use self::core::{FabricCore, Intake};
pub use offload::{NicProcess, OffloadError, OffloadFabric};
pub use software::{FabricError, SoftwareFabric};
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
    /// This node.
    fn node(&self) -> u32;
    /// Records the calling thread as VP `vp`'s (faults are steered by thread).
    fn register_vp_thread(&self, vp: u32);
    /// Sends a control message (IPI, VpStart, ConsoleLine, VsExit) to `node`.
    fn send_control(&self, node: u32, body: Body<'_>);
    /// Sends a control message to every node of `nodes` but this one.
    fn broadcast(&self, nodes: u32, body: Body<'_>) {
        for node in (0..nodes).filter(|n| *n != self.node()) {
            self.send_control(node, body);
        }
    }
    /// Counters of the fabric, the engine and the wire, as JSON object members.
    fn stats_json(&self) -> serde_json::Value;
    /// Starts the fabric's thread (the wire's receiver, or the NIC's interrupt thread); it
    /// ends when the server ends or the fabric stops.
    fn start(self: Arc<Self>) -> std::io::Result<JoinHandle<()>>;
    /// Stops the fabric at the end of the server: lets the last messages out, stops the
    /// wire or the NIC, and returns the final counters ([`Fabric::stats_json`]).
    fn stop(&self) -> serde_json::Value;
    /// The fabric as the resolver of the node's faults.
    fn into_resolver(self: Arc<Self>) -> Arc<dyn PageResolver>;
}
