//! The NIC drains its node (issue 12, node removal): on the host's `Leave` request it
//! gives up every copy of other nodes' pages and then hands every range homed here over
//! to the target node, with the engine's eviction and home handoff, while the cluster
//! keeps running. The host learns the end from one `Left` completion: the evictions and
//! handoff messages never cross the host.
//!
//! A job advances a little each round, only when the round has room for an input's
//! worth of actions (as every input does), so the drain never crowds out faults or wire
//! messages: a few evictions (the engine keeps at most `EVICTIONS_IN_FLIGHT` in flight),
//! or one handoff step.

use crate::engine::{Eviction, LogicalPage, PageState};

use super::hal::{HostEvent, Platform};
use super::{Core, HOST_VECTOR};

/// Pages looked at per round while evicting (most hold no copy: a table read each).
const SCAN_PER_ROUND: u64 = 4096;

/// Where a drain stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum LeaveStage {
    /// No drain.
    #[default]
    Idle,
    /// Giving up copies, from `next_page` on.
    Evicting,
    /// Waiting for the engine to be idle, then handing over the next range.
    Settling,
    /// A range's handoff is under way.
    HandingOver,
}

/// One drain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LeaveJob {
    pub(super) stage: LeaveStage,
    to: u16,
    next_page: u64,
    evicted: u64,
    moved: u64,
}

impl Core<'_> {
    /// The host asks the node to leave towards `to`.
    pub(super) fn start_leave<P: Platform>(&mut self, p: &mut P, to: u16) {
        let config = *self.engine.config();
        if self.leave.stage != LeaveStage::Idle || to == config.node || to >= config.node_count {
            self.post(
                p,
                &HostEvent::Left {
                    evicted: 0,
                    moved: 0,
                    refused: true,
                },
                HOST_VECTOR,
            );
            return;
        }
        self.leave = LeaveJob {
            stage: LeaveStage::Evicting,
            to,
            ..LeaveJob::default()
        };
    }

    /// One round's share of the drain; true when it did something.
    pub(super) fn advance_leave<P: Platform>(&mut self, p: &mut P) -> bool {
        match self.leave.stage {
            LeaveStage::Idle => false,
            LeaveStage::Evicting => self.evict_some(p),
            LeaveStage::Settling => self.next_range(p),
            LeaveStage::HandingOver => {
                let mut done = false;
                let stepped = self.input(p, |engine, sink| {
                    engine.continue_handoff(sink).map(|d| done = d)
                });
                if stepped.is_err() {
                    self.end_leave(p, true);
                } else if done {
                    self.leave.stage = LeaveStage::Settling;
                }
                true
            }
        }
    }

    fn evict_some<P: Platform>(&mut self, p: &mut P) -> bool {
        let me = self.engine.config().node;
        let homes = *self.engine.homes();
        let limit = homes.page_limit();
        let stop = limit.min(self.leave.next_page.saturating_add(SCAN_PER_ROUND));
        let mut worked = false;
        while self.leave.next_page < stop {
            let page = LogicalPage(self.leave.next_page);
            let held = homes.home_of(page).is_some_and(|h| h != me)
                && self
                    .engine
                    .page_state(page)
                    .is_ok_and(|s| s != PageState::Invalid);
            if !held {
                self.leave.next_page += 1;
                continue;
            }
            let mut outcome = None;
            let result = self.input(p, |engine, sink| {
                engine.evict(page, sink).map(|e| outcome = Some(e))
            });
            worked = true;
            match (result, outcome) {
                (Err(_), _) => {
                    self.end_leave(p, true);
                    return true;
                }
                (Ok(()), Some(Eviction::Started)) => {
                    self.leave.evicted += 1;
                    self.leave.next_page += 1;
                }
                (Ok(()), Some(Eviction::NoCopy) | None) => self.leave.next_page += 1,
                // An ack frees a slot (or the request in flight ends): next round.
                (Ok(()), Some(Eviction::InFlight | Eviction::TooMany)) => return worked,
            }
            // One input per round at most: the round checked room for one.
            return worked;
        }
        if self.leave.next_page >= limit {
            self.leave.stage = LeaveStage::Settling;
            worked = true;
        }
        worked
    }

    /// Once the engine is idle: hands the next range homed here over, or ends the drain.
    fn next_range<P: Platform>(&mut self, p: &mut P) -> bool {
        if !self.engine.is_idle() {
            return false;
        }
        let me = self.engine.config().node;
        let range = self
            .engine
            .homes()
            .ranges()
            .iter()
            .find(|r| r.home == me)
            .copied();
        let Some(range) = range else {
            self.end_leave(p, false);
            return true;
        };
        let to = self.leave.to;
        let started = self.input(p, |engine, sink| {
            engine.hand_over(LogicalPage(range.first), range.count, to, sink)
        });
        if started.is_err() {
            self.end_leave(p, true);
        } else {
            self.leave.moved += range.count;
            self.leave.stage = LeaveStage::HandingOver;
        }
        true
    }

    fn end_leave<P: Platform>(&mut self, p: &mut P, refused: bool) {
        let LeaveJob { evicted, moved, .. } = self.leave;
        self.leave = LeaveJob::default();
        self.post(
            p,
            &HostEvent::Left {
                evicted,
                moved,
                refused,
            },
            HOST_VECTOR,
        );
    }
}
