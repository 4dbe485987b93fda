//! The cvmm host VMM.
pub mod memory;
