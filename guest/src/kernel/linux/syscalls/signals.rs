//! Signals: handlers and masks are accepted and reported back as empty (handlers are
//! not called yet, docs/linux-abi.md); a fault takes its signal's default action
//! ([`crate::linux::fault`]).

use guest::linux_abi::errno::EINVAL;

use super::{user, SysResult};

/// Bytes of the kernel's `struct sigaction` on x86-64.
const SIGACTION_BYTES: usize = 32;

/// `rt_sigaction(sig, act, oldact, sigsetsize)`.
pub fn rt_sigaction(sig: u64, oldact: u64) -> SysResult {
    if sig == 0 || sig > 64 {
        return Err(EINVAL);
    }
    if oldact != 0 {
        user::write(oldact, &[0u8; SIGACTION_BYTES])?;
    }
    Ok(0)
}

/// `rt_sigprocmask(how, set, oldset, sigsetsize)`.
pub fn rt_sigprocmask(oldset: u64, sigsetsize: u64) -> SysResult {
    if sigsetsize != 8 {
        return Err(EINVAL);
    }
    if oldset != 0 {
        user::write(oldset, &0u64.to_le_bytes())?;
    }
    Ok(0)
}

/// SIGILL.
pub const SIGILL: u64 = 4;
/// SIGTRAP.
pub const SIGTRAP: u64 = 5;
/// SIGBUS.
pub const SIGBUS: u64 = 7;
/// SIGFPE.
pub const SIGFPE: u64 = 8;
/// SIGSEGV.
pub const SIGSEGV: u64 = 11;

/// The signal Linux sends for exception `vector`: number, name, and what happened.
pub fn for_exception(vector: u8) -> (u64, &'static str, &'static str) {
    match vector {
        0 => (SIGFPE, "SIGFPE", "integer divide error"),
        1 | 3 => (SIGTRAP, "SIGTRAP", "trace or breakpoint trap"),
        6 => (SIGILL, "SIGILL", "illegal instruction"),
        7 | 16 | 19 => (SIGFPE, "SIGFPE", "floating point exception"),
        12 => (SIGBUS, "SIGBUS", "stack segment fault"),
        17 => (SIGBUS, "SIGBUS", "alignment check"),
        13 => (SIGSEGV, "SIGSEGV", "general protection fault"),
        14 => (SIGSEGV, "SIGSEGV", "segmentation fault"),
        _ => (SIGSEGV, "SIGSEGV", "processor exception"),
    }
}
