//! The Linux personality: this kernel becomes the kernel of one static x86-64 Linux
//! program (docs/linux-abi.md).
//!
//! The VMM loaded the program's segments into logical memory before boot and describes
//! it in the program descriptor (`vima::program`). At boot VP 0 reads the descriptor
//! ([`load`]) so that the page allocator leaves the program's image and its break alone;
//! after the other VPs are up, VP 0 points its `syscall` instruction at the kernel
//! ([`entry`]), builds the initial stack (argv, envp, auxv) on memory of its node and
//! jumps to the program's entry ([`run`]). System calls are served in [`syscalls`], one
//! module per family.
//!
//! Address space: the program shares the kernel's logical = virtual map (it runs at the
//! same CPL3 on PVM hosts), so its pointers are logical addresses and system calls check
//! them against logical memory before touching them.

pub mod entry;
pub mod fs;
pub mod pipe;
mod rewrite;
mod syscalls;
pub mod tmpfs;

use core::cell::UnsafeCell;

use vima::layout::PAGE_SIZE;
use vima::program::{ProgramDesc, MAX_PROGRAM_DESC_BYTES};

use guest::linux_abi::stack::{self, StackInput};

use crate::interrupts::current_vp;
use crate::machine::kernel;
use crate::sync::Once;
use crate::{alloc, vima_calls};

/// Bytes of the program's main stack (Linux's default RLIMIT_STACK), if memory allows;
/// else [`MIN_STACK_BYTES`].
pub const STACK_BYTES: u64 = 8 << 20;
/// Smallest main stack tried.
pub const MIN_STACK_BYTES: u64 = 1 << 20;

struct DescBuffer(UnsafeCell<[u8; MAX_PROGRAM_DESC_BYTES]>);

// SAFETY: VP 0 fills the buffer once in `load`, before PROGRAM is set and before any
// other VP starts; afterwards it is only read.
unsafe impl Sync for DescBuffer {}

static DESC_BUFFER: DescBuffer = DescBuffer(UnsafeCell::new([0; MAX_PROGRAM_DESC_BYTES]));

static PROGRAM: Once<ProgramDesc<'static>> = Once::new();

/// The program's descriptor; system calls run only after [`load`] set it.
pub fn program() -> &'static ProgramDesc<'static> {
    match PROGRAM.get() {
        Some(desc) => desc,
        None => crate::machine::fail(1, format_args!("no Linux program was loaded")),
    }
}

/// Why the program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// The VMM has no program for this virtual server.
    #[error("the VMM loaded no Linux program (run it as `cvmm run -- PATH`)")]
    NoProgram,
    /// The descriptor does not parse.
    #[error("bad program descriptor: {0:?}")]
    Descriptor(vima::program::ProgramError),
    /// Loaded twice.
    #[error("the program descriptor was read twice")]
    Twice,
    /// A ViMA call failed.
    #[error("{0}")]
    Call(#[from] vima_calls::CallError),
    /// No memory for the stack.
    #[error("no memory for the program's stack: {0}")]
    Stack(#[from] guest::page_alloc::PageAllocError),
    /// The stack is too small for argv and envp.
    #[error("{0}")]
    StackTooSmall(#[from] guest::linux_abi::stack::StackTooSmall),
    /// No memory for the main thread.
    #[error("{0}")]
    Thread(#[from] crate::sched::SpawnError),
}

/// VP 0 at boot, before the allocator starts: reads the descriptor. Returns the range
/// `[image_start, brk_limit)` the allocator must leave to the program.
pub fn load(options: guest::cmdline::LinuxOptions) -> Result<(u64, u64), LinuxError> {
    syscalls::set_strace(options.strace);
    rewrite::set_enabled(!options.trap_syscalls);
    crate::sched::placement::set_memory_weighted(!options.load_placement);
    // SAFETY: only VP 0 calls this, once (PROGRAM is set below, a second call fails
    // before touching the buffer), before any other VP runs; nothing else refers to the
    // buffer until PROGRAM hands out the shared view.
    if PROGRAM.get().is_some() {
        return Err(LinuxError::Twice);
    }
    // SAFETY: see above; this is the only mutable reference ever made.
    let buffer = unsafe { &mut *DESC_BUFFER.0.get() };
    let size = vima_calls::program_read(buffer)?;
    let len = usize::try_from(size)
        .ok()
        .filter(|&len| len > 0 && len <= MAX_PROGRAM_DESC_BYTES)
        .ok_or(LinuxError::NoProgram)?;
    let buffer: &'static [u8] = buffer;
    let desc = ProgramDesc::parse(&buffer[..len]).map_err(LinuxError::Descriptor)?;
    let h = *desc.header();
    PROGRAM.set(desc).map_err(|_| LinuxError::Twice)?;
    syscalls::memory::init(h.image_end, h.brk_limit);
    Ok((h.image_start, h.brk_limit))
}

/// Points this VP's ways into the kernel at it: `syscall` (MSR LSTAR, for sites not
/// yet rewritten) and the trampoline's target word. Every VP runs program threads.
fn init_vp() -> Result<(), LinuxError> {
    let target = entry::syscall_call_entry as *const () as u64;
    // SAFETY: gs points at this VP's VpShared block; guest word 2 is the kernel's (the
    // VMM never touches it while the VP runs).
    unsafe {
        core::arch::asm!(
            "mov gs:[{target_off}], {target}",
            target_off = const entry::CALL_TARGET_OFFSET,
            target = in(reg) target,
            options(nostack, preserves_flags)
        );
    }
    vima_calls::syscall_entry_set(entry::syscall_entry as *const () as u64)?;
    Ok(())
}

/// Every VP but VP 0 after boot: runs the program's threads as the scheduler places
/// them; never returns (the program ends the virtual server).
pub fn vp_main() -> Result<core::convert::Infallible, LinuxError> {
    init_vp()?;
    crate::sched::idle_loop()
}

/// VP 0 after boot: makes the program's main thread (tid 1) on VP 0, then schedules
/// threads like every other VP; the program ends the virtual server.
pub fn run() -> Result<core::convert::Infallible, LinuxError> {
    let desc = program();
    let h = *desc.header();
    init_vp()?;

    let node = kernel().node_of(current_vp() as usize);
    let (base, bytes) = match alloc::alloc_pages(STACK_BYTES / PAGE_SIZE, node) {
        Ok(base) => (base, STACK_BYTES),
        Err(_) => (
            alloc::alloc_pages(MIN_STACK_BYTES / PAGE_SIZE, node)?,
            MIN_STACK_BYTES,
        ),
    };
    syscalls::memory::set_stack(base, base + bytes);
    let top = base + bytes;
    // SAFETY: the allocator gave this block to the program's stack alone; it is mapped
    // read/write and nothing else refers to it yet.
    let stack_mem =
        unsafe { core::slice::from_raw_parts_mut(base as *mut u8, syscalls::usize_of(bytes)) };
    let hwcap = cpuid_1_edx();
    let aux = [
        (stack::AT_PHDR, h.phdr),
        (stack::AT_PHENT, h.phent),
        (stack::AT_PHNUM, h.phnum),
        (stack::AT_PAGESZ, PAGE_SIZE),
        (stack::AT_BASE, 0),
        (stack::AT_FLAGS, 0),
        (stack::AT_ENTRY, h.entry),
        (stack::AT_UID, 0),
        (stack::AT_EUID, 0),
        (stack::AT_GID, 0),
        (stack::AT_EGID, 0),
        (stack::AT_SECURE, 0),
        (stack::AT_HWCAP, hwcap),
        (stack::AT_HWCAP2, 0),
        (stack::AT_CLKTCK, 100),
    ];
    let input = StackInput {
        execfn: desc.execfn(),
        args: desc.args(),
        envs: desc.envs(),
        random: h.random,
        platform: b"x86_64",
        aux: &aux,
    };
    let rsp = stack::build(stack_mem, top, &input)?;
    // The ABI's entry state: rsp at argc, rdx = 0 (no exit handler), the rest zero.
    let frame = entry::SyscallFrame {
        rcx: h.entry,
        rsp,
        r11: INITIAL_RFLAGS,
        ..entry::SyscallFrame::default()
    };
    let main = crate::sched::spawn(
        &frame,
        &crate::sched::switch::default_fx_state(),
        0,
        Some(0),
    )?;
    crate::interrupts::set_preemptive();
    crate::sched::start(main);
    crate::sched::idle_loop()
}

/// A fault of the program (exception `vector`): its signal's handler, or the default
/// action (syscalls/signals.rs).
pub fn fault(
    vector: u8,
    frame: &mut vima::interrupt::ExceptionFrame,
    saved: &mut crate::interrupts::SavedRegs,
    fx: &[u8; 512],
) {
    syscalls::signals::fault(vector, frame, saved, fx);
}

/// Every VP's tick while a program runs: its interval timer.
pub fn at_tick() {
    syscalls::timers::at_tick();
}

/// An interrupt returns to program code: a signal another thread sent is taken now.
pub fn at_interrupt(
    frame: &mut vima::interrupt::InterruptFrame,
    saved: &mut crate::interrupts::SavedRegs,
    fx: &[u8; 512],
) {
    syscalls::signals::at_interrupt(frame, saved, fx);
}

/// The flags a program starts with (bit 1 is always set; interrupts on).
const INITIAL_RFLAGS: u64 = 0x202;

fn cpuid_1_edx() -> u64 {
    // SAFETY: cpuid is available on every x86-64 CPU and has no side effects.
    #[allow(unused_unsafe)]
    let leaf = unsafe { core::arch::x86_64::__cpuid(1) };
    u64::from(leaf.edx)
}
