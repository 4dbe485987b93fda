//! cvmm host VMM.
