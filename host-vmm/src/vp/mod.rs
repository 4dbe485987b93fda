//! Virtual processors: one host thread per VP running KVM_RUN, the ViMA call dispatch,
//! and interrupt delivery into the guest's virtual IDT.
//!
//! A VP thread owns its vCPU. Other threads reach it only through its [`VpControl`]:
//! they post interrupts (a bit in `pending`, mirrored into the guest's `VpShared` block),
//! request a start, or kick it out of KVM_RUN. Everything that changes the vCPU's
//! registers happens on the VP thread, between two KVM_RUNs.

pub mod calls;
mod file_calls;
pub mod interrupts;
pub mod kick;
mod local;
mod thread;

use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::memory::WakeSignal;

#[cfg(test)]
mod call_tests;
#[cfg(test)]
mod interrupt_tests;

pub use local::VpLocal;
pub use thread::{set_entry_state, spawn_vp_thread};

/// Where a VP is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Not running; `VpStart` may start it.
    Stopped,
    /// `VpStart` asked for it to start here.
    StartRequested {
        /// Entry point.
        entry: u64,
        /// Initial `rsp`.
        stack_top: u64,
        /// Initial `rdi`.
        arg: u64,
    },
    /// Running guest code.
    Running,
}

/// The part of a VP that other threads may touch.
#[derive(Debug)]
pub struct VpControl {
    /// VP id.
    pub id: u32,
    /// Node the VP runs on.
    pub node: u32,
    /// Pending vectors (bit v = vector v). The guest sees a copy in its VpShared block.
    pub pending: Mutex<u64>,
    /// Life cycle, with `started` to wake the parked thread.
    pub state: Mutex<RunState>,
    /// Signalled when `state` changes to `StartRequested` or the server stops.
    pub started: Condvar,
    /// Woken by posted interrupts and by writes to a page the VP waits on (SpinWait).
    pub wake: Arc<WakeSignal>,
    /// The VP thread, for kicks.
    pub thread: OnceLock<libc::pthread_t>,
}

impl VpControl {
    /// A stopped VP.
    pub fn new(id: u32, node: u32) -> Self {
        VpControl {
            id,
            node,
            pending: Mutex::new(0),
            state: Mutex::new(RunState::Stopped),
            started: Condvar::new(),
            wake: Arc::new(WakeSignal::new()),
            thread: OnceLock::new(),
        }
    }

    /// Takes the VP out of KVM_RUN (or out of a SpinWait) so it looks at pending work.
    pub fn kick(&self) {
        self.wake.notify();
        if let Some(thread) = self.thread.get() {
            kick::kick(*thread);
        }
    }
}
