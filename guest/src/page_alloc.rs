//! The page allocator's bookkeeping, NUMA-aware: memory is a set of *arenas*, one per
//! memory range of the configuration, each with its home node. An allocation prefers the
//! requested node's arenas and falls back to the others, so a VP's stack and data land in
//! its own node's memory (the paper's NUMA view, 4.9.1) while memory lasts.
//!
//! Each arena hands out pages from a bump pointer; freed blocks go to a small free list
//! (first fit, merged with their neighbours, or given back to the bump pointer when they
//! end at it). The workloads allocate once and free rarely, so this stays small and simple.
//! Blocks from the bump pointer were never handed out before and are still zero (logical
//! memory starts zeroed); [`Allocation::fresh`] says so, so the kernel only clears reused
//! blocks and does not pull remote pages over just to zero them.
//!
//! The kernel wraps one [`PageAllocator`] in a spinlock; this type does no locking.

use vima::layout::PAGE_SIZE;

/// Most arenas (one per configuration memory range).
pub const MAX_ARENAS: usize = vima::config::MAX_MEM_RANGES;
/// Most free-list entries; a freed block that fits nowhere once the list is full is
/// leaked (and counted).
pub const MAX_FREE_BLOCKS: usize = 64;

/// Why an allocator operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageAllocError {
    /// Asked for 0 pages.
    #[error("asked for zero pages")]
    ZeroPages,
    /// No arena has room.
    #[error("out of memory allocating {pages} pages")]
    OutOfMemory {
        /// Pages asked for.
        pages: u64,
    },
    /// More ranges than [`MAX_ARENAS`].
    #[error("too many memory ranges")]
    TooManyRanges,
    /// A range is not page aligned or overflows.
    #[error("memory range {base:#x}+{size:#x} is not page aligned")]
    BadRange {
        /// First address.
        base: u64,
        /// Bytes.
        size: u64,
    },
    /// A range cannot shrink: pages above its new end are in use (or reserved).
    #[error("node {node}'s memory above {new_end:#x} is in use")]
    InUse {
        /// The range's home.
        node: u32,
        /// The end asked for.
        new_end: u64,
    },
    /// Freed memory that is not an allocated block.
    #[error("freeing {pages} pages at {addr:#x} that are not allocated")]
    NotAllocated {
        /// Address given.
        addr: u64,
        /// Pages given.
        pages: u64,
    },
}

/// A block handed out by [`PageAllocator::alloc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// First address (page aligned).
    pub addr: u64,
    /// Home node of the arena it came from.
    pub node: u32,
    /// True when the block was never handed out before (it is still zero).
    pub fresh: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Arena {
    node: u32,
    start: u64,
    /// The bump pointer: pages from here up are free.
    next: u64,
    /// Pages below this have been handed out at least once (the highest `next` so far);
    /// a block freed back into the bump space is no longer zero.
    touched: u64,
    end: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FreeBlock {
    addr: u64,
    pages: u64,
    /// Still zero (given back with [`PageAllocator::free_clean`]).
    clean: bool,
}

impl FreeBlock {
    const fn end(&self) -> u64 {
        self.addr + self.pages * PAGE_SIZE
    }
}

/// Free and allocated pages of all arenas.
#[derive(Clone, Debug)]
pub struct PageAllocator {
    arenas: [Arena; MAX_ARENAS],
    arena_count: usize,
    free: [FreeBlock; MAX_FREE_BLOCKS],
    free_count: usize,
    leaked_pages: u64,
}

impl Default for PageAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl PageAllocator {
    /// An allocator with no memory.
    pub const fn new() -> Self {
        Self {
            arenas: [Arena {
                node: 0,
                start: 0,
                next: 0,
                touched: 0,
                end: 0,
            }; MAX_ARENAS],
            arena_count: 0,
            free: [FreeBlock {
                addr: 0,
                pages: 0,
                clean: false,
            }; MAX_FREE_BLOCKS],
            free_count: 0,
            leaked_pages: 0,
        }
    }

    /// Adds the memory range `[base, base + size)` with home `node`, minus everything below
    /// `reserved_end` (the image, the boot stack, the per-node region). A range that lies
    /// wholly below `reserved_end` adds nothing.
    pub fn add_range(
        &mut self,
        base: u64,
        size: u64,
        node: u32,
        reserved_end: u64,
    ) -> Result<(), PageAllocError> {
        let bad = PageAllocError::BadRange { base, size };
        let end = base.checked_add(size).ok_or(bad)?;
        if base % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
            return Err(bad);
        }
        let reserved_end = reserved_end
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(bad)?;
        let start = base.max(reserved_end);
        if start >= end {
            return Ok(());
        }
        let slot = self
            .arenas
            .get_mut(self.arena_count)
            .ok_or(PageAllocError::TooManyRanges)?;
        *slot = Arena {
            node,
            start,
            next: start,
            touched: start,
            end,
        };
        self.arena_count += 1;
        Ok(())
    }

    fn arenas(&self) -> &[Arena] {
        &self.arenas[..self.arena_count]
    }

    fn arena_of(&self, addr: u64) -> Option<usize> {
        self.arenas()
            .iter()
            .position(|a| addr >= a.start && addr < a.end)
    }

    /// Allocates `pages` contiguous pages, from `preferred_node`'s memory if it has room,
    /// else from any node's.
    pub fn alloc(&mut self, pages: u64, preferred_node: u32) -> Result<Allocation, PageAllocError> {
        if pages == 0 {
            return Err(PageAllocError::ZeroPages);
        }
        let bytes = pages
            .checked_mul(PAGE_SIZE)
            .ok_or(PageAllocError::OutOfMemory { pages })?;
        for local in [true, false] {
            let wanted = |node: u32| (node == preferred_node) == local;
            if let Some(found) = self.alloc_from_free_list(pages, &wanted) {
                return Ok(found);
            }
            for arena in self.arenas[..self.arena_count].iter_mut() {
                if wanted(arena.node) && arena.end - arena.next >= bytes {
                    let addr = arena.next;
                    arena.next += bytes;
                    let fresh = addr >= arena.touched;
                    arena.touched = arena.touched.max(arena.next);
                    return Ok(Allocation {
                        addr,
                        node: arena.node,
                        fresh,
                    });
                }
            }
        }
        Err(PageAllocError::OutOfMemory { pages })
    }

    fn alloc_from_free_list(
        &mut self,
        pages: u64,
        wanted: &impl Fn(u32) -> bool,
    ) -> Option<Allocation> {
        for index in 0..self.free_count {
            let block = self.free[index];
            let node = self.arenas[self.arena_of(block.addr)?].node;
            if block.pages < pages || !wanted(node) {
                continue;
            }
            if block.pages == pages {
                self.remove_free(index);
            } else {
                self.free[index] = FreeBlock {
                    addr: block.addr + pages * PAGE_SIZE,
                    pages: block.pages - pages,
                    clean: block.clean,
                };
            }
            return Some(Allocation {
                addr: block.addr,
                node,
                fresh: block.clean,
            });
        }
        None
    }

    fn remove_free(&mut self, index: usize) {
        self.free.copy_within(index + 1..self.free_count, index);
        self.free_count -= 1;
    }

    /// Gives back `pages` pages at `addr`, allocated earlier.
    pub fn free(&mut self, addr: u64, pages: u64) -> Result<(), PageAllocError> {
        self.give_back(addr, pages, false)
    }

    /// Gives back pages that are still zero (never written since they were handed out
    /// fresh): a later allocation of them is fresh too, and need not be cleared.
    pub fn free_clean(&mut self, addr: u64, pages: u64) -> Result<(), PageAllocError> {
        self.give_back(addr, pages, true)
    }

    fn give_back(&mut self, addr: u64, pages: u64, clean: bool) -> Result<(), PageAllocError> {
        let not_allocated = PageAllocError::NotAllocated { addr, pages };
        let end = pages
            .checked_mul(PAGE_SIZE)
            .and_then(|bytes| addr.checked_add(bytes))
            .ok_or(not_allocated)?;
        let arena_index = self.arena_of(addr).ok_or(not_allocated)?;
        let arena = self.arenas[arena_index];
        let overlaps_free = self.free[..self.free_count]
            .iter()
            .any(|b| addr < b.end() && b.addr < end);
        if pages == 0 || addr % PAGE_SIZE != 0 || end > arena.next || overlaps_free {
            return Err(not_allocated);
        }
        let mut block = FreeBlock { addr, pages, clean };
        // Merge with free neighbours in the same arena.
        let mut index = 0;
        while index < self.free_count {
            let other = self.free[index];
            let same_arena = self.arena_of(other.addr) == Some(arena_index);
            if same_arena && (other.end() == block.addr || block.end() == other.addr) {
                block = FreeBlock {
                    addr: other.addr.min(block.addr),
                    pages: other.pages + block.pages,
                    clean: other.clean && block.clean,
                };
                self.remove_free(index);
            } else {
                index += 1;
            }
        }
        if block.end() == arena.next {
            let arena = &mut self.arenas[arena_index];
            arena.next = block.addr;
            // Clean pages at the top of what was ever handed out are fresh again.
            if block.clean && arena.touched == block.end() {
                arena.touched = block.addr;
            }
            return Ok(());
        }
        match self.free.get_mut(self.free_count) {
            Some(slot) => {
                *slot = block;
                self.free_count += 1;
            }
            None => self.leaked_pages += block.pages,
        }
        Ok(())
    }

    /// Moves the end of `node`'s arena that ends at `old_end` to `new_end` (memory
    /// hotplug). Shrinking needs every page at or above `new_end` free: the bump pointer
    /// at or below it (a free block that ended at the bump pointer was merged into it,
    /// so the block just below a higher pointer is in use). Returns the pages that must
    /// be made zero again before the range may grow back, `[start, end)` (those above
    /// `new_end` that were ever handed out); empty when growing.
    pub fn resize(
        &mut self,
        node: u32,
        old_end: u64,
        new_end: u64,
    ) -> Result<(u64, u64), PageAllocError> {
        let in_use = PageAllocError::InUse { node, new_end };
        if new_end % PAGE_SIZE != 0 {
            return Err(PageAllocError::BadRange {
                base: new_end,
                size: 0,
            });
        }
        let arena = self.arenas[..self.arena_count]
            .iter_mut()
            .find(|a| a.node == node && a.end == old_end)
            .ok_or(in_use)?;
        if new_end >= arena.end {
            arena.end = new_end;
            return Ok((new_end, new_end));
        }
        if new_end < arena.next || new_end < arena.start {
            return Err(in_use);
        }
        let dirty = (new_end, arena.touched.max(new_end));
        arena.end = new_end;
        arena.touched = arena.touched.min(new_end);
        Ok(dirty)
    }

    /// Pages that can still be allocated with `node` as their home (bump space and free
    /// blocks; not necessarily contiguous).
    pub fn free_pages_on(&self, node: u32) -> u64 {
        let bump: u64 = self
            .arenas()
            .iter()
            .filter(|a| a.node == node)
            .map(|a| (a.end - a.next) / PAGE_SIZE)
            .sum();
        let listed: u64 = self.free[..self.free_count]
            .iter()
            .filter(|b| self.arena_of(b.addr).map(|i| self.arenas[i].node) == Some(node))
            .map(|b| b.pages)
            .sum();
        bump + listed
    }

    /// Pages that can still be allocated, on any node.
    pub fn free_pages(&self) -> u64 {
        let bump: u64 = self
            .arenas()
            .iter()
            .map(|a| (a.end - a.next) / PAGE_SIZE)
            .sum();
        let listed: u64 = self.free[..self.free_count].iter().map(|b| b.pages).sum();
        bump + listed
    }

    /// Pages lost because the free list was full.
    pub fn leaked_pages(&self) -> u64 {
        self.leaked_pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Two nodes of 16 MiB each; the first 4 MiB of node 0 are "the image".
    fn two_nodes() -> PageAllocator {
        let mut alloc = PageAllocator::new();
        alloc.add_range(0, 16 * MIB, 0, 4 * MIB).unwrap();
        alloc.add_range(16 * MIB, 16 * MIB, 1, 4 * MIB).unwrap();
        alloc
    }

    #[test]
    fn prefers_the_requested_node_then_falls_back() {
        let mut alloc = two_nodes();
        let a = alloc.alloc(1, 1).unwrap();
        assert_eq!(
            a,
            Allocation {
                addr: 16 * MIB,
                node: 1,
                fresh: true
            }
        );
        let b = alloc.alloc(2, 0).unwrap();
        assert_eq!(
            b,
            Allocation {
                addr: 4 * MIB,
                node: 0,
                fresh: true
            }
        );
        // Node 0 has 12 MiB minus 2 pages left: a 13 MiB request must come from node 1.
        let big = alloc.alloc(13 * MIB / PAGE_SIZE, 0).unwrap();
        assert_eq!(big.node, 1);
        assert_eq!(big.addr, 16 * MIB + PAGE_SIZE);
        assert_eq!(
            alloc.alloc(20 * MIB / PAGE_SIZE, 0),
            Err(PageAllocError::OutOfMemory {
                pages: 20 * MIB / PAGE_SIZE
            })
        );
        assert_eq!(alloc.alloc(0, 0), Err(PageAllocError::ZeroPages));
    }

    #[test]
    fn a_range_shrinks_only_above_what_is_in_use_and_grows_back_fresh() {
        let mut alloc = two_nodes();
        let end = 32 * MIB;
        let a = alloc.alloc(MIB / PAGE_SIZE, 1).unwrap();
        let b = alloc.alloc(MIB / PAGE_SIZE, 1).unwrap();
        assert_eq!(b.addr, 17 * MIB);
        // b ends at 18 MiB: shrinking to 17 MiB would take it.
        assert_eq!(
            alloc.resize(1, end, 17 * MIB),
            Err(PageAllocError::InUse {
                node: 1,
                new_end: 17 * MIB
            })
        );
        // Freed, b goes back to the bump pointer, and the range may end at 17 MiB; the
        // pages b had must be zeroed before they come back.
        alloc.free(b.addr, MIB / PAGE_SIZE).unwrap();
        assert_eq!(alloc.resize(1, end, 17 * MIB), Ok((17 * MIB, 18 * MIB)));
        assert_eq!(alloc.free_pages_on(1), 0);
        assert!(alloc.alloc(1, 1).is_ok_and(|c| c.node == 0));
        // The old end no longer names it; the new one does.
        assert!(alloc.resize(1, end, 20 * MIB).is_err());
        assert_eq!(alloc.resize(1, 17 * MIB, end), Ok((end, end)));
        let c = alloc.alloc(1, 1).unwrap();
        assert_eq!((c.addr, c.fresh), (17 * MIB, true));
        // Node 0's reserved image cannot go.
        assert!(alloc.resize(0, 16 * MIB, 2 * MIB).is_err());
        assert_eq!(a.node, 1);
    }

    #[test]
    fn reserved_memory_is_never_handed_out() {
        let mut alloc = PageAllocator::new();
        alloc.add_range(0, 2 * MIB, 0, 2 * MIB + 1).unwrap();
        alloc.add_range(2 * MIB, 2 * MIB, 0, 2 * MIB + 1).unwrap();
        let a = alloc.alloc(1, 0).unwrap();
        assert_eq!(a.addr, 2 * MIB + PAGE_SIZE);
        assert_eq!(
            alloc.free_pages_on(0),
            (2 * MIB - PAGE_SIZE) / PAGE_SIZE - 1
        );
        assert_eq!(alloc.free_pages_on(1), 0);
    }

    #[test]
    fn freed_blocks_are_reused_merged_and_returned() {
        let mut alloc = two_nodes();
        let before = alloc.free_pages_on(0);
        let a = alloc.alloc(2, 0).unwrap();
        let b = alloc.alloc(3, 0).unwrap();
        let c = alloc.alloc(1, 0).unwrap();
        alloc.free(a.addr, 2).unwrap();
        let d = alloc.alloc(1, 0).unwrap();
        assert_eq!(
            d,
            Allocation {
                addr: a.addr,
                node: 0,
                fresh: false
            }
        );
        alloc.free(d.addr, 1).unwrap();
        alloc.free(b.addr, 3).unwrap();
        // a and b merged into one 5-page block.
        let e = alloc.alloc(5, 0).unwrap();
        assert_eq!(e.addr, a.addr);
        assert!(!e.fresh);
        alloc.free(e.addr, 5).unwrap();
        // Freeing the block at the bump pointer takes everything back.
        alloc.free(c.addr, 1).unwrap();
        assert_eq!(alloc.free_pages_on(0), before);
        assert_eq!(alloc.alloc(6, 0).unwrap().addr, a.addr);
        assert_eq!(alloc.leaked_pages(), 0);
    }

    #[test]
    fn memory_given_back_to_the_bump_pointer_is_not_fresh() {
        let mut alloc = two_nodes();
        let a = alloc.alloc(4, 0).unwrap();
        assert!(a.fresh);
        alloc.free(a.addr, 4).unwrap();
        // The same pages come back from the bump pointer: they were written, so the
        // kernel must clear them.
        let b = alloc.alloc(2, 0).unwrap();
        assert_eq!(b.addr, a.addr);
        assert!(!b.fresh);
        // A block reaching above the high-water mark is not fresh either.
        let c = alloc.alloc(4, 0).unwrap();
        assert!(!c.fresh);
        let d = alloc.alloc(1, 0).unwrap();
        assert!(d.fresh);
    }

    #[test]
    fn pages_given_back_clean_stay_fresh() {
        let mut alloc = two_nodes();
        let a = alloc.alloc(8, 0).unwrap();
        let guard = alloc.alloc(1, 0).unwrap();
        // The head of `a` was never written: reused from the free list, it is fresh.
        alloc.free_clean(a.addr, 4).unwrap();
        let b = alloc.alloc(4, 0).unwrap();
        assert_eq!((b.addr, b.fresh), (a.addr, true));
        // A clean block merged with a written one is not.
        alloc.free(a.addr + 4 * PAGE_SIZE, 2).unwrap();
        alloc.free_clean(a.addr + 6 * PAGE_SIZE, 2).unwrap();
        let c = alloc.alloc(4, 0).unwrap();
        assert_eq!((c.addr, c.fresh), (a.addr + 4 * PAGE_SIZE, false));
        // Clean pages given back at the top of the bump space are fresh again.
        alloc.free_clean(guard.addr, 1).unwrap();
        let d = alloc.alloc(1, 0).unwrap();
        assert_eq!((d.addr, d.fresh), (guard.addr, true));
    }

    #[test]
    fn bad_frees_are_rejected() {
        let mut alloc = two_nodes();
        let a = alloc.alloc(4, 1).unwrap();
        let _guard = alloc.alloc(1, 1).unwrap();
        alloc.free(a.addr, 2).unwrap();
        for (addr, pages) in [
            (a.addr, 1),
            (a.addr + 1, 1),
            (a.addr + 10 * PAGE_SIZE, 1),
            (0, 1),
            (a.addr + 2 * PAGE_SIZE, 0),
            (a.addr + 2 * PAGE_SIZE, u64::MAX),
        ] {
            assert_eq!(
                alloc.free(addr, pages),
                Err(PageAllocError::NotAllocated { addr, pages })
            );
        }
        alloc.free(a.addr + 2 * PAGE_SIZE, 2).unwrap();
    }

    #[test]
    fn ranges_are_checked() {
        let mut alloc = PageAllocator::new();
        assert!(alloc.add_range(1, PAGE_SIZE, 0, 0).is_err());
        assert!(alloc.add_range(u64::MAX - 4095, 8192, 0, 0).is_err());
        for i in 0..MAX_ARENAS as u64 {
            alloc.add_range(i * MIB, MIB, 0, 0).unwrap();
        }
        assert_eq!(
            alloc.add_range(100 * MIB, MIB, 0, 0),
            Err(PageAllocError::TooManyRanges)
        );
    }
}
