//! The buffer a received message arrives in.
//!
//! A page-sized message is handed to the application in the very buffer the datagram was
//! received into (the header stays in front, skipped by an offset): no copy of the 4 KiB.
//! Small messages are copied out instead, so a 64-byte message waiting in a queue does not
//! pin a 4.4 KiB buffer.

use std::fmt;
use std::ops::Deref;

/// Payloads at most this long are copied out of the receive buffer.
pub(crate) const COPY_THRESHOLD: usize = 512;

/// The bytes of one received message. Dereferences to `[u8]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    buf: Vec<u8>,
    start: usize,
}

impl Payload {
    /// A payload that is all of `bytes`.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self {
            buf: bytes,
            start: 0,
        }
    }

    /// A payload that is `buf[start..]` (`start` is clamped to the length).
    pub(crate) fn with_offset(mut buf: Vec<u8>, start: usize, end: usize) -> Self {
        buf.truncate(end);
        let start = start.min(buf.len());
        Self { buf, start }
    }

    /// The payload as its own vector (moves the bytes down if the buffer has a prefix).
    pub fn into_vec(mut self) -> Vec<u8> {
        self.buf.drain(..self.start);
        self.buf
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_payload_views_and_converts() {
        let p = Payload::with_offset(vec![9, 9, 1, 2, 3, 7], 2, 5);
        assert_eq!(&*p, &[1, 2, 3]);
        assert_eq!(p.clone().into_vec(), vec![1, 2, 3]);
        assert_eq!(Payload::from_vec(vec![4]).as_ref(), &[4]);
        assert_eq!(&*Payload::with_offset(vec![1], 5, 9), &[] as &[u8]);
    }
}
