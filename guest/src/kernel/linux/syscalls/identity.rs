//! Who the program is and what machine it runs on: ids, `uname`, the VPs as CPUs, and
//! randomness.

use core::sync::atomic::{AtomicU64, Ordering};

use guest::linux_abi::errno::{EINVAL, ESRCH};
use guest::linux_abi::layout::utsname;

use super::{user, SysResult};
use crate::linux::program;
use crate::machine::kernel;

/// The program's process (and main thread) id.
pub const PID: u64 = 1;

/// `uname(buf)`: Linux on x86_64; the release is one glibc accepts.
pub fn uname(buf: u64) -> SysResult {
    let u = utsname([
        b"Linux",
        b"cvmm",
        b"6.1.0-cvmm",
        b"#1 SMP cvmm virtual server",
        b"x86_64",
        b"(none)",
    ]);
    user::write(buf, &u)?;
    Ok(0)
}

/// `sched_getaffinity(pid, len, mask)`: every VP of the virtual server.
pub fn sched_getaffinity(tid: u64, len: u64, mask: u64) -> SysResult {
    let vps = kernel().vp_count() as u64;
    let bytes = vps.div_ceil(64) * 8;
    if len < bytes || len % 8 != 0 {
        return Err(EINVAL);
    }
    let all = if vps >= 64 {
        u64::MAX
    } else {
        (1u64 << vps) - 1
    };
    let affinity = thread_affinity(tid)?;
    user::write(mask, &(affinity & all).to_le_bytes())?;
    Ok(bytes)
}

/// The affinity of thread `tid` (0: the caller).
fn thread_affinity(tid: u64) -> Result<u64, i64> {
    let me = crate::sched::current();
    if tid == 0 || tid == u64::from(me.id()) {
        return Ok(me.affinity.load(core::sync::atomic::Ordering::Relaxed));
    }
    let tid = u32::try_from(tid).map_err(|_| ESRCH)?;
    crate::sched::with_thread(tid, |t| {
        t.affinity.load(core::sync::atomic::Ordering::Relaxed)
    })
    .ok_or(ESRCH)
}

/// `sched_setaffinity(tid, len, mask)`: the VPs a thread may run on (the caller, or
/// another thread of the program, which moves when it next switches); a mask naming no
/// VP of the virtual server is EINVAL.
pub fn sched_setaffinity(tid: u64, len: u64, mask: u64) -> SysResult {
    let vps = kernel().vp_count() as u64;
    let all = if vps >= 64 {
        u64::MAX
    } else {
        (1u64 << vps) - 1
    };
    let mut bytes = [0u8; 8];
    let n = usize::try_from(len.min(8)).unwrap_or(8);
    user::read(mask, &mut bytes[..n])?;
    let wanted = u64::from_le_bytes(bytes) & all;
    if wanted == 0 {
        return Err(EINVAL);
    }
    let me = crate::sched::current();
    if tid == 0 || tid == u64::from(me.id()) {
        crate::sched::set_own_affinity(wanted);
        return Ok(0);
    }
    let tid = u32::try_from(tid).map_err(|_| ESRCH)?;
    crate::sched::with_thread(tid, |t| {
        t.affinity
            .store(wanted, core::sync::atomic::Ordering::Relaxed);
    })
    .ok_or(ESRCH)?;
    Ok(0)
}

/// The thread's name (PR_SET_NAME), NUL padded.
static NAME: crate::spinlock::SpinLock<[u8; 16]> = crate::spinlock::SpinLock::new([0; 16]);

/// `prctl(option, arg2, ...)`: the thread name.
pub fn prctl(option: u64, arg2: u64) -> SysResult {
    const PR_SET_NAME: u64 = 15;
    const PR_GET_NAME: u64 = 16;
    match option {
        PR_SET_NAME => {
            let mut name = [0u8; 16];
            let len = match user::read_path(arg2, &mut name[..15]) {
                Ok(len) => len,
                // Linux cuts a longer name to 15 bytes.
                Err(guest::linux_abi::errno::ENAMETOOLONG) => 15,
                Err(e) => return Err(e),
            };
            name[len..].fill(0);
            *NAME.lock() = name;
            Ok(0)
        }
        PR_GET_NAME => {
            let mut name = *NAME.lock();
            if name[0] == 0 {
                // The file name's last component, as the kernel sets it at exec.
                let exe = program().execfn();
                let base = exe.rsplit(|&b| b == b'/').next().unwrap_or(exe);
                let n = base.len().min(15);
                name[..n].copy_from_slice(&base[..n]);
            }
            user::write(arg2, &name)?;
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

static STATE: AtomicU64 = AtomicU64::new(0);

fn splitmix(state: &AtomicU64) -> u64 {
    let mut z = state
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `getrandom(buf, len, flags)`: bytes from a generator seeded with the VMM's random
/// bytes and the time stamp counter (not yet a cryptographic source:
/// docs/linux-abi.md).
pub fn getrandom(buf: u64, len: u64) -> SysResult {
    user::check(buf, len)?;
    if STATE.load(Ordering::Relaxed) == 0 {
        let r = program().header().random;
        let seed = u64::from_le_bytes(r[8..].try_into().unwrap_or([1; 8])) ^ crate::clock::tsc();
        let _ = STATE.compare_exchange(0, seed | 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut done = 0;
    while done < len {
        let word = splitmix(&STATE).to_le_bytes();
        let n = (len - done).min(8) as usize;
        user::write(buf + done, &word[..n])?;
        done += n as u64;
    }
    Ok(len)
}
