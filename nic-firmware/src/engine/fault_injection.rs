//! Seeded protocol bugs, so the model checker (`crate::explore`) can show that it catches a
//! broken protocol. Test builds only; every bug is off unless a test turns it on for its
//! own thread (tests run in parallel threads, and the checker runs on the test's thread).

use std::cell::Cell;

use super::NodeSet;

std::thread_local! {
    static SKIP_ONE_INVALIDATION: Cell<bool> = const { Cell::new(false) };
}

/// While alive, the home "forgets" one sharer when a write needs invalidations: the
/// highest-numbered remote sharer gets no `Invalidate` and keeps its Shared copy while the
/// writer is granted the page. Dropping the guard turns the bug off again.
#[derive(Debug)]
pub(crate) struct SkipOneInvalidation(());

impl SkipOneInvalidation {
    /// Turns the bug on for this thread.
    pub(crate) fn enable() -> Self {
        SKIP_ONE_INVALIDATION.with(|on| on.set(true));
        Self(())
    }
}

impl Drop for SkipOneInvalidation {
    fn drop(&mut self) {
        SKIP_ONE_INVALIDATION.with(|on| on.set(false));
    }
}

/// The sharers the home will invalidate: all of `remote`, or all but the highest when the
/// bug is on.
pub(super) fn sharers_to_invalidate(remote: NodeSet) -> NodeSet {
    match remote.iter().last() {
        Some(highest) if SKIP_ONE_INVALIDATION.with(Cell::get) => remote.without(highest),
        _ => remote,
    }
}

std::thread_local! {
    static DROP_EVICTED_DATA: Cell<bool> = const { Cell::new(false) };
}

/// While alive, the home takes an Exclusive eviction without storing its page: the
/// directory says the home's memory is valid, but it holds an older version.
#[derive(Debug)]
pub(crate) struct DropEvictedData(());

impl DropEvictedData {
    /// Turns the bug on for this thread.
    pub(crate) fn enable() -> Self {
        DROP_EVICTED_DATA.with(|on| on.set(true));
        Self(())
    }
}

impl Drop for DropEvictedData {
    fn drop(&mut self) {
        DROP_EVICTED_DATA.with(|on| on.set(false));
    }
}

/// True when the home stores an evicted page (always, unless the bug is on).
pub(super) fn stores_evicted_data() -> bool {
    !DROP_EVICTED_DATA.with(Cell::get)
}

std::thread_local! {
    static MOVE_WITHOUT_ACKS: Cell<bool> = const { Cell::new(false) };
}

/// While alive, an old home moves its range as soon as it told the other nodes of the new
/// home, without waiting for their acks (no fence).
#[derive(Debug)]
pub(crate) struct MoveWithoutAcks(());

impl MoveWithoutAcks {
    /// Turns the bug on for this thread.
    pub(crate) fn enable() -> Self {
        MOVE_WITHOUT_ACKS.with(|on| on.set(true));
        Self(())
    }
}

impl Drop for MoveWithoutAcks {
    fn drop(&mut self) {
        MOVE_WITHOUT_ACKS.with(|on| on.set(false));
    }
}

/// True when the old home waits for every ack before it moves the range (always, unless
/// the bug is on).
pub(super) fn waits_for_acks() -> bool {
    !MOVE_WITHOUT_ACKS.with(Cell::get)
}
