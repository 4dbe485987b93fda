//! `hello`: every VP prints `hello from vp V on node N`, with V and N from `SelfInfo`
//! (the VMM's view, checked against the VP the kernel thinks it runs as).

use crate::machine::Kernel;
use crate::vima_calls;

use super::WorkloadError;

/// Prints this VP's line.
pub fn run(_kernel: &Kernel, vp: usize) -> Result<(), WorkloadError> {
    let (told, node) = vima_calls::self_info()?;
    if told as usize != vp {
        return Err(WorkloadError::WrongIdentity { vp, told });
    }
    println!("hello from vp {told} on node {node}");
    Ok(())
}
