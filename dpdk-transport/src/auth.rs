//! Message authentication: every packet between two nodes carries a MAC under the
//! cluster key (issue 6).
//!
//! A packet is `header | payload | tag`; the tag covers header and payload, and its length
//! is in the header, so a MAC is added without moving any field. The transport signs
//! every packet it sends (including retransmissions, whose ack fields change) and verifies
//! every packet it receives before it looks at anything but the header's framing fields
//! (magic, lengths, cluster, destination): a packet that fails is counted in
//! `auth_failed_dropped` and never reaches the reliability protocol, let alone the
//! coherence engine. Replays of packets that *do* verify are the reliability layer's job
//! (sessions confirmed by the peer, sequence numbers that never wrap; see `peer.rs` and
//! docs/protocol.md, "Security").
//!
//! The MAC is HMAC-SHA256 truncated to 128 bits ([`HmacSha256Auth`], RFC 2104 / RFC 4231
//! test case 5 shows the truncation), over a per-cluster key derived from the 256-bit
//! [`ClusterKey`] that the cluster description names. Deriving per cluster id means two
//! virtual servers given the same key file still cannot accept each other's packets. Why
//! HMAC-SHA256 rather than keyed BLAKE3: both are fine; the RustCrypto `hmac`/`sha2` pair
//! is small, pure Rust, builds on the NIC's cores as well as the host, and its
//! `verify_truncated_left` compares in constant time.
//!
//! [`NoAuth`] (a zero-length tag) remains for unit tests and benchmarks of the transport.
//!
//! ```
//! use dpdk_transport::{Authenticator, ClusterKey, HmacSha256Auth};
//!
//! let key = ClusterKey::from_hex(&"42".repeat(32)).unwrap();
//! let auth = HmacSha256Auth::for_cluster(&key, 7);
//! let mut tag = [0u8; HmacSha256Auth::TAG_LEN];
//! auth.sign(b"header and payload", &mut tag);
//! assert!(auth.verify(b"header and payload", &tag));
//! assert!(!auth.verify(b"header and paylaod", &tag));
//! // Another cluster id, same key: another MAC key.
//! assert!(!HmacSha256Auth::for_cluster(&key, 8).verify(b"header and payload", &tag));
//! ```

use std::fmt::{self, Debug};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::wire::MAX_TAG;

/// Signs and verifies packets. Implementations must be cheap to call from several threads
/// at once.
pub trait Authenticator: Send + Sync + Debug {
    /// Bytes of tag this authenticator appends (at most [`MAX_TAG`]). The receiver
    /// rejects packets whose tag length differs.
    fn tag_len(&self) -> usize;
    /// Writes the tag of `authenticated` (header and payload) into `tag`
    /// (`tag.len() == self.tag_len()`).
    fn sign(&self, authenticated: &[u8], tag: &mut [u8]);
    /// True when `tag` is the right tag for `authenticated`.
    fn verify(&self, authenticated: &[u8], tag: &[u8]) -> bool;
}

/// No authentication: an empty tag.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAuth;

impl Authenticator for NoAuth {
    fn tag_len(&self) -> usize {
        0
    }

    fn sign(&self, _authenticated: &[u8], _tag: &mut [u8]) {}

    fn verify(&self, _authenticated: &[u8], tag: &[u8]) -> bool {
        tag.is_empty()
    }
}

// A tag longer than the wire allows would make every packet undecodable.
const _: () = assert!(MAX_TAG <= u8::MAX as usize);

/// Why a cluster key could not be had.
#[derive(Debug, Error)]
pub enum ClusterKeyError {
    /// The key text is not 64 hexadecimal digits.
    #[error("A cluster key must be {expected} hexadecimal digits, found {found} characters")]
    Length {
        /// Digits expected.
        expected: usize,
        /// Characters found (after trimming white space).
        found: usize,
    },
    /// A character that is not a hexadecimal digit.
    #[error("A cluster key may contain only hexadecimal digits, found {found:?}")]
    NotHex {
        /// The offending character.
        found: char,
    },
    /// The key file could not be read.
    #[error("Failed to read the key file {path}")]
    ReadFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file can be read by other users (like ssh, refuse it rather than trust a
    /// key others may know).
    #[error("The key file {path} has mode {mode:o}: it must not be readable or writable by group or others (chmod 600)")]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The system's random source failed.
    #[error("Failed to read random bytes for a new cluster key")]
    Random(#[source] std::io::Error),
}

/// The secret every node of a cluster shares: 256 bits. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; ClusterKey::LEN]);

impl Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<secret>)")
    }
}

impl ClusterKey {
    /// Bytes in a key.
    pub const LEN: usize = 32;

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// A key from 64 hexadecimal digits (either case; white space around them is
    /// ignored, so a file ending in a newline reads fine).
    pub fn from_hex(text: &str) -> Result<Self, ClusterKeyError> {
        let text = text.trim();
        if text.len() != 2 * Self::LEN || !text.is_ascii() {
            return Err(ClusterKeyError::Length {
                expected: 2 * Self::LEN,
                found: text.chars().count(),
            });
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(ClusterKeyError::NotHex { found: c as char }),
        };
        let mut bytes = [0u8; Self::LEN];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(Self(bytes))
    }

    /// The key as 64 lowercase hexadecimal digits (what [`Self::from_hex`] reads).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads a key file: 64 hexadecimal digits. The file must not be accessible to group
    /// or others.
    pub fn load(path: &Path) -> Result<Self, ClusterKeyError> {
        let shown = path.display().to_string();
        let read_error = |source| ClusterKeyError::ReadFile {
            path: shown.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mode = file.metadata().map_err(read_error)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(ClusterKeyError::Permissions {
                path: shown,
                mode: mode & 0o7777,
            });
        }
        let mut text = String::new();
        // A key file is 65 bytes; read a little more so a wrong file is reported by its
        // length rather than read whole.
        file.take(256)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        Self::from_hex(&text)
    }

    /// A new random key from the kernel's random source.
    pub fn generate() -> Result<Self, ClusterKeyError> {
        let mut bytes = [0u8; Self::LEN];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(ClusterKeyError::Random)?;
        Ok(Self(bytes))
    }

    /// A key for one purpose, derived from this one: HMAC-SHA256(key, "cvmm-v1 " ||
    /// `label`). Keys for different labels are independent.
    pub fn derive(&self, label: &[u8]) -> ClusterKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        mac.update(b"cvmm-v1 ");
        mac.update(label);
        Self(mac.finalize().into_bytes().into())
    }
}

/// HMAC-SHA256 truncated to [`Self::TAG_LEN`] bytes, verified in constant time.
#[derive(Clone)]
pub struct HmacSha256Auth {
    /// The MAC with its key already absorbed: cloned per packet, not re-keyed.
    keyed: Hmac<Sha256>,
}

impl Debug for HmacSha256Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacSha256Auth(<keyed>)")
    }
}

impl HmacSha256Auth {
    /// Bytes of tag: 128 bits, the truncation RFC 2104 allows and RFC 4231 tests.
    pub const TAG_LEN: usize = 16;

    /// The authenticator of transport cluster `cluster_id` (the id in every packet
    /// header): keyed with `key.derive("transport " || cluster_id)`.
    pub fn for_cluster(key: &ClusterKey, cluster_id: u32) -> Self {
        let mut label = b"transport ".to_vec();
        label.extend_from_slice(&cluster_id.to_le_bytes());
        Self::with_raw_key(&key.derive(&label).0)
    }

    /// An authenticator keyed with `key` as it is (no derivation).
    pub fn with_raw_key(key: &[u8]) -> Self {
        Self {
            keyed: <Hmac<Sha256> as Mac>::new_from_slice(key)
                .expect("HMAC accepts keys of any length"),
        }
    }
}

impl Authenticator for HmacSha256Auth {
    fn tag_len(&self) -> usize {
        Self::TAG_LEN
    }

    fn sign(&self, authenticated: &[u8], tag: &mut [u8]) {
        let mut mac = self.keyed.clone();
        mac.update(authenticated);
        let full = mac.finalize().into_bytes();
        let len = tag.len().min(full.len());
        tag[..len].copy_from_slice(&full[..len]);
    }

    fn verify(&self, authenticated: &[u8], tag: &[u8]) -> bool {
        if tag.len() != Self::TAG_LEN {
            return false;
        }
        let mut mac = self.keyed.clone();
        mac.update(authenticated);
        mac.verify_truncated_left(tag).is_ok()
    }
}

const _: () = assert!(HmacSha256Auth::TAG_LEN <= MAX_TAG);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A toy checksum "MAC" for tests: proves the transport signs what it sends and drops
    /// what does not verify. Not cryptographic.
    #[derive(Debug)]
    pub(crate) struct XorAuth {
        pub(crate) key: u8,
    }

    impl Authenticator for XorAuth {
        fn tag_len(&self) -> usize {
            4
        }

        fn sign(&self, authenticated: &[u8], tag: &mut [u8]) {
            let mut sum: u32 = u32::from(self.key);
            for &b in authenticated {
                sum = sum.rotate_left(5) ^ u32::from(b);
            }
            tag.copy_from_slice(&sum.to_le_bytes());
        }

        fn verify(&self, authenticated: &[u8], tag: &[u8]) -> bool {
            let mut expected = [0u8; 4];
            self.sign(authenticated, &mut expected);
            tag == expected
        }
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn no_auth_accepts_only_empty_tags() {
        assert_eq!(NoAuth.tag_len(), 0);
        assert!(NoAuth.verify(b"abc", &[]));
        assert!(!NoAuth.verify(b"abc", &[0]));
    }

    #[test]
    fn xor_auth_detects_changes() {
        let auth = XorAuth { key: 3 };
        let mut tag = [0u8; 4];
        auth.sign(b"hello", &mut tag);
        assert!(auth.verify(b"hello", &tag));
        assert!(!auth.verify(b"hellp", &tag));
        assert!(!XorAuth { key: 4 }.verify(b"hello", &tag));
    }

    #[test]
    fn hmac_matches_rfc_4231_truncated_test_case() {
        // RFC 4231 test case 5: HMAC-SHA-256 truncated to 128 bits.
        let auth = HmacSha256Auth::with_raw_key(&[0x0c; 20]);
        let mut tag = [0u8; HmacSha256Auth::TAG_LEN];
        auth.sign(b"Test With Truncation", &mut tag);
        assert_eq!(tag.to_vec(), unhex("a3b6167473100ee06e0c796c2955552b"));
        assert!(auth.verify(b"Test With Truncation", &tag));
        // RFC 4231 test case 2 (key "Jefe"), first 128 bits of its full output.
        let jefe = HmacSha256Auth::with_raw_key(b"Jefe");
        jefe.sign(b"what do ya want for nothing?", &mut tag);
        assert_eq!(tag.to_vec(), unhex("5bdcc146bf60754e6a042426089575c7"));
    }

    #[test]
    fn hmac_rejects_changed_data_wrong_keys_and_wrong_tag_lengths() {
        let key = ClusterKey::from_bytes([7; 32]);
        let auth = HmacSha256Auth::for_cluster(&key, 1);
        let data = b"a packet header and its payload";
        let mut tag = [0u8; HmacSha256Auth::TAG_LEN];
        auth.sign(data, &mut tag);
        assert!(auth.verify(data, &tag));
        for i in 0..data.len() {
            let mut changed = data.to_vec();
            changed[i] ^= 0x01;
            assert!(!auth.verify(&changed, &tag), "byte {i}");
        }
        for i in 0..tag.len() {
            let mut bad = tag;
            bad[i] ^= 0x80;
            assert!(!auth.verify(data, &bad), "tag byte {i}");
        }
        assert!(!auth.verify(data, &tag[..15]), "a truncated tag");
        assert!(!auth.verify(data, &[]), "no tag");
        let mut long = tag.to_vec();
        long.push(0);
        assert!(!auth.verify(data, &long), "a longer tag");
        let other_key = ClusterKey::from_bytes([8; 32]);
        assert!(!HmacSha256Auth::for_cluster(&other_key, 1).verify(data, &tag));
        assert!(!HmacSha256Auth::for_cluster(&key, 2).verify(data, &tag));
    }

    #[test]
    fn keys_read_from_hex_and_derive_independently() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let key = ClusterKey::from_hex(&format!("  {hex}\n")).unwrap();
        assert_eq!(key.0[1], 0x11);
        assert_eq!(key.0[31], 0xff);
        assert_eq!(key.to_hex(), hex.to_ascii_lowercase());
        assert_eq!(ClusterKey::from_hex(&key.to_hex()).unwrap(), key);
        assert!(matches!(
            ClusterKey::from_hex(&hex[..62]),
            Err(ClusterKeyError::Length { found: 62, .. })
        ));
        let bad = hex.replace('a', "g");
        assert!(matches!(
            ClusterKey::from_hex(&bad),
            Err(ClusterKeyError::NotHex { found: 'g' })
        ));
        assert!(ClusterKey::from_hex(&"é".repeat(32)).is_err());
        assert_ne!(key.derive(b"a"), key.derive(b"b"));
        assert_eq!(key.derive(b"a"), key.derive(b"a"));
        assert_eq!(format!("{key:?}"), "ClusterKey(<secret>)");
        let one = ClusterKey::generate().unwrap();
        let two = ClusterKey::generate().unwrap();
        assert_ne!(one, two);
    }

    #[test]
    fn key_files_must_be_private() {
        let dir = std::env::temp_dir().join(format!("cvmm-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.key");
        let key = ClusterKey::from_bytes([0x5a; 32]);
        std::fs::write(&path, format!("{}\n", key.to_hex())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(ClusterKey::load(&path).unwrap(), key);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ClusterKey::load(&path).unwrap_err();
        assert!(
            matches!(err, ClusterKeyError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(matches!(
            ClusterKey::load(&dir.join("missing")),
            Err(ClusterKeyError::ReadFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
