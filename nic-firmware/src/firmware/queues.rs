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

/// How long to wait after an idle round. While the NIC awaits something that comes within
/// microseconds (a reply to its own request, the host's acknowledgement of a mapping
/// change), it polls hot for a short window after its last work; otherwise, and after the
/// window, it sleeps with growing intervals up to a millisecond (woken early by the wire
/// or the doorbell where the board can), so that an idle cluster costs almost nothing.
/// Any work resets it.
///
/// Why only while awaiting: on the 2-core build machine every hot NIC is a spinner
/// competing with the VPs; a 4-node cluster whose four NICs all polled hot after any
/// traffic starved its VPs (a 4-node offload test went from seconds to minutes). Why a
/// window in time rather than a count of rounds: what a round costs depends on the board,
/// and what must be covered is a time, a remote round trip. With 32 spinning rounds
/// (~30 µs) the NIC slept before nearly every reply, and each wake-up cost more than the
/// wire (`cvmm bench fault-latency`, docs/nic.md).
#[derive(Debug, Default)]
pub(super) struct Backoff {
    /// When the last work was done (board clock, µs).
    last_work_us: u64,
    /// Idle rounds since the hot window ended.
    sleeps: u32,
}

/// How long the loop polls hot (relaxing between rounds) after its last work.
pub(super) const HOT_WINDOW_US: u64 = 500;
/// First sleep.
pub(super) const FIRST_SLEEP_US: u32 = 10;
/// Longest sleep.
pub(super) const MAX_SLEEP_US: u32 = 1000;
/// Sleeps per doubling of the sleep.
const SLEEPS_PER_DOUBLING: u32 = 4;

/// What the loop does after an idle round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// Poll again at once, letting other work on this core run first.
    Relax,
    /// Sleep this many microseconds (or until the board sees new work).
    Sleep(u32),
}

impl Backoff {
    /// Work was done at `now_us`.
    pub(super) fn reset(&mut self, now_us: u64) {
        self.last_work_us = now_us;
        self.sleeps = 0;
    }

    /// The wait after one more idle round at `now_us`; `awaiting`: something the NIC
    /// waits for is due soon.
    pub(super) fn next(&mut self, now_us: u64, awaiting: bool) -> Wait {
        if awaiting && now_us.saturating_sub(self.last_work_us) < HOT_WINDOW_US {
            return Wait::Relax;
        }
        let doublings = self.sleeps / SLEEPS_PER_DOUBLING;
        self.sleeps = self.sleeps.saturating_add(1);
        // 10 << 7 already exceeds the cap; larger shifts would overflow.
        let sleep = if doublings >= 7 {
            MAX_SLEEP_US
        } else {
            FIRST_SLEEP_US << doublings
        };
        Wait::Sleep(sleep.min(MAX_SLEEP_US))
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
    fn backoff_polls_hot_for_its_window_then_sleeps_longer_up_to_the_cap() {
        let mut b = Backoff::default();
        b.reset(1_000);
        // Inside the window, however many rounds: relax, if something is awaited.
        for t in [1_000, 1_001, 1_000 + HOT_WINDOW_US - 1] {
            assert_eq!(b.next(t, true), Wait::Relax);
        }
        let mut now = 1_000 + HOT_WINDOW_US;
        let mut sleeps = Vec::new();
        for _ in 0..200 {
            match b.next(now, true) {
                Wait::Sleep(us) => {
                    sleeps.push(us);
                    now += u64::from(us);
                }
                Wait::Relax => panic!("relaxed after the window at {now}"),
            }
        }
        assert_eq!(sleeps[0], FIRST_SLEEP_US);
        assert!(sleeps.windows(2).all(|w| w[0] <= w[1]), "never shrinks");
        assert_eq!(*sleeps.last().unwrap(), MAX_SLEEP_US);
        // Work opens a new window.
        b.reset(now);
        assert_eq!(b.next(now + 1, true), Wait::Relax);
        assert_eq!(
            b.next(now + HOT_WINDOW_US, true),
            Wait::Sleep(FIRST_SLEEP_US)
        );
    }

    #[test]
    fn backoff_sleeps_at_once_when_nothing_is_awaited() {
        let mut b = Backoff::default();
        b.reset(1_000);
        assert_eq!(b.next(1_001, false), Wait::Sleep(FIRST_SLEEP_US));
        // Something awaited again inside the window: hot.
        assert_eq!(b.next(1_002, true), Wait::Relax);
    }
}
