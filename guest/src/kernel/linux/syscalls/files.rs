//! Files: descriptors over the program's file systems ([`crate::linux::fs`]): cvmm's
//! stdin, stdout and stderr, `/dev`, generated `/proc` and `/sys` files, and the
//! read-only root of `--root` (served by node 0's VMM).

use guest::linux_abi::errno::{
    EBADF, EEXIST, EFAULT, EINTR, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTTY, ERANGE, EROFS, ESPIPE,
};
use guest::linux_abi::layout::{
    statx_from_stat, Stat, STATX_BYTES, STAT_BYTES, S_IFCHR, S_IFDIR, S_IFIFO, S_IFREG,
};
use guest::linux_abi::path::{self, AbsPath};
use vima::call::{FILE_READ_MAX, STREAM_WRITE_MAX};

use super::{user, SysResult};
use crate::linux::fs::{self, Generated, Kind, Node, O_RDONLY, O_WRONLY};
use crate::linux::{pipe, program, tmpfs};
use crate::vima_calls;

/// `AT_FDCWD`.
const AT_FDCWD: u64 = -100i64 as u64;
/// `AT_EMPTY_PATH`.
const AT_EMPTY_PATH: u64 = 0x1000;
/// Most iovecs in one `readv`/`writev` (Linux's UIO_MAXIOV).
const IOV_MAX: u64 = 1024;
const O_ACCMODE: u64 = 3;
const O_CREAT: u64 = 0x40;
const O_EXCL: u64 = 0x80;
const O_TRUNC: u64 = 0x200;
const O_APPEND: u64 = 0x400;
const O_NONBLOCK: u64 = 0x800;
const O_DIRECTORY: u64 = 0x1_0000;
const O_CLOEXEC: u64 = 0x8_0000;

/// Reads the path at `addr` and makes it absolute (relative paths: to the working
/// directory; with a directory descriptor other than AT_FDCWD: not supported yet).
fn path_at(dirfd: u64, addr: u64) -> Result<AbsPath, i64> {
    let mut name = [0u8; path::PATH_BYTES];
    let len = user::read_path(addr, &mut name)?;
    // The descriptor is an `int`: AT_FDCWD arrives as 0xffffff9c from glibc, sign
    // extended from others.
    if len > 0 && name[0] != b'/' && dirfd & 0xffff_ffff != AT_FDCWD & 0xffff_ffff {
        return path::resolve(&fs::dir_path(dirfd)?, &name[..len]);
    }
    path::resolve(&fs::cwd(), &name[..len])
}

/// A root path's handle, opened on node 0 (the thread moves there).
fn open_root(path: &AbsPath, nofollow: bool) -> Result<u64, i64> {
    crate::sched::move_to_node(0);
    vima_calls::file_open(path.as_bytes(), nofollow)
}

fn is_dir_handle(handle: u64) -> Result<bool, i64> {
    let mut st = [0u8; 144];
    let at = st.as_mut_ptr() as u64;
    vima_calls::file_stat(handle, at)?;
    let mode = u32::from_le_bytes([st[24], st[25], st[26], st[27]]);
    Ok(mode & 0o170_000 == S_IFDIR)
}

/// `openat(dirfd, path, flags, mode)` (and `open`).
pub fn openat(dirfd: u64, addr: u64, flags: u64) -> SysResult {
    let path = path_at(dirfd, addr)?;
    let access = flags & O_ACCMODE;
    let writes = access != O_RDONLY || flags & (O_CREAT | O_TRUNC) != 0;
    let cloexec = flags & O_CLOEXEC != 0;
    let status = flags & (O_ACCMODE | O_APPEND | O_NONBLOCK);
    let kind = match fs::lookup(&path)? {
        Node::Device(kind) => kind,
        Node::KernelDir if writes => return Err(EISDIR),
        Node::KernelDir => Kind::KernelDir,
        Node::Generated(_) if writes => return Err(guest::linux_abi::errno::EACCES),
        Node::Generated(what) => fs::generate(what)?,
        Node::Tmp(None) if writes => return Err(EISDIR),
        Node::Tmp(None) => Kind::TmpDir,
        Node::Tmp(Some((name, len))) => {
            let exclusive = flags & O_CREAT != 0 && flags & O_EXCL != 0;
            let truncate = flags & O_TRUNC != 0 && access != O_RDONLY;
            let slot = tmpfs::open(&name[..len], flags & O_CREAT != 0, exclusive, truncate)?;
            if writes && tmpfs::is_dir(slot) {
                tmpfs::close(slot);
                return Err(EISDIR);
            }
            Kind::Tmp(slot)
        }
        Node::Root => {
            let handle = match open_root(&path, false) {
                Ok(handle) => handle,
                Err(ENOENT) if flags & O_CREAT != 0 => return Err(EROFS),
                Err(e) => return Err(e),
            };
            let dir = is_dir_handle(handle);
            let refuse = match dir {
                Ok(true) if writes => Some(EISDIR),
                Ok(false) if flags & O_DIRECTORY != 0 => Some(ENOTDIR),
                Ok(_) if writes => Some(EROFS),
                Ok(_) => None,
                Err(e) => Some(e),
            };
            if let Some(errno) = refuse {
                let _ = vima_calls::file_close(handle);
                return Err(errno);
            }
            Kind::Host {
                handle,
                dir: dir == Ok(true),
            }
        }
    };
    if flags & O_DIRECTORY != 0 && !is_directory(kind) {
        if let Kind::Tmp(slot) = kind {
            tmpfs::close(slot);
        }
        return Err(ENOTDIR);
    }
    let base = is_directory(kind).then_some(path);
    let installed = fs::install_at_path(kind, status, cloexec, base);
    if let (Err(_), Kind::Tmp(slot)) = (&installed, kind) {
        tmpfs::close(slot);
    }
    installed
}

/// True for every kind of directory.
fn is_directory(kind: Kind) -> bool {
    match kind {
        Kind::KernelDir | Kind::TmpDir | Kind::Host { dir: true, .. } => true,
        Kind::Tmp(slot) => tmpfs::is_dir(slot),
        _ => false,
    }
}

/// `open(path, flags, mode)`.
pub fn open(addr: u64, flags: u64) -> SysResult {
    openat(AT_FDCWD, addr, flags)
}

/// `close(fd)`.
pub fn close(fd: u64) -> SysResult {
    fs::close(fd).map(|()| 0)
}

/// Shortest and longest pause between two looks at standard input while it is empty.
const STDIN_POLL_NS: (u64, u64) = (200_000, 10_000_000);

/// Reads cvmm's standard input (`StreamRead`), served by node 0's VMM: a thread on
/// another node moves to a VP of node 0 first. While nothing has arrived the thread
/// sleeps in the scheduler (its VP runs others), looking again after 0.2 ms, doubling
/// up to 10 ms.
fn read_stdin(buf: u64, count: u64) -> SysResult {
    if count == 0 {
        return Ok(0);
    }
    crate::sched::move_to_node(0);
    let len = count.min(vima::call::STREAM_READ_MAX);
    let mut pause = STDIN_POLL_NS.0;
    loop {
        match vima_calls::stream_read(vima::call::STREAM_STDIN, buf, len) {
            Ok(Some(n)) => return Ok(n),
            Ok(None) => {
                let until = crate::clock::tsc() + crate::clock::ns_to_tsc(pause);
                if !crate::sched::sleep_until_unless(until, super::signals::signal_pending) {
                    // A signal: restarted after its handler (SA_RESTART) or EINTR.
                    return Err(guest::linux_abi::errno::ERESTARTSYS);
                }
                pause = (pause * 2).min(STDIN_POLL_NS.1);
            }
            Err(_) => return Err(guest::linux_abi::errno::EIO),
        }
    }
}

/// True when a read of stdin would not wait (node 0's VMM holds its bytes).
fn stdin_ready() -> bool {
    crate::sched::move_to_node(0);
    matches!(
        vima_calls::stream_read(vima::call::STREAM_STDIN, 0, 0),
        Ok(Some(_)) | Err(_)
    )
}

/// Reads `count` bytes of `kind` at `offset` into `buf`; `None` offset for streams.
fn read_kind(kind: Kind, offset: u64, buf: u64, count: u64) -> SysResult {
    match kind {
        Kind::Stdin => read_stdin(buf, count),
        Kind::Stream(_) => Err(EBADF),
        Kind::Null => Ok(0),
        Kind::Zero => {
            user::zero(buf, count)?;
            Ok(count)
        }
        Kind::Random => super::identity::getrandom(buf, count),
        Kind::KernelDir | Kind::TmpDir | Kind::Host { dir: true, .. } => Err(EISDIR),
        Kind::Tmp(slot) => tmpfs::read(slot, offset, buf, count),
        Kind::Pipe { .. } => Err(ESPIPE),
        Kind::Host { handle, dir: false } => {
            crate::sched::move_to_node(0);
            vima_calls::file_read(handle, offset, buf, count.min(FILE_READ_MAX))
        }
        Kind::Memory { addr, len } => {
            let n = len.saturating_sub(offset).min(count);
            if n > 0 {
                // SAFETY: [addr + offset, + n) lies in the file's own kernel pages, which
                // stay allocated while a descriptor refers to them.
                let bytes = unsafe {
                    core::slice::from_raw_parts((addr + offset) as *const u8, super::usize_of(n))
                };
                user::write(buf, bytes)?;
            }
            Ok(n)
        }
    }
}

/// True for files with a position (regular files and generated ones).
fn seekable(kind: Kind) -> bool {
    matches!(kind, Kind::Host { .. } | Kind::Memory { .. } | Kind::Tmp(_))
}

/// `read(fd, buf, count)`.
pub fn read(fd: u64, buf: u64, count: u64) -> SysResult {
    user::check(buf, count)?;
    let open = fs::get(fd)?;
    if open.flags & O_ACCMODE == O_WRONLY {
        return Err(EBADF);
    }
    if let Kind::Pipe { index, .. } = open.kind {
        return pipe::read(index, buf, count, open.flags & O_NONBLOCK != 0);
    }
    let n = read_kind(open.kind, open.offset, buf, count)?;
    if seekable(open.kind) {
        fs::set_offset(fd, open.offset + n)?;
    }
    Ok(n)
}

/// Whether `fd` can be mapped (mmap of a file): `Ok(true)` for /dev/zero (a mapping of
/// zeros), `Ok(false)` for a file to copy; EBADF for a closed descriptor, EACCES for a
/// write-only one, ENODEV for one that is not a file.
pub fn check_mappable(fd: u64) -> Result<bool, i64> {
    let open = fs::get(fd)?;
    if open.flags & O_ACCMODE == O_WRONLY {
        return Err(guest::linux_abi::errno::EACCES);
    }
    match open.kind {
        Kind::Zero => Ok(true),
        Kind::Host { dir: false, .. } | Kind::Memory { .. } | Kind::Tmp(_) => Ok(false),
        _ => Err(guest::linux_abi::errno::ENODEV),
    }
}

/// `pread64(fd, buf, count, offset)`.
pub fn pread64(fd: u64, buf: u64, count: u64, offset: u64) -> SysResult {
    user::check(buf, count)?;
    let open = fs::get(fd)?;
    if !seekable(open.kind) {
        return Err(ESPIPE);
    }
    if i64::try_from(offset).is_err() {
        return Err(EINVAL);
    }
    read_kind(open.kind, offset, buf, count)
}

/// The iovecs at `iov`: (base, len) pairs, checked.
fn for_each_iov(
    iov: u64,
    iovcnt: u64,
    mut f: impl FnMut(u64, u64) -> Result<(u64, bool), i64>,
) -> SysResult {
    if iovcnt > IOV_MAX {
        return Err(EINVAL);
    }
    user::check(iov, iovcnt * 16)?;
    let mut total = 0u64;
    for i in 0..iovcnt {
        let base = user::read_u64(iov + i * 16)?;
        let len = user::read_u64(iov + i * 16 + 8)?;
        if len == 0 {
            continue;
        }
        match f(base, len) {
            Ok((n, more)) => {
                total += n;
                if !more || n < len {
                    break;
                }
            }
            Err(e) if total == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(total)
}

/// `readv(fd, iov, iovcnt)`.
pub fn readv(fd: u64, iov: u64, iovcnt: u64) -> SysResult {
    for_each_iov(iov, iovcnt, |base, len| {
        let n = read(fd, base, len)?;
        Ok((n, n != 0))
    })
}

/// `write(fd, buf, count)`.
pub fn write(fd: u64, buf: u64, count: u64) -> SysResult {
    user::check(buf, count)?;
    let open = fs::get(fd)?;
    if open.flags & O_ACCMODE == O_RDONLY && !matches!(open.kind, Kind::Stream(_)) {
        return Err(EBADF);
    }
    match open.kind {
        Kind::Stream(stream) => {
            let mut done = 0;
            while done < count {
                let chunk = (count - done).min(STREAM_WRITE_MAX);
                // The VMM reads the program's bytes straight from logical memory.
                done +=
                    vima_calls::stream_write_at(stream, buf + done, chunk).map_err(|_| EFAULT)?;
            }
            Ok(count)
        }
        Kind::Null | Kind::Zero | Kind::Random => Ok(count),
        Kind::Pipe { index, .. } => pipe::write(index, buf, count, open.flags & O_NONBLOCK != 0),
        Kind::Tmp(slot) => {
            let append = open.flags & O_APPEND != 0;
            let (n, end) = tmpfs::write(slot, open.offset, append, buf, count)?;
            fs::set_offset(fd, end)?;
            Ok(n)
        }
        _ => Err(EBADF),
    }
}

/// `writev(fd, iov, iovcnt)`.
pub fn writev(fd: u64, iov: u64, iovcnt: u64) -> SysResult {
    for_each_iov(iov, iovcnt, |base, len| Ok((write(fd, base, len)?, true)))
}

/// `pwrite64(fd, buf, count, offset)`: files of `/tmp`.
pub fn pwrite64(fd: u64, buf: u64, count: u64, offset: u64) -> SysResult {
    let open = fs::get(fd)?;
    match open.kind {
        Kind::Tmp(slot) if open.flags & O_ACCMODE != O_RDONLY => {
            if i64::try_from(offset).is_err() {
                return Err(EINVAL);
            }
            Ok(tmpfs::write(slot, offset, false, buf, count)?.0)
        }
        kind if seekable(kind) => Err(EBADF),
        _ => Err(ESPIPE),
    }
}

/// `fsync(fd)` / `fdatasync(fd)`: memory is all there is; nothing to flush.
pub fn fsync(fd: u64) -> SysResult {
    fs::get(fd).map(|_| 0)
}

/// `ftruncate(fd, length)`: files of `/tmp` opened for writing.
pub fn ftruncate(fd: u64, length: u64) -> SysResult {
    let open = fs::get(fd)?;
    match open.kind {
        Kind::Tmp(slot) if open.flags & O_ACCMODE != O_RDONLY => {
            let len =
                u64::try_from(i64::from_ne_bytes(length.to_ne_bytes())).map_err(|_| EINVAL)?;
            tmpfs::truncate(slot, len).map(|()| 0)
        }
        Kind::Host { .. } => Err(EROFS),
        _ => Err(EINVAL),
    }
}

/// `unlink(path)` / `unlinkat(dirfd, path, flags)`: files of `/tmp`.
pub fn unlinkat(dirfd: u64, addr: u64, flags: u64) -> SysResult {
    const AT_REMOVEDIR: u64 = 0x200;
    let path = path_at(dirfd, addr)?;
    match fs::lookup(&path)? {
        Node::Tmp(Some((name, len))) if flags & AT_REMOVEDIR == 0 => {
            tmpfs::unlink(&name[..len]).map(|()| 0)
        }
        Node::Tmp(Some((name, len))) => tmpfs::rmdir(&name[..len]).map(|()| 0),
        Node::Tmp(None) => Err(guest::linux_abi::errno::EBUSY),
        Node::Root => with_path(&path, true, |_| Err(EROFS)),
        _ => Err(guest::linux_abi::errno::EACCES),
    }
}

/// The `struct stat` of what `kind` is.
fn stat_bytes(kind: Kind) -> Result<[u8; STAT_BYTES], i64> {
    let (mode, size, rdev) = match kind {
        Kind::Stdin | Kind::Stream(_) | Kind::Pipe { .. } => (S_IFIFO | 0o600, 0, 0),
        Kind::Null => (S_IFCHR | 0o666, 0, 0x103),
        Kind::Zero => (S_IFCHR | 0o666, 0, 0x105),
        Kind::Random => (S_IFCHR | 0o666, 0, 0x109),
        Kind::KernelDir => (S_IFDIR | 0o555, 0, 0),
        Kind::TmpDir => (S_IFDIR | 0o1777, 0, 0),
        Kind::Memory { len, .. } => (S_IFREG | 0o444, len, 0),
        Kind::Tmp(slot) => {
            let (size, mtime) = tmpfs::stat(slot);
            let dir = tmpfs::is_dir(slot);
            let st = Stat {
                dev: 0x15,
                ino: 100 + slot as u64,
                nlink: if dir { 2 } else { 1 },
                mode: if dir {
                    S_IFDIR | 0o755
                } else {
                    S_IFREG | 0o644
                },
                size: i64::try_from(size).unwrap_or(i64::MAX),
                blksize: 4096,
                blocks: i64::try_from(size.div_ceil(512)).unwrap_or(0),
                mtime_sec: i64::try_from(mtime / 1_000_000_000).unwrap_or(0),
                mtime_nsec: i64::try_from(mtime % 1_000_000_000).unwrap_or(0),
                ..Stat::default()
            };
            return Ok(st.to_bytes());
        }
        Kind::Host { handle, .. } => {
            // The VMM of node 0 writes it into this kernel stack buffer.
            let mut buf = [0u8; STAT_BYTES];
            crate::sched::move_to_node(0);
            vima_calls::file_stat(handle, buf.as_mut_ptr() as u64)?;
            return Ok(buf);
        }
    };
    let st = Stat {
        dev: 0xc,
        ino: 1,
        nlink: 1,
        mode,
        rdev,
        size: i64::try_from(size).unwrap_or(i64::MAX),
        blksize: 4096,
        ..Stat::default()
    };
    Ok(st.to_bytes())
}

fn stat_of(kind: Kind, statbuf: u64) -> SysResult {
    user::check(statbuf, STAT_BYTES as u64)?;
    user::write(statbuf, &stat_bytes(kind)?)?;
    Ok(0)
}

fn statx_of(kind: Kind, statxbuf: u64) -> SysResult {
    user::check(statxbuf, STATX_BYTES as u64)?;
    user::write(statxbuf, &statx_from_stat(&stat_bytes(kind)?))?;
    Ok(0)
}

/// `fstat(fd, statbuf)`.
pub fn fstat(fd: u64, statbuf: u64) -> SysResult {
    stat_of(fs::get(fd)?.kind, statbuf)
}

/// Runs `f` on what `path` names, opened for the moment (`nofollow`: a final symbolic
/// link of the root itself).
fn with_path(path: &AbsPath, nofollow: bool, f: impl FnOnce(Kind) -> SysResult) -> SysResult {
    match fs::lookup(path)? {
        Node::Device(kind) => f(kind),
        Node::KernelDir => f(Kind::KernelDir),
        Node::Generated(what) => f(Kind::Memory {
            addr: 0,
            len: if what == Generated::CpuList { 4 } else { 0 },
        }),
        Node::Tmp(None) => f(Kind::TmpDir),
        Node::Tmp(Some((name, len))) => {
            let slot = tmpfs::open(&name[..len], false, false, false)?;
            let result = f(Kind::Tmp(slot));
            tmpfs::close(slot);
            result
        }
        Node::Root => {
            let handle = open_root(path, nofollow)?;
            let dir = is_dir_handle(handle).unwrap_or(false);
            let result = f(Kind::Host { handle, dir });
            let _ = vima_calls::file_close(handle);
            result
        }
    }
}

/// `newfstatat(dirfd, path, statbuf, flags)` (and `stat`; `lstat` is AT_SYMLINK_NOFOLLOW).
pub fn newfstatat(dirfd: u64, addr: u64, statbuf: u64, flags: u64) -> SysResult {
    const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
    let mut first = [0u8];
    user::read(addr, &mut first)?;
    if first[0] == 0 && flags & AT_EMPTY_PATH != 0 {
        return fstat(dirfd, statbuf);
    }
    let path = path_at(dirfd, addr)?;
    let nofollow = flags & AT_SYMLINK_NOFOLLOW != 0;
    with_path(&path, nofollow, |kind| stat_of(kind, statbuf))
}

/// `statx(dirfd, path, flags, mask, statxbuf)`: the basic fields (what `stat` knows)
/// whatever `mask` asks for, as Linux may; AT_EMPTY_PATH and AT_SYMLINK_NOFOLLOW as in
/// `newfstatat`, the sync flags are meaningless here.
pub fn statx(dirfd: u64, addr: u64, flags: u64, statxbuf: u64) -> SysResult {
    const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
    const KNOWN: u64 = AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | 0x800 | 0x6000;
    if flags & !KNOWN != 0 {
        return Err(EINVAL);
    }
    let mut first = [0u8];
    user::read(addr, &mut first)?;
    if first[0] == 0 && flags & AT_EMPTY_PATH != 0 {
        return statx_of(fs::get(dirfd)?.kind, statxbuf);
    }
    let path = path_at(dirfd, addr)?;
    let nofollow = flags & AT_SYMLINK_NOFOLLOW != 0;
    with_path(&path, nofollow, |kind| statx_of(kind, statxbuf))
}

/// `faccessat2(dirfd, path, mode, flags)` (and `access`, `faccessat`): everything is
/// readable; nothing of the root is writable.
pub fn faccessat(dirfd: u64, addr: u64, mode: u64) -> SysResult {
    const W_OK: u64 = 2;
    let path = path_at(dirfd, addr)?;
    with_path(&path, false, |kind| match kind {
        Kind::Host { .. } | Kind::Memory { .. } | Kind::KernelDir if mode & W_OK != 0 => Err(EROFS),
        _ => Ok(0),
    })
}

/// `utimensat(dirfd, path, times, flags)`: nothing of the file systems can be changed.
pub fn utimensat(dirfd: u64, addr: u64) -> SysResult {
    if addr == 0 {
        fs::get(dirfd)?;
        return Err(EROFS);
    }
    let path = path_at(dirfd, addr)?;
    with_path(&path, false, |_| Err(EROFS))
}

/// `ioctl(fd, request, arg)`: the terminal requests (TCGETS, TCSETS*, TIOCGWINSZ) on
/// stdin, stdout and stderr go to node 0's host streams (`TermIoctl`), which answer
/// ENOTTY unless `cvmm` runs on a terminal; everything else is not a terminal.
pub fn ioctl(fd: u64, request: u64, arg: u64) -> SysResult {
    use vima::call::term;
    let stream = match fs::get(fd)?.kind {
        Kind::Stdin => 0,
        Kind::Stream(n) => n,
        _ => return Err(ENOTTY),
    };
    let len = match request {
        term::TCGETS | term::TCSETS | term::TCSETSW | term::TCSETSF => term::TERMIOS_BYTES,
        term::TIOCGWINSZ => term::WINSIZE_BYTES,
        _ => return Err(ENOTTY),
    };
    user::check(arg, len)?;
    crate::sched::move_to_node(0);
    vima_calls::term_ioctl(stream, request, arg)
}

/// `lseek(fd, offset, whence)`.
pub fn lseek(fd: u64, offset: u64, whence: u64) -> SysResult {
    const SEEK_SET: u64 = 0;
    const SEEK_CUR: u64 = 1;
    const SEEK_END: u64 = 2;
    let open = fs::get(fd)?;
    let size = match open.kind {
        Kind::Null | Kind::Zero | Kind::Random => return Ok(0),
        Kind::Stdin | Kind::Stream(_) | Kind::Pipe { .. } => return Err(ESPIPE),
        Kind::KernelDir | Kind::TmpDir => 0,
        Kind::Memory { len, .. } => len,
        Kind::Tmp(slot) => tmpfs::stat(slot).0,
        Kind::Host { dir: true, .. } => {
            // A directory's position is an entry cookie: only rewinding is meaningful.
            if whence == SEEK_SET {
                fs::set_offset(fd, offset)?;
                return Ok(offset);
            }
            return Err(EINVAL);
        }
        Kind::Host { handle, .. } => {
            let mut st = [0u8; 144];
            crate::sched::move_to_node(0);
            vima_calls::file_stat(handle, st.as_mut_ptr() as u64)?;
            u64::from_le_bytes(st[48..56].try_into().unwrap_or([0; 8]))
        }
    };
    let delta = i64::from_ne_bytes(offset.to_ne_bytes());
    let base = match whence {
        SEEK_SET => 0,
        SEEK_CUR => open.offset,
        SEEK_END => size,
        _ => return Err(EINVAL),
    };
    let new = base.checked_add_signed(delta).ok_or(EINVAL)?;
    if i64::try_from(new).is_err() {
        return Err(EINVAL);
    }
    fs::set_offset(fd, new)?;
    Ok(new)
}

/// `getdents64(fd, dirp, count)`.
pub fn getdents64(fd: u64, dirp: u64, count: u64) -> SysResult {
    user::check(dirp, count)?;
    let open = fs::get(fd)?;
    match open.kind {
        Kind::KernelDir => Ok(0),
        Kind::TmpDir | Kind::Tmp(_) => {
            let dir = match open.kind {
                Kind::Tmp(slot) if tmpfs::is_dir(slot) => Some(slot),
                Kind::Tmp(_) => return Err(ENOTDIR),
                _ => None,
            };
            let (n, next) = tmpfs::read_dir(dir, open.offset, dirp, count)?;
            if n == 0 && next < 2 + tmpfs::MAX_FILES as u64 {
                return Err(EINVAL);
            }
            fs::set_offset(fd, next)?;
            Ok(n)
        }
        Kind::Host {
            handle, dir: true, ..
        } => {
            crate::sched::move_to_node(0);
            let n = vima_calls::file_read_dir(handle, open.offset, dirp, count.min(FILE_READ_MAX))?;
            // The next call starts after the last record returned (its d_off).
            let mut at = 0;
            let mut next = open.offset;
            while at + 19 <= n {
                let mut head = [0u8; 18];
                user::read(dirp + at, &mut head)?;
                next = u64::from_le_bytes(head[8..16].try_into().unwrap_or([0; 8]));
                let reclen = u64::from(u16::from_le_bytes([head[16], head[17]]));
                if reclen == 0 {
                    break;
                }
                at += reclen;
            }
            fs::set_offset(fd, next)?;
            Ok(n)
        }
        _ => Err(ENOTDIR),
    }
}

/// `getcwd(buf, size)`: returns the length with its NUL.
pub fn getcwd(buf: u64, size: u64) -> SysResult {
    let cwd = fs::cwd();
    let bytes = cwd.as_bytes();
    let need = bytes.len() as u64 + 1;
    if size < need {
        return Err(ERANGE);
    }
    user::write(buf, bytes)?;
    user::write(buf + bytes.len() as u64, &[0])?;
    Ok(need)
}

/// `chdir(path)`.
pub fn chdir(addr: u64) -> SysResult {
    let path = path_at(AT_FDCWD, addr)?;
    with_path(&path, false, |kind| {
        if is_directory(kind) {
            Ok(0)
        } else {
            Err(ENOTDIR)
        }
    })?;
    fs::set_cwd(path);
    Ok(0)
}

/// `fchdir(fd)`: to the directory open on `fd`.
pub fn fchdir(fd: u64) -> SysResult {
    fs::set_cwd(fs::dir_path(fd)?);
    Ok(0)
}

/// `mkdirat(dirfd, path, mode)` (and `mkdir`): directories in `/tmp`; anything else
/// exists (EEXIST) or lies on a read-only file system (EROFS).
pub fn mkdirat(dirfd: u64, addr: u64) -> SysResult {
    let path = path_at(dirfd, addr)?;
    match fs::lookup(&path)? {
        Node::Tmp(Some((name, len))) => tmpfs::mkdir(&name[..len]).map(|()| 0),
        Node::Root => match with_path(&path, true, |_| Ok(0)) {
            Ok(_) => Err(EEXIST),
            Err(ENOENT) => Err(EROFS),
            Err(e) => Err(e),
        },
        _ => Err(EEXIST),
    }
}

/// `renameat2(olddirfd, old, newdirfd, new, flags)` (and `rename`, `renameat`): within
/// `/tmp` (RENAME_NOREPLACE honoured); EXDEV between `/tmp` and elsewhere, EROFS
/// elsewhere.
pub fn renameat2(olddirfd: u64, old: u64, newdirfd: u64, new: u64, flags: u64) -> SysResult {
    const RENAME_NOREPLACE: u64 = 1;
    if flags & !RENAME_NOREPLACE != 0 {
        return Err(EINVAL);
    }
    let from = path_at(olddirfd, old)?;
    let to = path_at(newdirfd, new)?;
    match (fs::lookup(&from)?, fs::lookup(&to)?) {
        (Node::Tmp(Some((a, alen))), Node::Tmp(Some((b, blen)))) => {
            tmpfs::rename(&a[..alen], &b[..blen], flags & RENAME_NOREPLACE != 0).map(|()| 0)
        }
        (Node::Tmp(None), _) | (_, Node::Tmp(None)) => Err(guest::linux_abi::errno::EBUSY),
        (Node::Tmp(_), _) | (_, Node::Tmp(_)) => Err(guest::linux_abi::errno::EXDEV),
        _ => Err(EROFS),
    }
}

/// `pipe2(fds, flags)` (and `pipe`): O_CLOEXEC and O_NONBLOCK.
pub fn pipe2(fds: u64, flags: u64) -> SysResult {
    if flags & !(O_CLOEXEC | O_NONBLOCK) != 0 {
        return Err(EINVAL);
    }
    user::check(fds, 8)?;
    let index = pipe::create()?;
    let cloexec = flags & O_CLOEXEC != 0;
    let status = flags & O_NONBLOCK;
    let reader = fs::install(
        Kind::Pipe {
            index,
            write: false,
        },
        O_RDONLY | status,
        cloexec,
    );
    let reader = match reader {
        Ok(fd) => fd,
        Err(e) => {
            pipe::close_end(index, false);
            pipe::close_end(index, true);
            return Err(e);
        }
    };
    let writer = match fs::install(
        Kind::Pipe { index, write: true },
        O_WRONLY | status,
        cloexec,
    ) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = fs::close(reader);
            pipe::close_end(index, true);
            return Err(e);
        }
    };
    let mut pair = [0u8; 8];
    pair[..4].copy_from_slice(&u32::try_from(reader).unwrap_or(0).to_le_bytes());
    pair[4..].copy_from_slice(&u32::try_from(writer).unwrap_or(0).to_le_bytes());
    user::write(fds, &pair)?;
    Ok(0)
}

/// `dup(fd)`.
pub fn dup(fd: u64) -> SysResult {
    fs::duplicate(fd, None, 0, false)
}

/// `dup2(old, new)`.
pub fn dup2(old: u64, new: u64) -> SysResult {
    if old == new {
        fs::get(old)?;
        return Ok(new);
    }
    fs::duplicate(old, Some(new), 0, false)
}

/// `dup3(old, new, flags)`.
pub fn dup3(old: u64, new: u64, flags: u64) -> SysResult {
    if old == new || flags & !O_CLOEXEC != 0 {
        return Err(EINVAL);
    }
    fs::duplicate(old, Some(new), 0, flags & O_CLOEXEC != 0)
}

/// `fcntl(fd, cmd, arg)`: duplication, close-on-exec, status flags.
pub fn fcntl(fd: u64, cmd: u64, arg: u64) -> SysResult {
    const F_DUPFD: u64 = 0;
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    const F_SETFL: u64 = 4;
    const F_DUPFD_CLOEXEC: u64 = 1030;
    const FD_CLOEXEC: u64 = 1;
    let open = fs::get(fd)?;
    match cmd {
        F_DUPFD => fs::duplicate(fd, None, arg, false),
        F_DUPFD_CLOEXEC => fs::duplicate(fd, None, arg, true),
        F_GETFD => Ok(u64::from(fs::cloexec(fd)?)),
        F_SETFD => fs::set_cloexec(fd, arg & FD_CLOEXEC != 0).map(|()| 0),
        F_GETFL => Ok(open.flags),
        F_SETFL => {
            let kept = open.flags & !(O_APPEND | O_NONBLOCK);
            fs::set_flags(fd, kept | (arg & (O_APPEND | O_NONBLOCK))).map(|()| 0)
        }
        _ => Err(EINVAL),
    }
}

/// `readlink(path, buf, size)`: `/proc/self/exe` names the program.
pub fn readlink(path: u64, buf: u64, size: u64) -> SysResult {
    readlinkat(AT_FDCWD, path, buf, size)
}

/// `readlinkat(dirfd, path, buf, size)`.
pub fn readlinkat(dirfd: u64, addr: u64, buf: u64, size: u64) -> SysResult {
    let path = path_at(dirfd, addr)?;
    if size == 0 || size > i32::MAX as u64 {
        return Err(EINVAL);
    }
    if path.as_bytes() != b"/proc/self/exe" {
        user::check(buf, size)?;
        return with_path(&path, true, |kind| match kind {
            Kind::Host { handle, .. } => {
                vima_calls::file_read_link(handle, buf, size.min(vima::call::FILE_PATH_MAX))
            }
            _ => Err(EINVAL),
        });
    }
    let target = program().exe();
    let n = target
        .len()
        .min(usize::try_from(size).unwrap_or(usize::MAX));
    user::write(buf, &target[..n])?;
    Ok(n as u64)
}

const POLLIN: u16 = 0x1;
const POLLOUT: u16 = 0x4;
const POLLERR: u16 = 0x8;
const POLLHUP: u16 = 0x10;
const POLLNVAL: u16 = 0x20;
/// Most pollfds in one call (Linux allows RLIMIT_NOFILE).
const POLL_MAX: u64 = 1024;

/// `poll(fds, nfds, timeout_ms)`: stdout and stderr are always writable, stdin always
/// readable (even before input arrives), files and devices both; a closed descriptor
/// is POLLNVAL; pipes as their ends stand. With nothing ready the caller waits, looking
/// again from time to time, until something is, the timeout passes (never, for a
/// negative one, as on Linux) or a signal comes (EINTR).
pub fn poll(fds: u64, nfds: u64, timeout_ms: u64) -> SysResult {
    // An `int`: only the low 32 bits count.
    let low = i32::from_ne_bytes(
        u32::try_from(timeout_ms & 0xffff_ffff)
            .unwrap_or(0)
            .to_ne_bytes(),
    );
    let timeout_ns = match low {
        ms if ms < 0 => None,
        ms => Some(u64::from(ms.unsigned_abs()).saturating_mul(1_000_000)),
    };
    poll_ns(fds, nfds, timeout_ns)
}

/// `ppoll(fds, nfds, timeout_ts, sigmask, sigsetsize)`: [`poll`] with a timespec (NULL:
/// for ever) under `sigmask` (if not NULL) until the call ends, as sigsuspend.
pub fn ppoll(fds: u64, nfds: u64, timeout_ts: u64, sigmask: u64, sigsetsize: u64) -> SysResult {
    let timeout_ns = if timeout_ts == 0 {
        None
    } else {
        let mut b = [0u8; 16];
        user::read(timeout_ts, &mut b)?;
        Some(guest::linux_abi::layout::timespec_ns(b).ok_or(EINVAL)?)
    };
    if sigmask != 0 {
        super::signals::use_mask_for_call(sigmask, sigsetsize)?;
    }
    poll_ns(fds, nfds, timeout_ns)
}

/// Shortest and longest pause between two looks while nothing is ready.
const POLL_PAUSE_NS: (u64, u64) = (100_000, 10_000_000);

fn poll_ns(fds: u64, nfds: u64, timeout_ns: Option<u64>) -> SysResult {
    if nfds > POLL_MAX {
        return Err(EINVAL);
    }
    user::check(fds, nfds * 8)?;
    let deadline = timeout_ns.map(|ns| crate::clock::tsc() + crate::clock::ns_to_tsc(ns));
    let mut pause = POLL_PAUSE_NS.0;
    loop {
        let ready = poll_once(fds, nfds)?;
        let now = crate::clock::tsc();
        if ready > 0 || deadline.is_some_and(|d| now >= d) {
            return Ok(ready);
        }
        // Nothing ready: look again a little later (a pipe's other end or stdin may
        // change on any VP), pausing longer each time, never past the deadline.
        let mut wake = now + crate::clock::ns_to_tsc(pause);
        if let Some(d) = deadline {
            wake = wake.min(d);
        }
        if !crate::sched::sleep_until_unless(wake, super::signals::signal_pending) {
            // As on Linux, a signal ends a poll (never restarted, even with SA_RESTART).
            return Err(EINTR);
        }
        pause = (pause * 2).min(POLL_PAUSE_NS.1);
    }
}

/// One pass over the pollfds: writes each revents, returns how many are ready.
fn poll_once(fds: u64, nfds: u64) -> SysResult {
    let mut ready = 0;
    for i in 0..nfds {
        let at = fds + i * 8;
        let mut entry = [0u8; 8];
        user::read(at, &mut entry)?;
        let fd = i32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let events = u16::from_le_bytes([entry[4], entry[5]]);
        let revents = match u64::try_from(fd).ok().map(fs::get) {
            None => 0,
            Some(Err(_)) => POLLNVAL,
            Some(Ok(open)) => match open.kind {
                Kind::Stdin if events & POLLIN != 0 && stdin_ready() => POLLIN,
                Kind::Stdin => 0,
                Kind::Stream(_) => events & POLLOUT,
                Kind::Pipe { index, write } => {
                    let (readable, writable, hung_up) = pipe::readiness(index, write);
                    let mut r = 0;
                    if readable {
                        r |= events & POLLIN;
                    }
                    if writable {
                        r |= events & POLLOUT;
                    }
                    if hung_up {
                        r |= if write { POLLERR } else { POLLHUP };
                    }
                    r
                }
                _ => events & (POLLIN | POLLOUT),
            },
        };
        if revents != 0 {
            ready += 1;
        }
        user::write(at + 6, &revents.to_le_bytes())?;
    }
    Ok(ready)
}
