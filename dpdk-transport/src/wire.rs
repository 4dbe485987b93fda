//! The packet format: one fixed 48-byte header, the payload, then an optional
//! authentication tag.
//!
//! Every field is explicit little-endian and written byte by byte, so the format does not
//! depend on the host's layout rules and a future DPDK or FPGA implementation can parse it
//! with fixed offsets. [`decode`] checks everything it reads and returns a typed
//! [`WireError`]; it never panics, whatever the bytes (a property test feeds it random
//! input). The tag is appended after the payload and covers header and payload, so issue 6
//! (authentication) can add a MAC without changing any offset.

use thiserror::Error;

/// `"CVMW"` (cvmm wire) read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"CVMW");
/// The wire version this crate speaks.
pub const VERSION: u8 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 48;
/// Largest payload of one packet: a 4 KiB page plus room for the coherence message that
/// carries it. Everything travels in one datagram; there is no fragmentation.
pub const MAX_PAYLOAD: usize = PAGE_BYTES + 256;
/// A logical page, as vima defines it.
const PAGE_BYTES: usize = 4096;
const _: () = assert!(PAGE_BYTES as u64 == vima::layout::PAGE_SIZE);
/// Largest authentication tag (a 256-bit MAC).
pub const MAX_TAG: usize = 32;
/// Largest datagram this protocol produces.
pub const MAX_DATAGRAM: usize = HEADER_LEN + MAX_PAYLOAD + MAX_TAG;
/// Bits of selective acknowledgement in each header.
pub const SACK_BITS: u32 = 64;

/// Header flag bits that are defined; others must be 0.
const KNOWN_FLAGS: u8 = 0;

// Field offsets, in one place so encode and decode cannot disagree.
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_KIND: usize = 5;
const OFF_FLAGS: usize = 6;
const OFF_TAG_LEN: usize = 7;
const OFF_CLUSTER: usize = 8;
const OFF_SRC: usize = 12;
const OFF_DST: usize = 16;
const OFF_SESSION: usize = 20;
const OFF_SEQ: usize = 24;
const OFF_ACK: usize = 28;
const OFF_SACK: usize = 32;
const OFF_PAYLOAD_LEN: usize = 40;
const OFF_ECHO: usize = 42;
const OFF_RESERVED: usize = 46;

/// What a packet is for.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// Carries one message; has a sequence number and is acknowledged.
    Data = 1,
    /// Only acknowledges (no payload, `seq` unused).
    Ack = 2,
    /// Sent when a link is idle so the peer knows this node is alive; also acknowledges.
    Heartbeat = 3,
}

impl PacketKind {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Data),
            2 => Some(Self::Ack),
            3 => Some(Self::Heartbeat),
            _ => None,
        }
    }
}

/// The decoded fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the packet is for.
    pub kind: PacketKind,
    /// Flag bits (none defined yet; must be 0).
    pub flags: u8,
    /// Bytes of authentication tag after the payload.
    pub tag_len: u8,
    /// The virtual computer / virtual server this packet belongs to; other clusters' packets
    /// are dropped.
    pub cluster: u32,
    /// Sending node.
    pub src: u32,
    /// Receiving node.
    pub dst: u32,
    /// The sender's incarnation: a random number chosen when its transport starts, so
    /// packets of an earlier run on the same address are recognised and dropped.
    pub session: u32,
    /// Sequence number of a data packet (per direction of a node pair, from 0, wrapping).
    pub seq: u32,
    /// Cumulative ack: every data sequence number below this one has been received.
    pub ack: u32,
    /// Selective ack: bit `i` set means `ack + 1 + i` has been received.
    pub sack: u64,
    /// Bytes of payload after the header.
    pub payload_len: u16,
    /// The receiver's session as the sender knows it (0 until it heard one): proof that
    /// the packet was made after the sender heard this incarnation of the link, so a
    /// packet of an earlier run, replayed, cannot open a link (see `peer.rs`).
    pub echo: u32,
}

/// Why a packet was rejected.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than a header.
    #[error("Packet of {len} bytes is shorter than the header")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// Not this protocol.
    #[error("Bad magic {magic:#010x}")]
    BadMagic {
        /// The value found.
        magic: u32,
    },
    /// A version this crate does not speak.
    #[error("Unsupported wire version {version}")]
    UnsupportedVersion {
        /// The value found.
        version: u8,
    },
    /// Unknown packet kind.
    #[error("Unknown packet kind {kind}")]
    UnknownKind {
        /// The value found.
        kind: u8,
    },
    /// Flag bits that are not defined.
    #[error("Unknown flags {flags:#04x}")]
    UnknownFlags {
        /// The value found.
        flags: u8,
    },
    /// The reserved field is not 0.
    #[error("Reserved header field is not zero")]
    ReservedNonZero,
    /// Payload longer than [`MAX_PAYLOAD`].
    #[error("Payload of {len} bytes is too large")]
    PayloadTooLarge {
        /// The claimed length.
        len: usize,
    },
    /// Tag longer than [`MAX_TAG`].
    #[error("Tag of {len} bytes is too large")]
    TagTooLarge {
        /// The claimed length.
        len: usize,
    },
    /// The datagram length does not equal header + payload + tag.
    #[error("Packet is {actual} bytes, header says {expected}")]
    LengthMismatch {
        /// Header + payload + tag as the header claims.
        expected: usize,
        /// Bytes received.
        actual: usize,
    },
    /// An ack or heartbeat with a payload.
    #[error("Packet kind {kind:?} must not carry a payload")]
    UnexpectedPayload {
        /// The packet kind.
        kind: PacketKind,
    },
    /// The output buffer cannot hold the packet.
    #[error("Buffer of {len} bytes cannot hold a {needed}-byte packet")]
    BufferTooSmall {
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
}

/// A packet that passed [`decode`]: its header and where its parts are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The header.
    pub header: Header,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// Header and payload: the bytes the tag authenticates.
    pub authenticated: &'a [u8],
    /// The tag bytes.
    pub tag: &'a [u8],
}

fn read_u16(buf: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([buf[off], buf[off + 1]])
}

fn read_u32(buf: &[u8], off: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[off..off + 4]);
    u32::from_le_bytes(bytes)
}

fn read_u64(buf: &[u8], off: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[off..off + 8]);
    u64::from_le_bytes(bytes)
}

/// Parses and validates one datagram. Checks, in order: length, magic, version, kind,
/// flags, reserved bits, payload and tag lengths, that the datagram has exactly the
/// claimed length, and that only data packets carry payload. Does not check the tag
/// (that is the [`crate::Authenticator`]'s job) nor addressing (the transport's).
pub fn decode(buf: &[u8]) -> Result<Packet<'_>, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::TooShort { len: buf.len() });
    }
    let magic = read_u32(buf, OFF_MAGIC);
    if magic != MAGIC {
        return Err(WireError::BadMagic { magic });
    }
    let version = buf[OFF_VERSION];
    if version != VERSION {
        return Err(WireError::UnsupportedVersion { version });
    }
    let kind = PacketKind::from_u8(buf[OFF_KIND]).ok_or(WireError::UnknownKind {
        kind: buf[OFF_KIND],
    })?;
    let flags = buf[OFF_FLAGS];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(WireError::UnknownFlags { flags });
    }
    if buf[OFF_RESERVED..HEADER_LEN].iter().any(|&b| b != 0) {
        return Err(WireError::ReservedNonZero);
    }
    let payload_len = read_u16(buf, OFF_PAYLOAD_LEN);
    let payload_bytes = usize::from(payload_len);
    if payload_bytes > MAX_PAYLOAD {
        return Err(WireError::PayloadTooLarge { len: payload_bytes });
    }
    let tag_len = buf[OFF_TAG_LEN];
    let tag_bytes = usize::from(tag_len);
    if tag_bytes > MAX_TAG {
        return Err(WireError::TagTooLarge { len: tag_bytes });
    }
    let expected = HEADER_LEN + payload_bytes + tag_bytes;
    if buf.len() != expected {
        return Err(WireError::LengthMismatch {
            expected,
            actual: buf.len(),
        });
    }
    if kind != PacketKind::Data && payload_len != 0 {
        return Err(WireError::UnexpectedPayload { kind });
    }
    let header = Header {
        kind,
        flags,
        tag_len,
        cluster: read_u32(buf, OFF_CLUSTER),
        src: read_u32(buf, OFF_SRC),
        dst: read_u32(buf, OFF_DST),
        session: read_u32(buf, OFF_SESSION),
        seq: read_u32(buf, OFF_SEQ),
        ack: read_u32(buf, OFF_ACK),
        sack: read_u64(buf, OFF_SACK),
        payload_len,
        echo: read_u32(buf, OFF_ECHO),
    };
    let body_end = HEADER_LEN + payload_bytes;
    Ok(Packet {
        header,
        payload: &buf[HEADER_LEN..body_end],
        authenticated: &buf[..body_end],
        tag: &buf[body_end..],
    })
}

/// Writes the header into `out[..HEADER_LEN]`. The caller has checked `out` is long
/// enough.
fn write_header(header: &Header, out: &mut [u8]) {
    out[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&MAGIC.to_le_bytes());
    out[OFF_VERSION] = VERSION;
    out[OFF_KIND] = header.kind as u8;
    out[OFF_FLAGS] = header.flags;
    out[OFF_TAG_LEN] = header.tag_len;
    out[OFF_CLUSTER..OFF_CLUSTER + 4].copy_from_slice(&header.cluster.to_le_bytes());
    out[OFF_SRC..OFF_SRC + 4].copy_from_slice(&header.src.to_le_bytes());
    out[OFF_DST..OFF_DST + 4].copy_from_slice(&header.dst.to_le_bytes());
    out[OFF_SESSION..OFF_SESSION + 4].copy_from_slice(&header.session.to_le_bytes());
    out[OFF_SEQ..OFF_SEQ + 4].copy_from_slice(&header.seq.to_le_bytes());
    write_ack_fields(out, header.ack, header.sack, header.echo);
    out[OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 2].copy_from_slice(&header.payload_len.to_le_bytes());
    out[OFF_RESERVED..HEADER_LEN].fill(0);
}

/// Overwrites the ack, sack and echo fields of an encoded packet (a retransmission
/// carries the newest acknowledgement and the peer's session as now known, not those of
/// its first transmission).
pub(crate) fn write_ack_fields(packet: &mut [u8], ack: u32, sack: u64, echo: u32) {
    packet[OFF_ACK..OFF_ACK + 4].copy_from_slice(&ack.to_le_bytes());
    packet[OFF_SACK..OFF_SACK + 8].copy_from_slice(&sack.to_le_bytes());
    packet[OFF_ECHO..OFF_ECHO + 4].copy_from_slice(&echo.to_le_bytes());
}

/// Encodes header, payload and room for a `header.tag_len`-byte tag into `out`; returns
/// the packet length. `header.payload_len` must equal `payload.len()`. The tag bytes are
/// zeroed; the caller signs `out[..len - tag_len]` into them.
pub fn encode(header: &Header, payload: &[u8], out: &mut [u8]) -> Result<usize, WireError> {
    if payload.len() > MAX_PAYLOAD || usize::from(header.payload_len) != payload.len() {
        return Err(WireError::PayloadTooLarge { len: payload.len() });
    }
    let tag_bytes = usize::from(header.tag_len);
    if tag_bytes > MAX_TAG {
        return Err(WireError::TagTooLarge { len: tag_bytes });
    }
    if header.kind != PacketKind::Data && !payload.is_empty() {
        return Err(WireError::UnexpectedPayload { kind: header.kind });
    }
    let needed = HEADER_LEN + payload.len() + tag_bytes;
    if out.len() < needed {
        return Err(WireError::BufferTooSmall {
            len: out.len(),
            needed,
        });
    }
    write_header(header, out);
    out[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
    out[HEADER_LEN + payload.len()..needed].fill(0);
    Ok(needed)
}

/// Encodes into a new vector of exactly the packet's length.
pub fn encode_to_vec(header: &Header, payload: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; HEADER_LEN + payload.len() + usize::from(header.tag_len)];
    let len = encode(header, payload, &mut out)?;
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_header() -> Header {
        Header {
            kind: PacketKind::Data,
            flags: 0,
            tag_len: 0,
            cluster: 7,
            src: 1,
            dst: 2,
            session: 0xdead_beef,
            seq: 0x0102_0304,
            ack: 42,
            sack: 0x8000_0000_0000_0001,
            payload_len: 3,
            echo: 0x0a0b_0c0d,
        }
    }

    #[test]
    fn layout_is_little_endian_at_fixed_offsets() {
        let packet = encode_to_vec(&sample_header(), b"abc").unwrap();
        assert_eq!(packet.len(), HEADER_LEN + 3);
        assert_eq!(&packet[0..4], b"CVMW");
        assert_eq!(packet[4], 1);
        assert_eq!(packet[5], 1);
        assert_eq!(&packet[8..12], &[7, 0, 0, 0]);
        assert_eq!(&packet[12..16], &[1, 0, 0, 0]);
        assert_eq!(&packet[16..20], &[2, 0, 0, 0]);
        assert_eq!(&packet[20..24], &[0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(&packet[24..28], &[4, 3, 2, 1]);
        assert_eq!(&packet[28..32], &[42, 0, 0, 0]);
        assert_eq!(&packet[32..40], &[1, 0, 0, 0, 0, 0, 0, 0x80]);
        assert_eq!(&packet[40..42], &[3, 0]);
        assert_eq!(&packet[42..46], &[0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(&packet[46..48], &[0, 0]);
        assert_eq!(&packet[48..], b"abc");
    }

    #[test]
    fn roundtrip_with_tag() {
        let header = Header {
            tag_len: 16,
            ..sample_header()
        };
        let packet = encode_to_vec(&header, b"abc").unwrap();
        let decoded = decode(&packet).unwrap();
        assert_eq!(decoded.header, header);
        assert_eq!(decoded.payload, b"abc");
        assert_eq!(decoded.authenticated.len(), HEADER_LEN + 3);
        assert_eq!(decoded.tag, &[0u8; 16]);
    }

    #[test]
    fn each_malformation_has_its_error() {
        let good = encode_to_vec(&sample_header(), b"abc").unwrap();
        let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = good.clone();
            f(&mut p);
            decode(&p).map(|_| ())
        };
        assert_eq!(
            mutate(&|p| p.truncate(47)),
            Err(WireError::TooShort { len: 47 })
        );
        assert_eq!(
            mutate(&|p| p[0] = b'X'),
            Err(WireError::BadMagic {
                magic: u32::from_le_bytes(*b"XVMW")
            })
        );
        assert_eq!(
            mutate(&|p| p[4] = 2),
            Err(WireError::UnsupportedVersion { version: 2 })
        );
        assert_eq!(
            mutate(&|p| p[5] = 9),
            Err(WireError::UnknownKind { kind: 9 })
        );
        assert_eq!(
            mutate(&|p| p[6] = 0x80),
            Err(WireError::UnknownFlags { flags: 0x80 })
        );
        assert_eq!(mutate(&|p| p[47] = 1), Err(WireError::ReservedNonZero));
        assert_eq!(
            mutate(&|p| p[40..42].copy_from_slice(&5000u16.to_le_bytes())),
            Err(WireError::PayloadTooLarge { len: 5000 })
        );
        assert_eq!(
            mutate(&|p| p[7] = 33),
            Err(WireError::TagTooLarge { len: 33 })
        );
        assert_eq!(
            mutate(&|p| p.push(0)),
            Err(WireError::LengthMismatch {
                expected: 51,
                actual: 52
            })
        );
        assert_eq!(
            mutate(&|p| p[5] = PacketKind::Ack as u8),
            Err(WireError::UnexpectedPayload {
                kind: PacketKind::Ack
            })
        );
    }

    #[test]
    fn encode_rejects_bad_requests() {
        let mut small = [0u8; 10];
        assert_eq!(
            encode(&sample_header(), b"abc", &mut small),
            Err(WireError::BufferTooSmall {
                len: 10,
                needed: 51
            })
        );
        let ack = Header {
            kind: PacketKind::Ack,
            ..sample_header()
        };
        assert!(encode_to_vec(&ack, b"abc").is_err());
        let big = vec![0u8; MAX_PAYLOAD + 1];
        assert!(encode_to_vec(
            &Header {
                payload_len: 0,
                ..sample_header()
            },
            &big
        )
        .is_err());
    }

    #[test]
    fn rewriting_ack_fields_keeps_the_rest() {
        let mut packet = encode_to_vec(&sample_header(), b"abc").unwrap();
        write_ack_fields(&mut packet, 99, 5, 77);
        let decoded = decode(&packet).unwrap();
        assert_eq!(
            decoded.header,
            Header {
                ack: 99,
                sack: 5,
                echo: 77,
                ..sample_header()
            }
        );
    }

    fn arb_header() -> impl Strategy<Value = (Header, Vec<u8>)> {
        (
            prop_oneof![
                Just(PacketKind::Data),
                Just(PacketKind::Ack),
                Just(PacketKind::Heartbeat)
            ],
            0..=32u8,
            any::<[u32; 7]>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(kind, tag_len, w, sack, mut payload)| {
                if kind != PacketKind::Data {
                    payload.clear();
                }
                let header = Header {
                    kind,
                    flags: 0,
                    tag_len,
                    cluster: w[0],
                    src: w[1],
                    dst: w[2],
                    session: w[3],
                    seq: w[4],
                    ack: w[5],
                    sack,
                    payload_len: u16::try_from(payload.len()).unwrap(),
                    echo: w[6],
                };
                (header, payload)
            })
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_corrupted_packets(
            (header, payload) in arb_header(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut packet = encode_to_vec(&header, &payload).unwrap();
            for (at, value) in flips {
                let len = packet.len();
                packet[at % len] = value;
            }
            let cut = cut % (packet.len() + 1);
            let _ = decode(&packet[..cut]);
            let _ = decode(&packet);
        }

        #[test]
        fn encode_then_decode_is_identity((header, payload) in arb_header()) {
            let packet = encode_to_vec(&header, &payload).unwrap();
            let decoded = decode(&packet).unwrap();
            prop_assert_eq!(decoded.header, header);
            prop_assert_eq!(decoded.payload, &payload[..]);
            prop_assert_eq!(decoded.tag.len(), usize::from(header.tag_len));
        }
    }
}
