//! ViMA calls: one inline-assembly wrapper for the `out 0xCA, al` doorbell and a typed
//! function per call (the register convention is in `vima::call`).
//!
//! Calls are compiler memory barriers (the VMM reads and writes guest memory during a call
//! and interrupt handlers may run on its return), so the wrapper has no `nomem`/`readonly`.

use core::arch::asm;
use core::sync::atomic::AtomicU64;

use vima::call::{Call, VIMA_PORT};
use vima::Status;

const _: () = assert!(VIMA_PORT == 0xCA, "the port is written into the asm below");

/// A call that returned a status other than `Ok`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} call failed with status {}", .call.name(), StatusName(*.status))]
pub struct CallError {
    /// Which call.
    pub call: Call,
    /// The raw status in `rax`.
    pub status: u64,
}

struct StatusName(u64);

impl core::fmt::Display for StatusName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match Status::from_raw(self.0) {
            Some(status) => write!(f, "{status:?}"),
            None => write!(f, "{:#x}", self.0),
        }
    }
}

/// Makes call `call` with up to five arguments; returns `(status, value)`.
#[inline(always)]
fn raw_call(call: Call, args: [u64; 5]) -> (u64, u64) {
    let status: u64;
    let value: u64;
    // SAFETY: `out` to the ViMA port exits to the VMM, which reads rax and the argument
    // registers, writes status to rax and the value to rdx, and preserves every other
    // register. Any memory the call touches is named by its arguments, which each
    // wrapper below derives from references it holds.
    unsafe {
        asm!(
            "out 0xCA, al",
            inout("rax") call as u64 => status,
            in("rdi") args[0],
            in("rsi") args[1],
            inout("rdx") args[2] => value,
            in("r10") args[3],
            in("r8") args[4],
        );
    }
    (status, value)
}

fn checked(call: Call, args: [u64; 5]) -> Result<u64, CallError> {
    match raw_call(call, args) {
        (0, value) => Ok(value),
        (status, _) => Err(CallError { call, status }),
    }
}

/// `ConsoleWrite`: writes `bytes` (at most 4096) to this VP's console stream.
pub fn console_write(bytes: &[u8]) -> Result<u64, CallError> {
    checked(
        Call::ConsoleWrite,
        [bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0],
    )
}

/// `ConfigRead`: copies as much of the configuration as fits into `buf`; returns its
/// full size.
pub fn config_read(buf: &mut [u8]) -> Result<u64, CallError> {
    checked(
        Call::ConfigRead,
        [buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0, 0],
    )
}

/// `ConfigAck`: this VP applied configuration `epoch` (`refused` 0) or could not (a
/// `vima::call::CONFIG_REFUSED_*` reason); parks it while that epoch has it offline.
/// Returns the current epoch (a later one after a park).
pub fn config_ack(epoch: u32, refused: u64) -> Result<u32, CallError> {
    let now = checked(Call::ConfigAck, [u64::from(epoch), refused, 0, 0, 0])?;
    Ok(u32::try_from(now).unwrap_or(u32::MAX))
}

/// `SelfInfo`: `(vp, node)` of the caller.
#[expect(clippy::cast_possible_truncation, reason = "the value packs two u32s")]
pub fn self_info() -> Result<(u32, u32), CallError> {
    let value = checked(Call::SelfInfo, [0; 5])?;
    Ok((value as u32, (value >> 32) as u32))
}

/// `VpStart`: starts VP `vp` at `entry` with `rsp = stack_top`, `rdi = arg`.
pub fn vp_start(vp: u32, entry: u64, stack_top: u64, arg: u64) -> Result<(), CallError> {
    checked(Call::VpStart, [u64::from(vp), entry, stack_top, arg, 0]).map(drop)
}

/// `VpStop`: stops this VP for good.
pub fn vp_stop() -> ! {
    loop {
        let _ = raw_call(Call::VpStop, [0; 5]);
        // Not reached unless the VMM refused; do not spin hot.
        let _ = raw_call(Call::Yield, [0; 5]);
    }
}

/// Why `SpinWait` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeReason {
    /// The page was written or invalidated (the value may have changed).
    PageChanged,
    /// The value differs.
    ValueDiffers,
    /// An interrupt is pending.
    Interrupt,
    /// The timeout expired.
    TimedOut,
    /// A reason this kernel does not know.
    Other(u64),
}

/// `SpinWait`: blocks while `word` may still hold `expected`, up to `timeout_ns`.
pub fn spin_wait(
    word: &AtomicU64,
    expected: u64,
    timeout_ns: u64,
) -> Result<WakeReason, CallError> {
    let args = [word.as_ptr() as u64, expected, timeout_ns, 0, 0];
    match raw_call(Call::SpinWait, args) {
        (0, 0) => Ok(WakeReason::PageChanged),
        (0, 1) => Ok(WakeReason::ValueDiffers),
        (0, 2) => Ok(WakeReason::Interrupt),
        (0, other) => Ok(WakeReason::Other(other)),
        (status, _) if status == Status::TimedOut as u64 => Ok(WakeReason::TimedOut),
        (status, _) => Err(CallError {
            call: Call::SpinWait,
            status,
        }),
    }
}

/// `IpiSend`: makes `vector` pending on VP `vp`.
pub fn ipi_send(vp: u32, vector: u8) -> Result<(), CallError> {
    checked(Call::IpiSend, [u64::from(vp), u64::from(vector), 0, 0, 0]).map(drop)
}

/// `TimerSet`: raises `vector` after `delay_ns`, then every `period_ns` (0: once).
pub fn timer_set(vector: u8, delay_ns: u64, period_ns: u64) -> Result<(), CallError> {
    checked(
        Call::TimerSet,
        [u64::from(vector), delay_ns, period_ns, 0, 0],
    )
    .map(drop)
}

/// `IdtRegister`: installs `table` (handler address per vector, 0 = none).
pub fn idt_register(table: &[u64]) -> Result<(), CallError> {
    checked(
        Call::IdtRegister,
        [table.as_ptr() as u64, table.len() as u64, 0, 0, 0],
    )
    .map(drop)
}

/// `IntrPoll`: lets pending unmasked interrupts in.
pub fn intr_poll() -> Result<(), CallError> {
    checked(Call::IntrPoll, [0; 5]).map(drop)
}

/// `TimeRead`: nanoseconds since the virtual server started.
#[allow(dead_code)] // Part of the call set; the probe workload will time with it.
pub fn time_read() -> Result<u64, CallError> {
    checked(Call::TimeRead, [0; 5])
}

/// `VsExit`: ends the virtual server with `status`.
pub fn vs_exit(status: u64) -> ! {
    loop {
        let _ = raw_call(Call::VsExit, [status, 0, 0, 0, 0]);
        let _ = raw_call(Call::Yield, [0; 5]);
    }
}

/// `ProgramRead`: copies as much of the program descriptor as fits into `buf`; returns
/// its full size (0: no program).
pub fn program_read(buf: &mut [u8]) -> Result<u64, CallError> {
    checked(
        Call::ProgramRead,
        [buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0, 0],
    )
}

/// `TermIoctl`: terminal `request` on this node's host stream `stream` with the buffer
/// at `buf`; the Linux errno on failure (ENOTTY: not a terminal).
pub fn term_ioctl(stream: u64, request: u64, buf: u64) -> Result<u64, i64> {
    file_call(Call::TermIoctl, [stream, request, buf, 0, 0])
}

/// `MemDiscard`: the page-aligned `[addr, addr + len)` reads as zero afterwards on every
/// node; returns how many pages the VMM handled without the coherence protocol.
pub fn mem_discard(addr: u64, len: u64) -> Result<u64, CallError> {
    checked(Call::MemDiscard, [addr, len, 0, 0, 0])
}

/// `SyscallEntrySet`: this VP's `syscall` instruction jumps to `entry` from now on.
pub fn syscall_entry_set(entry: u64) -> Result<(), CallError> {
    checked(Call::SyscallEntrySet, [entry, 0, 0, 0, 0]).map(|_| ())
}

/// `StreamRead` of up to `len` bytes into logical address `addr`: `Some(n)` (0 at end of
/// file), `None` when nothing has arrived yet.
pub fn stream_read(stream: u64, addr: u64, len: u64) -> Result<Option<u64>, CallError> {
    match raw_call(Call::StreamRead, [stream, addr, len, 0, 0]) {
        (0, n) => Ok(Some(n)),
        (status, _) if status == Status::NotReady as u64 => Ok(None),
        (status, _) => Err(CallError {
            call: Call::StreamRead,
            status,
        }),
    }
}

/// `StreamWrite` of `len` bytes at logical address `addr` (the program's own buffer,
/// which the kernel does not borrow).
pub fn stream_write_at(stream: u64, addr: u64, len: u64) -> Result<u64, CallError> {
    checked(Call::StreamWrite, [stream, addr, len, 0, 0])
}

/// A `File*` call: the value, or the Linux errno the host gave (`HostError`); other
/// failures (a bad buffer) are EFAULT.
fn file_call(call: Call, args: [u64; 5]) -> Result<u64, i64> {
    match raw_call(call, args) {
        (0, value) => Ok(value),
        (status, errno) if status == Status::HostError as u64 => {
            Err(i64::try_from(errno).unwrap_or(guest::linux_abi::errno::EIO))
        }
        (status, _) if status == Status::BadAddress as u64 => Err(guest::linux_abi::errno::EFAULT),
        _ => Err(guest::linux_abi::errno::EINVAL),
    }
}

/// `FileOpen` of the root path `path` (`nofollow`: a final link itself): the handle.
pub fn file_open(path: &[u8], nofollow: bool) -> Result<u64, i64> {
    let flags = if nofollow {
        vima::call::FILE_OPEN_NOFOLLOW
    } else {
        0
    };
    file_call(
        Call::FileOpen,
        [path.as_ptr() as u64, path.len() as u64, flags, 0, 0],
    )
}

/// `FileStat`: the file's `struct stat` into the 144 bytes at `buf`.
pub fn file_stat(handle: u64, buf: u64) -> Result<u64, i64> {
    file_call(Call::FileStat, [handle, buf, 0, 0, 0])
}

/// `FileRead` of up to `len` bytes at `offset` into `buf`.
pub fn file_read(handle: u64, offset: u64, buf: u64, len: u64) -> Result<u64, i64> {
    file_call(Call::FileRead, [handle, offset, buf, len, 0])
}

/// `FileReadDir` from `cookie` into `buf`.
pub fn file_read_dir(handle: u64, cookie: u64, buf: u64, len: u64) -> Result<u64, i64> {
    file_call(Call::FileReadDir, [handle, cookie, buf, len, 0])
}

/// `FileClose`.
pub fn file_close(handle: u64) -> Result<u64, i64> {
    file_call(Call::FileClose, [handle, 0, 0, 0, 0])
}

/// `FileReadLink`: a link's target (opened `nofollow`) into `buf`, at most `len` bytes.
pub fn file_read_link(handle: u64, buf: u64, len: u64) -> Result<u64, i64> {
    file_call(Call::FileReadLink, [handle, buf, len, 0, 0])
}

/// `SyscallUnimplemented`: tells the VMM the program got ENOSYS `count` times for
/// `number` (`name`: its name, if known), for `--stats-json`. Best effort.
pub fn syscall_unimplemented(number: u64, name: Option<&str>, count: u64) {
    let (ptr, len) = name.map_or((0, 0), |n| (n.as_ptr() as u64, n.len() as u64));
    let _ = raw_call(Call::SyscallUnimplemented, [number, ptr, len, count, 0]);
}
