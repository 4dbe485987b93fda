//! The NIC model process a node starts for itself (`cvmm nic`) when its description names
//! no NIC socket: started with the node's own binary, killed with it, and watched by the
//! interrupt thread (a "card" that died is reported as such).

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A NIC model process this node started (`cvmm nic`).
#[derive(Debug)]
pub struct NicProcess {
    child: Child,
    /// The vfio-user socket it serves, removed when the process is done with.
    socket: std::path::PathBuf,
}

impl NicProcess {
    /// Starts `cvmm nic --config <config> --id <id> --socket <socket>` with the same
    /// binary as this process.
    pub fn spawn(config: &Path, id: u32, socket: &Path) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command
            .arg("nic")
            .arg("--config")
            .arg(config)
            .arg("--id")
            .arg(id.to_string())
            .arg("--socket")
            .arg(socket);
        // A node that dies must not leave its NIC model serving nothing forever.
        crate::cluster::launch::die_with_parent(&mut command);
        let child = command.spawn()?;
        Ok(Self {
            child,
            socket: socket.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(description)` once the process has ended.
    pub fn ended(&mut self) -> Option<String> {
        use std::os::unix::process::ExitStatusExt;
        match self.child.try_wait() {
            Ok(Some(status)) => Some(match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                _ => "ended".into(),
            }),
            _ => None,
        }
    }

    /// Waits up to `timeout` for the process to end, then kills it.
    pub(super) fn finish(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The model does not outlive its node, and nothing else will serve this path.
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for NicProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // The model does not outlive its node, and nothing else will serve this path.
        let _ = std::fs::remove_file(&self.socket);
    }
}
