//! The host side: a driver's view of the NIC, whichever way it is reached.
//!
//! [`NicBackend`] is what the host fabric needs: BAR0 mapped into its address space, MSI-X
//! vectors bound to eventfds, guest memory made visible to the device, and a way to ask
//! whether the device still answers. [`UserClient`] reaches the NIC model over vfio-user;
//! `hw::HwClient` (feature `vfio-hw`) a real card through the kernel's VFIO.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
};

use crate::layout::{
    reg, BAR0_SIZE, DEVICE_ID, DOORBELL_IRQ_INDEX, LAYOUT_VERSION, MAGIC, VENDOR_ID,
};
use crate::region::{MappedRegion, RegionError, SharedMemory};

/// Errors of the host side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The device socket did not accept a connection in time.
    #[error("Failed to connect to the NIC at {path}")]
    Connect {
        /// The socket.
        path: String,
        /// The last error.
        #[source]
        source: vfio_user::Error,
    },
    /// A vfio-user request failed.
    #[error("The NIC refused or failed a {what} request")]
    Request {
        /// The request.
        what: &'static str,
        /// The cause.
        #[source]
        source: vfio_user::Error,
    },
    /// The configuration space has other ids.
    #[error("Not a cvmm NIC: vendor {vendor:#06x}, device {device:#06x}")]
    WrongDevice {
        /// Vendor id read.
        vendor: u16,
        /// Device id read.
        device: u16,
    },
    /// BAR0 is missing, too small, or not mappable.
    #[error("BAR0 is not usable: {0}")]
    Bar(&'static str),
    /// Mapping BAR0 failed.
    #[error("Failed to map BAR0")]
    MapBar(#[source] RegionError),
    /// BAR0 does not start with the expected registers.
    #[error("BAR0 has magic {magic:#x}, layout version {version}")]
    WrongLayout {
        /// Magic read.
        magic: u32,
        /// Version read.
        version: u32,
    },
    /// The kernel VFIO layer failed (feature `vfio-hw`).
    #[error("Kernel VFIO failed: {0}")]
    Hardware(String),
}

/// The NIC as the host fabric uses it.
pub trait NicBackend: Send + Sync + std::fmt::Debug {
    /// BAR0, mapped.
    fn bar0(&self) -> &dyn SharedMemory;

    /// Binds MSI-X vectors `0..fds.len()` to the eventfds.
    fn enable_vectors(&self, fds: &[RawFd]) -> Result<(), ClientError>;

    /// Gives the device an eventfd to wake it when it sleeps (see
    /// `layout::DOORBELL_IRQ_INDEX`); a device that sees doorbell writes ignores it.
    fn set_doorbell(&self, fd: RawFd) -> Result<(), ClientError>;

    /// Makes `len` bytes of `fd` (from offset 0) visible to the device at `iova`.
    fn map_dma(&self, iova: u64, len: u64, fd: BorrowedFd<'_>) -> Result<(), ClientError>;

    /// Removes a DMA mapping (at shutdown).
    fn unmap_dma(&self, iova: u64, len: u64) -> Result<(), ClientError>;

    /// Asks the device something through a trapped access: false when it no longer
    /// answers (its process died, the card fell off the bus).
    fn responds(&self) -> bool;
}

/// A vfio-user connection to the NIC model.
pub struct UserClient {
    client: Mutex<vfio_user::Client>,
    bar0: MappedRegion,
}

impl std::fmt::Debug for UserClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserClient").finish_non_exhaustive()
    }
}

fn request(what: &'static str) -> impl FnOnce(vfio_user::Error) -> ClientError {
    move |source| ClientError::Request { what, source }
}

impl UserClient {
    /// Connects to the device at `socket`, retrying until `timeout` (the NIC process may
    /// still be starting), checks its identity and maps BAR0.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut client = loop {
            match vfio_user::Client::new(socket) {
                Ok(client) => break client,
                Err(source) if Instant::now() >= deadline => {
                    return Err(ClientError::Connect {
                        path: socket.display().to_string(),
                        source,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let mut ids = [0u8; 4];
        client
            .region_read(VFIO_PCI_CONFIG_REGION_INDEX, 0, &mut ids)
            .map_err(request("config read"))?;
        let vendor = u16::from_le_bytes([ids[0], ids[1]]);
        let device = u16::from_le_bytes([ids[2], ids[3]]);
        if (vendor, device) != (VENDOR_ID, DEVICE_ID) {
            return Err(ClientError::WrongDevice { vendor, device });
        }
        let region = client
            .region(VFIO_PCI_BAR0_REGION_INDEX)
            .ok_or(ClientError::Bar("no region 0"))?;
        if region.size < BAR0_SIZE {
            return Err(ClientError::Bar("smaller than the layout"));
        }
        let file = region
            .file_offset
            .as_ref()
            .ok_or(ClientError::Bar("the device sent no fd to map it"))?;
        let fd = file.file().as_raw_fd();
        // SAFETY: the fd is owned by the client's region, which lives as long as `client`;
        // the borrow ends with `map`, which keeps its own mapping.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let bar0 = MappedRegion::map(fd, file.start(), BAR0_SIZE).map_err(ClientError::MapBar)?;
        let magic = bar0.load_u32(reg::MAGIC);
        let version = bar0.load_u32(reg::VERSION);
        if magic != MAGIC || version != LAYOUT_VERSION {
            return Err(ClientError::WrongLayout { magic, version });
        }
        Ok(Self {
            client: Mutex::new(client),
            bar0,
        })
    }

    /// Reads configuration space (trapped).
    pub fn config_read(&self, offset: u64, out: &mut [u8]) -> Result<(), ClientError> {
        self.lock()
            .region_read(VFIO_PCI_CONFIG_REGION_INDEX, offset, out)
            .map_err(request("config read"))
    }

    /// Writes configuration space (trapped).
    pub fn config_write(&self, offset: u64, data: &[u8]) -> Result<(), ClientError> {
        self.lock()
            .region_write(VFIO_PCI_CONFIG_REGION_INDEX, offset, data)
            .map_err(request("config write"))
    }

    /// Reads a BAR0 register through the socket (trapped, slow: tests and diagnostics).
    pub fn bar_read(&self, offset: u64, out: &mut [u8]) -> Result<(), ClientError> {
        self.lock()
            .region_read(VFIO_PCI_BAR0_REGION_INDEX, offset, out)
            .map_err(request("BAR0 read"))
    }

    /// Writes a BAR0 register through the socket (trapped).
    pub fn bar_write(&self, offset: u64, data: &[u8]) -> Result<(), ClientError> {
        self.lock()
            .region_write(VFIO_PCI_BAR0_REGION_INDEX, offset, data)
            .map_err(request("BAR0 write"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, vfio_user::Client> {
        self.client.lock().expect("vfio-user client lock")
    }
}

impl NicBackend for UserClient {
    fn bar0(&self) -> &dyn SharedMemory {
        &self.bar0
    }

    fn enable_vectors(&self, fds: &[RawFd]) -> Result<(), ClientError> {
        let count = u32::try_from(fds.len()).map_err(|_| ClientError::Bar("too many vectors"))?;
        self.lock()
            .set_irqs(
                VFIO_PCI_MSIX_IRQ_INDEX,
                VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                0,
                count,
                fds,
            )
            .map_err(request("set_irqs"))
    }

    fn set_doorbell(&self, fd: RawFd) -> Result<(), ClientError> {
        self.lock()
            .set_irqs(
                DOORBELL_IRQ_INDEX,
                VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                0,
                1,
                &[fd],
            )
            .map_err(request("set_irqs"))
    }

    fn map_dma(&self, iova: u64, len: u64, fd: BorrowedFd<'_>) -> Result<(), ClientError> {
        self.lock()
            .dma_map(0, iova, len, fd.as_raw_fd())
            .map_err(request("dma_map"))
    }

    fn unmap_dma(&self, iova: u64, len: u64) -> Result<(), ClientError> {
        self.lock()
            .dma_unmap(iova, len)
            .map_err(request("dma_unmap"))
    }

    fn responds(&self) -> bool {
        let mut ids = [0u8; 4];
        self.config_read(0, &mut ids).is_ok() && u16::from_le_bytes([ids[0], ids[1]]) == VENDOR_ID
    }
}

impl Drop for UserClient {
    fn drop(&mut self) {
        if let Ok(client) = self.client.lock() {
            let _ = client.shutdown();
        }
    }
}
