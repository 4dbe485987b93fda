//! Whole-cluster integration tests of cvmm: they start real `cvmm` processes and check
//! what the guest prints against values computed here. The tests live in `tests/tests/`.
#![forbid(unsafe_code)]
