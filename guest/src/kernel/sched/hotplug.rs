//! VPs that leave and come back while the program runs (paper 4.10, docs/api.md).
//!
//! The VMM raises [`VECTOR_CONFIG`] on a VP whose state changes. The interrupt only marks
//! the VP (`config_pending`); the VP's current thread gives the VP up at its next
//! preemption point, and the idle context applies the configuration it reads with
//! `ConfigRead`:
//!
//! - **Offline.** The VP leaves the online mask, marks its run queue offline (under the
//!   queue lock, so an enqueue from then on goes elsewhere), hands its queued threads and
//!   its timer list to online VPs, and acknowledges with `ConfigAck`, in which the VMM
//!   parks it. That is phase 1: nothing runs on the VP when the VMM takes it.
//! - **Online.** `ConfigAck` returns with a later epoch (phase 2: the VMM made the VP
//!   online before letting it go); the VP reads the table again, joins the mask, and
//!   acknowledges; other VPs steal from and place on it from then on.
//!
//! - **Memory.** A node's memory range that got shorter is taken from the page allocator
//!   if nothing above the new end is in use (the pages given up are discarded, so they
//!   are zero and back with the host), else the VP refuses in its `ConfigAck` and the VMM
//!   takes the change back; a range that got longer goes to the allocator again.
//!
//! A thread whose affinity names only offline VPs may run anywhere online, as Linux
//! breaks the affinity of a task whose CPUs all went offline.

use core::ptr::null_mut;
use core::sync::atomic::{AtomicU64, Ordering};

use vima::call::CONFIG_REFUSED_MEMORY_IN_USE;
use vima::config::Config;
use vima::layout::{MAX_NODES, MAX_VPS};

use super::{enqueue, queue, vp_count, Thread, NO_VP};
use crate::spinlock::SpinLock;
use crate::sync::PageAligned;
use crate::vima_calls;

/// The online VPs, a bit each (every VP at boot).
static ONLINE: PageAligned<AtomicU64> = PageAligned(AtomicU64::new(u64::MAX));

/// Where a VP reads the configuration it applies.
static TABLE: SpinLock<[u8; 8192]> = SpinLock::new([0; 8192]);

/// The end of each node's memory range as the page allocator has it (`None` until the
/// first change: the boot table's).
static MEMORY_ENDS: SpinLock<Option<[u64; MAX_NODES]>> = SpinLock::new(None);

/// What a VP reads from the table.
struct TableState {
    epoch: u32,
    online: bool,
    /// The end of each node's memory range (0: none).
    memory_ends: [u64; MAX_NODES],
}

fn memory_ends(config: &Config<'_>) -> [u64; MAX_NODES] {
    let mut ends = [0; MAX_NODES];
    for range in config.mem_ranges() {
        if let Some(end) = ends.get_mut(range.node_id as usize) {
            *end = range.base + range.size;
        }
    }
    ends
}

/// Every VP of the server, a bit each.
fn all_vps() -> u64 {
    match vp_count() {
        n if n as usize >= MAX_VPS => u64::MAX,
        n => (1u64 << n) - 1,
    }
}

/// The online VPs, a bit each.
pub fn online() -> u64 {
    ONLINE.0.load(Ordering::Acquire) & all_vps()
}

/// True when VP `vp` is online.
pub fn is_online(vp: u32) -> bool {
    vp < 64 && online() & (1u64 << vp) != 0
}

/// The VPs of `mask` that are online; all online VPs when none of `mask` is.
pub fn online_within(mask: u64) -> u64 {
    match mask & online() {
        0 => online(),
        some => some,
    }
}

/// The configuration interrupt, on this VP: look at the table at the next chance.
pub fn on_config_interrupt(vp: u32) {
    let q = queue(vp);
    q.config_pending.store(1, Ordering::Release);
    q.resched.store(1, Ordering::Relaxed);
}

/// True when this VP has a configuration to apply: its thread should give it up.
pub fn config_pending(vp: u32) -> bool {
    queue(vp).config_pending.load(Ordering::Acquire) != 0
}

/// This VP's state in the current table, the table's epoch and memory.
fn read_state(vp: u32) -> TableState {
    let mut table = TABLE.lock();
    let size = match vima_calls::config_read(&mut table[..]) {
        Ok(size) => size,
        Err(err) => crate::machine::fail(1, format_args!("VP {vp}: {err}")),
    };
    let len = usize::try_from(size).unwrap_or(usize::MAX).min(table.len());
    match Config::parse(&table[..len]) {
        Ok(config) => TableState {
            epoch: config.header().epoch,
            online: config.vp(vp as usize).is_some_and(|d| d.is_online()),
            memory_ends: memory_ends(&config),
        },
        Err(err) => crate::machine::fail(1, format_args!("VP {vp}: bad configuration {err:?}")),
    }
}

/// Applies the configuration on VP `vp`, in its idle context (no thread of the program
/// runs here). Returns once the VP is online in the configuration it acknowledged.
pub fn apply(vp: u32) {
    let q = queue(vp);
    let bit = 1u64 << (vp % 64);
    loop {
        q.config_pending.store(0, Ordering::Release);
        let TableState {
            epoch,
            online,
            memory_ends,
        } = read_state(vp);
        let refused = resize_memory(&memory_ends);
        if online {
            q.lock.lock();
            q.offline.store(0, Ordering::Relaxed);
            q.lock.unlock();
            ONLINE.0.fetch_or(bit, Ordering::AcqRel);
        } else {
            ONLINE.0.fetch_and(!bit, Ordering::AcqRel);
            hand_over(vp);
        }
        match vima_calls::config_ack(epoch, refused) {
            // Online in the epoch it acknowledged, and nothing newer: done.
            Ok(now) if now == epoch && online => return,
            // Back from being parked, or the table changed meanwhile: read it again.
            Ok(_) => {}
            Err(err) => crate::machine::fail(1, format_args!("VP {vp}: {err}")),
        }
    }
}

/// Brings the page allocator's node ranges to the table's `ends`; returns 0, or
/// [`CONFIG_REFUSED_MEMORY_IN_USE`] when a range could not shrink (it keeps its size).
fn resize_memory(ends: &[u64; MAX_NODES]) -> u64 {
    let mut current = MEMORY_ENDS.lock();
    let current = current.get_or_insert_with(|| memory_ends(&crate::machine::kernel().config));
    let mut refused = 0;
    for (node, (now, wanted)) in (0u32..).zip(current.iter_mut().zip(ends)) {
        if *now == *wanted || *now == 0 || *wanted == 0 {
            continue;
        }
        match crate::alloc::resize_node(node, *now, *wanted) {
            Ok(()) => *now = *wanted,
            Err(_) => refused = CONFIG_REFUSED_MEMORY_IN_USE,
        }
    }
    refused
}

/// Marks `vp`'s queue offline and gives its queued threads and sleepers' deadlines to
/// online VPs.
fn hand_over(vp: u32) {
    let q = queue(vp);
    q.lock.lock();
    q.offline.store(1, Ordering::Relaxed);
    let mut at = q.head.swap(null_mut(), Ordering::Relaxed);
    q.tail.store(null_mut(), Ordering::Relaxed);
    q.len.store(0, Ordering::Relaxed);
    q.lock.unlock();
    while !at.is_null() {
        // SAFETY: queued threads stay allocated; this list was detached under the lock,
        // so nothing else walks it.
        let thread: &'static Thread = unsafe { &*at };
        at = thread.rq_next.load(Ordering::Relaxed);
        // `enqueue` sees the queue offline and places the thread on an online VP.
        enqueue(thread, vp);
    }
    move_timers(vp);
}

/// Moves `vp`'s timer list to the first online VP. A thread disarming meanwhile finds
/// its `timer_vp` changed and looks on the new list (`disarm_deadline`).
fn move_timers(vp: u32) {
    let Some(target) = (0..vp_count()).find(|&v| v != vp && is_online(v)) else {
        return;
    };
    let from = queue(vp);
    let to = queue(target);
    from.timer_lock.lock();
    let mut at = from.timers.swap(null_mut(), Ordering::Relaxed);
    while !at.is_null() {
        // SAFETY: threads on a timer list are asleep or about to be, so allocated; the
        // list's lock is held.
        let thread: &'static Thread = unsafe { &*at };
        at = thread.timer_next.load(Ordering::Relaxed);
        to.timer_lock.lock();
        thread
            .timer_next
            .store(to.timers.load(Ordering::Relaxed), Ordering::Relaxed);
        thread.timer_vp.store(target, Ordering::Relaxed);
        to.timers
            .store(core::ptr::from_ref(thread).cast_mut(), Ordering::Relaxed);
        to.timer_lock.unlock();
    }
    from.timer_lock.unlock();
    debug_assert_ne!(target, NO_VP);
}
