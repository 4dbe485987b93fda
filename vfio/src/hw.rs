//! The kernel VFIO client (feature `vfio-hw`): the same [`NicBackend`] for a real card
//! bound to `vfio-pci`, through `vfio-ioctls`. Built in CI, never run here: this machine
//! has no VFIO (see docs/platform.md).

use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use vfio_bindings::bindings::vfio::{VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};
use vmm_sys_util::eventfd::EventFd;

use crate::client::{ClientError, NicBackend};
use crate::layout::{reg, BAR0_SIZE, DEVICE_ID, LAYOUT_VERSION, MAGIC, VENDOR_ID};
use crate::region::{MappedRegion, SharedMemory};

fn hw(e: impl std::fmt::Display) -> ClientError {
    ClientError::Hardware(e.to_string())
}

/// A cvmm NIC behind kernel VFIO.
pub struct HwClient {
    container: Arc<VfioContainer>,
    device: VfioDevice,
    bar0: MappedRegion,
    dma: Mutex<Vec<(u64, MappedRegion)>>,
}

impl std::fmt::Debug for HwClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HwClient").finish_non_exhaustive()
    }
}

impl HwClient {
    /// Opens the device at `sysfs` (e.g. `/sys/bus/pci/devices/0000:03:00.0`), checks its
    /// ids and layout, and maps BAR0.
    pub fn open(sysfs: &Path) -> Result<Self, ClientError> {
        let container = Arc::new(VfioContainer::new(None).map_err(hw)?);
        let ops: Arc<dyn VfioOps> = container.clone();
        let device = VfioDevice::new(sysfs, ops, false).map_err(hw)?;
        let mut ids = [0u8; 4];
        device.region_read(VFIO_PCI_CONFIG_REGION_INDEX, &mut ids, 0);
        let vendor = u16::from_le_bytes([ids[0], ids[1]]);
        let device_id = u16::from_le_bytes([ids[2], ids[3]]);
        if (vendor, device_id) != (VENDOR_ID, DEVICE_ID) {
            return Err(ClientError::WrongDevice {
                vendor,
                device: device_id,
            });
        }
        if device.get_region_size(VFIO_PCI_BAR0_REGION_INDEX) < BAR0_SIZE {
            return Err(ClientError::Bar("smaller than the layout"));
        }
        let offset = device.get_region_offset(VFIO_PCI_BAR0_REGION_INDEX);
        // SAFETY: the device fd is owned by `device`, which outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(device.as_raw_fd()) };
        let bar0 = MappedRegion::map(fd, offset, BAR0_SIZE).map_err(ClientError::MapBar)?;
        let magic = bar0.load_u32(reg::MAGIC);
        let version = bar0.load_u32(reg::VERSION);
        if magic != MAGIC || version != LAYOUT_VERSION {
            return Err(ClientError::WrongLayout { magic, version });
        }
        Ok(Self {
            container,
            device,
            bar0,
            dma: Mutex::new(Vec::new()),
        })
    }
}

impl NicBackend for HwClient {
    fn bar0(&self) -> &dyn SharedMemory {
        &self.bar0
    }

    fn enable_vectors(&self, fds: &[RawFd]) -> Result<(), ClientError> {
        // The caller keeps owning the eventfds: wrap them without taking ownership.
        let events: Vec<ManuallyDrop<EventFd>> = fds
            .iter()
            // SAFETY: each fd is a live eventfd owned by the caller; ManuallyDrop keeps
            // the wrapper from closing it.
            .map(|fd| ManuallyDrop::new(unsafe { EventFd::from_raw_fd(*fd) }))
            .collect();
        let refs: Vec<&EventFd> = events.iter().map(|e| &**e).collect();
        self.device.enable_msix(refs).map_err(hw)
    }

    fn set_doorbell(&self, _fd: RawFd) -> Result<(), ClientError> {
        // A card sees its doorbell writes; nothing to wake.
        Ok(())
    }

    fn map_dma(&self, iova: u64, len: u64, fd: BorrowedFd<'_>) -> Result<(), ClientError> {
        let region = MappedRegion::map(fd, 0, len).map_err(ClientError::MapBar)?;
        let size = usize::try_from(len).map_err(|_| ClientError::Bar("DMA range too large"))?;
        // SAFETY: the mapping lives in `self.dma` until `unmap_dma` (or drop), and is only
        // accessed atomically (SharedMemory) or by the device.
        unsafe {
            self.container
                .vfio_dma_map(iova, size, region.base().as_ptr())
                .map_err(hw)?;
        }
        self.dma.lock().expect("dma lock").push((iova, region));
        Ok(())
    }

    fn unmap_dma(&self, iova: u64, len: u64) -> Result<(), ClientError> {
        let size = usize::try_from(len).map_err(|_| ClientError::Bar("DMA range too large"))?;
        self.container.vfio_dma_unmap(iova, size).map_err(hw)?;
        self.dma
            .lock()
            .expect("dma lock")
            .retain(|(at, _)| *at != iova);
        Ok(())
    }

    fn responds(&self) -> bool {
        let mut ids = [0u8; 2];
        self.device
            .region_read(VFIO_PCI_CONFIG_REGION_INDEX, &mut ids, 0);
        u16::from_le_bytes(ids) == VENDOR_ID
    }
}
