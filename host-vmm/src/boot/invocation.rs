//! What `cvmm run -- PATH ARGS...` asks for, in a form that travels: the launcher checks it
//! and writes it into the cluster description (`[program]`), and node 0 of the cluster
//! prepares the program from it ([`ProgramSpec::prepare`]: read, classify, place).
//!
//! Only node 0 reads the file: on a rack the program needs to exist on the machine of
//! node 0 only. The other nodes never see the descriptor; their VPs run the program's
//! threads from the coherent memory node 0 loaded.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::program::classify;
use super::program_layout::{lay_out, Invocation, ProgramImage};

/// `[program]`: a Linux program and how it is invoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSpec {
    /// The path as the user gave it (AT_EXECFN; relative to the node's working
    /// directory).
    pub path: PathBuf,
    /// argv (argv[0] is the path as given).
    pub argv: Vec<String>,
    /// The environment: `K=V` pairs, nothing else.
    pub env: Vec<String>,
    /// AT_RANDOM's 16 bytes, in hex (the launcher draws them once).
    pub random_hex: String,
    /// The program's read-only `/` (`--root`), a directory on node 0's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
}

impl ProgramSpec {
    /// A spec with fresh AT_RANDOM bytes; the error is the sentence to print.
    pub fn new(
        path: &str,
        argv: &[String],
        env: &[String],
        root: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let root = root
            .map(|dir| {
                let dir = std::fs::canonicalize(dir)
                    .map_err(|e| format!("--root {}: {e}", dir.display()))?;
                if dir.is_dir() {
                    Ok(dir)
                } else {
                    Err(format!("--root {}: not a directory", dir.display()))
                }
            })
            .transpose()?;
        for pair in env {
            if !pair.contains('=') {
                return Err(format!("--env {pair:?} is not of the form K=V"));
            }
        }
        let mut random = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
            .map_err(|e| format!("cannot read /dev/urandom for AT_RANDOM: {e}"))?;
        Ok(Self {
            path: PathBuf::from(path),
            argv: argv.to_vec(),
            env: env.to_vec(),
            random_hex: random.iter().map(|b| format!("{b:02x}")).collect(),
            root,
        })
    }

    fn random(&self) -> Result<[u8; 16], String> {
        let text = self.random_hex.as_bytes();
        let mut random = [0u8; 16];
        if text.len() != 32 {
            return Err("[program] random_hex must be 32 hex digits".into());
        }
        for (byte, pair) in random.iter_mut().zip(text.chunks(2)) {
            let digits = std::str::from_utf8(pair).unwrap_or("");
            *byte = u8::from_str_radix(digits, 16)
                .map_err(|_| "[program] random_hex must be 32 hex digits".to_string())?;
        }
        Ok(random)
    }

    /// Reads, classifies and places the program for a server whose guest kernel ends at
    /// `kernel_end` and whose node 0 is home for `[0, home_end)`; the error is the
    /// sentence to print after the path.
    pub fn prepare(&self, kernel_end: u64, home_end: u64) -> Result<ProgramImage, String> {
        let bytes =
            std::fs::read(&self.path).map_err(|e| format!("cannot read the program: {e}"))?;
        let info = classify(&bytes).map_err(|e| e.to_string())?;
        let random = self.random()?;
        let exe = std::fs::canonicalize(&self.path)
            .map_err(|e| format!("cannot resolve the program's path: {e}"))?;
        let argv: Vec<&[u8]> = self.argv.iter().map(|a| a.as_bytes()).collect();
        let envs: Vec<&[u8]> = self.env.iter().map(|e| e.as_bytes()).collect();
        let invocation = Invocation {
            execfn: self.path.as_os_str().as_encoded_bytes(),
            exe: exe.as_os_str().as_encoded_bytes(),
            args: &argv,
            envs: &envs,
            random,
            realtime: realtime_now(),
        };
        lay_out(&bytes, &info, kernel_end, home_end, &invocation).map_err(|e| e.to_string())
    }
}

/// The host's CLOCK_REALTIME and the TSC at (nearly) the same instant, so that the guest
/// reads the real time from `rdtsc` without an exit.
fn realtime_now() -> (u64, u64) {
    // SAFETY: rdtsc only reads the time stamp counter.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    (ns, tsc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_round_trip_through_hex() {
        let spec = ProgramSpec::new("/bin/true", &["/bin/true".into()], &[], None).unwrap();
        let bytes = spec.random().unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, spec.random_hex);
    }

    #[test]
    fn bad_env_and_bad_hex_are_refused() {
        let err = ProgramSpec::new("/bin/true", &[], &["NOEQUALS".into()], None).unwrap_err();
        assert!(err.contains("K=V"), "{err}");
        let mut spec = ProgramSpec::new("/bin/true", &[], &[], None).unwrap();
        spec.random_hex = "zz".repeat(16);
        assert!(spec.random().is_err());
        spec.random_hex = "00".into();
        assert!(spec.random().is_err());
    }
}
