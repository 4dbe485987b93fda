//! `cvmm ctl`: the management API from the command line (the same requests as `curl
//! --unix-socket PATH http://localhost/...`), printing the JSON answer or the error.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::api::client;
use crate::error::error_chain;

/// Arguments of `cvmm ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The API socket of `cvmm run --api-socket` or `cvmm node --api-socket`.
    #[arg(long, value_name = "PATH")]
    pub api_socket: PathBuf,
    /// What to ask.
    #[command(subcommand)]
    pub what: CtlCommand,
}

/// What `cvmm ctl` asks.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Nodes, their state, VPs and memory (`GET /v1/status`).
    Status,
    /// The live counters (`GET /v1/stats`).
    Stats,
    /// The counters in the Prometheus text format (`GET /metrics`).
    Metrics,
    /// Set the VP count of a node (`PUT /v1/vps`).
    Vps {
        /// VPs the node should have.
        count: u32,
        /// The node.
        #[arg(long)]
        node: u32,
    },
    /// Grow or shrink a node's logical memory (`PUT /v1/memory`).
    Memory {
        /// MiB the node should be home for.
        mib: u64,
        /// The node.
        #[arg(long)]
        node: u32,
    },
    /// Add or remove a node (`POST /v1/nodes`, `DELETE /v1/nodes/ID`).
    Node {
        /// `add ADDR` or `remove ID`.
        #[command(subcommand)]
        change: NodeChange,
    },
}

/// A change of the node set.
#[derive(Debug, Subcommand)]
pub enum NodeChange {
    /// Add the node started with `cvmm node --join` at this address.
    Add {
        /// Its address.
        address: String,
    },
    /// Drain and remove node ID.
    Remove {
        /// The node.
        id: u32,
    },
}

/// Runs the request; returns the exit status (0 for a 2xx answer, 1 otherwise).
pub fn ctl(args: &CtlArgs) -> i32 {
    let (method, path, body) = match &args.what {
        CtlCommand::Status => ("GET", "/v1/status".to_string(), None),
        CtlCommand::Stats => ("GET", "/v1/stats".to_string(), None),
        CtlCommand::Metrics => ("GET", "/metrics".to_string(), None),
        CtlCommand::Vps { count, node } => (
            "PUT",
            "/v1/vps".to_string(),
            Some(serde_json::json!({ "node": node, "vps": count })),
        ),
        CtlCommand::Memory { mib, node } => (
            "PUT",
            "/v1/memory".to_string(),
            Some(serde_json::json!({ "node": node, "mib": mib })),
        ),
        CtlCommand::Node {
            change: NodeChange::Add { address },
        } => (
            "POST",
            "/v1/nodes".to_string(),
            Some(serde_json::json!({ "address": address })),
        ),
        CtlCommand::Node {
            change: NodeChange::Remove { id },
        } => ("DELETE", format!("/v1/nodes/{id}"), None),
    };
    let body = body.map(|b| b.to_string());
    let reply = client::request(
        &args.api_socket,
        method,
        &path,
        body.as_deref(),
        Duration::from_secs(30),
    );
    match reply {
        Ok(reply) if (200..300).contains(&reply.status) => {
            print!("{}", reply.body);
            0
        }
        Ok(reply) => {
            let message = serde_json::from_str::<serde_json::Value>(&reply.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(reply.body);
            eprintln!("cvmm ctl: {} ({})", message.trim_end(), reply.status);
            1
        }
        Err(e) => {
            eprintln!("cvmm ctl: {}", error_chain(&e));
            1
        }
    }
}
