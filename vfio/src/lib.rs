//! The host <-> NIC device interface of cvmm.
//!
//! A cvmm NIC is a PCI function with one memory BAR. BAR0 holds a register block, a
//! submission ring (host -> NIC), a completion ring (NIC -> host) and one message buffer
//! per ring slot, all in memory both sides map: the host writes a descriptor and bumps a
//! doorbell *index in shared memory* that the firmware polls, so the fast path never traps
//! (a trapped access costs about 20 µs on this machine, see docs/platform.md). The NIC
//! interrupts the host through MSI-X vectors bound to eventfds, one per VP plus one for
//! the host's own work. Guest memory reaches the NIC by a DMA mapping of the guest memfd.
//! `docs/nic.md` documents the layout and the protocol on the rings.
//!
//! Modules: [`layout`] (offsets, registers, descriptor formats), [`ring`] (the ring logic,
//! pure and property-tested), [`region`] (shared memory with atomic access),
//! [`config_space`] (PCI configuration space), [`device`] (the device side, for the NIC
//! model process), [`client`] (the host side: [`client::NicBackend`] over vfio-user;
//! `hw` adds kernel VFIO with feature `vfio-hw`).
//!
//! ```no_run
//! use std::time::Duration;
//! use vfio::client::{NicBackend, UserClient};
//! use vfio::ring::{Submission, SubmissionProducer};
//!
//! let nic = UserClient::connect("/tmp/nic0.sock".as_ref(), Duration::from_secs(5))?;
//! let mut sq = SubmissionProducer::new(nic.bar0());
//! sq.push(nic.bar0(), &Submission::Fetch { page: 0x300, write: false, vp: 1 }, &[])
//!     .expect("room in a fresh ring");
//! # Ok::<(), vfio::client::ClientError>(())
//! ```
#![deny(missing_docs)]

pub mod client;
pub mod config_space;
pub mod device;
#[cfg(feature = "vfio-hw")]
pub mod hw;
pub mod layout;
pub mod region;
pub mod ring;
