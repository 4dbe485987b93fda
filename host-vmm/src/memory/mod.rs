//! Logical memory of one node: the guest's memory as a memfd mapped twice, and the
//! userfaultfd machinery that decides, page by page, when the guest may touch it.
//!
//! Why two mappings of one memfd: the **guest mapping** is what KVM uses as the memory
//! slot; it is registered with userfaultfd (MISSING | MINOR | WP), so every access the node
//! has not allowed stops the VP in the kernel until the fault thread answers. The **DMA
//! window** is a plain second mapping of the same pages that the VMM (and later the NIC
//! model, through [`LogicalMemory::memfd`]) reads and writes without faulting. Page contents
//! therefore never need copying into place: the fabric writes a page through the DMA window
//! and `UFFDIO_CONTINUE` maps the page-cache page that already holds it. `MADV_DONTNEED` on
//! the guest mapping unmaps a page but keeps its contents; the next access is a MINOR fault
//! (measured: in MISSING-only mode it would be silently remapped, see docs/platform.md).
//!
//! Design rules:
//! - Every page has a local state ([`PageState`]: Invalid / Shared / Exclusive) and flags
//!   (write-protected, watched, fetching) in one byte; every change to a page's mapping
//!   happens under that page's stripe lock ([`pages`]). A single node keeps all pages
//!   Exclusive; the cluster adds transitions through [`LogicalMemory::set_page_state`],
//!   [`LogicalMemory::complete_fetch`] and a [`PageResolver`].
//! - The decisions (which ioctl answers which fault, what coalesces) are in
//!   [`pager`](self::pager), generic over the kernel boundary
//!   ([`uffd::MappingOps`]), and unit-tested without a kernel.
//! - VMM accesses through the DMA window are atomic per aligned 8-byte word: the guest runs
//!   concurrently, so a plain `memcpy` would be a data race.
//!
//! SpinWait. A VP that calls `SpinWait(addr, expected)` must sleep until the word may have
//! changed. [`LogicalMemory::spin_wait`] reads the word; if it equals `expected` it
//! registers a [`WakeSignal`] on the page ([`LogicalMemory::watch_page`], which
//! write-protects it), re-reads the word, and only then sleeps. Why this loses no write:
//! `UFFDIO_WRITEPROTECT` returns after the kernel flushed every TLB entry (and KVM's MMU
//! notifier dropped its shadow entries), so any guest write after that point takes a
//! write-protect fault, and the fault thread notifies the watchers before it lets the
//! write proceed. A write that completed before the protection is visible to the re-read,
//! which comes after the ioctl returned (a syscall is a full barrier on x86). VMM writes
//! through the DMA window do not fault; they store first, then (after a SeqCst fence) look
//! at the page's WATCHED bit, while the watcher sets WATCHED before its re-read: one of the
//! two sees the other (Dekker). Invalidations and `drop_page` notify too. Spurious wake-ups
//! are allowed by the ABI.
//!
//! ```no_run
//! use std::sync::Arc;
//! use host_vmm::memory::LogicalMemory;
//! use vima::call::UncheckedRange;
//!
//! let memory = LogicalMemory::new(16 << 20)?;
//! let handler = memory.spawn_fault_handler()?;
//! // Load something at boot through the DMA window, then give the guest mapping to KVM
//! // (`memory.guest_mapping_addr()`, `memory.size()`) as a memory slot.
//! let at = memory.check_range(UncheckedRange::new(0x20_0000, 4), 1).expect("inside");
//! memory.write(at, b"\x7fELF")?;
//! handler.stop()?;
//! # Ok::<(), host_vmm::memory::MemoryError>(())
//! ```

mod fault;
mod logical;
mod pager;
mod pages;
mod stats;
pub mod uffd;
mod wake;

use std::io;

pub use fault::{FaultHandler, LocalResolver, PageResolver};
pub use logical::{LogicalMemory, SpinWaitOutcome};
pub use pager::FetchRequest;
pub use pages::PageState;
pub use stats::{FaultStats, FaultStatsSnapshot, LatencyHistogram, LatencySummary};
pub use uffd::{FaultKind, UffdError};
pub use wake::WakeSignal;

/// Size of a logical page.
pub const PAGE_SIZE: u64 = vima::layout::PAGE_SIZE;

/// Errors of logical memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The size is zero or not a multiple of the page size.
    #[error("Logical memory size {size_bytes:#x} is not a non-zero multiple of 4096")]
    InvalidSize {
        /// The size asked for.
        size_bytes: u64,
    },
    /// Neither `/dev/userfaultfd` nor the syscall is permitted.
    #[error("userfaultfd is not available: need /dev/userfaultfd or CAP_SYS_PTRACE")]
    UserfaultfdUnavailable,
    /// Opening or negotiating the userfaultfd failed.
    #[error("Failed to open a userfaultfd")]
    OpenUserfaultfd {
        /// The cause.
        #[source]
        source: UffdError,
    },
    /// Registering the guest mapping failed.
    #[error("Failed to register the guest mapping with userfaultfd")]
    RegisterGuestMapping {
        /// The cause.
        #[source]
        source: UffdError,
    },
    /// `memfd_create` failed.
    #[error("Failed to create the memory file")]
    CreateMemfd {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `ftruncate` of the memfd failed.
    #[error("Failed to size the memory file to {size_bytes:#x} bytes")]
    SizeMemfd {
        /// The size asked for.
        size_bytes: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `mmap` failed.
    #[error("Failed to map the {mapping}")]
    MapMemory {
        /// Which mapping ("guest mapping" or "DMA window").
        mapping: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `madvise(MADV_NOHUGEPAGE)` failed.
    #[error("Failed to disable huge pages on the {mapping}")]
    AdviseMemory {
        /// Which mapping.
        mapping: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A checked range does not fit this memory (it was checked against another size).
    #[error("Range {addr:#x}+{len:#x} is outside logical memory of {size_bytes:#x} bytes")]
    OutOfRange {
        /// First address.
        addr: u64,
        /// Length.
        len: u64,
        /// Size of this memory.
        size_bytes: u64,
    },
    /// The buffer length differs from the range length.
    #[error("Buffer of {buf_len} bytes for a range of {range_len} bytes")]
    LengthMismatch {
        /// Range length.
        range_len: u64,
        /// Buffer length.
        buf_len: usize,
    },
    /// A discard needs whole pages.
    #[error("Range {addr:#x}+{len} is not whole pages")]
    NotPageAligned {
        /// First address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// Punching a hole for a discarded page failed.
    #[error("Failed to free page {page} of the memfd")]
    Punch {
        /// The page.
        page: u64,
        /// What fallocate said.
        #[source]
        source: std::io::Error,
    },
    /// A word access needs a range of the word's size at an address aligned to it.
    #[error("Range {addr:#x}+{len} is not one aligned word")]
    NotAWord {
        /// First address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// A page index beyond the end of memory.
    #[error("Page {page} is beyond the {pages} pages of logical memory")]
    PageOutOfRange {
        /// The index.
        page: u64,
        /// Number of pages.
        pages: u64,
    },
    /// Only the coherence protocol may make a Shared page writable.
    #[error("Page {page} is Shared and cannot be made writable locally")]
    PageShared {
        /// The index.
        page: u64,
    },
    /// `UFFDIO_WRITEPROTECT` failed.
    #[error("Failed to change write protection of page {page}")]
    WriteProtect {
        /// The index.
        page: u64,
        /// The cause.
        #[source]
        source: UffdError,
    },
    /// `MADV_DONTNEED` failed.
    #[error("Failed to drop page {page} from the guest mapping")]
    Discard {
        /// The index.
        page: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A fault handler already runs for this memory (two would split the coalescing).
    #[error("A fault handler already runs for this logical memory")]
    HandlerRunning,
    /// Creating the stop eventfd failed.
    #[error("Failed to create the fault handler's stop event")]
    CreateStopEvent {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Signalling the stop eventfd failed.
    #[error("Failed to signal the fault handler to stop")]
    SignalStop {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Spawning the thread failed.
    #[error("Failed to spawn the fault handler thread")]
    SpawnHandler {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The fault thread panicked.
    #[error("The fault handler thread panicked")]
    HandlerPanicked,
    /// `poll` on the userfaultfd failed.
    #[error("Failed to wait for userfaultfd events")]
    Poll {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading events failed.
    #[error("Failed to read userfaultfd events")]
    ReadFaults {
        /// The cause.
        #[source]
        source: UffdError,
    },
}
