//! `cvmm run`: a whole virtual server on this machine.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::boot::elf;
use crate::boot::invocation::ProgramSpec;
use crate::cluster::config::{FabricKind, TransportKind};
use crate::cluster::launch::{launch, LaunchOptions};
use crate::cluster::servers::launch_servers;
use crate::devices::console::StdoutSink;
use crate::error::error_chain;
use crate::guest_image::GUEST_ELF;
use crate::node::{LinuxSpec, Node, NodeBuilder, NodeConfig, NodeError, NodeReport};
use crate::server::Outcome;

/// Thread placement of the guest scheduler (`cvmm run --placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Placement {
    /// Load and each thread's remote faults by home node.
    #[default]
    Memory,
    /// Run-queue load alone.
    Load,
}

/// Arguments of `cvmm run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// Virtual processors on each node.
    #[arg(long, default_value_t = 1)]
    pub vps_per_node: u32,
    /// Logical memory each node is home for, in MiB.
    #[arg(long, default_value_t = 64)]
    pub mem_mib: u64,
    /// Write counters as JSON to this file at exit.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// Drop (and duplicate, reorder) this fraction of datagrams between nodes, for testing.
    #[arg(long, default_value_t = 0.0)]
    pub wire_loss: f64,
    /// Put each node in its own network namespace, joined by veth (separate hosts).
    #[arg(long)]
    pub netns: bool,
    /// Who runs the coherence engine: host threads (`software`) or each node's NIC model
    /// (`offload`). A comma-separated list is repeated over the nodes for a mixed cluster
    /// (`offload,software`).
    #[arg(long, value_delimiter = ',', default_value = "software")]
    pub fabric: Vec<FabricKind>,
    /// The node-to-node wire: kernel `udp`, or `dpdk` (net_memif between the node
    /// processes; net_af_packet on each namespace's veth with `--netns`).
    #[arg(long, value_enum, default_value_t = TransportKind::Udp)]
    pub transport: TransportKind,
    /// Run this many isolated virtual servers at once on the cluster, each with its own
    /// node processes, memory, ports, key and id (docs/design.md); their output lines
    /// start with `[vsK] `.
    #[arg(long, default_value_t = 1)]
    pub servers: u16,
    /// The workload of server 2, 3, ... (repeat; servers without one run the main one).
    #[arg(long)]
    pub server_workload: Vec<String>,
    /// This virtual server's id on the wire (`--servers` sets it for each server).
    #[arg(long, default_value_t = 1, hide = true)]
    pub vs_id: u16,
    /// An environment variable for a Linux program (`K=V`, repeat). The program gets these
    /// and nothing else.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// A Linux program's read-only `/`: a directory of this host (node 0's), whose files
    /// the program can open; nothing outside it is reachable.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print every system call of a Linux program on stderr, with its arguments and
    /// result.
    #[arg(long)]
    pub strace: bool,
    /// Keep every `syscall` of a Linux program trapping into the guest kernel instead of
    /// rewriting it into a call (to measure the trap path; docs/linux-abi.md).
    #[arg(long)]
    pub trap_syscalls: bool,
    /// How the guest places a Linux program's threads on VPs: weighing the remote page
    /// faults each thread takes against run-queue load (`memory`, paper 4.9.5), or by
    /// load alone (`load`, to measure the difference).
    #[arg(long, value_enum, default_value_t = Placement::Memory)]
    pub placement: Placement,
    /// Serve the management API on a new Unix socket here (mode 0600: its owner's only)
    /// while the server runs: `curl --unix-socket PATH http://localhost/v1/status`.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// The guest workload and its arguments, e.g. `matmul 64`; or the path of a static
    /// x86-64 Linux executable (any name containing `/`) and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub workload: Vec<String>,
}

#[derive(Serialize)]
struct StatsFile<'a> {
    nodes: &'a [NodeReport],
}

/// Runs the virtual server; returns the exit status.
pub fn run(args: &RunArgs) -> i32 {
    if let Some(path) = args.workload.first().filter(|name| name.contains('/')) {
        return run_program(args, path);
    }
    if args.root.is_some() {
        eprintln!("cvmm: --root is for Linux programs (cvmm run --root DIR -- /path/to/program)");
        return 2;
    }
    let offload = args.fabric.contains(&FabricKind::Offload);
    if args.nodes != 1 || args.netns || offload || args.servers != 1 {
        let opts = launch_options(args);
        if args.servers != 1 {
            if args.api_socket.is_some() {
                eprintln!(
                    "cvmm: --api-socket serves one virtual server; it does not go with --servers"
                );
                return 2;
            }
            return launch_servers(&opts, args.servers, &args.server_workload);
        }
        return launch(&opts);
    }
    let cfg = NodeConfig {
        node_id: 0,
        nodes: args.nodes,
        vps_per_node: args.vps_per_node,
        mem_mib_per_node: args.mem_mib,
        cmdline: args.workload.join(" "),
    };
    let report = elf::parse(GUEST_ELF, cfg.logical_bytes())
        .map_err(NodeError::from)
        .and_then(|image| {
            NodeBuilder::new(&cfg, &image, Box::new(StdoutSink { tag_node: false }))
                .api_socket(args.api_socket.clone())
                .build()
                .and_then(Node::run)
        });
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("cvmm: {}", error_chain(&e));
            return 1;
        }
    };
    print_outcome(&report.outcome);
    if !write_stats(args, &report) {
        return 1;
    }
    report.outcome.exit_code()
}

/// Writes `--stats-json` for a one-node run; false (after saying why) if it failed.
fn write_stats(args: &RunArgs, report: &NodeReport) -> bool {
    let Some(path) = &args.stats_json else {
        return true;
    };
    let reports = [report.clone()];
    let file = StatsFile { nodes: &reports };
    let written = serde_json::to_string_pretty(&file)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(path, json));
    if let Err(e) = written {
        eprintln!("cvmm: failed to write {}: {e}", path.display());
        return false;
    }
    true
}

/// `cvmm run -- PATH ARGS...`: a Linux program from the host (docs/linux-abi.md). The
/// file is checked and placed here, so that a dynamic executable, a file that is not an
/// x86-64 ELF or one that does not fit gets one sentence and exit 1 before any node
/// starts. One node runs in this process; several are node processes that inherit
/// cvmm's stdin, stdout and stderr. cvmm's exit status is the program's.
fn run_program(args: &RunArgs, path: &str) -> i32 {
    let cfg = NodeConfig {
        node_id: 0,
        nodes: args.nodes,
        vps_per_node: args.vps_per_node,
        mem_mib_per_node: args.mem_mib,
        cmdline: linux_cmdline(args),
    };
    let prepared = ProgramSpec::new(path, &args.workload, &args.env, args.root.as_deref())
        .and_then(|spec| {
            let program = spec.prepare(kernel_image(&cfg).end, cfg.mem_mib_per_node << 20)?;
            Ok((spec, program))
        });
    let (spec, program) = match prepared {
        Ok(prepared) => prepared,
        Err(sentence) => {
            eprintln!("cvmm: {path}: {sentence}");
            return 1;
        }
    };
    if args.servers != 1 {
        eprintln!("cvmm: {path}: a Linux program runs on one virtual server (no --servers)");
        return 1;
    }
    if std::env::var_os("RUST_LOG").is_none() {
        // The program's stderr is the program's: VMM warnings stay out of it.
        log::set_max_level(log::LevelFilter::Error);
    }
    if args.nodes != 1 || args.netns || args.fabric.contains(&FabricKind::Offload) {
        let mut opts = launch_options(args);
        opts.cmdline = cfg.cmdline;
        opts.program = Some(spec);
        return launch(&opts);
    }
    let image = kernel_image(&cfg);
    let report = NodeBuilder::new(&cfg, &image, Box::new(StdoutSink { tag_node: false }))
        .linux(LinuxSpec::Load {
            program,
            root: spec.root.clone(),
        })
        .api_socket(args.api_socket.clone())
        .build()
        .and_then(Node::run);
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("cvmm: {}", error_chain(&e));
            return 1;
        }
    };
    print_outcome(&report.outcome);
    if !write_stats(args, &report) {
        return 1;
    }
    report.outcome.exit_code()
}

/// The launcher's options for a workload run on node processes.
fn launch_options(args: &RunArgs) -> LaunchOptions {
    LaunchOptions {
        nodes: args.nodes,
        vps_per_node: args.vps_per_node,
        mem_mib: args.mem_mib,
        cmdline: args.workload.join(" "),
        wire_loss: args.wire_loss,
        netns: args.netns,
        stats_json: args.stats_json.clone(),
        fabrics: args.fabric.clone(),
        transport: args.transport,
        vs_id: args.vs_id,
        program: None,
        api_socket: args.api_socket.clone(),
    }
}

/// Says on stderr why the virtual server ended, if it did not end normally.
fn print_outcome(outcome: &Outcome) {
    match outcome {
        Outcome::GuestFault(fault) => eprintln!("cvmm: {fault}"),
        Outcome::VmmError(msg) => eprintln!("cvmm: {msg}"),
        Outcome::Exited(_) | Outcome::AllStopped => {}
    }
}

/// The guest command line that makes the guest kernel run the loaded program.
pub const LINUX_CMDLINE: &str = "linux";

fn linux_cmdline(args: &RunArgs) -> String {
    let mut cmdline = String::from(LINUX_CMDLINE);
    if args.strace {
        cmdline.push_str(" strace");
    }
    if args.trap_syscalls {
        cmdline.push_str(" trap-syscalls");
    }
    if args.placement == Placement::Load {
        cmdline.push_str(" load-placement");
    }
    cmdline
}

fn kernel_image(cfg: &NodeConfig) -> crate::boot::elf::GuestImage<'static> {
    crate::boot::elf::parse(GUEST_ELF, cfg.logical_bytes())
        .expect("the built-in guest image is valid")
}
