//! A sense-counting barrier for a fixed set of VPs: arrivals are counted, and the last one
//! resets the count and bumps a generation number the others wait on (with `SpinWait`
//! after a bounded spin, as the spinlocks do).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::spinlock::wait_while_equal;

/// A reusable barrier.
#[derive(Debug)]
pub struct Barrier {
    arrived: AtomicU64,
    generation: AtomicU64,
}

impl Barrier {
    /// A barrier nobody waits at.
    pub const fn new() -> Self {
        Self {
            arrived: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// Returns once `parties` VPs (the same ones every time) have called `wait`.
    pub fn wait(&self, parties: u64) {
        if parties <= 1 {
            return;
        }
        // Read before arriving: the generation cannot move on without this arrival.
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == parties {
            // Nobody leaves before the generation moves, so nobody arrives early at the
            // next round and sees the old count.
            self.arrived.store(0, Ordering::Relaxed);
            self.generation
                .store(generation.wrapping_add(1), Ordering::Release);
        } else {
            wait_while_equal(&self.generation, generation);
        }
    }
}
