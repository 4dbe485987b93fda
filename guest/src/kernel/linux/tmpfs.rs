//! `/tmp`: a writable file system in the virtual server's own memory. Files live in
//! pages from the allocator (on the node of the thread that grows them), so a file
//! written by a thread on node 1 is read back by a thread on node 0 through the
//! coherent memory, as the issue asks. Directories are entries too: every entry is named
//! by its whole path below `/tmp` (`a/b/c`), and an entry's parent must be a directory
//! entry (mkdir, rmdir of an empty one, rename of files and whole directories). An
//! unlinked file lives on while a descriptor refers to it.
//!
//! One spinlock guards the table; data is copied under it (no switch happens there:
//! a page fault on program memory is served by the VMM while the VP waits).

use guest::linux_abi::errno::{
    EEXIST, EFBIG, EINVAL, EISDIR, ENAMETOOLONG, ENOENT, ENOMEM, ENOSPC, ENOTDIR, ENOTEMPTY,
};
use guest::linux_abi::path::AbsPath;
use vima::layout::PAGE_SIZE;

use super::syscalls::user;
use crate::alloc;
use crate::interrupts::current_vp;
use crate::machine::kernel;
use crate::spinlock::SpinLock;

/// Most files at once.
pub const MAX_FILES: usize = 128;
/// Longest path below `/tmp`.
pub const NAME_MAX: usize = 96;
/// Largest file (the allocator must find it contiguous).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

#[derive(Clone, Copy)]
struct File {
    used: bool,
    linked: bool,
    dir: bool,
    opens: u32,
    name: [u8; NAME_MAX],
    name_len: usize,
    data: u64,
    capacity: u64,
    size: u64,
    mtime_ns: u64,
}

const EMPTY: File = File {
    used: false,
    linked: false,
    dir: false,
    opens: 0,
    name: [0; NAME_MAX],
    name_len: 0,
    data: 0,
    capacity: 0,
    size: 0,
    mtime_ns: 0,
};

static FILES: SpinLock<[File; MAX_FILES]> = SpinLock::new([EMPTY; MAX_FILES]);

/// The name of `path` in `/tmp`: `Ok(None)` for `/tmp` itself.
pub fn name_of(path: &AbsPath) -> Result<Option<&[u8]>, i64> {
    let p = path.as_bytes();
    if p == b"/tmp" {
        return Ok(None);
    }
    let name = &p[b"/tmp/".len()..];
    if name.len() > NAME_MAX {
        return Err(ENAMETOOLONG);
    }
    Ok(Some(name))
}

fn find_locked(files: &[File; MAX_FILES], name: &[u8]) -> Option<usize> {
    files
        .iter()
        .position(|f| f.used && f.linked && &f.name[..f.name_len] == name)
}

/// Puts a new entry `name` (a directory if `dir`) in a free slot; returns the slot.
fn create_locked(files: &mut [File; MAX_FILES], name: &[u8], dir: bool) -> Result<usize, i64> {
    let slot = files.iter().position(|f| !f.used).ok_or(ENOSPC)?;
    let mut entry = EMPTY;
    entry.used = true;
    entry.linked = true;
    entry.dir = dir;
    entry.name[..name.len()].copy_from_slice(name);
    entry.name_len = name.len();
    entry.mtime_ns = now_ns();
    files[slot] = entry;
    Ok(slot)
}

/// Takes `slot`'s name away; an entry nobody has open is emptied, and its data (to free
/// outside the lock) returned.
fn unlink_locked(files: &mut [File; MAX_FILES], slot: usize) -> Option<(u64, u64)> {
    let entry = &mut files[slot];
    entry.linked = false;
    if entry.opens != 0 {
        return None;
    }
    let freed = (entry.data, entry.capacity);
    *entry = EMPTY;
    Some(freed)
}

/// Every directory above `name` exists (ENOENT if one is missing, ENOTDIR if one is a
/// file).
fn check_parents(files: &[File; MAX_FILES], name: &[u8]) -> Result<(), i64> {
    for (at, _) in name.iter().enumerate().filter(|&(_, &b)| b == b'/') {
        match find_locked(files, &name[..at]) {
            Some(slot) if files[slot].dir => {}
            Some(_) => return Err(ENOTDIR),
            None => return Err(ENOENT),
        }
    }
    Ok(())
}

/// True when `name` is `dir` or lies below it.
fn within(name: &[u8], dir: &[u8]) -> bool {
    name.starts_with(dir) && (name.len() == dir.len() || name[dir.len()] == b'/')
}

fn has_children(files: &[File; MAX_FILES], dir: &[u8]) -> bool {
    files
        .iter()
        .any(|f| f.used && f.linked && f.name_len > dir.len() && within(&f.name[..f.name_len], dir))
}

/// True when `slot` is a directory.
pub fn is_dir(slot: usize) -> bool {
    FILES.lock()[slot % MAX_FILES].dir
}

/// `mkdir` of `name`.
pub fn mkdir(name: &[u8]) -> Result<(), i64> {
    let mut files = FILES.lock();
    check_parents(&files, name)?;
    if find_locked(&files, name).is_some() {
        return Err(EEXIST);
    }
    create_locked(&mut files, name, true).map(|_| ())
}

/// `rmdir` of `name`: an empty directory.
pub fn rmdir(name: &[u8]) -> Result<(), i64> {
    let mut files = FILES.lock();
    check_parents(&files, name)?;
    let slot = find_locked(&files, name).ok_or(ENOENT)?;
    if !files[slot].dir {
        return Err(ENOTDIR);
    }
    if has_children(&files, name) {
        return Err(ENOTEMPTY);
    }
    // A directory holds no data.
    let _ = unlink_locked(&mut files, slot);
    Ok(())
}

/// `rename(old, new)` within `/tmp` (`noreplace`: EEXIST if `new` exists). A directory
/// moves with everything below it; an existing `new` is replaced if it is a file and
/// `old` is one, or an empty directory and `old` is one.
pub fn rename(old: &[u8], new: &[u8], noreplace: bool) -> Result<(), i64> {
    let freed = {
        let mut files = FILES.lock();
        check_parents(&files, old)?;
        check_parents(&files, new)?;
        let from = find_locked(&files, old).ok_or(ENOENT)?;
        let moving_dir = files[from].dir;
        if moving_dir && new.len() > old.len() && within(new, old) {
            return Err(EINVAL);
        }
        if old == new {
            return Ok(());
        }
        let mut freed = None;
        if let Some(to) = find_locked(&files, new) {
            if noreplace {
                return Err(EEXIST);
            }
            match (moving_dir, files[to].dir) {
                (false, true) => return Err(EISDIR),
                (true, false) => return Err(ENOTDIR),
                (true, true) if has_children(&files, new) => return Err(ENOTEMPTY),
                _ => {}
            }
            freed = unlink_locked(&mut files, to);
        }
        // Every name that changes must fit before any changes.
        let grows = new.len().saturating_sub(old.len());
        let too_long = files.iter().any(|f| {
            f.used
                && f.linked
                && within(&f.name[..f.name_len], old)
                && f.name_len + grows > NAME_MAX
        });
        if too_long {
            return Err(ENAMETOOLONG);
        }
        for f in files.iter_mut().filter(|f| f.used && f.linked) {
            let len = f.name_len;
            if !within(&f.name[..len], old) {
                continue;
            }
            let mut renamed = [0u8; NAME_MAX];
            let rest = len - old.len();
            renamed[..new.len()].copy_from_slice(new);
            renamed[new.len()..new.len() + rest].copy_from_slice(&f.name[old.len()..len]);
            f.name = renamed;
            f.name_len = new.len() + rest;
        }
        files[from].mtime_ns = now_ns();
        freed
    };
    if let Some((data, capacity)) = freed {
        free(data, capacity);
    }
    Ok(())
}

/// Opens (`create`: creating it if missing; `exclusive`: only creating) file `name`
/// and counts the open; `truncate` empties it. Returns its slot.
pub fn open(name: &[u8], create: bool, exclusive: bool, truncate: bool) -> Result<usize, i64> {
    let mut files = FILES.lock();
    check_parents(&files, name)?;
    let slot = match find_locked(&files, name) {
        Some(_) if exclusive => return Err(EEXIST),
        Some(slot) if truncate && files[slot].dir => return Err(EISDIR),
        Some(slot) => slot,
        None if !create => return Err(ENOENT),
        None => create_locked(&mut files, name, false)?,
    };
    files[slot].opens += 1;
    if truncate {
        files[slot].size = 0;
        files[slot].mtime_ns = now_ns();
    }
    Ok(slot)
}

/// One open of `slot` ends; an unlinked file with no opens left is freed.
pub fn close(slot: usize) {
    let freed = {
        let mut files = FILES.lock();
        let file = &mut files[slot % MAX_FILES];
        file.opens = file.opens.saturating_sub(1);
        if file.opens == 0 && !file.linked {
            let freed = (file.data, file.capacity);
            *file = EMPTY;
            Some(freed)
        } else {
            None
        }
    };
    if let Some((data, capacity)) = freed {
        free(data, capacity);
    }
}

fn free(data: u64, capacity: u64) {
    if capacity > 0 {
        // Best effort: a failure only leaks the pages.
        let _ = alloc::free_pages(data, capacity / PAGE_SIZE);
    }
}

/// Removes `name`; its data goes when the last descriptor closes.
pub fn unlink(name: &[u8]) -> Result<(), i64> {
    let freed = {
        let mut files = FILES.lock();
        check_parents(&files, name)?;
        let slot = find_locked(&files, name).ok_or(ENOENT)?;
        if files[slot].dir {
            return Err(EISDIR);
        }
        unlink_locked(&mut files, slot)
    };
    if let Some((data, capacity)) = freed {
        free(data, capacity);
    }
    Ok(())
}

/// Size and modification time of the entry in `slot`.
pub fn stat(slot: usize) -> (u64, u64) {
    let files = FILES.lock();
    let f = &files[slot % MAX_FILES];
    (f.size, f.mtime_ns)
}

/// Copies up to `count` bytes at `offset` of `slot` to the program's `buf`.
pub fn read(slot: usize, offset: u64, buf: u64, count: u64) -> Result<u64, i64> {
    let files = FILES.lock();
    let f = &files[slot % MAX_FILES];
    if f.dir {
        return Err(EISDIR);
    }
    let n = f.size.saturating_sub(offset).min(count);
    if n > 0 {
        // SAFETY: [data + offset, + n) lies within the file's own pages (size <=
        // capacity), allocated while the file exists; the lock keeps it in place.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                (f.data + offset) as *const u8,
                super::syscalls::usize_of(n),
            )
        };
        user::write(buf, bytes)?;
    }
    Ok(n)
}

/// Copies `count` bytes of the program's `buf` to `offset` of `slot` (`append`: to its
/// end), growing it; returns the bytes written and the offset after them.
pub fn write(
    slot: usize,
    offset: u64,
    append: bool,
    buf: u64,
    count: u64,
) -> Result<(u64, u64), i64> {
    user::check(buf, count)?;
    let mut files = FILES.lock();
    let f = &mut files[slot % MAX_FILES];
    if f.dir {
        return Err(EISDIR);
    }
    let at = if append { f.size } else { offset };
    let end = at.checked_add(count).ok_or(EFBIG)?;
    if end > MAX_FILE_BYTES {
        return Err(EFBIG);
    }
    if end > f.capacity {
        grow(f, end)?;
    }
    if at > f.size {
        // A hole reads as zeros.
        // SAFETY: [data + size, data + at) lies within the (grown) capacity.
        unsafe {
            core::ptr::write_bytes(
                (f.data + f.size) as *mut u8,
                0,
                super::syscalls::usize_of(at - f.size),
            )
        };
    }
    // SAFETY: [data + at, + count) lies within the capacity; the program's buffer was
    // checked to lie in logical memory.
    let dest = unsafe {
        core::slice::from_raw_parts_mut((f.data + at) as *mut u8, super::syscalls::usize_of(count))
    };
    user::read(buf, dest)?;
    f.size = f.size.max(end);
    f.mtime_ns = now_ns();
    Ok((count, end))
}

/// Sets the size of `slot` to `len` (zeros when it grows).
pub fn truncate(slot: usize, len: u64) -> Result<(), i64> {
    if len > MAX_FILE_BYTES {
        return Err(EFBIG);
    }
    let mut files = FILES.lock();
    let f = &mut files[slot % MAX_FILES];
    if f.dir {
        return Err(EISDIR);
    }
    if len > f.capacity {
        grow(f, len)?;
    }
    if len > f.size {
        // SAFETY: [data + size, data + len) lies within the capacity.
        unsafe {
            core::ptr::write_bytes(
                (f.data + f.size) as *mut u8,
                0,
                super::syscalls::usize_of(len - f.size),
            )
        };
    }
    f.size = len;
    f.mtime_ns = now_ns();
    Ok(())
}

/// Moves `f` to a block of at least `bytes`, on the caller's node.
fn grow(f: &mut File, bytes: u64) -> Result<(), i64> {
    let wanted = bytes
        .max(f.capacity * 2)
        .next_multiple_of(PAGE_SIZE)
        .max(PAGE_SIZE);
    let node = kernel().node_of(current_vp() as usize);
    let data = alloc::alloc_pages(wanted / PAGE_SIZE, node).map_err(|_| ENOMEM)?;
    if f.size > 0 {
        // SAFETY: both blocks are the file's (the old one until freed below) and do not
        // overlap; `size` bytes lie in the old one.
        unsafe {
            core::ptr::copy_nonoverlapping(
                f.data as *const u8,
                data as *mut u8,
                super::syscalls::usize_of(f.size),
            );
        }
    }
    free(f.data, f.capacity);
    f.data = data;
    f.capacity = wanted;
    Ok(())
}

/// `linux_dirent64` records of `/tmp` (`dir` None) or of the directory in slot `dir`
/// from `cookie` (a slot + 1; 0 starts with `.` and `..`) into the program's `buf`, at
/// most `len` bytes; returns (bytes, next cookie).
pub fn read_dir(dir: Option<usize>, cookie: u64, buf: u64, len: u64) -> Result<(u64, u64), i64> {
    const DT_DIR: u8 = 4;
    const DT_REG: u8 = 8;
    let files = FILES.lock();
    // Entries of the directory: the names below its own, one level down.
    let prefix_len = dir.map_or(0, |d| files[d % MAX_FILES].name_len + 1);
    let mut prefix = [0u8; NAME_MAX + 1];
    if let Some(d) = dir {
        let f = &files[d % MAX_FILES];
        prefix[..f.name_len].copy_from_slice(&f.name[..f.name_len]);
        prefix[f.name_len] = b'/';
    }
    let prefix = &prefix[..prefix_len];
    let mut written = 0u64;
    let mut next = cookie;
    // Cookies: 0 = ".", 1 = "..", 2 + slot = a file.
    while next < 2 + MAX_FILES as u64 {
        let (name, ino, kind): (&[u8], u64, u8) = match next {
            0 => (b".", 1, DT_DIR),
            1 => (b"..", 2, DT_DIR),
            n => {
                let slot = usize::try_from(n - 2).unwrap_or(0);
                let f = &files[slot];
                let name = &f.name[..f.name_len];
                let here = name.len() > prefix.len()
                    && name.starts_with(prefix)
                    && !name[prefix.len()..].contains(&b'/');
                if !(f.used && f.linked && here) {
                    next += 1;
                    continue;
                }
                let kind = if f.dir { DT_DIR } else { DT_REG };
                (&name[prefix.len()..], 100 + n, kind)
            }
        };
        let reclen = (19 + name.len() as u64 + 1).next_multiple_of(8);
        if written + reclen > len {
            break;
        }
        let mut record = [0u8; 24 + NAME_MAX + 8];
        record[0..8].copy_from_slice(&ino.to_le_bytes());
        record[8..16].copy_from_slice(&(next + 1).to_le_bytes());
        record[16..18].copy_from_slice(&u16::try_from(reclen).unwrap_or(0).to_le_bytes());
        record[18] = kind;
        record[19..19 + name.len()].copy_from_slice(name);
        user::write(buf + written, &record[..super::syscalls::usize_of(reclen)])?;
        written += reclen;
        next += 1;
    }
    Ok((written, next))
}

fn now_ns() -> u64 {
    super::syscalls::time::now_ns(0).unwrap_or(0)
}
