//! The API of one node process (`cvmm node --api-socket`): its own VPs and counters, and
//! the memory layout every node shares.

use std::sync::Arc;

use serde_json::{json, Value};
use vima::layout::PAGE_SIZE;

use super::{ApiSource, Change, Refusal};
use crate::node::NodeCounters;
use crate::server::VirtualServer;
use crate::vp::RunState;

/// A running node's view.
#[derive(Debug)]
pub struct NodeApi {
    server: Arc<VirtualServer>,
}

impl NodeApi {
    /// The API of `server`.
    pub fn new(server: Arc<VirtualServer>) -> Self {
        NodeApi { server }
    }
}

fn run_state(state: RunState, online: bool) -> &'static str {
    match state {
        _ if !online => "offline",
        RunState::Stopped => "stopped",
        RunState::StartRequested { .. } => "starting",
        RunState::Running => "running",
    }
}

/// The memory of every node, from the configuration table: where each node's home range
/// lies and how many pages it homes.
fn memory(table: &[u8]) -> Value {
    let Ok(config) = vima::config::Config::parse(table) else {
        return json!([]);
    };
    let ranges: Vec<Value> = config
        .mem_ranges()
        .map(|r| {
            json!({
                "node": r.node_id,
                "base": r.base,
                "mib": r.size >> 20,
                "pages_homed": r.size / PAGE_SIZE,
            })
        })
        .collect();
    Value::Array(ranges)
}

impl ApiSource for NodeApi {
    fn status(&self) -> Value {
        let server = &self.server;
        let config = server.control.configuration();
        let vps: Vec<Value> = server
            .control
            .vps()
            .iter()
            .filter(|vp| vp.node == server.node_id)
            .map(|vp| {
                let state = *vp.state.lock().expect("state lock");
                let state = run_state(state, config.is_online(vp.id));
                json!({ "vp": vp.id, "node": vp.node, "state": state })
            })
            .collect();
        let fabric = server
            .fabric
            .as_ref()
            .map_or(Value::String("none".into()), |f| {
                f.stats_json()["fabric"].clone()
            });
        json!({
            "config_epoch": config.epoch(),
            "nodes": [{
                "node": server.node_id,
                "state": if server.is_finished() { "finished" } else { "active" },
                "fabric": fabric,
                "vps": vps,
                "uptime_s": server.started_at.elapsed().as_secs_f64(),
            }],
            "vp_count": server.control.vps().len(),
            "node_count": server.nodes,
            "memory": memory(&config.table()),
            "logical_bytes": server.logical_bytes,
        })
    }

    fn stats(&self) -> Value {
        let counters = NodeCounters::live(&self.server);
        json!({ "nodes": [counters] })
    }

    fn change(&self, change: Change) -> Result<Value, Refusal> {
        let done = match change {
            Change::Vps(c) => self
                .server
                .set_vp_count(c.node, c.vps)
                .map(serde_json::to_value),
            Change::Memory(c) => self
                .server
                .set_memory(c.node, c.mib)
                .map(serde_json::to_value),
        };
        done.map(|value| value.expect("a change serializes"))
            .map_err(|err| Refusal::new(err.http_status(), err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{SetMemory, SetVps};
    use crate::server::testing::single_node;

    #[test]
    fn status_lists_the_nodes_vps_and_homes() {
        let server = Arc::new(single_node(2));
        let api = NodeApi::new(server.clone());
        let status = api.status();
        assert_eq!(status["config_epoch"], 0);
        assert_eq!(status["vp_count"], 2);
        let node = &status["nodes"][0];
        assert_eq!(
            (node["node"].clone(), node["state"].clone()),
            (json!(0), json!("active"))
        );
        assert_eq!(node["fabric"], "none");
        assert_eq!(
            node["vps"][1],
            json!({ "vp": 1, "node": 0, "state": "stopped" })
        );
        // 8 MiB homed by node 0: 2048 pages.
        assert_eq!(status["memory"][0]["pages_homed"], 2048);
        assert_eq!(status["memory"][0]["mib"], 8);
        server.finish(crate::server::Outcome::AllStopped);
        assert_eq!(api.status()["nodes"][0]["state"], "finished");
    }

    #[test]
    fn vp_changes_are_checked_before_anything_changes() {
        let api = NodeApi::new(Arc::new(single_node(2)));
        let refused = |node, vps| api.change(Change::Vps(SetVps { node, vps })).unwrap_err();
        assert_eq!(refused(0, 0).status, 400);
        assert_eq!(refused(0, 3).status, 400);
        assert_eq!(refused(1, 1).status, 404);
        // A built-in workload has no scheduler to move threads with.
        let builtin = refused(0, 1);
        assert_eq!(builtin.status, 409);
        assert!(
            builtin.message.contains("Linux programs"),
            "{}",
            builtin.message
        );
        let status = api.status();
        assert_eq!(status["config_epoch"], 0);
        assert_eq!(status["nodes"][0]["vps"][1]["state"], "stopped");
        // Asking for what is already there is a change of nothing.
        let same = api.change(Change::Vps(SetVps { node: 0, vps: 2 })).unwrap();
        assert_eq!(same["removed"], json!([]));
        assert_eq!(same["online"], json!([0, 1]));
        assert_eq!(same["config_epoch"], 0);
        let memory = |mib| api.change(Change::Memory(SetMemory { node: 0, mib }));
        // Between the boot minimum and the size it was started with (8 MiB here).
        assert_eq!(memory(4).unwrap_err().status, 400);
        assert_eq!(memory(9).unwrap_err().status, 400);
        assert_eq!(memory(8).unwrap()["mib_before"], 8);
        assert_eq!(api.status()["memory"][0]["mib"], 8);
    }

    #[test]
    fn stats_are_the_live_counters() {
        let server = Arc::new(single_node(1));
        server.stats.count_call(vima::call::Call::SelfInfo);
        let stats = NodeApi::new(server).stats();
        assert_eq!(stats["nodes"][0]["id"], 0);
        assert_eq!(stats["nodes"][0]["calls"]["self_info"], 1);
    }
}
