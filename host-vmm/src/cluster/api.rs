//! The management API of `cvmm run` with several node processes: each node serves its own
//! (`cvmm node --api-socket` in the run's private directory), and the launcher's socket
//! answers for the whole virtual server by asking every node.
//!
//! A node whose socket does not answer is `joining` while its process runs (it has not
//! built its share yet) and `gone` once the process ended.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::client;
use crate::api::node::CONFIG_EPOCH;
use crate::api::ApiSource;

/// The launcher's view of its nodes.
#[derive(Debug)]
pub struct ClusterApi {
    sockets: Vec<PathBuf>,
    ended: Arc<Vec<AtomicBool>>,
}

impl ClusterApi {
    /// The API of nodes serving on `sockets` (node `i` on `sockets[i]`); `ended[i]` turns
    /// true when node `i`'s process ended.
    pub fn new(sockets: Vec<PathBuf>, ended: Arc<Vec<AtomicBool>>) -> Self {
        ClusterApi { sockets, ended }
    }

    /// Node `node`'s answer to `GET path`, parsed, if it answered 200.
    fn ask(&self, node: usize, path: &str) -> Option<Value> {
        let reply = client::get(&self.sockets[node], path).ok()?;
        (reply.status == 200)
            .then(|| serde_json::from_str(&reply.body).ok())
            .flatten()
    }

    fn absent_state(&self, node: usize) -> &'static str {
        if self
            .ended
            .get(node)
            .is_some_and(|e| e.load(Ordering::Relaxed))
        {
            "gone"
        } else {
            "joining"
        }
    }
}

impl ApiSource for ClusterApi {
    fn status(&self) -> Value {
        let mut nodes = Vec::new();
        let mut first: Option<Value> = None;
        for node in 0..self.sockets.len() {
            match self.ask(node, "/v1/status") {
                Some(status) => {
                    nodes.push(status["nodes"][0].clone());
                    first.get_or_insert(status);
                }
                None => nodes.push(json!({ "node": node, "state": self.absent_state(node) })),
            }
        }
        let shared = |key: &str| first.as_ref().map_or(Value::Null, |s| s[key].clone());
        json!({
            "config_epoch": CONFIG_EPOCH,
            "nodes": nodes,
            "vp_count": shared("vp_count"),
            "node_count": self.sockets.len(),
            "memory": shared("memory"),
            "logical_bytes": shared("logical_bytes"),
        })
    }

    fn stats(&self) -> Value {
        let nodes: Vec<Value> = (0..self.sockets.len())
            .filter_map(|node| self.ask(node, "/v1/stats"))
            .filter_map(|stats| stats["nodes"].as_array().cloned())
            .flatten()
            .collect();
        json!({ "nodes": nodes })
    }
}
