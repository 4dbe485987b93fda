//! The device side: what the NIC model process needs to be a vfio-user PCI device.
//!
//! [`DeviceServer`] serves one client on a UNIX socket with the `vfio_user` crate: region 0
//! is BAR0, backed by a memfd that the client maps directly (the crate sends a region's fd
//! only if the region lists sparse areas, so BAR0 lists one covering it all); region 7 is
//! the configuration space, trapped. MSI-X vectors are the eventfds the client hands over
//! with `set_irqs`; guest memory arrives with `dma_map` (the guest memfd) and is mapped
//! here. The crate does not support DMA over the socket, so shared memory is the only
//! path, as on a real NIC with an IOMMU mapping.
//!
//! [`DeviceState`] is what the firmware thread shares with the server thread: BAR0, the
//! DMA mappings and the interrupt eventfds.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vfio_bindings::bindings::vfio::{
    vfio_region_info, vfio_region_sparse_mmap_area, VFIO_IRQ_INFO_EVENTFD,
    VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE, VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::{
    DmaMapFlags, DmaUnmapFlags, IrqInfo, Server, ServerBackend, ServerRegion, SparseArea,
};

use crate::config_space::{ConfigSpace, CONFIG_SPACE_BYTES};
use crate::layout::{
    reg, BAR0_SIZE, BUFFER_BYTES, CQ_ENTRIES, DOORBELL_IRQ_INDEX, LAYOUT_VERSION, MAGIC,
    MSIX_VECTORS, SQ_ENTRIES,
};
use crate::region::{create_memfd, MappedRegion, RegionError, SharedMemory};

/// Errors of the device side.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The BAR0 memfd could not be created.
    #[error("Failed to create the BAR0 memory")]
    CreateBar(#[source] std::io::Error),
    /// BAR0 could not be mapped.
    #[error("Failed to map BAR0")]
    MapBar(#[source] RegionError),
    /// The socket could not be created.
    #[error("Failed to listen on the vfio-user socket")]
    Listen(#[source] vfio_user::Error),
    /// Serving the client failed.
    #[error("The vfio-user connection failed")]
    Serve(#[source] vfio_user::Error),
}

/// One `dma_map`ped range of the client's memory.
#[derive(Debug, Clone)]
pub struct DmaRange {
    /// The client's address (IOVA) of the first byte.
    pub iova: u64,
    /// Length in bytes.
    pub len: u64,
    /// The local mapping.
    pub region: Arc<MappedRegion>,
}

/// What the firmware thread and the server thread share.
#[derive(Debug)]
pub struct DeviceState {
    bar0: Arc<MappedRegion>,
    bar0_fd: OwnedFd,
    dma: Mutex<Vec<DmaRange>>,
    vectors: Mutex<Vec<Option<File>>>,
    doorbell: Mutex<Option<File>>,
    disconnected: AtomicBool,
}

impl DeviceState {
    /// Creates BAR0 (zeroed, then the identification registers) for the NIC of `node`.
    pub fn new(node: u32) -> Result<Arc<Self>, DeviceError> {
        let fd = create_memfd(c"cvmm-nic-bar0", BAR0_SIZE).map_err(DeviceError::CreateBar)?;
        let bar0 = MappedRegion::map(fd.as_fd(), 0, BAR0_SIZE).map_err(DeviceError::MapBar)?;
        bar0.store_u32(reg::VERSION, LAYOUT_VERSION);
        bar0.store_u32(reg::SQ_ENTRIES, SQ_ENTRIES);
        bar0.store_u32(reg::CQ_ENTRIES, CQ_ENTRIES);
        bar0.store_u32(reg::BUFFER_BYTES, BUFFER_BYTES);
        bar0.store_u32(reg::NODE, node);
        // The magic last: a client that sees it sees the rest.
        bar0.store_u32(reg::MAGIC, MAGIC);
        Ok(Arc::new(Self {
            bar0: Arc::new(bar0),
            bar0_fd: fd,
            dma: Mutex::new(Vec::new()),
            vectors: Mutex::new((0..MSIX_VECTORS).map(|_| None).collect()),
            doorbell: Mutex::new(None),
            disconnected: AtomicBool::new(false),
        }))
    }

    /// BAR0 as the device sees it.
    pub fn bar0(&self) -> &Arc<MappedRegion> {
        &self.bar0
    }

    /// The DMA range holding `[iova, iova + len)`, with the offset of `iova` in it.
    pub fn dma(&self, iova: u64, len: u64) -> Option<(Arc<MappedRegion>, u64)> {
        let end = iova.checked_add(len)?;
        let ranges = self.dma.lock().expect("dma lock");
        ranges
            .iter()
            .find(|r| iova >= r.iova && end <= r.iova + r.len)
            .map(|r| (r.region.clone(), iova - r.iova))
    }

    /// True once some memory was mapped for DMA.
    pub fn has_dma(&self) -> bool {
        !self.dma.lock().expect("dma lock").is_empty()
    }

    /// Signals MSI-X vector `vector`; false if the client set no eventfd for it.
    pub fn raise(&self, vector: u16) -> bool {
        let vectors = self.vectors.lock().expect("vector lock");
        match vectors.get(usize::from(vector)) {
            Some(Some(file)) => {
                let mut file: &File = file;
                file.write_all(&1u64.to_le_bytes()).is_ok()
            }
            _ => false,
        }
    }

    /// Number of vectors with an eventfd.
    pub fn vectors_set(&self) -> usize {
        self.vectors
            .lock()
            .expect("vector lock")
            .iter()
            .filter(|v| v.is_some())
            .count()
    }

    /// The host's doorbell eventfd (a duplicate), once the host set one.
    pub fn doorbell(&self) -> Option<File> {
        self.doorbell
            .lock()
            .expect("doorbell lock")
            .as_ref()
            .and_then(|f| f.try_clone().ok())
    }

    /// True once the client went away (the server thread ended).
    pub fn disconnected(&self) -> bool {
        self.disconnected.load(Ordering::Acquire)
    }
}

struct Backend {
    state: Arc<DeviceState>,
    config: ConfigSpace,
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string())
}

impl ServerBackend for Backend {
    // A refused access reads as all ones and writes nowhere, as a PCI master abort does,
    // instead of an error reply: the vfio_user 0.1.7 client waits for a reply body that an
    // error reply lacks, so an error would hang the driver.
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> std::io::Result<()> {
        let ok = match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.config.read(offset, data),
            VFIO_PCI_BAR0_REGION_INDEX => trapped_bar_read(&self.state.bar0, offset, data),
            _ => false,
        };
        if !ok {
            data.fill(0xff);
        }
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => {
                self.config.write(offset, data);
            }
            VFIO_PCI_BAR0_REGION_INDEX => {
                trapped_bar_write(&self.state.bar0, offset, data);
            }
            _ => {}
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        _flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> std::io::Result<()> {
        let fd = fd.ok_or_else(|| invalid("DMA over the socket is not supported: pass an fd"))?;
        let region = MappedRegion::map(fd.as_fd(), offset, size)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut ranges = self.state.dma.lock().expect("dma lock");
        let end = address
            .checked_add(size)
            .ok_or_else(|| invalid("DMA range wraps"))?;
        if ranges
            .iter()
            .any(|r| address < r.iova + r.len && r.iova < end)
        {
            return Err(invalid("DMA range overlaps a mapped one"));
        }
        ranges.push(DmaRange {
            iova: address,
            len: size,
            region: Arc::new(region),
        });
        Ok(())
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> std::io::Result<()> {
        let mut ranges = self.state.dma.lock().expect("dma lock");
        if flags.contains(DmaUnmapFlags::UNMAP_ALL) {
            ranges.clear();
        } else {
            ranges.retain(|r| !(r.iova == address && r.len == size));
        }
        Ok(())
    }

    fn reset(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> std::io::Result<()> {
        if index == DOORBELL_IRQ_INDEX {
            let mut doorbell = self.state.doorbell.lock().expect("doorbell lock");
            *doorbell = match (flags & VFIO_IRQ_SET_DATA_EVENTFD != 0, start, count) {
                (true, 0, 1) => fds.into_iter().next(),
                (false, _, _) => None,
                _ => return Err(invalid("the doorbell is one eventfd")),
            };
            return Ok(());
        }
        if index != VFIO_PCI_MSIX_IRQ_INDEX {
            return Err(invalid("only MSI-X and the doorbell are supported"));
        }
        let mut vectors = self.state.vectors.lock().expect("vector lock");
        let end = start
            .checked_add(count)
            .filter(|end| *end <= MSIX_VECTORS)
            .ok_or_else(|| invalid("vector range out of bounds"))?;
        if flags & VFIO_IRQ_SET_DATA_NONE != 0 || count == 0 {
            for v in start..end.max(start) {
                vectors[v as usize] = None;
            }
            return Ok(());
        }
        if flags & VFIO_IRQ_SET_DATA_EVENTFD == 0 || fds.len() != count as usize {
            return Err(invalid("MSI-X vectors are set with one eventfd each"));
        }
        for (v, fd) in (start..end).zip(fds) {
            vectors[v as usize] = Some(fd);
        }
        Ok(())
    }
}

/// Trapped BAR0 access: aligned 4- or 8-byte registers only (as a PCIe NIC would).
fn trapped_bar_read(bar: &MappedRegion, offset: u64, data: &mut [u8]) -> bool {
    match data.len() {
        4 if offset.is_multiple_of(4) && bar.u32_at(offset).is_some() => {
            data.copy_from_slice(&bar.load_u32(offset).to_le_bytes());
            true
        }
        8 if offset.is_multiple_of(8) && bar.u64_at(offset).is_some() => {
            data.copy_from_slice(&bar.load_u64(offset).to_le_bytes());
            true
        }
        _ => false,
    }
}

fn trapped_bar_write(bar: &MappedRegion, offset: u64, data: &[u8]) -> bool {
    match *data {
        [a, b, c, d] if offset.is_multiple_of(4) && bar.u32_at(offset).is_some() => {
            bar.store_u32(offset, u32::from_le_bytes([a, b, c, d]));
            true
        }
        [a, b, c, d, e, f, g, h] if offset.is_multiple_of(8) && bar.u64_at(offset).is_some() => {
            bar.store_u64(offset, u64::from_le_bytes([a, b, c, d, e, f, g, h]));
            true
        }
        _ => false,
    }
}

fn region_info(index: u32, size: u64, flags: u32) -> vfio_region_info {
    vfio_region_info {
        argsz: u32::try_from(std::mem::size_of::<vfio_region_info>()).expect("32 bytes"),
        flags,
        index,
        cap_offset: 0,
        size,
        offset: 0,
    }
}

/// A vfio-user server for one NIC.
pub struct DeviceServer {
    server: Server,
    state: Arc<DeviceState>,
}

impl std::fmt::Debug for DeviceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceServer").finish_non_exhaustive()
    }
}

impl DeviceServer {
    /// Listens on `socket` (which must not exist) for the device whose state is `state`.
    pub fn listen(socket: &Path, state: Arc<DeviceState>) -> Result<Self, DeviceError> {
        let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
        let regions = (0..VFIO_PCI_NUM_REGIONS)
            .map(|index| match index {
                VFIO_PCI_BAR0_REGION_INDEX => ServerRegion {
                    region_info: region_info(index, BAR0_SIZE, rw | VFIO_REGION_INFO_FLAG_MMAP),
                    // The crate sends the fd only with a sparse area list: one area, all
                    // of it.
                    sparse_areas: vec![SparseArea {
                        area: vfio_region_sparse_mmap_area {
                            offset: 0,
                            size: BAR0_SIZE,
                        },
                    }],
                    mmap_fd: Some(state.bar0_fd.as_raw_fd()),
                },
                VFIO_PCI_CONFIG_REGION_INDEX => ServerRegion {
                    region_info: region_info(index, CONFIG_SPACE_BYTES as u64, rw),
                    sparse_areas: Vec::new(),
                    mmap_fd: None,
                },
                _ => ServerRegion {
                    region_info: region_info(index, 0, 0),
                    sparse_areas: Vec::new(),
                    mmap_fd: None,
                },
            })
            .collect();
        let irqs = (0..VFIO_PCI_NUM_IRQS)
            .map(|index| IrqInfo {
                index,
                flags: VFIO_IRQ_INFO_EVENTFD,
                count: match index {
                    VFIO_PCI_MSIX_IRQ_INDEX => MSIX_VECTORS,
                    DOORBELL_IRQ_INDEX => 1,
                    _ => 0,
                },
            })
            .collect();
        let server = Server::new(socket, false, irqs, regions).map_err(DeviceError::Listen)?;
        Ok(Self { server, state })
    }

    /// Serves one client until it disconnects (or the connection fails); then marks the
    /// state disconnected. Blocking: run it on its own thread.
    pub fn serve(self) -> Result<(), DeviceError> {
        let mut backend = Backend {
            state: self.state.clone(),
            config: ConfigSpace::new(),
        };
        let result = self.server.run(&mut backend).map_err(DeviceError::Serve);
        self.state.disconnected.store(true, Ordering::Release);
        result
    }
}
