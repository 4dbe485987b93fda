//! Memory: the program break, anonymous mappings from the page allocator, and what may be
//! given back.
//!
//! The break grows up from the end of the loaded image into the range the VMM kept for
//! it (`ProgramHeader::brk_limit`, outside the allocator). `mmap` takes zeroed blocks
//! from the allocator, on the calling VP's node, and records them in a [`VmaTable`], so
//! `munmap` gives back only what `mmap` handed out. A file mapping is a private copy
//! of the file's bytes. Not yet: shared writable file mappings, `MAP_FIXED` outside the
//! program's own mappings, and protection (`mprotect` and
//! PROT_NONE guard pages are accepted but not enforced; docs/linux-abi.md).

use guest::linux_abi::errno::{EEXIST, EFAULT, EINVAL, ENODEV, ENOMEM};
use guest::linux_abi::vma::VmaTable;
use vima::layout::PAGE_SIZE;

use super::{user, SysResult};
use crate::alloc;
use crate::interrupts::current_vp;
use crate::machine::kernel;
use crate::spinlock::SpinLock;
use crate::vima_calls;

const PROT_WRITE: u64 = 0x2;
const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const MAP_STACK: u64 = 0x2_0000;
const MREMAP_MAYMOVE: u64 = 1;
const MADV_DONTNEED: u64 = 4;

struct Memory {
    brk_start: u64,
    brk: u64,
    brk_limit: u64,
    stack: (u64, u64),
    vmas: VmaTable,
}

static MEMORY: SpinLock<Memory> = SpinLock::new(Memory {
    brk_start: 0,
    brk: 0,
    brk_limit: 0,
    stack: (0, 0),
    vmas: VmaTable::new(),
});

/// Sets the break range (at load).
pub fn init(brk_start: u64, brk_limit: u64) {
    let mut mem = MEMORY.lock();
    mem.brk_start = brk_start;
    mem.brk = brk_start;
    mem.brk_limit = brk_limit;
}

/// Records the main stack (it is the program's, but not `munmap`-able).
pub fn set_stack(start: u64, end: u64) {
    MEMORY.lock().stack = (start, end);
}

fn pages_of(len: u64) -> Result<u64, i64> {
    if len == 0 {
        return Err(EINVAL);
    }
    len.checked_next_multiple_of(PAGE_SIZE)
        .map(|bytes| bytes / PAGE_SIZE)
        .ok_or(ENOMEM)
}

/// `brk(addr)`: moves the break within its range; returns the (possibly unchanged)
/// break, as Linux does.
pub fn brk(addr: u64) -> SysResult {
    let mut mem = MEMORY.lock();
    if addr >= mem.brk_start && addr <= mem.brk_limit {
        if addr < mem.brk {
            // Memory given back reads as zero when the break grows again.
            let from = addr.next_multiple_of(PAGE_SIZE);
            let to = mem.brk.next_multiple_of(PAGE_SIZE);
            if to > from {
                user::zero(from, to - from)?;
            }
        }
        mem.brk = addr;
    }
    Ok(mem.brk)
}

/// `mmap(addr, len, prot, flags, fd, offset)`.
pub fn mmap(addr: u64, len: u64, prot: u64, flags: u64, fd: u64, offset: u64) -> SysResult {
    if flags & (MAP_SHARED | MAP_PRIVATE) == 0 || offset % PAGE_SIZE != 0 {
        return Err(EINVAL);
    }
    if flags & MAP_ANONYMOUS != 0 {
        return map_anonymous(addr, len, prot, flags);
    }
    // A file: a private copy of its bytes (a shared writable mapping would have to
    // write back, which no file here supports).
    if flags & MAP_SHARED != 0 && prot & PROT_WRITE != 0 {
        return Err(ENODEV);
    }
    if super::files::check_mappable(fd)? {
        return map_anonymous(addr, len, prot, flags | MAP_ANONYMOUS);
    }
    let block = map_anonymous(addr, len, prot | PROT_WRITE, flags | MAP_ANONYMOUS)?;
    let mut done = 0;
    while done < len {
        // Not under the memory lock: reading the root may move the thread to node 0.
        match super::files::pread64(fd, block + done, len - done, offset + done) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) => {
                let _ = munmap(block, len);
                return Err(e);
            }
        }
    }
    Ok(block)
}

fn map_anonymous(addr: u64, len: u64, prot: u64, flags: u64) -> SysResult {
    let pages = pages_of(len)?;
    let bytes = pages * PAGE_SIZE;
    let mut mem = MEMORY.lock();
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        if addr % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let end = addr.checked_add(bytes).ok_or(ENOMEM)?;
        if flags & MAP_FIXED_NOREPLACE != 0 && mem.vmas.overlaps(addr, end) {
            return Err(EEXIST);
        }
        // Only the program's own mappings can be mapped over: the rest of the address
        // space is the kernel's or the allocator's.
        if !mem.vmas.covers(addr, end) {
            return Err(ENOMEM);
        }
        user::zero(addr, bytes)?;
        if prot & PROT_WRITE != 0 {
            mem.vmas.mark_written(addr, end);
        }
        return Ok(addr);
    }
    // A thread stack (glibc and musl map them MAP_STACK just before clone) comes from
    // the node the next thread will run on: the scheduler places it now and clone
    // keeps the choice.
    let vp = if flags & MAP_STACK != 0 {
        crate::sched::reserve_placement()
    } else {
        current_vp()
    };
    let node = kernel().node_of(vp as usize);
    let block = alloc::alloc_pages(pages, node).map_err(|_| ENOMEM)?;
    if mem
        .vmas
        .insert(block, block + bytes, prot & PROT_WRITE != 0)
        .is_err()
    {
        let _ = alloc::free_pages(block, pages);
        return Err(ENOMEM);
    }
    Ok(block)
}

/// `munmap(addr, len)`: gives back the parts of the range `mmap` handed out.
pub fn munmap(addr: u64, len: u64) -> SysResult {
    let pages = pages_of(len)?;
    if addr % PAGE_SIZE != 0 {
        return Err(EINVAL);
    }
    let end = addr.checked_add(pages * PAGE_SIZE).ok_or(EINVAL)?;
    let mut mem = MEMORY.lock();
    mem.vmas
        .remove(addr, end, |start, end, written| {
            let pages = (end - start) / PAGE_SIZE;
            let _ = if written {
                alloc::free_pages(start, pages)
            } else {
                alloc::free_clean_pages(start, pages)
            };
        })
        .map_err(|_| ENOMEM)?;
    Ok(0)
}

/// `mprotect(addr, len, prot)`: accepted, not enforced (see the module docs); a
/// mapping made writable is remembered as possibly written.
pub fn mprotect(addr: u64, len: u64, prot: u64) -> SysResult {
    if addr % PAGE_SIZE != 0 {
        return Err(EINVAL);
    }
    user::check(addr, len).map_err(|_| ENOMEM)?;
    if prot & PROT_WRITE != 0 {
        let end = addr.saturating_add(len);
        MEMORY.lock().vmas.mark_written(addr, end);
    }
    Ok(0)
}

/// `madvise(addr, len, advice)`: MADV_DONTNEED zeroes the program's anonymous pages
/// (the `MemDiscard` call: their memory goes back to the host where it can).
pub fn madvise(addr: u64, len: u64, advice: u64) -> SysResult {
    if addr % PAGE_SIZE != 0 {
        return Err(EINVAL);
    }
    if advice == MADV_DONTNEED && len != 0 {
        let end = addr
            .checked_add(len.next_multiple_of(PAGE_SIZE))
            .ok_or(EINVAL)?;
        let mem = MEMORY.lock();
        if !mem.vmas.covers(addr, end) {
            return Err(EINVAL);
        }
        // The VMM frees what only this node holds and zeroes the rest coherently; if it
        // refuses (it should not, the range is the program's), zero it here.
        if vima_calls::mem_discard(addr, end - addr).is_err() {
            user::zero_mostly_zero(addr, end - addr)?;
        }
    }
    Ok(0)
}

/// `mremap(old, old_len, new_len, flags)`: shrinks in place, or moves to a new block.
pub fn mremap(old: u64, old_len: u64, new_len: u64, flags: u64) -> SysResult {
    let old_bytes = pages_of(old_len)? * PAGE_SIZE;
    let new_bytes = pages_of(new_len)? * PAGE_SIZE;
    if old % PAGE_SIZE != 0 {
        return Err(EINVAL);
    }
    {
        let mem = MEMORY.lock();
        if !mem.vmas.covers(old, old + old_bytes) {
            return Err(EFAULT);
        }
    }
    if new_bytes <= old_bytes {
        if new_bytes < old_bytes {
            munmap(old + new_bytes, old_bytes - new_bytes)?;
        }
        return Ok(old);
    }
    if flags & MREMAP_MAYMOVE == 0 {
        return Err(ENOMEM);
    }
    let new = mmap(
        0,
        new_bytes,
        PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS,
        u64::MAX,
        0,
    )?;
    // SAFETY: both ranges are the program's mappings (checked above and just made),
    // distinct blocks of logical memory; nothing in the kernel refers into them.
    unsafe {
        core::ptr::copy_nonoverlapping(old as *const u8, new as *mut u8, super::usize_of(old_bytes))
    };
    munmap(old, old_bytes)?;
    Ok(new)
}

/// The program's mappings as `/proc/self/maps` lines: its image, the break, its main
/// stack and every mapping `mmap` made (`rw-p`, or `---p` while never writable).
pub fn write_maps(out: &mut impl core::fmt::Write) {
    let desc = crate::linux::program();
    let h = desc.header();
    let exe = core::str::from_utf8(desc.exe()).unwrap_or("?");
    let mem = MEMORY.lock();
    let mut lines: [(u64, u64, &str, &str); 4] = [
        (h.image_start, h.image_end, "r-xp", exe),
        (
            mem.brk_start,
            mem.brk.next_multiple_of(PAGE_SIZE),
            "rw-p",
            "[heap]",
        ),
        (mem.stack.0, mem.stack.1, "rw-p", "[stack]"),
        (0, 0, "", ""),
    ];
    lines.sort_unstable_by_key(|l| l.0);
    let mut fixed = lines.iter().filter(|l| l.1 > l.0).peekable();
    let line = |out: &mut dyn core::fmt::Write, start: u64, end: u64, perms: &str, name: &str| {
        let _ = writeln!(out, "{start:08x}-{end:08x} {perms} 00000000 00:00 0 {name}");
    };
    for v in mem.vmas.iter() {
        while let Some(f) = fixed.next_if(|f| f.0 < v.start) {
            line(out, f.0, f.1, f.2, f.3);
        }
        line(
            out,
            v.start,
            v.end,
            if v.written { "rw-p" } else { "---p" },
            "",
        );
    }
    for f in fixed {
        line(out, f.0, f.1, f.2, f.3);
    }
}
