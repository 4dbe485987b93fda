//! The decisions of the fault path, separate from the kernel: given a fault event and the
//! page's local state, which ioctl answers it, which faults coalesce, which need a fetch.
//! Also every other operation that changes a page's mapping (drop, protect, watch), so
//! that all of them take the same stripe lock and see the same bits.
//!
//! Generic over [`MappingOps`] so unit tests check the decisions against a recording fake;
//! [`super::LogicalMemory`] instantiates it with the real [`super::uffd::Userfaultfd`].
//!
//! Coalescing. Every answer to a fault wakes *all* threads blocked on that page (mapping
//! ioctls wake the range; EEXIST is answered with UFFDIO_WAKE). A woken thread whose access
//! is still not allowed simply faults again. So it is enough to answer one event per page
//! and fault class per batch (classes: "no PTE" = MISSING/MINOR, and WP, which needs a
//! different ioctl), to answer EEXIST with a wake, and to drop events for a page whose
//! fetch is in flight (its completion wakes everyone).

use std::sync::Arc;
use std::time::Instant;

use log::{error, warn};

use super::pages::{LockedPage, PageState, PageTable, FETCHING, PROTECTED, WATCHED};
use super::stats::FaultStats;
use super::uffd::{FaultEvent, FaultKind, MapOutcome, MappingOps, UffdError};
use super::wake::WakeSignal;
use super::{MemoryError, PAGE_SIZE};

/// A page the local copy cannot serve: the page resolver (the fabric) must bring it, then
/// call [`super::LogicalMemory::complete_fetch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// Logical page index.
    pub page: u64,
    /// An exclusive (writable) copy is needed.
    pub write: bool,
    /// Kernel thread id of the first thread that faulted (the VP to steer completion to).
    pub thread_id: u32,
}

/// The fault path's view of one node's logical memory.
#[derive(Debug)]
pub(crate) struct Pager<'a, O: MappingOps> {
    pub ops: &'a O,
    pub pages: &'a PageTable,
    pub stats: &'a FaultStats,
    /// Host virtual address of logical address 0 in the guest mapping.
    pub guest_base: u64,
}

/// How many distinct (page, class) keys one batch remembers; batches are small.
const BATCH_KEYS: usize = 64;

impl<O: MappingOps> Pager<'_, O> {
    fn addr(&self, page: u64) -> u64 {
        self.guest_base + page * PAGE_SIZE
    }

    fn page_of(&self, address: u64) -> Option<u64> {
        let offset = address.checked_sub(self.guest_base)?;
        let page = offset / PAGE_SIZE;
        (page < self.pages.len()).then_some(page)
    }

    fn lock(&self, page: u64) -> Result<LockedPage<'_>, MemoryError> {
        self.pages.lock(page).ok_or(MemoryError::PageOutOfRange {
            page,
            pages: self.pages.len(),
        })
    }

    /// Answers a batch of events read together at `read_at`. Faults that need the fabric
    /// are appended to `fetches`: the caller starts them after this returns (no lock held).
    pub fn handle_batch(
        &self,
        events: &[FaultEvent],
        read_at: Instant,
        fetches: &mut Vec<FetchRequest>,
    ) {
        let mut seen: Vec<(u64, bool)> = Vec::with_capacity(events.len().min(BATCH_KEYS));
        for event in events {
            self.stats.count_fault(event.kind);
            let Some(page) = self.page_of(event.address) else {
                // Only the guest mapping is registered, so this is a kernel surprise.
                // Wake the thread rather than leave it blocked forever.
                error!("userfault at {:#x} outside logical memory", event.address);
                self.stats.count_error();
                let _ = self.ops.wake(event.address & !(PAGE_SIZE - 1), PAGE_SIZE);
                continue;
            };
            let key = (page, event.kind == FaultKind::WriteProtect);
            if seen.contains(&key) {
                self.stats.count_coalesced();
                continue;
            }
            if seen.len() < BATCH_KEYS {
                seen.push(key);
            }
            if let Some(fetch) = self.handle_fault(page, event, read_at) {
                fetches.push(fetch);
            }
        }
    }

    fn handle_fault(
        &self,
        page: u64,
        event: &FaultEvent,
        read_at: Instant,
    ) -> Option<FetchRequest> {
        let mut locked = self.pages.lock(page)?;
        if locked.has(FETCHING) {
            self.stats.count_coalesced();
            return None;
        }
        let state = locked.state();
        let addr = self.addr(page);
        let protected = locked.has(PROTECTED);
        match event.kind {
            FaultKind::WriteProtect if state == PageState::Exclusive => {
                let result = self.ops.write_protect(addr, PAGE_SIZE, false);
                if result.is_ok() {
                    locked.clear(PROTECTED);
                }
                let watchers = locked.take_watchers();
                self.finish(result.map(|()| MapOutcome::Mapped), addr, read_at);
                drop(locked);
                notify(watchers);
                None
            }
            FaultKind::WriteProtect => Some(self.start_fetch(&mut locked, event, true, read_at)),
            FaultKind::Missing | FaultKind::Minor
                if state == PageState::Invalid || (state == PageState::Shared && event.write) =>
            {
                Some(self.start_fetch(&mut locked, event, event.write, read_at))
            }
            FaultKind::Missing => {
                let result = self.ops.zero_fill(addr, PAGE_SIZE, protected);
                self.finish(result, addr, read_at);
                None
            }
            FaultKind::Minor => {
                let result = self.ops.continue_map(addr, PAGE_SIZE, protected);
                self.finish(result, addr, read_at);
                None
            }
        }
    }

    fn start_fetch(
        &self,
        locked: &mut LockedPage<'_>,
        event: &FaultEvent,
        write: bool,
        read_at: Instant,
    ) -> FetchRequest {
        locked.set(FETCHING);
        locked.stripe.fetch_started.insert(locked.index, read_at);
        self.stats.count_fetch();
        FetchRequest {
            page: locked.index,
            write,
            thread_id: event.thread_id,
        }
    }

    /// Books the outcome of the ioctl that answered a fault and makes sure the blocked
    /// threads run again.
    fn finish(&self, result: Result<MapOutcome, UffdError>, addr: u64, since: Instant) {
        match result {
            Ok(MapOutcome::Mapped) => {
                self.stats.count_resolved();
                self.stats.latency().record(since.elapsed());
            }
            Ok(MapOutcome::AlreadyMapped) => {
                self.stats.count_coalesced();
                self.wake(addr);
                self.stats.latency().record(since.elapsed());
            }
            Err(err) => {
                error!("{err}: waking the faulting threads to retry");
                self.stats.count_error();
                self.wake(addr);
            }
        }
    }

    fn wake(&self, addr: u64) {
        self.stats.count_woken();
        if let Err(err) = self.ops.wake(addr, PAGE_SIZE) {
            error!("{err}");
            self.stats.count_error();
        }
    }

    /// The fabric finished a fetch: the page's contents are in the DMA window and the node
    /// now holds it in `state`. Maps it for the threads waiting on it and wakes them.
    /// `Invalid` means the fetch was abandoned: the threads are woken and fault again.
    pub fn complete_fetch(&self, page: u64, state: PageState) -> Result<(), MemoryError> {
        let mut locked = self.lock(page)?;
        let started = locked.stripe.fetch_started.remove(&page);
        locked.clear(FETCHING);
        locked.set_state(state);
        let addr = self.addr(page);
        let result = match state {
            PageState::Invalid => {
                self.wake(addr);
                return Ok(());
            }
            PageState::Shared => {
                if !locked.has(PROTECTED) {
                    // The page may still be mapped writable from an earlier Exclusive life.
                    self.ops
                        .write_protect(addr, PAGE_SIZE, true)
                        .map_err(|source| MemoryError::WriteProtect { page, source })?;
                    locked.set(PROTECTED);
                }
                self.ops.continue_map(addr, PAGE_SIZE, true)
            }
            PageState::Exclusive => {
                if locked.has(PROTECTED) && !locked.has(WATCHED) {
                    // An upgrade from Shared: unprotecting also wakes blocked writers.
                    self.ops
                        .write_protect(addr, PAGE_SIZE, false)
                        .map_err(|source| MemoryError::WriteProtect { page, source })?;
                    locked.clear(PROTECTED);
                }
                self.ops
                    .continue_map(addr, PAGE_SIZE, locked.has(PROTECTED))
            }
        };
        match result {
            Ok(MapOutcome::Mapped) => self.stats.count_resolved(),
            Ok(MapOutcome::AlreadyMapped) => self.wake(addr),
            Err(err) => {
                warn!("{err} after fetch: waking the faulting threads to retry");
                self.stats.count_error();
                self.wake(addr);
            }
        }
        if let Some(started) = started {
            self.stats.latency().record(started.elapsed());
        }
        Ok(())
    }

    /// Unmaps the page from the guest mapping; the contents stay in the memfd, so the next
    /// guest access is a MINOR fault that maps them again. Watchers are notified (for them
    /// this is an invalidation). Write protection is kept: the kernel leaves a uffd-wp
    /// marker in the empty PTE and the MINOR fault is answered write-protected.
    pub fn drop_page(&self, page: u64) -> Result<(), MemoryError> {
        let mut locked = self.lock(page)?;
        self.ops
            .discard(self.addr(page), PAGE_SIZE)
            .map_err(|source| MemoryError::Discard { page, source })?;
        let watchers = locked.take_watchers();
        drop(locked);
        notify(watchers);
        Ok(())
    }

    /// Gives back an Exclusive page that nothing watches, protects or fetches: `punch`
    /// removes its contents from the memfd (a hole), so the next guest access is a
    /// MISSING fault answered with a zero page. Under the page's lock, so no fault or
    /// coherence action sees it half done. False (nothing done) for any other page: the
    /// caller zeroes it coherently instead.
    pub fn discard_exclusive(
        &self,
        page: u64,
        punch: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<bool, MemoryError> {
        let locked = self.lock(page)?;
        if locked.state() != PageState::Exclusive
            || locked.has(FETCHING)
            || locked.has(WATCHED)
            || locked.has(PROTECTED)
        {
            return Ok(false);
        }
        punch().map_err(|source| MemoryError::Punch { page, source })?;
        drop(locked);
        Ok(true)
    }

    /// Write-protects the page in the guest mapping (`on`), or lifts that protection and
    /// notifies the watchers (their writes would no longer fault). A Shared page cannot
    /// be made writable here: only the coherence protocol can.
    pub fn write_protect(&self, page: u64, on: bool) -> Result<(), MemoryError> {
        let mut locked = self.lock(page)?;
        if !on && locked.state() == PageState::Shared {
            return Err(MemoryError::PageShared { page });
        }
        self.ops
            .write_protect(self.addr(page), PAGE_SIZE, on)
            .map_err(|source| MemoryError::WriteProtect { page, source })?;
        if on {
            locked.set(PROTECTED);
            return Ok(());
        }
        locked.clear(PROTECTED);
        let watchers = locked.take_watchers();
        drop(locked);
        notify(watchers);
        Ok(())
    }

    /// Registers `signal` to be notified at the next write fault on the page, the next
    /// invalidation or drop, or the next VMM write through the DMA window; write-protects
    /// the page first if it is not.
    pub fn watch_page(&self, page: u64, signal: &Arc<WakeSignal>) -> Result<(), MemoryError> {
        let mut locked = self.lock(page)?;
        if !locked.has(PROTECTED) {
            self.ops
                .write_protect(self.addr(page), PAGE_SIZE, true)
                .map_err(|source| MemoryError::WriteProtect { page, source })?;
            locked.set(PROTECTED);
        }
        let list = locked.stripe.watchers.entry(page).or_default();
        if !list.iter().any(|s| Arc::ptr_eq(s, signal)) {
            list.push(Arc::clone(signal));
        }
        locked.set(WATCHED);
        Ok(())
    }

    /// Removes `signal` from the page's watchers. The page stays write-protected: the next
    /// write takes one fault that lifts it, which is cheaper than an ioctl per SpinWait
    /// that returns early.
    pub fn unwatch_page(&self, page: u64, signal: &Arc<WakeSignal>) -> Result<(), MemoryError> {
        let mut locked = self.lock(page)?;
        let now_empty = match locked.stripe.watchers.get_mut(&page) {
            Some(list) => {
                list.retain(|s| !Arc::ptr_eq(s, signal));
                list.is_empty()
            }
            None => true,
        };
        if now_empty {
            locked.take_watchers();
        }
        Ok(())
    }

    /// Notifies (and forgets) the page's watchers, for writes that do not fault: the
    /// VMM's or the fabric's writes through the DMA window.
    pub fn notify_watchers(&self, page: u64) -> Result<(), MemoryError> {
        let mut locked = self.lock(page)?;
        let watchers = locked.take_watchers();
        drop(locked);
        notify(watchers);
        Ok(())
    }

    /// Changes the node's state of a page, with the mapping change it implies: Invalid
    /// unmaps it and notifies watchers, Shared write-protects it, Exclusive lifts the
    /// protection unless a watcher needs it. The contents must already be right.
    pub fn set_state(&self, page: u64, state: PageState) -> Result<(), MemoryError> {
        let mut locked = self.lock(page)?;
        let addr = self.addr(page);
        let mut watchers = Vec::new();
        match state {
            PageState::Invalid => {
                self.ops
                    .discard(addr, PAGE_SIZE)
                    .map_err(|source| MemoryError::Discard { page, source })?;
                watchers = locked.take_watchers();
            }
            PageState::Shared => {
                if !locked.has(PROTECTED) {
                    self.ops
                        .write_protect(addr, PAGE_SIZE, true)
                        .map_err(|source| MemoryError::WriteProtect { page, source })?;
                    locked.set(PROTECTED);
                }
            }
            PageState::Exclusive => {
                if locked.has(PROTECTED) && !locked.has(WATCHED) {
                    self.ops
                        .write_protect(addr, PAGE_SIZE, false)
                        .map_err(|source| MemoryError::WriteProtect { page, source })?;
                    locked.clear(PROTECTED);
                }
            }
        }
        locked.set_state(state);
        drop(locked);
        notify(watchers);
        Ok(())
    }
}

fn notify(watchers: Vec<Arc<WakeSignal>>) {
    for signal in watchers {
        signal.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io;
    use std::sync::Mutex;

    const BASE: u64 = 0x7f00_0000_0000;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Op {
        Zero { page: u64, wp: bool },
        Continue { page: u64, wp: bool },
        Protect { page: u64, on: bool },
        Wake { page: u64 },
        Discard { page: u64 },
    }

    /// Records every operation; pages in `mapped` answer EEXIST.
    #[derive(Default)]
    struct FakeOps {
        ops: Mutex<Vec<Op>>,
        mapped: Mutex<HashSet<u64>>,
    }

    fn page(addr: u64) -> u64 {
        (addr - BASE) / PAGE_SIZE
    }

    impl FakeOps {
        fn take(&self) -> Vec<Op> {
            std::mem::take(&mut *self.ops.lock().expect("ops"))
        }
        fn map(&self, addr: u64, op: Op) -> Result<MapOutcome, UffdError> {
            self.ops.lock().expect("ops").push(op);
            if self.mapped.lock().expect("mapped").insert(page(addr)) {
                Ok(MapOutcome::Mapped)
            } else {
                Ok(MapOutcome::AlreadyMapped)
            }
        }
    }

    impl MappingOps for FakeOps {
        fn zero_fill(&self, addr: u64, _len: u64, wp: bool) -> Result<MapOutcome, UffdError> {
            self.map(
                addr,
                Op::Zero {
                    page: page(addr),
                    wp,
                },
            )
        }
        fn continue_map(&self, addr: u64, _len: u64, wp: bool) -> Result<MapOutcome, UffdError> {
            self.map(
                addr,
                Op::Continue {
                    page: page(addr),
                    wp,
                },
            )
        }
        fn write_protect(&self, addr: u64, _len: u64, on: bool) -> Result<(), UffdError> {
            let op = Op::Protect {
                page: page(addr),
                on,
            };
            self.ops.lock().expect("ops").push(op);
            Ok(())
        }
        fn wake(&self, addr: u64, _len: u64) -> Result<(), UffdError> {
            self.ops
                .lock()
                .expect("ops")
                .push(Op::Wake { page: page(addr) });
            Ok(())
        }
        fn discard(&self, addr: u64, _len: u64) -> io::Result<()> {
            self.ops
                .lock()
                .expect("ops")
                .push(Op::Discard { page: page(addr) });
            self.mapped.lock().expect("mapped").remove(&page(addr));
            Ok(())
        }
    }

    struct Fixture {
        ops: FakeOps,
        pages: PageTable,
        stats: FaultStats,
    }

    impl Fixture {
        fn new(state: PageState) -> Self {
            Self {
                ops: FakeOps::default(),
                pages: PageTable::new(16, state),
                stats: FaultStats::new(),
            }
        }
        fn pager(&self) -> Pager<'_, FakeOps> {
            Pager {
                ops: &self.ops,
                pages: &self.pages,
                stats: &self.stats,
                guest_base: BASE,
            }
        }
        fn batch(&self, events: &[FaultEvent]) -> Vec<FetchRequest> {
            let mut fetches = Vec::new();
            self.pager()
                .handle_batch(events, Instant::now(), &mut fetches);
            fetches
        }
    }

    fn ev(page: u64, kind: FaultKind, write: bool) -> FaultEvent {
        FaultEvent {
            address: BASE + page * PAGE_SIZE,
            kind,
            write,
            thread_id: 7,
        }
    }

    #[test]
    fn duplicates_in_a_batch_resolve_once() {
        let f = Fixture::new(PageState::Exclusive);
        assert!(f
            .batch(&[
                ev(3, FaultKind::Minor, false),
                ev(3, FaultKind::Minor, true)
            ])
            .is_empty());
        assert_eq!(f.ops.take(), vec![Op::Continue { page: 3, wp: false }]);
        let s = f.stats.snapshot();
        assert_eq!(
            (s.minor_faults, s.resolved, s.coalesced, s.woken),
            (2, 1, 1, 0)
        );
        assert_eq!(s.latency.samples, 1);
    }

    #[test]
    fn already_mapped_page_is_woken() {
        let f = Fixture::new(PageState::Exclusive);
        f.batch(&[ev(2, FaultKind::Missing, false)]);
        // A second batch for the same page (a re-fault after a signal, or a second vCPU
        // whose event came in the next read): EEXIST, answered with a wake.
        f.batch(&[ev(2, FaultKind::Missing, false)]);
        assert_eq!(
            f.ops.take(),
            vec![
                Op::Zero { page: 2, wp: false },
                Op::Zero { page: 2, wp: false },
                Op::Wake { page: 2 }
            ]
        );
        let s = f.stats.snapshot();
        assert_eq!(
            (s.missing_faults, s.resolved, s.coalesced, s.woken),
            (2, 1, 1, 1)
        );
    }

    #[test]
    fn write_protect_and_minor_on_one_page_are_both_answered() {
        let f = Fixture::new(PageState::Exclusive);
        f.pager().write_protect(5, true).expect("protect");
        f.ops.take();
        f.batch(&[
            ev(5, FaultKind::Minor, false),
            ev(5, FaultKind::WriteProtect, true),
        ]);
        assert_eq!(
            f.ops.take(),
            vec![
                Op::Continue { page: 5, wp: true },
                Op::Protect { page: 5, on: false }
            ]
        );
        assert_eq!(f.pages.peek(5), Some(PageState::Exclusive as u8));
    }

    #[test]
    fn protected_hole_is_filled_write_protected() {
        let f = Fixture::new(PageState::Exclusive);
        f.pager().write_protect(4, true).expect("protect");
        f.ops.take();
        f.batch(&[ev(4, FaultKind::Missing, true)]);
        assert_eq!(f.ops.take(), vec![Op::Zero { page: 4, wp: true }]);
    }

    #[test]
    fn write_fault_notifies_watchers_and_unprotects() {
        let f = Fixture::new(PageState::Exclusive);
        let a = Arc::new(WakeSignal::new());
        let b = Arc::new(WakeSignal::new());
        f.pager().watch_page(6, &a).expect("watch");
        f.pager().watch_page(6, &b).expect("watch");
        f.pager()
            .watch_page(6, &b)
            .expect("watching twice registers once");
        // Only the first watch protects.
        assert_eq!(f.ops.take(), vec![Op::Protect { page: 6, on: true }]);
        assert!(!a.is_notified() && !b.is_notified());
        f.batch(&[ev(6, FaultKind::WriteProtect, true)]);
        assert_eq!(f.ops.take(), vec![Op::Protect { page: 6, on: false }]);
        assert!(a.is_notified() && b.is_notified());
        assert_eq!(f.pages.peek(6), Some(PageState::Exclusive as u8));
        assert_eq!(f.stats.snapshot().resolved, 1);
    }

    #[test]
    fn unwatch_keeps_protection_and_drop_notifies() {
        let f = Fixture::new(PageState::Exclusive);
        let a = Arc::new(WakeSignal::new());
        let b = Arc::new(WakeSignal::new());
        f.pager().watch_page(1, &a).expect("watch");
        f.pager().watch_page(1, &b).expect("watch");
        f.pager().unwatch_page(1, &a).expect("unwatch");
        f.pager().drop_page(1).expect("drop");
        assert!(!a.is_notified());
        assert!(b.is_notified());
        assert_eq!(
            f.ops.take(),
            vec![Op::Protect { page: 1, on: true }, Op::Discard { page: 1 }]
        );
        // Still protected: the MINOR fault after the drop maps write-protected.
        f.batch(&[ev(1, FaultKind::Minor, false)]);
        assert_eq!(f.ops.take(), vec![Op::Continue { page: 1, wp: true }]);
        // Unwatching the last watcher clears WATCHED.
        f.pager().watch_page(1, &a).expect("watch");
        f.pager().unwatch_page(1, &a).expect("unwatch");
        assert_eq!(
            f.pages.peek(1),
            Some(PageState::Exclusive as u8 | PROTECTED)
        );
    }

    #[test]
    fn invalid_page_is_fetched_once_and_mapped_on_completion() {
        let f = Fixture::new(PageState::Invalid);
        let fetches = f.batch(&[ev(9, FaultKind::Minor, false)]);
        assert_eq!(
            fetches,
            vec![FetchRequest {
                page: 9,
                write: false,
                thread_id: 7
            }]
        );
        // More faults while the fetch is in flight join it.
        assert!(f.batch(&[ev(9, FaultKind::Missing, true)]).is_empty());
        assert!(f.ops.take().is_empty());
        f.pager()
            .complete_fetch(9, PageState::Exclusive)
            .expect("complete");
        assert_eq!(f.ops.take(), vec![Op::Continue { page: 9, wp: false }]);
        let s = f.stats.snapshot();
        assert_eq!((s.fetches, s.coalesced, s.resolved), (1, 1, 1));
        assert_eq!(f.pages.state(9), Some(PageState::Exclusive));
        assert_eq!(f.pages.peek(9), Some(PageState::Exclusive as u8));
    }

    #[test]
    fn shared_page_reads_locally_and_writes_upgrade() {
        let f = Fixture::new(PageState::Exclusive);
        f.pager().set_state(8, PageState::Shared).expect("share");
        assert_eq!(f.ops.take(), vec![Op::Protect { page: 8, on: true }]);
        assert!(matches!(
            f.pager().write_protect(8, false),
            Err(MemoryError::PageShared { page: 8 })
        ));
        assert!(f.batch(&[ev(8, FaultKind::Minor, false)]).is_empty());
        assert_eq!(f.ops.take(), vec![Op::Continue { page: 8, wp: true }]);
        let fetches = f.batch(&[ev(8, FaultKind::WriteProtect, true)]);
        assert_eq!(fetches.len(), 1);
        assert!(fetches[0].write);
        f.pager()
            .complete_fetch(8, PageState::Exclusive)
            .expect("upgrade");
        // Unprotect (wakes the writer), then CONTINUE finds the PTE present: wake again.
        assert_eq!(
            f.ops.take(),
            vec![
                Op::Protect { page: 8, on: false },
                Op::Continue { page: 8, wp: false },
                Op::Wake { page: 8 }
            ]
        );
    }

    #[test]
    fn invalidation_notifies_watchers() {
        let f = Fixture::new(PageState::Exclusive);
        let a = Arc::new(WakeSignal::new());
        f.pager().watch_page(2, &a).expect("watch");
        f.pager()
            .set_state(2, PageState::Invalid)
            .expect("invalidate");
        assert!(a.is_notified());
        assert_eq!(f.pages.state(2), Some(PageState::Invalid));
    }

    #[test]
    fn fault_outside_memory_is_woken_and_counted() {
        let f = Fixture::new(PageState::Exclusive);
        f.batch(&[ev(16, FaultKind::Minor, false)]);
        assert_eq!(f.ops.take(), vec![Op::Wake { page: 16 }]);
        assert_eq!(f.stats.snapshot().errors, 1);
        assert!(matches!(
            f.pager().drop_page(16),
            Err(MemoryError::PageOutOfRange {
                page: 16,
                pages: 16
            })
        ));
    }
}
