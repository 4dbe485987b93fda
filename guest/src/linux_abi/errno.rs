//! Linux error numbers (asm-generic/errno-base.h and errno.h); a system call returns
//! `-errno` in `rax`.

/// Operation not permitted.
pub const EPERM: i64 = 1;
/// No such file or directory.
pub const ENOENT: i64 = 2;
/// No such process.
pub const ESRCH: i64 = 3;
/// Interrupted system call.
pub const EINTR: i64 = 4;
/// I/O error.
pub const EIO: i64 = 5;
/// Bad file descriptor.
pub const EBADF: i64 = 9;
/// Try again.
pub const EAGAIN: i64 = 11;
/// Out of memory.
pub const ENOMEM: i64 = 12;
/// Bad address.
pub const EFAULT: i64 = 14;
/// Permission denied.
pub const EACCES: i64 = 13;
/// File exists (MAP_FIXED_NOREPLACE over a mapping).
pub const EEXIST: i64 = 17;
/// No such device (mmap of a file that cannot be mapped).
pub const ENODEV: i64 = 19;
/// Not a directory.
pub const ENOTDIR: i64 = 20;
/// Is a directory.
pub const EISDIR: i64 = 21;
/// Invalid argument.
pub const EINVAL: i64 = 22;
/// Too many open files.
pub const EMFILE: i64 = 24;
/// File too large.
pub const EFBIG: i64 = 27;
/// No space left on device.
pub const ENOSPC: i64 = 28;
/// Not a typewriter.
pub const ENOTTY: i64 = 25;
/// Illegal seek.
pub const ESPIPE: i64 = 29;
/// Read-only file system.
pub const EROFS: i64 = 30;
/// Broken pipe.
pub const EPIPE: i64 = 32;
/// Result too large.
pub const ERANGE: i64 = 34;
/// File name too long.
pub const ENAMETOOLONG: i64 = 36;
/// Function not implemented.
pub const ENOSYS: i64 = 38;
/// Operation not supported.
pub const EOPNOTSUPP: i64 = 95;
/// Device or resource busy.
pub const EBUSY: i64 = 16;
/// Cross-device link.
pub const EXDEV: i64 = 18;
/// Directory not empty.
pub const ENOTEMPTY: i64 = 39;
/// Timer expired.
pub const ETIMEDOUT: i64 = 110;
/// The kernel's own "restart this call after the signal" (never seen by the program:
/// the system call exit turns it into a restart, or EINTR for a handler without
/// SA_RESTART).
pub const ERESTARTSYS: i64 = 512;

/// The symbolic name of `errno`, for `--strace`.
pub fn name(errno: i64) -> Option<&'static str> {
    Some(match errno {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        ESRCH => "ESRCH",
        EINTR => "EINTR",
        ERESTARTSYS => "ERESTARTSYS",
        EIO => "EIO",
        EBADF => "EBADF",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EFAULT => "EFAULT",
        EACCES => "EACCES",
        EEXIST => "EEXIST",
        ENODEV => "ENODEV",
        ENOTDIR => "ENOTDIR",
        EISDIR => "EISDIR",
        EXDEV => "EXDEV",
        EBUSY => "EBUSY",
        ENOTEMPTY => "ENOTEMPTY",
        EINVAL => "EINVAL",
        EMFILE => "EMFILE",
        EFBIG => "EFBIG",
        ENOSPC => "ENOSPC",
        ENOTTY => "ENOTTY",
        ESPIPE => "ESPIPE",
        EROFS => "EROFS",
        EPIPE => "EPIPE",
        ERANGE => "ERANGE",
        ENAMETOOLONG => "ENAMETOOLONG",
        ENOSYS => "ENOSYS",
        EOPNOTSUPP => "EOPNOTSUPP",
        ETIMEDOUT => "ETIMEDOUT",
        _ => return None,
    })
}
