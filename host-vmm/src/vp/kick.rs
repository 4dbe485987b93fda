//! Taking a VP thread out of KVM_RUN from another thread.
//!
//! A real-time signal with a handler that sets `immediate_exit` in the VP's own
//! `kvm_run` page: if the signal lands while the thread is in KVM_RUN, the ioctl returns
//! EINTR; if it lands just before, KVM_RUN returns at once because `immediate_exit` is
//! set. Either way the VP thread looks at its pending work before running again. This is
//! the pattern Cloud Hypervisor and Firecracker use; the `kvm_run` pointer lives in a
//! thread-local so the handler touches only its own thread's page.

use std::cell::Cell;
use std::sync::Once;

use kvm_bindings::kvm_run;

thread_local! {
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal used for kicks.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // `try_with` never panics; a thread without a VP has a null pointer.
    let _ = KVM_RUN.try_with(|run| {
        let ptr = run.get();
        if !ptr.is_null() {
            // SAFETY: the pointer was set by this thread to its own vCPU's mmapped
            // kvm_run page, which outlives the registration (cleared before the vCPU is
            // dropped); a volatile byte store is async-signal-safe.
            unsafe { std::ptr::addr_of_mut!((*ptr).immediate_exit).write_volatile(1) };
        }
    });
}

/// Installs the kick handler once per process.
pub fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; we fill in the handler and flags, and the
        // handler only does a volatile store (async-signal-safe).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_kick as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            let rc = libc::sigaction(kick_signal(), &action, std::ptr::null_mut());
            assert_eq!(
                rc, 0,
                "sigaction for the kick signal cannot fail with valid args"
            );
        }
    });
}

/// Registers this thread's `kvm_run` page for the handler; `None` unregisters.
pub fn register_this_thread(run: Option<*mut kvm_run>) {
    KVM_RUN.with(|cell| cell.set(run.unwrap_or(std::ptr::null_mut())));
}

/// Clears `immediate_exit` after KVM_RUN returned.
///
/// # Safety
/// `run` must be this thread's registered, live `kvm_run` page.
pub unsafe fn clear_immediate_exit(run: *mut kvm_run) {
    // SAFETY: guaranteed by the caller.
    unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(0) };
}

/// Sends a kick to `thread`.
pub fn kick(thread: libc::pthread_t) {
    // SAFETY: pthread_kill with a valid signal number; the thread id comes from a
    // JoinHandle that the caller keeps alive, and a finished thread only yields ESRCH.
    unsafe {
        libc::pthread_kill(thread, kick_signal());
    }
}
