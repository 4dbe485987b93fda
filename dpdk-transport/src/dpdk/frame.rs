//! The Ethernet framing of the DPDK wire: `dst MAC | src MAC | ethertype 0x88B5 | packet`.
//!
//! The packet is exactly what the UDP backend puts in a UDP payload (the `wire` format),
//! so the reliable layer, and a node's choice of software or offload path, does not know
//! which backend carried it. No IP or UDP header: the DPDK wire is one Ethernet segment
//! (memif between processes, a bridge of veths, a rack switch), and the reliable layer
//! already names nodes in its own header.
//!
//! Addresses are cvmm's own, not the ports' burnt-in MACs: node `n` is
//! `02:43:00:00:00:00 + n` (locally administered, unicast), so every node can compute
//! every peer's address from the cluster description alone, and ports run promiscuous
//! (or the medium is point to point) with the filtering done here. The ethertype is the
//! IEEE 802 "local experimental" one: a LAN that carries other traffic ignores ours.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::NodeId;

/// The ethertype of cvmm frames (IEEE 802 Local Experimental Ethertype 1).
pub const ETHERTYPE: u16 = 0x88b5;
/// Bytes of the Ethernet header in front of each packet.
pub const ETH_HEADER_LEN: usize = 14;

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The all-ones broadcast address.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// The address of a cvmm node on the DPDK wire: `02:43` (locally administered,
    /// unicast, "C") followed by the node id, big-endian.
    pub fn for_node(node: NodeId) -> MacAddr {
        let id = node.0.to_be_bytes();
        MacAddr([0x02, 0x43, id[0], id[1], id[2], id[3]])
    }

    /// The node this address names, if it is a cvmm node address.
    pub fn node(self) -> Option<NodeId> {
        let b = self.0;
        (b[0] == 0x02 && b[1] == 0x43).then(|| NodeId(u32::from_be_bytes([b[2], b[3], b[4], b[5]])))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A MAC address that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("Invalid MAC address {text:?}: expected six hex bytes separated by ':'")]
pub struct MacParseError {
    /// What was given.
    pub text: String,
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || MacParseError {
            text: text.to_string(),
        };
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(error)?;
            if part.is_empty() || part.len() > 2 {
                return Err(error());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| error())?;
        }
        if parts.next().is_some() {
            return Err(error());
        }
        Ok(MacAddr(bytes))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The Ethernet header of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthHeader {
    /// Destination.
    pub dst: MacAddr,
    /// Source.
    pub src: MacAddr,
    /// Ethertype (or length, for 802.3 frames).
    pub ethertype: u16,
}

impl EthHeader {
    /// The header of a cvmm frame from `src` to `dst`.
    pub fn cvmm(src: MacAddr, dst: MacAddr) -> Self {
        Self {
            dst,
            src,
            ethertype: ETHERTYPE,
        }
    }

    /// The 14 bytes on the wire.
    pub fn to_bytes(&self) -> [u8; ETH_HEADER_LEN] {
        let mut out = [0u8; ETH_HEADER_LEN];
        out[..6].copy_from_slice(&self.dst.0);
        out[6..12].copy_from_slice(&self.src.0);
        out[12..].copy_from_slice(&self.ethertype.to_be_bytes());
        out
    }

    /// Reads a header from the start of a frame; `None` if the frame is too short.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let bytes: &[u8; ETH_HEADER_LEN] = frame.get(..ETH_HEADER_LEN)?.try_into().ok()?;
        let mac = |at: usize| {
            let mut m = [0u8; 6];
            m.copy_from_slice(&bytes[at..at + 6]);
            MacAddr(m)
        };
        Some(Self {
            dst: mac(0),
            src: mac(6),
            ethertype: u16::from_be_bytes([bytes[12], bytes[13]]),
        })
    }

    /// True for a cvmm frame addressed to `me` (or broadcast). Everything else on a
    /// promiscuous port (other protocols, other nodes' traffic flooded by a bridge, our
    /// own frames looped back by af_packet) is not for us.
    pub fn is_for(&self, me: MacAddr) -> bool {
        self.ethertype == ETHERTYPE && (self.dst == me || self.dst == MacAddr::BROADCAST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn node_addresses_are_local_unicast_and_round_trip() {
        let mac = MacAddr::for_node(NodeId(0x0102_0304));
        assert_eq!(mac.to_string(), "02:43:01:02:03:04");
        // Locally administered (bit 1), unicast (bit 0 clear).
        assert_eq!(mac.0[0] & 0b11, 0b10);
        assert_eq!(mac.node(), Some(NodeId(0x0102_0304)));
        assert_eq!(MacAddr([0x52, 0x54, 0, 0, 0, 1]).node(), None);
    }

    #[test]
    fn parses_and_prints_macs() {
        let mac: MacAddr = "02:43:0a:ff:00:7".parse().unwrap();
        assert_eq!(mac, MacAddr([2, 0x43, 10, 255, 0, 7]));
        assert_eq!(mac.to_string(), "02:43:0a:ff:00:07");
        for bad in [
            "",
            "02:43",
            "02:43:00:00:00:00:00",
            "0g:00:00:00:00:00",
            "123:0:0:0:0:0",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn header_bytes_match_the_ethernet_layout() {
        let h = EthHeader::cvmm(MacAddr::for_node(NodeId(1)), MacAddr::for_node(NodeId(2)));
        let bytes = h.to_bytes();
        // dst first, then src, then the ethertype big-endian.
        assert_eq!(
            bytes,
            [2, 0x43, 0, 0, 0, 2, 2, 0x43, 0, 0, 0, 1, 0x88, 0xb5]
        );
        assert_eq!(EthHeader::parse(&bytes), Some(h));
        assert_eq!(EthHeader::parse(&bytes[..13]), None);
    }

    #[test]
    fn only_our_frames_are_for_us() {
        let me = MacAddr::for_node(NodeId(1));
        let other = MacAddr::for_node(NodeId(2));
        assert!(EthHeader::cvmm(other, me).is_for(me));
        assert!(EthHeader::cvmm(other, MacAddr::BROADCAST).is_for(me));
        assert!(!EthHeader::cvmm(me, other).is_for(me));
        let ipv4 = EthHeader {
            ethertype: 0x0800,
            ..EthHeader::cvmm(other, me)
        };
        assert!(!ipv4.is_for(me));
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(frame in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some(h) = EthHeader::parse(&frame) {
                prop_assert_eq!(&h.to_bytes()[..], &frame[..ETH_HEADER_LEN]);
            } else {
                prop_assert!(frame.len() < ETH_HEADER_LEN);
            }
        }

        #[test]
        fn mac_text_round_trips(bytes in any::<[u8; 6]>()) {
            let mac = MacAddr(bytes);
            prop_assert_eq!(mac.to_string().parse::<MacAddr>(), Ok(mac));
        }
    }
}
