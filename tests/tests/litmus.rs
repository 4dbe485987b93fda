//! The memory model across nodes: each litmus test with its threads on different nodes,
//! 10,000 iterations, never an outcome x86-TSO forbids.

use tests::cvmm_run;

fn litmus(nodes: &str, name: &str, iters: u32) {
    let run = cvmm_run(
        &["--nodes", nodes, "--mem-mib", "16"],
        &["litmus", name, &iters.to_string()],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let want = format!("litmus {name} forbidden = 0 allowed = {iters}");
    assert!(
        run.has_line(&want),
        "{name}: {:?}\n{}",
        run.lines,
        run.stderr
    );
}

#[test]
fn message_passing_across_nodes() {
    litmus("2", "mp", 10_000);
}

#[test]
fn store_buffering_with_fences_across_nodes() {
    litmus("2", "sb", 10_000);
}

#[test]
fn load_buffering_across_nodes() {
    litmus("2", "lb", 10_000);
}

#[test]
fn independent_reads_of_independent_writes_on_four_nodes() {
    litmus("4", "iriw", 10_000);
}
