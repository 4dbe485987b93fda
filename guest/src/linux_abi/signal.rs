//! Signal frames as Linux x86-64 lays them out (arch/x86/kernel/signal.c): what a
//! handler finds on its stack (the return address into the program's restorer, the
//! `ucontext` with the interrupted registers, the `siginfo`, the saved SSE state), and
//! how `rt_sigreturn` reads it back. Pure layout, so it is tested on the host against
//! the offsets glibc's `<sys/ucontext.h>` uses.

/// `struct sigaction` of the kernel (handler, flags, restorer, mask): 32 bytes.
pub const SIGACTION_BYTES: usize = 32;
/// The kernel's `struct ucontext` on x86-64 (8-byte signal mask).
pub const UCONTEXT_BYTES: usize = 304;
/// `siginfo_t`.
pub const SIGINFO_BYTES: usize = 128;
/// The `fxsave` area a frame carries (`fpstate` points at it; 64-byte aligned).
pub const FX_BYTES: u64 = 512;
/// Bytes below the interrupted `rsp` that a frame never touches (the red zone).
pub const RED_ZONE: u64 = 128;
/// Offset of `uc_mcontext` (the `sigcontext`) in the ucontext.
pub const MCONTEXT_OFFSET: usize = 40;
/// Offset of `uc_sigmask` in the ucontext.
pub const SIGMASK_OFFSET: usize = 296;
/// Offset of `uc_stack` in the ucontext.
const STACK_OFFSET: usize = 16;

/// SIG_DFL.
pub const SIG_DFL: u64 = 0;
/// SIG_IGN.
pub const SIG_IGN: u64 = 1;
/// SA_ONSTACK: run the handler on the alternate stack.
pub const SA_ONSTACK: u64 = 0x0800_0000;
/// Restart a system call the signal interrupted (after the handler).
pub const SA_RESTART: u64 = 0x1000_0000;
/// SA_RESTORER: `restorer` is the return address (glibc and musl always set it).
pub const SA_RESTORER: u64 = 0x0400_0000;
/// SA_NODEFER: do not block the signal during its handler.
pub const SA_NODEFER: u64 = 0x4000_0000;
/// SA_RESETHAND: back to SIG_DFL once delivered.
pub const SA_RESETHAND: u64 = 0x8000_0000;
/// SA_SIGINFO (three-argument handler; the frame is the same either way).
pub const SA_SIGINFO: u64 = 4;

/// A `struct sigaction` of the kernel ABI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigAction {
    /// Handler address, SIG_DFL or SIG_IGN.
    pub handler: u64,
    /// SA_* flags.
    pub flags: u64,
    /// Where the handler returns to (calls `rt_sigreturn`).
    pub restorer: u64,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

fn word(bytes: &[u8], index: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[index * 8..index * 8 + 8]);
    u64::from_le_bytes(w)
}

fn put(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

impl SigAction {
    /// Reads the kernel layout.
    pub fn decode(bytes: &[u8; SIGACTION_BYTES]) -> Self {
        Self {
            handler: word(bytes, 0),
            flags: word(bytes, 1),
            restorer: word(bytes, 2),
            mask: word(bytes, 3),
        }
    }

    /// Writes the kernel layout.
    pub fn encode(&self) -> [u8; SIGACTION_BYTES] {
        let mut bytes = [0u8; SIGACTION_BYTES];
        for (i, v) in [self.handler, self.flags, self.restorer, self.mask]
            .into_iter()
            .enumerate()
        {
            put(&mut bytes, i * 8, v);
        }
        bytes
    }
}

/// The program's general registers, flags and instruction pointer at an interruption.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    /// r8..r15.
    pub r: [u64; 8],
    /// rdi.
    pub rdi: u64,
    /// rsi.
    pub rsi: u64,
    /// rbp.
    pub rbp: u64,
    /// rbx.
    pub rbx: u64,
    /// rdx.
    pub rdx: u64,
    /// rax.
    pub rax: u64,
    /// rcx.
    pub rcx: u64,
    /// rsp.
    pub rsp: u64,
    /// rip.
    pub rip: u64,
    /// rflags.
    pub rflags: u64,
}

/// What the CPU said about a fault, for the sigcontext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultInfo {
    /// Error code.
    pub err: u64,
    /// Exception vector.
    pub trapno: u64,
    /// Faulting address (page faults).
    pub cr2: u64,
}

/// The alternate signal stack (`stack_t`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AltStack {
    /// Base.
    pub sp: u64,
    /// SS_ONSTACK / SS_DISABLE.
    pub flags: u64,
    /// Bytes.
    pub size: u64,
}

/// SS_ONSTACK.
pub const SS_ONSTACK: u64 = 1;
/// SS_DISABLE.
pub const SS_DISABLE: u64 = 2;

/// Where each part of a frame goes, for a handler entered with `rsp = frame`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLayout {
    /// `rsp` at the handler's first instruction: the return address (the restorer).
    pub frame: u64,
    /// The ucontext (`rdx` of the handler), just above the return address.
    pub ucontext: u64,
    /// The siginfo (`rsi`), after the ucontext.
    pub siginfo: u64,
    /// The saved SSE state.
    pub fx: u64,
}

/// Lays a frame out below `sp` (the interrupted stack pointer, or the top of the
/// alternate stack): below the red zone, SSE state 64-byte aligned, and `rsp` of the
/// handler 8 below a multiple of 16, as after a `call`.
pub fn layout(sp: u64, on_alt_stack: bool) -> FrameLayout {
    let below = if on_alt_stack { sp } else { sp - RED_ZONE };
    let fx = (below - FX_BYTES) & !63;
    let body = (UCONTEXT_BYTES + SIGINFO_BYTES) as u64;
    let frame = ((fx - body - 8) & !15) - 8;
    FrameLayout {
        frame,
        ucontext: frame + 8,
        siginfo: frame + 8 + UCONTEXT_BYTES as u64,
        fx,
    }
}

/// The ucontext of a frame: `regs` and `fault`, the signal mask in force before the
/// handler, the alternate stack, and where the SSE state was saved.
pub fn encode_ucontext(
    regs: &UserRegs,
    fault: &FaultInfo,
    blocked: u64,
    alt: &AltStack,
    fx: u64,
    cs_ss: (u16, u16),
) -> [u8; UCONTEXT_BYTES] {
    let mut uc = [0u8; UCONTEXT_BYTES];
    put(&mut uc, STACK_OFFSET, alt.sp);
    put(&mut uc, STACK_OFFSET + 8, alt.flags);
    put(&mut uc, STACK_OFFSET + 16, alt.size);
    let m = MCONTEXT_OFFSET;
    let gregs = [
        regs.r[0],
        regs.r[1],
        regs.r[2],
        regs.r[3],
        regs.r[4],
        regs.r[5],
        regs.r[6],
        regs.r[7],
        regs.rdi,
        regs.rsi,
        regs.rbp,
        regs.rbx,
        regs.rdx,
        regs.rax,
        regs.rcx,
        regs.rsp,
        regs.rip,
        regs.rflags,
    ];
    for (i, v) in gregs.into_iter().enumerate() {
        put(&mut uc, m + i * 8, v);
    }
    // cs, gs, fs, ss as four u16s (REG_CSGSFS).
    let csgsfs = u64::from(cs_ss.0) | (u64::from(cs_ss.1) << 48);
    put(&mut uc, m + 18 * 8, csgsfs);
    put(&mut uc, m + 19 * 8, fault.err);
    put(&mut uc, m + 20 * 8, fault.trapno);
    put(&mut uc, m + 21 * 8, blocked);
    put(&mut uc, m + 22 * 8, fault.cr2);
    put(&mut uc, m + 23 * 8, fx);
    put(&mut uc, SIGMASK_OFFSET, blocked);
    uc
}

/// What `rt_sigreturn` takes back from a ucontext: the registers, the saved SSE state's
/// address (0: none) and the signal mask.
pub fn decode_ucontext(uc: &[u8; UCONTEXT_BYTES]) -> (UserRegs, u64, u64) {
    let m = |i: usize| word(&uc[MCONTEXT_OFFSET..], i);
    let regs = UserRegs {
        r: [m(0), m(1), m(2), m(3), m(4), m(5), m(6), m(7)],
        rdi: m(8),
        rsi: m(9),
        rbp: m(10),
        rbx: m(11),
        rdx: m(12),
        rax: m(13),
        rcx: m(14),
        rsp: m(15),
        rip: m(16),
        rflags: m(17),
    };
    (regs, m(23), word(&uc[SIGMASK_OFFSET..], 0))
}

/// A `siginfo_t` for a signal the kernel raised: number, code, and the address
/// (`si_addr`, for faults) or, for a signal sent by `kill`, the sender's pid and uid.
pub fn encode_siginfo(signo: u64, code: i32, addr_or_pid: u64) -> [u8; SIGINFO_BYTES] {
    let mut info = [0u8; SIGINFO_BYTES];
    info[0..4].copy_from_slice(&signo.to_le_bytes()[..4]);
    info[8..12].copy_from_slice(&code.to_le_bytes());
    put(&mut info, 16, addr_or_pid);
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_parts_are_aligned_and_below_the_red_zone() {
        for sp in [0x7000_0000u64, 0x7000_0008, 0x6fff_fff3] {
            let f = layout(sp, false);
            assert_eq!(f.fx % 64, 0);
            assert_eq!((f.frame + 8) % 16, 0, "rsp as after a call");
            assert!(f.fx + FX_BYTES <= sp - RED_ZONE);
            assert!(f.siginfo + SIGINFO_BYTES as u64 <= f.fx);
            assert_eq!(f.ucontext, f.frame + 8);
        }
        let alt = layout(0x1000_0000, true);
        assert!(alt.fx + FX_BYTES <= 0x1000_0000);
    }

    #[test]
    fn ucontext_offsets_are_glibcs() {
        let regs = UserRegs {
            r: [8, 9, 10, 11, 12, 13, 14, 15],
            rdi: 20,
            rsi: 21,
            rbp: 22,
            rbx: 23,
            rdx: 24,
            rax: 25,
            rcx: 26,
            rsp: 27,
            rip: 28,
            rflags: 29,
        };
        let fault = FaultInfo {
            err: 6,
            trapno: 14,
            cr2: 0xdead,
        };
        let alt = AltStack {
            sp: 0x5000,
            flags: SS_DISABLE,
            size: 0x2000,
        };
        let uc = encode_ucontext(&regs, &fault, 0x4000, &alt, 0x9000, (0x2b, 0x23));
        let at = |off: usize| u64::from_le_bytes(uc[off..off + 8].try_into().unwrap());
        // gregs[REG_*] of <sys/ucontext.h>: REG_R8 0, REG_RDI 8, REG_RSP 15, REG_RIP 16,
        // REG_EFL 17, REG_ERR 19, REG_TRAPNO 20, REG_CR2 22; then fpregs.
        let greg = |i: usize| at(MCONTEXT_OFFSET + i * 8);
        assert_eq!((greg(0), greg(7), greg(8)), (8, 15, 20));
        assert_eq!((greg(15), greg(16), greg(17)), (27, 28, 29));
        assert_eq!((greg(19), greg(20), greg(22)), (6, 14, 0xdead));
        assert_eq!(greg(23), 0x9000);
        assert_eq!((at(16), at(24), at(32)), (0x5000, SS_DISABLE, 0x2000));
        assert_eq!(at(SIGMASK_OFFSET), 0x4000);
        let (back, fx, mask) = decode_ucontext(&uc);
        assert_eq!((back, fx, mask), (regs, 0x9000, 0x4000));
    }

    #[test]
    fn sigaction_and_siginfo_round_trip() {
        let act = SigAction {
            handler: 0x401000,
            flags: SA_SIGINFO | SA_RESTORER,
            restorer: 0x402000,
            mask: 1 << 9,
        };
        assert_eq!(SigAction::decode(&act.encode()), act);
        let info = encode_siginfo(11, 1, 0x1234);
        assert_eq!(info[0], 11);
        assert_eq!(info[8], 1);
        assert_eq!(u64::from_le_bytes(info[16..24].try_into().unwrap()), 0x1234);
    }
}
