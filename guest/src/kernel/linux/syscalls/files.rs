//! Files: the three standard streams, for now. stdout and stderr go to cvmm's own, byte
//! for byte (`StreamWrite`); stdin is cvmm's (`StreamRead`, on node 0); there is no file
//! system yet, so `open` finds nothing.

use guest::linux_abi::errno::{EBADF, EINVAL, ENOENT, ENOTTY, ESPIPE};
use guest::linux_abi::layout::{Stat, S_IFIFO};
use vima::call::STREAM_WRITE_MAX;

use super::{user, SysResult};
use crate::linux::program;
use crate::vima_calls;

/// `AT_FDCWD`.
const AT_FDCWD: u64 = -100i64 as u64;
/// `AT_EMPTY_PATH`.
const AT_EMPTY_PATH: u64 = 0x1000;
/// Most iovecs in one `writev` (Linux's UIO_MAXIOV).
const IOV_MAX: u64 = 1024;

fn is_std(fd: u64) -> bool {
    fd <= 2
}

/// `read(fd, buf, count)`.
pub fn read(fd: u64, buf: u64, count: u64) -> SysResult {
    user::check(buf, count)?;
    match fd {
        0 => read_stdin(buf, count),
        _ => Err(EBADF),
    }
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
                crate::sched::sleep_until(crate::clock::tsc() + crate::clock::ns_to_tsc(pause));
                pause = (pause * 2).min(STDIN_POLL_NS.1);
            }
            Err(_) => return Err(guest::linux_abi::errno::EIO),
        }
    }
}

/// `write(fd, buf, count)`.
pub fn write(fd: u64, buf: u64, count: u64) -> SysResult {
    if fd != 1 && fd != 2 {
        return Err(EBADF);
    }
    user::check(buf, count)?;
    let mut done = 0;
    while done < count {
        let chunk = (count - done).min(STREAM_WRITE_MAX);
        // The VMM reads the program's bytes straight from logical memory.
        let bytes = vima_calls::stream_write_at(fd, buf + done, chunk).map_err(|_| EINVAL)?;
        done += bytes;
    }
    Ok(count)
}

/// `writev(fd, iov, iovcnt)`.
pub fn writev(fd: u64, iov: u64, iovcnt: u64) -> SysResult {
    if iovcnt > IOV_MAX {
        return Err(EINVAL);
    }
    if fd != 1 && fd != 2 {
        return Err(EBADF);
    }
    user::check(iov, iovcnt * 16)?;
    let mut total = 0u64;
    for i in 0..iovcnt {
        let base = user::read_u64(iov + i * 16)?;
        let len = user::read_u64(iov + i * 16 + 8)?;
        total = total.checked_add(len).ok_or(EINVAL)?;
        if len != 0 {
            write(fd, base, len)?;
        }
    }
    Ok(total)
}

/// `close(fd)`.
pub fn close(fd: u64) -> SysResult {
    if is_std(fd) {
        Ok(0)
    } else {
        Err(EBADF)
    }
}

fn std_stat() -> Stat {
    Stat {
        dev: 0xc,
        ino: 1,
        nlink: 1,
        mode: S_IFIFO | 0o600,
        blksize: 4096,
        ..Stat::default()
    }
}

/// `fstat(fd, statbuf)`.
pub fn fstat(fd: u64, statbuf: u64) -> SysResult {
    if !is_std(fd) {
        return Err(EBADF);
    }
    user::write(statbuf, &std_stat().to_bytes())?;
    Ok(0)
}

/// `newfstatat(dirfd, path, statbuf, flags)`.
pub fn newfstatat(dirfd: u64, path: u64, statbuf: u64, flags: u64) -> SysResult {
    let mut name = [0u8; 256];
    let len = user::read_path(path, &mut name)?;
    if len == 0 && flags & AT_EMPTY_PATH != 0 {
        return fstat(dirfd, statbuf);
    }
    Err(ENOENT)
}

/// `ioctl(fd, request, arg)`: the streams are not terminals (TCGETS, TIOCGWINSZ: ENOTTY).
pub fn ioctl(fd: u64, _request: u64, _arg: u64) -> SysResult {
    if is_std(fd) {
        Err(ENOTTY)
    } else {
        Err(EBADF)
    }
}

/// `lseek(fd, ...)`: the streams are pipes.
pub fn lseek(fd: u64) -> SysResult {
    if is_std(fd) {
        Err(ESPIPE)
    } else {
        Err(EBADF)
    }
}

/// `open`, `openat`: no file system yet.
pub fn open() -> SysResult {
    Err(ENOENT)
}

/// `readlink(path, buf, size)`: `/proc/self/exe` names the program.
pub fn readlink(path: u64, buf: u64, size: u64) -> SysResult {
    readlinkat(AT_FDCWD, path, buf, size)
}

/// `readlinkat(dirfd, path, buf, size)`.
pub fn readlinkat(_dirfd: u64, path: u64, buf: u64, size: u64) -> SysResult {
    let mut name = [0u8; 256];
    let len = user::read_path(path, &mut name)?;
    if &name[..len] != b"/proc/self/exe" {
        return Err(ENOENT);
    }
    if size == 0 || size > i32::MAX as u64 {
        return Err(EINVAL);
    }
    let target = program().exe();
    let n = target
        .len()
        .min(usize::try_from(size).unwrap_or(usize::MAX));
    user::write(buf, &target[..n])?;
    Ok(n as u64)
}

/// `fcntl(fd, cmd, arg)` on the standard streams: flags and close-on-exec read back as
/// Linux gives them to a program started from a shell; duplication waits for the file
/// table (docs/linux-abi.md).
pub fn fcntl(fd: u64, cmd: u64, _arg: u64) -> SysResult {
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    const F_SETFL: u64 = 4;
    const O_WRONLY: u64 = 1;
    if !is_std(fd) {
        return Err(EBADF);
    }
    match cmd {
        F_GETFD | F_SETFD | F_SETFL => Ok(0),
        F_GETFL => Ok(if fd == 0 { 0 } else { O_WRONLY }),
        _ => Err(EINVAL),
    }
}

const POLLIN: u16 = 0x1;
const POLLOUT: u16 = 0x4;
const POLLNVAL: u16 = 0x20;
/// Most pollfds in one call (Linux allows RLIMIT_NOFILE).
const POLL_MAX: u64 = 1024;

/// `poll(fds, nfds, timeout_ms)` over the standard streams: stdout and stderr are
/// always writable, stdin always readable (it reads as end of file until console input
/// arrives), any other descriptor is POLLNVAL. With nothing ready the caller sleeps for
/// the timeout (for ever with a negative one, as on Linux).
pub fn poll(fds: u64, nfds: u64, timeout_ms: u64) -> SysResult {
    let timeout_ns = match i64::from_ne_bytes(timeout_ms.to_ne_bytes()) {
        ms if ms < 0 => None,
        ms => Some(ms.unsigned_abs().saturating_mul(1_000_000)),
    };
    poll_ns(fds, nfds, timeout_ns)
}

/// `ppoll(fds, nfds, timeout_ts, sigmask)`: [`poll`] with a timespec (NULL: for ever);
/// the signal mask is not needed while no signal is delivered.
pub fn ppoll(fds: u64, nfds: u64, timeout_ts: u64) -> SysResult {
    let timeout_ns = if timeout_ts == 0 {
        None
    } else {
        let mut b = [0u8; 16];
        user::read(timeout_ts, &mut b)?;
        Some(guest::linux_abi::layout::timespec_ns(b).ok_or(EINVAL)?)
    };
    poll_ns(fds, nfds, timeout_ns)
}

fn poll_ns(fds: u64, nfds: u64, timeout_ns: Option<u64>) -> SysResult {
    if nfds > POLL_MAX {
        return Err(EINVAL);
    }
    user::check(fds, nfds * 8)?;
    let mut ready = 0;
    for i in 0..nfds {
        let at = fds + i * 8;
        let mut entry = [0u8; 8];
        user::read(at, &mut entry)?;
        let fd = i32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let events = u16::from_le_bytes([entry[4], entry[5]]);
        let revents = match fd {
            fd if fd < 0 => 0,
            0 => events & POLLIN,
            1 | 2 => events & POLLOUT,
            _ => POLLNVAL,
        };
        if revents != 0 {
            ready += 1;
        }
        user::write(at + 6, &revents.to_le_bytes())?;
    }
    if ready == 0 && timeout_ns != Some(0) {
        match timeout_ns {
            Some(ns) => {
                crate::sched::sleep_until(crate::clock::tsc() + crate::clock::ns_to_tsc(ns))
            }
            None => loop {
                // Nothing here can become ready: sleep for ever, as Linux would.
                crate::sched::prepare_to_sleep();
                crate::sched::schedule();
            },
        }
    }
    Ok(ready)
}
