//! Signals: actions, masks, the alternate stack, delivery to the program's handlers and
//! the return from them.
//!
//! A fault (an exception the VMM delivered) whose signal has a handler gets a frame on
//! the program's stack (or its alternate stack) exactly as Linux builds one
//! (`guest::linux_abi::signal`: return address into the restorer, ucontext, siginfo,
//! SSE state), and the handler starts where the interrupted code would have resumed.
//! `rt_sigreturn` loads every register back from the ucontext and returns with `iretq`.
//! A signal a thread sends itself (raise, abort) is delivered at once, the same way, or
//! when it unblocks it. Not yet: signals to other threads, `sigsuspend`; a blocked or
//! ignored fault kills, as Linux forces it to.

use core::sync::atomic::Ordering;

use guest::linux_abi::errno::{EAGAIN, EFAULT, EINTR, EINVAL, ENOMEM, EPERM, ESRCH};
use guest::linux_abi::signal::{
    decode_ucontext, encode_siginfo, encode_ucontext, layout, AltStack, FaultInfo, SigAction,
    UserRegs, SA_NODEFER, SA_ONSTACK, SA_RESETHAND, SA_RESTART, SA_RESTORER, SIGACTION_BYTES,
    SIGINFO_BYTES, SIG_DFL, SIG_IGN, SS_DISABLE, SS_ONSTACK, UCONTEXT_BYTES,
};
use vima::interrupt::ExceptionFrame;
use vima::layout::PAGE_SIZE;

use super::identity::PID;
use super::{user, SysResult};
use crate::interrupts::SavedRegs;
use crate::linux::entry::{return_to_user, FxState, SyscallFrame};
use crate::sched;
use crate::spinlock::SpinLock;

/// SIGILL.
pub const SIGILL: u64 = 4;
/// SIGTRAP.
pub const SIGTRAP: u64 = 5;
/// SIGBUS.
pub const SIGBUS: u64 = 7;
/// SIGFPE.
pub const SIGFPE: u64 = 8;
/// SIGKILL.
pub const SIGKILL: u64 = 9;
/// SIGSEGV.
pub const SIGSEGV: u64 = 11;
/// SIGPIPE.
pub const SIGPIPE: u64 = 13;
/// SIGSTOP.
pub const SIGSTOP: u64 = 19;
/// Highest signal number.
const NSIG: u64 = 64;
/// si_code of a signal the kernel raised.
const SI_KERNEL: i32 = 0x80;
/// si_code of a signal sent with tgkill/tkill.
const SI_TKILL: i32 = -6;
/// si_code of a signal sent with kill.
const SI_USER: i32 = 0;

static ACTIONS: SpinLock<[SigAction; ACTION_COUNT]> = SpinLock::new(
    [SigAction {
        handler: SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    }; ACTION_COUNT],
);

/// Slots of the action table (signals 1..=64).
const ACTION_COUNT: usize = 64;
const _: () = assert!(ACTION_COUNT as u64 == NSIG);

/// The action table slot of `sig` (1..=64, checked by the callers).
fn slot(sig: u64) -> usize {
    usize::try_from(sig - 1).unwrap_or(0) % ACTION_COUNT
}

fn bit(sig: u64) -> u64 {
    1 << (sig - 1)
}

/// Signals that can never be blocked.
const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));

fn action(sig: u64) -> SigAction {
    ACTIONS.lock()[slot(sig)]
}

/// `rt_sigaction(sig, act, oldact, sigsetsize)`.
pub fn rt_sigaction(sig: u64, act: u64, oldact: u64, sigsetsize: u64) -> SysResult {
    if sig == 0 || sig > NSIG || sigsetsize != 8 {
        return Err(EINVAL);
    }
    let new = if act == 0 {
        None
    } else {
        if sig == SIGKILL || sig == SIGSTOP {
            return Err(EINVAL);
        }
        let mut bytes = [0u8; SIGACTION_BYTES];
        user::read(act, &mut bytes)?;
        Some(SigAction::decode(&bytes))
    };
    let old = {
        let mut actions = ACTIONS.lock();
        let slot = &mut actions[slot(sig)];
        let old = *slot;
        if let Some(new) = new {
            *slot = new;
        }
        old
    };
    if oldact != 0 {
        user::write(oldact, &old.encode())?;
    }
    Ok(0)
}

/// `rt_sigprocmask(how, set, oldset, sigsetsize)`: the calling thread's mask; a signal
/// it sent itself while blocked is delivered as soon as it is unblocked.
pub fn rt_sigprocmask(
    frame: &SyscallFrame,
    how: u64,
    set: u64,
    oldset: u64,
    sigsetsize: u64,
) -> SysResult {
    const SIG_BLOCK: u64 = 0;
    const SIG_UNBLOCK: u64 = 1;
    const SIG_SETMASK: u64 = 2;
    if sigsetsize != 8 {
        return Err(EINVAL);
    }
    let me = sched::current();
    let old = me.sigmask.load(Ordering::Relaxed);
    if set != 0 {
        let change = user::read_u64(set)?;
        let new = match how {
            SIG_BLOCK => old | change,
            SIG_UNBLOCK => old & !change,
            SIG_SETMASK => change,
            _ => return Err(EINVAL),
        };
        me.sigmask.store(new & !UNBLOCKABLE, Ordering::Relaxed);
    }
    if oldset != 0 {
        user::write(oldset, &old.to_le_bytes())?;
    }
    if let Some(sig) = take_pending() {
        return raise_self(frame, sig, SI_TKILL);
    }
    Ok(0)
}

fn altstack_of(me: &sched::Thread) -> AltStack {
    AltStack {
        sp: me.altstack[0].load(Ordering::Relaxed),
        size: me.altstack[1].load(Ordering::Relaxed),
        flags: me.altstack[2].load(Ordering::Relaxed),
    }
}

fn on_altstack(alt: &AltStack, rsp: u64) -> bool {
    alt.flags & SS_DISABLE == 0 && rsp > alt.sp && rsp <= alt.sp + alt.size
}

/// `sigaltstack(ss, old_ss)`: the calling thread's alternate signal stack.
pub fn sigaltstack(ss: u64, old_ss: u64, rsp: u64) -> SysResult {
    /// MINSIGSTKSZ of x86-64.
    const MIN_SIZE: u64 = 2048;
    let me = sched::current();
    let alt = altstack_of(me);
    let on = on_altstack(&alt, rsp);
    if old_ss != 0 {
        let flags = if on {
            SS_ONSTACK
        } else {
            alt.flags & SS_DISABLE
        };
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&alt.sp.to_le_bytes());
        b[8..16].copy_from_slice(&flags.to_le_bytes());
        b[16..24].copy_from_slice(&alt.size.to_le_bytes());
        user::write(old_ss, &b)?;
    }
    if ss != 0 {
        if on {
            return Err(EPERM);
        }
        let mut b = [0u8; 24];
        user::read(ss, &mut b)?;
        let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let (sp, flags, size) = (word(0), word(1) & 0xffff_ffff, word(2));
        if flags & !(SS_DISABLE | SS_ONSTACK) != 0 {
            return Err(EINVAL);
        }
        if flags & SS_DISABLE != 0 {
            me.altstack[2].store(SS_DISABLE, Ordering::Relaxed);
            me.altstack[0].store(0, Ordering::Relaxed);
            me.altstack[1].store(0, Ordering::Relaxed);
        } else {
            if size < MIN_SIZE {
                return Err(ENOMEM);
            }
            user::check(sp, size)?;
            me.altstack[0].store(sp, Ordering::Relaxed);
            me.altstack[1].store(size, Ordering::Relaxed);
            me.altstack[2].store(0, Ordering::Relaxed);
        }
    }
    Ok(0)
}

/// Writes a frame for `sig` with action `act` below the interrupted `regs` (and below
/// `in_use`, the lowest byte of that stack the kernel still needs while it builds the
/// frame) and returns the registers its handler starts with.
fn push_frame(
    sig: u64,
    act: &SigAction,
    regs: &UserRegs,
    fault: &FaultInfo,
    info: (i32, u64),
    fx: &[u8; 512],
    in_use: u64,
) -> Result<UserRegs, i64> {
    let me = sched::current();
    let alt = altstack_of(me);
    let use_alt =
        act.flags & SA_ONSTACK != 0 && alt.flags & SS_DISABLE == 0 && !on_altstack(&alt, regs.rsp);
    let top = if use_alt {
        alt.sp + alt.size
    } else {
        regs.rsp.min(in_use)
    };
    let at = layout(top, use_alt);
    let blocked = me.sigmask.load(Ordering::Relaxed);
    // Under a call's own mask (sigsuspend, ppoll) the frame saves the caller's mask,
    // which the handler's return puts back; the handler itself runs under the call's.
    let saved = if me.restore_sigmask.swap(0, Ordering::Relaxed) != 0 {
        me.saved_sigmask.load(Ordering::Relaxed)
    } else {
        blocked
    };
    let reported = AltStack {
        flags: if on_altstack(&alt, regs.rsp) {
            SS_ONSTACK
        } else {
            alt.flags
        },
        ..alt
    };
    let uc = encode_ucontext(regs, fault, saved, &reported, at.fx, (0x2b, 0x23));
    let siginfo = encode_siginfo(sig, info.0, info.1);
    user::check(at.frame, top - at.frame).map_err(|_| EFAULT)?;
    user::write(at.fx, fx)?;
    user::write(at.ucontext, &uc)?;
    user::write(at.siginfo, &siginfo)?;
    user::write(at.frame, &act.restorer.to_le_bytes())?;
    let mut during = blocked | act.mask;
    if act.flags & SA_NODEFER == 0 {
        during |= bit(sig);
    }
    me.sigmask.store(during & !UNBLOCKABLE, Ordering::Relaxed);
    if act.flags & SA_RESETHAND != 0 {
        ACTIONS.lock()[slot(sig)] = SigAction::default();
    }
    Ok(UserRegs {
        rip: act.handler,
        rsp: at.frame,
        rdi: sig,
        rsi: at.siginfo,
        rdx: at.ucontext,
        rax: 0,
        // The handler starts with DF and TF clear.
        rflags: regs.rflags & !(0x400 | 0x100),
        ..*regs
    })
}

/// Room left below the kernel's own use of a faulting stack before a signal frame.
const KERNEL_STACK_MARGIN: u64 = 8192;

fn current_rsp() -> u64 {
    let rsp: u64;
    // SAFETY: reads the stack pointer only.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    rsp
}

/// The action to take for `sig` now: a handler that can run, or none (the default).
fn handler_for(sig: u64) -> Option<SigAction> {
    let act = action(sig);
    let blocked = sched::current().sigmask.load(Ordering::Relaxed) & bit(sig) != 0;
    (act.handler > SIG_IGN && act.flags & SA_RESTORER != 0 && !blocked).then_some(act)
}

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

/// si_code and si_addr Linux reports for exception `vector`.
fn fault_siginfo(vector: u8, frame: &ExceptionFrame) -> (i32, u64) {
    const SEGV_MAPERR: i32 = 1;
    const SEGV_ACCERR: i32 = 2;
    const FPE_INTDIV: i32 = 1;
    const ILL_ILLOPN: i32 = 2;
    const BUS_ADRALN: i32 = 1;
    match vector {
        // Page 0 holds the system call trampoline, which the program did not map: a
        // fault there is a fault on an unmapped page, as on Linux.
        14 if frame.error_code & 1 != 0 && frame.fault_addr >= PAGE_SIZE => {
            (SEGV_ACCERR, frame.fault_addr)
        }
        14 => (SEGV_MAPERR, frame.fault_addr),
        0 => (FPE_INTDIV, frame.frame.rip),
        6 => (ILL_ILLOPN, frame.frame.rip),
        17 => (BUS_ADRALN, 0),
        _ => (SI_KERNEL, 0),
    }
}

/// A fault of the program: its handler if it has one that can run, else the signal's
/// default action (one line on stderr, exit 128 + the signal). `frame` and `saved` are
/// what the interrupted code resumes with, so a handler is entered by changing them.
pub fn fault(vector: u8, frame: &mut ExceptionFrame, saved: &mut SavedRegs, fx: &[u8; 512]) {
    let (sig, name, what) = for_exception(vector);
    if let Some(act) = handler_for(sig) {
        let regs = interrupted_regs(&frame.frame, saved);
        let info = FaultInfo {
            err: frame.error_code,
            trapno: u64::from(vector),
            cr2: frame.fault_addr,
        };
        // This handler runs on the faulting stack, below the VMM's frame: the signal
        // frame goes well below what it and its callees use.
        let in_use = current_rsp().saturating_sub(KERNEL_STACK_MARGIN);
        let code = fault_siginfo(vector, frame);
        if let Ok(entry) = push_frame(sig, &act, &regs, &info, code, fx, in_use) {
            enter_handler(&mut frame.frame, &entry);
            return;
        }
        // No room for the frame: Linux forces SIGSEGV with its default action.
    }
    let mut line = super::LineBuf::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!(
            "cvmm: program killed by {name} ({what}) at address {:#x}, rip {:#x}\n",
            frame.fault_addr, frame.frame.rip
        ),
    );
    line.write_to_stderr();
    super::end_program(128 + sig)
}

/// The registers a system call returns to (as `sysret` leaves them: rcx = rip,
/// r11 = flags), with `rax = result`.
fn syscall_regs(frame: &SyscallFrame, result: u64) -> UserRegs {
    UserRegs {
        r: [
            frame.r8, frame.r9, frame.r10, frame.r11, frame.r12, frame.r13, frame.r14, frame.r15,
        ],
        rdi: frame.rdi,
        rsi: frame.rsi,
        rbp: frame.rbp,
        rbx: frame.rbx,
        rdx: frame.rdx,
        rax: result,
        rcx: frame.rcx,
        rsp: frame.rsp,
        rip: frame.rcx,
        rflags: frame.r11,
    }
}

/// The SSE state the system call entry saved below `frame`.
fn syscall_fx(frame: &SyscallFrame) -> FxState {
    let at = (core::ptr::from_ref(frame) as u64 & !63) - 512;
    let mut fx = FxState([0; 512]);
    // SAFETY: the system call entry saved 512 bytes of SSE state just below the 64-byte
    // aligned frame address on this thread's kernel stack; they stay until it returns.
    unsafe { core::ptr::copy_nonoverlapping(at as *const u8, fx.0.as_mut_ptr(), 512) };
    fx
}

/// Default actions that do nothing (SIGCHLD, SIGCONT, SIGURG, SIGWINCH).
fn ignored_by_default(sig: u64) -> bool {
    matches!(sig, 17 | 18 | 23 | 28)
}

/// A signal the calling thread sends itself, from a system call: its handler runs at
/// once (the call returns 0 to the code the handler returns to); the default action
/// ends the program with 128 + the signal, or does nothing; ignored, nothing.
fn raise_self(frame: &SyscallFrame, sig: u64, code: i32) -> SysResult {
    deliver_from_syscall(frame, sig, code, 0)
}

/// Takes `sig` in the calling thread at the end of a system call that returns `result`.
fn deliver_from_syscall(frame: &SyscallFrame, sig: u64, code: i32, result: u64) -> SysResult {
    if let Some(act) = handler_for(sig) {
        let regs = syscall_regs(frame, result);
        let fx = syscall_fx(frame);
        let entry = push_frame(
            sig,
            &act,
            &regs,
            &FaultInfo::default(),
            (code, PID),
            &fx.0,
            u64::MAX,
        )?;
        return_to_user(&entry, &fx);
    }
    let act = action(sig);
    let me = sched::current();
    if act.handler == SIG_IGN || (act.handler == SIG_DFL && ignored_by_default(sig)) {
        return Ok(0);
    }
    if me.sigmask.load(Ordering::Relaxed) & bit(sig) != 0 && sig != SIGKILL {
        // Pending until the thread unblocks it (rt_sigprocmask).
        me.sigpending.fetch_or(bit(sig), Ordering::Relaxed);
        return Ok(0);
    }
    super::end_program(128 + sig)
}

/// `tgkill(tgid, tid, sig)` / `tkill(tid, sig)`. To the calling thread: delivered at
/// once. To another thread of the program: pending on it, which is woken if it sleeps
/// (its wait ends early, a futex wait with EINTR) or sent an IPI if it runs, and takes
/// the signal when it next returns to the program ([`at_syscall_exit`],
/// [`at_interrupt`]).
pub fn tgkill(frame: &SyscallFrame, tgid: u64, tid: u64, sig: u64) -> SysResult {
    if tgid != PID {
        return Err(ESRCH);
    }
    if sig > NSIG {
        return Err(EINVAL);
    }
    let me = sched::current();
    if tid == u64::from(me.id()) {
        return if sig == 0 {
            Ok(0)
        } else {
            raise_self(frame, sig, SI_TKILL)
        };
    }
    let tid = u32::try_from(tid).map_err(|_| ESRCH)?;
    sched::with_thread(tid, |thread| {
        if sig != 0 {
            thread.sigpending.fetch_or(bit(sig), Ordering::SeqCst);
            sched::interrupt_thread(thread);
        }
    })
    .ok_or(ESRCH)?;
    Ok(0)
}

/// The lowest signal of `set` (a bit per signal, bit 0 for signal 1).
fn lowest(set: u64) -> Option<u64> {
    (set != 0).then(|| u64::from(set.trailing_zeros()) + 1)
}

/// The signals pending on the calling thread that it does not block.
fn ready_signals() -> u64 {
    let me = sched::current();
    me.sigpending.load(Ordering::SeqCst) & !me.sigmask.load(Ordering::Relaxed)
}

/// The lowest pending signal the calling thread does not block, taken off its set.
fn take_pending() -> Option<u64> {
    let sig = lowest(ready_signals())?;
    sched::current()
        .sigpending
        .fetch_and(!bit(sig), Ordering::SeqCst);
    Some(sig)
}

/// Sleeps until a signal the calling thread does not block is pending (`pause`,
/// `rt_sigsuspend`).
pub fn wait_for_signal() {
    while !signal_pending() {
        sched::sleep_until_unless(u64::MAX, signal_pending);
    }
}

/// Makes `sig` pending on `thread` and gets it looked at: a sleeping thread wakes, a
/// running one gets an IPI (as tgkill to another thread).
pub fn send_to(thread: &'static sched::Thread, sig: u64) {
    thread.sigpending.fetch_or(bit(sig), Ordering::SeqCst);
    sched::interrupt_thread(thread);
}

/// Makes `sig` pending on the calling thread; it is taken at the end of the current
/// system call (handler, default action or nothing), or when the thread unblocks it.
pub fn raise_later(sig: u64) {
    sched::current()
        .sigpending
        .fetch_or(bit(sig), Ordering::SeqCst);
}

/// Whether a call that ended with ERESTARTSYS restarts: true unless the signal about to
/// be taken has a handler without SA_RESTART (then the call ends with EINTR).
pub fn interrupted_call_restarts() -> bool {
    let Some(sig) = lowest(ready_signals()) else {
        return true;
    };
    match handler_for_pending(sig) {
        Pending::Handler(act) => act.flags & SA_RESTART != 0,
        Pending::Ignore | Pending::Terminate => true,
    }
}

/// True when the calling thread has a pending signal it does not block.
pub fn signal_pending() -> bool {
    ready_signals() != 0
}

/// At the end of every system call: a pending signal another thread sent is taken now
/// (its handler runs; the call's result is what the handler returns to).
pub fn at_syscall_exit(frame: &SyscallFrame) {
    if let Some(sig) = take_pending() {
        let _ = deliver_from_syscall(frame, sig, SI_TKILL, frame.rax);
    }
    // No handler ran (none was due, or it was ignored): the call's own mask ends here.
    let me = sched::current();
    if me.restore_sigmask.swap(0, Ordering::Relaxed) != 0 {
        let saved = me.saved_sigmask.load(Ordering::Relaxed);
        me.sigmask.store(saved, Ordering::Relaxed);
        if me.sigpending.load(Ordering::Relaxed) & !saved != 0 {
            // Something the caller's mask lets through came meanwhile: take it now.
            at_syscall_exit(frame);
        }
    }
}

/// Puts `mask` (from the program's `sigset_t` at `set`) in force until the end of the
/// current system call ([`at_syscall_exit`], or the frame of a handler that runs then).
pub fn use_mask_for_call(set: u64, sigsetsize: u64) -> SysResult {
    if sigsetsize != 8 {
        return Err(EINVAL);
    }
    let mask = user::read_u64(set)?;
    let me = sched::current();
    me.saved_sigmask
        .store(me.sigmask.load(Ordering::Relaxed), Ordering::Relaxed);
    me.restore_sigmask.store(1, Ordering::Relaxed);
    me.sigmask.store(mask & !UNBLOCKABLE, Ordering::Relaxed);
    Ok(0)
}

/// `rt_sigsuspend(mask, sigsetsize)`: waits under `mask` until a signal it lets through
/// comes; ends with EINTR once its handler has run (with the caller's mask back).
pub fn rt_sigsuspend(set: u64, sigsetsize: u64) -> SysResult {
    use_mask_for_call(set, sigsetsize)?;
    wait_for_signal();
    Err(EINTR)
}

/// `rt_sigtimedwait(set, info, timeout, sigsetsize)` (sigwait, sigwaitinfo,
/// sigtimedwait): takes a pending signal of `set` (blocked ones too, as they should be)
/// without running its handler; returns its number and fills `info`. EAGAIN when the
/// timeout passes, EINTR when another signal's handler is due first.
pub fn rt_sigtimedwait(set: u64, info: u64, timeout: u64, sigsetsize: u64) -> SysResult {
    if sigsetsize != 8 {
        return Err(EINVAL);
    }
    let wanted = user::read_u64(set)? & !UNBLOCKABLE;
    let deadline = if timeout == 0 {
        u64::MAX
    } else {
        let mut b = [0u8; 16];
        user::read(timeout, &mut b)?;
        let ns = guest::linux_abi::layout::timespec_ns(b).ok_or(EINVAL)?;
        crate::clock::tsc().saturating_add(crate::clock::ns_to_tsc(ns))
    };
    if info != 0 {
        user::check(info, SIGINFO_BYTES as u64)?;
    }
    let me = sched::current();
    loop {
        if let Some(sig) = lowest(me.sigpending.load(Ordering::SeqCst) & wanted) {
            if me.sigpending.fetch_and(!bit(sig), Ordering::SeqCst) & bit(sig) == 0 {
                continue;
            }
            if info != 0 {
                user::write(info, &encode_siginfo(sig, SI_TKILL, PID))?;
            }
            return Ok(sig);
        }
        if signal_pending() {
            return Err(EINTR);
        }
        let woke = || me.sigpending.load(Ordering::SeqCst) & wanted != 0 || signal_pending();
        if sched::sleep_until_unless(deadline, woke) {
            return Err(EAGAIN);
        }
    }
}

/// When an interrupt returns to program code: a pending signal is taken now, by
/// entering its handler in place of the interrupted instruction.
pub fn at_interrupt(
    frame: &mut vima::interrupt::InterruptFrame,
    saved: &mut SavedRegs,
    fx: &[u8; 512],
) {
    let Some(sig) = take_pending() else {
        return;
    };
    match handler_for_pending(sig) {
        Pending::Handler(act) => {
            let regs = interrupted_regs(frame, saved);
            let in_use = current_rsp().saturating_sub(KERNEL_STACK_MARGIN);
            if let Ok(entry) = push_frame(
                sig,
                &act,
                &regs,
                &FaultInfo::default(),
                (SI_TKILL, PID),
                fx,
                in_use,
            ) {
                enter_handler(frame, &entry);
            }
        }
        Pending::Ignore => {}
        Pending::Terminate => super::end_program(128 + sig),
    }
}

enum Pending {
    Handler(SigAction),
    Ignore,
    Terminate,
}

fn handler_for_pending(sig: u64) -> Pending {
    let act = action(sig);
    if act.handler > SIG_IGN && act.flags & SA_RESTORER != 0 {
        Pending::Handler(act)
    } else if act.handler == SIG_IGN || ignored_by_default(sig) {
        Pending::Ignore
    } else {
        Pending::Terminate
    }
}

fn interrupted_regs(f: &vima::interrupt::InterruptFrame, saved: &SavedRegs) -> UserRegs {
    UserRegs {
        r: [
            saved.r8, saved.r9, saved.r10, saved.r11, saved.r12, saved.r13, saved.r14, saved.r15,
        ],
        rdi: f.rdi,
        rsi: f.rsi,
        rbp: saved.rbp,
        rbx: saved.rbx,
        rdx: f.rdx,
        rax: f.rax,
        rcx: saved.rcx,
        rsp: f.rsp,
        rip: f.rip,
        rflags: f.rflags,
    }
}

fn enter_handler(f: &mut vima::interrupt::InterruptFrame, entry: &UserRegs) {
    f.rip = entry.rip;
    f.rsp = entry.rsp;
    f.rdi = entry.rdi;
    f.rsi = entry.rsi;
    f.rdx = entry.rdx;
    f.rax = entry.rax;
    f.rflags = entry.rflags;
}

/// `kill(pid, sig)` to the program itself (pid 1, 0 or -1): delivered to the caller.
pub fn kill(frame: &SyscallFrame, pid: u64, sig: u64) -> SysResult {
    let pid = i64::from_ne_bytes(pid.to_ne_bytes());
    if !matches!(pid, 0 | -1) && pid != 1 {
        return Err(ESRCH);
    }
    if sig > NSIG {
        return Err(EINVAL);
    }
    if sig == 0 {
        return Ok(0);
    }
    raise_self(frame, sig, SI_USER)
}

/// `rt_sigreturn()`: back to the code a handler interrupted, every register as its
/// ucontext says (the handler may have changed them), with its signal mask and SSE
/// state. A ucontext that cannot be read kills the program with SIGSEGV, as on Linux.
pub fn rt_sigreturn(frame: &SyscallFrame) -> ! {
    let mut uc = [0u8; UCONTEXT_BYTES];
    if user::read(frame.rsp, &mut uc).is_err() {
        super::end_program(128 + SIGSEGV);
    }
    let (regs, fpstate, mask) = decode_ucontext(&uc);
    sched::current()
        .sigmask
        .store(mask & !UNBLOCKABLE, Ordering::Relaxed);
    let mut fx = syscall_fx(frame);
    if fpstate != 0 && user::read(fpstate, &mut fx.0).is_err() {
        super::end_program(128 + SIGSEGV);
    }
    // fxrstor faults on reserved MXCSR bits: keep only the defined ones.
    let mxcsr = u32::from_le_bytes([fx.0[24], fx.0[25], fx.0[26], fx.0[27]]) & 0xffff;
    fx.0[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    return_to_user(&regs, &fx)
}
