//! Byte layouts of the Linux x86-64 structures the system calls fill in, written field by
//! field at the offsets of the kernel's own headers (asm/stat.h, linux/utsname.h,
//! linux/time.h, asm-generic/resource.h), so nothing depends on Rust struct layout.

/// Bytes of `struct stat`.
pub const STAT_BYTES: usize = 144;
/// Bytes of `struct statx`.
pub const STATX_BYTES: usize = 256;
/// `stx_mask` of what [`statx_from_stat`] fills in: STATX_BASIC_STATS (type, mode,
/// nlink, uid, gid, atime, mtime, ctime, ino, size, blocks; no birth time).
pub const STATX_BASIC_STATS: u32 = 0x7ff;
/// Bytes of `struct utsname` (six fields of 65).
pub const UTSNAME_BYTES: usize = 6 * UTS_FIELD;
const UTS_FIELD: usize = 65;

/// `st_mode` file type bits.
pub const S_IFIFO: u32 = 0o010_000;
/// Character device.
pub const S_IFCHR: u32 = 0o020_000;
/// Directory.
pub const S_IFDIR: u32 = 0o040_000;
/// Regular file.
pub const S_IFREG: u32 = 0o100_000;

/// The fields of `struct stat` the personality reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Links.
    pub nlink: u64,
    /// Type and permissions.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device of a device file.
    pub rdev: u64,
    /// Bytes.
    pub size: i64,
    /// Preferred I/O size.
    pub blksize: i64,
    /// 512-byte blocks.
    pub blocks: i64,
    /// Modification time, seconds (also used for access and change).
    pub mtime_sec: i64,
    /// Nanoseconds of `mtime_sec`.
    pub mtime_nsec: i64,
}

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

impl Stat {
    /// The `struct stat` bytes.
    pub fn to_bytes(&self) -> [u8; STAT_BYTES] {
        let mut b = [0u8; STAT_BYTES];
        put(&mut b, 0, &self.dev.to_le_bytes());
        put(&mut b, 8, &self.ino.to_le_bytes());
        put(&mut b, 16, &self.nlink.to_le_bytes());
        put(&mut b, 24, &self.mode.to_le_bytes());
        put(&mut b, 28, &self.uid.to_le_bytes());
        put(&mut b, 32, &self.gid.to_le_bytes());
        put(&mut b, 40, &self.rdev.to_le_bytes());
        put(&mut b, 48, &self.size.to_le_bytes());
        put(&mut b, 56, &self.blksize.to_le_bytes());
        put(&mut b, 64, &self.blocks.to_le_bytes());
        for at in [72, 88, 104] {
            put(&mut b, at, &self.mtime_sec.to_le_bytes());
            put(&mut b, at + 8, &self.mtime_nsec.to_le_bytes());
        }
        b
    }
}

fn word(buf: &[u8; STAT_BYTES], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&buf[off..off + 8]);
    u64::from_le_bytes(w)
}

/// glibc's `major()` and `minor()` of a `dev_t`.
fn major_minor(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    // Both masked to 32 bits above.
    #[allow(clippy::cast_possible_truncation)]
    (major as u32, minor as u32)
}

/// The `struct statx` with the same facts as a `struct stat` (the kernel's own
/// `cp_statx` fields; `stx_mask` is [`STATX_BASIC_STATS`]).
pub fn statx_from_stat(st: &[u8; STAT_BYTES]) -> [u8; STATX_BYTES] {
    let mut b = [0u8; STATX_BYTES];
    put(&mut b, 0, &STATX_BASIC_STATS.to_le_bytes());
    put(&mut b, 4, &st[56..60]); // blksize (low half of st_blksize)
    put(&mut b, 16, &st[16..20]); // nlink
    put(&mut b, 20, &st[28..32]); // uid
    put(&mut b, 24, &st[32..36]); // gid
    put(&mut b, 28, &st[24..26]); // mode (16 bits)
    put(&mut b, 32, &st[8..16]); // ino
    put(&mut b, 40, &st[48..56]); // size
    put(&mut b, 48, &st[64..72]); // blocks
                                  // atime, ctime, mtime: struct statx_timestamp is { i64 sec; u32 nsec; i32 pad }.
    for (from, to) in [(72, 64), (104, 96), (88, 112)] {
        put(&mut b, to, &st[from..from + 8]);
        put(&mut b, to + 8, &st[from + 8..from + 12]);
    }
    let (rdev_major, rdev_minor) = major_minor(word(st, 40));
    let (dev_major, dev_minor) = major_minor(word(st, 0));
    put(&mut b, 128, &rdev_major.to_le_bytes());
    put(&mut b, 132, &rdev_minor.to_le_bytes());
    put(&mut b, 136, &dev_major.to_le_bytes());
    put(&mut b, 140, &dev_minor.to_le_bytes());
    b
}

/// `struct utsname` from its six fields (each cut to 64 bytes and NUL terminated).
pub fn utsname(fields: [&[u8]; 6]) -> [u8; UTSNAME_BYTES] {
    let mut b = [0u8; UTSNAME_BYTES];
    for (i, field) in fields.iter().enumerate() {
        let len = field.len().min(UTS_FIELD - 1);
        put(&mut b, i * UTS_FIELD, &field[..len]);
    }
    b
}

/// `struct timespec` (or `struct rlimit`, `struct timeval`: two 64-bit words).
pub fn two_words(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    put(&mut out, 0, &a.to_le_bytes());
    put(&mut out, 8, &b.to_le_bytes());
    out
}

/// Nanoseconds as a `struct timespec`.
pub fn timespec(ns: u64) -> [u8; 16] {
    two_words(ns / 1_000_000_000, ns % 1_000_000_000)
}

/// Bytes of `struct itimerval` (two `struct timeval`: interval, then value).
pub const ITIMERVAL_BYTES: usize = 32;

/// `struct itimerval` of an interval and a time left, in nanoseconds (microseconds
/// rounded up, as Linux reports a timer that has time left).
pub fn itimerval(interval_ns: u64, left_ns: u64) -> [u8; ITIMERVAL_BYTES] {
    let tv = |ns: u64| {
        let us = ns.div_ceil(1000);
        two_words(us / 1_000_000, us % 1_000_000)
    };
    let mut b = [0u8; ITIMERVAL_BYTES];
    put(&mut b, 0, &tv(interval_ns));
    put(&mut b, 16, &tv(left_ns));
    b
}

/// A `struct itimerval` as (interval, value) in nanoseconds; `None` for a negative or
/// out-of-range field (EINVAL).
pub fn itimerval_ns(bytes: &[u8; ITIMERVAL_BYTES]) -> Option<(u64, u64)> {
    let tv = |at: usize| -> Option<u64> {
        let sec = i64::from_le_bytes(bytes[at..at + 8].try_into().ok()?);
        let usec = i64::from_le_bytes(bytes[at + 8..at + 16].try_into().ok()?);
        if sec < 0 || !(0..1_000_000).contains(&usec) {
            return None;
        }
        Some(
            (sec as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(usec as u64 * 1000),
        )
    };
    Some((tv(0)?, tv(16)?))
}

/// What `alarm` returns for a previous alarm with `left_ns` to go: whole seconds, half
/// a second or more rounding up, and at least 1 while any time is left (Linux's rule).
pub fn alarm_seconds(left_ns: u64) -> u64 {
    if left_ns == 0 {
        return 0;
    }
    let secs = left_ns / 1_000_000_000;
    let rest = left_ns % 1_000_000_000;
    (secs + u64::from(rest >= 500_000_000)).max(1)
}

/// A `struct timespec` as nanoseconds; `None` if `tv_nsec` is out of range or the value
/// is negative (EINVAL).
pub fn timespec_ns(bytes: [u8; 16]) -> Option<u64> {
    let sec = i64::from_le_bytes(bytes[..8].try_into().ok()?);
    let nsec = i64::from_le_bytes(bytes[8..].try_into().ok()?);
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return None;
    }
    Some(
        (sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(nsec as u64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_sit_at_the_kernel_offsets() {
        let st = Stat {
            mode: S_IFIFO | 0o600,
            size: -2,
            blksize: 4096,
            mtime_sec: 7,
            ..Stat::default()
        };
        let b = st.to_bytes();
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 0o010_600);
        assert_eq!(i64::from_le_bytes(b[48..56].try_into().unwrap()), -2);
        assert_eq!(i64::from_le_bytes(b[56..64].try_into().unwrap()), 4096);
        assert_eq!(i64::from_le_bytes(b[88..96].try_into().unwrap()), 7);
    }

    #[test]
    fn statx_carries_the_stat_fields_at_the_uapi_offsets() {
        // glibc's makedev, written out: the inverse of major()/minor().
        let makedev = |major: u64, minor: u64| {
            (minor & 0xff)
                | ((major & 0xfff) << 8)
                | ((minor & !0xff) << 12)
                | ((major & !0xfff) << 32)
        };
        let st = Stat {
            dev: makedev(8, 1),
            ino: 0x1122_3344_5566,
            nlink: 3,
            mode: S_IFREG | 0o640,
            uid: 1000,
            gid: 100,
            rdev: makedev(0x1234, 0x5_6789),
            size: 12_345,
            blksize: 4096,
            blocks: 32,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 999_999_999,
        };
        let x = statx_from_stat(&st.to_bytes());
        let u32_at = |o: usize| u32::from_le_bytes(x[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(x[o..o + 8].try_into().unwrap());
        assert_eq!(u32_at(0), 0x7ff);
        assert_eq!(u32_at(4), 4096);
        assert_eq!(u32_at(16), 3);
        assert_eq!((u32_at(20), u32_at(24)), (1000, 100));
        assert_eq!(u16::from_le_bytes([x[28], x[29]]), 0o100_640);
        assert_eq!(u64_at(32), 0x1122_3344_5566);
        assert_eq!(u64_at(40), 12_345);
        assert_eq!(u64_at(48), 32);
        for ts in [64, 96, 112] {
            assert_eq!(u64_at(ts), 1_700_000_000, "timestamp at {ts}");
            assert_eq!(u32_at(ts + 8), 999_999_999);
        }
        assert_eq!(u64_at(80), 0, "no birth time");
        assert_eq!((u32_at(128), u32_at(132)), (0x1234, 0x5_6789));
        assert_eq!((u32_at(136), u32_at(140)), (8, 1));
        assert!(x[144..].iter().all(|&b| b == 0));
    }

    #[test]
    fn itimerval_round_trips_and_rounds_microseconds_up() {
        let b = itimerval(1_500_000_000, 2_000_000_001);
        let w = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        assert_eq!((w(0), w(8)), (1, 500_000));
        // 2 s and 1 ns left reads as 2 s and 1 us.
        assert_eq!((w(16), w(24)), (2, 1));
        assert_eq!(
            itimerval_ns(&itimerval(50_000_000, 3_000_000_000)),
            Some((50_000_000, 3_000_000_000))
        );
        let mut bad = itimerval(0, 0);
        bad[24..32].copy_from_slice(&1_000_000i64.to_le_bytes());
        assert_eq!(itimerval_ns(&bad), None);
        bad[16..24].copy_from_slice(&(-1i64).to_le_bytes());
        assert_eq!(itimerval_ns(&bad), None);
    }

    #[test]
    fn alarm_rounds_like_linux() {
        assert_eq!(alarm_seconds(0), 0);
        assert_eq!(alarm_seconds(1), 1, "any time left is at least 1");
        assert_eq!(alarm_seconds(1_499_999_999), 1);
        assert_eq!(alarm_seconds(1_500_000_000), 2);
        assert_eq!(alarm_seconds(10_000_000_000), 10);
    }

    #[test]
    fn utsname_fields_are_65_bytes_nul_terminated() {
        let long = [b'x'; 100];
        let u = utsname([b"Linux", b"cvmm", &long, b"", b"x86_64", b""]);
        assert_eq!(&u[..6], b"Linux\0");
        assert_eq!(&u[65..70], b"cvmm\0");
        assert_eq!(u[130 + 63], b'x');
        assert_eq!(u[130 + 64], 0);
        assert_eq!(&u[260..267], b"x86_64\0");
    }

    #[test]
    fn timespecs_round_trip_and_bad_ones_are_refused() {
        assert_eq!(timespec_ns(timespec(3_000_000_007)), Some(3_000_000_007));
        assert_eq!(timespec_ns(two_words(1, 1_000_000_000)), None);
        assert_eq!(timespec_ns(two_words(u64::MAX, 0)), None);
    }
}
