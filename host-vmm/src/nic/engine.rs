//! The engine's tables for one node, sized as the software fabric sizes them, so both
//! paths make the same decisions (and the same `Nack`s) for the same cluster.

use nic_firmware::engine::{
    DirEntry, Engine, EngineConfig, EngineError, EngineStorage, HomeMap, HomeRequest, PageState,
    PendingFault,
};

use crate::fabric::vs_id;

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineSetupError {
    /// The configuration table does not parse.
    #[error("Failed to read the configuration table: {0:?}")]
    Config(vima::config::ConfigError),
    /// The engine refused its configuration.
    #[error("The coherence engine refused its configuration: {0:?}")]
    Engine(EngineError),
}

/// Leaks a table: the engine borrows its storage for the life of the process (fixed
/// tables, as on a NIC).
fn table<T: Clone>(len: usize, fill: T) -> &'static mut [T] {
    Box::leak(vec![fill; len].into_boxed_slice())
}

/// The home map of a configuration table.
pub fn homes(config_table: &[u8]) -> Result<HomeMap, EngineSetupError> {
    let config = vima::config::Config::parse(config_table).map_err(EngineSetupError::Config)?;
    HomeMap::from_config(&config).map_err(EngineSetupError::Engine)
}

/// Builds node `node`'s engine in its initial state.
pub fn build(
    config_table: &[u8],
    node: u32,
    local_vps: &[u32],
) -> Result<Engine<'static>, EngineSetupError> {
    let config = vima::config::Config::parse(config_table).map_err(EngineSetupError::Config)?;
    let homes = HomeMap::from_config(&config).map_err(EngineSetupError::Engine)?;
    let node16 =
        u16::try_from(node).map_err(|_| EngineSetupError::Engine(EngineError::BadNodeConfig))?;
    let nodes = u16::try_from(config.node_count())
        .map_err(|_| EngineSetupError::Engine(EngineError::BadNodeConfig))?;
    let pages = usize::try_from(homes.page_limit()).expect("page count fits");
    let directory = usize::try_from(homes.home_page_count(node16)).expect("page count fits");
    let pending = local_vps.len() + 4;
    let requests = pending + config.vp_count() * 2 + 8;
    let storage = EngineStorage {
        local: table(pages, PageState::Invalid),
        directory: table(directory, DirEntry::default()),
        pending: table(pending, PendingFault::default()),
        requests: table(requests, HomeRequest::default()),
    };
    let engine_config = EngineConfig {
        vs_id: vs_id(),
        node: node16,
        node_count: nodes,
    };
    Engine::new(engine_config, homes, storage).map_err(EngineSetupError::Engine)
}
