//! System call dispatch: the number in `rax` picks a handler from one of the families
//! below; a handler returns the value or `-errno`. Calls this kernel does not implement
//! return ENOSYS and are counted by the VMM, by number and name (`SyscallUnimplemented`,
//! in `--stats-json`).
//!
//! Program pointers are checked against logical memory ([`user`]) and copied with
//! volatile-free plain copies through raw pointers: the kernel never makes a Rust
//! reference into memory the program may be writing.

pub mod files;
pub mod futex;
pub mod identity;
pub mod memory;
pub mod process;
pub mod signals;
pub mod threads;
pub mod time;
pub mod timers;

use core::sync::atomic::{AtomicBool, Ordering};

use guest::linux_abi::errno::{EFAULT, EINTR, ENOSYS, ERESTARTSYS};
use guest::linux_abi::sysno as nr;
use vima::layout::PAGE_SIZE;

use super::entry::SyscallFrame;
use crate::machine::kernel;

/// `x` as a length (lossless: the kernel is x86-64 only).
pub fn usize_of(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

/// A handler's result: the value, or the errno to negate.
pub type SysResult = Result<u64, i64>;

/// `AT_FDCWD`: paths relative to the working directory.
const AT_FDCWD: u64 = -100i64 as u64;

static STRACE: AtomicBool = AtomicBool::new(false);

/// Numbers below this have their ENOSYS counted here and told to the VMM in one call at
/// the end ([`end_program`]); the first of each number is told at once (so a program
/// that never ends cleanly still shows it), and larger numbers every time.
const COUNTED: usize = 512;

/// ENOSYS counts not yet told to the VMM, by number.
static UNTOLD: [core::sync::atomic::AtomicU64; COUNTED] =
    [const { core::sync::atomic::AtomicU64::new(0) }; COUNTED];
/// Numbers already told once.
static TOLD: [AtomicBool; COUNTED] = [const { AtomicBool::new(false) }; COUNTED];

/// One ENOSYS for system call `number`: an exit to the VMM only the first time (glibc
/// tries clone3 and rseq for every thread; each exit would cost ~25 us).
fn count_unimplemented(number: u64) {
    let name = guest::linux_abi::sysno::name(number);
    match usize::try_from(number).ok().filter(|&n| n < COUNTED) {
        Some(n) if TOLD[n].swap(true, Ordering::Relaxed) => {
            UNTOLD[n].fetch_add(1, Ordering::Relaxed);
        }
        _ => crate::vima_calls::syscall_unimplemented(number, name, 1),
    }
}

/// Ends the program with `status`: tells the VMM the ENOSYS counts it has not heard
/// yet, flushes the console and ends the virtual server.
pub fn end_program(status: u64) -> ! {
    for (n, untold) in UNTOLD.iter().enumerate() {
        let count = untold.swap(0, Ordering::Relaxed);
        if count > 0 {
            let number = n as u64;
            crate::vima_calls::syscall_unimplemented(
                number,
                guest::linux_abi::sysno::name(number),
                count,
            );
        }
    }
    crate::console::flush();
    crate::vima_calls::vs_exit(status)
}

/// Turns `--strace` on or off.
pub fn set_strace(on: bool) {
    STRACE.store(on, Ordering::Relaxed);
}

/// The entry stub's target: serves the call in `frame` and puts the result in `rax`.
pub extern "sysv64" fn dispatch(frame: &mut SyscallFrame) {
    let number = frame.rax;
    let a = frame.args();
    if frame.trapped != 0 {
        super::rewrite::trapped_at(frame.rcx.wrapping_sub(2));
    }
    let strace = STRACE.load(Ordering::Relaxed);
    if strace && (number == nr::EXIT_GROUP || number == nr::EXIT) {
        trace(number, &a, None);
    }
    let result = match number {
        nr::CLONE => threads::clone(frame),
        nr::RT_SIGRETURN => signals::rt_sigreturn(frame),
        nr::TGKILL => signals::tgkill(frame, a[0], a[1], a[2]),
        nr::TKILL => signals::tgkill(frame, identity::PID, a[0], a[1]),
        nr::KILL => signals::kill(frame, a[0], a[1]),
        nr::SIGALTSTACK => signals::sigaltstack(a[0], a[1], frame.rsp),
        nr::RT_SIGPROCMASK => signals::rt_sigprocmask(frame, a[0], a[1], a[2], a[3]),
        _ => serve(number, &a),
    };
    if strace {
        trace(number, &a, Some(result));
    }
    frame.rax = match result {
        Ok(value) => value,
        Err(ERESTARTSYS) if signals::interrupted_call_restarts() => {
            // Back to the two-byte `syscall` or `call *%rax` with the number in rax:
            // after the signal's handler (whose frame saves this state), or at once.
            frame.rcx = frame.rcx.wrapping_sub(2);
            number
        }
        Err(ERESTARTSYS) => (-EINTR) as u64,
        Err(errno) => (-errno) as u64,
    };
    signals::at_syscall_exit(frame);
    crate::sched::resched_point();
}

/// A line for the program's stderr (`--strace`, a fatal signal) in a stack buffer,
/// written in one piece; what does not fit in 200 bytes is cut.
pub struct LineBuf {
    buf: [u8; 200],
    len: usize,
}

impl LineBuf {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            buf: [0; 200],
            len: 0,
        }
    }

    /// Writes the line to the program's stderr (cvmm's).
    pub fn write_to_stderr(&self) {
        // Best effort: there is nowhere else to report a failed write of stderr.
        let _ = crate::vima_calls::stream_write_at(
            vima::call::STREAM_STDERR,
            self.buf.as_ptr() as u64,
            self.len as u64,
        );
    }
}

impl core::fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Prints `name(args) = result` on stderr as strace does (arguments in hex, not yet
/// decoded); `None` for a call that does not return.
/// Which argument of system call `number` is a path, for `--strace`.
fn path_argument(number: u64) -> Option<usize> {
    match number {
        nr::OPEN
        | nr::STAT
        | nr::LSTAT
        | nr::ACCESS
        | nr::READLINK
        | nr::CHDIR
        | nr::UNLINK
        | nr::MKDIR
        | nr::RMDIR
        | nr::RENAME => Some(0),
        nr::OPENAT
        | nr::NEWFSTATAT
        | nr::STATX
        | nr::FACCESSAT
        | nr::FACCESSAT2
        | nr::READLINKAT
        | nr::UNLINKAT
        | nr::MKDIRAT
        | nr::RENAMEAT
        | nr::RENAMEAT2
        | nr::UTIMENSAT => Some(1),
        _ => None,
    }
}

/// Writes the program's string at `addr` quoted (at most 64 bytes, non-printable bytes
/// escaped), or the address if it cannot be read.
fn write_path(line: &mut LineBuf, addr: u64) {
    use core::fmt::Write;
    let mut buf = [0u8; 65];
    let Ok(len) = user::read_path(addr, &mut buf).or_else(|e| {
        if e == guest::linux_abi::errno::ENAMETOOLONG {
            Ok(64)
        } else {
            Err(e)
        }
    }) else {
        let _ = write!(line, "{addr:#x}");
        return;
    };
    let _ = line.write_str("\"");
    for &b in &buf[..len.min(64)] {
        let _ = if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            line.write_char(char::from(b))
        } else {
            write!(line, "\\x{b:02x}")
        };
    }
    let _ = line.write_str(if len >= 64 { "\"..." } else { "\"" });
}

fn trace(number: u64, a: &[u64; 6], result: Option<SysResult>) {
    use core::fmt::Write;
    let mut line = LineBuf::new();
    let _ = match guest::linux_abi::sysno::name(number) {
        Some(name) => write!(line, "{name}("),
        None => write!(line, "syscall_{number}("),
    };
    let path_arg = path_argument(number);
    for (i, arg) in a.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        if path_arg == Some(i) {
            let _ = write!(line, "{sep}");
            write_path(&mut line, *arg);
        } else {
            let _ = write!(line, "{sep}{arg:#x}");
        }
    }
    let _ = match result {
        None => writeln!(line, ") = ?"),
        Some(Ok(value)) => writeln!(line, ") = {value:#x}"),
        Some(Err(errno)) => match guest::linux_abi::errno::name(errno) {
            Some(name) => writeln!(line, ") = -1 {name}"),
            None => writeln!(line, ") = -1 errno {errno}"),
        },
    };
    line.write_to_stderr();
}

fn serve(number: u64, a: &[u64; 6]) -> SysResult {
    match number {
        nr::READ => files::read(a[0], a[1], a[2]),
        nr::PREAD64 => files::pread64(a[0], a[1], a[2], a[3]),
        nr::READV => files::readv(a[0], a[1], a[2]),
        nr::WRITE => files::write(a[0], a[1], a[2]),
        nr::WRITEV => files::writev(a[0], a[1], a[2]),
        nr::PWRITE64 => files::pwrite64(a[0], a[1], a[2], a[3]),
        nr::FTRUNCATE => files::ftruncate(a[0], a[1]),
        nr::UNLINK => files::unlinkat(AT_FDCWD, a[0], 0),
        nr::UNLINKAT => files::unlinkat(a[0], a[1], a[2]),
        nr::RMDIR => files::unlinkat(AT_FDCWD, a[0], 0x200),
        nr::MKDIR => files::mkdirat(AT_FDCWD, a[0]),
        nr::MKDIRAT => files::mkdirat(a[0], a[1]),
        nr::RENAME => files::renameat2(AT_FDCWD, a[0], AT_FDCWD, a[1], 0),
        nr::RENAMEAT => files::renameat2(a[0], a[1], a[2], a[3], 0),
        nr::RENAMEAT2 => files::renameat2(a[0], a[1], a[2], a[3], a[4]),
        nr::FSYNC | nr::FDATASYNC => files::fsync(a[0]),
        nr::OPEN => files::open(a[0], a[1]),
        nr::OPENAT => files::openat(a[0], a[1], a[2]),
        nr::CLOSE => files::close(a[0]),
        nr::POLL => files::poll(a[0], a[1], a[2]),
        nr::PPOLL => files::ppoll(a[0], a[1], a[2], a[3], a[4]),
        nr::RT_SIGSUSPEND => signals::rt_sigsuspend(a[0], a[1]),
        nr::RT_SIGTIMEDWAIT => signals::rt_sigtimedwait(a[0], a[1], a[2], a[3]),
        nr::FSTAT => files::fstat(a[0], a[1]),
        nr::STAT => files::newfstatat(AT_FDCWD, a[0], a[1], 0),
        nr::LSTAT => files::newfstatat(AT_FDCWD, a[0], a[1], 0x100),
        nr::NEWFSTATAT => files::newfstatat(a[0], a[1], a[2], a[3]),
        nr::STATX => files::statx(a[0], a[1], a[2], a[4]),
        nr::ACCESS => files::faccessat(AT_FDCWD, a[0], a[1]),
        nr::FACCESSAT | nr::FACCESSAT2 => files::faccessat(a[0], a[1], a[2]),
        nr::IOCTL => files::ioctl(a[0], a[1], a[2]),
        nr::LSEEK => files::lseek(a[0], a[1], a[2]),
        nr::GETDENTS64 => files::getdents64(a[0], a[1], a[2]),
        nr::GETCWD => files::getcwd(a[0], a[1]),
        nr::UTIMENSAT => files::utimensat(a[0], a[1]),
        nr::CHDIR => files::chdir(a[0]),
        nr::ALARM => timers::alarm(a[0]),
        nr::SETITIMER => timers::setitimer(a[0], a[1], a[2]),
        nr::GETITIMER => timers::getitimer(a[0], a[1]),
        nr::PAUSE => timers::pause(),
        nr::FCHDIR => files::fchdir(a[0]),
        nr::PIPE => files::pipe2(a[0], 0),
        nr::PIPE2 => files::pipe2(a[0], a[1]),
        nr::DUP => files::dup(a[0]),
        nr::DUP2 => files::dup2(a[0], a[1]),
        nr::DUP3 => files::dup3(a[0], a[1], a[2]),
        nr::READLINK => files::readlink(a[0], a[1], a[2]),
        nr::READLINKAT => files::readlinkat(a[0], a[1], a[2], a[3]),
        nr::FCNTL => files::fcntl(a[0], a[1], a[2]),
        nr::PRCTL => identity::prctl(a[0], a[1]),
        nr::BRK => memory::brk(a[0]),
        nr::MMAP => memory::mmap(a[0], a[1], a[2], a[3], a[4], a[5]),
        nr::MUNMAP => memory::munmap(a[0], a[1]),
        nr::MPROTECT => memory::mprotect(a[0], a[1], a[2]),
        nr::MADVISE => memory::madvise(a[0], a[1], a[2]),
        nr::MREMAP => memory::mremap(a[0], a[1], a[2], a[3]),
        nr::EXIT => threads::exit(a[0]),
        nr::EXIT_GROUP => threads::exit_group(a[0]),
        nr::ARCH_PRCTL => process::arch_prctl(a[0], a[1]),
        nr::SET_TID_ADDRESS => threads::set_tid_address(a[0]),
        nr::SET_ROBUST_LIST => threads::set_robust_list(a[0], a[1]),
        nr::GET_ROBUST_LIST => threads::get_robust_list(a[0], a[1], a[2]),
        nr::FUTEX => futex::futex(a),
        nr::GETCPU => threads::getcpu(a[0], a[1]),
        nr::SCHED_SETAFFINITY => identity::sched_setaffinity(a[0], a[1], a[2]),
        nr::PRLIMIT64 => process::prlimit64(a[1], a[3]),
        nr::GETRLIMIT => process::prlimit64(a[0], a[1]),
        nr::SETRLIMIT => Ok(0),
        nr::SCHED_YIELD => threads::sched_yield(),
        nr::GETPID => Ok(identity::PID),
        nr::GETTID => threads::gettid(),
        nr::GETPPID => Ok(0),
        nr::GETUID | nr::GETEUID | nr::GETGID | nr::GETEGID => Ok(0),
        nr::UNAME => identity::uname(a[0]),
        nr::SCHED_GETAFFINITY => identity::sched_getaffinity(a[0], a[1], a[2]),
        nr::GETRANDOM => identity::getrandom(a[0], a[1]),
        nr::CLOCK_GETTIME => time::clock_gettime(a[0], a[1]),
        nr::CLOCK_GETRES => time::clock_getres(a[0], a[1]),
        nr::GETTIMEOFDAY => time::gettimeofday(a[0]),
        nr::GETRUSAGE => time::getrusage(a[0], a[1]),
        nr::TIME => time::time(a[0]),
        nr::NANOSLEEP => time::nanosleep(a[0], a[1]),
        nr::CLOCK_NANOSLEEP => time::clock_nanosleep(a[0], a[1], a[2], a[3]),
        nr::RT_SIGACTION => signals::rt_sigaction(a[0], a[1], a[2], a[3]),
        number => {
            count_unimplemented(number);
            Err(ENOSYS)
        }
    }
}

/// Program memory: checks and copies.
pub mod user {
    use super::*;

    /// Checks that `[addr, addr + len)` lies in logical memory, above the null page and
    /// off the kernel's image (its code, tables and locks): a system call never writes
    /// the kernel's own state for the program (docs/design.md, "Isolation").
    pub fn check(addr: u64, len: u64) -> Result<(), i64> {
        let end = addr.checked_add(len).ok_or(EFAULT)?;
        if len == 0 {
            return Ok(());
        }
        if addr < PAGE_SIZE || end > kernel().config.header().logical_bytes {
            return Err(EFAULT);
        }
        if addr < crate::alloc::image_end() && crate::alloc::image_start() < end {
            return Err(EFAULT);
        }
        Ok(())
    }

    /// Copies `bytes` to the program's `addr`.
    pub fn write(addr: u64, bytes: &[u8]) -> Result<(), i64> {
        check(addr, bytes.len() as u64)?;
        // SAFETY: the range lies in logical memory, mapped read/write for the whole life
        // of the virtual server; the program owns it and no kernel reference points
        // into it, so a plain copy is a copy into memory nobody else borrows.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
        Ok(())
    }

    /// Copies the program's `[addr, addr + buf.len())` into `buf`.
    pub fn read(addr: u64, buf: &mut [u8]) -> Result<(), i64> {
        check(addr, buf.len() as u64)?;
        // SAFETY: as in `write`, the other way round.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Reads a u64 of the program.
    pub fn read_u64(addr: u64) -> Result<u64, i64> {
        let mut b = [0u8; 8];
        read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Zeroes `[addr, addr + len)` of the program.
    pub fn zero(addr: u64, len: u64) -> Result<(), i64> {
        check(addr, len)?;
        // SAFETY: as in `write`.
        unsafe { core::ptr::write_bytes(addr as *mut u8, 0, usize_of(len)) };
        Ok(())
    }

    /// Zeroes `[addr, addr + len)` of the program, writing only words that are not zero
    /// already: a page that reads as zero stays clean (on a cluster, a shared copy is
    /// not upgraded to a writable one and invalidated elsewhere). For memory that is
    /// mostly zero, as what `madvise(MADV_DONTNEED)` of a thread's unused stack covers.
    pub fn zero_mostly_zero(addr: u64, len: u64) -> Result<(), i64> {
        check(addr, len)?;
        let mut at = addr;
        let end = addr + len;
        // Unaligned head and tail bytes are simply written.
        let head = addr.next_multiple_of(8).min(end);
        let tail = (end & !7).max(head);
        // SAFETY: as in `write`; every address below lies in [addr, end).
        unsafe {
            core::ptr::write_bytes(at as *mut u8, 0, usize_of(head - at));
            at = head;
            while at < tail {
                let word = at as *mut u64;
                if word.read_volatile() != 0 {
                    word.write_volatile(0);
                }
                at += 8;
            }
            core::ptr::write_bytes(tail as *mut u8, 0, usize_of(end - tail));
        }
        Ok(())
    }

    /// Reads a NUL-terminated path of at most `buf.len() - 1` bytes into `buf`; returns
    /// its length.
    pub fn read_path(addr: u64, buf: &mut [u8]) -> Result<usize, i64> {
        for (i, slot) in buf.iter_mut().enumerate() {
            let mut byte = [0u8];
            read(addr + i as u64, &mut byte)?;
            if byte[0] == 0 {
                return Ok(i);
            }
            *slot = byte[0];
        }
        Err(guest::linux_abi::errno::ENAMETOOLONG)
    }
}
