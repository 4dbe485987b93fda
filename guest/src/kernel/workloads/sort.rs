//! `sort N`: N xorshift64 values sorted by all VPs; prints `sort N checksum = S`.
//!
//! VP 0 generates the input on its node before the others start (the sequence is serial).
//! Every VP copies its share into memory on its own node and sorts it there; VP 0 then
//! merges the sorted chunks, computing the checksum as it goes.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use guest::sort::{merged_checksum, XorShift64};
use guest::split::share;
use vima::layout::MAX_VPS;

use crate::alloc;
use crate::machine::Kernel;
use crate::sync::Once;

use super::WorkloadError;

/// Where one VP left its sorted chunk (`len` is published last).
#[derive(Debug)]
struct Chunk {
    addr: AtomicU64,
    len: AtomicUsize,
}

#[derive(Debug)]
struct SortJob {
    n: usize,
    /// The unsorted input; read-only once published.
    input: &'static [u64],
    chunks: [Chunk; MAX_VPS],
}

static JOB: Once<SortJob> = Once::new();

fn job() -> Result<&'static SortJob, WorkloadError> {
    JOB.get().ok_or(WorkloadError::NotPrepared("sort"))
}

/// Generates the input on VP 0's node.
pub fn prepare(kernel: &Kernel, n: usize) -> Result<(), WorkloadError> {
    let input = alloc::alloc_u64s(n, kernel.node_of(0))?;
    XorShift64::default().fill(input);
    let job = SortJob {
        n,
        input,
        chunks: [const {
            Chunk {
                addr: AtomicU64::new(0),
                len: AtomicUsize::new(0),
            }
        }; MAX_VPS],
    };
    JOB.set(job)
        .map(drop)
        .map_err(|_| WorkloadError::NotPrepared("sort twice"))
}

/// Sorts this VP's share in memory on its node and publishes it.
pub fn run(kernel: &Kernel, vp: usize) -> Result<(), WorkloadError> {
    let job = job()?;
    let range = share(job.n, kernel.vp_count(), vp);
    if range.is_empty() {
        return Ok(());
    }
    let chunk = alloc::alloc_u64s(range.len(), kernel.node_of(vp))?;
    chunk.copy_from_slice(&job.input[range]);
    chunk.sort_unstable();
    let slot = &job.chunks[vp];
    slot.addr.store(chunk.as_ptr() as u64, Ordering::Relaxed);
    slot.len.store(chunk.len(), Ordering::Release);
    Ok(())
}

/// Merges the chunks and prints the checksum.
pub fn finish() -> Result<(), WorkloadError> {
    let job = job()?;
    let mut chunks: [&[u64]; MAX_VPS] = [&[]; MAX_VPS];
    for (chunk, slot) in chunks.iter_mut().zip(&job.chunks) {
        let len = slot.len.load(Ordering::Acquire);
        if len > 0 {
            let addr = slot.addr.load(Ordering::Relaxed);
            // SAFETY: a VP published (addr, len) of its sorted chunk, a block the
            // allocator gave it for good, with release ordering on `len` after it
            // finished writing; this acquire load sees the writes, and nobody writes the
            // chunk again.
            *chunk = unsafe { core::slice::from_raw_parts(addr as *const u64, len) };
        }
    }
    let sum = merged_checksum(&chunks)?;
    println!("sort {} checksum = {sum}", job.n);
    Ok(())
}
