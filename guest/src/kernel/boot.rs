//! Boot on VP 0.
//!
//! `_start` is the ELF entry: VP 0 arrives with `rsp = BOOT_STACK_TOP`, `rsi = 0` (its
//! VP id) and interrupts masked. It clears `.bss` (logical memory starts zeroed, but the
//! kernel should not depend on how its image was loaded), then [`boot_main`] reads and
//! checks the configuration, publishes it ([`crate::machine`]), sets up the allocator and
//! interrupts, prepares the workload and hands over to [`crate::smp`]. Nothing imports
//! from this module: the core it boots (machine, smp, sched, interrupts) stands alone.

use core::cell::UnsafeCell;

use vima::config::{Config, ConfigError};
use vima::layout::MAX_VPS;

use guest::cmdline::{self, Workload};
use guest::page_alloc::PageAllocError;

use crate::machine::{self, fail, kernel, Kernel};
use crate::vima_calls::{self, CallError};
use crate::{alloc, smp, workloads};

core::arch::global_asm!(
    ".pushsection .text._start,\"ax\",@progbits",
    ".global _start",
    "_start:",
    "mov r12, rdi",
    "mov r13, rsi",
    "lea rdi, [rip + __bss_start]",
    "lea rcx, [rip + __bss_end]",
    "sub rcx, rdi",
    "xor eax, eax",
    "cld",
    "rep stosb",
    "mov rdi, r12",
    "mov rsi, r13",
    "and rsp, -16",
    "xor ebp, ebp",
    "call {main}",
    "ud2",
    ".popsection",
    main = sym boot_main,
);

/// Largest configuration this kernel reads (the biggest legal one is under 4 KiB).
const CONFIG_BUFFER_BYTES: usize = 8192;

struct ConfigBuffer(UnsafeCell<[u8; CONFIG_BUFFER_BYTES]>);

// SAFETY: VP 0 writes the buffer once in `read_config`, before `KERNEL` is set and before
// any other VP starts; afterwards it is only read.
unsafe impl Sync for ConfigBuffer {}

static CONFIG_BUFFER: ConfigBuffer = ConfigBuffer(UnsafeCell::new([0; CONFIG_BUFFER_BYTES]));

/// Why boot failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A ViMA call failed.
    #[error("{0}")]
    Call(#[from] CallError),
    /// The configuration is larger than the buffer.
    #[error("configuration of {0} bytes does not fit in {CONFIG_BUFFER_BYTES}")]
    ConfigTooLarge(u64),
    /// The configuration does not parse.
    #[error("bad configuration: {0:?}")]
    Config(ConfigError),
    /// More VPs than this kernel supports.
    #[error("{0} VPs, at most {MAX_VPS} supported")]
    TooManyVps(usize),
    /// Boot ran twice.
    #[error("boot ran twice")]
    Twice,
    /// The allocator refused.
    #[error("{0}")]
    Alloc(#[from] PageAllocError),
    /// The workload could not be prepared or run.
    #[error("{0}")]
    Workload(#[from] workloads::WorkloadError),
    /// The Linux program could not be started.
    #[error("{0}")]
    Linux(#[from] crate::linux::LinuxError),
    /// The other VPs could not be started.
    #[error("{0}")]
    Smp(#[from] smp::SmpError),
}

fn read_config() -> Result<Config<'static>, BootError> {
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, core::sync::atomic::Ordering::Relaxed) {
        return Err(BootError::Twice);
    }
    // SAFETY: TAKEN makes this the only mutable reference ever made to the buffer, and
    // no shared one exists before it is converted into the shared slice below.
    let buffer = unsafe { &mut *CONFIG_BUFFER.0.get() };
    let size = vima_calls::config_read(buffer)?;
    let len = usize::try_from(size)
        .ok()
        .filter(|&len| len <= CONFIG_BUFFER_BYTES)
        .ok_or(BootError::ConfigTooLarge(size))?;
    let buffer: &'static [u8] = buffer;
    let bytes = &buffer[..len];
    let config = Config::parse(bytes).map_err(BootError::Config)?;
    if config.vp_count() > MAX_VPS {
        return Err(BootError::TooManyVps(config.vp_count()));
    }
    Ok(config)
}

extern "sysv64" fn boot_main(_arg: u64, vp: u64) -> ! {
    if vp != 0 {
        fail(1, format_args!("entered _start on VP {vp}, expected VP 0"));
    }
    let config = match read_config() {
        Ok(config) => config,
        Err(err) => fail(1, format_args!("{err}")),
    };
    let workload = match cmdline::parse(config.cmdline()) {
        Ok(workload) => workload,
        Err(err) => fail(err.exit_status(), format_args!("{err}")),
    };
    if let Err(err) = boot(config, workload) {
        fail(err.exit_status(), format_args!("{err}"));
    }
    smp::boot_vp_main()
}

impl BootError {
    /// The `VsExit` status for this error.
    pub fn exit_status(&self) -> u64 {
        match self {
            BootError::Workload(err) => err.exit_status(),
            _ => 1,
        }
    }
}

fn boot(config: Config<'static>, workload: Workload) -> Result<(), BootError> {
    machine::set(Kernel { config, workload }).map_err(|_| BootError::Twice)?;
    // A Linux program's image and break are the program's: read where they lie before
    // the allocator takes the rest of memory.
    let program_range = match workload {
        Workload::Linux(options) => Some(crate::linux::load(options)?),
        _ => None,
    };
    alloc::init(&config, program_range)?;
    smp::init_this_vp(0)?;
    workloads::prepare(kernel())?;
    smp::start_others(kernel())?;
    Ok(())
}
