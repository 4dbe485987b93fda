//! `litmus NAME ITERS`: runs a memory-model litmus test ITERS times and prints
//! `litmus NAME forbidden = F allowed = A` (the tests and their forbidden outcomes are in
//! [`guest::litmus`]).
//!
//! Thread `t` runs on VP `t % P`, where `P = min(VPs, threads)` VPs take part; a VP with
//! several threads runs them one after another, starting with a different one each
//! iteration, with an `mfence` between them (as a context switch). Every iteration: VP 0
//! zeroes the variables and results, a barrier, every VP runs its threads, a barrier, VP 0
//! records the outcome. The variables sit on cache lines of their own, the results on
//! another page. Each thread body is one inline-assembly block, so its loads, stores and `mfence` run exactly in program order as written.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use guest::litmus::{LitmusTally, LitmusTest, MAX_THREADS};

use crate::alloc;
use crate::barrier::Barrier;
use crate::machine::Kernel;
use crate::sync::{Once, PageAligned};

use super::WorkloadError;

/// Bytes between variables (one cache line each).
const LINE: u64 = 64;

#[derive(Debug)]
struct LitmusJob {
    test: LitmusTest,
    iterations: u64,
    /// VPs taking part.
    participants: usize,
    /// `x` at `vars`, `y` one line further.
    vars: u64,
    /// Result `k` at `results + k * LINE`.
    results: u64,
    forbidden: AtomicU64,
    allowed: AtomicU64,
}

static JOB: Once<LitmusJob> = Once::new();
static BARRIER: PageAligned<Barrier> = PageAligned(Barrier::new());

fn job() -> Result<&'static LitmusJob, WorkloadError> {
    JOB.get().ok_or(WorkloadError::NotPrepared("litmus"))
}

/// Allocates the variable and result pages on VP 0's node.
pub fn prepare(kernel: &Kernel, test: LitmusTest, iterations: u64) -> Result<(), WorkloadError> {
    let node = kernel.node_of(0);
    let job = LitmusJob {
        test,
        iterations,
        participants: kernel.vp_count().min(test.thread_count()),
        vars: alloc::alloc_pages(1, node)?,
        results: alloc::alloc_pages(1, node)?,
        forbidden: AtomicU64::new(0),
        allowed: AtomicU64::new(0),
    };
    JOB.set(job)
        .map(drop)
        .map_err(|_| WorkloadError::NotPrepared("litmus twice"))
}

/// `mfence` between two threads run one after the other on the same VP, as a context
/// switch would be: without it the second thread could read the first one's store from
/// the store buffer before other VPs see it, an outcome x86-TSO allows for one CPU but
/// that the tests count as forbidden for two (iriw with two VPs showed it).
fn thread_switch_fence() {
    // SAFETY: `mfence` only orders memory accesses.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) };
}

/// Stores 1 to `*a`, then to `*b`.
///
/// # Safety
/// Both must be valid, aligned u64 locations.
unsafe fn store_store(a: *mut u64, b: *mut u64) {
    // SAFETY: the caller guarantees both locations.
    unsafe {
        asm!(
            "mov qword ptr [{a}], 1",
            "mov qword ptr [{b}], 1",
            a = in(reg) a,
            b = in(reg) b,
            options(nostack, preserves_flags)
        );
    }
}

/// Stores 1 to `*a`.
///
/// # Safety
/// `a` must be a valid, aligned u64 location.
unsafe fn store(a: *mut u64) {
    // SAFETY: the caller guarantees the location.
    unsafe {
        asm!(
            "mov qword ptr [{a}], 1",
            a = in(reg) a,
            options(nostack, preserves_flags)
        );
    }
}

/// Loads `*a`, then `*b`.
///
/// # Safety
/// Both must be valid, aligned u64 locations.
unsafe fn load_load(a: *const u64, b: *const u64) -> (u64, u64) {
    let (first, second): (u64, u64);
    // SAFETY: the caller guarantees both locations.
    unsafe {
        asm!(
            "mov {first}, qword ptr [{a}]",
            "mov {second}, qword ptr [{b}]",
            a = in(reg) a,
            b = in(reg) b,
            first = out(reg) first,
            second = out(reg) second,
            options(nostack, preserves_flags)
        );
    }
    (first, second)
}

/// Stores 1 to `*a`, `mfence`, loads `*b`.
///
/// # Safety
/// Both must be valid, aligned u64 locations.
unsafe fn store_fence_load(a: *mut u64, b: *const u64) -> u64 {
    let loaded: u64;
    // SAFETY: the caller guarantees both locations.
    unsafe {
        asm!(
            "mov qword ptr [{a}], 1",
            "mfence",
            "mov {loaded}, qword ptr [{b}]",
            a = in(reg) a,
            b = in(reg) b,
            loaded = out(reg) loaded,
            options(nostack, preserves_flags)
        );
    }
    loaded
}

/// Loads `*a`, then stores 1 to `*b`.
///
/// # Safety
/// Both must be valid, aligned u64 locations.
unsafe fn load_store(a: *const u64, b: *mut u64) -> u64 {
    let loaded: u64;
    // SAFETY: the caller guarantees both locations.
    unsafe {
        asm!(
            "mov {loaded}, qword ptr [{a}]",
            "mov qword ptr [{b}], 1",
            a = in(reg) a,
            b = in(reg) b,
            loaded = out(reg) loaded,
            options(nostack, preserves_flags)
        );
    }
    loaded
}

impl LitmusJob {
    fn x(&self) -> *mut u64 {
        self.vars as *mut u64
    }

    fn y(&self) -> *mut u64 {
        (self.vars + LINE) as *mut u64
    }

    fn result(&self, k: usize) -> *mut u64 {
        (self.results + k as u64 * LINE) as *mut u64
    }

    /// Zeroes the variables and results (VP 0, between iterations).
    fn reset(&self) {
        // SAFETY: `vars` and `results` are pages this job owns; every location is
        // 8-byte aligned inside them. Volatile keeps the stores where they are.
        unsafe {
            self.x().write_volatile(0);
            self.y().write_volatile(0);
            for k in 0..MAX_THREADS {
                self.result(k).write_volatile(0);
            }
        }
    }

    fn results(&self) -> [u64; MAX_THREADS] {
        // SAFETY: as in `reset`.
        core::array::from_fn(|k| unsafe { self.result(k).read_volatile() })
    }

    /// Runs thread `thread` of the test once.
    fn run_thread(&self, thread: usize) {
        let (x, y) = (self.x(), self.y());
        // SAFETY: x, y and the results are aligned locations in this job's pages, which
        // live as long as the kernel; all VPs access them only during an iteration, as the
        // test intends.
        unsafe {
            match (self.test, thread) {
                (LitmusTest::Mp, 0) => store_store(x, y),
                (LitmusTest::Mp, _) => {
                    let (r1, r2) = load_load(y, x);
                    self.result(0).write_volatile(r1);
                    self.result(1).write_volatile(r2);
                }
                (LitmusTest::Sb, 0) => self.result(0).write_volatile(store_fence_load(x, y)),
                (LitmusTest::Sb, _) => self.result(1).write_volatile(store_fence_load(y, x)),
                (LitmusTest::Lb, 0) => self.result(0).write_volatile(load_store(x, y)),
                (LitmusTest::Lb, _) => self.result(1).write_volatile(load_store(y, x)),
                (LitmusTest::Iriw, 0) => store(x),
                (LitmusTest::Iriw, 1) => store(y),
                (LitmusTest::Iriw, 2) => {
                    let (r1, r2) = load_load(x, y);
                    self.result(0).write_volatile(r1);
                    self.result(1).write_volatile(r2);
                }
                (LitmusTest::Iriw, _) => {
                    let (r3, r4) = load_load(y, x);
                    self.result(2).write_volatile(r3);
                    self.result(3).write_volatile(r4);
                }
            }
        }
    }
}

/// This VP's part: its threads, every iteration; VP 0 also keeps the tally.
pub fn run(vp: usize) -> Result<(), WorkloadError> {
    let job = job()?;
    let parties = job.participants;
    if vp >= parties {
        return Ok(());
    }
    let threads = job.test.thread_count();
    // This VP runs threads vp, vp + parties, ...
    let mine = threads.saturating_sub(vp).div_ceil(parties);
    let mut tally = LitmusTally::default();
    let mut first = 0;
    for _ in 0..job.iterations {
        if vp == 0 {
            job.reset();
        }
        BARRIER.wait(parties as u64);
        for k in 0..mine {
            if k > 0 {
                thread_switch_fence();
            }
            job.run_thread(vp + ((first + k) % mine) * parties);
        }
        first = (first + 1) % mine;
        BARRIER.wait(parties as u64);
        if vp == 0 {
            tally.record(job.test, job.results());
        }
    }
    if vp == 0 {
        job.forbidden.store(tally.forbidden, Ordering::Relaxed);
        job.allowed.store(tally.allowed, Ordering::Relaxed);
    }
    Ok(())
}

/// Prints the tally.
pub fn finish() -> Result<(), WorkloadError> {
    let job = job()?;
    println!(
        "litmus {} forbidden = {} allowed = {}",
        job.test.name(),
        job.forbidden.load(Ordering::Relaxed),
        job.allowed.load(Ordering::Relaxed)
    );
    Ok(())
}
