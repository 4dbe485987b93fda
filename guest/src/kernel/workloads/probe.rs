//! `probe KIND PAGES [SHARERS]`: the fault-latency probe. VP 0 times one load or store to
//! each of PAGES pages that the other nodes' VPs first put in the state KIND needs, and
//! prints one line with the latency distribution (format in [`guest::probe`]).
//!
//! Why it is built this way:
//! - **One access per page per phase.** Every timed access is the first touch of its page
//!   in that phase, so each sample is exactly one fault of the kind asked for; the loop
//!   never touches a page twice, and the samples array is written (faulted in) before
//!   timing starts.
//! - **rdtsc around a single instruction.** `lfence; rdtsc` before, the load or store,
//!   then `mfence` (stores) `lfence; rdtsc`: the guest runs at CPL3 where `rdtsc` is
//!   native, and the fences keep the access between the two reads. Cycles become
//!   nanoseconds with `tsc_khz` from the configuration. The number is end to end: the
//!   access, the VM exit into the host's userfaultfd handling, the fetch, and the resume.
//! - **Interrupts held back while timing** (the `VpShared` mask, no exit), so the node tick
//!   does not land inside a sample.
//! - **Phases separated by a barrier** whose variables, like the published block address
//!   and the word VP 0 sleeps on, sit on pages of their own, away from the probed pages.
//!   The participants are the first VP of every node ("node j" below); other VPs idle.
//! - **Phase lines.** Just before and after its timed loop VP 0 prints
//!   [`guest::probe::PHASE_BEGIN`] / [`guest::probe::PHASE_END`] and then sleeps
//!   [`guest::probe::PHASE_SETTLE_MS`], so that `cvmm bench fault-latency` can sample the
//!   serving nodes' CPU time around exactly the timed loop.
//!
//! Kinds (pages homed on the node named; "writes" store a per-page pattern):
//! - `local`: node 0 stores to fresh pages of its own memory (first touch: the local fault
//!   floor).
//! - `read_miss`: node 1 writes pages of its memory; node 0 loads them (and checks the
//!   values).
//! - `write_miss`: node 1 writes pages of its memory; node 0 stores to them.
//! - `upgrade`: as `write_miss`, but node 0 first loads every page (untimed), so the timed
//!   store upgrades a Shared copy.
//! - `invalidate SHARERS=k`: node 0 writes pages of its memory; nodes 1..=k load them
//!   (Shared there); node 0 stores to them, each store waiting for k invalidation acks.
//!
//! After the timed phase of a store kind, a node that held the pages reads them back and
//! checks node 0's values, so a broken protocol fails the run instead of timing it.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use guest::probe::{
    check_shape, cycles_to_ns, page_pattern, summarize, ProbeError, ProbeKind, ProbeLine,
    ProbeSummary, PHASE_BEGIN, PHASE_END, PHASE_SETTLE_MS,
};
use vima::layout::{MAX_NODES, PAGE_SIZE};

use crate::alloc;
use crate::barrier::Barrier;
use crate::interrupts::without_interrupts;
use crate::machine::Kernel;
use crate::sync::{Once, PageAligned};
use crate::vima_calls;

use super::WorkloadError;

/// What node 0 stores in the timed phase: distinct from what the page held before.
const WRITTEN: u64 = 0xffff_0000_0000_0000;

#[derive(Debug)]
struct ProbeJob {
    kind: ProbeKind,
    pages: u64,
    sharers: u32,
    /// Nodes (= barrier parties).
    nodes: usize,
    /// The first VP of each node: the one that acts for it.
    leads: [usize; MAX_NODES],
    tsc_khz: u64,
}

static JOB: Once<ProbeJob> = Once::new();
static BARRIER: PageAligned<Barrier> = PageAligned(Barrier::new());
/// Address of the probed block, published by the node that allocates it.
static BLOCK: PageAligned<AtomicU64> = PageAligned(AtomicU64::new(0));
/// A word nobody writes: VP 0 sleeps on it with `SpinWait`.
static PAUSE: PageAligned<AtomicU64> = PageAligned(AtomicU64::new(0));

fn job() -> Result<&'static ProbeJob, WorkloadError> {
    JOB.get().ok_or(WorkloadError::NotPrepared("probe"))
}

/// Checks the cluster shape and finds the VP acting for each node.
pub fn prepare(
    kernel: &Kernel,
    kind: ProbeKind,
    pages: u64,
    sharers: u32,
) -> Result<(), WorkloadError> {
    let nodes = kernel.config.node_count().min(MAX_NODES);
    check_shape(kind, sharers, nodes as u64)?;
    let tsc_khz = kernel.config.header().tsc_khz;
    if tsc_khz == 0 {
        return Err(ProbeError::NoTscRate.into());
    }
    let mut leads = [0; MAX_NODES];
    for (node_id, lead) in (0u32..).zip(leads.iter_mut().take(nodes)) {
        *lead = (0..kernel.vp_count())
            .find(|&vp| kernel.node_of(vp) == node_id)
            .ok_or(ProbeError::NoVpOnNode { node: node_id })?;
    }
    if leads[0] != 0 {
        return Err(ProbeError::NoVpOnNode { node: 0 }.into());
    }
    let job = ProbeJob {
        kind,
        pages,
        sharers,
        nodes,
        leads,
        tsc_khz,
    };
    JOB.set(job)
        .map(drop)
        .map_err(|_| WorkloadError::NotPrepared("probe twice"))
}

/// This VP's part; VP 0 prints the result line.
pub fn run(kernel: &Kernel, vp: usize) -> Result<(), WorkloadError> {
    let job = job()?;
    let Some(node) = job.leads[..job.nodes].iter().position(|&lead| lead == vp) else {
        return Ok(());
    };
    let summary = match job.kind {
        ProbeKind::Local => match node {
            0 => Some(timed_phase(
                kernel,
                job,
                alloc_block(kernel, job.pages, 0)?,
            )?),
            _ => None,
        },
        ProbeKind::ReadMiss | ProbeKind::WriteMiss | ProbeKind::Upgrade => {
            remote_home(kernel, job, node)?
        }
        ProbeKind::Invalidate => home_with_sharers(kernel, job, node)?,
    };
    if let Some(summary) = summary {
        let line = ProbeLine {
            kind: job.kind,
            sharers: job.sharers,
            summary,
        };
        println!("{line}");
    }
    Ok(())
}

/// `read_miss`, `write_miss`, `upgrade`: the pages live and were last written on node 1.
fn remote_home(
    kernel: &Kernel,
    job: &ProbeJob,
    node: usize,
) -> Result<Option<ProbeSummary>, WorkloadError> {
    let parties = job.nodes as u64;
    if node == 1 {
        let block = alloc_block(kernel, job.pages, 1)?;
        write_patterns(block, job.pages);
        BLOCK.store(block, Ordering::Release);
    }
    BARRIER.wait(parties);
    let mut summary = None;
    if node == 0 {
        let block = BLOCK.load(Ordering::Acquire);
        if job.kind == ProbeKind::Upgrade {
            check_patterns(block, job.pages, page_pattern)?;
        }
        summary = Some(timed_phase(kernel, job, block)?);
    }
    BARRIER.wait(parties);
    if node == 1 && job.kind.is_write() {
        check_patterns(BLOCK.load(Ordering::Acquire), job.pages, written)?;
    }
    Ok(summary)
}

/// `invalidate`: the pages live on node 0 and are Shared on nodes 1..=sharers.
fn home_with_sharers(
    kernel: &Kernel,
    job: &ProbeJob,
    node: usize,
) -> Result<Option<ProbeSummary>, WorkloadError> {
    let parties = job.nodes as u64;
    let sharer = (1..=job.sharers as usize).contains(&node);
    if node == 0 {
        let block = alloc_block(kernel, job.pages, 0)?;
        write_patterns(block, job.pages);
        BLOCK.store(block, Ordering::Release);
    }
    BARRIER.wait(parties);
    if sharer {
        check_patterns(BLOCK.load(Ordering::Acquire), job.pages, page_pattern)?;
    }
    BARRIER.wait(parties);
    let mut summary = None;
    if node == 0 {
        summary = Some(timed_phase(kernel, job, BLOCK.load(Ordering::Acquire))?);
    }
    BARRIER.wait(parties);
    if sharer {
        check_patterns(BLOCK.load(Ordering::Acquire), job.pages, written)?;
    }
    Ok(summary)
}

/// `pages` fresh pages of `node`'s memory.
fn alloc_block(kernel: &Kernel, pages: u64, node: u32) -> Result<u64, WorkloadError> {
    let block = alloc::alloc_pages(pages, node)?;
    let last = block + (pages - 1) * PAGE_SIZE;
    let home = |addr| kernel.config.home_of(addr);
    if home(block) != Some(node) || home(last) != Some(node) {
        return Err(ProbeError::Placement { pages, node }.into());
    }
    Ok(block)
}

fn word(block: u64, index: u64) -> *mut u64 {
    (block + index * PAGE_SIZE) as *mut u64
}

/// The value node 0 stores into page `index` in the timed phase.
fn written(index: u64) -> u64 {
    page_pattern(index) ^ WRITTEN
}

fn write_patterns(block: u64, pages: u64) {
    for index in 0..pages {
        // SAFETY: `block` is `pages` pages this workload allocated for good; word 0 of each
        // is aligned. Volatile: the store must happen, on this VP.
        unsafe { word(block, index).write_volatile(page_pattern(index)) };
    }
}

fn check_patterns(block: u64, pages: u64, expected: fn(u64) -> u64) -> Result<(), ProbeError> {
    for index in 0..pages {
        // SAFETY: as in `write_patterns`; other VPs wrote these words before the barrier
        // this VP passed since.
        let got = unsafe { word(block, index).read_volatile() };
        if got != expected(index) {
            return Err(ProbeError::WrongData {
                index,
                expected: expected(index),
                got,
            });
        }
    }
    Ok(())
}

/// `rdtsc`, not reordered with earlier instructions.
fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `lfence` and `rdtsc` only read the time stamp counter (allowed at CPL3).
    unsafe {
        asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nostack, nomem, preserves_flags));
    }
    u64::from(hi) << 32 | u64::from(lo)
}

/// Cycles one load of `*addr` took, and the value loaded.
///
/// # Safety
/// `addr` must be a valid, aligned u64 location.
unsafe fn timed_load(addr: *const u64) -> (u64, u64) {
    let (start, end, value): (u64, u64, u64);
    // SAFETY: the caller guarantees `addr`; the rest only reads the TSC.
    unsafe {
        asm!(
            "lfence",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov {start}, rax",
            "mov {value}, qword ptr [{addr}]",
            "lfence",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            addr = in(reg) addr,
            start = out(reg) start,
            value = out(reg) value,
            out("rax") end,
            out("rdx") _,
            options(nostack),
        );
    }
    (end.wrapping_sub(start), value)
}

/// Cycles one store of `value` to `*addr` took (until it is globally visible).
///
/// # Safety
/// `addr` must be a valid, aligned u64 location that may be written.
unsafe fn timed_store(addr: *mut u64, value: u64) -> u64 {
    let (start, end): (u64, u64);
    // SAFETY: the caller guarantees `addr`; the rest only reads the TSC and orders memory.
    unsafe {
        asm!(
            "lfence",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov {start}, rax",
            "mov qword ptr [{addr}], {value}",
            "mfence",
            "lfence",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            addr = in(reg) addr,
            value = in(reg) value,
            start = out(reg) start,
            out("rax") end,
            out("rdx") _,
            options(nostack),
        );
    }
    end.wrapping_sub(start)
}

/// Sleeps [`PHASE_SETTLE_MS`] without burning the CPU the other nodes share.
fn settle(tsc_khz: u64) {
    let deadline = rdtsc().saturating_add(PHASE_SETTLE_MS * tsc_khz);
    loop {
        let now = rdtsc();
        if now >= deadline {
            return;
        }
        let left_ns = cycles_to_ns(deadline - now, tsc_khz).max(1);
        // Nobody writes PAUSE: the call returns on its timeout or an interrupt. A failed
        // call only makes this loop spin.
        let _ = vima_calls::spin_wait(&PAUSE, 0, left_ns);
    }
}

/// Prints a phase line now rather than at the next newline-less print.
fn phase_line(text: &str, kind: ProbeKind) {
    println!("{text} {}", kind.name());
    crate::console::flush();
}

/// VP 0: one timed access per page of `block`, between the two phase lines.
fn timed_phase(kernel: &Kernel, job: &ProbeJob, block: u64) -> Result<ProbeSummary, WorkloadError> {
    let pages = usize::try_from(job.pages).map_err(|_| WorkloadError::NotPrepared("probe size"))?;
    // Fresh pages of this node: fault them in now, not inside the timed loop.
    let samples = alloc::alloc_u64s(pages, kernel.node_of(0))?;
    samples.fill(0);
    let mut wrong = None;
    phase_line(PHASE_BEGIN, job.kind);
    settle(job.tsc_khz);
    without_interrupts(|| {
        for (index, sample) in (0..job.pages).zip(samples.iter_mut()) {
            let addr = word(block, index);
            *sample = if job.kind.is_write() {
                // SAFETY: word 0 of a page of the probed block, which lives for ever.
                unsafe { timed_store(addr, written(index)) }
            } else {
                // SAFETY: as above.
                let (cycles, value) = unsafe { timed_load(addr) };
                if value != page_pattern(index) && wrong.is_none() {
                    wrong = Some(ProbeError::WrongData {
                        index,
                        expected: page_pattern(index),
                        got: value,
                    });
                }
                cycles
            };
        }
    });
    phase_line(PHASE_END, job.kind);
    settle(job.tsc_khz);
    if let Some(err) = wrong {
        return Err(err.into());
    }
    summarize(samples, job.tsc_khz).ok_or(WorkloadError::NotPrepared("probe of no pages"))
}
