//! Memory-weighted placement in the scheduler (paper 4.9.5): every VP reads its own row
//! of remote-fault counts, which its node's VMM keeps in the per-node region
//! (`vima::layout::REMOTE_FAULTS_BASE`: one counter per home node, bumped for every
//! page fetched for this VP), and charges what came since its last look to the thread
//! that ran. `wake` and `steal` then weigh a thread's remote faults against run-queue
//! load with the cost model of `guest::placement`. `cvmm run --placement load` turns the
//! weighting off (placement by load alone), so the two can be measured side by side.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use vima::layout::{remote_faults_addr, MAX_NODES};

use crate::machine::kernel;
use crate::sync::PageAligned;

/// On unless the command line asks for placement by load alone; written once by VP 0
/// before the other VPs start, then only read (a page of its own, so it stays a replica).
static MEMORY_WEIGHTED: PageAligned<AtomicBool> = PageAligned(AtomicBool::new(true));

/// Turns memory weighting on or off (VP 0, at boot).
pub fn set_memory_weighted(on: bool) {
    MEMORY_WEIGHTED.store(on, Ordering::Relaxed);
}

/// True when placement weighs remote faults.
pub fn memory_weighted() -> bool {
    MEMORY_WEIGHTED.load(Ordering::Relaxed)
}

/// Nodes of the virtual server (at most MAX_NODES).
pub fn node_count() -> usize {
    kernel().config.node_count().min(MAX_NODES)
}

/// A thread's remote-fault weights by home node (`guest::placement`); written only by
/// the VP that runs the thread, at its switches.
#[derive(Debug)]
pub struct Weights([AtomicU32; MAX_NODES]);

impl Weights {
    /// No history.
    pub const fn new() -> Self {
        Self([const { AtomicU32::new(0) }; MAX_NODES])
    }

    /// The weights now.
    pub fn get(&self) -> [u32; MAX_NODES] {
        core::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }

    fn set(&self, weights: [u32; MAX_NODES]) {
        for (slot, w) in self.0.iter().zip(weights) {
            slot.store(w, Ordering::Relaxed);
        }
    }
}

/// A VP's last reading of its own remote-fault counts (in its run queue's page).
#[derive(Debug)]
pub struct FaultReading([AtomicU32; MAX_NODES]);

impl FaultReading {
    /// Nothing read yet (the VMM's counts start at 0 too).
    pub const fn new() -> Self {
        Self([const { AtomicU32::new(0) }; MAX_NODES])
    }

    /// The remote faults VP `vp` took per home node since the last call.
    fn take(&self, vp: u32, nodes: usize) -> [u32; MAX_NODES] {
        let mut delta = [0u32; MAX_NODES];
        for (node, seen) in self.0.iter().enumerate().take(nodes) {
            let addr = remote_faults_addr(vp, u32::try_from(node).unwrap_or(0));
            // SAFETY: the per-node region is mapped on every node for the whole run; the
            // counts are u32-aligned words only the VMM writes (atomically) and this VP
            // reads.
            let now = unsafe { (*(addr as *const AtomicU32)).load(Ordering::Relaxed) };
            delta[node] = now.wrapping_sub(seen.swap(now, Ordering::Relaxed));
        }
        delta
    }
}

/// At a switch on VP `vp`: charges the remote faults since the last switch to `ran`
/// (None for the idle context: the kernel's own faults while idle count for nobody).
pub fn account(vp: u32, reading: &FaultReading, ran: Option<&Weights>) {
    let nodes = node_count();
    let faults = reading.take(vp, nodes);
    if let Some(weights) = ran {
        weights.set(guest::placement::charged(weights.get(), &faults[..nodes]));
    }
}
