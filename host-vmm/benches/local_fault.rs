//! Round trips of local userfaultfd faults on host threads: the bench thread touches the
//! guest mapping and the fault thread answers. No KVM here: the vCPU round trip (which adds
//! the PVM exit path) is benchmarked in `vp_roundtrip`.
//!
//! - `minor_fault`: `drop_page` (MADV_DONTNEED), then a read -> MINOR fault -> CONTINUE.
//! - `write_protect_fault`: `write_protect(on)`, then a write -> WP fault -> unprotect.
//! - `watched_write`: `watch_page` (protect + register), then a write -> WP fault ->
//!   unprotect + notify, until the watcher's signal fires: writer and waker together.
//! - `drop_page_only`: the `drop_page` part of `minor_fault` alone, to subtract.
//!
//! After the run it prints the fault thread's own service-time percentiles (event read to
//! resolution).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use host_vmm::memory::{LogicalMemory, WakeSignal, PAGE_SIZE};
use vima::call::UncheckedRange;

const PAGE: u64 = 3;

fn guest_word(memory: &LogicalMemory, page: u64) -> *mut u64 {
    let addr = usize::try_from(memory.guest_mapping_addr() + page * PAGE_SIZE).expect("address");
    std::ptr::with_exposed_provenance_mut::<u64>(addr)
}

fn local_fault(c: &mut Criterion) {
    let memory =
        LogicalMemory::new(64 * PAGE_SIZE).expect("logical memory (needs /dev/userfaultfd)");
    let handler = memory.spawn_fault_handler().expect("fault handler");
    let page_range = memory
        .check_range(UncheckedRange::new(PAGE * PAGE_SIZE, PAGE_SIZE), 8)
        .expect("inside");
    memory.write(page_range, &[0x5a; 4096]).expect("dma write");
    let word = guest_word(&memory, PAGE);

    let mut group = c.benchmark_group("local_fault");
    group.bench_function("minor_fault", |b| {
        b.iter(|| {
            memory.drop_page(PAGE).expect("drop");
            // SAFETY: `word` is the first word of an in-range page of the guest mapping,
            // which `memory` keeps mapped; the fault thread answers the fault.
            black_box(unsafe { word.read_volatile() })
        });
    });
    group.bench_function("drop_page_only", |b| {
        b.iter(|| memory.drop_page(PAGE).expect("drop"));
    });
    // Map the page again so the write-protect benches start from a present PTE.
    // SAFETY: as above.
    black_box(unsafe { word.read_volatile() });
    let mut value = 0u64;
    group.bench_function("write_protect_fault", |b| {
        b.iter(|| {
            memory.write_protect(PAGE, true).expect("protect");
            value += 1;
            // SAFETY: as above; the write faults and waits for the unprotect.
            unsafe { word.write_volatile(value) };
        });
    });
    let signal = Arc::new(WakeSignal::new());
    group.bench_function("watched_write", |b| {
        b.iter(|| {
            memory.watch_page(PAGE, &signal).expect("watch");
            value += 1;
            // SAFETY: as above.
            unsafe { word.write_volatile(value) };
            // The unprotect resumes the writer first, then the fault thread notifies.
            let deadline = Instant::now() + Duration::from_secs(10);
            assert!(
                signal.wait_until(deadline),
                "the write notified the watcher"
            );
        });
    });
    group.finish();

    let stats = memory.fault_stats().snapshot();
    eprintln!(
        "fault thread service time over {} faults: p50 {:.2} us, p90 {:.2} us, p99 {:.2} us \
         (minor {}, write-protect {}, coalesced {}, errors {})",
        stats.latency.samples,
        stats.latency.p50_us,
        stats.latency.p90_us,
        stats.latency.p99_us,
        stats.minor_faults,
        stats.write_protect_faults,
        stats.coalesced,
        stats.errors,
    );
    handler.stop().expect("stop");
}

criterion_group!(benches, local_fault);
criterion_main!(benches);
