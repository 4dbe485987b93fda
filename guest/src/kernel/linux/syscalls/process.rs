//! The process: the thread pointer and resource limits (threads, exit and futexes are
//! in [`super::threads`] and [`super::futex`]).

use guest::linux_abi::errno::EINVAL;
use guest::linux_abi::layout::two_words;

use super::{user, SysResult};
use crate::linux::STACK_BYTES;

const ARCH_SET_GS: u64 = 0x1001;
const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
const ARCH_GET_GS: u64 = 0x1004;
const RLIMIT_STACK: u64 = 3;
const RLIMIT_NOFILE: u64 = 7;
const RLIM_INFINITY: u64 = u64::MAX;

/// `arch_prctl(code, addr)`: the `fs` base is the program's thread pointer. `gs` is the
/// kernel's (it points at the VP's shared block), so ARCH_SET_GS is refused.
pub fn arch_prctl(code: u64, addr: u64) -> SysResult {
    match code {
        ARCH_SET_FS => {
            // A non-canonical address would fault in wrfsbase.
            if !is_canonical(addr) {
                return Err(guest::linux_abi::errno::EPERM);
            }
            // SAFETY: wrfsbase only changes the fs base, which the kernel never uses; it
            // runs natively at CPL3 (docs/platform.md).
            unsafe {
                core::arch::asm!("wrfsbase {}", in(reg) addr, options(nostack, preserves_flags))
            };
            Ok(0)
        }
        ARCH_GET_FS => {
            user::write(addr, &fs_base().to_le_bytes())?;
            Ok(0)
        }
        ARCH_GET_GS => {
            user::write(addr, &0u64.to_le_bytes())?;
            Ok(0)
        }
        ARCH_SET_GS => Err(EINVAL),
        _ => Err(EINVAL),
    }
}

/// The calling thread's `fs` base.
pub fn fs_base() -> u64 {
    let base: u64;
    // SAFETY: rdfsbase only reads the fs base (native at CPL3).
    unsafe { core::arch::asm!("rdfsbase {}", out(reg) base, options(nostack, preserves_flags)) };
    base
}

/// True for an address x86-64 can hold in a base register.
pub fn is_canonical(addr: u64) -> bool {
    !((1 << 47)..0xffff_8000_0000_0000).contains(&addr)
}

/// `prlimit64(0, resource, new, old)` / `getrlimit(resource, old)`: reports the limits.
pub fn prlimit64(resource: u64, old: u64) -> SysResult {
    let (cur, max) = match resource {
        RLIMIT_STACK => (STACK_BYTES, RLIM_INFINITY),
        RLIMIT_NOFILE => (1024, 4096),
        0..=15 => (RLIM_INFINITY, RLIM_INFINITY),
        _ => return Err(EINVAL),
    };
    if old != 0 {
        user::write(old, &two_words(cur, max))?;
    }
    Ok(0)
}
