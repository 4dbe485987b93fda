//! Building blocks for data shared between VPs: a page-aligned wrapper (coherence works
//! page by page, so data written from different nodes should not share a page) and a
//! write-once cell (VP 0 publishes the configuration and the prepared workload before it
//! starts the other VPs, which only read them).

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ops::Deref;
use core::sync::atomic::{AtomicU8, Ordering};

/// `T` on pages of its own: nothing else shares its first or last page.
#[repr(C, align(4096))]
#[derive(Debug, Default)]
pub struct PageAligned<T>(pub T);

impl<T> Deref for PageAligned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// A value set once and then only read, from any VP.
pub struct Once<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, before `state` becomes READY with release ordering,
// and only shared references are handed out after an acquire load sees READY; so sharing
// a `Once<T>` shares `&T` (needs `T: Sync`) and moves the value in from one VP (needs
// `T: Send`).
unsafe impl<T: Send + Sync> Sync for Once<T> {}

impl<T> Once<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Stores `value` unless the cell was set already (then `value` comes back).
    pub fn set(&self, value: T) -> Result<&T, T> {
        if self
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(value);
        }
        // SAFETY: winning the EMPTY -> WRITING exchange makes this the only writer, and no
        // reader looks at the value before READY.
        unsafe { (*self.value.get()).write(value) };
        self.state.store(READY, Ordering::Release);
        // SAFETY: written just above, never written again.
        Ok(unsafe { (*self.value.get()).assume_init_ref() })
    }

    /// The value, once set.
    pub fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) == READY {
            // SAFETY: READY is stored (release) only after the value was written, and the
            // value is never written again.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }
}

impl<T> core::fmt::Debug for Once<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Once")
            .field("ready", &(self.state.load(Ordering::Relaxed) == READY))
            .finish()
    }
}
