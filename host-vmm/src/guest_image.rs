//! The guest kernel ELF, embedded at build time.
//!
//! `build.rs` builds the `guest/` workspace (a freestanding `no_std` binary linked at
//! [`vima::layout::GUEST_IMAGE_BASE`]) and leaves it in `OUT_DIR`, so `cargo build` at the
//! root produces a `cvmm` that carries its default guest with no extra step, and the VMM
//! never depends on a file next to the binary at run time.

/// The bytes of the guest kernel's ELF file (a static `ET_EXEC` for x86-64 whose
/// `PT_LOAD` segments start at [`vima::layout::GUEST_IMAGE_BASE`]).
pub static GUEST_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cvmm-guest"));
