//! `cvmm bench ...`: benchmarks that start whole clusters (the `cvmm-bench` crate).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use cvmm_bench::{fault_latency, plot, report, FaultLatencyOptions};

/// Arguments of `cvmm bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub which: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Remote fault latency on every available path (software/offload x udp/dpdk) plus
    /// the local fault floor, measured by the guest probe.
    FaultLatency(FaultLatencyArgs),
    /// What a Linux program pays on the virtual server, next to the same binary run
    /// natively: the null system call, thread create + join, futex ping-pong (one VP,
    /// two VPs, two nodes), a multi-threaded computation's speed-up over VPs and nodes
    /// with remote faults per operation, and the remote faults of threads placed by
    /// memory weight against load alone.
    Linux(LinuxArgs),
    /// How long configuration changes of a running server take (VPs leave and come
    /// back, a node's memory shrinks and grows) while a threaded Linux program runs, on
    /// both fabrics.
    Reconfig(ReconfigArgs),
}

/// Arguments of `cvmm bench reconfig`.
#[derive(Debug, Args)]
pub struct ReconfigArgs {
    /// Rounds of the four changes per fabric.
    #[arg(long, default_value_t = 20)]
    pub cycles: u32,
    /// Logical memory per node, in MiB (node 1 shrinks to half of it and back).
    #[arg(long, default_value_t = 64)]
    pub mem_mib: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Arguments of `cvmm bench linux`.
#[derive(Debug, Args)]
pub struct LinuxArgs {
    /// Runs per case; rows are medians across them.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Scale every case's operation count (0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Arguments of `cvmm bench fault-latency`.
#[derive(Debug, Args)]
pub struct FaultLatencyArgs {
    /// Nodes per cluster (one VP each); invalidation is measured with 1..N-1 sharers.
    #[arg(long, default_value_t = 4)]
    pub nodes: u32,
    /// Pages per run (one timed access each).
    #[arg(long, default_value_t = 200)]
    pub pages: u64,
    /// Runs per path and kind; rows are medians across them.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Logical memory per node, in MiB.
    #[arg(long, default_value_t = 64)]
    pub mem_mib: u64,
    /// Only these paths, comma separated (e.g. `software/udp,offload/dpdk`).
    #[arg(long, value_delimiter = ',')]
    pub paths: Vec<String>,
    /// Longest a single run may take, in seconds.
    #[arg(long, default_value_t = 120)]
    pub run_timeout_s: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the results as SVG here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Runs the chosen benchmark; returns the exit status.
pub fn bench(args: &BenchArgs) -> i32 {
    match &args.which {
        BenchCommand::FaultLatency(args) => fault_latency_main(args),
        BenchCommand::Linux(args) => linux_main(args),
        BenchCommand::Reconfig(args) => reconfig_main(args),
    }
}

fn reconfig_main(args: &ReconfigArgs) -> i32 {
    use cvmm_bench::reconfig::{reconfig_bench, table, ReconfigOptions};
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cvmm bench: cannot find the cvmm binary: {e}");
            return 1;
        }
    };
    if args.cycles == 0 || args.mem_mib < 16 {
        eprintln!("cvmm bench reconfig: --cycles must be at least 1 and --mem-mib at least 16");
        return 2;
    }
    let options = ReconfigOptions {
        exe,
        cycles: args.cycles,
        mem_mib: args.mem_mib,
    };
    let report = match reconfig_bench(&options, &mut std::io::stderr()) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("cvmm bench reconfig: {e}");
            return 1;
        }
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("the report serializes");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("cvmm bench: failed to write {}: {e}", path.display());
            return 1;
        }
    }
    print!("{}", table(&report));
    i32::from(report.rows.is_empty())
}

fn linux_main(args: &LinuxArgs) -> i32 {
    use cvmm_bench::linux::{linux_bench, table, LinuxBenchOptions};
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cvmm bench: cannot find the cvmm binary: {e}");
            return 1;
        }
    };
    if !(args.scale > 0.0 && args.scale <= 100.0) {
        eprintln!("cvmm bench linux: --scale must be in (0, 100]");
        return 2;
    }
    let options = LinuxBenchOptions {
        exe,
        repeat: args.repeat,
        scale: args.scale,
    };
    let report = match linux_bench(&options, &mut std::io::stderr()) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("cvmm bench linux: {e}");
            return 1;
        }
    };
    let mut status = 0;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("cvmm bench: failed to write {}: {e}", path.display());
            status = 1;
        }
    }
    print!("{}", table(&report));
    if report.rows.iter().all(|r| r.runs == 0) {
        eprintln!("cvmm bench linux: no run produced a result");
        status = 1;
    }
    status
}

fn fault_latency_main(args: &FaultLatencyArgs) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cvmm bench: cannot find the cvmm binary: {e}");
            return 1;
        }
    };
    let mut options = FaultLatencyOptions::new(exe, args.nodes, args.pages, args.repeat);
    options.mem_mib = args.mem_mib;
    options.only_paths = args.paths.clone();
    options.run_timeout = std::time::Duration::from_secs(args.run_timeout_s);
    let result = match fault_latency(&options, &mut std::io::stderr()) {
        Ok(result) => result,
        Err(e) => {
            eprintln!("cvmm bench: {}", crate::error::error_chain(&e));
            return 1;
        }
    };
    let mut status = 0;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&result).expect("the report serializes");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("cvmm bench: failed to write {}: {e}", path.display());
            status = 1;
        }
    }
    if let Some(path) = &args.plot {
        if let Err(e) = std::fs::write(path, plot::svg(&result)) {
            eprintln!("cvmm bench: failed to write {}: {e}", path.display());
            status = 1;
        }
    }
    print!("{}", report::table(&result));
    if result.paths.is_empty() {
        eprintln!("cvmm bench: no run produced a result");
        status = 1;
    }
    status
}
