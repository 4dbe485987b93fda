//! Control messages: what crosses nodes besides coherence. Each is checked as guest input
//! would be (a VP id from the wire is a claim, like one from a register).

use log::warn;
use vima::interrupt::is_external_vector;
use vima::wire::{Body, Message};

use super::FabricStats;
use crate::server::{Outcome, VirtualServer};
use crate::vp::RunState;

pub(super) fn handle(stats: &FabricStats, server: &VirtualServer, msg: &Message<'_>) {
    match msg.body {
        Body::Ipi { vp, vector } => {
            let local = server.vp(vp).is_some_and(|c| c.node == server.node_id);
            if !local || !is_external_vector(u64::from(vector)) {
                stats.count_bad_message();
                return;
            }
            let _ = server.post_interrupt(vp, vector);
        }
        Body::VpStart {
            vp,
            entry,
            stack_top,
            arg,
        } => {
            let Some(control) = server.vp(vp).filter(|c| c.node == server.node_id) else {
                stats.count_bad_message();
                return;
            };
            if server
                .start_vp(
                    control,
                    RunState::StartRequested {
                        entry,
                        stack_top,
                        arg,
                    },
                )
                .is_err()
            {
                warn!("node {} asked to start vp {vp}, which is running", msg.src);
            }
        }
        Body::ConsoleLine { vp, line } => {
            server
                .console
                .print_line(vp, u32::from(msg.src), &String::from_utf8_lossy(line));
        }
        Body::VsExit { status } => server.finish(Outcome::Exited(status)),
        Body::Heartbeat { .. } => {}
        _ => stats.count_bad_message(),
    }
}
