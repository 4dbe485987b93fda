//! A node process that dies takes the virtual server down cleanly: the other nodes stop
//! within seconds, say which node died, and nothing hangs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::cvmm_bin;
use tests::node_children;

#[test]
fn killing_a_node_stops_the_others_with_a_clear_message() {
    let mut launcher = Command::new(cvmm_bin())
        .args([
            "run",
            "--nodes",
            "3",
            "--mem-mib",
            "16",
            "--",
            "litmus",
            "mp",
            "100000000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the nodes to be up and the guest running.
    let start = Instant::now();
    let victim = loop {
        let children = node_children(launcher.id());
        if let Some((pid, _)) = children.iter().find(|(_, id)| *id == 1) {
            if children.len() == 3 && start.elapsed() > Duration::from_secs(2) {
                break *pid;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nodes did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let killed_at = Instant::now();
    assert!(Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    // The launcher must end on its own well within the liveness timeout plus grace.
    let status = loop {
        if let Some(status) = launcher.try_wait().unwrap() {
            break status;
        }
        if killed_at.elapsed() > Duration::from_secs(30) {
            let _ = launcher.kill();
            panic!("the cluster did not stop within 30 s of a node dying");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stopped_after = killed_at.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(launcher.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("node 1"),
        "the message does not name node 1:\n{stderr}"
    );
    assert!(
        stopped_after < Duration::from_secs(15),
        "took {stopped_after:?}\n{stderr}"
    );
    assert!(node_children(launcher.id()).is_empty());
}
