//! Futexes between the program's threads, on any VP of any node.
//!
//! One wait list, under one lock, holds every waiting thread with the word it waits on
//! (its logical address: the program has one address space). A wait checks the word
//! and queues itself under the lock, so a wake that follows the change of the word
//! cannot miss it; wakers take waiters off the list under the lock and wake them after
//! it ([`crate::sched::wake`]). A waiter that its deadline woke finds itself still on the
//! list and leaves with ETIMEDOUT; one a waker took off returns 0, so no wake is lost.
//! A signal sent to a waiter wakes it and the wait ends with EINTR. Not yet: PI
//! futexes, a hashed list (one lock for
//! every futex of the program is simple and correct; issue 13 measures it).

use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use guest::linux_abi::errno::{EAGAIN, EINTR, EINVAL, ENOSYS, ETIMEDOUT};
use guest::linux_abi::layout::timespec_ns;

use super::{time, user, SysResult};
use crate::sched::{self, Thread};
use crate::spinlock::RawSpinLock;
use crate::sync::PageAligned;

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAKE_OP: u64 = 5;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;
const FUTEX_BITSET_MATCH_ANY: u32 = u32::MAX;
const CLOCK_REALTIME: u64 = 0;
const CLOCK_MONOTONIC: u64 = 1;

struct WaitList {
    lock: RawSpinLock,
    head: AtomicPtr<Thread>,
}

static WAITERS: PageAligned<WaitList> = PageAligned(WaitList {
    lock: RawSpinLock::new(),
    head: AtomicPtr::new(null_mut()),
});

/// The futex word at `uaddr` (checked: aligned, in the program's memory).
fn word(uaddr: u64) -> Result<&'static AtomicU32, i64> {
    user::check(uaddr, 4)?;
    kernel_word(uaddr)
}

/// A futex word anywhere in logical memory, the kernel's own included (a pipe's change
/// counter); only aligned.
fn kernel_word(uaddr: u64) -> Result<&'static AtomicU32, i64> {
    if uaddr % 4 != 0 || uaddr < vima::layout::PAGE_SIZE {
        return Err(EINVAL);
    }
    // SAFETY: the address is 4-byte aligned and in logical memory, mapped read/write for
    // the whole life of the virtual server; the program may change it at any time, which
    // is what an atomic is for.
    Ok(unsafe { AtomicU32::from_ptr(uaddr as *mut u32) })
}

/// An `int` argument: the low 32 bits of its register, as Linux reads it.
fn int(reg: u64) -> u32 {
    (reg & 0xffff_ffff) as u32
}

/// `futex(uaddr, op, val, timeout | val2, uaddr2, val3)`.
pub fn futex(a: &[u64; 6]) -> SysResult {
    let (uaddr, op, val) = (a[0], a[1], int(a[2]));
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    match cmd {
        FUTEX_WAIT => {
            let deadline = relative_deadline(a[3])?;
            wait(uaddr, val, FUTEX_BITSET_MATCH_ANY, deadline)
        }
        FUTEX_WAIT_BITSET => {
            let bitset = int(a[5]);
            if bitset == 0 {
                return Err(EINVAL);
            }
            let clock = if op & FUTEX_CLOCK_REALTIME != 0 {
                CLOCK_REALTIME
            } else {
                CLOCK_MONOTONIC
            };
            let deadline = absolute_deadline(a[3], clock)?;
            wait(uaddr, val, bitset, deadline)
        }
        FUTEX_WAKE => wake(uaddr, val, FUTEX_BITSET_MATCH_ANY),
        FUTEX_WAKE_BITSET => {
            let bitset = int(a[5]);
            if bitset == 0 {
                return Err(EINVAL);
            }
            wake(uaddr, val, bitset)
        }
        FUTEX_REQUEUE => requeue(uaddr, val, int(a[3]), a[4], None),
        FUTEX_CMP_REQUEUE => requeue(uaddr, val, int(a[3]), a[4], Some(int(a[5]))),
        FUTEX_WAKE_OP => wake_op(uaddr, val, int(a[3]), a[4], int(a[5])),
        _ => Err(ENOSYS),
    }
}

/// A relative timeout (FUTEX_WAIT: CLOCK_MONOTONIC) as a TSC deadline.
fn relative_deadline(timeout: u64) -> Result<Option<u64>, i64> {
    if timeout == 0 {
        return Ok(None);
    }
    let ns = read_timespec(timeout)?;
    let now = time::since_start_ns();
    Ok(Some(time::monotonic_to_tsc(now.saturating_add(ns))))
}

/// An absolute timeout on `clock` as a TSC deadline.
fn absolute_deadline(timeout: u64, clock: u64) -> Result<Option<u64>, i64> {
    if timeout == 0 {
        return Ok(None);
    }
    let at = read_timespec(timeout)?;
    let left = at.saturating_sub(time::now_ns(clock)?);
    let now = time::since_start_ns();
    Ok(Some(time::monotonic_to_tsc(now.saturating_add(left))))
}

fn read_timespec(addr: u64) -> Result<u64, i64> {
    let mut b = [0u8; 16];
    user::read(addr, &mut b)?;
    timespec_ns(b).ok_or(EINVAL)
}

fn wait(uaddr: u64, val: u32, bitset: u32, deadline: Option<u64>) -> SysResult {
    wait_at(word(uaddr)?, uaddr, val, bitset, deadline)
}

fn wait_at(
    word: &AtomicU32,
    uaddr: u64,
    val: u32,
    bitset: u32,
    deadline: Option<u64>,
) -> SysResult {
    let me = sched::current();
    WAITERS.lock.lock();
    if word.load(Ordering::SeqCst) != val {
        WAITERS.lock.unlock();
        return Err(EAGAIN);
    }
    me.futex_addr.store(uaddr, Ordering::Relaxed);
    me.futex_bitset.store(bitset, Ordering::Relaxed);
    me.futex_queued.store(1, Ordering::Relaxed);
    me.futex_next
        .store(WAITERS.head.load(Ordering::Relaxed), Ordering::Relaxed);
    WAITERS
        .head
        .store(core::ptr::from_ref(me).cast_mut(), Ordering::Relaxed);
    sched::prepare_to_sleep();
    // A signal sent before the thread was SLEEPING found nothing to wake: look for it
    // now (the sender sets the pending bit before it wakes; one of the two sees the
    // other).
    core::sync::atomic::fence(Ordering::SeqCst);
    if super::signals::signal_pending() {
        unlink(me);
        WAITERS.lock.unlock();
        sched::cancel_sleep();
        return Err(EINTR);
    }
    WAITERS.lock.unlock();
    if let Some(deadline) = deadline {
        sched::arm_deadline(deadline);
    }
    sched::schedule();
    sched::disarm_deadline();
    WAITERS.lock.lock();
    let still_waiting = me.futex_queued.load(Ordering::Relaxed) != 0;
    if still_waiting {
        unlink(me);
    }
    WAITERS.lock.unlock();
    if still_waiting {
        // A signal sent to the thread woke it; otherwise only a deadline (or a wake-up
        // that raced with it and lost) ends a wait without a waker taking it off.
        if super::signals::signal_pending() {
            return Err(EINTR);
        }
        return Err(ETIMEDOUT);
    }
    Ok(0)
}

/// Takes `thread` off the wait list; the lock is held.
fn unlink(thread: &Thread) {
    let target = core::ptr::from_ref(thread).cast_mut();
    let mut link = &WAITERS.head;
    loop {
        let at = link.load(Ordering::Relaxed);
        if at.is_null() {
            break;
        }
        // SAFETY: threads on the wait list are asleep in `wait`, so allocated.
        let node = unsafe { &*at };
        if at == target {
            link.store(node.futex_next.load(Ordering::Relaxed), Ordering::Relaxed);
            break;
        }
        link = &node.futex_next;
    }
    thread.futex_queued.store(0, Ordering::Relaxed);
}

/// Takes up to `count` waiters on `uaddr` (whose bitset meets `bitset`) off the list;
/// the lock is held. Returns them linked through `futex_next`.
fn take(uaddr: u64, count: u32, bitset: u32, taken: &mut *mut Thread) -> u32 {
    let mut n = 0;
    let mut link = &WAITERS.head;
    while n < count {
        let at = link.load(Ordering::Relaxed);
        if at.is_null() {
            break;
        }
        // SAFETY: as in `unlink`.
        let thread = unsafe { &*at };
        let next = thread.futex_next.load(Ordering::Relaxed);
        let matches = thread.futex_addr.load(Ordering::Relaxed) == uaddr
            && thread.futex_bitset.load(Ordering::Relaxed) & bitset != 0;
        if matches {
            link.store(next, Ordering::Relaxed);
            thread.futex_queued.store(0, Ordering::Relaxed);
            thread.futex_next.store(*taken, Ordering::Relaxed);
            *taken = at;
            n += 1;
        } else {
            link = &thread.futex_next;
        }
    }
    n
}

/// Wakes the threads `take` returned, after the lock is released.
fn wake_all(mut taken: *mut Thread) {
    while !taken.is_null() {
        // SAFETY: a taken thread stays asleep (so allocated) until `sched::wake` queues
        // it; its link is read before that.
        let thread: &'static Thread = unsafe { &*taken };
        taken = thread.futex_next.load(Ordering::Relaxed);
        sched::wake(thread);
    }
}

fn wake(uaddr: u64, count: u32, bitset: u32) -> SysResult {
    word(uaddr)?;
    wake_at(uaddr, count, bitset)
}

fn wake_at(uaddr: u64, count: u32, bitset: u32) -> SysResult {
    let mut taken = null_mut();
    WAITERS.lock.lock();
    let n = take(uaddr, count, bitset, &mut taken);
    WAITERS.lock.unlock();
    wake_all(taken);
    Ok(u64::from(n))
}

fn requeue(uaddr: u64, wake: u32, move_count: u32, uaddr2: u64, expect: Option<u32>) -> SysResult {
    let word1 = word(uaddr)?;
    word(uaddr2)?;
    let mut taken = null_mut();
    WAITERS.lock.lock();
    if expect.is_some_and(|v| word1.load(Ordering::SeqCst) != v) {
        WAITERS.lock.unlock();
        return Err(EAGAIN);
    }
    let woken = take(uaddr, wake, FUTEX_BITSET_MATCH_ANY, &mut taken);
    let mut moved = 0;
    let mut at = WAITERS.head.load(Ordering::Relaxed);
    while !at.is_null() && moved < move_count {
        // SAFETY: as in `unlink`.
        let thread = unsafe { &*at };
        if thread.futex_addr.load(Ordering::Relaxed) == uaddr {
            thread.futex_addr.store(uaddr2, Ordering::Relaxed);
            moved += 1;
        }
        at = thread.futex_next.load(Ordering::Relaxed);
    }
    WAITERS.lock.unlock();
    wake_all(taken);
    // FUTEX_REQUEUE returns the woken; FUTEX_CMP_REQUEUE woken plus requeued.
    Ok(u64::from(woken)
        + if expect.is_some() {
            u64::from(moved)
        } else {
            0
        })
}

/// FUTEX_WAKE_OP: `*uaddr2 = op(*uaddr2, oparg)`; wake `count` on `uaddr`, and
/// `count2` on `uaddr2` if the old value compares as `cmp` says.
fn wake_op(uaddr: u64, count: u32, count2: u32, uaddr2: u64, encoded: u32) -> SysResult {
    word(uaddr)?;
    let word2 = word(uaddr2)?;
    let op = (encoded >> 28) & 7;
    let shift = encoded & (8 << 28) != 0;
    let cmp = (encoded >> 24) & 15;
    // Both arguments are 12-bit signed fields, as Linux reads them.
    let sign_extend = |field: u32| ((field << 20) as i32) >> 20;
    let mut oparg = sign_extend((encoded >> 12) & 0xfff) as u32;
    let cmparg = sign_extend(encoded & 0xfff);
    if shift {
        if oparg > 31 {
            return Err(EINVAL);
        }
        oparg = 1 << oparg;
    }
    let mut taken = null_mut();
    WAITERS.lock.lock();
    let apply = |old: u32| match op {
        0 => Some(oparg),
        1 => Some(old.wrapping_add(oparg)),
        2 => Some(old | oparg),
        3 => Some(old & !oparg),
        4 => Some(old ^ oparg),
        _ => None,
    };
    let mut old = word2.load(Ordering::SeqCst);
    let result = loop {
        let Some(new) = apply(old) else {
            break Err(ENOSYS);
        };
        match word2.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => break Ok(old),
            Err(now) => old = now,
        }
    };
    let old = match result {
        Ok(old) => old,
        Err(e) => {
            WAITERS.lock.unlock();
            return Err(e);
        }
    };
    let mut n = take(uaddr, count, FUTEX_BITSET_MATCH_ANY, &mut taken);
    let (o, c) = (old as i32, cmparg);
    let hit = match cmp {
        0 => o == c,
        1 => o != c,
        2 => o < c,
        3 => o <= c,
        4 => o > c,
        5 => o >= c,
        _ => false,
    };
    if hit {
        n += take(uaddr2, count2, FUTEX_BITSET_MATCH_ANY, &mut taken);
    }
    WAITERS.lock.unlock();
    wake_all(taken);
    Ok(u64::from(n))
}

/// Waits on the kernel's own futex word at `addr` while it holds `val` (a pipe's change
/// counter): returns when woken, or at once if it changed; false when a signal for the
/// caller ended the wait (the caller's call then ends or restarts).
pub fn wait_on(addr: u64, val: u32) -> bool {
    match kernel_word(addr) {
        Ok(word) => wait_at(word, addr, val, FUTEX_BITSET_MATCH_ANY, None) != Err(EINTR),
        Err(_) => true,
    }
}

/// Wakes every waiter on the kernel's futex word at `addr`.
pub fn wake_on(addr: u64) {
    let _ = wake_at(addr, u32::MAX, FUTEX_BITSET_MATCH_ANY);
}

/// Zeroes the thread id word at `addr` and wakes one waiter on it (a thread's exit with
/// CLONE_CHILD_CLEARTID / set_tid_address: how pthread_join waits).
pub fn clear_and_wake(addr: u64) {
    if addr == 0 {
        return;
    }
    if let Ok(word) = word(addr) {
        word.store(0, Ordering::SeqCst);
        let _ = wake(addr, 1, FUTEX_BITSET_MATCH_ANY);
    }
}
