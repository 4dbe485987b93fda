//! The coherence engine and (later) the SmartNIC firmware main loop.
//!
//! The [`engine`] keeps one virtual server's logical memory coherent across the nodes of a
//! cluster: a home-based directory, one writer or many readers per page, races resolved at
//! the home. It is a pure state machine (faults and wire messages in, [`engine::Action`]s
//! out) with no I/O, no clock, no allocation and no `unsafe`, so the same code runs inline
//! in the host (software path), in the NIC model process, and on a SmartNIC's cores, and
//! is tested here by simulating whole clusters with a reordering network.
//! `docs/protocol.md` describes the protocol, its races and its invariants.
//!
//! Design rules: `no_std` outside tests; tables are caller-provided slices of small `Copy`
//! entries (the host allocates them, a NIC places them statically); counters, not strings.
//!
//! A read miss on node 1 for a page whose home is node 0, with the "network" done by hand:
//!
//! ```
//! use nic_firmware::engine::*;
//! use vima::wire::{decode, encode, Message, MAX_MESSAGE_BYTES};
//!
//! let page = LogicalPage(0x200);
//! let mut homes = HomeMap::new();
//! homes.add(page, 1, 0).unwrap(); // node 0 is home of page 0x200
//!
//! // Tables for one node: local states, directory, pending faults, home requests.
//! fn engine<'s>(node: u16, homes: HomeMap, t: &'s mut Tables) -> Engine<'s> {
//!     let config = EngineConfig { vs_id: 1, node, node_count: 2 };
//!     let storage = EngineStorage {
//!         local: &mut t.0, directory: &mut t.1, pending: &mut t.2, requests: &mut t.3,
//!     };
//!     Engine::new(config, homes, storage).unwrap()
//! }
//! type Tables = ([PageState; 0x201], [DirEntry; 0x201], [PendingFault; 2], [HomeRequest; 4]);
//! let blank = || ([PageState::Invalid; 0x201], [DirEntry::default(); 0x201],
//!                 [PendingFault::default(); 2], [HomeRequest::default(); 4]);
//! let (mut t0, mut t1) = (blank(), blank());
//! let mut home = engine(0, homes, &mut t0);
//! let mut reader = engine(1, homes, &mut t1);
//!
//! // VP 3 on node 1 reads the page: one ReadReq to the home.
//! let mut wire = [0u8; MAX_MESSAGE_BYTES];
//! let mut len = 0;
//! reader.fault(LocalFault { page, write: false, vp: 3 }, &mut |a: Action<'_>| {
//!     if let Action::Send(msg) = a { len = encode(&msg, &mut wire).unwrap(); }
//! }).unwrap();
//!
//! // The home write-protects its own copy and sends the page from its DMA window.
//! let memory = [7u8; 4096]; // the home's DMA window for this page
//! let mut reply = [0u8; MAX_MESSAGE_BYTES];
//! let mut reply_len = 0;
//! home.receive(&decode(&wire[..len]).unwrap(), &mut |a: Action<'_>| match a {
//!     Action::Downgrade { page: p } => assert_eq!(p, page),
//!     Action::SendPage(send) => {
//!         reply_len = encode(&send.message(&memory), &mut reply).unwrap();
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }).unwrap();
//!
//! // The reader installs the data read-only and resumes VP 3.
//! let mut done = Vec::new();
//! reader.receive(&decode(&reply[..reply_len]).unwrap(), &mut |a: Action<'_>| match a {
//!     Action::InstallPage { state, data, .. } => {
//!         assert_eq!(state, PageState::Shared);
//!         assert_eq!(data.unwrap()[0], 7);
//!     }
//!     Action::FaultDone { vp, .. } => done.push(vp),
//!     other => panic!("unexpected {other:?}"),
//! }).unwrap();
//! assert_eq!(done, [3]);
//! assert_eq!(reader.page_state(page), Ok(PageState::Shared));
//! assert_eq!(home.page_state(page), Ok(PageState::Shared));
//! ```
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod engine;
#[cfg(test)]
mod explore;
pub mod firmware;
