//! The Virtual Iron Machine Architecture (ViMA): everything the guest and the VMM, and
//! the nodes of a cluster, agree on byte for byte.
//!
//! The guest of a cvmm virtual server is paravirtual (the paper's section 4): it never
//! touches privileged state. It runs at CPL3 with IOPL=3 and asks the VMM for everything
//! through *calls*: an `out` to [`call::VIMA_PORT`] with the call number in `rax` and the
//! arguments in `rdi, rsi, rdx, r10, r8`. The VMM answers with a [`Status`] in `rax` and a
//! value in `rdx`. Interrupts come back the other way through a *virtual IDT* the guest
//! registers ([`interrupt`]). The virtual server's shape (nodes, VPs, memory ranges per
//! node, devices, command line) is the *configuration* ([`config`]).
//!
//! Design rules:
//! - This crate is the ABI: `#[repr(C)]` structs with bytemuck derives, explicit numbers,
//!   no `unsafe`, `no_std`, no allocation. Changing a number here is an ABI break.
//! - Everything that parses bytes coming from the other side validates and returns a
//!   typed error; nothing here panics on bad input.
//!
//! ```
//! use vima::call::{Call, CallArgs};
//! let args = CallArgs { number: Call::ConsoleWrite as u64, args: [0x20_0000, 5, 0, 0, 0] };
//! assert_eq!(Call::decode(&args), Ok(Call::ConsoleWrite));
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod call;
pub mod config;
pub mod interrupt;
pub mod layout;
pub mod program;
mod status;
pub mod wire;

pub use status::Status;
