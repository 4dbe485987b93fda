//! Time without exits: every clock is the time stamp counter (guest TSC = host TSC),
//! scaled with the configuration's `tsc_khz`. CLOCK_REALTIME is the host's real time of
//! node 0, read by the VMM together with a TSC value (`ProgramHeader::realtime_*`).

use guest::linux_abi::errno::{EINTR, EINVAL};
use guest::linux_abi::layout::{timespec, timespec_ns, two_words};

use super::{user, SysResult};
use crate::clock;
use crate::linux::program;

const CLOCK_REALTIME: u64 = 0;
const CLOCK_MONOTONIC: u64 = 1;
const CLOCK_PROCESS_CPUTIME_ID: u64 = 2;
const CLOCK_THREAD_CPUTIME_ID: u64 = 3;
const CLOCK_MONOTONIC_RAW: u64 = 4;
const CLOCK_REALTIME_COARSE: u64 = 5;
const CLOCK_MONOTONIC_COARSE: u64 = 6;
const CLOCK_BOOTTIME: u64 = 7;

/// Nanoseconds since the VMM read the real time: CLOCK_MONOTONIC.
pub fn since_start_ns() -> u64 {
    let ticks = clock::tsc().wrapping_sub(program().header().realtime_tsc);
    clock::tsc_to_ns(ticks)
}

/// CLOCK_MONOTONIC `ns` as a TSC deadline.
pub fn monotonic_to_tsc(ns: u64) -> u64 {
    program()
        .header()
        .realtime_tsc
        .saturating_add(clock::ns_to_tsc(ns))
}

/// Nanoseconds of `clock` now (EINVAL for a clock this kernel does not have).
pub fn now_ns(clock: u64) -> Result<u64, i64> {
    clock_ns(clock)
}

fn clock_ns(clock: u64) -> Result<u64, i64> {
    let mono = since_start_ns();
    match clock {
        CLOCK_REALTIME | CLOCK_REALTIME_COARSE => {
            Ok(program().header().realtime_ns.saturating_add(mono))
        }
        CLOCK_MONOTONIC | CLOCK_MONOTONIC_RAW | CLOCK_MONOTONIC_COARSE | CLOCK_BOOTTIME => Ok(mono),
        // Time on a VP, counted at every switch (sched).
        CLOCK_PROCESS_CPUTIME_ID => Ok(clock::tsc_to_ns(crate::sched::program_cpu_ticks())),
        CLOCK_THREAD_CPUTIME_ID => Ok(clock::tsc_to_ns(crate::sched::thread_cpu_ticks())),
        _ => Err(EINVAL),
    }
}

/// `clock_gettime(clock, ts)`.
pub fn clock_gettime(clock: u64, ts: u64) -> SysResult {
    let ns = clock_ns(clock)?;
    user::write(ts, &timespec(ns))?;
    Ok(0)
}

/// `clock_getres(clock, res)`: nanosecond resolution.
pub fn clock_getres(clock: u64, res: u64) -> SysResult {
    clock_ns(clock)?;
    if res != 0 {
        user::write(res, &timespec(1))?;
    }
    Ok(0)
}

/// `gettimeofday(tv, tz)`.
pub fn gettimeofday(tv: u64) -> SysResult {
    if tv != 0 {
        let ns = clock_ns(CLOCK_REALTIME)?;
        user::write(
            tv,
            &two_words(ns / 1_000_000_000, ns % 1_000_000_000 / 1000),
        )?;
    }
    Ok(0)
}

/// `time(t)`.
pub fn time(t: u64) -> SysResult {
    let secs = clock_ns(CLOCK_REALTIME)? / 1_000_000_000;
    if t != 0 {
        user::write(t, &secs.to_le_bytes())?;
    }
    Ok(secs)
}

/// `getrusage(who, usage)`: user time is the CPU time on VPs (RUSAGE_SELF: the program,
/// RUSAGE_THREAD: the caller), system time 0 (the kernel's time is not told apart), the
/// rest 0.
pub fn getrusage(who: u64, usage: u64) -> SysResult {
    const RUSAGE_SELF: u64 = 0;
    const RUSAGE_THREAD: u64 = 1;
    const RUSAGE_CHILDREN: u64 = -1i64 as u64;
    let ticks = match who {
        RUSAGE_SELF => crate::sched::program_cpu_ticks(),
        RUSAGE_THREAD => crate::sched::thread_cpu_ticks(),
        RUSAGE_CHILDREN => 0,
        _ => return Err(EINVAL),
    };
    let ns = clock::tsc_to_ns(ticks);
    let mut buf = [0u8; 144];
    buf[..16].copy_from_slice(&two_words(ns / 1_000_000_000, ns % 1_000_000_000 / 1000));
    user::write(usage, &buf)?;
    Ok(0)
}

/// `nanosleep(req, rem)`.
pub fn nanosleep(req: u64, rem: u64) -> SysResult {
    clock_nanosleep(CLOCK_MONOTONIC, 0, req, rem)
}

/// `clock_nanosleep(clock, flags, req, rem)`: the thread sleeps in the scheduler until
/// its deadline (the VP runs other threads or waits in the VMM, using no CPU). A signal
/// for the thread ends the sleep with EINTR (after its handler, as Linux never restarts
/// a sleep); a relative sleep then writes the time left to `rem` if it is not null.
pub fn clock_nanosleep(clock: u64, flags: u64, req: u64, rem: u64) -> SysResult {
    const TIMER_ABSTIME: u64 = 1;
    let mut b = [0u8; 16];
    user::read(req, &mut b)?;
    let ns = timespec_ns(b).ok_or(EINVAL)?;
    let now = clock_ns(clock)?;
    let wait = if flags & TIMER_ABSTIME != 0 {
        ns.saturating_sub(now)
    } else {
        ns
    };
    let end_ns = since_start_ns().saturating_add(wait);
    let slept =
        crate::sched::sleep_until_unless(monotonic_to_tsc(end_ns), super::signals::signal_pending);
    if slept {
        return Ok(0);
    }
    if flags & TIMER_ABSTIME == 0 && rem != 0 {
        user::write(rem, &timespec(end_ns.saturating_sub(since_start_ns())))?;
    }
    Err(EINTR)
}
