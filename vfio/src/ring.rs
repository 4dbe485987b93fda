//! The two descriptor rings and what travels on them, as pure logic over
//! [`SharedMemory`]: no syscalls, so it is unit- and property-tested on heap memory.
//!
//! Each ring has one producer and one consumer and two free-running `u32` indices in BAR0
//! (the producer's `tail`, the consumer's `head`); `tail - head` (wrapping) is the number
//! of entries in flight and is never more than the ring size. The producer writes the entry
//! (and its buffer) first and publishes it with a Release store of `tail`; the consumer
//! loads `tail` with Acquire, copies the entry out, checks it, and then stores `head`.
//!
//! The side that reads an index written by the other side does not trust it: a `tail` that
//! claims more than a ring's worth of entries is refused ([`RingPollError::Doorbell`]) and
//! nothing is consumed; an entry that does not decode is consumed and refused
//! ([`RingPollError::Descriptor`]), so a bad host cannot wedge or crash the firmware.
//!
//! The completion ring's `head` has one more meaning: the host advances it only after it
//! *applied* the completion (changed its mappings). The firmware reads it as the
//! acknowledgement it needs before it may send a page whose mapping it asked the host to
//! change (the engine's action-ordering rule).

use crate::layout::{
    self, cq_op, reg, sq_op, CompletionEntry, SubmissionDescriptor, BUFFER_BYTES, CQ_ENTRIES,
    SQ_ENTRIES, SQ_FLAG_WRITE,
};
use crate::region::SharedMemory;

/// A page's local state as the rings carry it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageAccess {
    /// Not mapped.
    Invalid = 0,
    /// Mapped read-only.
    Shared = 1,
    /// Mapped writable.
    Exclusive = 2,
}

impl PageAccess {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Invalid),
            1 => Some(Self::Shared),
            2 => Some(Self::Exclusive),
            _ => None,
        }
    }
}

/// What the host asks of the NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submission {
    /// A VP faulted on `page`: bring it (writable when `write`).
    Fetch {
        /// Logical page.
        page: u64,
        /// A writable copy is needed.
        write: bool,
        /// The faulting VP.
        vp: u32,
    },
    /// Send the wire message of `len` bytes in the slot's buffer.
    SendControl {
        /// Bytes.
        len: u32,
    },
    /// The node leaves: its copies go back, its ranges to node `to` (answered by
    /// [`Completion::Left`]).
    Leave {
        /// The node that takes this node's ranges.
        to: u32,
    },
}

/// What the NIC tells the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Map `page` as `state` (its contents are already in memory).
    MapPage {
        /// Logical page.
        page: u64,
        /// Shared or Exclusive.
        state: PageAccess,
    },
    /// Unmap `page`.
    Invalidate {
        /// Logical page.
        page: u64,
    },
    /// Write-protect `page`.
    Downgrade {
        /// Logical page.
        page: u64,
    },
    /// Wake the SpinWait watchers of `page`.
    WakeWatchers {
        /// Logical page.
        page: u64,
    },
    /// The fetch of `page` that `vp` waited for is done; the node holds it as `state`.
    FaultDone {
        /// Logical page.
        page: u64,
        /// The node's state of the page now.
        state: PageAccess,
        /// The VP the completion is steered to.
        vp: u32,
    },
    /// A control message of `len` bytes is in the slot's buffer.
    Control {
        /// Bytes.
        len: u32,
    },
    /// Node `node` stopped responding.
    PeerDown {
        /// The node.
        node: u32,
    },
    /// The NIC's wire failed.
    WireFailed,
    /// The [`Submission::Leave`] is done (or was refused).
    Left {
        /// Copies of other nodes' pages given up.
        evicted: u64,
        /// Pages whose home moved.
        moved: u32,
        /// The NIC refused the leave; nothing changed.
        refused: bool,
    },
}

impl Completion {
    /// True for the completions that change the host's mappings: the firmware holds
    /// later messages about the same page until the host acknowledged them.
    pub fn changes_mapping(&self) -> bool {
        matches!(
            self,
            Self::MapPage { .. } | Self::Invalidate { .. } | Self::Downgrade { .. }
        )
    }

    /// The page the completion is about, if any.
    pub fn page(&self) -> Option<u64> {
        match *self {
            Self::MapPage { page, .. }
            | Self::Invalidate { page }
            | Self::Downgrade { page }
            | Self::WakeWatchers { page }
            | Self::FaultDone { page, .. } => Some(page),
            Self::Control { .. } | Self::PeerDown { .. } | Self::WireFailed | Self::Left { .. } => {
                None
            }
        }
    }
}

/// Why an entry was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The opcode is not defined.
    #[error("Unknown opcode {0}")]
    UnknownOpcode(u8),
    /// A reserved field or a field the opcode does not use is not 0.
    #[error("A reserved or unused field is not zero")]
    NonZeroReserved,
    /// Undefined flag bits are set.
    #[error("Undefined flags {0:#x}")]
    BadFlags(u8),
    /// A length does not fit a buffer (or a message).
    #[error("Length {0} does not fit a message buffer")]
    BadLength(u32),
    /// A VP id beyond `MAX_VPS`.
    #[error("VP {0} is out of range")]
    BadVp(u32),
    /// A page state that is not 0, 1 or 2, or not allowed for the opcode.
    #[error("Page state {0} is not valid here")]
    BadState(u8),
    /// A completion whose sequence number is not its position.
    #[error("Completion sequence {seq} read at position {at}")]
    BadSequence {
        /// What the entry says.
        seq: u64,
        /// Where it was read.
        at: u32,
    },
}

/// A message smaller than a wire header is not a message.
#[allow(clippy::cast_possible_truncation)] // 32
const MIN_MESSAGE: u32 = vima::wire::HEADER_BYTES as u32;
/// The largest message a buffer carries.
#[allow(clippy::cast_possible_truncation)] // about 4 KiB
const MAX_MESSAGE: u32 = vima::wire::MAX_MESSAGE_BYTES as u32;

fn check_vp(vp: u32) -> Result<u32, DescriptorError> {
    if (vp as usize) < vima::layout::MAX_VPS {
        Ok(vp)
    } else {
        Err(DescriptorError::BadVp(vp))
    }
}

fn check_len(len: u32) -> Result<u32, DescriptorError> {
    if (MIN_MESSAGE..=MAX_MESSAGE).contains(&len) {
        Ok(len)
    } else {
        Err(DescriptorError::BadLength(len))
    }
}

impl Submission {
    /// The descriptor for this submission.
    pub fn encode(&self) -> SubmissionDescriptor {
        match *self {
            Self::Fetch { page, write, vp } => SubmissionDescriptor {
                opcode: sq_op::FETCH,
                flags: if write { SQ_FLAG_WRITE } else { 0 },
                vp,
                page,
                ..SubmissionDescriptor::default()
            },
            Self::SendControl { len } => SubmissionDescriptor {
                opcode: sq_op::SEND_CONTROL,
                len,
                ..SubmissionDescriptor::default()
            },
            Self::Leave { to } => SubmissionDescriptor {
                opcode: sq_op::LEAVE,
                vp: to,
                ..SubmissionDescriptor::default()
            },
        }
    }

    /// Checks a descriptor the host wrote. Strict: unused fields must be 0.
    pub fn decode(d: &SubmissionDescriptor) -> Result<Self, DescriptorError> {
        if d.reserved0 != 0 || d.reserved1 != 0 {
            return Err(DescriptorError::NonZeroReserved);
        }
        match d.opcode {
            sq_op::FETCH => {
                if d.flags & !SQ_FLAG_WRITE != 0 {
                    return Err(DescriptorError::BadFlags(d.flags));
                }
                if d.len != 0 {
                    return Err(DescriptorError::NonZeroReserved);
                }
                Ok(Self::Fetch {
                    page: d.page,
                    write: d.flags & SQ_FLAG_WRITE != 0,
                    vp: check_vp(d.vp)?,
                })
            }
            sq_op::SEND_CONTROL => {
                if d.flags != 0 {
                    return Err(DescriptorError::BadFlags(d.flags));
                }
                if d.vp != 0 || d.page != 0 {
                    return Err(DescriptorError::NonZeroReserved);
                }
                Ok(Self::SendControl {
                    len: check_len(d.len)?,
                })
            }
            sq_op::LEAVE => {
                if d.flags != 0 {
                    return Err(DescriptorError::BadFlags(d.flags));
                }
                if d.page != 0 || d.len != 0 {
                    return Err(DescriptorError::NonZeroReserved);
                }
                if d.vp as usize >= vima::layout::MAX_NODES {
                    return Err(DescriptorError::BadVp(d.vp));
                }
                Ok(Self::Leave { to: d.vp })
            }
            other => Err(DescriptorError::UnknownOpcode(other)),
        }
    }
}

impl Completion {
    /// The ring entry for this completion at position `seq`.
    pub fn encode(&self, seq: u64) -> CompletionEntry {
        let base = CompletionEntry {
            seq,
            ..CompletionEntry::default()
        };
        match *self {
            Self::MapPage { page, state } => CompletionEntry {
                opcode: cq_op::MAP_PAGE,
                state: state as u8,
                page,
                ..base
            },
            Self::Invalidate { page } => CompletionEntry {
                opcode: cq_op::INVALIDATE,
                page,
                ..base
            },
            Self::Downgrade { page } => CompletionEntry {
                opcode: cq_op::DOWNGRADE,
                page,
                ..base
            },
            Self::WakeWatchers { page } => CompletionEntry {
                opcode: cq_op::WAKE_WATCHERS,
                page,
                ..base
            },
            Self::FaultDone { page, state, vp } => CompletionEntry {
                opcode: cq_op::FAULT_DONE,
                state: state as u8,
                vp,
                page,
                ..base
            },
            Self::Control { len } => CompletionEntry {
                opcode: cq_op::CONTROL,
                len,
                ..base
            },
            Self::PeerDown { node } => CompletionEntry {
                opcode: cq_op::PEER_DOWN,
                vp: node,
                ..base
            },
            Self::WireFailed => CompletionEntry {
                opcode: cq_op::WIRE_FAILED,
                ..base
            },
            Self::Left {
                evicted,
                moved,
                refused,
            } => CompletionEntry {
                opcode: cq_op::LEFT,
                page: evicted,
                len: moved,
                state: u8::from(refused),
                ..base
            },
        }
    }

    /// Checks an entry the NIC wrote at position `at`.
    pub fn decode(e: &CompletionEntry, at: u32) -> Result<Self, DescriptorError> {
        if e.reserved0 != 0 || e.reserved1 != 0 {
            return Err(DescriptorError::NonZeroReserved);
        }
        if e.seq & u64::from(u32::MAX) != u64::from(at) {
            return Err(DescriptorError::BadSequence { seq: e.seq, at });
        }
        let state = || PageAccess::from_u8(e.state).ok_or(DescriptorError::BadState(e.state));
        let only_page = |c: Self| {
            if e.state != 0 || e.vp != 0 || e.len != 0 {
                Err(DescriptorError::NonZeroReserved)
            } else {
                Ok(c)
            }
        };
        match e.opcode {
            cq_op::MAP_PAGE => {
                let state = state()?;
                if state == PageAccess::Invalid {
                    return Err(DescriptorError::BadState(e.state));
                }
                if e.vp != 0 || e.len != 0 {
                    return Err(DescriptorError::NonZeroReserved);
                }
                Ok(Self::MapPage {
                    page: e.page,
                    state,
                })
            }
            cq_op::INVALIDATE => only_page(Self::Invalidate { page: e.page }),
            cq_op::DOWNGRADE => only_page(Self::Downgrade { page: e.page }),
            cq_op::WAKE_WATCHERS => only_page(Self::WakeWatchers { page: e.page }),
            cq_op::FAULT_DONE => {
                if e.len != 0 {
                    return Err(DescriptorError::NonZeroReserved);
                }
                Ok(Self::FaultDone {
                    page: e.page,
                    state: state()?,
                    vp: check_vp(e.vp)?,
                })
            }
            cq_op::CONTROL => {
                if e.state != 0 || e.vp != 0 || e.page != 0 {
                    return Err(DescriptorError::NonZeroReserved);
                }
                Ok(Self::Control {
                    len: check_len(e.len)?,
                })
            }
            cq_op::PEER_DOWN => {
                if e.state != 0 || e.page != 0 || e.len != 0 {
                    return Err(DescriptorError::NonZeroReserved);
                }
                if e.vp as usize >= vima::layout::MAX_NODES {
                    return Err(DescriptorError::BadVp(e.vp));
                }
                Ok(Self::PeerDown { node: e.vp })
            }
            cq_op::WIRE_FAILED => {
                if e.state != 0 || e.page != 0 || e.len != 0 || e.vp != 0 {
                    return Err(DescriptorError::NonZeroReserved);
                }
                Ok(Self::WireFailed)
            }
            cq_op::LEFT => {
                if e.vp != 0 || e.state > 1 {
                    return Err(DescriptorError::NonZeroReserved);
                }
                Ok(Self::Left {
                    evicted: e.page,
                    moved: e.len,
                    refused: e.state == 1,
                })
            }
            other => Err(DescriptorError::UnknownOpcode(other)),
        }
    }
}

/// Why a push failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The ring has no free slot.
    #[error("The ring is full")]
    Full,
    /// The payload does not fit a buffer.
    #[error("A payload of {0} bytes does not fit a buffer")]
    PayloadTooLarge(usize),
    /// The other side's index is impossible (more than a ring's worth in flight).
    #[error("Ring indices are inconsistent: head {head}, tail {tail}")]
    Corrupt {
        /// Consumer index.
        head: u32,
        /// Producer index.
        tail: u32,
    },
}

/// Why polling a ring gave no entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingPollError {
    /// The producer's index is impossible; nothing was consumed.
    #[error("Doorbell {tail} is more than a ring ahead of {head}")]
    Doorbell {
        /// Consumer index.
        head: u32,
        /// Producer index read.
        tail: u32,
    },
    /// The entry at the head was malformed; it was consumed.
    #[error("Malformed entry")]
    Descriptor(#[from] DescriptorError),
}

fn read_entry<M: SharedMemory + ?Sized, T: bytemuck::Pod>(mem: &M, offset: u64) -> T {
    let mut entry = T::zeroed();
    // The slot offsets are inside BAR0 by construction; a region too small for BAR0 reads
    // zeros, which decode as an unknown opcode.
    let _ = mem.read_bytes(offset, bytemuck::bytes_of_mut(&mut entry));
    entry
}

/// The host's end of the submission ring.
#[derive(Debug)]
pub struct SubmissionProducer {
    tail: u32,
}

impl SubmissionProducer {
    /// Starts at the ring's current tail.
    pub fn new<M: SharedMemory + ?Sized>(mem: &M) -> Self {
        Self {
            tail: mem.load_u32(reg::SQ_TAIL),
        }
    }

    /// Free slots.
    pub fn room<M: SharedMemory + ?Sized>(&self, mem: &M) -> Result<u32, RingError> {
        let head = mem.load_u32(reg::SQ_HEAD);
        let used = self.tail.wrapping_sub(head);
        if used > SQ_ENTRIES {
            return Err(RingError::Corrupt {
                head,
                tail: self.tail,
            });
        }
        Ok(SQ_ENTRIES - used)
    }

    /// Writes the submission (and its buffer) and rings the doorbell.
    pub fn push<M: SharedMemory + ?Sized>(
        &mut self,
        mem: &M,
        submission: &Submission,
        payload: &[u8],
    ) -> Result<(), RingError> {
        if payload.len() > BUFFER_BYTES as usize {
            return Err(RingError::PayloadTooLarge(payload.len()));
        }
        if self.room(mem)? == 0 {
            return Err(RingError::Full);
        }
        if !payload.is_empty() {
            mem.write_bytes(layout::sq_buffer(self.tail), payload);
        }
        let entry = submission.encode();
        mem.write_bytes(layout::sq_slot(self.tail), bytemuck::bytes_of(&entry));
        self.tail = self.tail.wrapping_add(1);
        mem.store_u32(reg::SQ_TAIL, self.tail);
        Ok(())
    }

    /// True when the NIC consumed everything submitted.
    pub fn drained<M: SharedMemory + ?Sized>(&self, mem: &M) -> bool {
        mem.load_u32(reg::SQ_HEAD) == self.tail
    }
}

/// The NIC's end of the submission ring.
#[derive(Debug)]
pub struct SubmissionConsumer {
    head: u32,
}

impl SubmissionConsumer {
    /// Starts at the ring's current head.
    pub fn new<M: SharedMemory + ?Sized>(mem: &M) -> Self {
        Self {
            head: mem.load_u32(reg::SQ_HEAD),
        }
    }

    /// True when the host's doorbell shows nothing new.
    pub fn is_empty<M: SharedMemory + ?Sized>(&self, mem: &M) -> bool {
        mem.load_u32(reg::SQ_TAIL) == self.head
    }

    /// Takes the next submission; a SEND_CONTROL's bytes are copied into `payload` (at
    /// least `BUFFER_BYTES` long) and their count returned with it.
    pub fn pop<M: SharedMemory + ?Sized>(
        &mut self,
        mem: &M,
        payload: &mut [u8],
    ) -> Result<Option<(Submission, usize)>, RingPollError> {
        let tail = mem.load_u32(reg::SQ_TAIL);
        let pending = tail.wrapping_sub(self.head);
        if pending == 0 {
            return Ok(None);
        }
        if pending > SQ_ENTRIES {
            return Err(RingPollError::Doorbell {
                head: self.head,
                tail,
            });
        }
        let slot = self.head;
        let entry: SubmissionDescriptor = read_entry(mem, layout::sq_slot(slot));
        let decoded = Submission::decode(&entry).and_then(|submission| {
            let len = match submission {
                Submission::SendControl { len: len32 } => {
                    let len = len32 as usize;
                    let out = payload
                        .get_mut(..len)
                        .ok_or(DescriptorError::BadLength(len32))?;
                    if !mem.read_bytes(layout::sq_buffer(slot), out) {
                        return Err(DescriptorError::BadLength(len32));
                    }
                    len
                }
                Submission::Fetch { .. } | Submission::Leave { .. } => 0,
            };
            Ok((submission, len))
        });
        // Consumed either way: a malformed entry must not block the ring.
        self.head = self.head.wrapping_add(1);
        mem.store_u32(reg::SQ_HEAD, self.head);
        Ok(Some(decoded?))
    }
}

/// The NIC's end of the completion ring.
#[derive(Debug)]
pub struct CompletionProducer {
    tail: u32,
    seq: u64,
}

impl CompletionProducer {
    /// Starts at the ring's current tail.
    pub fn new<M: SharedMemory + ?Sized>(mem: &M) -> Self {
        let tail = mem.load_u32(reg::CQ_TAIL);
        Self {
            tail,
            seq: u64::from(tail),
        }
    }

    /// Completions the host has applied: every sequence number below this one.
    pub fn applied<M: SharedMemory + ?Sized>(&self, mem: &M) -> u64 {
        let head = mem.load_u32(reg::CQ_HEAD);
        let behind = self.tail.wrapping_sub(head);
        if behind > CQ_ENTRIES {
            // An impossible head acknowledges nothing new.
            return self.seq - u64::from(CQ_ENTRIES.min(self.tail));
        }
        self.seq - u64::from(behind)
    }

    /// Free slots (0 when the host's head is impossible: nothing more is posted).
    pub fn room<M: SharedMemory + ?Sized>(&self, mem: &M) -> u32 {
        let head = mem.load_u32(reg::CQ_HEAD);
        let used = self.tail.wrapping_sub(head);
        CQ_ENTRIES.saturating_sub(used)
    }

    /// The sequence number the next completion gets.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Posts a completion (and its buffer); returns its sequence number.
    pub fn push<M: SharedMemory + ?Sized>(
        &mut self,
        mem: &M,
        completion: &Completion,
        payload: &[u8],
    ) -> Result<u64, RingError> {
        if payload.len() > BUFFER_BYTES as usize {
            return Err(RingError::PayloadTooLarge(payload.len()));
        }
        if self.room(mem) == 0 {
            return Err(RingError::Full);
        }
        if !payload.is_empty() {
            mem.write_bytes(layout::cq_buffer(self.tail), payload);
        }
        let seq = self.seq;
        let entry = completion.encode(seq);
        mem.write_bytes(layout::cq_slot(self.tail), bytemuck::bytes_of(&entry));
        self.tail = self.tail.wrapping_add(1);
        self.seq += 1;
        mem.store_u32(reg::CQ_TAIL, self.tail);
        Ok(seq)
    }
}

/// The host's end of the completion ring.
#[derive(Debug)]
pub struct CompletionConsumer {
    head: u32,
}

impl CompletionConsumer {
    /// Starts at the ring's current head.
    pub fn new<M: SharedMemory + ?Sized>(mem: &M) -> Self {
        Self {
            head: mem.load_u32(reg::CQ_HEAD),
        }
    }

    /// The completion at the head, without consuming it; a CONTROL's bytes are copied into
    /// `payload`. Call [`CompletionConsumer::advance`] once it has been applied.
    pub fn peek<M: SharedMemory + ?Sized>(
        &self,
        mem: &M,
        payload: &mut [u8],
    ) -> Result<Option<(Completion, usize)>, RingPollError> {
        let tail = mem.load_u32(reg::CQ_TAIL);
        let pending = tail.wrapping_sub(self.head);
        if pending == 0 {
            return Ok(None);
        }
        if pending > CQ_ENTRIES {
            return Err(RingPollError::Doorbell {
                head: self.head,
                tail,
            });
        }
        let entry: CompletionEntry = read_entry(mem, layout::cq_slot(self.head));
        let completion = Completion::decode(&entry, self.head)?;
        let len = match completion {
            Completion::Control { len: len32 } => {
                let len = len32 as usize;
                let out = payload
                    .get_mut(..len)
                    .ok_or(DescriptorError::BadLength(len32))?;
                if !mem.read_bytes(layout::cq_buffer(self.head), out) {
                    return Err(DescriptorError::BadLength(len32).into());
                }
                len
            }
            _ => 0,
        };
        Ok(Some((completion, len)))
    }

    /// Consumes the head entry: it has been applied (this acknowledges mapping changes).
    pub fn advance<M: SharedMemory + ?Sized>(&mut self, mem: &M) {
        self.head = self.head.wrapping_add(1);
        mem.store_u32(reg::CQ_HEAD, self.head);
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test values are small
mod tests {
    use super::*;
    use crate::layout::BAR0_SIZE;
    use crate::region::HeapRegion;
    use proptest::prelude::*;

    fn bar() -> HeapRegion {
        HeapRegion::new(BAR0_SIZE)
    }

    #[test]
    fn submissions_arrive_in_order_with_their_payloads() {
        let mem = bar();
        let mut producer = SubmissionProducer::new(&mem);
        let mut consumer = SubmissionConsumer::new(&mem);
        let fetch = Submission::Fetch {
            page: 0x1234,
            write: true,
            vp: 3,
        };
        producer.push(&mem, &fetch, &[]).unwrap();
        let message: Vec<u8> = (0..40u8).collect();
        producer
            .push(&mem, &Submission::SendControl { len: 40 }, &message)
            .unwrap();
        assert!(!producer.drained(&mem));
        let mut buf = [0u8; BUFFER_BYTES as usize];
        assert_eq!(consumer.pop(&mem, &mut buf), Ok(Some((fetch, 0))));
        assert_eq!(
            consumer.pop(&mem, &mut buf),
            Ok(Some((Submission::SendControl { len: 40 }, 40)))
        );
        assert_eq!(&buf[..40], &message[..]);
        assert_eq!(consumer.pop(&mem, &mut buf), Ok(None));
        assert!(producer.drained(&mem));
    }

    #[test]
    fn a_full_ring_refuses_and_recovers() {
        let mem = bar();
        let mut producer = SubmissionProducer::new(&mem);
        let mut consumer = SubmissionConsumer::new(&mem);
        let fetch = |page| Submission::Fetch {
            page,
            write: false,
            vp: 0,
        };
        for page in 0..u64::from(SQ_ENTRIES) {
            producer.push(&mem, &fetch(page), &[]).unwrap();
        }
        assert_eq!(producer.push(&mem, &fetch(999), &[]), Err(RingError::Full));
        let mut buf = [0u8; BUFFER_BYTES as usize];
        assert_eq!(consumer.pop(&mem, &mut buf), Ok(Some((fetch(0), 0))));
        producer.push(&mem, &fetch(999), &[]).unwrap();
    }

    #[test]
    fn a_wild_doorbell_consumes_nothing() {
        let mem = bar();
        let mut consumer = SubmissionConsumer::new(&mem);
        mem.store_u32(reg::SQ_TAIL, SQ_ENTRIES + 1);
        let mut buf = [0u8; BUFFER_BYTES as usize];
        assert!(matches!(
            consumer.pop(&mem, &mut buf),
            Err(RingPollError::Doorbell { .. })
        ));
        assert_eq!(mem.load_u32(reg::SQ_HEAD), 0);
    }

    #[test]
    fn the_completion_head_is_the_acknowledgement() {
        let mem = bar();
        let mut producer = CompletionProducer::new(&mem);
        let mut consumer = CompletionConsumer::new(&mem);
        let seq = producer
            .push(&mem, &Completion::Invalidate { page: 7 }, &[])
            .unwrap();
        assert_eq!(seq, 0);
        assert_eq!(producer.applied(&mem), 0);
        let mut buf = [0u8; BUFFER_BYTES as usize];
        assert_eq!(
            consumer.peek(&mem, &mut buf),
            Ok(Some((Completion::Invalidate { page: 7 }, 0)))
        );
        // Peeking is not acknowledging.
        assert_eq!(producer.applied(&mem), 0);
        consumer.advance(&mem);
        assert_eq!(producer.applied(&mem), 1);
        assert_eq!(consumer.peek(&mem, &mut buf), Ok(None));
    }

    #[test]
    fn a_stale_completion_is_refused() {
        let mem = bar();
        let consumer = CompletionConsumer::new(&mem);
        let entry = Completion::Invalidate { page: 1 }.encode(5);
        mem.write_bytes(layout::cq_slot(0), bytemuck::bytes_of(&entry));
        mem.store_u32(reg::CQ_TAIL, 1);
        let mut buf = [0u8; BUFFER_BYTES as usize];
        assert_eq!(
            consumer.peek(&mem, &mut buf),
            Err(RingPollError::Descriptor(DescriptorError::BadSequence {
                seq: 5,
                at: 0
            }))
        );
    }

    fn any_submission() -> impl Strategy<Value = Submission> {
        prop_oneof![
            (any::<u64>(), any::<bool>(), 0u32..64)
                .prop_map(|(page, write, vp)| { Submission::Fetch { page, write, vp } }),
            (MIN_MESSAGE..=MAX_MESSAGE).prop_map(|len| Submission::SendControl { len }),
            (0u32..16).prop_map(|to| Submission::Leave { to }),
        ]
    }

    fn any_completion() -> impl Strategy<Value = Completion> {
        let state = prop_oneof![
            Just(PageAccess::Invalid),
            Just(PageAccess::Shared),
            Just(PageAccess::Exclusive)
        ];
        let mapped = prop_oneof![Just(PageAccess::Shared), Just(PageAccess::Exclusive)];
        prop_oneof![
            (any::<u64>(), mapped).prop_map(|(page, state)| Completion::MapPage { page, state }),
            any::<u64>().prop_map(|page| Completion::Invalidate { page }),
            any::<u64>().prop_map(|page| Completion::Downgrade { page }),
            any::<u64>().prop_map(|page| Completion::WakeWatchers { page }),
            (any::<u64>(), state, 0u32..64).prop_map(|(page, state, vp)| Completion::FaultDone {
                page,
                state,
                vp
            }),
            (MIN_MESSAGE..=MAX_MESSAGE).prop_map(|len| Completion::Control { len }),
            (0u32..16).prop_map(|node| Completion::PeerDown { node }),
            Just(Completion::WireFailed),
            (any::<u64>(), any::<u32>(), any::<bool>()).prop_map(|(evicted, moved, refused)| {
                Completion::Left {
                    evicted,
                    moved,
                    refused,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn submissions_round_trip(s in any_submission()) {
            prop_assert_eq!(Submission::decode(&s.encode()), Ok(s));
        }

        #[test]
        fn completions_round_trip(c in any_completion(), at in any::<u32>()) {
            prop_assert_eq!(Completion::decode(&c.encode(u64::from(at)), at), Ok(c));
        }

        /// Arbitrary bytes never panic the decoder, and whatever decodes re-encodes to the
        /// same bytes (so nothing is silently ignored).
        #[test]
        fn malformed_submissions_are_refused(bytes in proptest::collection::vec(any::<u8>(), 32)) {
            let d: SubmissionDescriptor = bytemuck::pod_read_unaligned(&bytes);
            if let Ok(s) = Submission::decode(&d) {
                let mut again = s.encode();
                again.cookie = d.cookie;
                prop_assert_eq!(again, d);
            }
        }

        #[test]
        fn malformed_completions_are_refused(bytes in proptest::collection::vec(any::<u8>(), 32)) {
            let e: CompletionEntry = bytemuck::pod_read_unaligned(&bytes);
            if let Ok(c) = Completion::decode(&e, e.seq as u32) {
                prop_assert_eq!(c.encode(e.seq), e);
            }
        }

        /// Producer and consumer agree across index wrap-around, starting anywhere in the
        /// u32 space, with any interleaving of pushes and pops.
        #[test]
        fn rings_survive_wrap_around(
            start in any::<u32>(),
            ops in proptest::collection::vec(any::<bool>(), 1..600),
        ) {
            let mem = bar();
            mem.store_u32(reg::SQ_TAIL, start);
            mem.store_u32(reg::SQ_HEAD, start);
            let mut producer = SubmissionProducer::new(&mem);
            let mut consumer = SubmissionConsumer::new(&mem);
            let mut model = std::collections::VecDeque::new();
            let mut next = 0u64;
            let mut buf = vec![0u8; BUFFER_BYTES as usize];
            for push in ops {
                if push {
                    let s = Submission::Fetch { page: next, write: next.is_multiple_of(3), vp: 1 };
                    let r = producer.push(&mem, &s, &[]);
                    if model.len() == SQ_ENTRIES as usize {
                        prop_assert_eq!(r, Err(RingError::Full));
                    } else {
                        prop_assert_eq!(r, Ok(()));
                        model.push_back(s);
                        next += 1;
                    }
                } else {
                    let got = consumer.pop(&mem, &mut buf).unwrap().map(|(s, _)| s);
                    prop_assert_eq!(got, model.pop_front());
                }
                prop_assert_eq!(
                    producer.room(&mem).unwrap() as usize,
                    SQ_ENTRIES as usize - model.len()
                );
            }
        }

        #[test]
        fn completion_ring_survives_wrap_around(
            start in any::<u32>(),
            ops in proptest::collection::vec(any::<bool>(), 1..1200),
        ) {
            let mem = bar();
            mem.store_u32(reg::CQ_TAIL, start);
            mem.store_u32(reg::CQ_HEAD, start);
            let mut producer = CompletionProducer::new(&mem);
            let mut consumer = CompletionConsumer::new(&mem);
            let mut model = std::collections::VecDeque::new();
            let mut buf = vec![0u8; BUFFER_BYTES as usize];
            let mut applied = producer.applied(&mem);
            for (i, push) in ops.into_iter().enumerate() {
                if push {
                    let c = Completion::WakeWatchers { page: i as u64 };
                    match producer.push(&mem, &c, &[]) {
                        Ok(_) => model.push_back(c),
                        Err(e) => {
                            prop_assert_eq!(e, RingError::Full);
                            prop_assert_eq!(model.len(), CQ_ENTRIES as usize);
                        }
                    }
                } else {
                    let got = consumer.peek(&mem, &mut buf).unwrap().map(|(c, _)| c);
                    prop_assert_eq!(got, model.pop_front());
                    if got.is_some() {
                        consumer.advance(&mem);
                        applied += 1;
                    }
                }
                prop_assert_eq!(producer.applied(&mem), applied);
            }
        }
    }
}
