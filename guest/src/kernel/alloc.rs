//! The kernel's page allocator: [`guest::page_alloc::PageAllocator`] over the memory
//! ranges of the configuration, behind a spinlock, minus everything below the end of the
//! image (the null page, the per-node region and the boot stack lie below it too).
//!
//! Memory is handed out as page blocks or as `u64` slices that live as long as the
//! kernel. Blocks are zero when handed out: fresh ones were never touched, reused ones are
//! cleared here, on the calling VP (large ones by the VMM's `MemDiscard`).

use vima::config::Config;
use vima::layout::PAGE_SIZE;

use guest::page_alloc::{PageAllocError, PageAllocator};

use crate::spinlock::SpinLock;
use crate::sync::PageAligned;

static PAGES: PageAligned<SpinLock<PageAllocator>> =
    PageAligned(SpinLock::new(PageAllocator::new()));

extern "C" {
    /// Start of the image, from the linker script.
    static __image_start: u8;
    /// End of the image (page aligned), from the linker script.
    static __image_end: u8;
}

/// First byte of the loaded image (the kernel's code starts here).
pub fn image_start() -> u64 {
    core::ptr::addr_of!(__image_start) as u64
}

/// First byte after the loaded image.
pub fn image_end() -> u64 {
    core::ptr::addr_of!(__image_end) as u64
}

/// Hands the configuration's memory ranges to the allocator, minus `program` (a Linux
/// program's image and break, `[start, end)`), if any.
pub fn init(config: &Config<'_>, program: Option<(u64, u64)>) -> Result<(), PageAllocError> {
    let reserved_end = image_end();
    let mut pages = PAGES.lock();
    for range in config.mem_ranges() {
        let Some((start, end)) = program else {
            pages.add_range(range.base, range.size, range.node_id, reserved_end)?;
            continue;
        };
        let range_end = range.base + range.size;
        // The part below the program, then the part above it.
        let below_end = range_end.min(start);
        if below_end > range.base {
            pages.add_range(
                range.base,
                below_end - range.base,
                range.node_id,
                reserved_end,
            )?;
        }
        let above = range.base.max(end.next_multiple_of(PAGE_SIZE));
        if range_end > above {
            pages.add_range(above, range_end - above, range.node_id, reserved_end)?;
        }
    }
    Ok(())
}

/// Allocates `count` zeroed pages, on `node` if it has room; returns the address.
pub fn alloc_pages(count: u64, node: u32) -> Result<u64, PageAllocError> {
    let block = PAGES.lock().alloc(count, node)?;
    let bytes = count * PAGE_SIZE;
    // A large reused block (a freed thread stack) is cheaper to discard in the VMM (one
    // exit, memory back to the host) than to write over; a small one is written here.
    let discarded = !block.fresh
        && count >= DISCARD_MIN_PAGES
        && crate::vima_calls::mem_discard(block.addr, bytes).is_ok();
    if !block.fresh && !discarded {
        // SAFETY: the allocator just handed the block to us alone; it lies in logical
        // memory, which is mapped read/write.
        unsafe { core::ptr::write_bytes(block.addr as *mut u64, 0, words(bytes)) };
    }
    Ok(block.addr)
}

/// Reused blocks of at least this many pages are zeroed by `MemDiscard` (an exit costs
/// about what writing 512 KiB does).
const DISCARD_MIN_PAGES: u64 = 128;

fn words(bytes: u64) -> usize {
    (bytes / 8) as usize
}

/// Moves the end of `node`'s memory from `old_end` to `new_end` (memory hotplug); pages
/// given up are made zero with `MemDiscard`, which also returns them to the host.
pub fn resize_node(node: u32, old_end: u64, new_end: u64) -> Result<(), PageAllocError> {
    let (start, end) = PAGES.lock().resize(node, old_end, new_end)?;
    if end > start {
        // Best effort: the VMM gives the memory back either way when it takes the range.
        let _ = crate::vima_calls::mem_discard(start, end - start);
    }
    Ok(())
}

/// Gives back pages from [`alloc_pages`].
pub fn free_pages(addr: u64, count: u64) -> Result<(), PageAllocError> {
    PAGES.lock().free(addr, count)
}

/// Bytes the allocator can still hand out.
pub fn free_bytes() -> u64 {
    PAGES.lock().free_pages() * PAGE_SIZE
}

/// Gives back pages from [`alloc_pages`] that were never written (still zero).
pub fn free_clean_pages(addr: u64, count: u64) -> Result<(), PageAllocError> {
    PAGES.lock().free_clean(addr, count)
}

/// Allocates a zeroed `u64` slice of `len` elements on `node` if it has room. The memory
/// is never given back.
pub fn alloc_u64s(len: usize, node: u32) -> Result<&'static mut [u64], PageAllocError> {
    let bytes = (len as u64).saturating_mul(8);
    let pages = bytes.div_ceil(PAGE_SIZE).max(1);
    let addr = alloc_pages(pages, node)?;
    // SAFETY: the block is ours alone for ever (never freed), zeroed, 8-byte aligned and
    // at least `len * 8` bytes long; zero is a valid u64.
    Ok(unsafe { core::slice::from_raw_parts_mut(addr as *mut u64, len) })
}
