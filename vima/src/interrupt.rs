//! Interrupts into the guest: vectors, the virtual IDT, the frame the VMM pushes, and the
//! per-VP shared block that masks interrupts without an exit.
//!
//! Delivery: when an interrupt is pending for a VP and its [`VpShared::mask`] is 0, the VMM
//! takes the VP out of KVM_RUN, pushes an [`InterruptFrame`] below the interrupted stack
//! (past a 128-byte red zone, 16-byte aligned), sets `mask = 1`, and enters the handler the
//! guest registered for the vector with `rsp = rdi = frame address` and `rsi = vector`.
//! The handler saves the other caller-saved registers itself and ends with the
//! `IntrReturn` call on the frame, which restores `rip, rsp, rflags, rax, rdi, rsi, rdx`
//! and the mask as they were.
//!
//! Masking: the guest sets `mask` to a nonzero value to hold interrupts back; the VMM then
//! only sets bits in `pending`. After clearing `mask`, the guest reads `pending` and, if it
//! is not 0, makes any call (`IntrPoll` is the cheap one): pending interrupts are delivered
//! on the return of every call.

use bytemuck::{Pod, Zeroable};

/// Number of vectors in the virtual IDT.
pub const VECTOR_COUNT: usize = 64;
/// Vectors below this are reserved for exceptions; the guest cannot send or arm them.
pub const FIRST_EXTERNAL_VECTOR: u8 = 32;
/// The conventional timer vector (any external vector may be armed as a timer).
pub const VECTOR_TIMER: u8 = 32;
/// The conventional IPI vector.
pub const VECTOR_IPI: u8 = 33;
/// Configuration messages (reconfiguration, shut-down), as the paper's message interrupt.
pub const VECTOR_CONFIG: u8 = 34;

/// True when the guest may send or arm `vector`.
pub const fn is_external_vector(vector: u64) -> bool {
    vector >= FIRST_EXTERNAL_VECTOR as u64 && vector < VECTOR_COUNT as u64
}

/// What the VMM pushes on the guest stack when it delivers an interrupt.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct InterruptFrame {
    /// Interrupted instruction pointer.
    pub rip: u64,
    /// Interrupted stack pointer.
    pub rsp: u64,
    /// Interrupted flags.
    pub rflags: u64,
    /// Interrupted `rax`.
    pub rax: u64,
    /// Interrupted `rdi`.
    pub rdi: u64,
    /// Interrupted `rsi`.
    pub rsi: u64,
    /// Interrupted `rdx`.
    pub rdx: u64,
    /// The vector being delivered.
    pub vector: u64,
    /// The value of [`VpShared::mask`] before delivery; `IntrReturn` restores it.
    pub mask_before: u64,
    /// Keeps the frame a multiple of 16 bytes.
    pub reserved: u64,
}

/// Bytes below the interrupted `rsp` that delivery leaves alone (the System V red zone).
pub const RED_ZONE_BYTES: u64 = 128;

/// Per-VP block shared between guest and VMM, at [`crate::layout::vp_shared_addr`] in the
/// per-node region (so reading it never crosses the network).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VpShared {
    /// Nonzero: interrupts are held back (written by the guest, read by the VMM).
    pub mask: u32,
    /// This VP's id (written by the VMM before the VP starts). At VP entry the VMM points
    /// the `gs` segment base at this block, so `mov eax, gs:[4]` reads the VP id with no
    /// exit.
    pub vp_id: u32,
    /// Bit `v` set: vector `v` is pending (set by the VMM, cleared by the VMM on delivery).
    pub pending: u64,
    /// Interrupts delivered to this VP so far (written by the VMM, for the guest's stats).
    pub delivered: u64,
    /// The guest kernel's own per-VP words (its syscall entry keeps the user stack pointer
    /// and its kernel stack here, reached through `gs` with no exit). The VMM zeroes them
    /// when the VP starts and never reads them.
    pub guest: [u64; 5],
}

const _: () = assert!(core::mem::size_of::<VpShared>() as u64 == crate::layout::VP_SHARED_BYTES);
const _: () = assert!((core::mem::size_of::<InterruptFrame>() as u64).is_multiple_of(16));

/// Byte offset of [`VpShared::mask`] in the block.
pub const VP_SHARED_MASK_OFFSET: u64 = 0;
/// Byte offset of [`VpShared::vp_id`] in the block.
pub const VP_SHARED_VP_ID_OFFSET: u64 = 4;
/// Byte offset of [`VpShared::pending`] in the block.
pub const VP_SHARED_PENDING_OFFSET: u64 = 8;

/// What the VMM pushes when it delivers an exception (vectors 0..31) through the
/// virtual IDT: the interrupt frame of the faulting instruction, then what the CPU
/// reported. Entry state as for interrupts (`rdi` = this frame, `rsi` = the vector);
/// exceptions are delivered whatever the mask, and `IntrReturn` resumes the faulting
/// instruction (or whatever the handler put in the frame).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ExceptionFrame {
    /// The faulting state.
    pub frame: InterruptFrame,
    /// The CPU's error code (0 for vectors without one).
    pub error_code: u64,
    /// The faulting address of a page fault (CR2); 0 otherwise.
    pub fault_addr: u64,
}

const _: () = assert!((core::mem::size_of::<ExceptionFrame>() as u64).is_multiple_of(16));

/// Divide error.
pub const EXC_DIVIDE: u8 = 0;
/// Breakpoint (`int3`).
pub const EXC_BREAKPOINT: u8 = 3;
/// Invalid opcode.
pub const EXC_INVALID_OPCODE: u8 = 6;
/// General protection.
pub const EXC_GENERAL_PROTECTION: u8 = 13;
/// Page fault.
pub const EXC_PAGE_FAULT: u8 = 14;

/// True for the exception vectors whose frame the CPU starts with an error code.
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Where the VMM places an [`ExceptionFrame`] for a faulting stack pointer `rsp`.
pub const fn exception_frame_address(rsp: u64) -> u64 {
    (rsp.wrapping_sub(RED_ZONE_BYTES) & !15)
        .wrapping_sub(core::mem::size_of::<ExceptionFrame>() as u64)
}

/// Where the VMM places the frame for an interrupted stack pointer `rsp`.
pub const fn frame_address(rsp: u64) -> u64 {
    (rsp.wrapping_sub(RED_ZONE_BYTES) & !15)
        .wrapping_sub(core::mem::size_of::<InterruptFrame>() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_address_is_aligned_and_below_red_zone() {
        for rsp in [0x20_0000u64, 0x1f_fff8, 0x1f_fff3, 0x30_0001] {
            let frame = frame_address(rsp);
            assert_eq!(frame % 16, 0);
            assert!(frame + core::mem::size_of::<InterruptFrame>() as u64 <= rsp - RED_ZONE_BYTES);
            assert!(rsp - frame < 128 + 16 + 80 + 1);
        }
    }

    #[test]
    fn external_vectors() {
        assert!(!is_external_vector(31));
        assert!(is_external_vector(32));
        assert!(is_external_vector(63));
        assert!(!is_external_vector(64));
        assert_eq!(
            core::mem::offset_of!(VpShared, pending) as u64,
            VP_SHARED_PENDING_OFFSET
        );
    }
}
