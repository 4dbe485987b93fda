//! The NIC's engine, built from the configuration table as the software fabric builds its
//! own (`nic_firmware::engine::build_engine`), so both paths decide alike.

use nic_firmware::engine::{build_engine, Engine, EngineError};

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

/// Builds node `node`'s engine for virtual server `vs_id` in its initial state.
pub fn build(
    config_table: &[u8],
    vs_id: u16,
    node: u32,
    local_vps: &[u32],
) -> Result<Engine<'static>, EngineSetupError> {
    let config = vima::config::Config::parse(config_table).map_err(EngineSetupError::Config)?;
    build_engine(&config, vs_id, node, local_vps.len()).map_err(EngineSetupError::Engine)
}
