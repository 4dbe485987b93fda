//! The EAL, once per process.
//!
//! DPDK's environment layer refuses a second `rte_eal_init` in a process (even after a
//! failed first one or a cleanup), so this module keeps a process-wide state and turns a
//! second attempt into [`DpdkError::EalAlreadyUsed`] instead of an obscure failure deep
//! in DPDK. One DPDK endpoint per process is the model everywhere: the node process on
//! the software path, the NIC model process on the offload path, a child process per
//! endpoint in tests.
//!
//! The runtime directory (`/var/run/dpdk/<file-prefix>` for root) holds the shared
//! configuration for secondary processes, which cvmm never starts. It is removed as soon
//! as the EAL is up (the EAL keeps what it mapped from it) and again when the EAL is
//! dropped, so even a node killed by a signal leaves nothing behind.
//!
//! Dropping does not call `rte_eal_cleanup`. In DPDK 22.11 it unmaps the EAL's memory
//! while the EAL's interrupt thread still runs, and that thread reads the interrupt
//! handles kept there: on a 4-node memif cluster about one node in four died of SIGSEGV
//! in `eal-intr-thread` (inside `rte_intr_fd_get`) while `rte_eal_cleanup` was in
//! `rte_mem_unmap`. Cleanup would buy nothing: the EAL cannot start again in this process
//! anyway, and the kernel frees the memory (cvmm runs the EAL without hugepages) when the
//! process ends. For the same reason the endpoint leaves its ports open (see
//! `DpdkDatagram`).

use std::path::PathBuf;
use std::sync::Mutex;

use log::debug;

use super::sys;
use super::DpdkError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EalState {
    Unused,
    Running,
    Finished,
}

static EAL: Mutex<EalState> = Mutex::new(EalState::Unused);

/// The running EAL of this process; dropped after the ports and pool that use it.
#[derive(Debug)]
pub(super) struct Eal {
    runtime_dir: Option<PathBuf>,
}

impl Eal {
    /// Initialises the EAL with `argv` (`argv[0]` is the program name).
    pub(super) fn init(argv: &[String]) -> Result<Eal, DpdkError> {
        let mut state = EAL.lock().expect("EAL state lock poisoned");
        if *state != EalState::Unused {
            return Err(DpdkError::EalAlreadyUsed);
        }
        // Whatever happens now, DPDK will not initialise again in this process.
        *state = EalState::Finished;
        debug!("rte_eal_init {argv:?}");
        sys::eal_init(argv).map_err(|source| DpdkError::EalInit {
            args: argv.get(1..).unwrap_or_default().join(" "),
            source,
        })?;
        *state = EalState::Running;
        let runtime_dir = sys::runtime_dir();
        remove_runtime_dir(runtime_dir.as_ref());
        Ok(Eal { runtime_dir })
    }
}

fn remove_runtime_dir(dir: Option<&PathBuf>) {
    if let Some(dir) = dir {
        // Only a directory DPDK made for this prefix; a missing one is fine.
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // No rte_eal_cleanup: see the module docs.
        remove_runtime_dir(self.runtime_dir.as_ref());
        *EAL.lock().expect("EAL state lock poisoned") = EalState::Finished;
    }
}
