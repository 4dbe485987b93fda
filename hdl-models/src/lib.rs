//! placeholder
pub mod observe;
pub mod shrink;
pub mod steering;
pub mod trace;
#[cfg(feature = "hdl-sim")]
pub mod rtl;
