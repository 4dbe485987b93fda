//! The cvmm host VMM: one process per node that runs virtual processors on KVM, answers
//! the guest's ViMA calls, keeps logical memory coherent with the other nodes, and the
//! `cvmm` command line that starts whole clusters.
//!
//! Folders follow the architecture: `boot` (what exists before the first guest
//! instruction), `vp` (VP threads, calls, interrupts), `memory` (logical memory and
//! faults), `devices`, `sched` (timers), `cli`. [`node::run_node`] ties one node
//! together.
#![deny(missing_docs)]

pub mod api;
pub mod boot;
pub mod cli;
pub mod cluster;
pub mod devices;
pub mod error;
pub mod fabric;
pub mod guest_image;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod sched;
pub mod server;
pub mod vp;
