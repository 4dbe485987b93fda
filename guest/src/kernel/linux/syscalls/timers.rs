//! The program's real-time interval timer (`alarm`, `setitimer`/`getitimer` of
//! ITIMER_REAL) and `pause`. One timer for the program, as Linux has one per process:
//! its deadline and interval in TSC ticks on a page of their own. Every VP's tick
//! (100 Hz) looks at the deadline, and the VP that finds it passed (one wins the
//! compare-exchange) re-arms it and sends SIGALRM to the program: its main thread, or
//! the thread the tick interrupted if the main thread has ended. So SIGALRM comes up to
//! a tick (10 ms) late, never early.

use core::sync::atomic::{AtomicU64, Ordering};

use guest::linux_abi::errno::{EINTR, EINVAL};
use guest::linux_abi::layout::{alarm_seconds, itimerval, itimerval_ns, ITIMERVAL_BYTES};

use super::identity::PID;
use super::{signals, user, SysResult};
use crate::clock::{ns_to_tsc, tsc, tsc_to_ns};
use crate::sched;
use crate::sync::PageAligned;

/// ITIMER_REAL.
const ITIMER_REAL: u64 = 0;
/// SIGALRM.
const SIGALRM: u64 = 14;

/// The deadline (TSC; 0: disarmed) and the interval (TSC ticks; 0: one-shot).
static TIMER: PageAligned<[AtomicU64; 2]> = PageAligned([AtomicU64::new(0), AtomicU64::new(0)]);

/// Arms the timer (`value_ns` 0 disarms it); returns the old (interval, time left) in ns.
fn set(interval_ns: u64, value_ns: u64) -> (u64, u64) {
    let now = tsc();
    let deadline = if value_ns == 0 {
        0
    } else {
        now.saturating_add(ns_to_tsc(value_ns)).max(1)
    };
    let old_interval = TIMER[1].swap(ns_to_tsc(interval_ns), Ordering::SeqCst);
    let old_deadline = TIMER[0].swap(deadline, Ordering::SeqCst);
    (tsc_to_ns(old_interval), left_ns(old_deadline, now))
}

fn left_ns(deadline: u64, now: u64) -> u64 {
    if deadline == 0 {
        0
    } else {
        tsc_to_ns(deadline.saturating_sub(now)).max(1)
    }
}

/// At every VP's tick: sends SIGALRM once the deadline passed, and re-arms.
pub fn at_tick() {
    let deadline = TIMER[0].load(Ordering::Relaxed);
    if deadline == 0 {
        return;
    }
    let now = tsc();
    if now < deadline {
        return;
    }
    let interval = TIMER[1].load(Ordering::Relaxed);
    // Missed periods are not made up (an overrun), as Linux's itimers; 0 for a one-shot.
    let next = (now - deadline).checked_div(interval).map_or(0, |missed| {
        deadline.saturating_add((missed + 1).saturating_mul(interval))
    });
    if TIMER[0]
        .compare_exchange(deadline, next, Ordering::SeqCst, Ordering::Relaxed)
        .is_ok()
    {
        send_alarm();
    }
}

fn send_alarm() {
    let main = u32::try_from(PID).unwrap_or(1);
    if sched::with_thread(main, |t| signals::send_to(t, SIGALRM)).is_none() {
        let me = sched::current();
        if me.id() != 0 {
            signals::send_to(me, SIGALRM);
        }
    }
}

/// `alarm(seconds)`: SIGALRM after `seconds` (0: none); the seconds the previous alarm
/// had left.
pub fn alarm(seconds: u64) -> SysResult {
    let ns = (seconds & 0xffff_ffff).saturating_mul(1_000_000_000);
    let (_, left) = set(0, ns);
    Ok(alarm_seconds(left))
}

/// `setitimer(which, new, old)`: ITIMER_REAL; the others are EINVAL.
pub fn setitimer(which: u64, new: u64, old: u64) -> SysResult {
    if which != ITIMER_REAL {
        return Err(EINVAL);
    }
    let (interval, value) = if new == 0 {
        (0, 0)
    } else {
        let mut b = [0u8; ITIMERVAL_BYTES];
        user::read(new, &mut b)?;
        itimerval_ns(&b).ok_or(EINVAL)?
    };
    if old != 0 {
        user::check(old, ITIMERVAL_BYTES as u64)?;
    }
    let (old_interval, old_left) = set(interval, value);
    if old != 0 {
        user::write(old, &itimerval(old_interval, old_left))?;
    }
    Ok(0)
}

/// `getitimer(which, value)`.
pub fn getitimer(which: u64, value: u64) -> SysResult {
    if which != ITIMER_REAL {
        return Err(EINVAL);
    }
    let interval = tsc_to_ns(TIMER[1].load(Ordering::SeqCst));
    let left = left_ns(TIMER[0].load(Ordering::SeqCst), tsc());
    user::write(value, &itimerval(interval, left))?;
    Ok(0)
}

/// `pause()`: sleeps until a signal's handler has run (EINTR) or its default action
/// ends the program.
pub fn pause() -> SysResult {
    signals::wait_for_signal();
    Err(EINTR)
}
