//! Why a node could not be built or run: each variant names the step that failed.

use thiserror::Error;
use vima::config;

use crate::boot::elf;
use crate::fabric::{FabricError, OffloadError};
use crate::memory::MemoryError;

/// Why a node could not run.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The requested shape is invalid.
    #[error("Invalid virtual server: {0}")]
    Shape(String),
    /// The KVM device could not be opened.
    #[error("KVM is not available: cannot open {0} (cvmm needs KVM and permission to open it)")]
    OpenKvm(String, #[source] kvm_ioctls::Error),
    /// A KVM call failed.
    #[error("Failed to {what}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Logical memory could not be set up.
    #[error("Failed to set up logical memory")]
    Memory(#[from] MemoryError),
    /// The private region could not be mapped.
    #[error("Failed to map the VMM-private region")]
    MapPrivate(#[source] std::io::Error),
    /// The guest image is bad.
    #[error("Failed to load the guest image")]
    Image(#[from] elf::ElfError),
    /// The configuration table could not be encoded.
    #[error("Failed to encode the configuration table: {0:?}")]
    Config(config::ConfigError),
    /// A thread could not be started.
    #[error("Failed to start a thread")]
    Thread(#[source] std::io::Error),
    /// The software fabric could not start.
    #[error("Failed to start the software fabric")]
    Fabric(#[from] FabricError),
    /// The NIC could not be set up (offload fabric).
    #[error("Failed to set up the offload fabric")]
    Offload(#[from] OffloadError),
    /// The management API could not start.
    #[error("Failed to start the management API")]
    Api(#[from] crate::api::ApiError),
    /// The program's `--root` cannot be used.
    #[error("--root {path}")]
    Root {
        /// The directory.
        path: String,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
}
