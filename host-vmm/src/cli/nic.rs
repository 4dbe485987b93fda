//! `cvmm nic`: the NIC model of one node (offload path). `cvmm node` starts it for a node
//! whose fabric is `offload`; on a rack it can run on its own and the node connects to its
//! socket (`[[nodes]] nic_socket`).

use std::path::PathBuf;

use clap::Args;

use crate::cluster::config::ClusterConfig;
use crate::cluster::member::transport_for;
use crate::error::error_chain;
use crate::node::build_config_table;
use nic_model::{run_nic, NicSpec};

/// Arguments of `cvmm nic`.
#[derive(Debug, Args)]
pub struct NicArgs {
    /// The cluster description.
    #[arg(long)]
    pub config: PathBuf,
    /// The node this NIC serves.
    #[arg(long)]
    pub id: u32,
    /// The vfio-user socket to serve the device on (must not exist).
    #[arg(long)]
    pub socket: PathBuf,
}

/// Runs the NIC model; returns the exit status.
pub fn nic(args: &NicArgs) -> i32 {
    let result = ClusterConfig::load(&args.config)
        .map_err(|e| error_chain(&e))
        .and_then(|config| {
            let cfg = config.node_config(args.id);
            cfg.validate().map_err(|e| error_chain(&e))?;
            // The NIC needs the memory ranges (homes) and the VPs, not the clock: tsc 0.
            let spec = NicSpec {
                config_table: build_config_table(&cfg, 0).map_err(|e| error_chain(&e))?,
                vs_id: config.server.vs_id,
                node: args.id,
            };
            let transport = transport_for(&config, args.id).map_err(|e| error_chain(&e))?;
            run_nic(&spec, &args.socket, transport).map_err(|e| error_chain(&e))
        });
    match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("cvmm nic {}: {message}", args.id);
            1
        }
    }
}
