//! CPU time of the node (and NIC model) processes of a running cluster, per thread, from
//! `/proc`.
//!
//! How: `/proc/<pid>/task/<tid>/schedstat` gives each thread's time on a CPU in
//! nanoseconds (`utime`/`stime` in `/proc/<pid>/stat` tick at 10 ms, far too coarse for a
//! phase of a few tens of milliseconds). The processes are found as descendants of the
//! `cvmm run` launcher; each one's role comes from its command line (`cvmm node ... --id
//! N`, `cvmm nic ...`).
//!
//! What counts as *serving*: every thread of a node process except its VP threads (`vpN`,
//! which run guest code: on a serving node the VP waits at a barrier meanwhile) and the
//! `timers` thread (the guest's tick). On the software path that is the fabric receive
//! thread (the coherence engine, page copies, sends), the transport's thread, the fault
//! thread and the main thread. A NIC model process is counted apart: its CPU is the NIC's,
//! not the host's.

use std::collections::HashMap;
use std::path::Path;

/// What a process of the cluster is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessRole {
    /// `cvmm node --id N`.
    Node(u32),
    /// `cvmm nic ...`, with the node it serves when its command line names one.
    Nic(Option<u32>),
    /// Anything else (`ip netns exec` before it execs, helpers).
    Other,
}

/// One thread's CPU time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadCpu {
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
    /// Nanoseconds on a CPU so far.
    pub ns: u64,
}

/// One process's threads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessCpu {
    /// Process id.
    pub pid: u32,
    /// What it is.
    pub role: ProcessRole,
    /// Its threads.
    pub threads: Vec<ThreadCpu>,
}

/// True for threads that serve requests of other nodes (see the module documentation).
pub fn is_serving_thread(comm: &str) -> bool {
    let vp_thread = comm
        .strip_prefix("vp")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    !(vp_thread || comm == "timers")
}

/// The first field of a `schedstat` file: nanoseconds on a CPU.
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// The parent pid from a `/proc/<pid>/stat` line (the name in parentheses may hold
/// anything, so fields are counted after its closing parenthesis).
pub fn parse_stat_ppid(text: &str) -> Option<u32> {
    let after = &text[text.rfind(')')? + 1..];
    after.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The role of a process from its arguments (`argv[0]` first).
pub fn role_from_args(args: &[String]) -> ProcessRole {
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u32>().ok())
    };
    match args.get(1).map(String::as_str) {
        Some("node") => value_of("--id").map_or(ProcessRole::Other, ProcessRole::Node),
        Some("nic") => ProcessRole::Nic(value_of("--id").or_else(|| value_of("--node"))),
        _ => ProcessRole::Other,
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn process_args(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn threads(pid: u32) -> Vec<ThreadCpu> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| {
            let tid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let ns = parse_schedstat(&read(&entry.path().join("schedstat"))?)?;
            let comm = read(&entry.path().join("comm"))?.trim_end().to_string();
            Some(ThreadCpu { tid, comm, ns })
        })
        .collect()
}

/// Every live descendant of `root` with its threads' CPU time.
pub fn snapshot(root: u32) -> Vec<ProcessCpu> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: HashMap<u32, u32> = dir
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let ppid = parse_stat_ppid(&read(&entry.path().join("stat"))?)?;
            Some((pid, ppid))
        })
        .collect();
    let descends = |mut pid: u32| {
        // Bounded walk: a pid table can change under us, never loop on it.
        for _ in 0..64 {
            match parents.get(&pid) {
                Some(&parent) if parent == root => return true,
                Some(&parent) if parent > 1 => pid = parent,
                _ => return false,
            }
        }
        false
    };
    let mut processes: Vec<ProcessCpu> = parents
        .keys()
        .copied()
        .filter(|&pid| descends(pid))
        .map(|pid| ProcessCpu {
            pid,
            role: role_from_args(&process_args(pid)),
            threads: threads(pid),
        })
        .collect();
    processes.sort_by_key(|p| p.pid);
    processes
}

/// CPU time spent serving between two snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeCpu {
    /// Serving threads of the node processes asked about (ns), if any was found.
    pub host_ns: Option<u64>,
    /// All threads of NIC model processes of those nodes, or of unnamed NIC processes
    /// (ns), if any was found.
    pub nic_ns: Option<u64>,
}

fn thread_delta(before: Option<&ProcessCpu>, after: &ProcessCpu, keep: fn(&str) -> bool) -> u64 {
    after
        .threads
        .iter()
        .filter(|t| keep(&t.comm))
        .map(|t| {
            let earlier = before
                .and_then(|b| b.threads.iter().find(|o| o.tid == t.tid))
                .map_or(0, |o| o.ns);
            t.ns.saturating_sub(earlier)
        })
        .sum()
}

/// What the processes of `serving` nodes spent between `before` and `after`.
pub fn serve_cpu(before: &[ProcessCpu], after: &[ProcessCpu], serving: &[u32]) -> ServeCpu {
    let mut result = ServeCpu::default();
    for process in after {
        let earlier = before.iter().find(|b| b.pid == process.pid);
        match process.role {
            ProcessRole::Node(node) if serving.contains(&node) => {
                let ns = thread_delta(earlier, process, is_serving_thread);
                result.host_ns = Some(result.host_ns.unwrap_or(0) + ns);
            }
            ProcessRole::Nic(node) if node.is_none_or(|n| serving.contains(&n)) => {
                let ns = thread_delta(earlier, process, |_| true);
                result.nic_ns = Some(result.nic_ns.unwrap_or(0) + ns);
            }
            _ => {}
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    fn thread(tid: u32, comm: &str, ns: u64) -> ThreadCpu {
        ThreadCpu {
            tid,
            comm: comm.into(),
            ns,
        }
    }

    #[test]
    fn serving_threads() {
        for comm in [
            "fabric-rx",
            "transport-1",
            "cvmm-fault",
            "cvmm",
            "vp",
            "vpx",
        ] {
            assert!(is_serving_thread(comm), "{comm}");
        }
        for comm in ["vp0", "vp12", "timers"] {
            assert!(!is_serving_thread(comm), "{comm}");
        }
    }

    #[test]
    fn proc_formats() {
        assert_eq!(
            parse_schedstat("277148903 226926296 2111\n"),
            Some(277148903)
        );
        assert_eq!(parse_schedstat(""), None);
        let stat = "4242 (odd) name) S 17 4242 4242 0 -1 4194560 1 0 0 0 23 4";
        assert_eq!(parse_stat_ppid(stat), Some(17));
        assert_eq!(parse_stat_ppid("garbage"), None);
    }

    #[test]
    fn roles() {
        assert_eq!(
            role_from_args(&args("/x/cvmm node --config c.toml --id 3 --stats-json s")),
            ProcessRole::Node(3)
        );
        assert_eq!(
            role_from_args(&args("cvmm nic --id 2")),
            ProcessRole::Nic(Some(2))
        );
        assert_eq!(
            role_from_args(&args("cvmm nic --socket s")),
            ProcessRole::Nic(None)
        );
        assert_eq!(
            role_from_args(&args("ip netns exec n0 cvmm node")),
            ProcessRole::Other
        );
        assert_eq!(
            role_from_args(&args("cvmm node --id x")),
            ProcessRole::Other
        );
        assert_eq!(role_from_args(&[]), ProcessRole::Other);
    }

    #[test]
    fn deltas_count_serving_threads_of_serving_nodes() {
        let before = vec![
            ProcessCpu {
                pid: 10,
                role: ProcessRole::Node(0),
                threads: vec![thread(10, "cvmm", 5), thread(11, "fabric-rx", 100)],
            },
            ProcessCpu {
                pid: 20,
                role: ProcessRole::Node(1),
                threads: vec![
                    thread(20, "cvmm", 7),
                    thread(21, "fabric-rx", 1_000),
                    thread(22, "vp1", 50_000),
                    thread(23, "timers", 10),
                ],
            },
        ];
        let mut after = before.clone();
        after[0].threads[1].ns = 9_999; // node 0 is not serving
        after[1].threads[1].ns = 4_000; // +3000
        after[1].threads[2].ns = 90_000; // VP thread: not counted
        after[1].threads[3].ns = 20; // timers: not counted
        after[1].threads.push(thread(24, "transport-1", 500)); // new thread: all of it
        after.push(ProcessCpu {
            pid: 30,
            role: ProcessRole::Nic(Some(1)),
            threads: vec![thread(30, "nic", 800)],
        });
        after.push(ProcessCpu {
            pid: 40,
            role: ProcessRole::Nic(Some(0)),
            threads: vec![thread(40, "nic", 1)],
        });
        let cpu = serve_cpu(&before, &after, &[1]);
        assert_eq!(cpu.host_ns, Some(3_500));
        assert_eq!(cpu.nic_ns, Some(800));
        let nobody = serve_cpu(&before, &after, &[]);
        assert_eq!(nobody, ServeCpu::default());
        let both = serve_cpu(&before, &after, &[0, 1]);
        assert_eq!(both.host_ns, Some(3_500 + 9_899));
        assert_eq!(both.nic_ns, Some(801));
    }

    #[test]
    fn snapshot_of_a_child() {
        // A real child process: found as a descendant, with at least one thread that
        // has run.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        let me = std::process::id();
        let found = snapshot(me);
        let _ = child.kill();
        let _ = child.wait();
        let entry = found
            .iter()
            .find(|p| p.pid == child.id())
            .expect("child found");
        assert_eq!(entry.role, ProcessRole::Other);
        assert!(!entry.threads.is_empty());
        assert_eq!(entry.threads[0].tid, child.id());
    }
}
