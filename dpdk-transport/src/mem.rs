//! An in-memory datagram network: a test double for the wire (feature `test-utils`).
//!
//! Endpoints are named by a `u32`; a datagram sent to an endpoint that does not exist is
//! dropped, as on a real network. Delivery is immediate and in order, so tests that want
//! faults wrap an endpoint in [`crate::LossyDatagram`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::datagram::{Datagram, DatagramError};

#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    datagrams: VecDeque<(Vec<u8>, u32)>,
    interrupted: bool,
}

/// The network: a table of endpoint queues.
#[derive(Clone, Debug, Default)]
pub struct MemNetwork {
    queues: Arc<Mutex<HashMap<u32, Arc<Queue>>>>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates (or replaces) the endpoint named `addr`.
    pub fn endpoint(&self, addr: u32) -> MemDatagram {
        let queue = Arc::new(Queue::default());
        self.queues
            .lock()
            .expect("network lock poisoned")
            .insert(addr, Arc::clone(&queue));
        MemDatagram {
            network: self.clone(),
            addr,
            queue,
        }
    }

    /// Delivers `packet` from `from` to `to`, as if from the wire (lets tests inject raw
    /// bytes). Returns false when `to` does not exist.
    pub fn inject(&self, from: u32, to: u32, packet: &[u8]) -> bool {
        let queue = self
            .queues
            .lock()
            .expect("network lock poisoned")
            .get(&to)
            .cloned();
        let Some(queue) = queue else {
            return false;
        };
        let mut state = queue.state.lock().expect("queue lock poisoned");
        state.datagrams.push_back((packet.to_vec(), from));
        queue.ready.notify_one();
        true
    }
}

/// One endpoint of a [`MemNetwork`].
#[derive(Debug)]
pub struct MemDatagram {
    network: MemNetwork,
    addr: u32,
    queue: Arc<Queue>,
}

impl Datagram for MemDatagram {
    type Addr = u32;

    fn local_addr(&self) -> u32 {
        self.addr
    }

    fn send_to(&self, packet: &[u8], to: u32) -> Result<(), DatagramError> {
        self.network.inject(self.addr, to, packet);
        Ok(())
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
        wait: Duration,
    ) -> Result<Option<(usize, u32)>, DatagramError> {
        let deadline = Instant::now() + wait;
        let mut state = self.queue.state.lock().expect("queue lock poisoned");
        loop {
            if let Some((data, from)) = state.datagrams.pop_front() {
                let len = data.len().min(buf.len());
                buf[..len].copy_from_slice(&data[..len]);
                return Ok(Some((len, from)));
            }
            if state.interrupted {
                state.interrupted = false;
                return Ok(None);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            state = self
                .queue
                .ready
                .wait_timeout(state, remaining)
                .expect("queue lock poisoned")
                .0;
        }
    }

    fn interrupt(&self) {
        let mut state = self.queue.state.lock().expect("queue lock poisoned");
        state.interrupted = true;
        self.queue.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_in_order_and_drops_to_unknown() {
        let net = MemNetwork::new();
        let a = net.endpoint(1);
        let b = net.endpoint(2);
        a.send_to(b"one", 2).unwrap();
        a.send_to(b"two", 2).unwrap();
        a.send_to(b"lost", 3).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(b.recv_from(&mut buf, Duration::ZERO).unwrap(), Some((3, 1)));
        assert_eq!(&buf[..3], b"one");
        assert_eq!(b.recv_from(&mut buf, Duration::ZERO).unwrap(), Some((3, 1)));
        assert_eq!(&buf[..3], b"two");
        assert_eq!(b.recv_from(&mut buf, Duration::ZERO).unwrap(), None);
    }

    #[test]
    fn interrupt_ends_a_wait() {
        let net = MemNetwork::new();
        let a = net.endpoint(1);
        a.interrupt();
        let mut buf = [0u8; 8];
        assert_eq!(
            a.recv_from(&mut buf, Duration::from_secs(3600)).unwrap(),
            None
        );
    }
}
