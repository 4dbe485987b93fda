//! Signals: handlers and masks are accepted and reported back as empty until faults are
//! delivered to the guest (docs/linux-abi.md); a fault now ends the virtual server.

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
