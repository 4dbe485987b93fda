//! The program's files: one descriptor table for all its threads (they share it, as
//! CLONE_FILES says), open file descriptions shared by duplicated descriptors, and the
//! file systems a path can name:
//! - `/dev`: null, zero, urandom, stdin, stdout, stderr;
//! - `/proc` and `/sys`: generated text (cpuinfo with one entry per VP, meminfo, maps,
//!   `/sys/devices/system/cpu/online` and `possible`, so that sysconf and libgomp see
//!   every VP of the cluster), made at open into pages of the caller's node;
//! - `/tmp`: a writable file system in logical memory ([`crate::linux::tmpfs`]);
//! - everything else: the read-only root `cvmm run --root DIR` gives, served by node
//!   0's VMM (the `File*` calls; a thread on another node moves to node 0 for them).
//!   The VMM keeps every path inside DIR (openat2 RESOLVE_IN_ROOT).
//!
//! The table is behind one spinlock, never held across a call to the VMM or a switch.

use guest::linux_abi::errno::{EBADF, EMFILE, ENOENT, ENOTDIR};
use guest::linux_abi::path::AbsPath;
use vima::layout::PAGE_SIZE;

use crate::alloc;
use crate::interrupts::current_vp;
use crate::machine::kernel;
use crate::spinlock::SpinLock;
use crate::vima_calls;

/// Most descriptors (RLIMIT_NOFILE's soft limit).
pub const MAX_FDS: usize = 1024;
/// Most open file descriptions.
const MAX_OPEN: usize = 256;

/// What an open file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// cvmm's stdin.
    Stdin,
    /// cvmm's stdout (1) or stderr (2).
    Stream(u64),
    /// /dev/null.
    Null,
    /// /dev/zero.
    Zero,
    /// /dev/urandom (and /dev/random).
    Random,
    /// A file or directory of the root, by its VMM handle.
    Host {
        /// The VMM's handle.
        handle: u64,
        /// A directory.
        dir: bool,
    },
    /// A directory the kernel makes up (lists as empty).
    KernelDir,
    /// A file of `/tmp`, by its slot ([`crate::linux::tmpfs`]).
    Tmp(usize),
    /// `/tmp` itself.
    TmpDir,
    /// One end of a pipe ([`crate::linux::pipe`]).
    Pipe {
        /// The pipe.
        index: usize,
        /// The write end.
        write: bool,
    },
    /// Generated contents in kernel pages.
    Memory {
        /// First byte.
        addr: u64,
        /// Bytes of contents.
        len: u64,
    },
}

/// An open file description.
#[derive(Clone, Copy, Debug)]
pub struct Open {
    /// What it is.
    pub kind: Kind,
    /// The file position (a directory's: the cookie of its next entry).
    pub offset: u64,
    /// O_* status flags (access mode, O_APPEND, O_NONBLOCK).
    pub flags: u64,
    refs: u32,
}

struct Table {
    fds: [i16; MAX_FDS],
    cloexec: [bool; MAX_FDS],
    open: [Option<Open>; MAX_OPEN],
    /// The path of each open directory (the base of `openat` and friends with its
    /// descriptor, and of `fchdir`).
    paths: [Option<AbsPath>; MAX_OPEN],
    cwd: AbsPath,
}

static TABLE: SpinLock<Table> = SpinLock::new(Table {
    fds: {
        let mut fds = [-1i16; MAX_FDS];
        fds[0] = 0;
        fds[1] = 1;
        fds[2] = 2;
        fds
    },
    cloexec: [false; MAX_FDS],
    open: {
        let mut open = [None; MAX_OPEN];
        open[0] = Some(Open {
            kind: Kind::Stdin,
            offset: 0,
            flags: O_RDONLY,
            refs: 1,
        });
        open[1] = Some(Open {
            kind: Kind::Stream(1),
            offset: 0,
            flags: O_WRONLY,
            refs: 1,
        });
        open[2] = Some(Open {
            kind: Kind::Stream(2),
            offset: 0,
            flags: O_WRONLY,
            refs: 1,
        });
        open
    },
    paths: [const { None }; MAX_OPEN],
    cwd: AbsPath::root(),
});

/// O_RDONLY.
pub const O_RDONLY: u64 = 0;
/// O_WRONLY.
pub const O_WRONLY: u64 = 1;

fn index_of(fd: u64) -> Result<usize, i64> {
    usize::try_from(fd)
        .ok()
        .filter(|&fd| fd < MAX_FDS)
        .ok_or(EBADF)
}

/// The open file description of `fd` (a copy: the position changes through
/// [`set_offset`]).
pub fn get(fd: u64) -> Result<Open, i64> {
    let fd = index_of(fd)?;
    let table = TABLE.lock();
    let slot = usize::try_from(table.fds[fd]).map_err(|_| EBADF)?;
    table.open[slot].ok_or(EBADF)
}

/// Sets the position of `fd`'s description.
pub fn set_offset(fd: u64, offset: u64) -> Result<(), i64> {
    let fd = index_of(fd)?;
    let mut table = TABLE.lock();
    let slot = usize::try_from(table.fds[fd]).map_err(|_| EBADF)?;
    let open = table.open[slot].as_mut().ok_or(EBADF)?;
    open.offset = offset;
    Ok(())
}

/// Sets the status flags of `fd`'s description.
pub fn set_flags(fd: u64, flags: u64) -> Result<(), i64> {
    let fd = index_of(fd)?;
    let mut table = TABLE.lock();
    let slot = usize::try_from(table.fds[fd]).map_err(|_| EBADF)?;
    let open = table.open[slot].as_mut().ok_or(EBADF)?;
    open.flags = flags;
    Ok(())
}

/// Installs a new description on the lowest free descriptor.
pub fn install(kind: Kind, flags: u64, cloexec: bool) -> Result<u64, i64> {
    install_at_path(kind, flags, cloexec, None)
}

/// [`install`] of a directory, which keeps `path` as the base of names relative to it.
pub fn install_at_path(
    kind: Kind,
    flags: u64,
    cloexec: bool,
    path: Option<AbsPath>,
) -> Result<u64, i64> {
    let mut table = TABLE.lock();
    let slot = table.open.iter().position(Option::is_none).ok_or(EMFILE)?;
    let fd = table.fds.iter().position(|&s| s < 0).ok_or(EMFILE)?;
    table.open[slot] = Some(Open {
        kind,
        offset: 0,
        flags,
        refs: 1,
    });
    table.paths[slot] = path;
    table.fds[fd] = i16::try_from(slot).map_err(|_| EMFILE)?;
    table.cloexec[fd] = cloexec;
    Ok(fd as u64)
}

/// Makes `new` (the lowest free at or above `min` if `new` is None) refer to `old`'s
/// description; a `new` in use is closed first (dup2). Returns the descriptor.
pub fn duplicate(old: u64, new: Option<u64>, min: u64, cloexec: bool) -> Result<u64, i64> {
    let old = index_of(old)?;
    let released = {
        let mut table = TABLE.lock();
        let slot = table.fds[old];
        if slot < 0 {
            return Err(EBADF);
        }
        let target = match new {
            Some(new) => index_of(new)?,
            None => {
                let min = usize::try_from(min).map_err(|_| EMFILE)?;
                (min..MAX_FDS).find(|&fd| table.fds[fd] < 0).ok_or(EMFILE)?
            }
        };
        if target == old {
            return Ok(target as u64);
        }
        let released = release_locked(&mut table, target);
        let s = usize::try_from(slot).map_err(|_| EBADF)?;
        if let Some(open) = table.open[s].as_mut() {
            open.refs += 1;
        }
        table.fds[target] = slot;
        table.cloexec[target] = cloexec;
        (released, target)
    };
    if let Some(kind) = released.0 {
        finish_close(kind);
    }
    Ok(released.1 as u64)
}

/// Drops descriptor `fd` from the table (the lock is held); returns the kind of the
/// description if this was its last descriptor, for [`finish_close`].
fn release_locked(table: &mut Table, fd: usize) -> Option<Kind> {
    let slot = usize::try_from(table.fds[fd]).ok()?;
    table.fds[fd] = -1;
    let open = table.open[slot].as_mut()?;
    open.refs -= 1;
    if open.refs > 0 {
        return None;
    }
    let kind = open.kind;
    table.open[slot] = None;
    table.paths[slot] = None;
    Some(kind)
}

/// The path of the directory open on `fd` (EBADF: none open, ENOTDIR: not a directory).
pub fn dir_path(fd: u64) -> Result<AbsPath, i64> {
    let fd = index_of(fd)?;
    let table = TABLE.lock();
    let slot = usize::try_from(table.fds[fd]).map_err(|_| EBADF)?;
    table.paths[slot].ok_or(ENOTDIR)
}

/// What closing the last descriptor of a description does outside the lock.
fn finish_close(kind: Kind) {
    match kind {
        Kind::Host { handle, .. } => {
            crate::sched::move_to_node(0);
            // Best effort: the VMM drops the handle either way at the end.
            let _ = vima_calls::file_close(handle);
        }
        Kind::Memory { addr, len } => {
            let _ = alloc::free_pages(addr, len.div_ceil(PAGE_SIZE).max(1));
        }
        Kind::Tmp(slot) => crate::linux::tmpfs::close(slot),
        Kind::Pipe { index, write } => crate::linux::pipe::close_end(index, write),
        _ => {}
    }
}

/// `close(fd)`.
pub fn close(fd: u64) -> Result<(), i64> {
    let fd = index_of(fd)?;
    let released = {
        let mut table = TABLE.lock();
        if table.fds[fd] < 0 {
            return Err(EBADF);
        }
        release_locked(&mut table, fd)
    };
    if let Some(kind) = released {
        finish_close(kind);
    }
    Ok(())
}

/// The close-on-exec flag of `fd`.
pub fn cloexec(fd: u64) -> Result<bool, i64> {
    let fd = index_of(fd)?;
    let table = TABLE.lock();
    if table.fds[fd] < 0 {
        return Err(EBADF);
    }
    Ok(table.cloexec[fd])
}

/// Sets the close-on-exec flag of `fd`.
pub fn set_cloexec(fd: u64, on: bool) -> Result<(), i64> {
    let fd = index_of(fd)?;
    let mut table = TABLE.lock();
    if table.fds[fd] < 0 {
        return Err(EBADF);
    }
    table.cloexec[fd] = on;
    Ok(())
}

/// The working directory.
pub fn cwd() -> AbsPath {
    TABLE.lock().cwd
}

/// Sets the working directory.
pub fn set_cwd(path: AbsPath) {
    TABLE.lock().cwd = path;
}

/// What a path names before it is opened.
#[derive(Clone, Copy, Debug)]
pub enum Node {
    /// A device or a standard stream.
    Device(Kind),
    /// Generated text (`/proc`, `/sys`), made at open.
    Generated(Generated),
    /// A directory the kernel makes up (`/dev`, `/proc`, `/sys` and their parents).
    KernelDir,
    /// A path of `/tmp` (`None`: `/tmp` itself).
    Tmp(Option<([u8; crate::linux::tmpfs::NAME_MAX], usize)>),
    /// A path of the root.
    Root,
}

/// The generated files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generated {
    /// /proc/cpuinfo.
    CpuInfo,
    /// /proc/meminfo.
    MemInfo,
    /// /sys/devices/system/cpu/online and possible.
    CpuList,
    /// /proc/self/maps.
    Maps,
}

/// Which file system `path` belongs to, and what it names there.
pub fn lookup(path: &AbsPath) -> Result<Node, i64> {
    let p = path.as_bytes();
    Ok(match p {
        b"/dev/null" => Node::Device(Kind::Null),
        b"/dev/zero" => Node::Device(Kind::Zero),
        b"/dev/urandom" | b"/dev/random" => Node::Device(Kind::Random),
        b"/dev/stdin" | b"/proc/self/fd/0" => Node::Device(Kind::Stdin),
        b"/dev/stdout" | b"/proc/self/fd/1" => Node::Device(Kind::Stream(1)),
        b"/dev/stderr" | b"/proc/self/fd/2" => Node::Device(Kind::Stream(2)),
        b"/proc/cpuinfo" => Node::Generated(Generated::CpuInfo),
        b"/proc/meminfo" => Node::Generated(Generated::MemInfo),
        b"/proc/self/maps" => Node::Generated(Generated::Maps),
        b"/sys/devices/system/cpu/online" | b"/sys/devices/system/cpu/possible" => {
            Node::Generated(Generated::CpuList)
        }
        b"/dev"
        | b"/proc"
        | b"/proc/self"
        | b"/sys"
        | b"/sys/devices"
        | b"/sys/devices/system"
        | b"/sys/devices/system/cpu" => Node::KernelDir,
        _ if path.is_under(b"/dev") || path.is_under(b"/proc") || path.is_under(b"/sys") => {
            return Err(ENOENT)
        }
        _ if path.is_under(b"/tmp") => match crate::linux::tmpfs::name_of(path)? {
            None => Node::Tmp(None),
            Some(name) => {
                let mut buf = [0u8; crate::linux::tmpfs::NAME_MAX];
                buf[..name.len()].copy_from_slice(name);
                Node::Tmp(Some((buf, name.len())))
            }
        },
        _ => Node::Root,
    })
}

/// A formatter into kernel pages; what does not fit is cut.
struct Text {
    addr: u64,
    cap: usize,
    len: usize,
}

impl core::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.cap - self.len);
        // SAFETY: [addr, addr + cap) are the scratch pages `generate` allocated for this
        // text alone; n bytes fit after len.
        unsafe {
            core::ptr::copy_nonoverlapping(s.as_ptr(), (self.addr + self.len as u64) as *mut u8, n)
        };
        self.len += n;
        Ok(())
    }
}

/// Pages of scratch a generated file is formatted into (its text is then copied into a
/// block of its own size).
const SCRATCH_PAGES: u64 = 8;

/// Makes the contents of a generated file in pages of the caller's node.
pub fn generate(what: Generated) -> Result<Kind, i64> {
    use core::fmt::Write;
    let k = kernel();
    let vps = k.vp_count();
    let node = k.node_of(current_vp() as usize);
    let nomem = |_| guest::linux_abi::errno::ENOMEM;
    let scratch = alloc::alloc_pages(SCRATCH_PAGES, node).map_err(nomem)?;
    let mut text = Text {
        addr: scratch,
        cap: usize::try_from(SCRATCH_PAGES * PAGE_SIZE).unwrap_or(0),
        len: 0,
    };
    match what {
        Generated::CpuList => {
            let _ = writeln!(text, "0-{}", vps.saturating_sub(1));
        }
        Generated::CpuInfo => {
            for vp in 0..vps {
                let node = k.node_of(vp);
                let _ = write!(
                    text,
                    "processor\t: {vp}\nvendor_id\t: cvmm\nmodel name\t: cvmm virtual processor\n\
                     physical id\t: {node}\nnode\t\t: {node}\ncpu MHz\t\t: {}\n\n",
                    k.config.header().tsc_khz / 1000
                );
            }
        }
        Generated::MemInfo => {
            let total: u64 = k.config.header().logical_bytes >> 10;
            let free: u64 = alloc::free_bytes() >> 10;
            let _ = write!(
                text,
                "MemTotal:       {total:8} kB\nMemFree:        {free:8} kB\nMemAvailable:   {free:8} kB\n"
            );
        }
        Generated::Maps => crate::linux::syscalls::memory::write_maps(&mut text),
    }
    let len = text.len as u64;
    let pages = len.div_ceil(PAGE_SIZE).max(1);
    let made = alloc::alloc_pages(pages, node).map_err(nomem);
    if let Ok(addr) = made {
        // SAFETY: both blocks are this file's alone and do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(scratch as *const u8, addr as *mut u8, text.len) };
    }
    let _ = alloc::free_pages(scratch, SCRATCH_PAGES);
    Ok(Kind::Memory { addr: made?, len })
}
