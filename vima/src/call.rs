//! ViMA calls: numbers, register convention, and argument checking.
//!
//! A call is `out VIMA_PORT, al` at CPL3 (IOPL=3 lets the guest do port I/O; each `out` is
//! one exit to the VMM). Registers:
//!
//! | register | in | out |
//! |---|---|---|
//! | `rax` | call number | [`crate::Status`] |
//! | `rdi, rsi, rdx, r10, r8` | arguments 0..4 | `rdx`: the call's value, 0 if none |
//!
//! All other registers are preserved.
//!
//! VP entry state (VP 0 at boot, other VPs from `VpStart`): 64-bit mode at CPL3, IOPL=3,
//! interrupts masked in the VP's [`crate::interrupt::VpShared`] block (`mask = 1`) until the
//! guest clears it, SSE enabled, `gs` base = the VP's `VpShared` block, `fs` base = 0,
//! `rdi` = argument (0 for VP 0), `rsi` = VP id, `rsp` = the given stack top (VP 0:
//! [`crate::layout::BOOT_STACK_TOP`]), `rip` = entry (VP 0: the ELF entry point). Logical
//! memory is mapped read/write/execute at logical = virtual, except the null page. `docs/vima.md` documents each call; the summary is on
//! each [`Call`] variant. A guest address is a claim until [`UncheckedRange::check`] says
//! it lies inside logical memory; the VMM has no other way to turn one into a
//! [`LogicalRange`].

use crate::Status;

/// The I/O port the guest writes to make a call.
pub const VIMA_PORT: u16 = 0xCA;
/// The port of the hardware exception stubs (`vima::layout::EXCEPTION_STUBS_OFFSET`): an
/// `out` to it from a stub is an exception for the VMM to deliver, not a call.
pub const EXCEPTION_PORT: u16 = 0xCB;

/// Most bytes one `ConsoleWrite` takes.
pub const CONSOLE_WRITE_MAX: u64 = 4096;
/// Most bytes one `StreamWrite` takes.
pub const STREAM_WRITE_MAX: u64 = 64 * 1024;
/// `StreamRead` stream number of the program's standard input.
pub const STREAM_STDIN: u64 = 0;
/// Most bytes one `FileRead` or `FileReadDir` returns.
pub const FILE_READ_MAX: u64 = 64 * 1024;
/// `FileOpen` flag: do not follow a final symbolic link.
pub const FILE_OPEN_NOFOLLOW: u64 = 1;
/// Longest path `FileOpen` takes.
pub const FILE_PATH_MAX: u64 = 4096;
/// Most bytes one `StreamRead` returns.
pub const STREAM_READ_MAX: u64 = 64 * 1024;
/// `StreamWrite` stream number of the program's standard output.
pub const STREAM_STDOUT: u64 = 1;
/// `StreamWrite` stream number of the program's standard error.
pub const STREAM_STDERR: u64 = 2;

/// A ViMA call number (in `rax`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    /// `ConsoleWrite(ptr, len) -> len`: writes `len <= 4096` bytes to the console. Lines are
    /// printed whole, per VP.
    ConsoleWrite = 0,
    /// `ConfigRead(ptr, len) -> size`: copies `min(len, size)` bytes of the configuration
    /// into the buffer and returns its full size (call with `len = 0` to learn it).
    ConfigRead = 1,
    /// `SelfInfo() -> vp | node << 32`: who is calling.
    SelfInfo = 2,
    /// `VpStart(vp, entry, stack_top, arg)`: starts a stopped VP at `entry` with
    /// `rsp = stack_top`, `rdi = arg`, `rsi = vp`. `VpBusy` if it runs.
    VpStart = 3,
    /// `VpStop()`: stops the calling VP; does not return. The virtual server ends with
    /// status 0 when every VP has stopped.
    VpStop = 4,
    /// `Yield()`: gives the physical CPU to someone else for a moment.
    Yield = 5,
    /// `SpinWait(addr, expected, timeout_ns) -> reason`: blocks while the u64 at `addr`
    /// (8-byte aligned) may still equal `expected`, up to `timeout_ns`. Returns at once
    /// with reason 1 if it differs; reason 0 when the page was written or invalidated
    /// (it may have changed); reason 2 when an interrupt is pending; `TimedOut` status on
    /// timeout. Spurious returns are allowed: re-check the value.
    SpinWait = 6,
    /// `IpiSend(vp, vector)`: makes `vector` (32..63) pending on `vp`, on any node.
    IpiSend = 7,
    /// `TimerSet(vector, delay_ns, period_ns)`: arms this VP's one timer to raise `vector`
    /// after `delay_ns`, then every `period_ns` if it is not 0. `delay_ns = 0` disarms.
    TimerSet = 8,
    /// `IdtRegister(table, count)`: copies `count <= 64` handler addresses (u64, index =
    /// vector, 0 = none) from `table` as this VP's virtual IDT.
    IdtRegister = 9,
    /// `IntrReturn(frame)`: returns from an interrupt handler; `frame` is the address the
    /// handler was entered with. Does not return to the caller.
    IntrReturn = 10,
    /// `IntrPoll()`: does nothing; pending unmasked interrupts are delivered on return.
    IntrPoll = 11,
    /// `TimeRead() -> ns`: nanoseconds since this node started the virtual server
    /// (monotonic; nodes start within milliseconds of each other).
    TimeRead = 12,
    /// `VsExit(status)`: ends the virtual server on every node; `cvmm` exits with
    /// `status & 0xff`.
    VsExit = 13,
    /// `StreamWrite(stream, ptr, len) -> len`: writes `len <= 64 KiB` bytes, unchanged and
    /// untagged, to `cvmm`'s standard output (`stream = 1`) or standard error (`2`),
    /// whichever node the VP runs on. The Linux personality's stdout and stderr.
    StreamWrite = 14,
    /// `ProgramRead(ptr, len) -> size`: copies `min(len, size)` bytes of the program
    /// descriptor ([`crate::program`]) into the buffer and returns its full size; size 0
    /// when the virtual server runs no Linux program. Like `ConfigRead`.
    ProgramRead = 15,
    /// `SyscallEntrySet(entry)`: points this VP's `syscall` instruction at `entry` (MSR
    /// LSTAR; FMASK clears TF, DF and AC). On a CPL3 guest `syscall` stays at CPL3 with
    /// `rsp` unchanged, `rcx` = return address, `r11` = flags.
    SyscallEntrySet = 16,
    /// `StreamRead(stream, ptr, len) -> n`: copies up to `len <= 64 KiB` bytes of
    /// `cvmm`'s standard input (`stream = 0`) into the buffer and returns how many;
    /// 0 at end of file, status `NotReady` when nothing has arrived yet (the call never
    /// blocks: ask again later). With `len = 0` it only asks: 0 when a read would not
    /// wait (bytes or the end are there), `NotReady` otherwise (poll). The Linux
    /// personality's stdin, read on node 0.
    StreamRead = 17,
    /// `FileOpen(path, len, flags) -> handle`: opens `path` (`len <= 4096` bytes, no NUL)
    /// of the Linux program's read-only root (`cvmm run --root DIR`, served by node 0)
    /// for reading; with [`FILE_OPEN_NOFOLLOW`] a final symbolic link itself (to stat). Status `HostError` with the Linux errno as the value when the host
    /// refuses (ENOENT outside node 0 or without `--root`).
    FileOpen = 18,
    /// `FileStat(handle, buf)`: writes the file's Linux x86-64 `struct stat` (144 bytes).
    FileStat = 19,
    /// `FileRead(handle, offset, buf, len) -> n`: reads up to `len <= 64 KiB` bytes at
    /// `offset` (0 at end of file).
    FileRead = 20,
    /// `FileReadDir(handle, cookie, buf, len) -> n`: `linux_dirent64` records of a
    /// directory from `cookie` (0 or a `d_off` returned before), at most `len <= 64 KiB`.
    FileReadDir = 21,
    /// `FileClose(handle)`.
    FileClose = 22,
    /// `FileReadLink(handle, buf, len) -> n`: the target of a symbolic link opened with
    /// [`FILE_OPEN_NOFOLLOW`], at most `len <= 4096` bytes.
    FileReadLink = 23,
    /// `SyscallUnimplemented(number, name, len, count)`: the Linux program got ENOSYS
    /// `count` times (0 counts as 1) for system call `number`, which the guest kernel
    /// does not implement; `name` (`len <= 32` bytes, 0 if unknown) is its name. Counted
    /// by number and name in `--stats-json`.
    SyscallUnimplemented = 24,
    /// `MemDiscard(addr, len) -> freed`: the page-aligned range reads as zero afterwards,
    /// on every node (`madvise(MADV_DONTNEED)`). Pages only this node holds give their
    /// memory back to the host instead of being written; the others are zeroed through
    /// the coherence protocol (pages that read as zero are left as they are). Returns
    /// how many pages were given back.
    MemDiscard = 25,
    /// `TermIoctl(stream, request, buf) -> 0`: a terminal `ioctl` on `cvmm`'s own
    /// standard input, output or error (`stream` 0, 1, 2) of this node's host: TCGETS
    /// (writes the 36-byte kernel `struct termios`), TCSETS, TCSETSW, TCSETSF (reads
    /// it) and TIOCGWINSZ (writes the 8-byte `struct winsize`). Status `HostError` with
    /// the errno (ENOTTY when the stream is not a terminal); `BadArgument` for another
    /// request.
    TermIoctl = 26,
    /// `ConfigAck(epoch, refused) -> epoch`: the calling VP has applied configuration
    /// `epoch` (read with `ConfigRead` after a [`crate::interrupt::VECTOR_CONFIG`]
    /// interrupt, paper 4.10), or could not (`refused` is a [`CONFIG_REFUSED_MEMORY_IN_USE`]
    /// reason, 0 when it applied it). If that configuration marks the VP offline, the VP
    /// is parked: the call returns only once a later configuration brings it online
    /// again, with that epoch (read the table anew and acknowledge again). Otherwise it
    /// returns the current epoch at once: not `epoch` when the configuration changed
    /// meanwhile.
    ConfigAck = 27,
}

/// `ConfigAck`'s `refused`: a node's memory would shrink below pages the guest uses.
pub const CONFIG_REFUSED_MEMORY_IN_USE: u64 = 1;

/// Number of call numbers defined; numbers at or above this are `UnknownCall`.
pub const CALL_COUNT: usize = 28;

/// The terminal requests [`Call::TermIoctl`] passes on (Linux's numbers).
pub mod term {
    /// Get the termios.
    pub const TCGETS: u64 = 0x5401;
    /// Set the termios now.
    pub const TCSETS: u64 = 0x5402;
    /// Set it after output drains.
    pub const TCSETSW: u64 = 0x5403;
    /// Set it after output drains, dropping pending input.
    pub const TCSETSF: u64 = 0x5404;
    /// Get the window size.
    pub const TIOCGWINSZ: u64 = 0x5413;
    /// Bytes of the kernel's `struct termios` (x86-64).
    pub const TERMIOS_BYTES: u64 = 36;
    /// Bytes of `struct winsize`.
    pub const WINSIZE_BYTES: u64 = 8;
}

/// The registers of one call as the VMM read them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallArgs {
    /// `rax`.
    pub number: u64,
    /// `rdi, rsi, rdx, r10, r8`.
    pub args: [u64; 5],
}

impl Call {
    /// Every call, in number order.
    pub const ALL: [Call; CALL_COUNT] = [
        Call::ConsoleWrite,
        Call::ConfigRead,
        Call::SelfInfo,
        Call::VpStart,
        Call::VpStop,
        Call::Yield,
        Call::SpinWait,
        Call::IpiSend,
        Call::TimerSet,
        Call::IdtRegister,
        Call::IntrReturn,
        Call::IntrPoll,
        Call::TimeRead,
        Call::VsExit,
        Call::StreamWrite,
        Call::ProgramRead,
        Call::SyscallEntrySet,
        Call::StreamRead,
        Call::FileOpen,
        Call::FileStat,
        Call::FileRead,
        Call::FileReadDir,
        Call::FileClose,
        Call::FileReadLink,
        Call::SyscallUnimplemented,
        Call::MemDiscard,
        Call::TermIoctl,
        Call::ConfigAck,
    ];

    /// Decodes the call number in `rax`.
    pub fn decode(args: &CallArgs) -> Result<Call, Status> {
        usize::try_from(args.number)
            .ok()
            .and_then(|n| Self::ALL.get(n).copied())
            .ok_or(Status::UnknownCall)
    }

    /// A short lower-case name, for statistics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Call::ConsoleWrite => "console_write",
            Call::ConfigRead => "config_read",
            Call::SelfInfo => "self_info",
            Call::VpStart => "vp_start",
            Call::VpStop => "vp_stop",
            Call::Yield => "yield",
            Call::SpinWait => "spin_wait",
            Call::IpiSend => "ipi_send",
            Call::TimerSet => "timer_set",
            Call::IdtRegister => "idt_register",
            Call::IntrReturn => "intr_return",
            Call::IntrPoll => "intr_poll",
            Call::TimeRead => "time_read",
            Call::VsExit => "vs_exit",
            Call::StreamWrite => "stream_write",
            Call::ProgramRead => "program_read",
            Call::SyscallEntrySet => "syscall_entry_set",
            Call::StreamRead => "stream_read",
            Call::FileOpen => "file_open",
            Call::FileStat => "file_stat",
            Call::FileRead => "file_read",
            Call::FileReadDir => "file_read_dir",
            Call::FileClose => "file_close",
            Call::FileReadLink => "file_read_link",
            Call::SyscallUnimplemented => "syscall_unimplemented",
            Call::MemDiscard => "mem_discard",
            Call::TermIoctl => "term_ioctl",
            Call::ConfigAck => "config_ack",
        }
    }
}

/// A guest-supplied `(address, length)` that has not been checked yet. It cannot be read
/// from or written to; [`UncheckedRange::check`] turns it into a [`LogicalRange`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UncheckedRange {
    addr: u64,
    len: u64,
}

/// A range that lies inside logical memory (outside the null page), checked by
/// [`UncheckedRange::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogicalRange {
    addr: u64,
    len: u64,
}

impl UncheckedRange {
    /// Wraps a guest claim.
    pub const fn new(addr: u64, len: u64) -> Self {
        Self { addr, len }
    }

    /// Checks that `[addr, addr + len)` lies in `[PAGE_SIZE, logical_bytes)`, and that
    /// `addr` is a multiple of `align` (a power of two).
    pub fn check(self, logical_bytes: u64, align: u64) -> Result<LogicalRange, Status> {
        let end = self.addr.checked_add(self.len).ok_or(Status::BadAddress)?;
        let aligned = align.is_power_of_two() && self.addr & (align - 1) == 0;
        if self.addr < crate::layout::PAGE_SIZE || end > logical_bytes || !aligned {
            return Err(Status::BadAddress);
        }
        Ok(LogicalRange {
            addr: self.addr,
            len: self.len,
        })
    }
}

impl LogicalRange {
    /// First logical address.
    pub const fn addr(&self) -> u64 {
        self.addr
    }
    /// Length in bytes.
    pub const fn len(&self) -> u64 {
        self.len
    }
    /// True for an empty range.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_are_fixed() {
        for (n, call) in Call::ALL.iter().enumerate() {
            assert_eq!(*call as usize, n);
            let args = CallArgs {
                number: n as u64,
                args: [0; 5],
            };
            assert_eq!(Call::decode(&args), Ok(*call));
        }
        assert_eq!(Call::VsExit as u32, 13);
        assert_eq!(Call::SpinWait as u32, 6);
    }

    #[test]
    fn unknown_numbers_are_rejected() {
        for number in [CALL_COUNT as u64, 100, u64::MAX, 1 << 32] {
            let args = CallArgs {
                number,
                args: [0; 5],
            };
            assert_eq!(Call::decode(&args), Err(Status::UnknownCall));
        }
    }

    #[test]
    fn range_check_edges() {
        let mem = 16 << 20;
        assert!(UncheckedRange::new(0x1000, 8).check(mem, 8).is_ok());
        assert!(UncheckedRange::new(mem - 8, 8).check(mem, 8).is_ok());
        assert_eq!(
            UncheckedRange::new(mem - 7, 8).check(mem, 1),
            Err(Status::BadAddress)
        );
        assert_eq!(
            UncheckedRange::new(0, 8).check(mem, 1),
            Err(Status::BadAddress)
        );
        assert_eq!(
            UncheckedRange::new(0x1004, 8).check(mem, 8),
            Err(Status::BadAddress)
        );
        assert_eq!(
            UncheckedRange::new(u64::MAX, 2).check(mem, 1),
            Err(Status::BadAddress)
        );
    }

    proptest! {
        #[test]
        fn checked_ranges_are_inside(addr in any::<u64>(), len in any::<u64>(), shift in 0u32..4) {
            let mem = 64u64 << 20;
            let align = 1u64 << shift;
            match UncheckedRange::new(addr, len).check(mem, align) {
                Ok(r) => {
                    prop_assert!(r.addr() >= 4096);
                    prop_assert!(r.addr() as u128 + r.len() as u128 <= mem as u128);
                    prop_assert_eq!(r.addr() % align, 0);
                }
                Err(s) => prop_assert_eq!(s, Status::BadAddress),
            }
        }
    }
}
