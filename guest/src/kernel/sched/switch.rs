//! The context switch and the first run of a new thread.
//!
//! [`switch_to`] saves the callee-saved registers on the current stack, stores `rsp` in
//! the previous thread, loads the next thread's `rsp` and pops its registers: every
//! other register is the caller's to lose (the SysV ABI), and the program's state is
//! already saved by whatever brought the thread into the kernel (the system call entry,
//! or an interrupt's entry stub; both also save the SSE state). It returns, in the next
//! thread, the thread that switched to it, which the caller finishes
//! ([`super::finish_switch`]).
//!
//! A new thread's kernel stack is made to look as if the thread had entered the kernel
//! by a system call and then switched away: at the top a [`SyscallFrame`] with the
//! program registers it starts with, below it the saved SSE state, below that a switch
//! frame whose return address is `thread_first_run`. That stub finishes the switch and
//! leaves through the system call exit path, so the thread's first instruction is the
//! program's.

use core::arch::global_asm;

use crate::linux::entry::SyscallFrame;

/// Bytes of the `fxsave64` area.
pub const FX_BYTES: usize = 512;

global_asm!(
    ".pushsection .text.switch_to,\"ax\",@progbits",
    ".global sched_switch_to",
    "sched_switch_to:",
    // rdi = where to store this thread's rsp, rsi = the next thread's rsp,
    // rdx = this thread, handed to the next one in rax.
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rdi], rsp",
    "mov rsp, rsi",
    "mov rax, rdx",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    "",
    ".global sched_thread_first_run",
    "sched_thread_first_run:",
    // rsp = the saved SSE state (64-byte aligned), rbx = the SyscallFrame, rax = the
    // thread that switched here.
    "mov rdi, rax",
    "call {first_run}",
    "jmp syscall_exit",
    ".popsection",
    first_run = sym super::first_run,
);

extern "C" {
    fn sched_switch_to(save_rsp: *mut u64, next_rsp: u64, prev: u64) -> u64;
    fn sched_thread_first_run();
}

/// Switches to the thread whose saved stack pointer is `next_rsp`, storing this one's
/// in `save_rsp`; returns (when this thread runs again) the thread that switched back.
///
/// # Safety
/// `next_rsp` must be a stack pointer saved by this function or made by
/// [`build_initial_stack`], of a thread that is not running anywhere; `save_rsp` must
/// point at the current thread's slot, which nothing else writes until it is resumed.
pub unsafe fn switch_to(save_rsp: *mut u64, next_rsp: u64, prev: u64) -> u64 {
    // SAFETY: as the caller promised; the asm follows the SysV ABI for the registers it
    // does not save.
    unsafe { sched_switch_to(save_rsp, next_rsp, prev) }
}

/// An SSE state for a new program: x87 control word 0x37f, MXCSR 0x1f80 (Linux's
/// defaults), nothing else.
pub fn default_fx_state() -> [u8; FX_BYTES] {
    let mut fx = [0u8; FX_BYTES];
    fx[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
    fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    // MXCSR_MASK: all bits the processor supports; 0 means the default mask.
    fx
}

/// Lays out a new thread's kernel stack `[.., top)` so that switching to it enters the
/// program with `frame`'s registers and `fx`'s SSE state; returns its saved `rsp`.
///
/// # Safety
/// `top` must be the 64-byte aligned top of a kernel stack of at least 4 KiB that
/// belongs to the new thread alone.
pub unsafe fn build_initial_stack(top: u64, frame: &SyscallFrame, fx: &[u8; FX_BYTES]) -> u64 {
    let frame_len = core::mem::size_of::<SyscallFrame>();
    let frame_bytes = frame_len as u64;
    // Where the system call entry would have put the frame and the SSE state.
    let frame_at = top - frame_bytes;
    let fx_at = (frame_at & !63) - FX_BYTES as u64;
    let first_run = sched_thread_first_run as *const () as u64;
    // r15, r14, r13, r12, rbx (= the frame, for the exit path), rbp, return address.
    let switch_frame = [0, 0, 0, 0, frame_at, 0, first_run];
    let switch_at = fx_at - 8 * switch_frame.len() as u64;
    // SAFETY: every address written lies in [switch_at, top), inside the new thread's
    // own stack (the caller's promise), and nothing else refers to it yet.
    unsafe {
        core::ptr::copy_nonoverlapping(
            core::ptr::from_ref(frame).cast::<u8>(),
            frame_at as *mut u8,
            frame_len,
        );
        core::ptr::copy_nonoverlapping(fx.as_ptr(), fx_at as *mut u8, FX_BYTES);
        core::ptr::copy_nonoverlapping(
            switch_frame.as_ptr(),
            switch_at as *mut u64,
            switch_frame.len(),
        );
    }
    switch_at
}
