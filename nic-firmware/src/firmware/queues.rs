//! The firmware's fixed-size queues: messages waiting to leave, and the mapping changes
//! the host has not acknowledged yet. No allocation: both are arrays.

use vima::wire::Message;

use crate::engine::PageSend;

/// A message the engine asked for, waiting to leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OutItem {
    /// A message without page contents.
    Message(Message<'static>),
    /// A page message whose contents are read by DMA when it leaves.
    Page(PageSend),
}

impl OutItem {
    pub(super) fn dst(&self) -> u16 {
        match self {
            Self::Message(m) => m.dst,
            Self::Page(p) => p.to,
        }
    }

    pub(super) fn page(&self) -> Option<u64> {
        match self {
            Self::Message(m) => m.body.page(),
            Self::Page(p) => Some(p.page.0),
        }
    }
}

/// Messages in engine order. Items leave out of order only across destinations: one that
/// must wait holds back every later item for the same node (the engine relies on order
/// per link), not the others.
#[derive(Debug)]
pub(super) struct OutQueue<const N: usize> {
    items: [Option<(OutItem, bool)>; N],
    len: usize,
}

impl<const N: usize> OutQueue<N> {
    pub(super) const fn new() -> Self {
        Self {
            items: [None; N],
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn room(&self) -> usize {
        N - self.len
    }

    /// Appends; false when full.
    pub(super) fn push(&mut self, item: OutItem) -> bool {
        if self.len == N {
            return false;
        }
        self.items[self.len] = Some((item, false));
        self.len += 1;
        true
    }

    /// The item at `index` and whether it has been held before.
    pub(super) fn get(&self, index: usize) -> Option<(OutItem, bool)> {
        self.items.get(index).copied().flatten()
    }

    /// True when a page send of `page` is queued.
    pub(super) fn has_page_send(&self, page: u64) -> bool {
        self.items[..self.len]
            .iter()
            .flatten()
            .any(|(item, _)| matches!(item, OutItem::Page(p) if p.page.0 == page))
    }

    /// Marks the item at `index` as held (for counting each hold once).
    pub(super) fn mark_held(&mut self, index: usize) {
        if let Some(Some((_, held))) = self.items.get_mut(index) {
            *held = true;
        }
    }

    /// Removes the item at `index`, keeping the order of the rest.
    pub(super) fn remove(&mut self, index: usize) {
        if index >= self.len {
            return;
        }
        self.items.copy_within(index + 1..self.len, index);
        self.len -= 1;
        self.items[self.len] = None;
    }
}

/// Mapping changes handed to the host, by completion sequence number, oldest first.
#[derive(Debug)]
pub(super) struct ChangeLog<const N: usize> {
    entries: [(u64, u64); N],
    head: usize,
    len: usize,
}

impl<const N: usize> ChangeLog<N> {
    pub(super) const fn new() -> Self {
        Self {
            entries: [(0, 0); N],
            head: 0,
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Records that completion `seq` changes `page`'s mapping; false when full.
    pub(super) fn record(&mut self, seq: u64, page: u64) -> bool {
        if self.len == N {
            return false;
        }
        self.entries[(self.head + self.len) % N] = (seq, page);
        self.len += 1;
        true
    }

    /// Forgets every change the host applied (sequence below `applied`).
    pub(super) fn retire(&mut self, applied: u64) {
        while self.len > 0 && self.entries[self.head].0 < applied {
            self.head = (self.head + 1) % N;
            self.len -= 1;
        }
    }

    /// True when a change of `page` is not applied yet.
    pub(super) fn pending(&self, page: u64) -> bool {
        (0..self.len).any(|i| self.entries[(self.head + i) % N].1 == page)
    }
}

/// How long to wait after an idle round: spin for a while (a request is likely to follow
/// a reply within microseconds), then sleep with growing intervals up to a millisecond, so
/// that an idle cluster costs almost nothing. Any work resets it.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    idle_rounds: u32,
}

/// Idle rounds spent spinning before the first sleep.
pub(super) const SPIN_ROUNDS: u32 = 32;
/// First sleep.
const FIRST_SLEEP_US: u32 = 10;
/// Longest sleep.
pub(super) const MAX_SLEEP_US: u32 = 1000;
/// Idle rounds per doubling of the sleep.
const ROUNDS_PER_DOUBLING: u32 = 4;

impl Backoff {
    pub(super) fn reset(&mut self) {
        self.idle_rounds = 0;
    }

    /// The wait after one more idle round: `None` to spin, else microseconds to sleep.
    pub(super) fn next(&mut self) -> Option<u32> {
        self.idle_rounds = self.idle_rounds.saturating_add(1);
        if self.idle_rounds <= SPIN_ROUNDS {
            return None;
        }
        let doublings = (self.idle_rounds - SPIN_ROUNDS - 1) / ROUNDS_PER_DOUBLING;
        // 10 << 7 already exceeds the cap; larger shifts would overflow.
        let sleep = if doublings >= 7 {
            MAX_SLEEP_US
        } else {
            FIRST_SLEEP_US << doublings
        };
        Some(sleep.min(MAX_SLEEP_US))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{LogicalPage, PageSendKind};
    use vima::wire::Body;

    fn msg(dst: u16, page: u64) -> OutItem {
        OutItem::Message(Message {
            vs_id: 1,
            src: 0,
            dst,
            request_id: 1,
            body: Body::ReadReq { page },
        })
    }

    #[test]
    fn out_queue_keeps_order_when_removing_from_the_middle() {
        let mut q: OutQueue<4> = OutQueue::new();
        for i in 0..4 {
            assert!(q.push(msg(1, 0x100 + i)));
        }
        assert!(!q.push(msg(1, 0x200)));
        q.remove(1);
        let pages: Vec<_> = (0..q.len()).map(|i| q.get(i).unwrap().0.page()).collect();
        assert_eq!(pages, [Some(0x100), Some(0x102), Some(0x103)]);
        q.mark_held(0);
        assert!(q.get(0).unwrap().1);
        assert!(!q.get(1).unwrap().1);
        let page = OutItem::Page(PageSend {
            vs_id: 1,
            src: 0,
            to: 2,
            page: LogicalPage(9),
            request_id: 3,
            kind: PageSendKind::Shared,
        });
        assert!(!q.has_page_send(9));
        assert!(q.push(page));
        assert!(q.has_page_send(9) && !q.has_page_send(0x102));
        assert_eq!(q.get(3).unwrap().0.dst(), 2);
        assert_eq!(q.room(), 0);
    }

    #[test]
    fn change_log_retires_in_sequence_order_and_wraps() {
        let mut log: ChangeLog<3> = ChangeLog::new();
        assert!(log.record(10, 5));
        assert!(log.record(11, 6));
        assert!(log.record(12, 5));
        assert_eq!(log.len(), 3);
        assert!(!log.record(13, 7));
        log.retire(11);
        assert!(log.pending(5) && log.pending(6));
        log.retire(12);
        assert!(!log.pending(6) && log.pending(5));
        assert!(log.record(13, 7));
        assert!(log.record(14, 8));
        log.retire(15);
        assert_eq!(log.len(), 0);
        assert!(!log.pending(5) && !log.pending(8));
    }

    #[test]
    fn backoff_spins_then_sleeps_longer_up_to_the_cap() {
        let mut b = Backoff::default();
        let waits: Vec<_> = (0..200).map(|_| b.next()).collect();
        assert!(waits[..SPIN_ROUNDS as usize].iter().all(Option::is_none));
        let sleeps: Vec<u32> = waits.iter().flatten().copied().collect();
        assert_eq!(sleeps[0], FIRST_SLEEP_US);
        assert!(sleeps.windows(2).all(|w| w[0] <= w[1]), "never shrinks");
        assert_eq!(*sleeps.last().unwrap(), MAX_SLEEP_US);
        b.reset();
        assert_eq!(b.next(), None);
    }
}
