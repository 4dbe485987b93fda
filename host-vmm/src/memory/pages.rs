//! Per-page local state: the coherence state of the node's copy, plus what the VMM has
//! done to the page in the guest mapping.
//!
//! One byte per logical page (64 GiB of logical memory is 16 MiB of state), an
//! `AtomicU8` so that hot paths (a DMA-window write checking for watchers) read it without
//! a lock. Every change happens under the page's stripe lock, which also serializes the
//! ioctls that change the page's mapping: a decision ("map it write-protected") and the
//! ioctl that carries it out are atomic with respect to every other page operation.
//!
//! A single node owns every page: all pages start and stay [`PageState::Exclusive`]. The
//! state exists now so the fault path already asks the right question ("may this access
//! be satisfied locally?") and clustering only adds the transitions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::wake::WakeSignal;

/// The node's copy of a logical page (the paper's Invalid / Shared / Exclusive).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PageState {
    /// No valid local copy: an access must fetch the page (never mapped in the guest).
    Invalid = 0,
    /// A read-only replica: mapped write-protected; a write must upgrade through the home.
    Shared = 1,
    /// The one writable copy: every access is satisfied locally.
    Exclusive = 2,
}

impl PageState {
    fn from_bits(bits: u8) -> Self {
        match bits & STATE_MASK {
            0 => PageState::Invalid,
            1 => PageState::Shared,
            _ => PageState::Exclusive,
        }
    }
}

const STATE_MASK: u8 = 0b11;
/// The guest mapping's PTE (or, with no PTE, the kernel's uffd-wp marker) of this page is
/// write-protected by us. Invariant: `Shared` implies `PROTECTED`.
pub(crate) const PROTECTED: u8 = 1 << 2;
/// At least one SpinWait watcher is registered (mirrors a non-empty watcher list).
pub(crate) const WATCHED: u8 = 1 << 3;
/// A fetch is in flight: later faults on the page coalesce into it.
pub(crate) const FETCHING: u8 = 1 << 4;

/// Number of lock stripes: enough that VPs watching different pages rarely share a lock.
const STRIPES: usize = 64;

/// What a stripe lock protects besides the page bytes.
#[derive(Debug, Default)]
pub(crate) struct Stripe {
    /// SpinWait watchers by page index.
    pub watchers: HashMap<u64, Vec<Arc<WakeSignal>>>,
    /// When the first fault of an in-flight fetch was read, by page index.
    pub fetch_started: HashMap<u64, Instant>,
}

/// The state byte of every page and the stripe locks.
#[derive(Debug)]
pub(crate) struct PageTable {
    bits: Box<[AtomicU8]>,
    stripes: Box<[Mutex<Stripe>]>,
}

/// A locked page: the stripe guard plus the page's byte.
pub(crate) struct LockedPage<'a> {
    pub index: u64,
    pub stripe: MutexGuard<'a, Stripe>,
    bits: &'a AtomicU8,
}

impl PageTable {
    /// `pages` pages, all in `initial` state, none protected.
    pub fn new(pages: usize, initial: PageState) -> Self {
        let bits = (0..pages).map(|_| AtomicU8::new(initial as u8)).collect();
        let stripes = (0..STRIPES)
            .map(|_| Mutex::new(Stripe::default()))
            .collect();
        Self { bits, stripes }
    }

    /// Number of pages.
    pub fn len(&self) -> u64 {
        self.bits.len() as u64
    }

    fn byte(&self, page: u64) -> Option<&AtomicU8> {
        usize::try_from(page).ok().and_then(|i| self.bits.get(i))
    }

    /// The page's bits without locking (a snapshot; may change right after).
    pub fn peek(&self, page: u64) -> Option<u8> {
        self.byte(page).map(|b| b.load(Ordering::SeqCst))
    }

    /// The page's state without locking.
    pub fn state(&self, page: u64) -> Option<PageState> {
        self.peek(page).map(PageState::from_bits)
    }

    /// Locks the page's stripe. `None` if the page is out of range.
    pub fn lock(&self, page: u64) -> Option<LockedPage<'_>> {
        let bits = self.byte(page)?;
        // Page indices below 2^64 / STRIPES: the remainder always fits a usize.
        let stripe_index = usize::try_from(page % STRIPES as u64).unwrap_or(0);
        let stripe = self.stripes[stripe_index]
            .lock()
            // The stripe holds plain maps that no panic leaves half-updated.
            .unwrap_or_else(PoisonError::into_inner);
        Some(LockedPage {
            index: page,
            stripe,
            bits,
        })
    }
}

impl LockedPage<'_> {
    /// The page's bits.
    pub fn bits(&self) -> u8 {
        self.bits.load(Ordering::SeqCst)
    }
    /// The page's state.
    pub fn state(&self) -> PageState {
        PageState::from_bits(self.bits())
    }
    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.bits() & flag != 0
    }
    /// Sets flags.
    pub fn set(&self, flag: u8) {
        self.bits.fetch_or(flag, Ordering::SeqCst);
    }
    /// Clears flags.
    pub fn clear(&self, flag: u8) {
        self.bits.fetch_and(!flag, Ordering::SeqCst);
    }
    /// Changes the state, keeping the flags.
    pub fn set_state(&self, state: PageState) {
        let old = self.bits();
        self.bits
            .store((old & !STATE_MASK) | state as u8, Ordering::SeqCst);
    }
    /// Removes and returns every watcher, clearing `WATCHED`.
    pub fn take_watchers(&mut self) -> Vec<Arc<WakeSignal>> {
        self.clear(WATCHED);
        self.stripe.watchers.remove(&self.index).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_flags_are_independent() {
        let table = PageTable::new(8, PageState::Exclusive);
        assert_eq!(table.len(), 8);
        assert_eq!(table.state(3), Some(PageState::Exclusive));
        assert_eq!(table.state(8), None);
        let page = table.lock(3).expect("in range");
        page.set(PROTECTED | FETCHING);
        page.set_state(PageState::Shared);
        assert_eq!(page.state(), PageState::Shared);
        assert!(page.has(PROTECTED) && page.has(FETCHING) && !page.has(WATCHED));
        page.clear(FETCHING);
        page.set_state(PageState::Invalid);
        assert_eq!(page.bits(), PROTECTED);
        drop(page);
        // Neighbours are untouched.
        assert_eq!(table.peek(2), Some(PageState::Exclusive as u8));
        assert_eq!(table.peek(4), Some(PageState::Exclusive as u8));
    }

    #[test]
    fn take_watchers_empties_the_list() {
        let table = PageTable::new(2, PageState::Exclusive);
        let mut page = table.lock(1).expect("in range");
        let a = Arc::new(WakeSignal::new());
        page.stripe.watchers.entry(1).or_default().push(a.clone());
        page.set(WATCHED);
        let taken = page.take_watchers();
        assert_eq!(taken.len(), 1);
        assert!(Arc::ptr_eq(&taken[0], &a));
        assert!(!page.has(WATCHED));
        assert!(page.take_watchers().is_empty());
    }
}
