//! Exceptions: the VMM delivers the CPU's exceptions of a Linux program (vectors 0..31,
//! with the error code and the page fault address) through the virtual IDT, to the
//! same entry stub as interrupts. A fault in the kernel's own code is a kernel bug and
//! ends the virtual server; one in the program is the personality's to turn into a
//! signal ([`crate::linux::fault`]). Built-in workloads take no exceptions: without a
//! program the VMM installs no exception gates, and a fault stops the VP as before.

use vima::interrupt::ExceptionFrame;

/// `cvmm`'s status for a fault in the kernel itself (EX_SOFTWARE, as the VMM's).
const KERNEL_FAULT_STATUS: u64 = 70;

/// Handles exception `vector` described by `frame` (on the faulting stack), with the
/// other registers and the SSE state the entry stub saved; what the handler leaves in
/// `frame` and `saved` is what the interrupted code gets back.
pub fn exception(
    vector: u8,
    frame: &mut ExceptionFrame,
    saved: &mut crate::interrupts::SavedRegs,
    fx: &[u8; 512],
) {
    let rip = frame.frame.rip;
    let kernel_text = crate::alloc::image_start()..crate::alloc::image_end();
    if kernel_text.contains(&rip) {
        crate::machine::fail(
            KERNEL_FAULT_STATUS,
            format_args!(
                "kernel fault: exception {vector} (error code {:#x}) at rip {rip:#x}, address {:#x}",
                frame.error_code, frame.fault_addr
            ),
        );
    }
    crate::linux::fault(vector, frame, saved, fx);
}
