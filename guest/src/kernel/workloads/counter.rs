//! `counter ITERS`: every VP increments one shared counter ITERS times, taking the one
//! spinlock for each increment; VP 0 prints `counter = X` (X = ITERS * VPs when locking
//! and coherence work).

use crate::spinlock::SpinLock;
use crate::sync::PageAligned;

static COUNTER: PageAligned<SpinLock<u64>> = PageAligned(SpinLock::new(0));

/// This VP's increments.
pub fn run(iterations: u64) {
    for _ in 0..iterations {
        let mut counter = COUNTER.lock();
        *counter = counter.wrapping_add(1);
    }
}

/// Prints the total.
pub fn finish() {
    let total = *COUNTER.lock();
    println!("counter = {total}");
}
