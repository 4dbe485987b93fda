//! The state of a VP that only its own thread touches: what the guest registered with
//! ViMA calls (its virtual IDT, its system call entry). Calls change it
//! ([`super::calls`]); interrupt delivery reads it ([`super::interrupts`]).

use vima::interrupt::VECTOR_COUNT;

/// The VP-thread-local state calls may change.
#[derive(Debug)]
pub struct VpLocal {
    /// The registered virtual IDT (0 = no handler).
    pub idt: [u64; VECTOR_COUNT],
    /// True once `IdtRegister` was called.
    pub idt_registered: bool,
    /// A `SyscallEntrySet` the VP thread has still to write to the vCPU's MSRs.
    pub syscall_entry: Option<u64>,
}

impl Default for VpLocal {
    fn default() -> Self {
        VpLocal {
            idt: [0; VECTOR_COUNT],
            idt_registered: false,
            syscall_entry: None,
        }
    }
}
