//! The process: exit, thread pointer, the thread id address and robust list, limits and
//! futexes, for the one thread a program has until clone arrives (docs/linux-abi.md).

use core::sync::atomic::{AtomicU64, Ordering};

use guest::linux_abi::errno::{EAGAIN, EINVAL, ENOSYS};
use guest::linux_abi::layout::two_words;

use super::identity::PID;
use super::{user, SysResult};
use crate::linux::STACK_BYTES;
use crate::vima_calls;

const ARCH_SET_GS: u64 = 0x1001;
const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
const ARCH_GET_GS: u64 = 0x1004;
const RLIMIT_STACK: u64 = 3;
const RLIMIT_NOFILE: u64 = 7;
const RLIM_INFINITY: u64 = u64::MAX;
const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_CMD_MASK: u64 = !(128 | 256);

static CLEAR_CHILD_TID: AtomicU64 = AtomicU64::new(0);
static ROBUST_LIST: AtomicU64 = AtomicU64::new(0);

/// `exit_group(status)` (and `exit` of the only thread): ends the virtual server with the
/// program's status.
pub fn exit_group(status: u64) -> SysResult {
    vima_calls::vs_exit(status & 0xff)
}

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
            // runs natively at CPL3 (PLATFORM.md).
            unsafe {
                core::arch::asm!("wrfsbase {}", in(reg) addr, options(nostack, preserves_flags))
            };
            Ok(0)
        }
        ARCH_GET_FS => {
            let base: u64;
            // SAFETY: rdfsbase only reads the fs base.
            unsafe {
                core::arch::asm!("rdfsbase {}", out(reg) base, options(nostack, preserves_flags))
            };
            user::write(addr, &base.to_le_bytes())?;
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

fn is_canonical(addr: u64) -> bool {
    !((1 << 47)..0xffff_8000_0000_0000).contains(&addr)
}

/// `set_tid_address(tidptr)`.
pub fn set_tid_address(tidptr: u64) -> SysResult {
    CLEAR_CHILD_TID.store(tidptr, Ordering::Relaxed);
    Ok(PID)
}

/// `set_robust_list(head, len)`.
pub fn set_robust_list(head: u64, len: u64) -> SysResult {
    if len != 24 {
        return Err(EINVAL);
    }
    ROBUST_LIST.store(head, Ordering::Relaxed);
    Ok(0)
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

/// `futex(uaddr, op, val, ...)` with one thread: a wait on a changed word returns EAGAIN,
/// a wake wakes nobody. A wait on an unchanged word could never end; it is ENOSYS until
/// threads arrive.
pub fn futex(uaddr: u64, op: u64, val: u64) -> SysResult {
    match op & FUTEX_CMD_MASK {
        FUTEX_WAKE | FUTEX_WAKE_BITSET => Ok(0),
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let mut word = [0u8; 4];
            if uaddr % 4 != 0 {
                return Err(EINVAL);
            }
            user::read(uaddr, &mut word)?;
            if u64::from(u32::from_le_bytes(word)) != val & 0xffff_ffff {
                Err(EAGAIN)
            } else {
                Err(ENOSYS)
            }
        }
        _ => Err(ENOSYS),
    }
}
