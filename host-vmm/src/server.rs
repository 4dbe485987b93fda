//! One node's share of a virtual server: its VPs, its logical memory, its devices and
//! timers, and how the server ends.
//!
//! Every access the VMM makes to guest memory goes through the helpers here
//! (`read_guest`, `write_guest`, ...), which take ranges already checked against logical
//! memory (`vima::call::LogicalRange`): the only way a guest-supplied address reaches
//! memory.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use kvm_ioctls::VcpuFd;
use vima::call::{LogicalRange, UncheckedRange};
use vima::interrupt::{VpShared, VP_SHARED_PENDING_OFFSET};
use vima::layout::{is_per_node, vp_shared_addr, PAGE_SIZE};
use vima::wire::Body;
use vima::Status;

use crate::devices::console::Console;
use crate::fabric::ClusterLink;
use crate::memory::LogicalMemory;
use crate::metrics::VmmStats;
use crate::sched::timer::Timers;
use crate::vp::{RunState, VpControl};

/// How a virtual server ended (on this node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A VP called `VsExit(status)`.
    Exited(u64),
    /// Every VP stopped itself.
    AllStopped,
    /// A VP faulted; the server cannot go on.
    GuestFault(GuestFault),
    /// The VMM itself failed.
    VmmError(String),
}

impl Outcome {
    /// The exit status `cvmm` returns: the guest's for `VsExit`, 0 when all VPs stopped,
    /// [`GUEST_FAULT_EXIT`] for a guest fault, 1 for a VMM failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(status) => i32::from(u8::try_from(status & 0xff).expect("masked")),
            Outcome::AllStopped => 0,
            Outcome::GuestFault(_) => GUEST_FAULT_EXIT,
            Outcome::VmmError(_) => 1,
        }
    }
}

/// Exit status of `cvmm` when the guest faulted (EX_SOFTWARE).
pub const GUEST_FAULT_EXIT: i32 = 70;

/// A guest fault, with the registers of the VP that took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFault {
    /// The VP.
    pub vp: u32,
    /// Its node.
    pub node: u32,
    /// What happened.
    pub what: String,
    /// A register dump, one line per group.
    pub registers: String,
}

impl GuestFault {
    /// Reads the VP's registers for the report (best effort: a failing read is reported).
    pub fn capture(vp: u32, node: u32, what: String, vcpu: &VcpuFd) -> Self {
        let registers = match (vcpu.get_regs(), vcpu.get_sregs()) {
            (Ok(r), Ok(s)) => format!(
                "rip={:#018x} rsp={:#018x} rflags={:#x}\n\
                 rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n\
                 rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}\n\
                 r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}\n\
                 r13={:#018x} r14={:#018x} r15={:#018x}\n\
                 cs={:#x} ss={:#x} cr2={:#x} cr3={:#x} gs.base={:#x}",
                r.rip,
                r.rsp,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                r.rsi,
                r.rdi,
                r.rbp,
                r.r8,
                r.r9,
                r.r10,
                r.r11,
                r.r12,
                r.r13,
                r.r14,
                r.r15,
                s.cs.selector,
                s.ss.selector,
                s.cr2,
                s.cr3,
                s.gs.base
            ),
            (Err(e), _) | (_, Err(e)) => format!("(registers unavailable: {e})"),
        };
        GuestFault {
            vp,
            node,
            what,
            registers,
        }
    }
}

impl std::fmt::Display for GuestFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "guest fault on vp {} (node {}): {}",
            self.vp, self.node, self.what
        )?;
        write!(f, "{}", self.registers)
    }
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
    /// The encoded configuration (`ConfigRead`).
    pub config_table: Vec<u8>,
    /// Every VP of the virtual server (local ones have threads here).
    pub vps: Vec<Arc<VpControl>>,
    /// The console.
    pub console: Console,
    /// Per-VP timers.
    pub timers: Arc<Timers>,
    /// VP-side counters.
    pub stats: VmmStats,
    /// When the virtual server started (`TimeRead` counts from here).
    pub started_at: Instant,
    /// CR3 of the page tables every VP uses.
    pub cr3: u64,
    /// The fabric to the other nodes (absent on a single node).
    pub fabric: OnceLock<Arc<dyn ClusterLink>>,
    /// Nodes in the virtual computer.
    pub nodes: u32,
    /// The Linux program's descriptor (`ProgramRead`), on the node that loaded it.
    pub program: OnceLock<Vec<u8>>,
    /// cvmm's standard input, for the program (`StreamRead`).
    pub console_input: crate::devices::console_input::ConsoleInput,
    /// The program's read-only root (`--root`), on node 0.
    pub root_fs: OnceLock<crate::devices::root_fs::RootFs>,
    /// True when the server runs a Linux program: a fault the guest cannot take ends it
    /// as Linux ends a process (SIGSEGV, 139), not as a guest fault.
    pub runs_linux_program: std::sync::atomic::AtomicBool,
    outcome: Mutex<Option<Outcome>>,
    finished: Condvar,
}

impl VirtualServer {
    /// Assembles a server; nothing runs yet.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: u32,
        memory: Arc<LogicalMemory>,
        config_table: Vec<u8>,
        vps: Vec<Arc<VpControl>>,
        console: Console,
        timers: Arc<Timers>,
        cr3: u64,
    ) -> Self {
        let nodes = vps.iter().map(|vp| vp.node + 1).max().unwrap_or(1);
        VirtualServer {
            node_id,
            logical_bytes: memory.size(),
            memory,
            config_table,
            vps,
            console,
            timers,
            stats: VmmStats::default(),
            started_at: Instant::now(),
            cr3,
            fabric: OnceLock::new(),
            nodes,
            program: OnceLock::new(),
            console_input: Default::default(),
            root_fs: OnceLock::new(),
            runs_linux_program: std::sync::atomic::AtomicBool::new(false),
            outcome: Mutex::new(None),
            finished: Condvar::new(),
        }
    }

    /// VP `id`, if it exists.
    pub fn vp(&self, id: u32) -> Option<&Arc<VpControl>> {
        self.vps.get(usize::try_from(id).ok()?)
    }

    /// True when `range` must be accessed coherently: on a cluster, outside the per-node
    /// region.
    fn coherent(&self, range: LogicalRange) -> bool {
        let last = range.addr() + range.len().max(1) - 1;
        self.fabric.get().is_some() && !(is_per_node(range.addr()) && is_per_node(last))
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
        let range = self.vp_shared_range(vp, VP_SHARED_PENDING_OFFSET, 8);
        self.memory
            .write_u64(range, pending)
            .expect("per-node region is always local");
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
            let fabric = self.fabric.get().ok_or(Status::BadVp)?;
            fabric.send_control(control.node, Body::Ipi { vp, vector });
            return Ok(());
        }
        {
            let mut pending = control.pending.lock().expect("pending lock");
            *pending |= 1u64 << vector;
            self.mirror_pending(vp, *pending);
        }
        control.kick();
        Ok(())
    }

    /// Asks a stopped VP to start (on another node: a VpStart message; its node checks
    /// that it is stopped).
    pub fn start_vp(&self, vp: &VpControl, request: RunState) -> Result<(), Status> {
        if vp.node != self.node_id {
            let RunState::StartRequested {
                entry,
                stack_top,
                arg,
            } = request
            else {
                return Err(Status::BadArgument);
            };
            let fabric = self.fabric.get().ok_or(Status::BadVp)?;
            fabric.send_control(
                vp.node,
                Body::VpStart {
                    vp: vp.id,
                    entry,
                    stack_top,
                    arg,
                },
            );
            return Ok(());
        }
        let mut state = vp.state.lock().expect("state lock");
        if *state != RunState::Stopped {
            return Err(Status::VpBusy);
        }
        *state = request;
        vp.started.notify_all();
        Ok(())
    }

    /// A VP wrote console bytes: complete lines are printed here on the console's node
    /// (node 0) or sent there.
    pub fn console_write(&self, vp: u32, bytes: &[u8]) {
        for line in self.console.write(vp, bytes) {
            match self.fabric.get() {
                Some(fabric) if self.node_id != 0 => {
                    fabric.send_control(
                        0,
                        Body::ConsoleLine {
                            vp,
                            line: line.as_bytes(),
                        },
                    );
                }
                _ => self.console.print_line(vp, self.node_id, &line),
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
        if let Some(fabric) = self.fabric.get() {
            fabric.broadcast(self.nodes, Body::VsExit { status });
        }
        self.finish(Outcome::Exited(status));
    }

    /// A VP stopped itself; a single-node server ends when none runs any more.
    pub fn vp_stopped(&self) {
        // A node cannot see the other nodes' VPs: on a cluster the server ends on VsExit.
        if self.fabric.get().is_some() {
            return;
        }
        let any_alive = self
            .vps
            .iter()
            .any(|vp| *vp.state.lock().expect("state lock") != RunState::Stopped);
        if !any_alive {
            self.finish(Outcome::AllStopped);
        }
    }

    /// Ends the server with `outcome` (the first outcome wins) and wakes every VP.
    pub fn finish(&self, outcome: Outcome) {
        {
            let mut slot = self.outcome.lock().expect("outcome lock");
            if slot.is_none() {
                *slot = Some(outcome);
            }
        }
        self.finished.notify_all();
        for vp in &self.vps {
            // Take the state lock so a VP parked in wait_for_start cannot miss this.
            let _state = vp.state.lock().expect("state lock");
            vp.started.notify_all();
            vp.kick();
        }
    }

    /// True once the server ended.
    pub fn is_finished(&self) -> bool {
        self.outcome.lock().expect("outcome lock").is_some()
    }

    /// Blocks until the server ends.
    pub fn wait(&self) -> Outcome {
        let mut slot = self.outcome.lock().expect("outcome lock");
        loop {
            if let Some(outcome) = slot.as_ref() {
                return outcome.clone();
            }
            slot = self.finished.wait(slot).expect("outcome lock");
        }
    }
}
