//! The coherence engine and the SmartNIC firmware main loop.
//!
//! Not built yet. This crate will hold the home-based directory and per-node page states
//! as a pure state machine (messages and faults in, actions out) and a firmware loop over
//! small HAL traits (rings, DMA, doorbells, interrupts), so the same code runs inline in
//! the host (software path), in the NIC model process, and on a SmartNIC's cores.
#![cfg_attr(not(test), no_std)]
