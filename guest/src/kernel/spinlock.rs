//! Spinlocks whose slow path blocks in the VMM (the paper, 4.9.4): a VP spins a bounded
//! number of times, then makes the `SpinWait` call on the lock word, which sleeps until
//! the word's page is written or invalidated (on another node, the release invalidates
//! it), an interrupt is pending, or about a millisecond passes. A VP whose lock holder was
//! preempted, or lives on another node, so stops burning the CPU it shares.
//!
//! [`RawSpinLock`] is test-and-test-and-set, as the paper's: try the atomic exchange once,
//! and on failure only read (spin, then `SpinWait`) until the lock looks free before trying
//! again, so waiters do not pull the lock's page away from the holder with writes. A ticket
//! lock was tried first and dropped: it hands the lock to one particular waiter, and when
//! VPs outnumber physical CPUs that waiter is often asleep in `SpinWait`, so every hand-over
//! waited for a wake-up (`counter 200000` on 4 VPs on 2 CPUs: 110 s against 0.07 s).
//! Under x86-TSO the acquire exchange is `lock cmpxchg` and the release a plain store.

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
            crate::machine::fail(1, format_args!("{err}"));
        }
    }
}

/// A test-and-test-and-set spinlock without data (see the module documentation).
#[derive(Debug)]
pub struct RawSpinLock {
    /// 0: free, 1: held.
    word: AtomicU64,
}

impl RawSpinLock {
    /// An unlocked lock.
    pub const fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
        }
    }

    /// Takes the lock, waiting as long as it takes.
    pub fn lock(&self) {
        loop {
            if self
                .word
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            wait_while_equal(&self.word, 1);
        }
    }

    /// Releases the lock.
    ///
    /// Only the holder may call this.
    pub fn unlock(&self) {
        self.word.store(0, Ordering::Release);
    }
}

/// Data protected by a [`RawSpinLock`].
#[derive(Debug)]
pub struct SpinLock<T> {
    lock: RawSpinLock,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and the lock lets one guard
// exist at a time; moving the value between VPs that way needs `T: Send`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock around `value`.
    pub const fn new(value: T) -> Self {
        Self {
            lock: RawSpinLock::new(),
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
