//! Applies the engine's actions on a host: DMA-window copies, userfaultfd mapping changes,
//! and messages on the transport. Runs under the engine lock, in emission order.

use log::warn;
use nic_firmware::engine::{Action, Actions, LogicalPage, PageState as EngineState};
use vima::call::UncheckedRange;
use vima::layout::PAGE_SIZE;
use vima::wire::PAGE_BYTES;

use super::SoftwareFabric;
use crate::memory::PageState;

/// Applies actions for one engine input; collects the pages whose faults completed.
pub(super) struct Applier<'f> {
    fabric: &'f SoftwareFabric,
    done: Vec<LogicalPage>,
}

fn host_state(state: EngineState) -> PageState {
    match state {
        EngineState::Exclusive => PageState::Exclusive,
        EngineState::Shared => PageState::Shared,
        EngineState::Invalid => PageState::Invalid,
    }
}

impl<'f> Applier<'f> {
    pub(super) fn new(fabric: &'f SoftwareFabric) -> Self {
        Applier {
            fabric,
            done: Vec::new(),
        }
    }

    /// Pages whose waiting VPs may resume (after the engine lock's input).
    pub(super) fn finish(self) -> Vec<LogicalPage> {
        self.done
    }

    fn page_range(&self, page: LogicalPage) -> Option<vima::call::LogicalRange> {
        UncheckedRange::new(page.address(), PAGE_SIZE)
            .check(self.fabric.memory.size(), PAGE_SIZE)
            .ok()
    }

    fn store(&self, page: LogicalPage, data: &[u8; PAGE_BYTES]) {
        match self.page_range(page) {
            Some(range) => {
                if let Err(e) = self.fabric.memory.write(range, data) {
                    warn!("writing page {} into the DMA window: {e}", page.0);
                }
            }
            None => warn!("page {} is outside logical memory", page.0),
        }
    }

    fn set_state(&self, page: LogicalPage, state: PageState) {
        if let Err(e) = self.fabric.memory.set_page_state(page.0, state) {
            warn!("setting page {} to {state:?}: {e}", page.0);
        }
    }
}

impl Actions for Applier<'_> {
    fn push(&mut self, action: Action<'_>) {
        let fabric = self.fabric;
        match action {
            Action::Send(msg) => fabric.send(&msg),
            Action::SendPage(send) => {
                let mut data = [0u8; PAGE_BYTES];
                let read = self
                    .page_range(send.page)
                    .map(|range| fabric.memory.read(range, &mut data));
                if !matches!(read, Some(Ok(()))) {
                    warn!("reading page {} for sending failed", send.page.0);
                }
                fabric.core.stats.count_page_sent();
                fabric.send(&send.message(&data));
            }
            Action::InstallPage { page, state, data } => {
                if let Some(data) = data {
                    self.store(page, data);
                }
                self.set_state(page, host_state(state));
            }
            Action::StorePage { page, data } => self.store(page, data),
            Action::Invalidate { page } => self.set_state(page, PageState::Invalid),
            Action::Downgrade { page } => self.set_state(page, PageState::Shared),
            Action::FaultDone { page, .. } => {
                if !self.done.contains(&page) {
                    self.done.push(page);
                }
            }
            Action::WakeWatchers { page } => {
                if let Err(e) = fabric.memory.notify_watchers(page.0) {
                    warn!("waking watchers of page {}: {e}", page.0);
                }
            }
        }
    }
}
