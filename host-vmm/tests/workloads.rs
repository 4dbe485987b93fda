//! Every guest workload on one node with 1 and 2 VPs, through the real `cvmm` binary, and
//! its output compared with a reference computed here, independently of the guest.

use std::process::Command;

use tests::{matmul_reference, sort_reference};

fn cvmm(vps: u32, workload: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cvmm"))
        .args([
            "run",
            "--nodes",
            "1",
            "--vps-per-node",
            &vps.to_string(),
            "--mem-mib",
            "32",
            "--",
        ])
        .args(workload)
        .output()
        .expect("cvmm runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_line(vps: u32, workload: &[&str], want: &str) {
    let (code, stdout, stderr) = cvmm(vps, workload);
    assert_eq!(
        code, 0,
        "{workload:?} on {vps} VPs exited {code}\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().any(|line| line == want),
        "{workload:?} on {vps} VPs: no line {want:?} in\n{stdout}\n{stderr}"
    );
}

#[test]
fn hello_greets_from_every_vp() {
    for vps in [1, 2] {
        let (code, stdout, stderr) = cvmm(vps, &["hello"]);
        assert_eq!(code, 0, "{stderr}");
        for vp in 0..vps {
            let want = format!("hello from vp {vp} on node 0");
            assert!(
                stdout.lines().any(|l| l == want),
                "missing {want:?} in {stdout}"
            );
        }
    }
}

#[test]
fn matmul_matches_reference() {
    for (vps, n) in [(1, 48), (2, 64)] {
        let want = format!("matmul {n} checksum = {}", matmul_reference(n));
        assert_line(vps, &["matmul", &n.to_string()], &want);
    }
}

#[test]
fn sort_matches_reference() {
    for (vps, n) in [(1, 1000), (2, 1000), (2, 777)] {
        let want = format!("sort {n} checksum = {}", sort_reference(n));
        assert_line(vps, &["sort", &n.to_string()], &want);
    }
}

#[test]
fn counter_counts_every_increment() {
    for vps in [1, 2] {
        let want = format!("counter = {}", u64::from(vps) * 2000);
        assert_line(vps, &["counter", "2000"], &want);
    }
}

#[test]
fn litmus_never_shows_forbidden_outcomes() {
    for name in ["mp", "sb", "lb", "iriw"] {
        for vps in [1, 2] {
            let (code, stdout, stderr) = cvmm(vps, &["litmus", name, "500"]);
            assert_eq!(code, 0, "{stderr}");
            let want = format!("litmus {name} forbidden = 0 allowed = 500");
            assert!(
                stdout.lines().any(|l| l == want),
                "{name} on {vps} VPs: {stdout}"
            );
        }
    }
}

#[test]
fn unknown_workload_and_bad_flags_fail_clearly() {
    let (code, stdout, _) = cvmm(1, &["no-such-workload"]);
    assert_ne!(code, 0, "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_cvmm"))
        .args(["run", "--vps-per-node", "0", "--", "hello"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least one node and one VP"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_cvmm"))
        .args(["run", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn stats_json_has_the_documented_counters() {
    let path = std::env::temp_dir().join(format!("cvmm-stats-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_cvmm"))
        .args(["run", "--vps-per-node", "2", "--stats-json"])
        .arg(&path)
        .args(["--", "counter", "500"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let node = &json["nodes"][0];
    assert_eq!(node["id"], 0);
    assert_eq!(node["calls"]["vs_exit"], 1);
    assert_eq!(node["calls"]["vp_start"], 1);
    assert!(
        node["interrupts_delivered"].as_u64().unwrap() >= 1,
        "{text}"
    );
    assert!(node["latency"]["samples"].as_u64().unwrap() > 0, "{text}");
    assert!(
        node["latency"]["p99_us"].as_f64().unwrap() >= node["latency"]["p50_us"].as_f64().unwrap()
    );
}

#[test]
fn missing_kvm_is_one_clear_sentence() {
    let out = Command::new(env!("CARGO_BIN_EXE_cvmm"))
        .env("CVMM_KVM_DEVICE", "/nonexistent/kvm")
        .args(["run", "--", "hello"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("KVM is not available: cannot open /nonexistent/kvm"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
