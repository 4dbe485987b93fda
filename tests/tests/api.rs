//! The management API (`--api-socket`) of a running virtual server, asked with `curl
//! --unix-socket` and `cvmm ctl` as an operator would, while a Linux program (busybox
//! `sleep`) keeps the server up: status against the shape asked for, live counters,
//! `/metrics` under `promtool check metrics`, and bad requests that get a JSON error and
//! change nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tests::api::{finish, get, json, request, socket_path, start_with_api};
use tests::cvmm_bin;

const BUSYBOX: &str = "/bin/busybox";

/// Starts `cvmm run FLAGS --api-socket SOCKET -- busybox sleep SECONDS` and waits until
/// every node answers as active.
fn start(socket: &Path, flags: &[&str], seconds: u32, nodes: u64) -> Child {
    start_with_api(
        socket,
        flags,
        &[BUSYBOX, "sleep", &seconds.to_string()],
        nodes,
    )
}

#[test]
fn a_two_node_server_answers_status_stats_and_metrics_and_refuses_bad_requests() {
    let socket = socket_path("two");
    let mem_mib = 32u64;
    let child = start(
        &socket,
        &["--nodes", "2", "--mem-mib", &mem_mib.to_string()],
        6,
        2,
    );
    // Only its owner may connect.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    let (code, body) = get(&socket, "/v1/status");
    assert_eq!(code, 200, "{body}");
    let status = json(&body);
    assert_eq!(status["node_count"], 2);
    assert_eq!(status["vp_count"], 2);
    assert_eq!(status["config_epoch"], 0);
    let pages_per_node = mem_mib * 1024 * 1024 / 4096;
    for (index, node) in [0u64, 1].into_iter().enumerate() {
        let memory = &status["memory"][index];
        assert_eq!(memory["node"], node);
        assert_eq!(memory["base"], node * mem_mib * 1024 * 1024);
        assert_eq!(memory["pages_homed"], pages_per_node);
        let entry = &status["nodes"][index];
        assert_eq!(entry["node"], node);
        assert_eq!(entry["fabric"], "software");
        // VPs are numbered node by node: VP n runs on node n here.
        assert_eq!(entry["vps"][0]["vp"], node);
        assert_eq!(entry["vps"][0]["node"], node);
    }

    let (code, body) = get(&socket, "/v1/stats");
    assert_eq!(code, 200, "{body}");
    let stats = json(&body);
    let ids: Vec<u64> = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 1]);
    // The program is loaded on node 0, so node 1 fetched its pages: it took remote faults.
    assert!(
        stats["nodes"][1]["remote_read_faults"].as_u64().unwrap() > 0,
        "{body}"
    );

    let (code, metrics) = get(&socket, "/metrics");
    assert_eq!(code, 200);
    for node in ["0", "1"] {
        let sample = format!("cvmm_remote_faults_total{{node=\"{node}\",kind=\"read_miss\"}} ");
        assert!(metrics.contains(&sample), "{metrics}");
    }
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut promtool) => {
            use std::io::Write;
            promtool
                .stdin
                .take()
                .unwrap()
                .write_all(metrics.as_bytes())
                .unwrap();
            let out = promtool.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => eprintln!("promtool is not installed ({e}): /metrics checked by hand only"),
    }

    // Bad requests: a JSON error each, and the server goes on.
    let url = |p: &str| format!("http://localhost{p}");
    let big = "x".repeat(100 * 1024);
    for (args, want) in [
        (vec![url("/nope")], 404),
        (vec!["-X".into(), "POST".into(), url("/v1/status")], 405),
        (
            vec![
                "-X".into(),
                "PUT".into(),
                "-d".into(),
                "{\"node\": 0, \"vps\": 9}".into(),
                url("/v1/vps"),
            ],
            400,
        ),
        (vec!["-X".into(), "DELETE".into(), url("/v1/nodes/0")], 501),
        (
            vec![
                "-X".into(),
                "PUT".into(),
                "-d".into(),
                big,
                url("/v1/memory"),
            ],
            413,
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, body) = request(&socket, &args);
        assert_eq!(code, want, "{args:?}: {body}");
        assert!(
            json(&body)["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    // Not HTTP at all: the connection is dropped, the next request is answered.
    {
        use std::io::{Read, Write};
        let mut raw = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = raw.write_all(b"\x00\x01garbage\r\n\r\n");
        let mut sink = Vec::new();
        let _ = raw.read_to_end(&mut sink);
    }
    assert_eq!(get(&socket, "/v1/status").0, 200);

    // cvmm ctl: the same requests from the command line.
    let ctl = |args: &[&str]| {
        Command::new(cvmm_bin())
            .arg("ctl")
            .arg("--api-socket")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    let out = ctl(&["status"]);
    assert!(out.status.success());
    assert_eq!(json(&String::from_utf8_lossy(&out.stdout))["node_count"], 2);
    let out = ctl(&["vps", "2", "--node", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 1 VPs"));

    finish(child);
    // The socket goes with the server.
    assert!(!socket.exists());
    let out = ctl(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[test]
fn a_single_node_serves_in_process_and_a_taken_path_is_refused() {
    let socket = socket_path("one");
    let child = start(&socket, &[], 3, 1);
    let status = json(&get(&socket, "/v1/status").1);
    assert_eq!(status["node_count"], 1);
    assert_eq!(status["nodes"][0]["fabric"], "none");
    finish(child);

    // A file that is not a socket is never replaced.
    let taken = socket_path("taken");
    std::fs::write(&taken, b"keep me").unwrap();
    let out = Command::new(cvmm_bin())
        .arg("run")
        .arg("--api-socket")
        .arg(&taken)
        .args(["--", BUSYBOX, "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a stale socket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&taken).unwrap(), b"keep me");
    let _ = std::fs::remove_file(&taken);
}
