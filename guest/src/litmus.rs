//! Memory-model litmus tests: which tests exist, how many threads each has, and which
//! outcomes x86-TSO forbids. The kernel runs the threads on different VPs; on a correct
//! virtual server the forbidden count is always 0, since the VMM's page coherence must
//! keep x86-TSO.
//!
//! Thread bodies (`x`, `y` start at 0; registers are the recorded results):
//!
//! | test | threads | forbidden |
//! |---|---|---|
//! | mp | T0 `x=1; y=1` / T1 `r1=y; r2=x` | r1=1, r2=0 |
//! | sb | T0 `x=1; mfence; r1=y` / T1 `y=1; mfence; r2=x` | r1=0, r2=0 |
//! | lb | T0 `r1=x; y=1` / T1 `r2=y; x=1` | r1=1, r2=1 |
//! | iriw | T0 `x=1` / T1 `y=1` / T2 `r1=x; r2=y` / T3 `r3=y; r4=x` | r1=1, r2=0, r3=1, r4=0 |

/// Most threads (and result registers) of any test.
pub const MAX_THREADS: usize = 4;

/// A litmus test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LitmusTest {
    /// Message passing.
    Mp,
    /// Store buffering, with `mfence` between each store and load.
    Sb,
    /// Load buffering.
    Lb,
    /// Independent reads of independent writes.
    Iriw,
}

impl LitmusTest {
    /// Every test.
    pub const ALL: [LitmusTest; 4] = [
        LitmusTest::Mp,
        LitmusTest::Sb,
        LitmusTest::Lb,
        LitmusTest::Iriw,
    ];

    /// The test named `name` on the command line.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|test| test.name().as_bytes() == name)
    }

    /// The command line name, also printed in the result line.
    pub const fn name(self) -> &'static str {
        match self {
            LitmusTest::Mp => "mp",
            LitmusTest::Sb => "sb",
            LitmusTest::Lb => "lb",
            LitmusTest::Iriw => "iriw",
        }
    }

    /// Number of threads.
    pub const fn thread_count(self) -> usize {
        match self {
            LitmusTest::Iriw => 4,
            _ => 2,
        }
    }

    /// True when x86-TSO forbids the outcome `results` (r1, r2, r3, r4; unused
    /// registers are ignored).
    pub const fn is_forbidden(self, results: [u64; MAX_THREADS]) -> bool {
        let [r1, r2, r3, r4] = results;
        match self {
            LitmusTest::Mp => r1 == 1 && r2 == 0,
            LitmusTest::Sb => r1 == 0 && r2 == 0,
            LitmusTest::Lb => r1 == 1 && r2 == 1,
            LitmusTest::Iriw => r1 == 1 && r2 == 0 && r3 == 1 && r4 == 0,
        }
    }
}

/// The VP that runs thread `thread` of a test when `vp_count` VPs take part.
pub const fn vp_of_thread(thread: usize, vp_count: usize) -> usize {
    if vp_count == 0 {
        0
    } else {
        thread % vp_count
    }
}

/// Tally of outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LitmusTally {
    /// Outcomes x86-TSO forbids.
    pub forbidden: u64,
    /// All other outcomes.
    pub allowed: u64,
}

impl LitmusTally {
    /// Counts one outcome of `test`.
    pub fn record(&mut self, test: LitmusTest, results: [u64; MAX_THREADS]) {
        if test.is_forbidden(results) {
            self.forbidden += 1;
        } else {
            self.allowed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sequentially consistent interleaving of a test's threads, run on a tiny
    /// interpreter: none may be classified forbidden, and each test's forbidden outcome
    /// must be reachable only by reordering (checked by listing the SC outcomes).
    #[derive(Clone, Copy)]
    enum Op {
        Store(usize),
        Load(usize, usize),
        Fence,
    }

    fn program(test: LitmusTest) -> Vec<Vec<Op>> {
        use Op::*;
        const X: usize = 0;
        const Y: usize = 1;
        match test {
            LitmusTest::Mp => vec![vec![Store(X), Store(Y)], vec![Load(Y, 0), Load(X, 1)]],
            LitmusTest::Sb => vec![
                vec![Store(X), Fence, Load(Y, 0)],
                vec![Store(Y), Fence, Load(X, 1)],
            ],
            LitmusTest::Lb => vec![vec![Load(X, 0), Store(Y)], vec![Load(Y, 1), Store(X)]],
            LitmusTest::Iriw => vec![
                vec![Store(X)],
                vec![Store(Y)],
                vec![Load(X, 0), Load(Y, 1)],
                vec![Load(Y, 2), Load(X, 3)],
            ],
        }
    }

    fn interleavings(
        threads: &[Vec<Op>],
        pcs: &mut Vec<usize>,
        mem: [u64; 2],
        regs: [u64; 4],
        out: &mut Vec<[u64; 4]>,
    ) {
        let mut any = false;
        for t in 0..threads.len() {
            if let Some(&op) = threads[t].get(pcs[t]) {
                any = true;
                let (mut mem, mut regs) = (mem, regs);
                match op {
                    Op::Store(a) => mem[a] = 1,
                    Op::Load(a, r) => regs[r] = mem[a],
                    Op::Fence => {}
                }
                pcs[t] += 1;
                interleavings(threads, pcs, mem, regs, out);
                pcs[t] -= 1;
            }
        }
        if !any {
            out.push(regs);
        }
    }

    #[test]
    fn sequentially_consistent_outcomes_are_allowed() {
        for test in LitmusTest::ALL {
            let threads = program(test);
            assert_eq!(threads.len(), test.thread_count());
            let mut out = Vec::new();
            interleavings(
                &threads,
                &mut vec![0; threads.len()],
                [0; 2],
                [0; 4],
                &mut out,
            );
            assert!(!out.is_empty());
            for regs in out {
                assert!(!test.is_forbidden(regs), "{test:?} {regs:?}");
            }
        }
    }

    #[test]
    fn the_forbidden_outcomes() {
        assert!(LitmusTest::Mp.is_forbidden([1, 0, 0, 0]));
        assert!(!LitmusTest::Mp.is_forbidden([0, 1, 0, 0]));
        assert!(LitmusTest::Sb.is_forbidden([0, 0, 7, 7]));
        assert!(!LitmusTest::Sb.is_forbidden([1, 0, 0, 0]));
        assert!(LitmusTest::Lb.is_forbidden([1, 1, 0, 0]));
        assert!(LitmusTest::Iriw.is_forbidden([1, 0, 1, 0]));
        assert!(!LitmusTest::Iriw.is_forbidden([1, 1, 1, 0]));
    }

    #[test]
    fn names_round_trip_and_tally_counts() {
        for test in LitmusTest::ALL {
            assert_eq!(LitmusTest::from_name(test.name().as_bytes()), Some(test));
        }
        assert_eq!(LitmusTest::from_name(b"MP"), None);
        let mut tally = LitmusTally::default();
        tally.record(LitmusTest::Mp, [1, 0, 0, 0]);
        tally.record(LitmusTest::Mp, [1, 1, 0, 0]);
        tally.record(LitmusTest::Mp, [0, 0, 0, 0]);
        assert_eq!(
            tally,
            LitmusTally {
                forbidden: 1,
                allowed: 2
            }
        );
        assert_eq!(vp_of_thread(3, 2), 1);
        assert_eq!(vp_of_thread(3, 1), 0);
        assert_eq!(vp_of_thread(3, 8), 3);
    }
}
