//! The `cvmm` command line.

pub mod bench;
pub mod ctl;
pub mod nic;
pub mod node;
pub mod run;

use clap::{Parser, Subcommand};

/// cvmm: a clustered virtual machine monitor.
#[derive(Debug, Parser)]
#[command(name = "cvmm", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a virtual server on this machine and print its console.
    Run(run::RunArgs),
    /// Run one node of a cluster described by a TOML file.
    Node(node::NodeArgs),
    /// Run a benchmark across whole clusters (`cvmm bench fault-latency`).
    Bench(bench::BenchArgs),
    /// Run the NIC model of one node (offload path; `cvmm node` starts it).
    Nic(nic::NicArgs),
    /// Ask a running server's management API (`--api-socket`).
    Ctl(ctl::CtlArgs),
}

/// Parses the command line and runs it; returns the process exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Node(args) => node::node(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Nic(args) => nic::nic(&args),
        Command::Ctl(args) => ctl::ctl(&args),
    }
}
