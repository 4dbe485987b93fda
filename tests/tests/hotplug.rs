//! VPs and memory leave and come back while a multi-threaded Linux program runs (issue
//! 12, paper 4.10): `PUT /v1/vps` and `PUT /v1/memory` through the launcher's API on a
//! 2-node server, with the software fabric and with the offload fabric on a lossy wire.
//! The program's output must equal a native run's (its checksum, no mismatching round,
//! no lost increment), every change must show in `GET /v1/status` (offline VPs, memory
//! per node, the epoch), an offline VP must not run, and refused changes must change
//! nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tests::api::{finish, get, json, put, socket_path, start_with_api};
use tests::cvmm_bin;

/// Builds `host-vmm/tests/linux/hotplug.c` statically with gcc, once per test.
fn build_program(name: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host-vmm/tests/linux/hotplug.c");
    let out = std::env::temp_dir().join(format!("cvmm-hotplug-{}-{name}", std::process::id()));
    let built = Command::new("gcc")
        .args(["-O2", "-static", "-pthread", "-o"])
        .arg(&out)
        .arg(&source)
        .output()
        .expect("gcc runs (scripts/ensure-deps.sh installs it)");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

fn epoch(socket: &Path) -> u64 {
    let (code, body) = get(socket, "/v1/status");
    assert_eq!(code, 200, "{body}");
    json(&body)["config_epoch"].as_u64().expect("an epoch")
}

/// `(vp, state)` of every VP, from every node.
fn vp_states(socket: &Path) -> Vec<(u64, String)> {
    let (_, body) = get(socket, "/v1/status");
    let status = json(&body);
    let mut states = Vec::new();
    for node in status["nodes"].as_array().expect("nodes") {
        for vp in node["vps"].as_array().expect("vps") {
            let state = vp["state"].as_str().unwrap_or("?").to_string();
            states.push((vp["vp"].as_u64().expect("vp id"), state));
        }
    }
    states.sort();
    states
}

/// VP `vp`'s time in KVM_RUN so far, from the live counters.
fn run_seconds(socket: &Path, vp: u64) -> f64 {
    let (_, body) = get(socket, "/v1/stats");
    let stats = json(&body);
    stats["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .flat_map(|n| n["vp_time"].as_array().cloned().unwrap_or_default())
        .find(|t| t["vp"] == vp)
        .and_then(|t| t["run_s"].as_f64())
        .expect("the VP's run time")
}

fn set_vps(socket: &Path, node: u64, vps: u64) -> Value {
    let (code, body) = put(
        socket,
        "/v1/vps",
        &format!(r#"{{"node": {node}, "vps": {vps}}}"#),
    );
    assert_eq!(code, 200, "node {node} to {vps} VPs: {body}");
    json(&body)
}

fn set_memory(socket: &Path, node: u64, mib: u64) -> (u16, Value) {
    let (code, body) = put(
        socket,
        "/v1/memory",
        &format!(r#"{{"node": {node}, "mib": {mib}}}"#),
    );
    (code, json(&body))
}

/// MiB each node homes, from `GET /v1/status`.
fn memory_mib(socket: &Path) -> Vec<u64> {
    let (_, body) = get(socket, "/v1/status");
    json(&body)["memory"]
        .as_array()
        .expect("memory")
        .iter()
        .map(|range| range["mib"].as_u64().expect("mib"))
        .collect()
}

fn vps_of(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .expect("a list of VPs")
        .iter()
        .map(|v| v.as_u64().expect("a VP id"))
        .collect()
}

fn vps_come_and_go(name: &str, flags: &[&str]) {
    let program = build_program(name);
    let native = Command::new(&program)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the program runs natively");
    assert!(native.status.success());

    let socket = socket_path(name);
    let mut all = vec!["--nodes", "2", "--vps-per-node", "2", "--mem-mib", "64"];
    all.extend_from_slice(flags);
    let program_arg = program.to_string_lossy().into_owned();
    let mut child = start_with_api(&socket, &all, &[&program_arg], 2);
    let mut expected_epoch = epoch(&socket);
    assert_eq!(expected_epoch, 0);

    // VPs 0, 1 run on node 0 and 2, 3 on node 1; a node keeps its first VP.
    for round in 0..3 {
        let done = set_vps(&socket, 1, 1);
        expected_epoch += 1;
        assert_eq!(vps_of(&done["removed"]), [3], "round {round}");
        assert_eq!(vps_of(&done["online"]), [2]);
        assert_eq!(done["config_epoch"], expected_epoch);
        let done = set_vps(&socket, 0, 1);
        expected_epoch += 1;
        assert_eq!(vps_of(&done["removed"]), [1]);
        assert_eq!(done["config_epoch"], expected_epoch);
        let states = vp_states(&socket);
        assert_eq!(states[1], (1, "offline".into()), "{states:?}");
        assert_eq!(states[3], (3, "offline".into()), "{states:?}");
        assert_eq!(states[0].1, "running", "{states:?}");
        assert_eq!(epoch(&socket), expected_epoch);
        if round == 0 {
            // A parked VP does not enter the guest at all.
            let before = run_seconds(&socket, 3);
            std::thread::sleep(Duration::from_millis(500));
            assert_eq!(run_seconds(&socket, 3), before, "offline VP 3 ran");
            // Refused changes change nothing.
            for (body, want) in [
                (r#"{"node": 1, "vps": 0}"#, 400),
                (r#"{"node": 1, "vps": 3}"#, 400),
                (r#"{"node": 7, "vps": 1}"#, 404),
                (r#"{"node": 1}"#, 400),
                ("{not json", 400),
            ] {
                let (code, answer) = put(&socket, "/v1/vps", body);
                assert_eq!(code, want, "{body}: {answer}");
                assert!(json(&answer)["error"].is_string());
            }
            assert_eq!(epoch(&socket), expected_epoch);

            // Node 1's memory shrinks under the running threads and grows back.
            let (code, done) = set_memory(&socket, 1, 16);
            assert_eq!(code, 200, "{done}");
            assert_eq!(
                (done["mib_before"].clone(), done["mib"].clone()),
                (64.into(), 16.into())
            );
            expected_epoch += 1;
            assert_eq!(memory_mib(&socket), [64, 16]);
            // Below the minimum, above the boot size: refused before anything changes.
            for mib in [4, 65] {
                let (code, answer) = set_memory(&socket, 1, mib);
                assert_eq!(code, 400, "{answer}");
            }
            assert_eq!(epoch(&socket), expected_epoch);
            let (code, done) = set_memory(&socket, 1, 64);
            assert_eq!(code, 200, "{done}");
            expected_epoch += 1;
            // Node 0's first 8 MiB hold the program: the guest refuses, the table stays
            // (the epoch moves past the proposal and its withdrawal).
            let (code, answer) = set_memory(&socket, 0, 8);
            assert_eq!(code, 409, "{answer}");
            assert!(
                answer["error"].as_str().unwrap().contains("uses pages"),
                "{answer}"
            );
            expected_epoch += 2;
            assert_eq!(memory_mib(&socket), [64, 64]);
            assert_eq!(epoch(&socket), expected_epoch);
        }
        std::thread::sleep(Duration::from_millis(300));
        let done = set_vps(&socket, 0, 2);
        expected_epoch += 1;
        assert_eq!(vps_of(&done["added"]), [1]);
        assert_eq!(vps_of(&done["online"]), [0, 1]);
        let done = set_vps(&socket, 1, 2);
        expected_epoch += 1;
        assert_eq!(vps_of(&done["added"]), [3]);
        assert!(vp_states(&socket).iter().all(|(_, s)| s == "running"));
        std::thread::sleep(Duration::from_millis(300));
    }
    // The same change of nothing is no change: the epoch stays.
    let same = set_vps(&socket, 1, 2);
    assert_eq!(same["config_epoch"], expected_epoch);

    // cvmm ctl makes the same change from the command line.
    let ctl = Command::new(cvmm_bin())
        .args(["ctl", "--api-socket"])
        .arg(&socket)
        .args(["vps", "1", "--node", "0"])
        .output()
        .expect("cvmm ctl runs");
    assert!(
        ctl.status.success(),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    assert_eq!(
        vps_of(&json(&String::from_utf8_lossy(&ctl.stdout))["removed"]),
        [1]
    );

    // End of input: the program finishes its rounds and prints what it computed.
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.flush().expect("stdin flushes");
    drop(stdin);
    let out = finish(child);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&native.stdout),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&program);
}

#[test]
fn vps_leave_and_return_under_a_threaded_program_with_the_software_fabric() {
    vps_come_and_go("software", &["--fabric", "software"]);
}

#[test]
fn vps_leave_and_return_under_a_threaded_program_with_the_offload_fabric_on_a_lossy_wire() {
    vps_come_and_go("offload", &["--fabric", "offload", "--wire-loss", "0.05"]);
}
