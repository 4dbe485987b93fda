//! What the VMM puts in place before the first instruction of the guest: the guest image
//! in logical memory ([`elf`]) and the VMM-private region with the page tables, GDT and
//! TSS ([`private`]), plus the register state each VP starts with ([`cpu`]).
//!
//! The private region is a second KVM memory slot outside logical memory. Its pages are
//! mapped supervisor-only, so the guest (always at CPL3) can neither read nor change its
//! page tables: isolation as the paper demands (4.2: only the CVMM creates page tables).

pub mod cpu;
pub mod elf;
pub mod invocation;
pub mod private;
pub mod program;
pub mod program_layout;
