//! `cvmm nic`: the NIC model of one node (offload path). `cvmm node` starts it for a node
//! whose fabric is `offload`; on a rack it can run on its own and the node connects to its
//! socket (`[[nodes]] nic_socket`).

use std::path::PathBuf;

use clap::Args;

use crate::cluster::config::ClusterConfig;
use crate::cluster::member::transport_for;
use crate::error::error_chain;
use crate::nic::run_nic;

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
            let transport = transport_for(&config, args.id).map_err(|e| error_chain(&e))?;
            run_nic(&config, args.id, &args.socket, transport).map_err(|e| error_chain(&e))
        });
    match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("cvmm nic {}: {message}", args.id);
            1
        }
    }
}
