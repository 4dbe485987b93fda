//! The cvmm FPGA offload pipeline as Verilog RTL, simulated from Rust and checked against
//! the firmware, plus the latency model its cycle counts feed.
//!
//! Why it exists: racks with FPGA SmartNICs would run the coherence offload in hardware.
//! `rtl/` holds that pipeline for one node (parser, directory and node-state controller in
//! block RAM, invalidation fan-out with a per-page ack counter, DMA request issue, reply
//! builder, interrupt steering table; `docs/hdl.md` has the picture). It implements the
//! whole `nic_firmware::engine` transition for transition, so a cluster can mix it with
//! nodes that run the engine in software, and the tests prove it on random traces.
//!
//! Design rules:
//! - The engine is the reference. The RTL is checked against it input by input
//!   (module `diff`): the same wire headers, DMA requests, interrupt vectors, errors and
//!   directory/page states; a divergence is shrunk to a short trace and printed.
//! - Verilog stays plain, synthesizable Verilog-2005: one clock, ready/valid between
//!   stages, one module per stage, every interface commented.
//! - Cycle counts in the latency model ([`latency::NicCycles::MEASURED`]) are
//!   measurements of the current RTL; a test fails when the two drift apart. Everything
//!   outside the RTL is a named parameter with a cited default, and modeled rows are
//!   labelled `fpga (modeled)`.
//!
//! # Features
//!
//! Without features the crate builds anywhere and offers the latency model
//! ([`latency`]), the trace driver over the engine ([`trace`]), the reference steering
//! table ([`steering`]), the comparison types ([`observe`]) and the shrinker
//! ([`shrink`]).
//!
//! Feature **`hdl-sim`** builds the Verilog with Debian's Verilator 5.006 (`build.rs`) and
//! adds `rtl` (one simulated pipeline per node through a C++ shim), `diff` (the
//! differential check) and `measure` (cycle counts per operation). It needs
//! `apt-get install -y verilator` and a C++ compiler; then
//! `cargo test -p hdl-models --features hdl-sim` runs the differential tests and
//! `cargo run -p hdl-models --features hdl-sim --example cycle_counts` prints the counts.
//!
//! # Example
//!
//! The rows a benchmark prints next to its measured ones:
//!
//! ```
//! use hdl_models::latency::{fpga_modeled_rows, LatencyParams};
//! let params = LatencyParams { wire_hop_ns: 1500.0, ..LatencyParams::default() };
//! for row in fpga_modeled_rows(&params) {
//!     println!("{} {}: {:.1} us", row.label, row.kind_name, row.latency_ns / 1000.0);
//! }
//! println!("parameters: {}", params.summary());
//! ```
#![deny(missing_docs)]

pub mod latency;
pub mod observe;
pub mod shrink;
pub mod steering;
pub mod trace;

#[cfg(feature = "hdl-sim")]
pub mod diff;
#[cfg(feature = "hdl-sim")]
pub mod measure;
#[cfg(feature = "hdl-sim")]
pub mod rtl;
