//! How a virtual server ends on a node, and the report of a guest fault.

use kvm_ioctls::VcpuFd;

/// How a virtual server ended (on this node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A VP called `VsExit(status)`.
    Exited(u64),
    /// Every VP stopped itself.
    AllStopped,
    /// A VP faulted; the server cannot go on.
    GuestFault(GuestFault),
    /// The VMM itself failed.
    VmmError(String),
}

impl Outcome {
    /// The exit status `cvmm` returns: the guest's for `VsExit`, 0 when all VPs stopped,
    /// [`GUEST_FAULT_EXIT`] for a guest fault, 1 for a VMM failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(status) => i32::from(u8::try_from(status & 0xff).expect("masked")),
            Outcome::AllStopped => 0,
            Outcome::GuestFault(_) => GUEST_FAULT_EXIT,
            Outcome::VmmError(_) => 1,
        }
    }
}

/// Exit status of `cvmm` when the guest faulted (EX_SOFTWARE).
pub const GUEST_FAULT_EXIT: i32 = 70;

/// A guest fault, with the registers of the VP that took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFault {
    /// The VP.
    pub vp: u32,
    /// Its node.
    pub node: u32,
    /// What happened.
    pub what: String,
    /// A register dump, one line per group.
    pub registers: String,
}

impl GuestFault {
    /// Reads the VP's registers for the report (best effort: a failing read is reported).
    pub fn capture(vp: u32, node: u32, what: String, vcpu: &VcpuFd) -> Self {
        let registers = match (vcpu.get_regs(), vcpu.get_sregs()) {
            (Ok(r), Ok(s)) => format!(
                "rip={:#018x} rsp={:#018x} rflags={:#x}\n\
                 rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n\
                 rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}\n\
                 r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}\n\
                 r13={:#018x} r14={:#018x} r15={:#018x}\n\
                 cs={:#x} ss={:#x} cr2={:#x} cr3={:#x} gs.base={:#x}",
                r.rip,
                r.rsp,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                r.rsi,
                r.rdi,
                r.rbp,
                r.r8,
                r.r9,
                r.r10,
                r.r11,
                r.r12,
                r.r13,
                r.r14,
                r.r15,
                s.cs.selector,
                s.ss.selector,
                s.cr2,
                s.cr3,
                s.gs.base
            ),
            (Err(e), _) | (_, Err(e)) => format!("(registers unavailable: {e})"),
        };
        GuestFault {
            vp,
            node,
            what,
            registers,
        }
    }
}

impl std::fmt::Display for GuestFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "guest fault on vp {} (node {}): {}",
            self.vp, self.node, self.what
        )?;
        write!(f, "{}", self.registers)
    }
}
