//! One node's share of a virtual server: its VPs, its logical memory, its devices and
//! timers, and how the server ends.
//!
//! Every access the VMM makes to guest memory goes through the helpers here
//! (`read_guest`, `write_guest`, ...), which take ranges already checked against logical
//! memory (`vima::call::LogicalRange`): the only way a guest-supplied address reaches
//! memory.

mod control;
mod outcome;
pub mod reconfig;

use std::sync::Arc;
use std::time::Instant;

use vima::call::{LogicalRange, UncheckedRange};
use vima::interrupt::VpShared;
use vima::layout::{is_per_node, vp_shared_addr, PAGE_SIZE};
use vima::wire::Body;
use vima::Status;

use crate::devices::root_fs::RootFs;
use crate::fabric::Fabric;
use crate::memory::LogicalMemory;
use crate::metrics::VmmStats;
use crate::sched::timer::Timers;
use crate::vp::{RunState, VpControl};

pub use control::ControlPlane;
pub use outcome::{GuestFault, Outcome, GUEST_FAULT_EXIT};

/// What a node of a server that runs a Linux program holds for it.
#[derive(Debug, Default)]
pub struct LinuxProgram {
    /// The program's descriptor (`ProgramRead`), on the node that loaded it (node 0).
    pub descriptor: Option<Vec<u8>>,
    /// The program's read-only root (`--root`), on node 0.
    pub root_fs: Option<RootFs>,
}

/// The parts a server is assembled from ([`crate::node::NodeBuilder`] makes them).
#[derive(Debug)]
pub struct ServerParts {
    /// The control plane (VPs, console, outcome, configuration).
    pub control: Arc<ControlPlane>,
    /// Per-VP timers.
    pub timers: Arc<Timers>,
    /// CR3 of the page tables every VP uses.
    pub cr3: u64,
    /// The fabric to the other nodes (none on a single node).
    pub fabric: Option<Arc<dyn Fabric>>,
    /// The Linux program, on every node of a server that runs one.
    pub linux: Option<LinuxProgram>,
}

/// One node's share of a virtual server.
#[derive(Debug)]
pub struct VirtualServer {
    /// This node.
    pub node_id: u32,
    /// Bytes of logical memory.
    pub logical_bytes: u64,
    /// Logical memory.
    pub memory: Arc<LogicalMemory>,
    /// Local VP control, the console, the outcome and the configuration (`ConfigRead`);
    /// what the fabric reports to.
    pub control: Arc<ControlPlane>,
    /// Per-VP timers.
    pub timers: Arc<Timers>,
    /// VP-side counters.
    pub stats: VmmStats,
    /// When the virtual server started (`TimeRead` counts from here).
    pub started_at: Instant,
    /// CR3 of the page tables every VP uses.
    pub cr3: u64,
    /// The fabric to the other nodes (absent on a single node).
    pub fabric: Option<Arc<dyn Fabric>>,
    /// Nodes in the virtual computer.
    pub nodes: u32,
    /// The Linux program's descriptor (`ProgramRead`), on the node that loaded it.
    pub program: Option<Vec<u8>>,
    /// cvmm's standard input, for the program (`StreamRead`).
    pub console_input: crate::devices::console_input::ConsoleInput,
    /// The program's read-only root (`--root`), on node 0.
    pub root_fs: Option<RootFs>,
    /// True when the server runs a Linux program: a fault the guest cannot take ends it
    /// as Linux ends a process (SIGSEGV, 139), not as a guest fault.
    pub runs_linux_program: bool,
}

impl VirtualServer {
    /// Assembles a server from its parts; nothing runs yet.
    pub fn new(parts: ServerParts) -> Self {
        let control = parts.control;
        let memory = control.memory().clone();
        let nodes = control
            .vps()
            .iter()
            .map(|vp| vp.node + 1)
            .max()
            .unwrap_or(1);
        let runs_linux_program = parts.linux.is_some();
        let linux = parts.linux.unwrap_or_default();
        VirtualServer {
            node_id: control.node_id(),
            logical_bytes: memory.size(),
            memory,
            control,
            timers: parts.timers,
            stats: VmmStats::default(),
            started_at: Instant::now(),
            cr3: parts.cr3,
            fabric: parts.fabric,
            nodes,
            program: linux.descriptor,
            console_input: Default::default(),
            root_fs: linux.root_fs,
            runs_linux_program,
        }
    }

    /// VP `id`, if it exists.
    pub fn vp(&self, id: u32) -> Option<&Arc<VpControl>> {
        self.control.vp(id)
    }

    /// True when `range` must be accessed coherently: on a cluster, outside the per-node
    /// region.
    fn coherent(&self, range: LogicalRange) -> bool {
        let last = range.addr() + range.len().max(1) - 1;
        self.fabric.is_some() && !(is_per_node(range.addr()) && is_per_node(last))
    }

    fn guest_ptr(&self, range: LogicalRange) -> *mut u8 {
        (self.memory.guest_mapping_addr() + range.addr()) as *mut u8
    }

    /// Reads a checked range of guest memory. On a cluster this goes through the guest
    /// mapping, so a page not valid here faults and is fetched like a guest access (only
    /// VP threads call this; the fault and fabric threads never do).
    pub fn read_guest(&self, range: LogicalRange) -> Result<Vec<u8>, Status> {
        let len = usize::try_from(range.len()).map_err(|_| Status::BadArgument)?;
        let mut out = vec![0u8; len];
        if self.coherent(range) {
            let src = self.guest_ptr(range);
            for (i, byte) in out.iter_mut().enumerate() {
                // SAFETY: the range was checked against logical memory, which the guest
                // mapping covers for the life of `memory`; volatile because the guest
                // writes concurrently.
                *byte = unsafe { src.add(i).read_volatile() };
            }
            return Ok(out);
        }
        self.memory
            .read(range, &mut out)
            .map_err(|_| Status::BadAddress)?;
        Ok(out)
    }

    /// Writes a checked range of guest memory (coherently on a cluster, as `read_guest`).
    pub fn write_guest(&self, range: LogicalRange, data: &[u8]) -> Result<(), Status> {
        if self.coherent(range) {
            let dst = self.guest_ptr(range);
            let len = usize::try_from(range.len()).unwrap_or(0);
            for (i, byte) in data.iter().take(len).enumerate() {
                // SAFETY: as in read_guest; the write faults for ownership if needed.
                unsafe { dst.add(i).write_volatile(*byte) };
            }
            return Ok(());
        }
        self.memory
            .write(range, data)
            .map_err(|_| Status::BadAddress)
    }

    /// `MemDiscard`: makes the page-aligned `range` read as zero on every node. Pages only
    /// this node holds are freed without the network ([`LogicalMemory::discard`]); the
    /// rest are read coherently and zeroed only if they are not zero already (so a
    /// shared copy of a zero page is not taken from its other holders). Returns how many
    /// pages needed no coherent access.
    pub fn discard(&self, range: LogicalRange) -> Result<u64, Status> {
        let rest = self.memory.discard(range).map_err(|_| Status::BadAddress)?;
        for page in &rest {
            let page_range = UncheckedRange::new(page * PAGE_SIZE, PAGE_SIZE)
                .check(self.logical_bytes, PAGE_SIZE)?;
            if self.read_guest(page_range)?.iter().any(|&b| b != 0) {
                self.write_guest(page_range, &[0u8; vima::wire::PAGE_BYTES])?;
            }
        }
        Ok(range.len() / PAGE_SIZE - rest.len() as u64)
    }

    /// Reads an aligned u64 of guest memory (coherently on a cluster).
    pub fn read_guest_u64(&self, range: LogicalRange) -> Result<u64, Status> {
        if self.coherent(range) {
            let ptr = self.guest_ptr(range).cast::<u64>();
            // SAFETY: checked in range and 8-aligned by the caller's check (the guest
            // mapping is page aligned); an atomic load matches the guest's own accesses.
            let atomic = unsafe { std::sync::atomic::AtomicU64::from_ptr(ptr) };
            return Ok(atomic.load(std::sync::atomic::Ordering::SeqCst));
        }
        self.memory.read_u64(range).map_err(|_| Status::BadAddress)
    }

    fn vp_shared_range(&self, vp: u32, offset: u64, len: u64) -> LogicalRange {
        UncheckedRange::new(vp_shared_addr(vp) + offset, len)
            .check(self.logical_bytes, len.min(8))
            .expect("the per-node region is inside logical memory")
    }

    /// Writes the guest-visible copy of `vp`'s pending bits.
    pub fn mirror_pending(&self, vp: u32, pending: u64) {
        self.control.mirror_pending(vp, pending);
    }

    /// Writes `vp`'s interrupt mask word.
    pub fn write_mask(&self, vp: u32, mask: u32) {
        let range = self.vp_shared_range(vp, 0, 4);
        self.write_guest(range, &mask.to_le_bytes())
            .expect("per-node region is always local");
    }

    /// Resets `vp`'s VpShared block for a (re)start: masked, its id, pending bits kept.
    pub fn reset_vp_shared(&self, vp: u32) {
        let pending = self
            .vp(vp)
            .map_or(0, |c| *c.pending.lock().expect("pending lock"));
        let block = VpShared {
            mask: 1,
            vp_id: vp,
            pending,
            ..VpShared::default()
        };
        let range = self.vp_shared_range(vp, 0, std::mem::size_of::<VpShared>() as u64);
        self.write_guest(range, bytemuck::bytes_of(&block))
            .expect("per-node region is always local");
    }

    /// Makes `vector` pending on VP `vp` and kicks it; a VP on another node gets an IPI
    /// message.
    pub fn post_interrupt(&self, vp: u32, vector: u8) -> Result<(), Status> {
        let control = self.vp(vp).ok_or(Status::BadVp)?;
        if control.node != self.node_id {
            let fabric = self.fabric.as_ref().ok_or(Status::BadVp)?;
            fabric.send_control(control.node, Body::Ipi { vp, vector });
            return Ok(());
        }
        self.control.post_local(control, vector);
        Ok(())
    }

    /// Asks a stopped VP to start (on another node: a VpStart message; its node checks
    /// that it is stopped).
    pub fn start_vp(&self, vp: &VpControl, request: RunState) -> Result<(), Status> {
        if vp.node == self.node_id {
            return self.control.start_local(vp, request);
        }
        let RunState::StartRequested {
            entry,
            stack_top,
            arg,
        } = request
        else {
            return Err(Status::BadArgument);
        };
        let fabric = self.fabric.as_ref().ok_or(Status::BadVp)?;
        fabric.send_control(
            vp.node,
            Body::VpStart {
                vp: vp.id,
                entry,
                stack_top,
                arg,
            },
        );
        Ok(())
    }

    /// A VP wrote console bytes: complete lines are printed here on the console's node
    /// (node 0) or sent there.
    pub fn console_write(&self, vp: u32, bytes: &[u8]) {
        let console = self.control.console();
        for line in console.write(vp, bytes) {
            match &self.fabric {
                Some(fabric) if self.node_id != 0 => {
                    fabric.send_control(
                        0,
                        Body::ConsoleLine {
                            vp,
                            line: line.as_bytes(),
                        },
                    );
                }
                _ => console.print_line(vp, self.node_id, &line),
            }
        }
    }

    /// `StreamWrite`: the program's bytes to this process's standard output or error,
    /// unchanged. Every node process writes its own VPs' output: `cvmm run` hands its
    /// stdout and stderr down to the node processes it starts.
    pub fn stream_write(&self, stream: u64, bytes: &[u8]) -> Result<(), Status> {
        use std::io::Write;
        let written = match stream {
            vima::call::STREAM_STDOUT => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            vima::call::STREAM_STDERR => std::io::stderr().lock().write_all(bytes),
            _ => return Err(Status::BadArgument),
        };
        // A closed pipe is the reader's choice (as EPIPE would be on Linux); the guest
        // learns the count it asked for either way.
        let _ = written;
        Ok(())
    }

    /// A fault of a Linux program the guest kernel could not take (no room for the
    /// exception frame: a stack pointer outside memory, or a triple fault): ends the
    /// program as Linux would end a process whose stack is unusable, with SIGSEGV.
    pub fn kill_linux_program(&self, what: &str) {
        eprintln!("cvmm: program killed by SIGSEGV: the fault could not be delivered ({what})");
        self.exit_everywhere(128 + 11);
    }

    /// `VsExit`: ends the server here and on every other node.
    pub fn exit_everywhere(&self, status: u64) {
        if let Some(fabric) = &self.fabric {
            fabric.broadcast(self.nodes, Body::VsExit { status });
        }
        self.finish(Outcome::Exited(status));
    }

    /// A VP stopped itself; a single-node server ends when none runs any more.
    pub fn vp_stopped(&self) {
        // A node cannot see the other nodes' VPs: on a cluster the server ends on VsExit.
        if self.fabric.is_none() && self.control.all_stopped() {
            self.finish(Outcome::AllStopped);
        }
    }

    /// Ends the server with `outcome` (the first outcome wins) and wakes every VP.
    pub fn finish(&self, outcome: Outcome) {
        self.control.finish(outcome);
    }

    /// True once the server ended.
    pub fn is_finished(&self) -> bool {
        self.control.is_finished()
    }

    /// Blocks until the server ends.
    pub fn wait(&self) -> Outcome {
        self.control.wait()
    }
}

/// Servers for unit tests, built without KVM: the server holds no KVM object (the vCPUs
/// belong to the VP threads), so ViMA calls and interrupt delivery can be driven with
/// plain registers.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::devices::console::{Console, ConsoleSink};
    use crate::node::NodeConfig;
    use crate::server::reconfig::Configuration;

    #[derive(Debug)]
    struct Quiet;

    impl ConsoleSink for Quiet {
        fn line(&self, _vp: u32, _node: u32, _line: &str) {}
    }

    /// A single node with `vps` VPs and 8 MiB of logical memory, nothing running.
    pub(crate) fn single_node(vps: u32) -> VirtualServer {
        let cfg = NodeConfig {
            node_id: 0,
            nodes: 1,
            vps_per_node: vps,
            mem_mib_per_node: 8,
            cmdline: "test".into(),
        };
        let memory = LogicalMemory::new(cfg.logical_bytes()).expect("memory");
        let vp_controls = (0..vps).map(|vp| Arc::new(VpControl::new(vp, 0))).collect();
        let control = Arc::new(ControlPlane::new(
            0,
            memory,
            vp_controls,
            Console::new(Box::new(Quiet)),
            Configuration::new(cfg, 1_000_000).expect("table"),
        ));
        VirtualServer::new(ServerParts {
            control,
            timers: Timers::new(),
            cr3: 0,
            fabric: None,
            linux: None,
        })
    }
}
