//! The DPDK poll-mode wire (feature `dpdk`; the address and configuration types are
//! always built so that a cluster description naming DPDK can be checked anywhere).
//!
//! Why DPDK at all: the kernel's UDP path costs 15-20 µs per round trip on the build
//! machine, a poll-mode memif port 1.5-4.4 µs (docs/platform.md). The offload path's point is
//! that remote page service does not wait on a host kernel, so its wire must not either.
//!
//! Design rules:
//! - The backend implements only [`crate::Datagram`]; sequencing, acks, retransmission,
//!   liveness and authentication are the shared [`crate::ReliableTransport`], exactly as
//!   over UDP. The packet inside each frame is the UDP backend's payload, byte for byte
//!   ([`frame`]), so software and offload nodes interoperate on one DPDK wire.
//! - Our own thin bindings to Debian's libdpdk 22.11: a C shim (`csrc/cvmm_dpdk.c`)
//!   wraps the static-inline burst and mbuf functions and the EAL's quirks, Rust declares
//!   its functions by hand in `sys` (all the unsafe code, each block with its reason).
//!   No bindgen, because a fresh machine has no libclang; no crate, because none is
//!   maintained.
//! - One EAL per process, initialised once ([`DpdkError::EalAlreadyUsed`] on a second
//!   try), without hugepages by default (`--no-huge -m 256 --no-pci`, IOVA as VA), its
//!   runtime directory removed right after start-up.
//! - Nodes are addressed by cvmm MACs derived from node ids, so a cluster description
//!   is all a node needs to address its peers ([`DpdkAddr`]: port index + MAC).
//!
//! ```no_run
//! # #[cfg(feature = "dpdk")] {
//! use dpdk_transport::dpdk::{DpdkConfig, DpdkDatagram, DpdkLink};
//! use dpdk_transport::{NodeId, ReliableTransport, TransportConfig};
//!
//! let link = DpdkLink::Memif { socket_prefix: "cvmm-demo".into() };
//! let nodes = [NodeId(0), NodeId(1)];
//! let (config, peers) = DpdkConfig::for_cluster(&link, NodeId(0), &nodes);
//! let wire = DpdkDatagram::open(&config).expect("DPDK endpoint");
//! let transport = ReliableTransport::new(wire, NodeId(0), &peers, TransportConfig::default());
//! # }
//! ```

mod config;
#[cfg(feature = "dpdk")]
mod datagram;
#[cfg(feature = "dpdk")]
mod eal;
pub mod frame;
#[cfg(feature = "dpdk")]
mod sys;

use std::time::Duration;

use thiserror::Error;

pub use config::{DpdkAddr, DpdkConfig, DpdkLink, PollConfig, FRAME_ROOM};
#[cfg(feature = "dpdk")]
pub use datagram::{DpdkCounters, DpdkDatagram, PortStatus};
pub use frame::MacAddr;
#[cfg(feature = "dpdk")]
pub use sys::{DpdkCallError, PortCounters};

/// True when this build has the DPDK backend (feature `dpdk`).
pub const AVAILABLE: bool = cfg!(feature = "dpdk");

/// Why a DPDK endpoint could not be opened.
#[derive(Debug, Error)]
pub enum DpdkError {
    /// The EAL was already initialised (or tried) in this process; DPDK allows once.
    #[error(
        "The DPDK EAL was already initialised in this process (one DPDK endpoint per process)"
    )]
    EalAlreadyUsed,
    /// `rte_eal_init` failed.
    #[cfg(feature = "dpdk")]
    #[error("Failed to initialise the DPDK EAL with `{args}`")]
    EalInit {
        /// The arguments given.
        args: String,
        /// The cause.
        #[source]
        source: DpdkCallError,
    },
    /// The packet buffer pool could not be made.
    #[cfg(feature = "dpdk")]
    #[error("Failed to create the packet buffer pool")]
    Pool(#[source] DpdkCallError),
    /// A port is missing or could not be configured.
    #[cfg(feature = "dpdk")]
    #[error("Failed to set up DPDK port {name}")]
    PortConfigure {
        /// The device name.
        name: String,
        /// The cause.
        #[source]
        source: DpdkCallError,
    },
    /// A port did not start in time (for a memif client: its peer never listened).
    #[cfg(feature = "dpdk")]
    #[error("Failed to start DPDK port {name} within {timeout:?} (is the peer up?)")]
    PortStart {
        /// The device name.
        name: String,
        /// How long it was retried.
        timeout: Duration,
        /// The last failure.
        #[source]
        source: DpdkCallError,
    },
    /// A port started but its link did not come up in time (the peer is not running,
    /// or a cable is out).
    #[cfg(feature = "dpdk")]
    #[error("DPDK port {name} has no link after {timeout:?} (is the peer up?)")]
    LinkDown {
        /// The device name.
        name: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The wake-up eventfd could not be made.
    #[error("Failed to create the wake-up eventfd")]
    WakeFd(#[source] std::io::Error),
    /// The configuration cannot work.
    #[error("Invalid DPDK configuration: {0}")]
    InvalidConfig(String),
    /// This build has no DPDK backend.
    #[error("This build has no DPDK support (build dpdk-transport with feature `dpdk`, which needs libdpdk-dev and pkg-config)")]
    NotBuilt,
}

/// Without the `dpdk` feature: the same entry point, failing with
/// [`DpdkError::NotBuilt`], so callers need no `cfg` of their own.
#[cfg(not(feature = "dpdk"))]
#[derive(Debug)]
pub struct DpdkDatagram(());

#[cfg(not(feature = "dpdk"))]
impl DpdkDatagram {
    /// Always fails: this build has no DPDK backend.
    pub fn open(_config: &DpdkConfig) -> Result<Self, DpdkError> {
        Err(DpdkError::NotBuilt)
    }

    /// Never reached (no value exists).
    pub fn wait_links_up(&self, _timeout: Duration) -> bool {
        false
    }
}

#[cfg(not(feature = "dpdk"))]
impl crate::Datagram for DpdkDatagram {
    type Addr = DpdkAddr;

    fn local_addr(&self) -> DpdkAddr {
        DpdkAddr {
            port: 0,
            mac: MacAddr::BROADCAST,
        }
    }

    fn send_to(&self, _packet: &[u8], _to: DpdkAddr) -> Result<(), crate::DatagramError> {
        Ok(())
    }

    fn recv_from(
        &self,
        _buf: &mut [u8],
        _wait: Duration,
    ) -> Result<Option<(usize, DpdkAddr)>, crate::DatagramError> {
        Ok(None)
    }

    fn interrupt(&self) {}
}
