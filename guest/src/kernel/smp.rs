//! Bringing up the other VPs and waiting for them.
//!
//! VP 0 starts every other VP with `VpStart` on a 64 KiB stack from its own node's memory.
//! Each VP sets up its interrupts (the first VP of each node also starts the node's tick),
//! runs its share of the workload, counts itself done and sends VP 0 an IPI. VP 0 runs its
//! share too, then waits on the done counter with `SpinWait` (the IPI cuts the wait
//! short), prints the result and ends the virtual server.

use core::sync::atomic::{AtomicU64, Ordering};

use vima::interrupt::VECTOR_IPI;
use vima::layout::PAGE_SIZE;

use crate::machine::{fail, kernel, Kernel};
use crate::sync::PageAligned;
use crate::{alloc, interrupts, spinlock, vima_calls, workloads};

/// Stack of every VP but VP 0.
pub const VP_STACK_BYTES: u64 = 64 * 1024;

/// VPs other than VP 0 that have finished their share.
static DONE: PageAligned<AtomicU64> = PageAligned(AtomicU64::new(0));

core::arch::global_asm!(
    ".pushsection .text.vp_entry,\"ax\",@progbits",
    ".global vp_entry",
    "vp_entry:",
    "and rsp, -16",
    "xor ebp, ebp",
    "call {main}",
    "ud2",
    ".popsection",
    main = sym vp_main,
);

extern "C" {
    /// Where started VPs begin (above); only its address is used.
    fn vp_entry();
}

/// Why a VP could not be set up or started.
#[derive(Debug, thiserror::Error)]
pub enum SmpError {
    /// A ViMA call failed.
    #[error("{0}")]
    Call(#[from] crate::vima_calls::CallError),
    /// No memory for a VP's stack.
    #[error("{0}")]
    Alloc(#[from] guest::page_alloc::PageAllocError),
    /// A VP number that does not fit.
    #[error("VP {0} cannot be addressed")]
    TooManyVps(usize),
}

/// Per-VP setup: the virtual IDT, the node tick on the node's first VP, interrupts on.
pub fn init_this_vp(vp: usize) -> Result<(), SmpError> {
    interrupts::install()?;
    if kernel().is_first_on_node(vp) {
        interrupts::start_node_tick()?;
    }
    interrupts::enable()?;
    Ok(())
}

/// Starts VPs 1.. at [`vp_entry`].
pub fn start_others(kernel: &Kernel) -> Result<(), SmpError> {
    for vp in 1..kernel.vp_count() {
        let stack = alloc::alloc_pages(VP_STACK_BYTES / PAGE_SIZE, kernel.node_of(vp))?;
        let vp_id = u32::try_from(vp).map_err(|_| SmpError::TooManyVps(vp))?;
        vima_calls::vp_start(
            vp_id,
            vp_entry as *const () as u64,
            stack + VP_STACK_BYTES,
            0,
        )?;
    }
    Ok(())
}

/// VP 0 after boot: its share, the wait, the result.
pub fn boot_vp_main() -> ! {
    let kernel = kernel();
    if let Err(err) = workloads::run(kernel, 0) {
        fail(err.exit_status(), format_args!("{err}"));
    }
    let others = kernel.vp_count() as u64 - 1;
    let mut done = DONE.load(Ordering::Acquire);
    while done < others {
        done = spinlock::wait_while_equal(&DONE, done);
    }
    match workloads::finish(kernel) {
        Ok(()) => {
            crate::console::flush();
            vima_calls::vs_exit(0)
        }
        Err(err) => fail(err.exit_status(), format_args!("{err}")),
    }
}

extern "sysv64" fn vp_main(_arg: u64, vp: u64) -> ! {
    let kernel = kernel();
    let vp = match usize::try_from(vp) {
        Ok(vp) if vp < kernel.vp_count() => vp,
        _ => fail(1, format_args!("started as unknown VP {vp}")),
    };
    if let Err(err) = init_this_vp(vp) {
        fail(1, format_args!("VP {vp}: {err}"));
    }
    if let Err(err) = workloads::run(kernel, vp) {
        fail(err.exit_status(), format_args!("VP {vp}: {err}"));
    }
    crate::console::flush();
    // A stopped VP takes no interrupts: stop its tick rather than leave it armed.
    if kernel.is_first_on_node(vp) {
        if let Err(err) = interrupts::stop_node_tick() {
            fail(1, format_args!("VP {vp}: {err}"));
        }
    }
    DONE.fetch_add(1, Ordering::Release);
    if let Err(err) = vima_calls::ipi_send(0, VECTOR_IPI) {
        fail(1, format_args!("VP {vp}: {err}"));
    }
    vima_calls::vp_stop()
}
