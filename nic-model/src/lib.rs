//! The NIC model: `cvmm nic`, one process per node on the offload path.
//!
//! A crate of its own because it is the card's side, not the host's: it knows the
//! configuration table (homes and VPs), the wire and the device model, and nothing of
//! KVM, userfaultfd or the host VMM. `host-vmm` starts it and talks to it only through
//! what a driver has.
//!
//! It plays the SmartNIC of one node: a vfio-user PCI device (`vfio::device`) that the
//! node's host process drives, the node's wire endpoint (the address of the node in the
//! cluster TOML), and the firmware main loop (`nic_firmware::firmware`) running the same
//! coherence engine as the software path. Why a separate process: it is the closest model
//! of a card that this machine allows, the host reaches it only through what a driver has
//! (BAR, rings, interrupts, DMA mappings), and a crashed "card" is observable as such.
//!
//! Threads: the vfio-user server (answers the driver's setup and trapped accesses; ends
//! when the host disconnects) and the firmware loop (this thread), which also reads the
//! wire. The transport has its own driver thread for timers.
//!
//! Lifetime: the NIC waits for the host to connect, map memory and set `control.ENABLE`;
//! runs until the host sets `control.SHUTDOWN` (after the last messages) or goes away;
//! lets the transport deliver what is in flight; exits.

#![deny(missing_docs)]

mod board;
pub mod engine;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dpdk_transport::Transport;
use log::warn;
use nic_firmware::firmware::Firmware;
use vfio::device::{DeviceError, DeviceServer, DeviceState};
use vfio::layout::{control, reg, status};
use vfio::region::SharedMemory;

pub use board::NicBoard;

/// How long the NIC waits for its host to connect and enable it.
const ENABLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the NIC model stopped before serving.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    /// The device could not be set up.
    #[error("Failed to set up the vfio-user device")]
    Device(#[from] DeviceError),
    /// The node's shape is invalid.
    #[error("Invalid node description: {0}")]
    Config(String),
    /// The engine could not be built.
    #[error("Failed to build the coherence engine")]
    Engine(#[from] engine::EngineSetupError),
    /// The host never enabled the device.
    #[error("The host did not enable the NIC within {0:?}")]
    NotEnabled(Duration),
    /// The host went away before enabling the device.
    #[error("The host disconnected before enabling the NIC")]
    HostGone,
    /// The host enabled the device without mapping its memory.
    #[error("The host enabled the NIC without mapping memory for DMA at address 0")]
    NoDma,
    /// A thread could not start.
    #[error("Failed to start a NIC thread")]
    Thread(#[source] std::io::Error),
}

/// What one node's NIC is set up with.
#[derive(Debug, Clone)]
pub struct NicSpec {
    /// The virtual server's configuration table (its homes and VPs; `vima::config`).
    pub config_table: Vec<u8>,
    /// The virtual server's id on the wire.
    pub vs_id: u16,
    /// The node this NIC serves.
    pub node: u32,
}

/// Runs the NIC of `spec.node` on `socket` with the node's wire endpoint `transport`.
/// Returns when the host shut it down or went away.
pub fn run_nic(
    spec: &NicSpec,
    socket: &Path,
    transport: Arc<dyn Transport>,
) -> Result<(), NicError> {
    let id = spec.node;
    let config = vima::config::Config::parse(&spec.config_table)
        .map_err(|e| NicError::Config(format!("the configuration table does not parse: {e:?}")))?;
    let logical_bytes = config.header().logical_bytes;
    let local_vps: Vec<u32> = config
        .vps()
        .filter(|vp| vp.node_id == id)
        .map(|vp| vp.vp_id)
        .collect();
    if local_vps.is_empty() {
        return Err(NicError::Config(format!(
            "node {id} has no VPs in the configuration"
        )));
    }
    let state = DeviceState::new(id)?;
    let server = DeviceServer::listen(socket, state.clone())?;
    let serve = std::thread::Builder::new()
        .name("nic-vfio-user".into())
        .spawn(move || {
            if let Err(e) = server.serve() {
                warn!("vfio-user connection: {e}");
            }
        })
        .map_err(NicError::Thread)?;
    let bar = state.bar0().clone();
    bar.store_u32(reg::STATUS, status::READY);

    let started = Instant::now();
    while bar.load_u32(reg::CONTROL) & control::ENABLE == 0 {
        if state.disconnected() {
            return Err(NicError::HostGone);
        }
        if started.elapsed() > ENABLE_TIMEOUT {
            return Err(NicError::NotEnabled(ENABLE_TIMEOUT));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (dma, _) = state.dma(0, logical_bytes).ok_or(NicError::NoDma)?;
    let engine = engine::build(&spec.config_table, spec.vs_id, id, &local_vps)?;
    let mut firmware = Box::new(Firmware::new(engine));
    let mut board = NicBoard::new(state.clone(), dma, transport.clone());
    bar.store_u32(reg::STATUS, status::READY | status::RUNNING);
    firmware.run(&mut board);
    bar.store_u32(reg::STATUS, status::READY | status::STOPPED);
    // Let the last messages (the exit broadcast) reach the peers.
    transport.flush(Duration::from_millis(500));
    transport.shutdown();
    // The server thread ends with the connection; the process exits either way.
    drop(serve);
    Ok(())
}
