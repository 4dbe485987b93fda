//! The engine of one node sized from the configuration table, with tables the host
//! allocates once and keeps for the life of the process (feature `alloc`). The software
//! fabric and the NIC model both build their engines here, so both paths make the same
//! decisions (and the same `Nack`s) for the same cluster.

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec;

use vima::config::Config;

use super::{
    DirEntry, Engine, EngineConfig, EngineError, EngineStorage, HomeMap, HomeRequest, PageState,
    PendingFault,
};

/// Leaks a table: the engine borrows its storage for the life of the process (fixed
/// tables, as on a NIC).
fn table<T: Clone>(len: usize, fill: T) -> &'static mut [T] {
    Box::leak(vec![fill; len].into_boxed_slice())
}

/// How long each table is for a node with `local_vps` VPs of its own: a pending slot
/// per local VP plus a few for the host's own accesses and for evictions, and room at the home for every
/// VP of the virtual server twice over (so the home never refuses a requester).
pub fn storage_lengths(config: &Config, homes: &HomeMap, local_vps: usize) -> [usize; 4] {
    let pages = usize::try_from(homes.page_limit()).unwrap_or(usize::MAX);
    // Every page: any node may become a page's home.
    let directory = pages;
    let pending = local_vps + 4 + super::EVICTIONS_IN_FLIGHT;
    let requests = pending + config.vp_count() * 2 + 8;
    [pages, directory, pending, requests]
}

/// Builds node `node`'s engine for virtual server `vs_id`, in its initial state.
pub fn build_engine(
    config: &Config,
    vs_id: u16,
    node: u32,
    local_vps: usize,
) -> Result<Engine<'static>, EngineError> {
    let homes = HomeMap::from_config(config)?;
    let node = u16::try_from(node).map_err(|_| EngineError::BadNodeConfig)?;
    let node_count = u16::try_from(config.node_count()).map_err(|_| EngineError::BadNodeConfig)?;
    let [pages, directory, pending, requests] = storage_lengths(config, &homes, local_vps);
    let storage = EngineStorage {
        local: table(pages, PageState::Invalid),
        directory: table(directory, DirEntry::default()),
        pending: table(pending, PendingFault::default()),
        requests: table(requests, HomeRequest::default()),
    };
    let engine_config = EngineConfig {
        vs_id,
        node,
        node_count,
    };
    Engine::new(engine_config, homes, storage)
}
