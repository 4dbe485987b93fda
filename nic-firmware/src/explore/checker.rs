//! Breadth-first search over every reachable state, then a backward search for liveness.
//!
//! Safety: the invariants are checked in every state reached (and at every VP access: a
//! read sees the last write); the first violation stops the search with the shortest
//! trace that leads to it (breadth first).
//!
//! Liveness: with a finite graph, "every request eventually completes under fair
//! scheduling" is "from every reachable state, a goal state (every VP done, every engine
//! idle, the network empty) is still reachable". A state with no way to the goal is a
//! deadlock (no event possible) or a livelock (events forever, none leading out); both fail
//! with a trace to the first such state. The graph is kept as successor lists (4 bytes an
//! edge) and states as 128-bit fingerprints of their canonical bytes (hash compaction, as
//! in SPIN and TLC): for a few million states a collision, which would silently merge two
//! states, is vanishingly unlikely (about n^2 / 2^129).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::vec::Vec;

use crate::engine::Counters;

use super::model::{Event, Model, ModelConfig, State, Step};

/// What an exploration found.
#[derive(Clone, Debug, Default)]
pub(crate) struct Report {
    /// Distinct states reached.
    pub states: usize,
    /// Transitions taken (to new or known states).
    pub transitions: usize,
    /// Transitions not explored because a link's send window was full.
    pub pruned: usize,
    /// States where everything is done.
    pub goal_states: usize,
    /// Longest shortest path from the initial state.
    pub depth: usize,
    /// The engines' counters summed over every transition: which protocol paths ran.
    pub coverage: Counters,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.coverage;
        write!(
            f,
            "{} states, {} transitions ({} pruned), {} goal states, depth {}; transitions \
             with: forwards {}, invalidations {}, queued {}, lost-copy upgrades {}, nacks {}, \
             writebacks {}, coalesced faults {}, evictions {}, copies taken while evicting {}",
            self.states,
            self.transitions,
            self.pruned,
            self.goal_states,
            self.depth,
            c.forwards_sent,
            c.invalidations_sent,
            c.requests_queued,
            c.upgrades_lost_copy,
            c.nacks_sent,
            c.writebacks_received,
            c.faults_coalesced,
            c.evictions_sent,
            c.evicting_copies_taken
        )
    }
}

/// Why an exploration failed.
#[derive(Clone, Debug)]
pub(crate) enum Violation {
    /// The configuration cannot be explored.
    BadModel(String),
    /// An invariant broke, an engine refused a message, or an action broke a host rule.
    Invariant {
        /// What broke.
        message: String,
        /// The events from the initial state, the last one breaking it.
        trace: Vec<String>,
    },
    /// A state with no possible event that is not the goal.
    Deadlock {
        /// The events that lead there.
        trace: Vec<String>,
    },
    /// A state from which the goal cannot be reached although events remain possible.
    Livelock {
        /// The events that lead there.
        trace: Vec<String>,
    },
    /// More states than the configuration allows.
    TooManyStates {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, trace) = match self {
            Self::BadModel(message) => return write!(f, "bad model: {message}"),
            Self::TooManyStates { limit } => return write!(f, "more than {limit} states"),
            Self::Invariant { message, trace } => (format!("invariant broken: {message}"), trace),
            Self::Deadlock { trace } => ("deadlock: no event possible".to_string(), trace),
            Self::Livelock { trace } => (
                "livelock: the goal cannot be reached from here".to_string(),
                trace,
            ),
        };
        writeln!(f, "{what}")?;
        writeln!(f, "trace ({} steps from the initial state):", trace.len())?;
        for (i, line) in trace.iter().enumerate() {
            writeln!(f, "  {:3}. {line}", i + 1)?;
        }
        Ok(())
    }
}

const NO_PARENT: u32 = u32::MAX;

/// The explored graph: per state its parent and the event that first reached it, and its
/// successors.
struct Graph {
    parents: Vec<(u32, Option<Event>)>,
    depth: Vec<u16>,
    edge_start: Vec<u32>,
    edges: Vec<u32>,
    goal: Vec<bool>,
}

/// Explores every state `config` can reach.
pub(crate) fn explore(config: ModelConfig) -> Result<Report, Violation> {
    let model = Model::new(config).map_err(Violation::BadModel)?;
    let limit = model.config().max_states;
    let initial = model.initial().map_err(|message| Violation::Invariant {
        message,
        trace: Vec::new(),
    })?;
    let mut report = Report::default();
    let mut graph = Graph {
        parents: vec![(NO_PARENT, None)],
        depth: vec![0],
        edge_start: Vec::new(),
        edges: Vec::new(),
        goal: Vec::new(),
    };
    let mut bytes = Vec::new();
    let mut seen: HashMap<u128, u32, BuildFingerprintHasher> = HashMap::default();
    seen.insert(fingerprint(&model, &initial, &mut bytes), 0);
    let mut queue = VecDeque::from([(0u32, initial)]);
    let mut events = Vec::new();
    while let Some((id, state)) = queue.pop_front() {
        graph.edge_start.push(edge_index(graph.edges.len()));
        let goal = model.is_goal(&state);
        graph.goal.push(goal);
        model.events(&state, &mut events);
        if events.is_empty() && !goal {
            return Err(Violation::Deadlock {
                trace: trace(&model, &graph, id, None),
            });
        }
        for event in events.iter().copied() {
            let (next, counters) = match model.step(&state, event) {
                Ok(Step::Next(next, counters)) => (next, counters),
                Ok(Step::Pruned) => {
                    report.pruned += 1;
                    continue;
                }
                Err(message) => {
                    return Err(Violation::Invariant {
                        message,
                        trace: trace(&model, &graph, id, Some(event)),
                    })
                }
            };
            report.transitions += 1;
            add_counters(&mut report.coverage, &counters);
            let key = fingerprint(&model, &next, &mut bytes);
            let target = match seen.get(&key) {
                Some(known) => *known,
                None => {
                    let new = u32::try_from(graph.parents.len())
                        .ok()
                        .filter(|n| usize::try_from(*n).is_ok_and(|n| n < limit))
                        .ok_or(Violation::TooManyStates { limit })?;
                    seen.insert(key, new);
                    graph.parents.push((id, Some(event)));
                    let depth = graph.depth[index(id)] + 1;
                    graph.depth.push(depth);
                    queue.push_back((new, next));
                    new
                }
            };
            graph.edges.push(target);
        }
    }
    graph.edge_start.push(edge_index(graph.edges.len()));
    report.states = graph.parents.len();
    report.goal_states = graph.goal.iter().filter(|g| **g).count();
    report.depth = graph.depth.iter().copied().max().map_or(0, usize::from);
    if let Some(stuck) = first_without_way_to_goal(&graph) {
        return Err(Violation::Livelock {
            trace: trace(&model, &graph, stuck, None),
        });
    }
    Ok(report)
}

fn index(id: u32) -> usize {
    usize::try_from(id).expect("state ids fit in usize")
}

fn edge_index(len: usize) -> u32 {
    u32::try_from(len).expect("fewer than 4 billion transitions")
}

/// The lowest-numbered (so nearest the start) state from which no goal state is
/// reachable.
fn first_without_way_to_goal(graph: &Graph) -> Option<u32> {
    let states = graph.goal.len();
    // Predecessor lists, by counting sort of the edges on their target.
    let mut start = vec![0u32; states + 1];
    for target in &graph.edges {
        start[index(*target) + 1] += 1;
    }
    for i in 0..states {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut predecessors = vec![0u32; graph.edges.len()];
    for source in 0..states {
        let (from, to) = (graph.edge_start[source], graph.edge_start[source + 1]);
        for edge in from..to {
            let target = index(graph.edges[index(edge)]);
            predecessors[index(fill[target])] = edge_index(source);
            fill[target] += 1;
        }
    }
    let mut reaches_goal = graph.goal.clone();
    let mut stack: Vec<u32> = (0..states)
        .filter(|s| graph.goal[*s])
        .map(edge_index)
        .collect();
    while let Some(state) = stack.pop() {
        let s = index(state);
        for p in start[s]..start[s + 1] {
            let pred = predecessors[index(p)];
            if !reaches_goal[index(pred)] {
                reaches_goal[index(pred)] = true;
                stack.push(pred);
            }
        }
    }
    reaches_goal.iter().position(|r| !r).map(edge_index)
}

/// The events from the initial state to `id` (then `last`), described in the states they
/// happened in.
fn trace(model: &Model, graph: &Graph, id: u32, last: Option<Event>) -> Vec<String> {
    let mut events: Vec<Event> = last.into_iter().collect();
    let mut at = id;
    while let (parent, Some(event)) = graph.parents[index(at)] {
        events.push(event);
        at = parent;
    }
    events.reverse();
    let Ok(mut state) = model.initial() else {
        return vec!["(initial state broken)".to_string()];
    };
    let mut lines = Vec::new();
    for event in events {
        lines.push(model.describe(&state, event));
        match model.step(&state, event) {
            Ok(Step::Next(next, _)) => state = next,
            Ok(Step::Pruned) => break,
            Err(_) => break,
        }
    }
    lines
}

fn fingerprint(model: &Model, state: &State, bytes: &mut Vec<u8>) -> u128 {
    model.encode(state, bytes);
    hash128(bytes)
}

/// Two independent 64-bit multiply-rotate lanes over the bytes, each finished with the
/// MurmurHash3 mixer. Much cheaper than SipHash in an unoptimised test build, where this
/// runs millions of times, and keyed hashing buys nothing here (no adversary).
fn hash128(bytes: &[u8]) -> u128 {
    const K1: u64 = 0x9e37_79b9_7f4a_7c15;
    const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    let (mut a, mut b) = (0x243f_6a88_85a3_08d3_u64, 0x1319_8a2e_0370_7344_u64);
    let mut chunks = bytes.chunks_exact(8);
    let mut mix = |word: u64| {
        a = (a ^ word).wrapping_mul(K1).rotate_left(31);
        b = (b ^ word.rotate_left(29)).wrapping_mul(K2).rotate_left(27);
    };
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        mix(u64::from_le_bytes(word));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(u64::from_le_bytes(tail));
    let len = bytes.len() as u64;
    let finish = |mut h: u64| {
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    };
    (u128::from(finish(a ^ len)) << 64) | u128::from(finish(b ^ len.rotate_left(32)))
}

/// Fingerprints are hashes already: the map uses their low bits as they are.
#[derive(Clone, Copy, Debug, Default)]
struct BuildFingerprintHasher;

#[derive(Debug, Default)]
struct FingerprintHasher(u64);

impl BuildHasher for BuildFingerprintHasher {
    type Hasher = FingerprintHasher;

    fn build_hasher(&self) -> FingerprintHasher {
        FingerprintHasher(0)
    }
}

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u128(&mut self, value: u128) {
        // The low half of a fingerprint.
        self.0 = u64::try_from(value & u128::from(u64::MAX)).unwrap_or_default();
    }
}

fn add_counters(total: &mut Counters, step: &Counters) {
    let Counters {
        faults,
        faults_resolved_locally,
        faults_coalesced,
        read_requests,
        write_requests,
        upgrade_requests,
        upgrades_lost_copy,
        requests_queued,
        nacks_sent,
        nacks_received,
        forwards_sent,
        forwards_served,
        invalidations_sent,
        invalidations_received,
        pages_sent,
        pages_received,
        writebacks_received,
        evictions_sent,
        evictions_received,
        evicting_copies_taken,
        homes_moved_out,
        homes_moved_in,
        protocol_errors,
    } = *step;
    total.faults += faults;
    total.faults_resolved_locally += faults_resolved_locally;
    total.faults_coalesced += faults_coalesced;
    total.read_requests += read_requests;
    total.write_requests += write_requests;
    total.upgrade_requests += upgrade_requests;
    total.upgrades_lost_copy += upgrades_lost_copy;
    total.requests_queued += requests_queued;
    total.nacks_sent += nacks_sent;
    total.nacks_received += nacks_received;
    total.forwards_sent += forwards_sent;
    total.forwards_served += forwards_served;
    total.invalidations_sent += invalidations_sent;
    total.invalidations_received += invalidations_received;
    total.pages_sent += pages_sent;
    total.pages_received += pages_received;
    total.writebacks_received += writebacks_received;
    total.evictions_sent += evictions_sent;
    total.evictions_received += evictions_received;
    total.evicting_copies_taken += evicting_copies_taken;
    total.homes_moved_out += homes_moved_out;
    total.homes_moved_in += homes_moved_in;
    total.protocol_errors += protocol_errors;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(successors: &[&[u32]], goal: &[bool]) -> Graph {
        let mut g = Graph {
            parents: Vec::new(),
            depth: Vec::new(),
            edge_start: Vec::new(),
            edges: Vec::new(),
            goal: goal.to_vec(),
        };
        for list in successors {
            g.edge_start.push(edge_index(g.edges.len()));
            g.edges.extend_from_slice(list);
        }
        g.edge_start.push(edge_index(g.edges.len()));
        g
    }

    #[test]
    fn states_that_cannot_reach_the_goal_are_found() {
        // 0 -> 1 -> 2 (goal); 0 -> 3 <-> 4 (a cycle with no way out); 5 is a dead end.
        let g = graph(
            &[&[1, 3], &[2], &[], &[4], &[3, 5], &[]],
            &[false, false, true, false, false, false],
        );
        assert_eq!(first_without_way_to_goal(&g), Some(3));
        // An exit from the cycle to the goal fixes 3 and 4, not the dead end 5.
        let g = graph(
            &[&[1, 3], &[2], &[], &[4], &[3, 2], &[]],
            &[false, false, true, false, false, false],
        );
        assert_eq!(first_without_way_to_goal(&g), Some(5));
        let g = graph(&[&[1], &[2], &[0, 3], &[]], &[false, false, false, true]);
        assert_eq!(first_without_way_to_goal(&g), None);
    }

    #[test]
    fn fingerprints_differ_for_nearby_inputs() {
        let mut seen = std::collections::HashSet::new();
        for len in 0..40usize {
            for flip in 0..len * 8 {
                let mut bytes = vec![0u8; len];
                bytes[flip / 8] ^= 1 << (flip % 8);
                assert!(seen.insert(hash128(&bytes)), "collision at {len}/{flip}");
            }
            assert!(
                seen.insert(hash128(&vec![0u8; len])),
                "zeros of length {len}"
            );
        }
    }
}
