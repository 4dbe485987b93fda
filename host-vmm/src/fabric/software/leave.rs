//! A node leaves the cluster without taking a page with it (issue 12, node removal): it
//! gives up its copies of other nodes' pages (the engine's eviction), then hands each of
//! the ranges it is home for over to a remaining node (the engine's home handoff), while
//! the other nodes keep reading and writing. docs/protocol.md, "Eviction" and "Home
//! handoff", says why no page and no write is lost.
//!
//! The engine moves on as messages arrive on the receive thread; this thread only starts
//! the steps and waits for the engine to be idle in between. It polls (every millisecond):
//! a drain is rare and short next to the work it waits for, and polling keeps the
//! receive path free of a wakeup for a caller that is almost never there.

use std::time::{Duration, Instant};

use nic_firmware::engine::{EngineError, Eviction, LogicalPage, PageState as EngineState};

use super::SoftwareFabric;

/// How often the drain looks at the engine while it waits.
const POLL: Duration = Duration::from_millis(1);
/// Handoff steps between two looks (each sends at most `MOVES_PER_STEP` entries).
const STEPS_PER_POLL: usize = 64;

/// What a finished drain did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaveReport {
    /// Copies of other nodes' pages given up.
    pub evicted: u64,
    /// Ranges whose home moved to the target node.
    pub ranges_handed_over: usize,
    /// Pages in those ranges.
    pub pages_handed_over: u64,
    /// How long it took.
    pub took: Duration,
}

/// Where a drain is, for a progress line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveProgress {
    /// `done` of `total` copies given up.
    Evicting {
        /// Evictions started so far.
        done: u64,
        /// Copies to give up.
        total: u64,
    },
    /// Handing range `index` (of `total`) over.
    HandingOver {
        /// The range's index among this node's ranges.
        index: usize,
        /// This node's ranges.
        total: usize,
    },
}

/// Why a drain stopped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaveError {
    /// The target is this node or not a node of the cluster.
    #[error("node {0} cannot take this node's pages: it is this node or not in the cluster")]
    BadTarget(u16),
    /// The engine did not get to idle in time; what is left stays here (a zombie).
    #[error("the drain did not finish within {timeout:?}: {left} of its steps are left")]
    TimedOut {
        /// The time allowed.
        timeout: Duration,
        /// Evictions not started plus ranges not handed over.
        left: u64,
    },
    /// The engine refused a step (a bug, or a handoff already under way).
    #[error("the coherence engine refused a drain step: {0}")]
    Engine(EngineError),
    /// The NIC refused the drain (offload path): one is under way, or its engine
    /// refused a step.
    #[error("the NIC refused the drain")]
    Refused,
}

impl SoftwareFabric {
    /// Gives up every copy of other nodes' pages, then hands every range homed here over
    /// to node `to`. Returns when the engine is idle with nothing homed here, or with
    /// [`LeaveError::TimedOut`] after `timeout` (the rest stays homed here).
    pub fn leave(
        &self,
        to: u16,
        timeout: Duration,
        progress: &mut dyn FnMut(LeaveProgress),
    ) -> Result<LeaveReport, LeaveError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let (copies, ranges) = {
            let engine = self.engine.lock().expect("engine lock");
            let count = engine.config().node_count;
            if to == self.node || to >= count {
                return Err(LeaveError::BadTarget(to));
            }
            let homes = *engine.homes();
            let copies: Vec<u64> = (0..homes.page_limit())
                .filter(|p| {
                    homes
                        .home_of(LogicalPage(*p))
                        .is_some_and(|h| h != self.node)
                })
                .filter(|p| {
                    engine
                        .page_state(LogicalPage(*p))
                        .is_ok_and(|s| s != EngineState::Invalid)
                })
                .collect();
            let ranges: Vec<_> = homes
                .ranges()
                .iter()
                .filter(|r| r.home == self.node)
                .copied()
                .collect();
            (copies, ranges)
        };
        let total = copies.len() as u64;
        let mut report = LeaveReport::default();
        let left =
            |done: u64, ranges_done: usize| (total - done) + (ranges.len() - ranges_done) as u64;
        for (done, page) in copies.iter().enumerate() {
            let done = done as u64;
            if done.is_multiple_of(256) {
                progress(LeaveProgress::Evicting { done, total });
            }
            loop {
                let mut outcome = None;
                self.run_engine_step(|engine, applier| {
                    engine
                        .evict(LogicalPage(*page), applier)
                        .map(|e| outcome = Some(e))
                })
                .map_err(LeaveError::Engine)?;
                match outcome {
                    Some(Eviction::Started) => {
                        report.evicted += 1;
                        break;
                    }
                    // A fault of the host's own, or the copy went meanwhile.
                    Some(Eviction::NoCopy) | None => break,
                    // Wait for an ack to free a slot (or for the request to end).
                    Some(Eviction::InFlight | Eviction::TooMany) => {
                        pause(deadline, timeout, left(done, 0))?;
                    }
                }
            }
        }
        self.wait_idle(deadline, timeout, left(total, 0))?;
        for (index, range) in ranges.iter().enumerate() {
            progress(LeaveProgress::HandingOver {
                index,
                total: ranges.len(),
            });
            self.run_engine_step(|engine, applier| {
                engine.hand_over(LogicalPage(range.first), range.count, to, applier)
            })
            .map_err(LeaveError::Engine)?;
            self.wait_idle(deadline, timeout, left(total, index))?;
            report.ranges_handed_over += 1;
            report.pages_handed_over += range.count;
        }
        report.took = started.elapsed();
        Ok(report)
    }

    /// Waits until the engine is idle: every eviction acknowledged, the handoff done. A
    /// handoff's entries leave a few per engine step (`MOVES_PER_STEP`), so each round
    /// takes up to `STEPS_PER_POLL` steps; the lock is let go between them, so faults and
    /// messages go on meanwhile.
    fn wait_idle(&self, deadline: Instant, timeout: Duration, left: u64) -> Result<(), LeaveError> {
        loop {
            for _ in 0..STEPS_PER_POLL {
                let mut done = false;
                self.run_engine_step(|engine, applier| {
                    engine.continue_handoff(applier).map(|d| done = d)
                })
                .map_err(LeaveError::Engine)?;
                if done {
                    break;
                }
            }
            if self.engine.lock().expect("engine lock").is_idle() {
                return Ok(());
            }
            pause(deadline, timeout, left)?;
        }
    }
}

/// Sleeps one poll interval, or times out at `deadline`.
fn pause(deadline: Instant, timeout: Duration, left: u64) -> Result<(), LeaveError> {
    if Instant::now() >= deadline {
        return Err(LeaveError::TimedOut { timeout, left });
    }
    std::thread::sleep(POLL);
    Ok(())
}
