//! What the node-to-node wire takes from the cluster description besides addresses: the
//! cluster key that authenticates every packet (issue 6), the transport's cluster id, and,
//! for tests, injected faults.
//!
//! Key: `[cluster] key_file = "cluster.key"` (64 hex digits, mode 0600, a relative path is
//! relative to the description) or `key_hex = "..."` inline (then the description itself is
//! the secret). Every packet then carries HMAC-SHA256/128 under a key derived from it and
//! the virtual server id, on UDP and DPDK alike and from the NIC model, because all of
//! them are the same `ReliableTransport`. `cvmm run` makes a fresh random key per run.
//! Without a key the wire is unauthenticated and the node says so on stderr: a rack must
//! opt out of authentication knowingly, not by forgetting a line.
//!
//! Faults: `[cluster] wire_loss` (= `--wire-loss P`) drops, duplicates and reorders with
//! one probability. The fault campaign needs them apart and needs delay jitter, which
//! the build machine's kernel cannot inject (no `sch_netem`), so `CVMM_WIRE_FAULTS`
//! (e.g. `dup=0.05` or `jitter_us=2000`, see [`FaultConfig::from_spec`]) in a node's
//! environment replaces them. It is for testing only, like `wire_loss`, and `cvmm run`
//! passes its environment to every node.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use dpdk_transport::{
    Authenticator, ClusterKey, ClusterKeyError, FaultConfig, FaultSpecError, HmacSha256Auth, NoAuth,
};
use thiserror::Error;

use super::config::{ClusterConfig, ClusterSection};

/// The environment variable that overrides `wire_loss` with separate faults.
pub const WIRE_FAULTS_ENV: &str = "CVMM_WIRE_FAULTS";

/// Why the wire's settings are unusable.
#[derive(Debug, Error)]
pub enum WireSettingsError {
    /// Both `key_file` and `key_hex` are given.
    #[error("[cluster] gives both key_file and key_hex; give one")]
    TwoKeys,
    /// The key could not be read or is malformed.
    #[error("Failed to read the cluster key")]
    Key(#[from] ClusterKeyError),
    /// `CVMM_WIRE_FAULTS` does not parse.
    #[error("Invalid {WIRE_FAULTS_ENV}")]
    Faults(#[from] FaultSpecError),
}

/// Checks the key settings without reading a key file (the file lives on the node that
/// uses it, not necessarily where the description is checked).
pub fn check_key_settings(section: &ClusterSection) -> Result<(), WireSettingsError> {
    match (&section.key_file, &section.key_hex) {
        (Some(_), Some(_)) => Err(WireSettingsError::TwoKeys),
        (None, Some(hex)) => ClusterKey::from_hex(hex)
            .map(|_| ())
            .map_err(WireSettingsError::Key),
        _ => Ok(()),
    }
}

/// The cluster key the description names, if any.
pub fn cluster_key(section: &ClusterSection) -> Result<Option<ClusterKey>, WireSettingsError> {
    check_key_settings(section)?;
    match (&section.key_file, &section.key_hex) {
        (Some(path), None) => Ok(Some(ClusterKey::load(path)?)),
        (None, Some(hex)) => Ok(Some(ClusterKey::from_hex(hex)?)),
        _ => Ok(None),
    }
}

/// The transport's cluster id: the virtual server id, so packets of another virtual
/// server are dropped (and counted) before their MAC is even computed.
pub fn transport_cluster_id(config: &ClusterConfig) -> u32 {
    u32::from(config.server.vs_id)
}

/// The authenticator of this description's wire, and whether it authenticates at all
/// (false: no key was given; [`NoAuth`]).
pub fn authenticator(
    config: &ClusterConfig,
) -> Result<(Arc<dyn Authenticator>, bool), WireSettingsError> {
    Ok(match cluster_key(&config.cluster)? {
        Some(key) => (
            Arc::new(HmacSha256Auth::for_cluster(
                &key,
                transport_cluster_id(config),
            )),
            true,
        ),
        None => (Arc::new(NoAuth), false),
    })
}

/// The faults to inject on this node's wire: `CVMM_WIRE_FAULTS` if set, else
/// `wire_loss`. `seed` varies per node and run.
pub fn wire_faults(config: &ClusterConfig, seed: u64) -> Result<FaultConfig, WireSettingsError> {
    if let Some(spec) = std::env::var_os(WIRE_FAULTS_ENV) {
        return Ok(FaultConfig::from_spec(&spec.to_string_lossy(), seed)?);
    }
    Ok(if config.cluster.wire_loss > 0.0 {
        FaultConfig::wire_loss(config.cluster.wire_loss, seed)
    } else {
        FaultConfig::none()
    })
}

/// Writes a new key file that only its owner can read (created 0600, never replacing an
/// existing file, so a key cannot be swapped under a running cluster by mistake).
pub fn write_key_file(path: &Path, key: &ClusterKey) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{}\n", key.to_hex()).as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const BASE: &str = r#"
        [cluster]
        KEY

        [server]
        vps_per_node = 1
        mem_mib_per_node = 16
        cmdline = "hello"

        [[nodes]]
        id = 0
        address = "127.0.0.1:7100"

        [[nodes]]
        id = 1
        address = "127.0.0.1:7101"
    "#;

    fn with(key_lines: &str) -> Result<ClusterConfig, String> {
        ClusterConfig::parse(&BASE.replace("KEY", key_lines), "test").map_err(|e| e.to_string())
    }

    #[test]
    fn no_key_means_no_authentication() {
        let config = with("").unwrap();
        let (auth, authenticated) = authenticator(&config).unwrap();
        assert!(!authenticated);
        assert_eq!(auth.tag_len(), 0);
        assert_eq!(transport_cluster_id(&config), 1);
    }

    #[test]
    fn an_inline_key_authenticates_per_virtual_server() {
        let hex = "ab".repeat(32);
        let config = with(&format!("key_hex = \"{hex}\"")).unwrap();
        let (auth, authenticated) = authenticator(&config).unwrap();
        assert!(authenticated);
        assert_eq!(auth.tag_len(), HmacSha256Auth::TAG_LEN);
        let mut tag = [0u8; HmacSha256Auth::TAG_LEN];
        auth.sign(b"packet", &mut tag);
        let key = ClusterKey::from_hex(&hex).unwrap();
        assert!(HmacSha256Auth::for_cluster(&key, 1).verify(b"packet", &tag));
        // The same key for virtual server 2 is another MAC key.
        let text = BASE
            .replace("KEY", &format!("key_hex = \"{hex}\""))
            .replace("cmdline = \"hello\"", "cmdline = \"hello\"\nvs_id = 2");
        let second = ClusterConfig::parse(&text, "second").unwrap();
        assert_eq!(transport_cluster_id(&second), 2);
        let (auth2, _) = authenticator(&second).unwrap();
        assert!(!auth2.verify(b"packet", &tag));
    }

    #[test]
    fn bad_key_settings_are_refused_when_the_description_is_read() {
        let both = with("key_hex = \"00\"\nkey_file = \"k\"").unwrap_err();
        assert!(both.contains("both key_file and key_hex"), "{both}");
        let short = with("key_hex = \"abcd\"").unwrap_err();
        assert!(short.contains("cluster key"), "{short}");
    }

    #[test]
    fn key_files_are_written_private_and_read_relative_to_the_description() {
        let dir = std::env::temp_dir().join(format!("cvmm-wire-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = ClusterKey::from_bytes([3; 32]);
        let key_path = dir.join("cluster.key");
        let _ = std::fs::remove_file(&key_path);
        write_key_file(&key_path, &key).unwrap();
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            write_key_file(&key_path, &key).is_err(),
            "never replaces a key"
        );
        let toml_path = dir.join("cluster.toml");
        std::fs::write(
            &toml_path,
            BASE.replace("KEY", "key_file = \"cluster.key\""),
        )
        .unwrap();
        let config = ClusterConfig::load(&toml_path).unwrap();
        assert_eq!(cluster_key(&config.cluster).unwrap(), Some(key));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wire_faults_come_from_wire_loss() {
        let config = with("wire_loss = 0.05").unwrap();
        if std::env::var_os(WIRE_FAULTS_ENV).is_none() {
            let faults = wire_faults(&config, 1).unwrap();
            assert_eq!(faults.drop_probability, 0.05);
            assert_eq!(faults.duplicate_probability, 0.05);
        }
    }
}
