//! Runs one node: creates the KVM VM, logical memory, page tables, loads the guest,
//! starts the VP threads, and waits for the virtual server to end.

use std::sync::Arc;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::Serialize;
use thiserror::Error;
use vima::call::UncheckedRange;
use vima::config::{self, ConfigInput, DeviceDesc, DeviceKind, MemRange, NodeDesc, VpDesc};
use vima::layout::{BOOT_STACK_TOP, MAX_LOGICAL_BYTES, MAX_VPS, MIN_LOGICAL_BYTES};

use crate::boot::program_layout::ProgramImage;
use crate::boot::{elf, private};
use crate::devices::console::{Console, ConsoleSink};
use crate::memory::{LocalResolver, LogicalMemory, MemoryError, PageResolver};
use crate::metrics::VmmStatsSnapshot;
use crate::sched::timer::Timers;
use crate::server::{Outcome, VirtualServer};
use crate::vp::{spawn_vp_thread, RunState, VpControl};

/// The shape of the virtual server as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node.
    pub node_id: u32,
    /// Nodes in the virtual computer.
    pub nodes: u32,
    /// VPs on each node.
    pub vps_per_node: u32,
    /// Logical memory each node is home for, in MiB.
    pub mem_mib_per_node: u64,
    /// The guest command line.
    pub cmdline: String,
}

impl NodeConfig {
    /// Total logical memory in bytes.
    pub fn logical_bytes(&self) -> u64 {
        self.mem_mib_per_node.saturating_mul(u64::from(self.nodes)) << 20
    }

    /// Checks the shape; each error is one sentence a user can act on.
    pub fn validate(&self) -> Result<(), NodeError> {
        let vps = u64::from(self.nodes) * u64::from(self.vps_per_node);
        if self.nodes == 0 || self.vps_per_node == 0 {
            return Err(NodeError::Shape(
                "there must be at least one node and one VP per node".into(),
            ));
        }
        if vps > MAX_VPS as u64 {
            return Err(NodeError::Shape(format!(
                "{vps} VPs requested, at most {MAX_VPS} are supported"
            )));
        }
        if self.nodes as usize > vima::layout::MAX_NODES || self.node_id >= self.nodes {
            return Err(NodeError::Shape(format!(
                "node id {} is not below the node count {} (at most {})",
                self.node_id,
                self.nodes,
                vima::layout::MAX_NODES
            )));
        }
        let bytes = self.logical_bytes();
        if self.mem_mib_per_node << 20 < MIN_LOGICAL_BYTES || bytes > MAX_LOGICAL_BYTES {
            return Err(NodeError::Shape(format!(
                "memory per node must be at least {} MiB and in total at most {} MiB",
                MIN_LOGICAL_BYTES >> 20,
                MAX_LOGICAL_BYTES >> 20
            )));
        }
        if self.cmdline.len() > config::MAX_CMDLINE {
            return Err(NodeError::Shape(format!(
                "the guest command line is longer than {} bytes",
                config::MAX_CMDLINE
            )));
        }
        Ok(())
    }

    /// The node each VP runs on: VPs are numbered node by node.
    pub fn node_of_vp(&self, vp: u32) -> u32 {
        vp / self.vps_per_node
    }
}

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

/// What a node reports when its server ended.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// Node id.
    pub id: u32,
    /// How the server ended, in words.
    #[serde(skip)]
    pub outcome: Outcome,
    /// VP-side counters.
    #[serde(flatten)]
    pub vmm: VmmStatsSnapshot,
    /// Memory counters.
    #[serde(flatten)]
    pub memory: crate::memory::FaultStatsSnapshot,
    /// Every console line, in order.
    #[serde(skip)]
    pub console: Vec<String>,
}

/// The private region: an anonymous mapping that becomes memory slot 1.
#[derive(Debug)]
struct PrivateRegion {
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

/// Builds the configuration table the guest reads.
pub fn build_config_table(cfg: &NodeConfig, tsc_khz: u64) -> Result<Vec<u8>, NodeError> {
    let nodes: Vec<NodeDesc> = (0..cfg.nodes)
        .map(|n| NodeDesc {
            node_id: n,
            flags: 0,
        })
        .collect();
    let vps: Vec<VpDesc> = (0..cfg.nodes * cfg.vps_per_node)
        .map(|vp| VpDesc {
            vp_id: vp,
            node_id: cfg.node_of_vp(vp),
        })
        .collect();
    let per_node = cfg.mem_mib_per_node << 20;
    let mem: Vec<MemRange> = (0..cfg.nodes)
        .map(|n| MemRange {
            base: u64::from(n) * per_node,
            size: per_node,
            node_id: n,
            flags: 0,
        })
        .collect();
    let devices = [DeviceDesc {
        kind: DeviceKind::Console as u32,
        device_id: 0,
        node_id: 0,
        flags: 0,
    }];
    let input = ConfigInput {
        tsc_khz,
        logical_bytes: cfg.logical_bytes(),
        nodes: &nodes,
        vps: &vps,
        mem_ranges: &mem,
        devices: &devices,
        cmdline: cfg.cmdline.as_bytes(),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let len = config::encode(&input, &mut buf).map_err(NodeError::Config)?;
    buf.truncate(len);
    Ok(buf)
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

/// A node set up and ready to run: VM, memory, image loaded, VP threads not yet started.
#[derive(Debug)]
pub struct Node {
    /// The virtual server state shared by this node's threads.
    pub server: Arc<VirtualServer>,
    /// vCPUs of the VPs on this node, in VP order (taken by [`Node::run`]).
    pub vcpus: Vec<(u32, VcpuFd)>,
    entry: u64,
    // Drop order: the VM before the memory it maps.
    _vm: VmFd,
    _kvm: Kvm,
    private_region: PrivateRegion,
}

impl Node {
    /// Readies this node for a Linux program's threads (every node of a server that runs
    /// one): maps the system call trampoline at virtual page 0 of its VPs.
    pub fn enable_linux(&mut self) {
        private::map_syscall_trampoline(self.private_region.bytes());
        self.server
            .runs_linux_program
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Serves `dir` as the program's read-only `/` from this node (node 0).
    pub fn set_root(&mut self, dir: &std::path::Path) -> Result<(), NodeError> {
        let fs = crate::devices::root_fs::RootFs::open(dir).map_err(|source| NodeError::Root {
            path: dir.display().to_string(),
            source,
        })?;
        self.server
            .root_fs
            .set(fs)
            .map_err(|_| NodeError::Shape("--root was given twice".into()))
    }

    /// Loads a Linux program (`cvmm run -- PATH`) before the VPs start, on node 0, the
    /// home of the low memory it is placed in: writes its segments and keeps the
    /// descriptor for `ProgramRead`. The other nodes call [`Node::enable_linux`] only.
    pub fn load_program(&mut self, program: &ProgramImage) -> Result<(), NodeError> {
        if self.server.node_id != 0 {
            return Err(NodeError::Shape(
                "only node 0 loads the program (it is home for the memory it lies in)".into(),
            ));
        }
        self.enable_linux();
        for segment in &program.segments {
            write_segment(
                &self.server.memory,
                segment.vaddr,
                &segment.data,
                segment.data.len() as u64,
            )?;
        }
        self.server
            .program
            .set(program.descriptor.clone())
            .map_err(|_| NodeError::Shape("a program was loaded twice".into()))
    }

    /// Creates the VM, memory and page tables and loads `image`.
    pub fn create(
        cfg: &NodeConfig,
        image: &elf::GuestImage<'_>,
        sink: Box<dyn ConsoleSink>,
    ) -> Result<Node, NodeError> {
        cfg.validate()?;
        let logical = cfg.logical_bytes();
        let kvm = open_kvm()?;
        let vm = kvm.create_vm().map_err(kvm_err("create a VM"))?;
        let memory = LogicalMemory::new(logical)?;
        let mut private_region = PrivateRegion::new().map_err(NodeError::MapPrivate)?;
        let cr3 = private::build(private_region.bytes(), logical);
        let slots = [
            (0, 0, logical, memory.guest_mapping_addr()),
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
        // The image lives in node 0's home range: only the home holds the boot contents,
        // other nodes fetch the pages they touch.
        if cfg.node_id == 0 {
            load_image(&memory, image)?;
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
        let table = build_config_table(cfg, tsc_khz)?;
        let vps: Vec<Arc<VpControl>> = (0..vp_count)
            .map(|vp| Arc::new(VpControl::new(vp, cfg.node_of_vp(vp))))
            .collect();
        let server = Arc::new(VirtualServer::new(
            cfg.node_id,
            memory,
            table,
            vps,
            Console::new(sink),
            Timers::new(),
            cr3,
        ));
        Ok(Node {
            server,
            vcpus,
            entry: image.entry,
            _vm: vm,
            _kvm: kvm,
            private_region,
        })
    }

    /// Runs a single node until the virtual server ends.
    pub fn run(self) -> Result<NodeReport, NodeError> {
        self.run_with(Arc::new(LocalResolver))
    }

    /// Runs until the virtual server ends, fetching pages not valid here through
    /// `resolver`; VP 0 boots at the image entry on node 0.
    pub fn run_with(mut self, resolver: Arc<dyn PageResolver>) -> Result<NodeReport, NodeError> {
        let server = self.server.clone();
        let memory = server.memory.clone();
        let fault_handler = memory.spawn_fault_handler_with(resolver)?;
        let timer_server = server.clone();
        let timer_thread = server
            .timers
            .spawn(Box::new(move |vp, vector| {
                let _ = timer_server.post_interrupt(vp, vector);
            }))
            .map_err(NodeError::Thread)?;
        let mut threads = Vec::new();
        for (vp, vcpu) in std::mem::take(&mut self.vcpus) {
            let control = server.vp(vp).expect("local VPs exist").clone();
            match spawn_vp_thread(server.clone(), vcpu, control) {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    server.finish(Outcome::VmmError(format!("failed to start VP thread: {e}")));
                    break;
                }
            }
        }
        if server.node_id == 0 && !server.is_finished() {
            let boot = RunState::StartRequested {
                entry: self.entry,
                stack_top: BOOT_STACK_TOP,
                arg: 0,
            };
            server
                .start_vp(&server.vps[0], boot)
                .expect("VP 0 starts stopped");
        }
        let outcome = server.wait();
        server.timers.stop();
        for handle in threads {
            let _ = handle.join();
        }
        let _ = timer_thread.join();
        drop(fault_handler);
        server.console.flush(server.node_id);
        Ok(NodeReport {
            id: server.node_id,
            outcome,
            vmm: server.stats.snapshot(),
            memory: memory.fault_stats().snapshot(),
            console: server.console.lines(),
        })
    }
}

/// Runs this node's share of the virtual server from an ELF guest image until it ends.
pub fn run_node(
    cfg: &NodeConfig,
    guest_elf: &[u8],
    sink: Box<dyn ConsoleSink>,
) -> Result<NodeReport, NodeError> {
    let image = elf::parse(guest_elf, cfg.logical_bytes())?;
    Node::create(cfg, &image, sink)?.run()
}
