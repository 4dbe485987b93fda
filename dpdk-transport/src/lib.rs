//! The node-to-node wire.
//!
//! Not built yet. This crate will hold the `Transport` trait, the kernel UDP backend, and
//! the DPDK poll-mode backend (feature `dpdk`), with reliable ordered delivery per peer
//! over lossy datagrams and message authentication.
