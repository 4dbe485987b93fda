//! The cvmm paravirtual guest kernel.
//!
//! A small kernel for the ViMA (the `vima` crate is its whole view of the machine): it
//! boots on VP 0, reads the virtual server configuration, sets up a NUMA-aware page
//! allocator, a virtual IDT with a per-node tick and IPIs, starts every other VP, runs the
//! workload the command line names on all VPs, prints the result and ends the virtual
//! server.
//!
//! Design rules:
//! - Everything runs at CPL3 (on PVM, CPL0 is emulated and slow): no privileged
//!   instruction anywhere. The machine is reached only through ViMA calls (`out 0xCA`,
//!   [`vima_calls`]).
//! - Errors are values: any failure prints `error: ...` and ends the virtual server with
//!   status 1 ([`boot::fail`]), 2 for an unknown workload. The CPU's exceptions reach the
//!   kernel only while a Linux program runs ([`faults`]); otherwise a fault stops the VP.
//! - Interrupt handlers only bump counters: they never take a lock or print, so nothing
//!   an interrupted VP holds can deadlock them.
//! - Logical memory is shared page by page across nodes: data that VPs on different
//!   nodes write often sits on pages of its own ([`sync::PageAligned`]), and per-VP data
//!   is allocated on the VP's node.
//! - Pure logic (parsing, arithmetic, allocator bookkeeping) lives in the `guest` library
//!   and is unit tested on the host.
#![no_std]
#![no_main]

#[macro_use]
mod console;
mod alloc;
mod barrier;
mod boot;
mod clock;
mod faults;
mod interrupts;
mod linux;
mod machine;
mod mem;
mod sched;
mod smp;
mod spinlock;
mod sync;
mod vima_calls;
mod workloads;

/// The unwinding personality routine the precompiled `core` refers to (its unwind tables
/// name it, even though this kernel is built with `panic = "abort"`). Nothing unwinds here,
/// so it is never called; if it were, the VP would stop on `ud2`.
#[no_mangle]
extern "C" fn rust_eh_personality() {
    // SAFETY: `ud2` raises an invalid-opcode fault, which stops the VP; it has no other
    // effect.
    unsafe { core::arch::asm!("ud2", options(noreturn, nostack)) }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    machine::fail(1, format_args!("panic: {info}"))
}
