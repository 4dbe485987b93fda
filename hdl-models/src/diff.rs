//! The differential check: the RTL pipeline shadows every node of a trace and must do
//! exactly what the `nic-firmware` engine does, input by input.
//!
//! For every input ([`Input`]) the [`RtlShadow`] feeds the node's simulated pipeline the
//! same frame or fault, collects the action records up to the input's `A_END`, and
//! compares them with the engine's actions as NIC-level effects ([`Observed`]: the exact
//! wire header, the DMA request, the interrupt vector), then the error code, then every
//! page's local state and directory entry read back from the block RAMs, then whether the
//! node is idle. [`check`] runs one trace; on a divergence it shrinks the trace
//! ([`crate::shrink`]) and reports the shortest one that still diverges.

use crate::observe::{observe_rtl, Observed};
use crate::rtl::{RtlConfig, RtlError, RtlNode};
use crate::shrink::shrink;
use crate::trace::{
    run, Choice, Divergence, Expected, Input, Shadow, TraceConfig, BASE_PAGE, VS_ID,
};

/// One RTL pipeline per node of the trace.
#[derive(Debug)]
pub struct RtlShadow {
    nodes: Vec<RtlNode>,
    config: TraceConfig,
    /// Inputs compared so far.
    pub inputs: usize,
    /// Actions compared so far.
    pub actions: usize,
}

impl RtlShadow {
    /// Builds and configures one pipeline per node of `config`, steering tables included.
    pub fn new(config: &TraceConfig) -> Result<Self, RtlError> {
        let count =
            u16::try_from(config.nodes).map_err(|_| RtlError::BadConfig { what: "nodes" })?;
        let view = config.view();
        let mut nodes = Vec::new();
        for node in 0..count {
            let mut rtl = RtlNode::new(RtlConfig {
                node,
                node_count: count,
                vs_id: VS_ID,
                page_base: BASE_PAGE,
                window_base: view.window_base,
                requests: config.requests,
                pending: config.vps_per_node,
                map_vector: view.map_vector,
            })?;
            for (index, home) in config.homes.iter().enumerate() {
                rtl.set_home(index, Some(*home))?;
            }
            let steering = config.initial_steering(usize::from(node));
            for vector in 0..crate::trace::TRACE_VECTORS {
                let vector =
                    u8::try_from(vector).map_err(|_| RtlError::BadConfig { what: "vector" })?;
                let vp = (0..64).find(|vp| {
                    steering.vector_for(*vp) == vector && vector != steering.map_vector()
                });
                rtl.steer_write(vector, vp)?;
            }
            nodes.push(rtl);
        }
        Ok(Self {
            nodes,
            config: config.clone(),
            inputs: 0,
            actions: 0,
        })
    }

    /// Cycles each node's pipeline has run.
    pub fn cycles(&mut self) -> Vec<u64> {
        self.nodes.iter_mut().map(|n| n.status().cycles).collect()
    }
}

fn list(actions: &[Observed]) -> String {
    actions
        .iter()
        .enumerate()
        .map(|(i, a)| format!("\n      {i}: {a:?}"))
        .collect()
}

impl Shadow for RtlShadow {
    fn input(&mut self, node: usize, input: &Input<'_>, expected: &Expected) -> Result<(), String> {
        let view = self.config.view();
        let rtl = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| format!("no RTL for node {node}"))?;
        self.inputs += 1;
        let step = match *input {
            Input::Fault(fault) => rtl.push_fault(fault.page.0, fault.write, fault.vp),
            Input::Message(bytes) => rtl.push_message(bytes),
            Input::SteerRemove { vp, to } => {
                rtl.steer_remove(vp, to).map_err(|e| e.to_string())?;
                return Ok(());
            }
        }
        .map_err(|e| format!("RTL of node {node}: {e}"))?;
        let got: Vec<Observed> = step.actions.iter().map(|a| observe_rtl(a, &view)).collect();
        self.actions += got.len();
        if got != expected.actions {
            let first = got
                .iter()
                .zip(&expected.actions)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.actions.len()));
            return Err(format!(
                "actions differ from index {first}\n    engine:{}\n    rtl:{}",
                list(&expected.actions),
                list(&got)
            ));
        }
        if step.error != expected.error {
            return Err(format!(
                "error code: engine {}, rtl {}",
                expected.error, step.error
            ));
        }
        for (index, page) in expected.pages.iter().enumerate() {
            let held = rtl.read_page(index).map_err(|e| e.to_string())?;
            if held.local != page.local {
                return Err(format!(
                    "page {:#x} local state: engine {:?}, rtl {:?}",
                    BASE_PAGE + index as u64,
                    page.local,
                    held.local
                ));
            }
            if let Some(directory) = page.directory {
                if held.directory != directory {
                    return Err(format!(
                        "page {:#x} directory: engine {directory:?}, rtl {:?}",
                        BASE_PAGE + index as u64,
                        held.directory
                    ));
                }
            }
        }
        let idle = rtl.status().engine_idle;
        if idle != expected.idle {
            return Err(format!("idle: engine {}, rtl {idle}", expected.idle));
        }
        Ok(())
    }
}

/// What a differential run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckStats {
    /// Inputs compared.
    pub inputs: usize,
    /// Actions compared.
    pub actions: usize,
}

/// Runs `choices` through the engines and the RTL; on divergence, shrinks the trace
/// (at most `shrink_attempts` replays) and returns the shortest divergence found.
pub fn check(
    config: &TraceConfig,
    choices: &[Choice],
    shrink_attempts: usize,
) -> Result<CheckStats, Box<Divergence>> {
    let setup = |e: RtlError| {
        Box::new(Divergence {
            input: 0,
            detail: format!("RTL setup: {e}"),
            log: Vec::new(),
        })
    };
    let mut shadow = RtlShadow::new(config).map_err(setup)?;
    match run(config, choices, &mut shadow) {
        Ok(_) => Ok(CheckStats {
            inputs: shadow.inputs,
            actions: shadow.actions,
        }),
        Err(first) => {
            let diverges = |trace: &[Choice]| match RtlShadow::new(config) {
                Ok(mut shadow) => run(config, trace, &mut shadow).is_err(),
                Err(_) => false,
            };
            let shortest = shrink(choices, shrink_attempts, diverges);
            let divergence = RtlShadow::new(config)
                .ok()
                .and_then(|mut shadow| run(config, &shortest, &mut shadow).err())
                .unwrap_or(first);
            Err(Box::new(divergence))
        }
    }
}
