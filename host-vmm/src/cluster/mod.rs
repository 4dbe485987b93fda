//! Cluster control: the TOML that describes a virtual computer and its virtual server
//! ([`config`]), and `cvmm run`'s launcher that starts one node process per node on this
//! machine, on loopback or in network namespaces ([`launch`]), and one member node from
//! its description to its end ([`member`]).

pub mod api;
pub mod config;
pub mod launch;
pub mod member;
pub mod netns;
pub mod servers;
pub mod wire;
