//! `matmul N`: `C = A * B` with rows split across all VPs; prints
//! `matmul N checksum = S`.
//!
//! Placement (the NUMA allocator's point): VP 0 builds B on its node before the others
//! start; every VP allocates its rows of A and C on its own node, fills its rows of A and
//! computes its rows of C there, so only B is read across nodes (and then replicated by
//! the coherence protocol as read-only copies).

use core::sync::atomic::{AtomicU64, Ordering};

use guest::matmul::{fill_a_rows, fill_b, multiply_rows, rows_checksum};
use guest::split::share;
use vima::layout::MAX_VPS;

use crate::alloc;
use crate::machine::Kernel;
use crate::sync::Once;

use super::WorkloadError;

#[derive(Debug)]
struct MatmulJob {
    n: usize,
    /// B, row-major; read-only once published.
    b: &'static [u64],
    /// Checksum terms of each VP's rows.
    partial: [AtomicU64; MAX_VPS],
}

static JOB: Once<MatmulJob> = Once::new();

fn job() -> Result<&'static MatmulJob, WorkloadError> {
    JOB.get().ok_or(WorkloadError::NotPrepared("matmul"))
}

/// Builds B on VP 0's node.
pub fn prepare(kernel: &Kernel, n: usize) -> Result<(), WorkloadError> {
    let b = alloc::alloc_u64s(n * n, kernel.node_of(0))?;
    fill_b(b, n);
    let job = MatmulJob {
        n,
        b,
        partial: [const { AtomicU64::new(0) }; MAX_VPS],
    };
    JOB.set(job)
        .map(drop)
        .map_err(|_| WorkloadError::NotPrepared("matmul twice"))
}

/// Computes this VP's rows of C and their checksum terms.
pub fn run(kernel: &Kernel, vp: usize) -> Result<(), WorkloadError> {
    let job = job()?;
    let n = job.n;
    let rows = share(n, kernel.vp_count(), vp);
    if rows.is_empty() {
        return Ok(());
    }
    let block = alloc::alloc_u64s(2 * rows.len() * n, kernel.node_of(vp))?;
    let (a, c) = block.split_at_mut(rows.len() * n);
    fill_a_rows(a, rows.start, n);
    multiply_rows(a, job.b, c, n);
    job.partial[vp].store(rows_checksum(c, rows.start, n), Ordering::Release);
    Ok(())
}

/// Adds the partial checksums and prints the result.
pub fn finish() -> Result<(), WorkloadError> {
    let job = job()?;
    let sum = job.partial.iter().fold(0u64, |sum, part| {
        sum.wrapping_add(part.load(Ordering::Acquire))
    });
    println!("matmul {} checksum = {sum}", job.n);
    Ok(())
}
