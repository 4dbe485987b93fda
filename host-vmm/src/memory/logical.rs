//! [`LogicalMemory`]: the memfd, its two mappings, the userfaultfd, the page table and the
//! fault statistics of one node, and the safe DMA-window accessors.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use vima::call::{LogicalRange, UncheckedRange};
use vima::Status;

use super::fault::{FaultHandler, LocalResolver, PageResolver};
use super::pager::Pager;
use super::pages::{PageState, PageTable, WATCHED};
use super::stats::FaultStats;
use super::uffd::{RegisterMode, UffdError, Userfaultfd};
use super::wake::WakeSignal;
use super::{MemoryError, PAGE_SIZE};

/// One shared mapping of the memfd; unmapped on drop.
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is an address range this process owns until drop; it holds no
// thread-affine state, and all accesses through it (in LogicalMemory) are atomic or by
// the kernel, so moving it or sharing it between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: see Send; `&Mapping` only gives the address.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map_shared(
        fd: BorrowedFd<'_>,
        len: usize,
        mapping: &'static str,
    ) -> Result<Self, MemoryError> {
        // SAFETY: a new shared mapping at an address the kernel chooses: it cannot alias
        // any existing Rust object. The fd is a memfd of at least `len` bytes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MemoryError::MapMemory {
                mapping,
                source: io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(MemoryError::MapMemory {
            mapping,
            source: io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
        let map = Self { base, len };
        // SAFETY: advice on our own fresh mapping; NOHUGEPAGE keeps 4 KiB granularity so
        // faults, protection and drops act on one logical page.
        let rc = unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) };
        if rc < 0 {
            return Err(MemoryError::AdviseMemory {
                mapping,
                source: io::Error::last_os_error(),
            });
        }
        Ok(map)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `map_shared` with this length and nothing
        // refers into it after its owner is dropped (KVM memory slots must be removed
        // before the last Arc<LogicalMemory> goes, which the VM owner ensures).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// The logical memory of one node; see the module docs of [`crate::memory`].
#[derive(Debug)]
pub struct LogicalMemory {
    guest: Mapping,
    dma: Mapping,
    size: u64,
    memfd: OwnedFd,
    pub(super) uffd: Userfaultfd,
    pages: PageTable,
    pub(super) stats: FaultStats,
    pub(super) handler_active: AtomicBool,
}

/// Why [`LogicalMemory::spin_wait`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpinWaitOutcome {
    /// The word no longer equals `expected` (ViMA reason 1).
    Differs,
    /// The signal was notified: the page was written or invalidated, or someone else (an
    /// interrupt) notified it (ViMA reason 0 or 2; the caller tells which).
    Woken,
    /// The deadline passed.
    TimedOut,
}

impl LogicalMemory {
    /// Creates `size_bytes` of zeroed logical memory (a multiple of 4096), with the guest
    /// mapping registered for MISSING, MINOR and write-protect faults. Every page starts
    /// Exclusive. Faults block until [`LogicalMemory::spawn_fault_handler`] runs.
    pub fn new(size_bytes: u64) -> Result<Arc<Self>, MemoryError> {
        let invalid = MemoryError::InvalidSize { size_bytes };
        if size_bytes == 0 || size_bytes & (PAGE_SIZE - 1) != 0 {
            return Err(invalid);
        }
        let len =
            usize::try_from(size_bytes).map_err(|_| MemoryError::InvalidSize { size_bytes })?;
        let off_t = libc::off_t::try_from(size_bytes).map_err(|_| invalid)?;
        let uffd = Userfaultfd::open().map_err(|source| match source {
            UffdError::Unavailable => MemoryError::UserfaultfdUnavailable,
            source => MemoryError::OpenUserfaultfd { source },
        })?;
        let name: &CStr = c"cvmm-logical-memory";
        // SAFETY: memfd_create takes a nul-terminated name and flags and returns a new fd.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(MemoryError::CreateMemfd {
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: memfd_create returned a new fd that nothing else owns.
        let memfd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on our own memfd; the new size is all holes (reads as zero).
        if unsafe { libc::ftruncate(memfd.as_raw_fd(), off_t) } < 0 {
            return Err(MemoryError::SizeMemfd {
                size_bytes,
                source: io::Error::last_os_error(),
            });
        }
        let guest = Mapping::map_shared(memfd.as_fd(), len, "guest mapping")?;
        let dma = Mapping::map_shared(memfd.as_fd(), len, "DMA window")?;
        let mode = RegisterMode::MISSING
            .union(RegisterMode::MINOR)
            .union(RegisterMode::WP);
        uffd.register(
            guest.base.as_ptr().expose_provenance() as u64,
            size_bytes,
            mode,
        )
        .map_err(|source| MemoryError::RegisterGuestMapping { source })?;
        let pages = usize::try_from(size_bytes / PAGE_SIZE)
            .map_err(|_| MemoryError::InvalidSize { size_bytes })?;
        Ok(Arc::new(Self {
            guest,
            dma,
            size: size_bytes,
            memfd,
            uffd,
            pages: PageTable::new(pages, PageState::Exclusive),
            stats: FaultStats::new(),
            handler_active: AtomicBool::new(false),
        }))
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of logical pages.
    pub fn page_count(&self) -> u64 {
        self.size / PAGE_SIZE
    }

    /// Host virtual address of the guest mapping, for KVM's `set_user_memory_region`. Valid
    /// as long as this `LogicalMemory` lives. Its provenance is exposed, so host code (tests,
    /// benchmarks) may turn it back into a pointer with `std::ptr::with_exposed_provenance`.
    pub fn guest_mapping_addr(&self) -> u64 {
        self.guest.base.as_ptr().expose_provenance() as u64
    }

    /// The memfd, to hand to the NIC model (which maps it as its DMA window).
    pub fn memfd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    /// The fault counters and latency histogram.
    pub fn fault_stats(&self) -> &FaultStats {
        &self.stats
    }

    /// Checks a guest claim against this memory's size (see [`UncheckedRange::check`]).
    pub fn check_range(&self, range: UncheckedRange, align: u64) -> Result<LogicalRange, Status> {
        range.check(self.size, align)
    }

    pub(super) fn pager(&self) -> Pager<'_, Userfaultfd> {
        Pager {
            ops: &self.uffd,
            pages: &self.pages,
            stats: &self.stats,
            guest_base: self.guest_mapping_addr(),
        }
    }

    /// `(offset, len)` of a range in the DMA window, re-checked against this memory.
    fn window(&self, range: LogicalRange) -> Result<(usize, usize), MemoryError> {
        let out_of_range = MemoryError::OutOfRange {
            addr: range.addr(),
            len: range.len(),
            size_bytes: self.size,
        };
        match range.addr().checked_add(range.len()) {
            Some(end) if end <= self.size => {}
            _ => return Err(out_of_range),
        }
        // Both fit: they are at most `size`, which fits a usize (checked in `new`).
        let offset = usize::try_from(range.addr()).map_err(|_| MemoryError::OutOfRange {
            addr: range.addr(),
            len: range.len(),
            size_bytes: self.size,
        })?;
        let len = usize::try_from(range.len()).map_err(|_| out_of_range)?;
        Ok((offset, len))
    }

    fn word(&self, at: LogicalRange) -> Result<&AtomicU64, MemoryError> {
        if at.len() != 8 || at.addr() & 7 != 0 {
            return Err(MemoryError::NotAWord {
                addr: at.addr(),
                len: at.len(),
            });
        }
        let (offset, _) = self.window(at)?;
        // SAFETY: `offset + 8 <= size` (checked by `window`), so the pointer is inside the
        // DMA window, which lives as long as `self`; it is 8-byte aligned (the mapping is
        // page aligned and the offset a multiple of 8); the memory is only accessed
        // atomically by this process (and by the guest and the kernel, outside Rust's
        // model, as any shared memory).
        Ok(unsafe { AtomicU64::from_ptr(self.dma.base.as_ptr().add(offset).cast::<u64>()) })
    }

    /// Reads an aligned u64 atomically through the DMA window.
    pub fn read_u64(&self, at: LogicalRange) -> Result<u64, MemoryError> {
        Ok(self.word(at)?.load(Ordering::SeqCst))
    }

    /// Writes an aligned u64 atomically through the DMA window, then notifies the page's
    /// SpinWait watchers.
    pub fn write_u64(&self, at: LogicalRange, value: u64) -> Result<(), MemoryError> {
        self.word(at)?.store(value, Ordering::SeqCst);
        self.after_write(at.addr(), 8)
    }

    /// Adds `value` to an aligned u32 atomically through the DMA window (wrapping), without
    /// notifying watchers: for counters the guest reads when it wants to.
    pub fn add_u32(&self, at: LogicalRange, value: u32) -> Result<u32, MemoryError> {
        if at.len() != 4 || at.addr() & 3 != 0 {
            return Err(MemoryError::NotAWord {
                addr: at.addr(),
                len: at.len(),
            });
        }
        let (offset, _) = self.window(at)?;
        // SAFETY: `offset + 4 <= size` (checked by `window`), inside the DMA window, which
        // lives as long as `self`; 4-byte aligned (checked above, the mapping is page
        // aligned); accessed only atomically by this process, as in `word`.
        let word = unsafe { AtomicU32::from_ptr(self.dma.base.as_ptr().add(offset).cast::<u32>()) };
        Ok(word.fetch_add(value, Ordering::SeqCst))
    }

    /// Copies a range out of the DMA window (atomic per aligned word, not as a whole).
    pub fn read(&self, range: LogicalRange, out: &mut [u8]) -> Result<(), MemoryError> {
        let (offset, len) = self.window(range)?;
        if out.len() != len {
            return Err(MemoryError::LengthMismatch {
                range_len: range.len(),
                buf_len: out.len(),
            });
        }
        // SAFETY: `[offset, offset + len)` is inside the DMA window (checked by `window`),
        // which lives as long as `self`; see `copy_out`.
        unsafe { copy_out(self.dma.base.as_ptr().add(offset), out) };
        Ok(())
    }

    /// Copies `data` into a range of the DMA window (atomic per aligned word), then
    /// notifies the SpinWait watchers of the pages written. Also the way the VMM loads the
    /// guest image at boot.
    pub fn write(&self, range: LogicalRange, data: &[u8]) -> Result<(), MemoryError> {
        let (offset, len) = self.window(range)?;
        if data.len() != len {
            return Err(MemoryError::LengthMismatch {
                range_len: range.len(),
                buf_len: data.len(),
            });
        }
        // SAFETY: as in `read`; see `copy_in`.
        unsafe { copy_in(self.dma.base.as_ptr().add(offset), data) };
        self.after_write(range.addr(), range.len())
    }

    /// Fills a range with zeros (a guest image's .bss on a page shared with data).
    pub fn zero(&self, range: LogicalRange) -> Result<(), MemoryError> {
        let zeros = [0u8; 4096];
        let mut done = 0;
        while done < range.len() {
            let chunk = (range.len() - done).min(PAGE_SIZE);
            let part = UncheckedRange::new(range.addr() + done, chunk)
                .check(self.size, 1)
                .map_err(|_| MemoryError::OutOfRange {
                    addr: range.addr(),
                    len: range.len(),
                    size_bytes: self.size,
                })?;
            let chunk_len = usize::try_from(chunk).unwrap_or(zeros.len());
            self.write(part, &zeros[..chunk_len])?;
            done += chunk;
        }
        Ok(())
    }

    /// Writes through the DMA window do not fault: tell the watchers of the pages touched.
    fn after_write(&self, addr: u64, len: u64) -> Result<(), MemoryError> {
        if len == 0 {
            return Ok(());
        }
        // Pairs with the SeqCst update of WATCHED in `watch_page`: either we see the bit or
        // the watcher's re-read sees our data.
        fence(Ordering::SeqCst);
        for page in addr / PAGE_SIZE..=(addr + len - 1) / PAGE_SIZE {
            if self
                .pages
                .peek(page)
                .is_some_and(|bits| bits & WATCHED != 0)
            {
                self.pager().notify_watchers(page)?;
            }
        }
        Ok(())
    }

    /// Unmaps a page from the guest mapping (MADV_DONTNEED). Its contents stay in the
    /// memfd: the next guest access is a MINOR fault that maps the same contents again.
    /// Notifies the page's watchers.
    pub fn drop_page(&self, page_index: u64) -> Result<(), MemoryError> {
        self.pager().drop_page(page_index)
    }

    /// Makes a page-aligned range read as zero where this node can do it alone: an
    /// Exclusive page with contents becomes a hole in the memfd (its memory goes back to
    /// the host), an Exclusive page without contents already reads as zero. Returns the
    /// pages it could not handle (Shared or Invalid here, watched, write-protected or
    /// being fetched), which the caller zeroes coherently, through the guest mapping.
    pub fn discard(&self, range: LogicalRange) -> Result<Vec<u64>, MemoryError> {
        self.window(range)?;
        if !range.addr().is_multiple_of(PAGE_SIZE) || !range.len().is_multiple_of(PAGE_SIZE) {
            return Err(MemoryError::NotPageAligned {
                addr: range.addr(),
                len: range.len(),
            });
        }
        let end = range.addr() + range.len();
        let pager = self.pager();
        let mut rest = Vec::new();
        let exclusive = |page| self.pages.state(page) == Some(PageState::Exclusive);
        // The memfd's extents (SEEK_DATA / SEEK_HOLE: mincore costs ~50 ns a page on
        // shmem, an 8 MiB stack 100 us; a seek is under a microsecond). A page in a hole
        // reads as zero already if this node holds it alone; a write racing with the
        // seek is as if it came after the discard.
        let mut at = range.addr();
        while at < end {
            let data = match self.seek(at, libc::SEEK_DATA) {
                Ok(Some(data)) => data.min(end) / PAGE_SIZE * PAGE_SIZE,
                Ok(None) => end,
                // Unknown extents: every page may have contents.
                Err(_) => at,
            };
            rest.extend((at / PAGE_SIZE..data / PAGE_SIZE).filter(|&p| !exclusive(p)));
            if data >= end {
                break;
            }
            let hole = self
                .seek(data, libc::SEEK_HOLE)
                .ok()
                .flatten()
                .unwrap_or(end)
                .min(end)
                .next_multiple_of(PAGE_SIZE)
                .max(data + PAGE_SIZE);
            for page in data / PAGE_SIZE..hole / PAGE_SIZE {
                let punch = || self.punch_hole(page);
                if !(exclusive(page) && pager.discard_exclusive(page, punch)?) {
                    rest.push(page);
                }
            }
            at = hole;
        }
        Ok(rest)
    }

    /// `lseek(memfd, from, whence)` for SEEK_DATA / SEEK_HOLE; None when no data follows
    /// `from` (ENXIO).
    fn seek(&self, from: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
        let from = libc::off_t::try_from(from).map_err(io::Error::other)?;
        // SAFETY: lseek on our own memfd only moves its file offset, which nothing in
        // this process uses (every access is through the mappings).
        let to = unsafe { libc::lseek(self.memfd.as_raw_fd(), from, whence) };
        match u64::try_from(to) {
            Ok(to) => Ok(Some(to)),
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::ENXIO) {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    fn punch_hole(&self, page: u64) -> io::Result<()> {
        let offset = libc::off_t::try_from(page * PAGE_SIZE).map_err(io::Error::other)?;
        let len = libc::off_t::try_from(PAGE_SIZE).map_err(io::Error::other)?;
        // SAFETY: fallocate on our own memfd, inside its size; KEEP_SIZE keeps the length.
        let rc = unsafe {
            libc::fallocate(
                self.memfd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Write-protects a page in the guest mapping, or lifts the protection (notifying
    /// watchers). A write to a protected Exclusive page faults once; the fault thread
    /// lifts the protection and lets it proceed.
    pub fn write_protect(&self, page_index: u64, on: bool) -> Result<(), MemoryError> {
        self.pager().write_protect(page_index, on)
    }

    /// Registers `signal` for the next write to the page (a write-protect fault by any VP),
    /// the next drop or invalidation of it, or the next VMM write to it; write-protects it
    /// if it is not. Each event notifies all watchers once and forgets them.
    pub fn watch_page(&self, page_index: u64, signal: &Arc<WakeSignal>) -> Result<(), MemoryError> {
        self.pager().watch_page(page_index, signal)
    }

    /// Forgets `signal` as a watcher of the page (after an early return or a timeout).
    pub fn unwatch_page(
        &self,
        page_index: u64,
        signal: &Arc<WakeSignal>,
    ) -> Result<(), MemoryError> {
        self.pager().unwatch_page(page_index, signal)
    }

    /// The SpinWait core, as the module docs reason: returns at once if the word differs
    /// from `expected`, else sleeps on `signal` until the page is written or invalidated,
    /// someone notifies `signal` (the VP's interrupt path may), or `deadline`. It does not
    /// reset `signal`: reset it before checking for pending interrupts, so an interrupt
    /// that arrives in between is not lost.
    pub fn spin_wait(
        &self,
        at: LogicalRange,
        expected: u64,
        deadline: Instant,
        signal: &Arc<WakeSignal>,
    ) -> Result<SpinWaitOutcome, MemoryError> {
        if self.read_u64(at)? != expected {
            return Ok(SpinWaitOutcome::Differs);
        }
        let page = at.addr() / PAGE_SIZE;
        self.watch_page(page, signal)?;
        let outcome = if self.read_u64(at)? != expected {
            SpinWaitOutcome::Differs
        } else if signal.wait_until(deadline) {
            SpinWaitOutcome::Woken
        } else {
            SpinWaitOutcome::TimedOut
        };
        self.unwatch_page(page, signal)?;
        Ok(outcome)
    }

    /// The node's state of a page.
    pub fn page_state(&self, page_index: u64) -> Result<PageState, MemoryError> {
        self.pages
            .state(page_index)
            .ok_or(MemoryError::PageOutOfRange {
                page: page_index,
                pages: self.page_count(),
            })
    }

    /// Changes the node's state of a page (for the coherence engine): Invalid unmaps it
    /// and notifies watchers, Shared write-protects it, Exclusive lifts the protection.
    /// The contents in the DMA window must already be right.
    pub fn set_page_state(&self, page_index: u64, state: PageState) -> Result<(), MemoryError> {
        self.pager().set_state(page_index, state)
    }

    /// Completes a fetch a [`PageResolver`] started: the page's contents are in the DMA
    /// window and the node holds it in `state`. Maps it and resumes the waiting threads.
    pub fn complete_fetch(&self, page_index: u64, state: PageState) -> Result<(), MemoryError> {
        self.pager().complete_fetch(page_index, state)
    }

    /// Wakes (and forgets) the page's SpinWait watchers: another node is about to write it.
    pub fn notify_watchers(&self, page_index: u64) -> Result<(), MemoryError> {
        self.pager().notify_watchers(page_index)
    }

    /// Starts the fault thread with the single-node resolver ([`LocalResolver`]).
    pub fn spawn_fault_handler(self: &Arc<Self>) -> Result<FaultHandler, MemoryError> {
        self.spawn_fault_handler_with(Arc::new(LocalResolver))
    }

    /// Starts the fault thread with a resolver for pages the local copy cannot serve.
    /// At most one runs per memory.
    pub fn spawn_fault_handler_with(
        self: &Arc<Self>,
        resolver: Arc<dyn PageResolver>,
    ) -> Result<FaultHandler, MemoryError> {
        FaultHandler::spawn(self, resolver)
    }
}

/// Copies from shared memory, atomically per aligned 8-byte word.
///
/// # Safety
/// `src..src + out.len()` must be valid for reads for the duration of the call, and
/// accessed by this process only through atomics (the guest and the kernel may write it).
unsafe fn copy_out(src: *const u8, out: &mut [u8]) {
    let len = out.len();
    let mut i = 0;
    while i < len && (src.addr() + i) & 7 != 0 {
        // SAFETY: `i < len`, so the byte is in range (caller's contract).
        out[i] = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Ordering::Relaxed);
        i += 1;
    }
    while i + 8 <= len {
        // SAFETY: in range and 8-byte aligned (the loop above aligned `src + i`).
        let word = unsafe { AtomicU64::from_ptr(src.add(i).cast_mut().cast::<u64>()) }
            .load(Ordering::Relaxed);
        out[i..i + 8].copy_from_slice(&word.to_ne_bytes());
        i += 8;
    }
    while i < len {
        // SAFETY: `i < len`.
        out[i] = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Ordering::Relaxed);
        i += 1;
    }
}

/// Copies into shared memory, atomically per aligned 8-byte word.
///
/// # Safety
/// `dst..dst + data.len()` must be valid for writes for the duration of the call, and
/// accessed by this process only through atomics.
unsafe fn copy_in(dst: *mut u8, data: &[u8]) {
    let len = data.len();
    let mut i = 0;
    while i < len && (dst.addr() + i) & 7 != 0 {
        // SAFETY: `i < len`, so the byte is in range (caller's contract).
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(data[i], Ordering::Relaxed);
        i += 1;
    }
    while i + 8 <= len {
        let mut word = [0u8; 8];
        word.copy_from_slice(&data[i..i + 8]);
        // SAFETY: in range and 8-byte aligned.
        unsafe { AtomicU64::from_ptr(dst.add(i).cast::<u64>()) }
            .store(u64::from_ne_bytes(word), Ordering::Relaxed);
        i += 8;
    }
    while i < len {
        // SAFETY: `i < len`.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(data[i], Ordering::Relaxed);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    //! These tests use the real kernel: a host thread touching the guest mapping raises
    //! genuine userfaultfd events (user-mode-only is off, so any thread's faults are
    //! reported, as KVM's will be). They need root or /dev/userfaultfd.
    use super::*;
    use crate::memory::pages::{FETCHING, PROTECTED};
    use crate::memory::FetchRequest;
    use std::sync::mpsc;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Guard against a lost wake-up hanging the test run: not a timing assertion.
    const HANG: Duration = Duration::from_secs(60);

    fn memory(pages: u64) -> Arc<LogicalMemory> {
        LogicalMemory::new(pages * PAGE_SIZE).expect("logical memory (tests need /dev/userfaultfd)")
    }

    fn range(m: &LogicalMemory, addr: u64, len: u64) -> LogicalRange {
        m.check_range(UncheckedRange::new(addr, len), 1)
            .expect("range inside memory")
    }

    fn pattern(page: u64) -> Vec<u8> {
        (0..PAGE_SIZE)
            .map(|i| (i.wrapping_mul(31) ^ page.wrapping_mul(7) ^ (i >> 8)).to_le_bytes()[0])
            .collect()
    }

    /// A host thread that touches the guest mapping; reports its tid first.
    struct GuestAccess<T> {
        tid: i32,
        result: mpsc::Receiver<T>,
    }

    impl<T: Send + 'static> GuestAccess<T> {
        fn spawn(m: &Arc<LogicalMemory>, access: impl FnOnce(usize) -> T + Send + 'static) -> Self {
            let (tid_tx, tid_rx) = mpsc::channel();
            let (tx, result) = mpsc::channel();
            let m = Arc::clone(m);
            std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tid_tx.send(unsafe { libc::gettid() }).expect("tid");
                let base = usize::try_from(m.guest_mapping_addr()).expect("address");
                let value = access(base);
                drop(m);
                let _ = tx.send(value);
            });
            let tid = tid_rx.recv().expect("tid");
            Self { tid, result }
        }

        /// Waits until the thread is blocked in a userfault (per the kernel's wchan).
        fn wait_blocked(&self) {
            let path = format!("/proc/self/task/{}/wchan", self.tid);
            let give_up = Instant::now() + HANG;
            loop {
                let wchan = std::fs::read_to_string(&path).unwrap_or_default();
                if wchan.trim() == "handle_userfault" {
                    return;
                }
                assert!(
                    Instant::now() < give_up,
                    "thread never blocked in a userfault: {wchan}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        fn join(self) -> T {
            self.result
                .recv_timeout(HANG)
                .expect("guest access completed")
        }
    }

    fn read_words(base: usize, offset: u64, words: usize) -> Vec<u64> {
        let start = base + usize::try_from(offset).expect("offset");
        (0..words)
            .map(|i| {
                let p = std::ptr::with_exposed_provenance::<u64>(start + i * 8);
                // SAFETY: inside the guest mapping (callers pass in-range offsets), which
                // the thread's Arc keeps alive; aligned; a volatile read because the
                // access itself (and the fault it raises) is the point.
                unsafe { p.read_volatile() }
            })
            .collect()
    }

    fn write_word(base: usize, offset: u64, value: u64) {
        let p = std::ptr::with_exposed_provenance_mut::<u64>(
            base + usize::try_from(offset).expect("offset"),
        );
        // SAFETY: as in `read_words`.
        unsafe { p.write_volatile(value) }
    }

    /// Counters after the fault thread has finished: it books an answer after the ioctl
    /// that already resumed the faulting thread, so only a joined thread's counts are final.
    fn stopped_stats(
        m: &LogicalMemory,
        handler: FaultHandler,
    ) -> crate::memory::FaultStatsSnapshot {
        handler.stop().expect("stop");
        m.fault_stats().snapshot()
    }

    fn words_of(bytes: &[u8]) -> Vec<u64> {
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .collect()
    }

    #[test]
    fn dma_window_contents_appear_in_the_guest_mapping() {
        let m = memory(16);
        let expected = pattern(3);
        m.write(range(&m, 3 * PAGE_SIZE, PAGE_SIZE), &expected)
            .expect("dma write");
        let handler = m.spawn_fault_handler().expect("handler");
        let got = GuestAccess::spawn(&m, |base| read_words(base, 3 * PAGE_SIZE, 512)).join();
        assert_eq!(got, words_of(&expected));
        let s = stopped_stats(&m, handler);
        assert_eq!((s.missing_faults, s.minor_faults, s.resolved), (0, 1, 1));
        assert_eq!(s.latency.samples, 1);
    }

    #[test]
    fn untouched_page_reads_zero_and_guest_writes_reach_the_window() {
        let m = memory(16);
        let handler = m.spawn_fault_handler().expect("handler");
        let got = GuestAccess::spawn(&m, |base| read_words(base, 5 * PAGE_SIZE, 512)).join();
        assert_eq!(got, vec![0u64; 512]);
        GuestAccess::spawn(&m, |base| write_word(base, 6 * PAGE_SIZE + 8, 0xfeed_f00d)).join();
        let at = m
            .check_range(UncheckedRange::new(6 * PAGE_SIZE + 8, 8), 8)
            .expect("word");
        assert_eq!(m.read_u64(at).expect("read"), 0xfeed_f00d);
        let s = stopped_stats(&m, handler);
        assert_eq!((s.missing_faults, s.minor_faults, s.resolved), (2, 0, 2));
    }

    #[test]
    fn dropped_page_is_faulted_back_with_its_contents() {
        let m = memory(16);
        let handler = m.spawn_fault_handler().expect("handler");
        let expected = words_of(&pattern(4));
        let to_write = expected.clone();
        GuestAccess::spawn(&m, move |base| {
            for (i, w) in to_write.iter().enumerate() {
                write_word(base, 4 * PAGE_SIZE + 8 * i as u64, *w);
            }
        })
        .join();
        let minor_before = m.fault_stats().snapshot().minor_faults;
        m.drop_page(4).expect("drop");
        let got = GuestAccess::spawn(&m, |base| read_words(base, 4 * PAGE_SIZE, 512)).join();
        assert_eq!(got, expected);
        let mut window = vec![0u8; 4096];
        m.read(range(&m, 4 * PAGE_SIZE, PAGE_SIZE), &mut window)
            .expect("dma read");
        assert_eq!(words_of(&window), expected);
        // The re-read faulted (the PTE was really gone) and was a MINOR fault.
        assert_eq!(stopped_stats(&m, handler).minor_faults, minor_before + 1);
    }

    #[test]
    fn discarded_exclusive_pages_go_back_to_the_host_and_read_zero() {
        let m = memory(16);
        let handler = m.spawn_fault_handler().expect("handler");
        // Pages 2 and 3 get contents (through the guest mapping), page 4 stays untouched,
        // page 5 is Shared (a copy another node may hold).
        GuestAccess::spawn(&m, |base| {
            write_word(base, 2 * PAGE_SIZE, 7);
            write_word(base, 3 * PAGE_SIZE + 4088, 9);
        })
        .join();
        m.write(range(&m, 5 * PAGE_SIZE, PAGE_SIZE), &pattern(5))
            .expect("dma write");
        m.set_page_state(5, PageState::Shared).expect("shared");
        let rest = m
            .discard(range(&m, 2 * PAGE_SIZE, 4 * PAGE_SIZE))
            .expect("discard");
        assert_eq!(
            rest,
            vec![5],
            "only the Shared page needs the coherence protocol"
        );
        let mut resident = [0u8; 3];
        // SAFETY: pages 2..5 of the DMA window are mapped; mincore writes 3 bytes.
        let rc = unsafe {
            libc::mincore(
                m.dma.base.as_ptr().add(2 * 4096).cast(),
                3 * 4096,
                resident.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(resident.map(|r| r & 1), [0, 0, 0], "the memory went back");
        let got = GuestAccess::spawn(&m, |base| {
            let mut words = read_words(base, 2 * PAGE_SIZE, 512);
            words.extend(read_words(base, 3 * PAGE_SIZE, 512));
            words
        })
        .join();
        assert_eq!(got, vec![0u64; 1024]);
        let mut out = vec![0u8; 4096];
        m.read(range(&m, 5 * PAGE_SIZE, PAGE_SIZE), &mut out)
            .expect("read");
        assert_eq!(out, pattern(5), "the Shared page is left to the caller");
        // Unaligned ranges are refused.
        assert!(m.discard(range(&m, 2 * PAGE_SIZE + 8, PAGE_SIZE)).is_err());
        stopped_stats(&m, handler);
    }

    #[test]
    fn write_to_a_watched_page_waits_for_the_handler_and_notifies() {
        let m = memory(16);
        let at = m
            .check_range(UncheckedRange::new(7 * PAGE_SIZE, 8), 8)
            .expect("word");
        m.write_u64(at, 1).expect("write");
        // Map the page in the guest mapping first, so the write below is a WP fault.
        let handler = m.spawn_fault_handler().expect("handler");
        assert_eq!(
            GuestAccess::spawn(&m, |base| read_words(base, 7 * PAGE_SIZE, 1)).join(),
            vec![1]
        );
        handler.stop().expect("stop");

        let signal = Arc::new(WakeSignal::new());
        m.watch_page(7, &signal).expect("watch");
        let writer = GuestAccess::spawn(&m, |base| write_word(base, 7 * PAGE_SIZE, 2));
        writer.wait_blocked();
        assert_eq!(
            m.read_u64(at).expect("read"),
            1,
            "the write must wait for the handler"
        );
        assert!(!signal.is_notified());

        let handler = m.spawn_fault_handler().expect("handler");
        writer.join();
        assert!(signal.wait_until(Instant::now() + HANG), "watcher notified");
        assert_eq!(m.read_u64(at).expect("read"), 2);
        let s = stopped_stats(&m, handler);
        assert_eq!(s.write_protect_faults, 1);
        assert_eq!(
            m.pages.peek(7),
            Some(PageState::Exclusive as u8),
            "unprotected, unwatched"
        );
    }

    #[test]
    fn protection_survives_a_drop() {
        let m = memory(16);
        let handler = m.spawn_fault_handler().expect("handler");
        m.write_protect(2, true).expect("protect");
        m.drop_page(2).expect("drop");
        GuestAccess::spawn(&m, |base| write_word(base, 2 * PAGE_SIZE + 16, 77)).join();
        let s = stopped_stats(&m, handler);
        // Hole -> MISSING (mapped write-protected) -> the write retries -> WP fault.
        assert_eq!(
            (s.missing_faults, s.write_protect_faults, s.resolved),
            (1, 1, 2)
        );
        let at = m
            .check_range(UncheckedRange::new(2 * PAGE_SIZE + 16, 8), 8)
            .expect("word");
        assert_eq!(m.read_u64(at).expect("read"), 77);
    }

    #[test]
    fn two_threads_faulting_one_page_resolve_once() {
        let m = memory(16);
        let expected = pattern(9);
        m.write(range(&m, 9 * PAGE_SIZE, PAGE_SIZE), &expected)
            .expect("dma write");
        let a = GuestAccess::spawn(&m, |base| read_words(base, 9 * PAGE_SIZE + 64, 4));
        let b = GuestAccess::spawn(&m, |base| read_words(base, 9 * PAGE_SIZE + 128, 4));
        a.wait_blocked();
        b.wait_blocked();
        let handler = m.spawn_fault_handler().expect("handler");
        let words = words_of(&expected);
        assert_eq!(a.join(), words[8..12].to_vec());
        assert_eq!(b.join(), words[16..20].to_vec());
        let s = stopped_stats(&m, handler);
        assert_eq!((s.minor_faults, s.resolved, s.coalesced), (2, 1, 1));
    }

    #[test]
    fn handler_stops_when_idle_and_runs_alone() {
        let m = memory(4);
        let handler = m.spawn_fault_handler().expect("handler");
        assert!(handler.is_running());
        assert!(matches!(
            m.spawn_fault_handler(),
            Err(MemoryError::HandlerRunning)
        ));
        // Idle in poll: only the stop eventfd can end it.
        handler.stop().expect("stop");
        let again = m.spawn_fault_handler().expect("a new handler after stop");
        drop(again);
        assert!(!m.handler_active.load(Ordering::SeqCst));
    }

    /// Sends every fetch to the test thread, which plays the fabric.
    struct ChannelResolver(Mutex<mpsc::Sender<FetchRequest>>);

    impl PageResolver for ChannelResolver {
        fn fetch(&self, _memory: &Arc<LogicalMemory>, request: FetchRequest) {
            let _ = self.0.lock().expect("sender").send(request);
        }
    }

    #[test]
    fn invalid_page_is_fetched_through_the_resolver() {
        let m = memory(16);
        m.set_page_state(10, PageState::Invalid)
            .expect("invalidate");
        let (tx, rx) = mpsc::channel();
        let handler = m
            .spawn_fault_handler_with(Arc::new(ChannelResolver(Mutex::new(tx))))
            .expect("handler");
        let reader = GuestAccess::spawn(&m, |base| read_words(base, 10 * PAGE_SIZE, 512));
        let request = rx.recv_timeout(HANG).expect("fetch request");
        assert_eq!((request.page, request.write), (10, false));
        assert_eq!(request.thread_id, u32::try_from(reader.tid).expect("tid"));
        assert!(m.pages.peek(10).is_some_and(|b| b & FETCHING != 0));
        // The "fabric" delivers the page into the DMA window, then completes.
        let delivered = pattern(10);
        m.write(range(&m, 10 * PAGE_SIZE, PAGE_SIZE), &delivered)
            .expect("dma write");
        m.complete_fetch(10, PageState::Exclusive)
            .expect("complete");
        assert_eq!(reader.join(), words_of(&delivered));
        let s = stopped_stats(&m, handler);
        assert_eq!((s.fetches, s.resolved), (1, 1));
        assert_eq!(m.page_state(10).expect("state"), PageState::Exclusive);
    }

    #[test]
    fn spin_wait_wakes_on_a_guest_write_and_on_a_vmm_write() {
        let m = memory(16);
        let handler = m.spawn_fault_handler().expect("handler");
        let at = m
            .check_range(UncheckedRange::new(11 * PAGE_SIZE + 24, 8), 8)
            .expect("word");
        m.write_u64(at, 5).expect("write");
        let signal = Arc::new(WakeSignal::new());
        assert_eq!(
            m.spin_wait(at, 6, Instant::now() + HANG, &signal)
                .expect("spin"),
            SpinWaitOutcome::Differs
        );
        assert_eq!(
            m.spin_wait(at, 5, Instant::now(), &signal).expect("spin"),
            SpinWaitOutcome::TimedOut
        );

        for guest_writes in [true, false] {
            let (tx, rx) = mpsc::channel();
            let (tid_tx, tid_rx) = mpsc::channel();
            let waiter_memory = Arc::clone(&m);
            let waiter_signal = Arc::clone(&signal);
            std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tid_tx.send(unsafe { libc::gettid() }).expect("tid");
                let outcome = waiter_memory.spin_wait(at, 5, Instant::now() + HANG, &waiter_signal);
                let _ = tx.send(outcome.expect("spin"));
            });
            // Write only once the waiter sleeps on its signal (registered, re-checked, in
            // the condvar's futex wait; nothing else here contends a lock), so the outcome
            // must be Woken. A write between its watch and its re-check would rightly give
            // Differs, which is not what this test is about.
            let wchan = format!("/proc/self/task/{}/wchan", tid_rx.recv().expect("tid"));
            let give_up = Instant::now() + HANG;
            while !std::fs::read_to_string(&wchan)
                .unwrap_or_default()
                .contains("futex")
            {
                assert!(Instant::now() < give_up, "waiter never slept");
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(m
                .pages
                .peek(11)
                .is_some_and(|b| b & (WATCHED | PROTECTED) == WATCHED | PROTECTED));
            if guest_writes {
                GuestAccess::spawn(&m, move |base| write_word(base, 11 * PAGE_SIZE + 24, 6)).join();
            } else {
                m.write_u64(at, 6).expect("vmm write");
            }
            assert_eq!(
                rx.recv_timeout(HANG).expect("waiter"),
                SpinWaitOutcome::Woken
            );
            assert_eq!(m.read_u64(at).expect("read"), 6);
            m.write_u64(at, 5).expect("reset the word");
        }
        handler.stop().expect("stop");
    }

    #[test]
    fn bad_sizes_and_ranges_are_errors() {
        assert!(matches!(
            LogicalMemory::new(0),
            Err(MemoryError::InvalidSize { size_bytes: 0 })
        ));
        assert!(matches!(
            LogicalMemory::new(4097),
            Err(MemoryError::InvalidSize { size_bytes: 4097 })
        ));
        let m = memory(4);
        // Checked against a bigger memory than this one.
        let far = UncheckedRange::new(4 * PAGE_SIZE, 8)
            .check(1 << 20, 8)
            .expect("checked");
        assert!(matches!(
            m.read_u64(far),
            Err(MemoryError::OutOfRange { .. })
        ));
        let mut buf = [0u8; 8];
        assert!(matches!(
            m.read(far, &mut buf),
            Err(MemoryError::OutOfRange { .. })
        ));
        let r = range(&m, PAGE_SIZE, 16);
        assert!(matches!(
            m.write(r, &[0u8; 8]),
            Err(MemoryError::LengthMismatch {
                range_len: 16,
                buf_len: 8
            })
        ));
        assert!(matches!(m.read_u64(r), Err(MemoryError::NotAWord { .. })));
        let odd = range(&m, PAGE_SIZE + 4, 8);
        assert!(matches!(
            m.write_u64(odd, 1),
            Err(MemoryError::NotAWord { .. })
        ));
        assert!(matches!(
            m.drop_page(4),
            Err(MemoryError::PageOutOfRange { page: 4, pages: 4 })
        ));
    }

    #[test]
    fn unaligned_copies_round_trip() {
        let m = memory(4);
        let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let r = range(&m, PAGE_SIZE + 3, 3000);
        m.write(r, &data).expect("write");
        let mut back = vec![0u8; 3000];
        m.read(r, &mut back).expect("read");
        assert_eq!(back, data);
        // The bytes around the range are untouched.
        let mut edge = [0xffu8; 3];
        m.read(range(&m, PAGE_SIZE, 3), &mut edge).expect("read");
        assert_eq!(edge, [0, 0, 0]);
        m.zero(range(&m, PAGE_SIZE + 100, 5000)).expect("zero");
        m.read(r, &mut back).expect("read");
        assert_eq!(&back[..97], &data[..97]);
        assert!(back[97..].iter().all(|&b| b == 0));
    }

    #[test]
    fn logical_memory_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<LogicalMemory>();
        check::<FaultHandler>();
        check::<WakeSignal>();
    }
}
