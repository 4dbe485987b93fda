//! The memory-weighted cost model of thread placement (paper 4.9.5: "memory matters far
//! more than CPU or I/O loads in a system like ours"), as plain arithmetic the scheduler
//! calls.
//!
//! A thread carries one weight per node: the remote faults it took on memory homed
//! there, in units of [`FAULT`], decayed by 1/2^[`DECAY_SHIFT`] at every run that took any
//! (a run without remote faults teaches nothing and changes nothing, so a thread that
//! moved next to its memory keeps remembering where that is). Running on node `n` is
//! expected to cost the faults homed elsewhere: [`memory_cost`] is the sum of the other
//! nodes' weights. A VP's cost for a thread adds [`LOAD_WEIGHT`] per thread already
//! there and [`MOVE_COST`] for leaving the thread's node (its stack and kernel pages
//! follow it by faults). The scheduler compares costs when it wakes a thread and when
//! an idle VP of another node would steal one.
//!
//! ```
//! use guest::placement::{charged, memory_cost, FAULT};
//! let w = charged([0; 4], &[0, 10, 0, 0]);
//! assert_eq!(w[1], 10 * FAULT);
//! assert_eq!(memory_cost(&w, 0), u64::from(10 * FAULT));
//! assert_eq!(memory_cost(&w, 1), 0);
//! ```

/// Weight of one remote fault.
pub const FAULT: u32 = 16;
/// Weights lose 1/2^DECAY_SHIFT at every run that took remote faults.
pub const DECAY_SHIFT: u32 = 3;
/// Cost of one more thread on a VP: the weight of 64 remote faults in one run, or about
/// 8 per run sustained (a queued thread waits up to a 10 ms tick; a remote fault costs
/// tens of microseconds, so a thread that faults much more than that per run is better
/// off waiting next to its memory).
pub const LOAD_WEIGHT: u64 = 64 * FAULT as u64;
/// Cost of moving a thread to another node: its stack, thread pages and working set
/// follow it by faults (the weight of 16).
pub const MOVE_COST: u64 = 16 * FAULT as u64;

/// The weights after a run that took `faults[n]` remote faults on memory homed on node
/// `n` (entries past `weights`' length are ignored, missing ones count 0).
pub fn charged<const N: usize>(weights: [u32; N], faults: &[u32]) -> [u32; N] {
    if faults.iter().all(|&f| f == 0) {
        return weights;
    }
    let mut out = weights;
    for (i, w) in out.iter_mut().enumerate() {
        let add = faults.get(i).copied().unwrap_or(0).saturating_mul(FAULT);
        *w = (*w - (*w >> DECAY_SHIFT)).saturating_add(add);
    }
    out
}

/// The remote-fault weight a thread is expected to take when it runs on `node`.
pub fn memory_cost(weights: &[u32], node: u32) -> u64 {
    weights
        .iter()
        .enumerate()
        .filter(|&(i, _)| i as u64 != u64::from(node))
        .map(|(_, &w)| u64::from(w))
        .sum()
}

/// The node whose memory the thread faulted on most, if it faulted at all.
pub fn preferred_node(weights: &[u32]) -> Option<u32> {
    let (node, &w) = weights
        .iter()
        .enumerate()
        .max_by_key(|&(i, &w)| (w, core::cmp::Reverse(i)))?;
    (w > 0).then(|| u32::try_from(node).unwrap_or(0))
}

/// The cost of running a thread whose node is `from` on a VP of `node` with `load`
/// other threads queued or running there.
pub fn cost(weights: &[u32], from: u32, node: u32, load: u64) -> u64 {
    let moving = if node == from { 0 } else { MOVE_COST };
    load.saturating_mul(LOAD_WEIGHT)
        .saturating_add(memory_cost(weights, node))
        .saturating_add(moving)
}

/// True when an idle VP of `thief` should take a thread of node `from` that waits behind
/// `waiting` others (`waiting` counts the running one): the wait it saves is worth more
/// than the faults the move costs.
pub fn worth_stealing(weights: &[u32], from: u32, thief: u32, waiting: u64) -> bool {
    cost(weights, from, thief, 0) < cost(weights, from, from, waiting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_remote_faults_changes_nothing() {
        let w = [100, 0, 7];
        assert_eq!(charged(w, &[0, 0, 0]), w);
        assert_eq!(charged(w, &[]), w);
    }

    #[test]
    fn weights_decay_by_an_eighth_and_add_the_new_faults() {
        // 800 - 100 + 0; 0 - 0 + 3 * 16; 8 - 1 + 16.
        assert_eq!(charged([800, 0, 8], &[0, 3, 1]), [700, 48, 23]);
        // Saturates instead of wrapping.
        assert_eq!(charged([u32::MAX, 0], &[u32::MAX, 1])[0], u32::MAX);
    }

    #[test]
    fn steady_faulting_converges_to_eight_runs_worth() {
        let mut w = [0u32; 2];
        for _ in 0..200 {
            w = charged(w, &[0, 10]);
        }
        // The fixed point of w = 7w/8 + 160 is 1280 (integer rounding keeps it close).
        assert!((1270..=1290).contains(&w[1]), "{}", w[1]);
    }

    #[test]
    fn memory_cost_is_the_weight_homed_elsewhere() {
        let w = [10, 20, 30];
        assert_eq!(memory_cost(&w, 0), 50);
        assert_eq!(memory_cost(&w, 1), 40);
        assert_eq!(memory_cost(&w, 2), 30);
        assert_eq!(memory_cost(&w, 9), 60);
    }

    #[test]
    fn preferred_node_is_the_heaviest_and_none_without_faults() {
        assert_eq!(preferred_node(&[0, 0, 0]), None);
        assert_eq!(preferred_node(&[]), None);
        assert_eq!(preferred_node(&[5, 9, 2]), Some(1));
        // Ties go to the lower node.
        assert_eq!(preferred_node(&[4, 9, 9]), Some(1));
    }

    #[test]
    fn a_thread_without_history_is_stolen_but_one_bound_to_its_memory_is_not() {
        let fresh = [0u32; 2];
        assert!(worth_stealing(&fresh, 0, 1, 1));
        // Faulted 100 times on node 0's memory while away: the move would cost more
        // than waiting behind one thread.
        let bound = charged([0; 2], &[100, 0]);
        assert!(!worth_stealing(&bound, 0, 1, 1));
        // Behind many threads, the wait is worth the faults.
        assert!(worth_stealing(&bound, 0, 1, 3));
    }

    #[test]
    fn cost_orders_load_then_memory_then_staying() {
        let w = charged([0; 2], &[0, 20]);
        // Node 1 holds its memory: cheaper there at the same load, even with the move.
        assert!(cost(&w, 0, 1, 0) < cost(&w, 0, 0, 0));
        // One more thread on node 1 outweighs 20 faults.
        assert!(cost(&w, 0, 1, 1) > cost(&w, 0, 0, 0));
        // Without history, staying wins a tie.
        assert!(cost(&[0, 0], 0, 0, 1) < cost(&[0, 0], 0, 1, 1));
    }
}
