//! placeholder
pub mod latency;
pub mod observe;
pub mod shrink;
pub mod steering;
pub mod trace;
#[cfg(feature = "hdl-sim")]
pub mod diff;
#[cfg(feature = "hdl-sim")]
pub mod measure;
#[cfg(feature = "hdl-sim")]
pub mod rtl;
