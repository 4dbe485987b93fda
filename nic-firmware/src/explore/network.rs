//! The network between the engines, at two levels of honesty.
//!
//! - [`NetworkModel::Reliable`]: what the transport promises the engine. One FIFO queue
//!   per ordered node pair; the explorer delivers the oldest message of any non-empty
//!   queue, so every interleaving across links is explored. Loss (a retransmission later)
//!   and duplication (dropped by sequence number) change nothing the engine can see: they
//!   only delay a message, and every delay is already one of the interleavings.
//! - [`NetworkModel::Lossy`]: the raw network under a small model of the transport's
//!   sequence/acknowledgement layer (`dpdk-transport`'s `PeerLink` rules: sequence numbers,
//!   a receive buffer for packets ahead of a gap, duplicates dropped, retransmission of
//!   anything not yet delivered). Packets on the wire are a bag, so they arrive in any
//!   order, any copy may be lost, any copy duplicated, any undelivered message
//!   retransmitted at any time. It checks end to end what the reliable level assumes, at a
//!   smaller workload (the state space is much larger).
//!
//! Two abstractions keep the lossy level finite and small, both exact for what the engines
//! can observe: sequence numbers are relative to the receiver's next expected message; and
//! a copy of a message the receiver has already handed up is removed from the wire at once
//! (it could only be dropped on arrival or lost; the room it would take on the wire only
//! causes losses, which the model makes anyway). So acknowledgements need no modelling: a
//! lost or late ack only causes such retransmissions. Duplicates of a message waiting in
//! the receive buffer stay on the wire and are dropped by sequence number when they arrive.

use std::collections::VecDeque;
use std::vec::Vec;

use vima::wire::{Body, Message, PAGE_BYTES};

use crate::engine::NodeId;

/// How the explorer models the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NetworkModel {
    /// Exactly once, in order per link, any order across links (the transport's promise).
    Reliable,
    /// Lossy, duplicating, reordering wire under a sequence/ack layer.
    Lossy {
        /// Most packet copies in flight on one link at a time; a send or retransmission
        /// that finds the wire full is lost.
        wire_capacity: usize,
        /// Most undelivered messages per link (the transport's send window). Paths that
        /// would exceed it are not explored (counted as pruned).
        window: usize,
        /// The sender retransmits. Off, a lost message is lost for good: a broken
        /// transport, which the liveness check must catch.
        retransmit: bool,
    },
}

/// A coherence message in compact form: page contents are a version number (see
/// `model::contents`), the page an index into the explored pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Packet {
    pub src: NodeId,
    pub dst: NodeId,
    pub request_id: u64,
    pub page: u8,
    pub body: PacketBody,
}

/// The coherence message kinds, with a version standing for page contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PacketBody {
    ReadReq,
    WriteReq {
        has_copy: bool,
    },
    ForwardRead {
        requester: NodeId,
    },
    ForwardWrite {
        requester: NodeId,
    },
    Invalidate,
    InvalidateAck,
    PageData {
        exclusive: bool,
        version: u16,
    },
    UpgradeGrant,
    Writeback {
        version: u16,
    },
    Unblock,
    Nack,
    /// The version stands for the page of an Exclusive eviction; `None`: a Shared one.
    Evict {
        version: Option<u16>,
    },
    EvictAck,
    /// A directory entry (Exclusive at `owner`, else Shared by `sharers`), with the page
    /// when `version` is some.
    HomeMove {
        exclusive: bool,
        owner: NodeId,
        sharers: u16,
        version: Option<u16>,
    },
    /// The range of `count` pages from the packet's page is homed at `home` from now on.
    HomeChange {
        count: u8,
        home: NodeId,
    },
    HomeChangeAck {
        count: u8,
        home: NodeId,
    },
}

impl Packet {
    /// The wire message, page contents built into `buf`.
    pub fn message<'b>(
        &self,
        vs_id: u16,
        logical_page: u64,
        buf: &'b mut [u8; PAGE_BYTES],
    ) -> Message<'b> {
        let page = logical_page;
        let body = match self.body {
            PacketBody::ReadReq => Body::ReadReq { page },
            PacketBody::WriteReq { has_copy } => Body::WriteReq { page, has_copy },
            PacketBody::ForwardRead { requester } => Body::ForwardRead { page, requester },
            PacketBody::ForwardWrite { requester } => Body::ForwardWrite { page, requester },
            PacketBody::Invalidate => Body::Invalidate { page },
            PacketBody::InvalidateAck => Body::InvalidateAck { page },
            PacketBody::UpgradeGrant => Body::UpgradeGrant { page },
            PacketBody::Unblock => Body::Unblock { page },
            PacketBody::Nack => Body::Nack { page },
            PacketBody::EvictAck => Body::EvictAck { page },
            PacketBody::HomeMove {
                exclusive,
                owner,
                sharers,
                version,
            } => {
                let data = version.map(|v| {
                    *buf = super::model::contents(page, v);
                    &*buf
                });
                Body::HomeMove {
                    page,
                    exclusive,
                    owner,
                    sharers,
                    data,
                }
            }
            PacketBody::HomeChange { count, home } => Body::HomeChange {
                first: page,
                count: u64::from(count),
                home,
            },
            PacketBody::HomeChangeAck { count, home } => Body::HomeChangeAck {
                first: page,
                count: u64::from(count),
                home,
            },
            PacketBody::Evict { version: None } => Body::Evict { page, data: None },
            PacketBody::Evict {
                version: Some(version),
            } => {
                *buf = super::model::contents(page, version);
                Body::Evict {
                    page,
                    data: Some(buf),
                }
            }
            PacketBody::PageData { exclusive, version } => {
                *buf = super::model::contents(page, version);
                Body::PageData {
                    page,
                    exclusive,
                    data: buf,
                }
            }
            PacketBody::Writeback { version } => {
                *buf = super::model::contents(page, version);
                Body::Writeback { page, data: buf }
            }
        };
        Message {
            vs_id,
            src: self.src,
            dst: self.dst,
            request_id: self.request_id,
            body,
        }
    }

    /// Short name of the message, for traces.
    pub fn describe(&self) -> String {
        let what = match self.body {
            PacketBody::ReadReq => "ReadReq".to_string(),
            PacketBody::WriteReq { has_copy } => format!("WriteReq(has_copy={has_copy})"),
            PacketBody::ForwardRead { requester } => format!("ForwardRead(to {requester})"),
            PacketBody::ForwardWrite { requester } => format!("ForwardWrite(to {requester})"),
            PacketBody::Invalidate => "Invalidate".to_string(),
            PacketBody::InvalidateAck => "InvalidateAck".to_string(),
            PacketBody::PageData { exclusive, version } => format!(
                "PageData({}, v{version})",
                if exclusive { "Exclusive" } else { "Shared" }
            ),
            PacketBody::UpgradeGrant => "UpgradeGrant".to_string(),
            PacketBody::Writeback { version } => format!("Writeback(v{version})"),
            PacketBody::Unblock => "Unblock".to_string(),
            PacketBody::Nack => "Nack".to_string(),
            PacketBody::Evict { version: None } => "Evict(Shared)".to_string(),
            PacketBody::Evict {
                version: Some(version),
            } => format!("Evict(Exclusive, v{version})"),
            PacketBody::EvictAck => "EvictAck".to_string(),
            PacketBody::HomeMove {
                exclusive,
                owner,
                sharers,
                version,
            } => {
                let state = if exclusive {
                    format!("Exclusive({owner})")
                } else {
                    format!("Shared({sharers:#b})")
                };
                match version {
                    Some(v) => format!("HomeMove({state}, v{v})"),
                    None => format!("HomeMove({state})"),
                }
            }
            PacketBody::HomeChange { count, home } => format!("HomeChange({count} to {home})"),
            PacketBody::HomeChangeAck { count, home } => {
                format!("HomeChangeAck({count} to {home})")
            }
        };
        format!("{what} page {} rid {:#x}", self.page, self.request_id)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.push(self.page);
        let (tag, a, b): (u8, u16, u16) = match self.body {
            PacketBody::ReadReq => (0, 0, 0),
            PacketBody::WriteReq { has_copy } => (1, u16::from(has_copy), 0),
            PacketBody::ForwardRead { requester } => (2, requester, 0),
            PacketBody::ForwardWrite { requester } => (3, requester, 0),
            PacketBody::Invalidate => (4, 0, 0),
            PacketBody::InvalidateAck => (5, 0, 0),
            PacketBody::PageData { exclusive, version } => (6, u16::from(exclusive), version),
            PacketBody::UpgradeGrant => (7, 0, 0),
            PacketBody::Writeback { version } => (8, version, 0),
            PacketBody::Unblock => (9, 0, 0),
            PacketBody::Nack => (10, 0, 0),
            PacketBody::Evict { version } => {
                (11, u16::from(version.is_some()), version.unwrap_or(0))
            }
            PacketBody::EvictAck => (12, 0, 0),
            PacketBody::HomeMove {
                exclusive,
                owner,
                sharers,
                version,
            } => (
                13 + u8::from(exclusive) + 2 * u8::from(version.is_some()),
                if exclusive { owner } else { sharers },
                version.unwrap_or(0),
            ),
            PacketBody::HomeChange { count, home } => (17, home, u16::from(count)),
            PacketBody::HomeChangeAck { count, home } => (18, home, u16::from(count)),
        };
        out.push(tag);
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
    }
}

/// One direction of one node pair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Link {
    /// The messages not yet handed to the receiver's engine, oldest first. Lossy: the
    /// first is the receiver's next expected message, relative sequence number 0.
    pub queue: VecDeque<Packet>,
    /// Lossy: messages the receiver holds ahead of a gap: bit `i` is relative number `i`
    /// (bit 0 set: the gap is filled and the message can be handed up).
    pub buffered: u32,
    /// Lossy: the copies on the wire, by relative sequence number, sorted.
    pub wire: Vec<u8>,
}

/// What became of a packet copy that arrived.
pub(super) enum Arrival {
    /// The receiver hands this message to its engine.
    Deliver(Packet),
    /// Ahead of a gap: kept in the receive buffer.
    Buffered,
    /// A copy the receiver already had: dropped.
    Duplicate,
}

impl Link {
    /// The sender hands a message to the transport. Lossy: the first transmission goes on
    /// the wire if there is room (else it is lost and waits for a retransmission). Returns
    /// false when the send window is full (the path is not explored).
    pub fn send(&mut self, packet: Packet, model: NetworkModel) -> bool {
        match model {
            NetworkModel::Reliable => {
                self.queue.push_back(packet);
                true
            }
            NetworkModel::Lossy {
                wire_capacity,
                window,
                ..
            } => {
                if self.queue.len() >= window {
                    return false;
                }
                self.queue.push_back(packet);
                if self.wire.len() < wire_capacity {
                    let seq = relative(self.queue.len() - 1);
                    self.put_on_wire(seq);
                }
                true
            }
        }
    }

    /// Nothing in flight, nothing undelivered.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.wire.is_empty()
    }

    /// Reliable: the oldest undelivered message.
    pub fn pop_oldest(&mut self) -> Option<Packet> {
        self.queue.pop_front()
    }

    /// Lossy: the distinct copies on the wire.
    pub fn distinct_on_wire(&self) -> impl Iterator<Item = u8> + '_ {
        let mut last = None;
        self.wire.iter().copied().filter(move |seq| {
            let new = last != Some(*seq);
            last = Some(*seq);
            new
        })
    }

    /// Lossy: a copy of `seq` arrives at the receiver.
    pub fn arrive(&mut self, seq: u8) -> Option<Arrival> {
        self.take_from_wire(seq)?;
        if self.buffered & (1 << u32::from(seq)) != 0 {
            return Some(Arrival::Duplicate);
        }
        if seq == 0 {
            return self.hand_up().map(Arrival::Deliver);
        }
        self.buffered |= 1 << u32::from(seq);
        Some(Arrival::Buffered)
    }

    /// Lossy: the receiver hands up the buffered message that filled a gap.
    pub fn release(&mut self) -> Option<Packet> {
        if self.buffered & 1 == 0 {
            return None;
        }
        self.hand_up()
    }

    /// Lossy: a copy of `seq` is lost.
    pub fn lose(&mut self, seq: u8) -> Option<()> {
        self.take_from_wire(seq)
    }

    /// Lossy: the network duplicates a copy of `seq` (needs room on the wire).
    pub fn duplicate(&mut self, seq: u8, wire_capacity: usize) -> Option<()> {
        if !self.wire.contains(&seq) || self.wire.len() >= wire_capacity {
            return None;
        }
        self.put_on_wire(seq);
        Some(())
    }

    /// Lossy: the sender retransmits message `seq`, not handed up yet (needs room).
    pub fn retransmit(&mut self, seq: u8, wire_capacity: usize) -> Option<()> {
        if usize::from(seq) >= self.queue.len() || self.wire.len() >= wire_capacity {
            return None;
        }
        self.put_on_wire(seq);
        Some(())
    }

    /// Every message in the link (the checker renames their request ids).
    pub fn packets_mut(&mut self) -> impl Iterator<Item = &mut Packet> {
        self.queue.iter_mut()
    }

    /// Every message in the link.
    pub fn packets(&self) -> impl Iterator<Item = &Packet> {
        self.queue.iter()
    }

    /// The message with relative number `seq`, if not handed up yet.
    pub fn message_at(&self, seq: u8) -> Option<&Packet> {
        self.queue.get(usize::from(seq))
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(relative(self.queue.len()));
        for packet in &self.queue {
            packet.encode(out);
        }
        out.extend_from_slice(&self.buffered.to_le_bytes());
        out.push(relative(self.wire.len()));
        out.extend_from_slice(&self.wire);
    }

    fn hand_up(&mut self) -> Option<Packet> {
        let packet = self.queue.pop_front()?;
        self.buffered >>= 1;
        // Copies of the message handed up are gone (see the module comment); the others
        // move down one.
        self.wire.retain(|seq| *seq != 0);
        for seq in &mut self.wire {
            *seq -= 1;
        }
        Some(packet)
    }

    fn take_from_wire(&mut self, seq: u8) -> Option<()> {
        let at = self.wire.iter().position(|s| *s == seq)?;
        self.wire.remove(at);
        Some(())
    }

    fn put_on_wire(&mut self, seq: u8) {
        let at = self.wire.partition_point(|s| *s < seq);
        self.wire.insert(at, seq);
    }
}

/// A queue position as a relative sequence number (queues stay far below 255: the window
/// bounds them).
fn relative(position: usize) -> u8 {
    u8::try_from(position).expect("link queues are bounded by the send window")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOSSY: NetworkModel = NetworkModel::Lossy {
        wire_capacity: 3,
        window: 4,
        retransmit: true,
    };

    fn packet(request_id: u64) -> Packet {
        Packet {
            src: 0,
            dst: 1,
            request_id,
            page: 0,
            body: PacketBody::Unblock,
        }
    }

    fn delivered(arrival: Option<Arrival>) -> Option<u64> {
        match arrival {
            Some(Arrival::Deliver(p)) => Some(p.request_id),
            _ => None,
        }
    }

    #[test]
    fn reordered_duplicated_and_lost_copies_are_handed_up_once_in_order() {
        let mut link = Link::default();
        for id in 1..=3 {
            assert!(link.send(packet(id), LOSSY));
        }
        assert_eq!(link.wire, [0, 1, 2]);
        // 3 arrives first and is buffered; a duplicate of it is dropped. 2 is lost, then
        // retransmitted.
        assert_eq!(link.duplicate(2, 4), Some(()));
        assert!(matches!(link.arrive(2), Some(Arrival::Buffered)));
        assert!(matches!(link.arrive(2), Some(Arrival::Duplicate)));
        assert_eq!(link.lose(1), Some(()));
        assert_eq!(link.retransmit(1, 3), Some(()));
        assert_eq!(link.duplicate(0, 3), Some(()));
        assert_eq!(link.wire, [0, 0, 1]);
        assert_eq!(delivered(link.arrive(0)), Some(1));
        // Numbers are relative to the next expected message: 2 is now #0, 3 is #1; the
        // other copy of 1 is gone.
        assert_eq!(link.wire, [0]);
        assert_eq!(link.buffered, 0b10);
        assert_eq!(delivered(link.arrive(0)), Some(2));
        // 3 was buffered: the gap is filled, it is released next.
        assert_eq!(link.release().map(|p| p.request_id), Some(3));
        assert_eq!(link.release(), None);
        assert!(link.is_empty());
        assert!(link.send(packet(4), LOSSY));
        assert_eq!(link.wire, [0]);
    }

    #[test]
    fn a_full_wire_loses_the_send_and_a_full_window_refuses_it() {
        let mut link = Link::default();
        for id in 1..=4 {
            assert!(link.send(packet(id), LOSSY));
        }
        assert_eq!(link.wire, [0, 1, 2], "the fourth send found the wire full");
        assert!(!link.send(packet(5), LOSSY), "window of 4");
        assert_eq!(link.duplicate(0, 3), None, "no room");
        assert_eq!(link.lose(0), Some(()));
        assert_eq!(link.retransmit(3, 3), Some(()));
        assert_eq!(link.wire, [1, 2, 3]);
    }

    #[test]
    fn reliable_links_are_fifo() {
        let mut link = Link::default();
        for id in 1..=3 {
            assert!(link.send(packet(id), NetworkModel::Reliable));
        }
        let order: Vec<u64> = std::iter::from_fn(|| link.pop_oldest())
            .map(|p| p.request_id)
            .collect();
        assert_eq!(order, [1, 2, 3]);
    }
}
