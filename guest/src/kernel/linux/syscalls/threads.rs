//! Threads: clone with the pthread flags, exit, thread ids, the robust list, yielding
//! and where a thread runs. The scheduler itself is the kernel's ([`crate::sched`]).
//!
//! `clone` makes a thread that returns from the same system call with `rax = 0` on the
//! stack it was given, with the caller's other registers and SSE state; the scheduler
//! places it on the least loaded VP of the virtual server, on any node. `clone3` is
//! ENOSYS: glibc then falls back to `clone` (tested by every threaded test program).
//! Only threads are made: `fork`-like clones (no CLONE_VM / CLONE_THREAD) are ENOSYS.

use core::sync::atomic::Ordering;

use guest::linux_abi::errno::{EINVAL, ENOSYS, EPERM, ESRCH};

use super::{futex, user, SysResult};
use crate::interrupts::current_vp;
use crate::linux::entry::SyscallFrame;
use crate::machine::kernel;
use crate::sched::{self, switch::FX_BYTES};

const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_THREAD: u64 = 0x1_0000;
const CLONE_SYSVSEM: u64 = 0x4_0000;
const CLONE_SETTLS: u64 = 0x8_0000;
const CLONE_PARENT_SETTID: u64 = 0x10_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
const CLONE_DETACHED: u64 = 0x40_0000;
const CLONE_CHILD_SETTID: u64 = 0x100_0000;
/// What a thread must share.
const THREAD_FLAGS: u64 = CLONE_VM | CLONE_THREAD | CLONE_SIGHAND;
/// Every flag this kernel understands.
const KNOWN_FLAGS: u64 = THREAD_FLAGS
    | CLONE_FS
    | CLONE_FILES
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_DETACHED
    | CLONE_CHILD_SETTID;

/// `clone(flags, stack, parent_tid, child_tid, tls)` from the system call `frame`.
pub fn clone(frame: &SyscallFrame) -> SysResult {
    let [flags, stack, parent_tid, child_tid, tls, _] = frame.args();
    // The low byte is the exit signal, which a thread does not have.
    let flags = flags & !0xff;
    if flags & THREAD_FLAGS != THREAD_FLAGS {
        return Err(ENOSYS);
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(EINVAL);
    }
    if flags & CLONE_SETTLS != 0 && !super::process::is_canonical(tls) {
        return Err(EPERM);
    }
    if flags & CLONE_PARENT_SETTID != 0 {
        user::check(parent_tid, 4)?;
    }
    if flags & (CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID) != 0 {
        user::check(child_tid, 4)?;
    }
    let mut child = *frame;
    child.rax = 0;
    if stack != 0 {
        child.rsp = stack;
    }
    let fs_base = if flags & CLONE_SETTLS != 0 {
        tls
    } else {
        super::process::fs_base()
    };
    // The caller's SSE state, where the entry saved it below its frame.
    let frame_at = core::ptr::from_ref(frame) as u64;
    let mut fx = [0u8; FX_BYTES];
    // SAFETY: the system call entry saved FX_BYTES of SSE state just below the 64-byte
    // aligned frame address on this thread's kernel stack; it stays there until the
    // call returns.
    unsafe {
        core::ptr::copy_nonoverlapping(
            ((frame_at & !63) - FX_BYTES as u64) as *const u8,
            fx.as_mut_ptr(),
            FX_BYTES,
        );
    }
    let thread =
        sched::spawn(&child, &fx, fs_base, None).map_err(|_| guest::linux_abi::errno::EAGAIN)?;
    let tid = thread.id();
    if flags & CLONE_CHILD_CLEARTID != 0 {
        thread.clear_child_tid.store(child_tid, Ordering::Relaxed);
    }
    let me = sched::current();
    thread
        .sigmask
        .store(me.sigmask.load(Ordering::Relaxed), Ordering::Relaxed);
    if flags & CLONE_PARENT_SETTID != 0 {
        user::write(parent_tid, &tid.to_le_bytes())?;
    }
    if flags & CLONE_CHILD_SETTID != 0 {
        user::write(child_tid, &tid.to_le_bytes())?;
    }
    sched::start(thread);
    Ok(u64::from(tid))
}

/// `exit(status)`: ends the calling thread (clearing and waking its thread id word);
/// the last thread to leave ends the program with `status`.
pub fn exit(status: u64) -> SysResult {
    let me = sched::current();
    futex::clear_and_wake(me.clear_child_tid.load(Ordering::Relaxed));
    if sched::exit_thread() == 0 {
        super::end_program(status & 0xff);
    }
    unreachable_exit()
}

fn unreachable_exit() -> SysResult {
    crate::machine::fail(1, format_args!("an exited thread returned"))
}

/// `exit_group(status)`: ends the program (every thread, every VP) with `status`.
pub fn exit_group(status: u64) -> SysResult {
    super::end_program(status & 0xff)
}

/// `gettid()`.
pub fn gettid() -> SysResult {
    Ok(u64::from(sched::current().id()))
}

/// `set_tid_address(tidptr)`.
pub fn set_tid_address(tidptr: u64) -> SysResult {
    let me = sched::current();
    me.clear_child_tid.store(tidptr, Ordering::Relaxed);
    Ok(u64::from(me.id()))
}

/// `set_robust_list(head, len)`.
pub fn set_robust_list(head: u64, len: u64) -> SysResult {
    if len != 24 {
        return Err(EINVAL);
    }
    sched::current().robust_list.store(head, Ordering::Relaxed);
    Ok(0)
}

/// `get_robust_list(tid, head_ptr, len_ptr)`: the caller's own (or tid 0's).
pub fn get_robust_list(tid: u64, head_ptr: u64, len_ptr: u64) -> SysResult {
    let me = sched::current();
    if tid != 0 && tid != u64::from(me.id()) {
        return Err(ESRCH);
    }
    user::write(
        head_ptr,
        &me.robust_list.load(Ordering::Relaxed).to_le_bytes(),
    )?;
    user::write(len_ptr, &24u64.to_le_bytes())?;
    Ok(0)
}

/// `sched_yield()`.
pub fn sched_yield() -> SysResult {
    sched::schedule();
    Ok(0)
}

/// `getcpu(cpu, node, cache)`: the VP and its node.
pub fn getcpu(cpu: u64, node: u64) -> SysResult {
    let vp = current_vp();
    if cpu != 0 {
        user::write(cpu, &vp.to_le_bytes())?;
    }
    if node != 0 {
        user::write(node, &kernel().node_of(vp as usize).to_le_bytes())?;
    }
    Ok(0)
}
