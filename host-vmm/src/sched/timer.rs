//! Per-VP one-shot and periodic timers, served by one thread per node.
//!
//! One thread with a deadline-ordered heap and a condition variable is enough: timers fire
//! at most a few thousand times a second, and firing only posts an interrupt.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Called when a timer fires: (vp, vector).
pub type FireFn = dyn Fn(u32, u8) + Send + Sync;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Armed {
    vector: u8,
    period: Option<Duration>,
    generation: u64,
}

#[derive(Debug, Default)]
struct State {
    armed: std::collections::HashMap<u32, Armed>,
    heap: BinaryHeap<Reverse<(Instant, u32, u64)>>,
    next_generation: u64,
    stop: bool,
}

/// The timers of one node.
#[derive(Debug, Default)]
pub struct Timers {
    state: Mutex<State>,
    changed: Condvar,
}

/// Shortest period accepted; shorter periods are raised to this so a guest cannot make
/// the timer thread spin.
pub const MIN_PERIOD: Duration = Duration::from_micros(100);

impl Timers {
    /// No timers armed.
    pub fn new() -> Arc<Self> {
        Arc::new(Timers::default())
    }

    /// Arms (or with `delay_ns = 0` disarms) the timer of `vp`.
    pub fn set(&self, vp: u32, vector: u8, delay_ns: u64, period_ns: u64) {
        let mut state = self.state.lock().expect("timer lock");
        if delay_ns == 0 {
            state.armed.remove(&vp);
        } else {
            state.next_generation += 1;
            let generation = state.next_generation;
            let period = (period_ns != 0).then(|| Duration::from_nanos(period_ns).max(MIN_PERIOD));
            state.armed.insert(
                vp,
                Armed {
                    vector,
                    period,
                    generation,
                },
            );
            let deadline = Instant::now() + Duration::from_nanos(delay_ns);
            state.heap.push(Reverse((deadline, vp, generation)));
        }
        self.changed.notify_one();
    }

    /// Stops the timer thread.
    pub fn stop(&self) {
        self.state.lock().expect("timer lock").stop = true;
        self.changed.notify_one();
    }

    /// Runs the timer thread, calling `fire` for each expiry.
    pub fn spawn(self: &Arc<Self>, fire: Box<FireFn>) -> std::io::Result<JoinHandle<()>> {
        let timers = self.clone();
        std::thread::Builder::new()
            .name("timers".into())
            .spawn(move || timers.run(&*fire))
    }

    fn run(&self, fire: &FireFn) {
        let mut state = self.state.lock().expect("timer lock");
        loop {
            if state.stop {
                return;
            }
            let now = Instant::now();
            let next = state.heap.peek().map(|Reverse((deadline, _, _))| *deadline);
            match next {
                Some(deadline) if deadline <= now => {
                    let Reverse((deadline, vp, generation)) = state.heap.pop().expect("peeked");
                    let Some(armed) = state.armed.get(&vp).copied() else {
                        continue;
                    };
                    if armed.generation != generation {
                        continue;
                    }
                    match armed.period {
                        Some(period) => {
                            // Skip missed periods rather than firing a burst.
                            let mut next = deadline + period;
                            if next <= now {
                                next = now + period;
                            }
                            state.heap.push(Reverse((next, vp, generation)));
                        }
                        None => {
                            state.armed.remove(&vp);
                        }
                    }
                    drop(state);
                    fire(vp, armed.vector);
                    state = self.state.lock().expect("timer lock");
                }
                Some(deadline) => {
                    state = self
                        .changed
                        .wait_timeout(state, deadline - now)
                        .expect("timer lock")
                        .0;
                }
                None => state = self.changed.wait(state).expect("timer lock"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn one_shot_fires_once_and_rearm_replaces() {
        let timers = Timers::new();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let handle = timers
            .spawn(Box::new(move |vp, vector| {
                tx.lock().unwrap().send((vp, vector)).unwrap()
            }))
            .unwrap();
        timers.set(3, 40, 1_000_000, 0);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (3, 40));
        // Re-arming with a new vector replaces the old timer; the old one never fires.
        timers.set(1, 41, 50_000_000_000, 0);
        timers.set(1, 42, 1_000_000, 0);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (1, 42));
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        timers.stop();
        handle.join().unwrap();
    }

    #[test]
    fn periodic_fires_repeatedly_until_disarmed() {
        let timers = Timers::new();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let handle = timers
            .spawn(Box::new(move |vp, vector| {
                tx.lock().unwrap().send((vp, vector)).unwrap()
            }))
            .unwrap();
        timers.set(0, 32, 1_000_000, 1_000_000);
        for _ in 0..3 {
            assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (0, 32));
        }
        timers.set(0, 32, 0, 0);
        // Drain what fired before the disarm; then nothing more comes.
        while rx.recv_timeout(Duration::from_millis(50)).is_ok() {}
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        timers.stop();
        handle.join().unwrap();
    }
}
