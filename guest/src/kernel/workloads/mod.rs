//! The workloads the command line chooses from. Each has up to three steps:
//! `prepare` on VP 0 before the other VPs start (shared inputs), `run` on every VP (its
//! share), and `finish` on VP 0 once every VP is done (the result line). Shared inputs
//! and per-VP results are published through statics of the workload's module.

mod counter;
mod hello;
mod litmus;
mod matmul;
mod probe;
mod sort;

use guest::cmdline::Workload;
use guest::page_alloc::PageAllocError;
use guest::probe::ProbeError;
use guest::sort::MergeError;

use crate::machine::Kernel;
use crate::vima_calls::CallError;

/// Why a workload failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A ViMA call failed.
    #[error("{0}")]
    Call(#[from] CallError),
    /// Memory ran out.
    #[error("{0}")]
    Alloc(#[from] PageAllocError),
    /// The sorted chunks could not be merged.
    #[error("{0}")]
    Merge(#[from] MergeError),
    /// The probe cannot run here or read wrong data.
    #[error("{0}")]
    Probe(#[from] ProbeError),
    /// The Linux program could not be started.
    #[error("{0}")]
    Linux(crate::linux::LinuxError),
    /// A step ran before `prepare`.
    #[error("{0} ran before it was prepared")]
    NotPrepared(&'static str),
    /// The workload exists on the command line but not in this kernel yet.
    #[allow(dead_code)] // Every workload the parser knows exists today; kept for new ones.
    #[error("workload {0} is not available in this kernel")]
    NotAvailable(&'static str),
    /// A VP disagrees with the configuration about who it is.
    #[error("VP {vp} is told it is VP {told}")]
    WrongIdentity {
        /// The VP id the kernel runs as.
        vp: usize,
        /// What `SelfInfo` said.
        told: u32,
    },
}

impl WorkloadError {
    /// The `VsExit` status: 2 for a workload this kernel lacks, 1 otherwise.
    pub fn exit_status(&self) -> u64 {
        match self {
            WorkloadError::NotAvailable(_) => 2,
            _ => 1,
        }
    }
}

/// VP 0, before the other VPs start.
pub fn prepare(kernel: &Kernel) -> Result<(), WorkloadError> {
    match kernel.workload {
        Workload::Hello | Workload::Counter { .. } | Workload::Linux(_) => Ok(()),
        Workload::Matmul { n } => matmul::prepare(kernel, n),
        Workload::Sort { n } => sort::prepare(kernel, n),
        Workload::Litmus { test, iterations } => litmus::prepare(kernel, test, iterations),
        Workload::Probe {
            kind,
            pages,
            sharers,
        } => probe::prepare(kernel, kind, pages, sharers),
    }
}

/// Every VP: its share.
pub fn run(kernel: &Kernel, vp: usize) -> Result<(), WorkloadError> {
    match kernel.workload {
        Workload::Hello => hello::run(kernel, vp),
        Workload::Counter { iterations } => {
            counter::run(iterations);
            Ok(())
        }
        Workload::Matmul { .. } => matmul::run(kernel, vp),
        Workload::Sort { .. } => sort::run(kernel, vp),
        Workload::Litmus { .. } => litmus::run(vp),
        Workload::Probe { .. } => probe::run(kernel, vp),
        // VP 0 becomes the program's; the others have nothing to run until threads do.
        Workload::Linux(_) if vp == 0 => match crate::linux::run() {
            Ok(never) => match never {},
            Err(err) => Err(WorkloadError::Linux(err)),
        },
        Workload::Linux(_) => match crate::linux::vp_main() {
            Ok(never) => match never {},
            Err(err) => Err(WorkloadError::Linux(err)),
        },
    }
}

/// VP 0, after every VP finished `run`: prints the result line.
pub fn finish(kernel: &Kernel) -> Result<(), WorkloadError> {
    match kernel.workload {
        Workload::Hello => Ok(()),
        Workload::Counter { .. } => {
            counter::finish();
            Ok(())
        }
        Workload::Matmul { .. } => matmul::finish(),
        Workload::Sort { .. } => sort::finish(),
        Workload::Litmus { .. } => litmus::finish(),
        // VP 0 printed the line at the end of its run: the phase lines around its timed
        // loop and the result belong together.
        Workload::Probe { .. } => Ok(()),
        Workload::Linux(_) => Ok(()),
    }
}
