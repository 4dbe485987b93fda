//! A one-shot, reusable wake-up for a VP thread blocked in SpinWait.
//!
//! Mutex + Condvar instead of a futex or eventfd: the waiter is a host thread that parks
//! with a deadline, and the notifier (the fault thread, an invalidation, a DMA write) must
//! never block. A notification that arrives before the wait starts is kept, so the order
//! "register, re-check, wait" cannot lose one.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Instant;

/// A flag a VP thread waits on; see the module docs.
#[derive(Debug, Default)]
pub struct WakeSignal {
    notified: Mutex<bool>,
    cond: Condvar,
}

impl WakeSignal {
    /// A signal that has not been notified.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and wakes every waiter.
    pub fn notify(&self) {
        // A bool cannot be left inconsistent by a panic: ignore poisoning.
        let mut notified = self.notified.lock().unwrap_or_else(PoisonError::into_inner);
        *notified = true;
        self.cond.notify_all();
    }

    /// Clears a pending notification (before registering for a new wait).
    pub fn reset(&self) {
        *self.notified.lock().unwrap_or_else(PoisonError::into_inner) = false;
    }

    /// True if notified and not yet consumed.
    pub fn is_notified(&self) -> bool {
        *self.notified.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until notified or until `deadline`. Returns true (and consumes the
    /// notification) if notified, false on timeout.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        let mut notified = self.notified.lock().unwrap_or_else(PoisonError::into_inner);
        while !*notified {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            notified = self
                .cond
                .wait_timeout(notified, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *notified = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn notification_before_wait_is_kept_and_consumed() {
        let s = WakeSignal::new();
        s.notify();
        assert!(s.is_notified());
        assert!(s.wait_until(Instant::now()));
        assert!(!s.is_notified());
        // Consumed: an immediate deadline now times out.
        assert!(!s.wait_until(Instant::now()));
    }

    #[test]
    fn reset_drops_a_stale_notification() {
        let s = WakeSignal::new();
        s.notify();
        s.reset();
        assert!(!s.wait_until(Instant::now()));
    }

    #[test]
    fn another_thread_wakes_the_waiter() {
        let s = Arc::new(WakeSignal::new());
        let n = s.clone();
        let t = std::thread::spawn(move || n.notify());
        // A far deadline: the test only fails (after a minute) if the wake is lost.
        assert!(s.wait_until(Instant::now() + Duration::from_secs(60)));
        t.join().expect("notifier thread");
    }
}
