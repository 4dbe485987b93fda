//! The hook for message authentication (issue 6).
//!
//! A packet is `header | payload | tag`; the tag covers header and payload, and its length
//! is in the header, so a MAC can be added without moving any field. The transport signs
//! every packet it sends (including retransmissions, whose ack fields change) and verifies
//! every packet it receives before looking at anything but the header's framing fields.
//! [`NoAuth`] is the default: a zero-length tag that always verifies.

use std::fmt::Debug;

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
}
