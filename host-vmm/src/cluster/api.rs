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
use crate::api::{ApiSource, Change, Refusal};

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
        // Every node holds the same table; the latest epoch any node reports is the
        // server's (an update may be on its way to the others).
        let mut epoch = 0;
        for node in 0..self.sockets.len() {
            match self.ask(node, "/v1/status") {
                Some(status) => {
                    nodes.push(status["nodes"][0].clone());
                    epoch = epoch.max(status["config_epoch"].as_u64().unwrap_or(0));
                    first.get_or_insert(status);
                }
                None => nodes.push(json!({ "node": node, "state": self.absent_state(node) })),
            }
        }
        let shared = |key: &str| first.as_ref().map_or(Value::Null, |s| s[key].clone());
        json!({
            "config_epoch": epoch,
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

    /// Asks the node the change is for: only its host can park or resume its VPs and
    /// give back its memory.
    fn change(&self, change: Change) -> Result<Value, Refusal> {
        let node = usize::try_from(change.node()).unwrap_or(usize::MAX);
        let Some(socket) = self.sockets.get(node) else {
            return Err(Refusal::new(
                404,
                format!("there is no node {}", change.node()),
            ));
        };
        let (method, path, body) = change.request();
        let timeout = crate::server::reconfig::ACK_TIMEOUT * 3;
        let reply = client::request(socket, method, path, Some(&body), timeout)
            .map_err(|err| Refusal::new(502, format!("node {node} did not answer: {err}")))?;
        let value: Value = serde_json::from_str(&reply.body).map_err(|_| {
            Refusal::new(
                502,
                format!("node {node} answered something that is not JSON"),
            )
        })?;
        if reply.status == 200 {
            return Ok(value);
        }
        let message = value["error"].as_str().unwrap_or("no reason given");
        Err(Refusal::new(reply.status, message))
    }
}
