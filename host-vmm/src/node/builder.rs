//! Assembles one node from a validated configuration, in the order its parts depend on
//! each other: the KVM VM, logical memory and the VMM-private region (page tables), the
//! guest image, the vCPUs, the configuration table, the control plane, the Linux
//! program, the fabric (which reports to the control plane), and last the server that
//! owns them all. Each step that fails names itself in the [`NodeError`] it returns.
//! Nothing runs until [`Node::run`].

use std::path::PathBuf;
use std::sync::Arc;

use dpdk_transport::Transport;
use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vfio::client::NicBackend;
use vima::call::UncheckedRange;

use super::{Node, NodeConfig, NodeError};
use crate::api::node::NodeApi;
use crate::api::ApiServer;
use crate::boot::program_layout::ProgramImage;
use crate::boot::{elf, private};
use crate::devices::console::{Console, ConsoleSink};
use crate::devices::root_fs::RootFs;
use crate::fabric::{Fabric, NicProcess, OffloadFabric, SoftwareFabric};
use crate::memory::LogicalMemory;
use crate::sched::timer::Timers;
use crate::server::reconfig::Configuration;
use crate::server::{ControlPlane, LinuxProgram, ServerParts, VirtualServer};
use crate::vp::VpControl;

/// How the node reaches the other nodes.
#[derive(Default)]
pub enum FabricSpec {
    /// A single node: no fabric.
    #[default]
    None,
    /// The software path: this process runs the engine over `transport`.
    Software {
        /// The virtual server's id on the wire.
        vs_id: u16,
        /// The node's wire endpoint.
        transport: Arc<dyn Transport>,
    },
    /// The offload path: the engine runs on the NIC behind `nic`.
    Offload {
        /// The virtual server's id on the wire.
        vs_id: u16,
        /// The NIC, reached through vfio-user.
        nic: Box<dyn NicBackend>,
        /// The NIC model process this node started, if it did (watched and stopped with
        /// the node).
        process: Option<NicProcess>,
    },
}

impl std::fmt::Debug for FabricSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FabricSpec::None => "FabricSpec::None",
            FabricSpec::Software { .. } => "FabricSpec::Software",
            FabricSpec::Offload { .. } => "FabricSpec::Offload",
        })
    }
}

/// The Linux program's part of a node.
#[derive(Debug)]
pub enum LinuxSpec {
    /// A node that runs the program's threads (every node but the loader): maps the
    /// system call trampoline.
    Threads,
    /// Node 0: also loads the program (its segments lie in memory homed there) and serves
    /// `root` as its read-only `/`.
    Load {
        /// The prepared program.
        program: ProgramImage,
        /// `--root`.
        root: Option<PathBuf>,
    },
}

/// Builds a [`Node`].
#[derive(Debug)]
pub struct NodeBuilder<'a> {
    cfg: &'a NodeConfig,
    image: &'a elf::GuestImage<'a>,
    sink: Box<dyn ConsoleSink>,
    linux: Option<LinuxSpec>,
    fabric: FabricSpec,
    api_socket: Option<PathBuf>,
}

impl<'a> NodeBuilder<'a> {
    /// A node of shape `cfg` booting `image`, printing console lines to `sink`; a single
    /// node running a built-in workload unless told otherwise.
    pub fn new(
        cfg: &'a NodeConfig,
        image: &'a elf::GuestImage<'a>,
        sink: Box<dyn ConsoleSink>,
    ) -> Self {
        NodeBuilder {
            cfg,
            image,
            sink,
            linux: None,
            fabric: FabricSpec::None,
            api_socket: None,
        }
    }

    /// Runs (a share of) a Linux program.
    pub fn linux(mut self, linux: LinuxSpec) -> Self {
        self.linux = Some(linux);
        self
    }

    /// Joins the other nodes through `fabric`.
    pub fn fabric(mut self, fabric: FabricSpec) -> Self {
        self.fabric = fabric;
        self
    }

    /// Serves the management API on a new socket at `path` while the node runs.
    pub fn api_socket(mut self, path: Option<PathBuf>) -> Self {
        self.api_socket = path;
        self
    }

    /// Assembles the node.
    pub fn build(self) -> Result<Node, NodeError> {
        let cfg = self.cfg;
        cfg.validate()?;
        let logical = cfg.logical_bytes();
        let kvm = open_kvm()?;
        let vm = kvm.create_vm().map_err(kvm_err("create a VM"))?;
        let memory = LogicalMemory::new(logical)?;
        let mut private_region = PrivateRegion::new().map_err(NodeError::MapPrivate)?;
        let cr3 = private::build(private_region.bytes(), logical);
        register_memory(&vm, &memory, &private_region)?;
        // The image lives in node 0's home range: only the home holds the boot contents,
        // other nodes fetch the pages they touch.
        if cfg.node_id == 0 {
            load_image(&memory, self.image)?;
        }

        let vp_count = cfg.nodes * cfg.vps_per_node;
        let mut vcpus = Vec::new();
        for vp in (0..vp_count).filter(|vp| cfg.node_of_vp(*vp) == cfg.node_id) {
            vcpus.push((vp, create_vcpu(&kvm, &vm, vp)?));
        }
        let tsc_khz = vcpus
            .first()
            .and_then(|(_, v)| v.get_tsc_khz().ok())
            .map_or(0, u64::from);
        let configuration = Configuration::new(cfg.clone(), tsc_khz)?;
        let config_table = configuration.table();
        let vps: Vec<Arc<VpControl>> = (0..vp_count)
            .map(|vp| Arc::new(VpControl::new(vp, cfg.node_of_vp(vp))))
            .collect();
        let control = Arc::new(ControlPlane::new(
            cfg.node_id,
            memory.clone(),
            vps,
            Console::new(self.sink),
            configuration,
        ));
        let linux = match self.linux {
            None => None,
            Some(spec) => Some(ready_linux(cfg, spec, &memory, &mut private_region)?),
        };
        let local: Vec<u32> = vcpus.iter().map(|(vp, _)| *vp).collect();
        let fabric = connect_fabric(self.fabric, cfg, &config_table, &local, &memory, &control)?;
        let server = Arc::new(VirtualServer::new(ServerParts {
            control,
            timers: Timers::new(),
            cr3,
            fabric,
            linux,
        }));
        let api = match self.api_socket {
            Some(path) => Some(ApiServer::start(
                &path,
                Arc::new(NodeApi::new(server.clone())),
            )?),
            None => None,
        };
        Ok(Node {
            server,
            api,
            vcpus,
            entry: self.image.entry,
            vm,
            kvm,
            private_region,
        })
    }
}

/// Registers logical memory (slot 0, at guest physical 0) and the private region (slot 1)
/// with KVM.
fn register_memory(
    vm: &VmFd,
    memory: &LogicalMemory,
    private_region: &PrivateRegion,
) -> Result<(), NodeError> {
    let slots = [
        (0, 0, memory.size(), memory.guest_mapping_addr()),
        (
            1,
            private::PRIVATE_GPA,
            private::PRIVATE_BYTES as u64,
            private_region.addr as u64,
        ),
    ];
    for (slot, gpa, size, host) in slots {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host,
        };
        // SAFETY: both host ranges are live mappings of exactly `size` bytes that
        // outlive the VM: `Node` drops the VM before the private region, and the
        // memory is an Arc held by the server.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(kvm_err("register guest memory with KVM"))?;
    }
    Ok(())
}

/// Readies the node for a Linux program's threads (the system call trampoline at
/// virtual page 0 of its VPs); on the loader, writes the program's segments and opens
/// its root.
fn ready_linux(
    cfg: &NodeConfig,
    spec: LinuxSpec,
    memory: &LogicalMemory,
    private_region: &mut PrivateRegion,
) -> Result<LinuxProgram, NodeError> {
    private::map_syscall_trampoline(private_region.bytes());
    let LinuxSpec::Load { program, root } = spec else {
        return Ok(LinuxProgram::default());
    };
    if cfg.node_id != 0 {
        return Err(NodeError::Shape(
            "only node 0 loads the program (it is home for the memory it lies in)".into(),
        ));
    }
    for segment in &program.segments {
        write_segment(
            memory,
            segment.vaddr,
            &segment.data,
            segment.data.len() as u64,
        )?;
    }
    let root_fs = match root {
        None => None,
        Some(dir) => Some(RootFs::open(&dir).map_err(|source| NodeError::Root {
            path: dir.display().to_string(),
            source,
        })?),
    };
    Ok(LinuxProgram {
        descriptor: Some(program.descriptor),
        root_fs,
    })
}

/// Builds the fabric of `spec`, reporting to `control`.
fn connect_fabric(
    spec: FabricSpec,
    cfg: &NodeConfig,
    config_table: &[u8],
    local_vps: &[u32],
    memory: &Arc<LogicalMemory>,
    control: &Arc<ControlPlane>,
) -> Result<Option<Arc<dyn Fabric>>, NodeError> {
    let events = control.clone();
    Ok(match spec {
        FabricSpec::None => None,
        FabricSpec::Software { vs_id, transport } => Some(SoftwareFabric::new(
            config_table,
            vs_id,
            cfg.node_id,
            local_vps,
            memory.clone(),
            transport,
            events,
        )?),
        FabricSpec::Offload {
            vs_id,
            nic,
            process,
        } => Some(OffloadFabric::connect(
            nic,
            config_table,
            vs_id,
            cfg.node_id,
            local_vps,
            memory.clone(),
            process,
            events,
        )?),
    })
}

/// The private region: an anonymous mapping that becomes memory slot 1.
#[derive(Debug)]
pub(super) struct PrivateRegion {
    addr: *mut u8,
}

impl PrivateRegion {
    fn new() -> Result<Self, std::io::Error> {
        // SAFETY: a fresh anonymous private mapping; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                private::PRIVATE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(PrivateRegion { addr: addr.cast() })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is PRIVATE_BYTES long, owned by self, and only the VMM
        // writes it before any VP runs.
        unsafe { std::slice::from_raw_parts_mut(self.addr, private::PRIVATE_BYTES) }
    }
}

impl Drop for PrivateRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once; KVM has been dropped before (field
        // order in run_node keeps the VM alive only inside that function).
        unsafe { libc::munmap(self.addr.cast(), private::PRIVATE_BYTES) };
    }
}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> NodeError {
    move |source| NodeError::Kvm { what, source }
}

/// Environment variable naming the KVM device (default `/dev/kvm`): for hosts that expose
/// it elsewhere, and for testing the error path.
pub const KVM_DEVICE_ENV: &str = "CVMM_KVM_DEVICE";

fn open_kvm() -> Result<Kvm, NodeError> {
    let path = std::env::var_os(KVM_DEVICE_ENV).unwrap_or_else(|| "/dev/kvm".into());
    let path = std::ffi::CString::new(path.as_encoded_bytes())
        .map_err(|_| NodeError::Shape(format!("{KVM_DEVICE_ENV} contains a NUL byte")))?;
    Kvm::new_with_path(&path)
        .map_err(|e| NodeError::OpenKvm(path.to_string_lossy().into_owned(), e))
}

fn load_image(memory: &LogicalMemory, image: &elf::GuestImage<'_>) -> Result<(), NodeError> {
    for segment in &image.segments {
        write_segment(memory, segment.vaddr, segment.data, segment.memsz)?;
    }
    Ok(())
}

/// Copies one loadable segment into (zeroed) logical memory.
fn write_segment(
    memory: &LogicalMemory,
    vaddr: u64,
    data: &[u8],
    memsz: u64,
) -> Result<(), NodeError> {
    let range = UncheckedRange::new(vaddr, data.len() as u64)
        .check(memory.size(), 1)
        .map_err(|_| elf::ElfError::SegmentOutside { vaddr, memsz })?;
    memory
        .write(range, data)
        .map_err(|e| elf::ElfError::Write {
            vaddr,
            reason: e.to_string(),
        })?;
    Ok(())
}

fn create_vcpu(kvm: &Kvm, vm: &VmFd, id: u32) -> Result<VcpuFd, NodeError> {
    let vcpu = vm
        .create_vcpu(u64::from(id))
        .map_err(kvm_err("create a vCPU"))?;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("read supported CPUID"))?;
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
    Ok(vcpu)
}
