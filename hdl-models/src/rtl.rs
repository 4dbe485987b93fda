//! The Verilator model of `rtl/cv_top.v`, driven through the C shim `sim/shim.cpp`.
//!
//! Why a shim and not a binding crate: no Rust-Verilator crate works with Debian's
//! Verilator 5.006, and the model's C++ class is generated per design. The shim exposes a
//! handful of C functions (build, clock, push a frame, push a fault, pop actions, read a
//! page's state, read cycle counters); this module wraps them in [`RtlNode`], one simulated
//! NIC pipeline per node.
//!
//! Only built with feature `hdl-sim` (see the crate docs).

use std::ptr::NonNull;

use nic_firmware::engine::{DirectoryState, DirectoryView, NodeSet, PageState};

/// The C ABI of `sim/shim.cpp`. Struct layouts mirror the C++ ones field for field.
mod ffi {
    /// `CvSim` is opaque: a Verilator context and model.
    #[repr(C)]
    pub struct CvSim {
        _opaque: [u8; 0],
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct CvConfig {
        pub node: u32,
        pub node_count: u32,
        pub vs_id: u32,
        pub nreq: u32,
        pub npend: u32,
        pub map_vector: u32,
        pub page_base: u64,
        pub window_base: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct CvAction {
        pub kind: u32,
        pub err: u32,
        pub state: u32,
        pub data: u32,
        pub vp: u32,
        pub dmav: u32,
        pub dmaw: u32,
        pub dlen: u32,
        pub txv: u32,
        pub irqv: u32,
        pub vec: u32,
        pub reserved: u32,
        pub page: u64,
        pub daddr: u64,
        pub header: [u64; 4],
        pub body: u64,
        pub cycle: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct CvStatus {
        pub cycles: u64,
        pub busy_cycles: u64,
        pub idle: u32,
        pub any_pending: u32,
        pub any_record: u32,
        pub reserved: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct CvParams {
        pub npages: u32,
        pub nreq: u32,
        pub npend: u32,
        pub nvec: u32,
    }

    extern "C" {
        pub fn cv_sim_new(config: *const CvConfig) -> *mut CvSim;
        pub fn cv_sim_free(sim: *mut CvSim);
        pub fn cv_sim_params(params: *mut CvParams);
        pub fn cv_sim_clock(sim: *mut CvSim, cycles: u64);
        pub fn cv_sim_set_home(sim: *mut CvSim, idx: u32, node: u32, valid: u32);
        pub fn cv_sim_steer_write(sim: *mut CvSim, vec: u32, vp: u32, valid: u32);
        pub fn cv_sim_steer_remove(sim: *mut CvSim, vp: u32, to: u32) -> u64;
        pub fn cv_sim_push_message(sim: *mut CvSim, bytes: *const u8, len: usize) -> u64;
        pub fn cv_sim_push_fault(sim: *mut CvSim, page: u64, write: u32, vp: u32) -> u64;
        pub fn cv_sim_run_to_end(sim: *mut CvSim, max_cycles: u64) -> i32;
        pub fn cv_sim_pop_action(sim: *mut CvSim, out: *mut CvAction) -> i32;
        pub fn cv_sim_read_page(
            sim: *mut CvSim,
            idx: u32,
            dir: *mut u32,
            local: *mut u32,
            home: *mut u32,
        );
        pub fn cv_sim_status(sim: *mut CvSim, status: *mut CvStatus);
    }
}

/// Sizes the RTL was built with (the Verilog parameters of `cv_top`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtlParams {
    /// Page indexes (directory, local state and home entries).
    pub pages: usize,
    /// Home request records.
    pub requests: usize,
    /// Pending-fault slots.
    pub pending: usize,
    /// MSI-X vectors in the steering table.
    pub vectors: usize,
}

/// The parameters the model was built with.
pub fn params() -> RtlParams {
    let mut raw = ffi::CvParams::default();
    // SAFETY: cv_sim_params only writes the struct it is given, which lives on our stack.
    unsafe { ffi::cv_sim_params(&mut raw) };
    let size = |v: u32| usize::try_from(v).unwrap_or(0);
    RtlParams {
        pages: size(raw.npages),
        requests: size(raw.nreq),
        pending: size(raw.npend),
        vectors: size(raw.nvec),
    }
}

/// How one simulated pipeline is configured (the `cfg_*` inputs of `cv_top`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtlConfig {
    /// This node.
    pub node: u16,
    /// Nodes in the cluster.
    pub node_count: u16,
    /// The virtual server served.
    pub vs_id: u16,
    /// Logical page number of page index 0.
    pub page_base: u64,
    /// Host address of logical page 0 in the DMA window.
    pub window_base: u64,
    /// Request records in use (more than `pending`, at most [`RtlParams::requests`]).
    pub requests: usize,
    /// Pending-fault slots in use (at least 1, at most [`RtlParams::pending`]).
    pub pending: usize,
    /// Vector of mapping-change interrupts and of completions for VPs without a vector.
    pub map_vector: u8,
}

/// Why the model could not be built or driven.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtlError {
    /// A configuration value does not fit the built model.
    #[error("Configuration does not fit the RTL parameters: {what}")]
    BadConfig {
        /// Which value.
        what: &'static str,
    },
    /// The shim could not create the model.
    #[error("Failed to create the Verilator model")]
    CreateModel,
    /// A measurement scenario did not go as planned (the RTL refused an input or did not
    /// produce the action timed).
    #[error("Measurement scenario failed: {what}")]
    Scenario {
        /// What was missing.
        what: &'static str,
    },
    /// The pipeline did not finish an input in time.
    #[error("Input not finished after {cycles} cycles")]
    Timeout {
        /// Cycles waited.
        cycles: u64,
    },
}

/// What an action record asks for (`A_*` in `rtl/cv_defs.vh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtlActionKind {
    /// End of one input.
    End,
    /// A header-only or forward message.
    Send,
    /// A page read from host memory and sent.
    SendPage,
    /// A page installed (written by DMA if it came with data) and mapped.
    Install,
    /// A page written by DMA without mapping.
    Store,
    /// Host: unmap.
    Invalidate,
    /// Host: write-protect.
    Downgrade,
    /// Host: a VP's fault is resolved.
    FaultDone,
    /// Host: wake watchers.
    Wake,
    /// Any other code (a model bug).
    Unknown(u32),
}

/// One action record as it left the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtlAction {
    /// What it is.
    pub kind: RtlActionKind,
    /// `End`: the first error of the input (0: accepted), as in [`crate::observe::error_code`].
    pub error: u8,
    /// The page.
    pub page: u64,
    /// `Install`: the new state.
    pub state: PageState,
    /// `Install`: the page came with data.
    pub with_data: bool,
    /// `FaultDone`: the VP.
    pub vp: u32,
    /// The DMA request: `(write, host address, bytes)`.
    pub dma: Option<(bool, u64, u32)>,
    /// The wire message: 32-byte header and the first 8 body bytes.
    pub transmit: Option<([u8; 32], [u8; 8])>,
    /// The MSI-X vector raised.
    pub vector: Option<u8>,
    /// The cycle it left the pipeline.
    pub cycle: u64,
}

impl RtlAction {
    fn from_raw(raw: &ffi::CvAction) -> Self {
        let kind = match raw.kind {
            0 => RtlActionKind::End,
            1 => RtlActionKind::Send,
            2 => RtlActionKind::SendPage,
            3 => RtlActionKind::Install,
            4 => RtlActionKind::Store,
            5 => RtlActionKind::Invalidate,
            6 => RtlActionKind::Downgrade,
            7 => RtlActionKind::FaultDone,
            8 => RtlActionKind::Wake,
            other => RtlActionKind::Unknown(other),
        };
        let mut header = [0u8; 32];
        for (chunk, word) in header.chunks_exact_mut(8).zip(raw.header) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        Self {
            kind,
            error: u8::try_from(raw.err).unwrap_or(u8::MAX),
            page: raw.page,
            state: page_state(raw.state),
            with_data: raw.data != 0,
            vp: raw.vp,
            dma: (raw.dmav != 0).then_some((raw.dmaw != 0, raw.daddr, raw.dlen)),
            transmit: (raw.txv != 0).then_some((header, raw.body.to_le_bytes())),
            vector: (raw.irqv != 0).then(|| u8::try_from(raw.vec).unwrap_or(u8::MAX)),
            cycle: raw.cycle,
        }
    }
}

fn page_state(raw: u32) -> PageState {
    match raw {
        1 => PageState::Shared,
        2 => PageState::Exclusive,
        _ => PageState::Invalid,
    }
}

/// Everything one input produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtlStep {
    /// The actions, in order, without the closing `End`.
    pub actions: Vec<RtlAction>,
    /// The input's first error (0: accepted).
    pub error: u8,
    /// The cycle the input was taken (first beat of a frame, or the fault descriptor).
    pub accepted_cycle: u64,
    /// The cycle its `End` left the pipeline.
    pub end_cycle: u64,
}

/// One page as the RTL's block RAMs hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtlPage {
    /// The directory entry (meaningful at the page's home).
    pub directory: DirectoryView,
    /// Requests are queued behind the operation in flight.
    pub queued: bool,
    /// This node's copy.
    pub local: PageState,
    /// The page's home, if the page is configured.
    pub home: Option<u16>,
}

/// Cycle counters and idle flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtlStatus {
    /// Cycles since reset.
    pub cycles: u64,
    /// Cycles the controller worked on an input.
    pub busy_cycles: u64,
    /// No pending fault and no request record in use (`Engine::is_idle`).
    pub engine_idle: bool,
}

/// Cycles an input may take before the model is declared stuck.
const STEP_LIMIT_CYCLES: u64 = 20_000;

/// One simulated NIC pipeline.
#[derive(Debug)]
pub struct RtlNode {
    sim: NonNull<ffi::CvSim>,
    config: RtlConfig,
}

impl RtlNode {
    /// Builds and resets a model. Configure the homes with [`RtlNode::set_home`] before use.
    pub fn new(config: RtlConfig) -> Result<Self, RtlError> {
        let built = params();
        if config.node >= config.node_count || config.node_count > 16 {
            return Err(RtlError::BadConfig { what: "node" });
        }
        if config.pending == 0 || config.pending > built.pending {
            return Err(RtlError::BadConfig { what: "pending" });
        }
        if config.requests <= config.pending || config.requests > built.requests {
            return Err(RtlError::BadConfig { what: "requests" });
        }
        if config.map_vector >= 64 {
            return Err(RtlError::BadConfig { what: "map_vector" });
        }
        let small = |v: usize| u32::try_from(v).map_err(|_| RtlError::BadConfig { what: "size" });
        let raw = ffi::CvConfig {
            node: u32::from(config.node),
            node_count: u32::from(config.node_count),
            vs_id: u32::from(config.vs_id),
            nreq: small(config.requests)?,
            npend: small(config.pending)?,
            map_vector: u32::from(config.map_vector),
            page_base: config.page_base,
            window_base: config.window_base,
        };
        // SAFETY: cv_sim_new reads the config struct, which outlives the call, and returns
        // either null or a model that only cv_sim_free releases (in Drop).
        let sim = unsafe { ffi::cv_sim_new(&raw) };
        let sim = NonNull::new(sim).ok_or(RtlError::CreateModel)?;
        Ok(Self { sim, config })
    }

    /// The configuration.
    pub fn config(&self) -> &RtlConfig {
        &self.config
    }

    /// Says that page index `index` has its home at `home` (None: the page is unknown).
    /// Also sets the page's initial state, as `Engine::new`: Exclusive at its home.
    pub fn set_home(&mut self, index: usize, home: Option<u16>) -> Result<(), RtlError> {
        if index >= params().pages {
            return Err(RtlError::BadConfig { what: "page index" });
        }
        let idx = u32::try_from(index).map_err(|_| RtlError::BadConfig { what: "page index" })?;
        let node = u32::from(home.unwrap_or(0));
        // SAFETY: self.sim is a live model (created in new, freed only in Drop).
        unsafe { ffi::cv_sim_set_home(self.sim.as_ptr(), idx, node, u32::from(home.is_some())) };
        Ok(())
    }

    /// Programs steering entry `vector`: the VP whose thread listens on it, or none.
    pub fn steer_write(&mut self, vector: u8, vp: Option<u32>) -> Result<(), RtlError> {
        if usize::from(vector) >= params().vectors || vp.is_some_and(|vp| vp >= 64) {
            return Err(RtlError::BadConfig {
                what: "steering entry",
            });
        }
        let (vp, valid) = (vp.unwrap_or(0), u32::from(vp.is_some()));
        // SAFETY: self.sim is a live model.
        unsafe { ffi::cv_sim_steer_write(self.sim.as_ptr(), u32::from(vector), vp, valid) };
        Ok(())
    }

    /// VP `vp` is removed: every vector steered to it goes to `to`. Returns the cycles the
    /// rewrite took.
    pub fn steer_remove(&mut self, vp: u32, to: u32) -> Result<u64, RtlError> {
        if vp >= 64 || to >= 64 {
            return Err(RtlError::BadConfig { what: "vp" });
        }
        // SAFETY: self.sim is a live model.
        Ok(unsafe { ffi::cv_sim_steer_remove(self.sim.as_ptr(), vp, to) })
    }

    /// Runs `cycles` idle clock cycles.
    pub fn clock(&mut self, cycles: u64) {
        // SAFETY: self.sim is a live model.
        unsafe { ffi::cv_sim_clock(self.sim.as_ptr(), cycles) };
    }

    /// Feeds one received frame (an encoded wire message) and runs until its `End`.
    pub fn push_message(&mut self, frame: &[u8]) -> Result<RtlStep, RtlError> {
        // SAFETY: self.sim is a live model; the shim reads exactly `frame.len()` bytes from
        // `frame`, which outlives the call.
        let accepted =
            unsafe { ffi::cv_sim_push_message(self.sim.as_ptr(), frame.as_ptr(), frame.len()) };
        self.finish(accepted)
    }

    /// Feeds one local fault (a fetch descriptor) and runs until its `End`.
    pub fn push_fault(&mut self, page: u64, write: bool, vp: u32) -> Result<RtlStep, RtlError> {
        // SAFETY: self.sim is a live model.
        let accepted =
            unsafe { ffi::cv_sim_push_fault(self.sim.as_ptr(), page, u32::from(write), vp) };
        self.finish(accepted)
    }

    fn finish(&mut self, accepted_cycle: u64) -> Result<RtlStep, RtlError> {
        // SAFETY: self.sim is a live model.
        let done = unsafe { ffi::cv_sim_run_to_end(self.sim.as_ptr(), STEP_LIMIT_CYCLES) };
        if done == 0 {
            return Err(RtlError::Timeout {
                cycles: STEP_LIMIT_CYCLES,
            });
        }
        let mut actions = Vec::new();
        let mut raw = ffi::CvAction::default();
        // SAFETY: self.sim is a live model; the shim writes one CvAction into `raw`.
        while unsafe { ffi::cv_sim_pop_action(self.sim.as_ptr(), &mut raw) } != 0 {
            let action = RtlAction::from_raw(&raw);
            if action.kind == RtlActionKind::End {
                return Ok(RtlStep {
                    actions,
                    error: action.error,
                    accepted_cycle,
                    end_cycle: action.cycle,
                });
            }
            actions.push(action);
        }
        Err(RtlError::Timeout {
            cycles: STEP_LIMIT_CYCLES,
        })
    }

    /// Reads page index `index` from the block RAMs (one clock cycle).
    pub fn read_page(&mut self, index: usize) -> Result<RtlPage, RtlError> {
        let idx = u32::try_from(index)
            .ok()
            .filter(|_| index < params().pages)
            .ok_or(RtlError::BadConfig { what: "page index" })?;
        let (mut dir, mut local, mut home) = (0u32, 0u32, 0u32);
        // SAFETY: self.sim is a live model; the shim writes the three u32s given.
        unsafe { ffi::cv_sim_read_page(self.sim.as_ptr(), idx, &mut dir, &mut local, &mut home) };
        let sharers = NodeSet::EMPTY;
        let sharers = (0..16u16)
            .filter(|n| dir & (1 << n) != 0)
            .fold(sharers, NodeSet::with);
        let owner = u16::try_from((dir >> 16) & 0xf).unwrap_or(0);
        let state = if dir & (1 << 20) != 0 {
            DirectoryState::Exclusive(owner)
        } else {
            DirectoryState::Shared(sharers)
        };
        Ok(RtlPage {
            directory: DirectoryView {
                state,
                busy: dir & (1 << 21) != 0,
            },
            queued: dir & (1 << 22) != 0,
            local: page_state(local),
            home: (home & 0x10 != 0).then(|| u16::try_from(home & 0xf).unwrap_or(0)),
        })
    }

    /// Cycle counters and idle flags.
    pub fn status(&mut self) -> RtlStatus {
        let mut raw = ffi::CvStatus::default();
        // SAFETY: self.sim is a live model; the shim writes the struct given.
        unsafe { ffi::cv_sim_status(self.sim.as_ptr(), &mut raw) };
        RtlStatus {
            cycles: raw.cycles,
            busy_cycles: raw.busy_cycles,
            engine_idle: raw.any_pending == 0 && raw.any_record == 0,
        }
    }
}

impl Drop for RtlNode {
    fn drop(&mut self) {
        // SAFETY: self.sim came from cv_sim_new and is freed exactly once, here.
        unsafe { ffi::cv_sim_free(self.sim.as_ptr()) };
    }
}
