//! The cluster description (`host_vmm::cluster::config::ClusterConfig::parse`): any text.
//!
//! Properties: parsing never panics; a description that parses and validates serializes
//! (`to_toml`) to text that parses back to an equal description; the per-node views
//! (`node_config`, `fabric_of`, `dpdk_endpoint`) never panic for a listed node.
#![no_main]

use host_vmm::cluster::config::ClusterConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = ClusterConfig::parse(text, "fuzz") else {
        return;
    };
    let again = config.to_toml();
    let back = ClusterConfig::parse(&again, "round trip")
        .unwrap_or_else(|e| panic!("a valid description must re-parse: {e}\n{again}"));
    assert_eq!(back, config, "round trip changed the description:\n{again}");
    for id in 0..u32::try_from(config.nodes.len()).unwrap_or(0) {
        let node = config.node_config(id);
        assert_eq!(node.node_id, id);
        let _ = config.fabric_of(id);
        let _ = config.dpdk_endpoint(id);
    }
});
