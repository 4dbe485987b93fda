//! The pure logic of the cvmm guest kernel: command line parsing, the page allocator's
//! bookkeeping, console line buffering, work splitting, and the workloads' arithmetic
//! (matrix multiply, sort, litmus outcome classification).
//!
//! Why a library next to the kernel binary: the binary (`src/kernel/`) is freestanding and
//! runs only inside a cvmm virtual server, so nothing in it can be unit tested on the host.
//! Everything here is plain safe Rust that is `no_std` in the kernel and has `std` under
//! `cfg(test)`, so `cargo test --manifest-path guest/Cargo.toml` checks it against values
//! computed independently. The kernel adds the parts that touch the machine (ViMA calls,
//! interrupts, shared memory).
//!
//! ```
//! use guest::cmdline::{parse, Workload};
//! assert_eq!(parse(b"matmul 64"), Ok(Workload::Matmul { n: 64 }));
//! assert_eq!(guest::matmul::reference_checksum(4), guest::matmul::reference_checksum(4));
//! ```
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cmdline;
pub mod line;
pub mod linux_abi;
pub mod litmus;
pub mod matmul;
pub mod page_alloc;
pub mod placement;
pub mod probe;
pub mod sort;
pub mod split;
