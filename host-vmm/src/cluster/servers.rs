//! Several isolated virtual servers on one cluster at once: `cvmm run --servers N`.
//!
//! The paper's virtual computer runs several isolated virtual servers. Here a virtual
//! server is its own set of node processes (per physical node, one process per virtual
//! server), described by its own cluster description and started by its own launcher
//! (`cvmm run --vs-id K`, which this module runs once per server). What each server owns:
//! - its logical memory: a memfd per node process. Pages come from the kernel, which
//!   zeroes a page before it hands it to anyone, so a page a server touches for the first
//!   time reads as zeros and nothing another server wrote can ever be in it;
//! - its KVM VM, VP threads, engine and directory (a process each);
//! - its wire: its own ports, a fresh random cluster key, and its `vs_id`, which is also
//!   its transport's cluster id.
//!
//! Isolation then rests on three walls, each enough alone for what it guards:
//! - **the guest's names**: a guest names memory only by logical addresses below its own
//!   logical memory, every ViMA call checks them (`BadAddress`), and no call takes a
//!   server id (docs/vima.md); the other server's memory has no name in it;
//! - **the wire**: a packet of another server carries another cluster id (dropped as
//!   `foreign_cluster_dropped`), and one forged with this server's id but another key
//!   fails the MAC (`auth_failed_dropped`); a message that got through naming another
//!   `vs_id` would be refused by the engine (`WrongVirtualServer`);
//! - **the host**: different processes share no memory, and the guest cannot reach VMM
//!   state (docs/design.md, threat model).
//!
//! Why processes rather than several engines in one node process: the node process is
//! built around one VM and one memfd, the kernel already isolates processes, and a
//! crash of one server's VMM cannot take the other down. The cost is one transport (and
//! one port) per server per node, which the wire's cluster id was made for.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use super::launch::{die_with_parent, LaunchOptions};

/// Most virtual servers one `cvmm run` starts (each is a process per node).
pub const MAX_SERVERS: u16 = 16;

/// Runs `servers` virtual servers at once with the shape of `opts`; server `k` (1-based)
/// runs `workloads[k - 2]` when given, else `opts.cmdline`. Returns 0 when every server
/// exited 0, else the first failing server's status.
pub fn launch_servers(opts: &LaunchOptions, servers: u16, workloads: &[String]) -> i32 {
    match try_launch_servers(opts, servers, workloads) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("cvmm: {message}");
            1
        }
    }
}

/// The command line of server `vs_id`'s launcher.
fn server_args(opts: &LaunchOptions, vs_id: u16, cmdline: &str, stats: &Path) -> Vec<String> {
    let fabrics: Vec<String> = opts
        .fabrics
        .iter()
        .map(|f| {
            clap::ValueEnum::to_possible_value(f).map_or_else(
                || format!("{f:?}").to_lowercase(),
                |v| v.get_name().to_string(),
            )
        })
        .collect();
    let transport = clap::ValueEnum::to_possible_value(&opts.transport).map_or_else(
        || format!("{:?}", opts.transport).to_lowercase(),
        |v| v.get_name().to_string(),
    );
    let mut args = vec![
        "run".to_string(),
        "--nodes".into(),
        opts.nodes.to_string(),
        "--vps-per-node".into(),
        opts.vps_per_node.to_string(),
        "--mem-mib".into(),
        opts.mem_mib.to_string(),
        "--wire-loss".into(),
        opts.wire_loss.to_string(),
        "--transport".into(),
        transport,
        "--vs-id".into(),
        vs_id.to_string(),
        "--stats-json".into(),
        stats.display().to_string(),
    ];
    if !fabrics.is_empty() {
        args.push("--fabric".into());
        args.push(fabrics.join(","));
    }
    if opts.netns {
        args.push("--netns".into());
    }
    args.push("--".into());
    args.extend(cmdline.split_whitespace().map(str::to_string));
    args
}

/// Copies `from` line by line to our stdout or stderr with `[vsK] ` in front.
fn relay(from: impl Read + Send + 'static, vs_id: u16, to_stderr: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if to_stderr {
                let _ = writeln!(std::io::stderr().lock(), "[vs{vs_id}] {line}");
            } else {
                let _ = writeln!(std::io::stdout().lock(), "[vs{vs_id}] {line}");
            }
        }
    })
}

struct Server {
    vs_id: u16,
    child: Child,
    stats: PathBuf,
    relays: Vec<JoinHandle<()>>,
}

fn try_launch_servers(
    opts: &LaunchOptions,
    servers: u16,
    workloads: &[String],
) -> Result<i32, String> {
    if servers == 0 || servers > MAX_SERVERS {
        return Err(format!(
            "--servers {servers} is not between 1 and {MAX_SERVERS}"
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the cvmm binary: {e}"))?;
    let dir = std::env::temp_dir().join(format!("cvmm-servers-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    let mut running: Vec<Server> = Vec::new();
    for vs_id in 1..=servers {
        let own = match vs_id {
            1 => None,
            k => workloads.get(usize::from(k) - 2),
        };
        let cmdline = own.map_or(opts.cmdline.as_str(), String::as_str);
        let stats = dir.join(format!("server-{vs_id}.json"));
        let mut command = Command::new(&exe);
        command
            .args(server_args(opts, vs_id, cmdline, &stats))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let spawned = command.spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                for server in &mut running {
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                }
                return Err(format!("failed to start virtual server {vs_id}: {e}"));
            }
        };
        let mut relays = Vec::new();
        if let Some(out) = child.stdout.take() {
            relays.push(relay(out, vs_id, false));
        }
        if let Some(err) = child.stderr.take() {
            relays.push(relay(err, vs_id, true));
        }
        running.push(Server {
            vs_id,
            child,
            stats,
            relays,
        });
    }
    // Each launcher watches its own nodes and ends by itself (a dead node stops only its
    // own server): waiting for them in turn cannot hang on another.
    let mut code = 0;
    let mut nodes = Vec::new();
    let mut summary = Vec::new();
    for mut server in running {
        let status = server
            .child
            .wait()
            .map_err(|e| format!("failed to wait for virtual server {}: {e}", server.vs_id))?;
        for relay in server.relays.drain(..) {
            let _ = relay.join();
        }
        let exit = status.code().unwrap_or(1);
        if code == 0 && exit != 0 {
            code = exit;
        }
        summary.push(serde_json::json!({ "vs_id": server.vs_id, "exit": exit }));
        if let Some(list) = std::fs::read_to_string(&server.stats)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("nodes").and_then(|n| n.as_array()).cloned())
        {
            for mut node in list {
                if let Some(obj) = node.as_object_mut() {
                    obj.insert("vs_id".into(), server.vs_id.into());
                }
                nodes.push(node);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(path) = &opts.stats_json {
        let json = serde_json::json!({ "servers": summary, "nodes": nodes });
        let text = serde_json::to_string_pretty(&json).expect("JSON values serialize");
        std::fs::write(path, text)
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::config::{FabricKind, TransportKind};

    #[test]
    fn each_server_gets_its_own_id_stats_file_and_workload() {
        let opts = LaunchOptions {
            nodes: 2,
            vps_per_node: 1,
            mem_mib: 16,
            cmdline: "matmul 64".into(),
            wire_loss: 0.0,
            netns: false,
            stats_json: None,
            fabrics: vec![FabricKind::Software, FabricKind::Offload],
            transport: TransportKind::Udp,
            vs_id: 1,
            program: None,
            api_socket: None,
        };
        let args = server_args(&opts, 2, "sort 1000", Path::new("/tmp/s2.json"));
        let joined = args.join(" ");
        assert!(
            joined.starts_with("run --nodes 2 --vps-per-node 1 --mem-mib 16"),
            "{joined}"
        );
        assert!(joined.contains("--vs-id 2"), "{joined}");
        assert!(joined.contains("--transport udp"), "{joined}");
        assert!(joined.contains("--fabric software,offload"), "{joined}");
        assert!(joined.contains("--stats-json /tmp/s2.json"), "{joined}");
        assert!(joined.ends_with("-- sort 1000"), "{joined}");
        assert!(!joined.contains("--netns"));
    }
}
