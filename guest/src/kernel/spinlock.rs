//! Spinlocks whose slow path blocks in the VMM (the paper, 4.9.4): a VP spins a bounded
//! number of times, then makes the `SpinWait` call on the lock word, which sleeps until
//! the word's page is written or invalidated (on another node, the release invalidates
//! it), an interrupt is pending, or about a millisecond passes. A VP whose lock holder was
//! preempted, or lives on another node, so stops burning the CPU it shares.
//!
//! [`TicketLock`] hands the lock out in arrival order, so VPs on the node that holds the
//! lock's page cannot starve VPs elsewhere. Both halves live in one u64 (the word
//! `SpinWait` watches): the next ticket in the high half, the ticket being served in the
//! low half. Under x86-TSO, acquire/release orderings compile to plain loads and stores;
//! the ticket is taken with `lock xadd`.

use core::cell::UnsafeCell;
use core::hint::spin_loop;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::vima_calls;

/// Spins before a waiter asks the VMM to block it.
pub const SPIN_LIMIT: u32 = 200;
/// Longest `SpinWait` before re-checking.
pub const SPIN_WAIT_TIMEOUT_NS: u64 = 1_000_000;

/// Waits until `word` no longer holds `value`; returns what it holds then (read with
/// acquire ordering).
pub fn wait_while_equal(word: &AtomicU64, value: u64) -> u64 {
    let mut spins = 0;
    loop {
        let now = word.load(Ordering::Acquire);
        if now != value {
            return now;
        }
        if spins < SPIN_LIMIT {
            spins += 1;
            spin_loop();
            continue;
        }
        if let Err(err) = vima_calls::spin_wait(word, value, SPIN_WAIT_TIMEOUT_NS) {
            crate::boot::fail(1, format_args!("{err}"));
        }
    }
}

const TICKET_ONE: u64 = 1 << 32;

/// The high half of a lock word.
fn next_ticket(word: u64) -> u32 {
    (word >> 32) as u32
}

/// The low half of a lock word.
#[expect(
    clippy::cast_possible_truncation,
    reason = "keeps the low half on purpose"
)]
fn served(word: u64) -> u32 {
    word as u32
}

/// A fair spinlock without data (see the module documentation).
#[derive(Debug)]
pub struct TicketLock {
    /// High half: next ticket to hand out. Low half: ticket being served.
    word: AtomicU64,
}

impl TicketLock {
    /// An unlocked lock.
    pub const fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
        }
    }

    /// Takes the lock, waiting as long as it takes.
    pub fn lock(&self) {
        // The high half wraps off the top of the u64 without disturbing the low half.
        let old = self.word.fetch_add(TICKET_ONE, Ordering::Acquire);
        let ticket = next_ticket(old);
        let mut now = old;
        while served(now) != ticket {
            now = wait_while_equal(&self.word, now);
        }
    }

    /// Releases the lock.
    ///
    /// Only the holder may call this.
    pub fn unlock(&self) {
        // Only the holder changes the low half, but waiters change the high half at any
        // time, so the increment must not carry into it: compare-and-swap the whole word.
        let mut old = self.word.load(Ordering::Relaxed);
        loop {
            let new = (old & !u64::from(u32::MAX)) | u64::from(served(old).wrapping_add(1));
            match self
                .word
                .compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(current) => old = current,
            }
        }
    }
}

/// Data protected by a [`TicketLock`].
#[derive(Debug)]
pub struct SpinLock<T> {
    lock: TicketLock,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and the ticket lock lets one guard
// exist at a time; moving the value between VPs that way needs `T: Send`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock around `value`.
    pub const fn new(value: T) -> Self {
        Self {
            lock: TicketLock::new(),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        self.lock.lock();
        SpinGuard { owner: self }
    }
}

/// Access to the data of a locked [`SpinLock`]; unlocks when dropped.
#[derive(Debug)]
pub struct SpinGuard<'a, T> {
    owner: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while its holder has the lock.
        unsafe { &*self.owner.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while its holder has the lock, and `&mut self`
        // makes this the only reference derived from it.
        unsafe { &mut *self.owner.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.owner.lock.unlock();
    }
}
