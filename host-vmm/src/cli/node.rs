//! `cvmm node`: one node of a cluster described by a TOML file (on a rack, one per
//! machine; `cvmm run --nodes M` starts M of them on this machine).

use std::path::PathBuf;

use clap::Args;

use crate::cluster::member::run_member;
use crate::error::error_chain;
use crate::server::Outcome;

/// Arguments of `cvmm node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The cluster description (`cluster.toml`; its keys are in host-vmm/src/cluster/config.rs
    /// and examples/cluster.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// This node's id in the description.
    #[arg(long)]
    pub id: u32,
    /// Write this node's counters as JSON to this file at exit.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// Serve this node's management API on a new Unix socket here (mode 0600).
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
}

/// Runs the node; returns the exit status.
pub fn node(args: &NodeArgs) -> i32 {
    match run_node(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("cvmm node {}: {message}", args.id);
            1
        }
    }
}

fn run_node(args: &NodeArgs) -> Result<i32, String> {
    let run =
        run_member(&args.config, args.id, args.api_socket.clone()).map_err(|e| error_chain(&e))?;
    let report = &run.report;
    match &report.outcome {
        Outcome::GuestFault(fault) => eprintln!("cvmm node {}: {fault}", args.id),
        Outcome::VmmError(msg) => eprintln!("cvmm node {}: {msg}", args.id),
        Outcome::Exited(_) | Outcome::AllStopped => {}
    }
    let stats = serde_json::to_value(report).expect("reports serialize");
    // A Linux program's stderr is the program's alone.
    if !run.runs_program {
        eprintln!("{}", summary(&stats));
    }
    if let Some(path) = &args.stats_json {
        let json = serde_json::json!({ "nodes": [stats] });
        let text = serde_json::to_string_pretty(&json).expect("JSON values serialize");
        std::fs::write(path, text)
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    }
    Ok(report.outcome.exit_code())
}

/// One line for people: what the node did.
pub fn summary(stats: &serde_json::Value) -> String {
    let n = |k: &str| {
        stats
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let lat = &stats["fault_latency_us"];
    format!(
        "cvmm: node {}: {} remote read faults, {} remote write faults, {} upgrades, \
         {} invalidations sent, {} received, {} pages sent, {} retransmits; \
         remote fault p50 {:.0} us p99 {:.0} us",
        n("id"),
        n("remote_read_faults"),
        n("remote_write_faults"),
        n("upgrades"),
        n("invalidations_sent"),
        n("invalidations_received"),
        n("pages_sent"),
        n("retransmits"),
        lat["p50"].as_f64().unwrap_or(0.0),
        lat["p99"].as_f64().unwrap_or(0.0),
    )
}
