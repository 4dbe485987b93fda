//! Asking a running server's management API as an operator would: `curl --unix-socket`,
//! and `cvmm run ... --api-socket` started and waited for until its nodes are active.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cvmm_bin;

/// A socket path for test `name`, unique to this test process.
pub fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("cvmm-api-test-{}-{name}.sock", std::process::id()))
}

/// `curl -s --unix-socket SOCKET ARGS...`.
pub fn curl(socket: &Path, args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-s", "--max-time", "60", "--unix-socket"])
        .arg(socket)
        .args(args)
        .output()
        .expect("curl runs (scripts/ensure-deps.sh --for test installs it)")
}

/// `GET path`: the status code and the body.
pub fn get(socket: &Path, path: &str) -> (u16, String) {
    request(socket, &[&format!("http://localhost{path}")])
}

/// `PUT path` with a JSON body: the status code and the body.
pub fn put(socket: &Path, path: &str, body: &str) -> (u16, String) {
    request(
        socket,
        &["-X", "PUT", "-d", body, &format!("http://localhost{path}")],
    )
}

/// A curl request (`args` end with the URL): the status code and the body.
pub fn request(socket: &Path, args: &[&str]) -> (u16, String) {
    let mut all = vec!["-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = curl(socket, &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Parses a JSON body, or fails the test showing it.
pub fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Starts `cvmm run FLAGS --api-socket SOCKET -- PROGRAM...` (stdin piped: the caller
/// may write to it or close it) and waits until `nodes` nodes answer as active.
pub fn start_with_api(socket: &Path, flags: &[&str], program: &[&str], nodes: u64) -> Child {
    let _ = std::fs::remove_file(socket);
    let mut child = Command::new(cvmm_bin())
        .arg("run")
        .args(flags)
        .arg("--api-socket")
        .arg(socket)
        .arg("--")
        .args(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cvmm runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if socket.exists() {
            let (code, body) = get(socket, "/v1/status");
            if code == 200 {
                let status = json(&body);
                let nodes_up = status["nodes"]
                    .as_array()
                    .map_or(0, |n| n.iter().filter(|n| n["state"] == "active").count());
                if nodes_up as u64 == nodes {
                    return child;
                }
            }
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().expect("cvmm ends");
            panic!(
                "the API did not come up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `child` and asserts it succeeded.
pub fn finish(child: Child) -> Output {
    let out = child.wait_with_output().expect("cvmm ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
