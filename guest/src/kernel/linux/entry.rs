//! The way into the kernel from the program (`syscall`) and out to it.
//!
//! On a PVM host the guest runs at CPL3 and so does the program: `syscall` jumps to MSR
//! LSTAR (set per VP with `SyscallEntrySet`) without a privilege change, with `rsp`
//! untouched, `rcx` = the return address and `r11` = the flags, and the hypervisor's
//! delivery of that jump costs one trap (docs/linux-abi.md has the measurements).
//!
//! Two ways in, one path through:
//! - [`syscall_entry`], the trap: the first time a `syscall` instruction runs, the
//!   hypervisor delivers it to MSR LSTAR. The kernel then rewrites that instruction into
//!   `call *%rax` (same two bytes' room: `ff d0`), as lazypoline does.
//! - [`syscall_call_entry`], the call: a rewritten site calls the address equal to the
//!   system call number, in the trampoline page the VMM maps read/execute at virtual 0
//!   (`vima::layout::syscall_trampoline_page`); its `nop` sled ends in
//!   `jmp qword ptr gs:[40]`, which lands here with the return address on the program's
//!   stack and no trap at all. The call's push writes the 8 bytes below the program's
//!   `rsp`: the one thing this path costs a leaf function that keeps data in its red
//!   zone across an inline `syscall` (zpoline has the same limit; docs/linux-abi.md).
//!
//! Both keep the program's `rsp` in this VP's `VpShared.guest[0]` (reached
//! through `gs`, which always points at the block), switches to the VP's kernel stack in
//! `VpShared.guest[1]`, saves every general register in a [`SyscallFrame`] and the SSE
//! state with `fxsave64` (Linux preserves all of them but `rax`, `rcx` and `r11`), calls
//! [`super::syscalls::dispatch`], and returns the way Linux's `sysret` would: `rcx` =
//! return address, `r11` = flags. The flags are restored with `popfq` on the kernel
//! stack and the jump back is `jmp rcx`, so nothing is ever written below the program's
//! `rsp` (its red zone stays intact).

use core::arch::global_asm;

use vima::interrupt::VP_SHARED_PENDING_OFFSET;

/// `VpShared` byte offset of the saved program `rsp` (`guest[0]`).
pub const USER_RSP_OFFSET: u64 = 24;
/// `VpShared` byte offset of this VP's kernel stack top (`guest[1]`).
pub const KERNEL_RSP_OFFSET: u64 = 32;
/// `VpShared` byte offset of where the trampoline jumps (`guest[2]`).
pub const CALL_TARGET_OFFSET: u64 = vima::layout::VP_SHARED_SYSCALL_TARGET_OFFSET;
const _: () = assert!(KERNEL_RSP_OFFSET + 8 == CALL_TARGET_OFFSET);
const _: () = assert!(VP_SHARED_PENDING_OFFSET + 16 == USER_RSP_OFFSET);

/// The program's registers at a system call, as [`syscall_entry`] pushed them.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SyscallFrame {
    /// System call number in, result out.
    pub rax: u64,
    /// Argument 0.
    pub rdi: u64,
    /// Argument 1.
    pub rsi: u64,
    /// Argument 2.
    pub rdx: u64,
    /// Argument 3.
    pub r10: u64,
    /// Argument 4.
    pub r8: u64,
    /// Argument 5.
    pub r9: u64,
    /// Callee-saved registers (a new thread or a signal frame needs them).
    pub rbx: u64,
    /// See `rbx`.
    pub rbp: u64,
    /// See `rbx`.
    pub r12: u64,
    /// See `rbx`.
    pub r13: u64,
    /// See `rbx`.
    pub r14: u64,
    /// See `rbx`.
    pub r15: u64,
    /// 1 when the call came through the trap ([`syscall_entry`]), 0 through the
    /// trampoline.
    pub trapped: u64,
    /// Return address.
    pub rcx: u64,
    /// Flags.
    pub r11: u64,
    /// The program's stack pointer.
    pub rsp: u64,
}

impl SyscallFrame {
    /// The six arguments.
    pub fn args(&self) -> [u64; 6] {
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9]
    }
}

global_asm!(
    ".pushsection .text.syscall_entry,\"ax\",@progbits",
    ".global syscall_entry",
    "syscall_entry:",
    "mov gs:[{user_rsp}], rsp",
    "mov rsp, gs:[{kernel_rsp}]",
    "push qword ptr gs:[{user_rsp}]",
    "push r11",
    "push rcx",
    "push 1",
    "jmp syscall_common",
    "",
    ".global syscall_call_entry",
    "syscall_call_entry:",
    // Nothing here may change the flags before pushfq: mov and lea do not.
    "mov gs:[{user_rsp}], rsp",
    "mov rsp, gs:[{kernel_rsp}]",
    "lea rsp, [rsp - 8]",
    "pushfq",
    // rcx is the program's to lose (Linux returns its address there): fetch the return
    // address the call pushed, and the program's rsp from before the call.
    "mov rcx, gs:[{user_rsp}]",
    "mov rcx, [rcx]",
    "push rcx",
    "mov rcx, gs:[{user_rsp}]",
    "lea rcx, [rcx + 8]",
    "mov [rsp + 16], rcx",
    "push 0",
    "",
    "syscall_common:",
    "push r15",
    "push r14",
    "push r13",
    "push r12",
    "push rbp",
    "push rbx",
    "push r9",
    "push r8",
    "push r10",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rax",
    // rbx (callee-saved) keeps the frame across the call.
    "mov rbx, rsp",
    "and rsp, -64",
    "sub rsp, 512",
    "fxsave64 [rsp]",
    "mov rdi, rbx",
    "cld",
    "call {dispatch}",
    // A new thread's first run enters here too (crate::sched::switch), with rsp at its
    // saved SSE state and rbx at its frame.
    ".global syscall_exit",
    "syscall_exit:",
    "fxrstor64 [rsp]",
    "mov rsp, rbx",
    "pop rax",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop r10",
    "pop r8",
    "pop r9",
    "pop rbx",
    "pop rbp",
    "pop r12",
    "pop r13",
    "pop r14",
    "pop r15",
    "lea rsp, [rsp + 8]",
    "pop rcx",
    "pop r11",
    // The flags through the kernel stack, then the program's own stack and address.
    "push r11",
    "popfq",
    "pop rsp",
    "jmp rcx",
    ".popsection",
    user_rsp = const USER_RSP_OFFSET,
    kernel_rsp = const KERNEL_RSP_OFFSET,
    dispatch = sym super::syscalls::dispatch,
);

global_asm!(
    ".pushsection .text.linux_return_to_user,\"ax\",@progbits",
    ".global linux_return_to_user",
    "linux_return_to_user:",
    // rdi = the registers in pop order (see `FullReturn`), rsi = the SSE state. `iretq`
    // at CPL3 returns to CPL3, loading rip, rflags and rsp at once (docs/platform.md).
    "fxrstor64 [rsi]",
    "mov rsp, rdi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rbp",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "pop rdi",
    "iretq",
    ".popsection",
);

/// Every register of the program, in the order [`return_to_user`] pops them, then the
/// `iretq` frame.
#[repr(C, align(16))]
#[derive(Debug, Default)]
pub struct FullReturn {
    /// r15, r14, r13, r12, r11, r10, r9, r8, rbp, rsi, rdx, rcx, rbx, rax, rdi.
    pub gprs: [u64; 15],
    /// rip, cs, rflags, rsp, ss.
    pub iret: [u64; 5],
}

/// The SSE state [`return_to_user`] loads (16-byte aligned for `fxrstor64`).
#[repr(C, align(16))]
#[derive(Debug)]
pub struct FxState(pub [u8; 512]);

/// Returns to the program with every register as `regs` says (rt_sigreturn, and a
/// signal handler entered from a system call), with no trap: `iretq` at CPL3.
pub fn return_to_user(regs: &guest::linux_abi::signal::UserRegs, fx: &FxState) -> ! {
    /// The flags a program may set: arithmetic, TF, DF, AC, ID.
    const USER_FLAGS: u64 = 0x0ed5 | 0x4_0000 | 0x20_0000;
    /// Always set.
    const FIXED_FLAGS: u64 = 0x202;
    let r = regs;
    let full = FullReturn {
        gprs: [
            r.r[7], r.r[6], r.r[5], r.r[4], r.r[3], r.r[2], r.r[1], r.r[0], r.rbp, r.rsi, r.rdx,
            r.rcx, r.rbx, r.rax, r.rdi,
        ],
        iret: [
            r.rip,
            u64::from(USER_CODE_SELECTOR),
            (r.rflags & USER_FLAGS) | FIXED_FLAGS,
            r.rsp,
            u64::from(USER_DATA_SELECTOR),
        ],
    };
    // SAFETY: `full` and `fx` live in this frame, which stays put: the stub moves rsp
    // into `full` and leaves through iretq without returning, and nothing of this
    // thread's kernel stack is needed again (the next entry starts at its top).
    unsafe { linux_return_to_user(&full, fx) }
}

/// The code and stack selectors the program runs with (the VMM's GDT).
const USER_CODE_SELECTOR: u16 = 0x2b;
/// See [`USER_CODE_SELECTOR`].
const USER_DATA_SELECTOR: u16 = 0x23;

extern "C" {
    fn linux_return_to_user(regs: *const FullReturn, fx: *const FxState) -> !;
    /// The `syscall` target (above); only its address is used.
    pub fn syscall_entry();
    /// The trampoline's target (above); only its address is used.
    pub fn syscall_call_entry();
}
