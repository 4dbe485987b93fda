//! The node-to-node wire format: the messages the nodes (host engines or NIC firmware) of
//! one virtual computer send each other, for page coherence and for VMM control.
//!
//! Why a format of our own: the software path and the offload path must interoperate in one
//! cluster, and a NIC core or an FPGA pipeline must parse it with fixed offsets. So every
//! message is a fixed 32-byte [`WireHeader`] followed by a body whose length the kind fixes
//! (or bounds, for [`Body::ConsoleLine`]). All integers are little-endian, on every host.
//!
//! What this layer does not do: reliability (sequence numbers, acknowledgements,
//! retransmission, duplicate suppression) and authentication belong to the transport below
//! (`dpdk-transport`). Upper layers may assume each message arrives exactly once and in order
//! per (source, destination) pair, and nothing about the order across different pairs.
//!
//! Decoding is strict: every field is checked (magic, version, kind, lengths, flags,
//! reserved bytes, node, VP and page ranges), so [`decode`] never panics and a message that
//! decodes re-encodes to the same bytes. [`encode`] runs the same checks on its output, so a
//! node never sends what its peers would reject.
//!
//! ```
//! use vima::wire::{decode, encode, Body, Message, MAX_MESSAGE_BYTES};
//! let msg = Message { vs_id: 1, src: 0, dst: 2, request_id: 7, body: Body::ReadReq { page: 0x200 } };
//! let mut buf = [0u8; MAX_MESSAGE_BYTES];
//! let len = encode(&msg, &mut buf).unwrap();
//! assert_eq!(len, 32);
//! assert_eq!(decode(&buf[..len]), Ok(msg));
//! ```

use bytemuck::{Pod, Zeroable};

use crate::interrupt::is_external_vector;
use crate::layout::{is_per_node, MAX_LOGICAL_BYTES, MAX_NODES, MAX_VPS, PAGE_SIZE};

/// First two bytes of every message: `"CV"` (0x43, 0x56) on the wire.
pub const WIRE_MAGIC: u16 = 0x5643;
/// The format version this crate reads and writes.
pub const WIRE_VERSION: u8 = 1;
/// Bytes of the [`WireHeader`].
pub const HEADER_BYTES: usize = core::mem::size_of::<WireHeader>();
/// Bytes of page contents carried by [`Body::PageData`] and [`Body::Writeback`].
pub const PAGE_BYTES: usize = 4096;
/// Longest console line one [`Body::ConsoleLine`] carries.
pub const CONSOLE_LINE_MAX: usize = 4096;
/// Largest encoded message (a full console line); a buffer this long fits any message.
pub const MAX_MESSAGE_BYTES: usize =
    HEADER_BYTES + core::mem::size_of::<ConsoleLineBody>() + CONSOLE_LINE_MAX;
/// Logical page numbers are below this.
pub const PAGE_NUMBER_LIMIT: u64 = MAX_LOGICAL_BYTES / PAGE_SIZE;

/// [`Body::WriteReq`]: the requester held a Shared copy when it asked (an upgrade).
pub const FLAG_HAS_COPY: u16 = 1 << 0;
/// [`Body::PageData`]: the page is granted Exclusive (clear: Shared).
pub const FLAG_EXCLUSIVE: u16 = 1 << 0;
/// [`Body::HomeMove`]: the page contents follow the directory entry.
pub const FLAG_HAS_DATA: u16 = 1 << 1;

const _: () = assert!(HEADER_BYTES == 32);
const _: () = assert!(PAGE_BYTES as u64 == PAGE_SIZE);
const _: () = assert!(MAX_NODES <= u16::MAX as usize);
const _: () = assert!(PAGE_BYTES + HEADER_BYTES <= MAX_MESSAGE_BYTES);

/// True when `page` (a logical page number) takes part in coherence: not the null page, not
/// a per-node page, inside the largest logical memory.
pub const fn is_coherent_page(page: u64) -> bool {
    page != 0 && page < PAGE_NUMBER_LIMIT && !is_per_node(page * PAGE_SIZE)
}

/// The message kinds, as the header's `kind` byte. The numbers are ABI.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Requester -> home: read miss.
    ReadReq = 0x01,
    /// Requester -> home: write miss, or upgrade of a Shared copy ([`FLAG_HAS_COPY`]).
    WriteReq = 0x02,
    /// Home -> owner: send the page Shared to `requester`, keep a Shared copy, write it
    /// back to the home.
    ForwardRead = 0x03,
    /// Home -> owner: send the page Exclusive to `requester`, drop the local copy.
    ForwardWrite = 0x04,
    /// Home -> sharer: drop the local copy and acknowledge.
    Invalidate = 0x05,
    /// Sharer -> home: the copy is gone.
    InvalidateAck = 0x06,
    /// Home or owner -> requester: page contents, granted Shared or Exclusive.
    PageData = 0x07,
    /// Home -> requester: Exclusive granted on the Shared copy the requester still holds.
    UpgradeGrant = 0x08,
    /// Old owner -> home: page contents after a downgrade (the downgrade acknowledgement).
    Writeback = 0x09,
    /// Requester -> home: data from a third node arrived; the home may start the next
    /// operation on the page.
    Unblock = 0x0a,
    /// Home -> requester: no room to queue the request; send it again.
    Nack = 0x0b,
    /// Node -> home: the sender gives up its copy (eviction, before the node leaves).
    /// With [`FLAG_EXCLUSIVE`] it was the Exclusive copy and the body is the page, which
    /// the home's memory takes; else it was Shared and there is no body. The sender keeps
    /// answering forwards and invalidations from its memory until the [`Self::EvictAck`].
    Evict = 0x0c,
    /// Home -> node: the directory no longer counts the sender's copy.
    EvictAck = 0x0d,
    /// Old home -> new home: one page's directory entry (with [`FLAG_EXCLUSIVE`] the page
    /// is Exclusive at `owner`, else Shared by `sharers`), and with [`FLAG_HAS_DATA`] the
    /// page, which the new home's memory takes. Sent after every node acknowledged the
    /// [`Self::HomeChange`] of its range.
    HomeMove = 0x0e,
    /// Make `vector` pending on VP `vp`.
    Ipi = 0x20,
    /// Start VP `vp` (the `VpStart` call, on the node that runs it).
    VpStart = 0x21,
    /// A console line written by VP `vp`, for the node that serves the console.
    ConsoleLine = 0x22,
    /// The virtual server ends with `status` (the `VsExit` call).
    VsExit = 0x23,
    /// Liveness.
    Heartbeat = 0x24,
    /// The configuration changed (paper 4.10): from epoch `epoch` on, the sender's VPs of
    /// the `offline` mask are offline and the sender homes `mem_mib` MiB. Sent by the node
    /// that makes the change to every other node, so each node's `ConfigRead` answers
    /// with the same table.
    ConfigUpdate = 0x25,
    /// Old home -> every node (the new home first): from now on pages `first .. first +
    /// count` have their home at `home`. For the coherence engine, though it names a range
    /// rather than a page ([`MessageKind::is_engine`]).
    HomeChange = 0x26,
    /// Node -> old home: the home map changed; everything the node sent the old home
    /// before is ahead of this on the link. Echoes the `HomeChange` body.
    HomeChangeAck = 0x27,
}

impl MessageKind {
    /// Decodes a kind byte; unknown values are `None`.
    pub const fn from_raw(raw: u8) -> Option<Self> {
        Some(match raw {
            0x01 => Self::ReadReq,
            0x02 => Self::WriteReq,
            0x03 => Self::ForwardRead,
            0x04 => Self::ForwardWrite,
            0x05 => Self::Invalidate,
            0x06 => Self::InvalidateAck,
            0x07 => Self::PageData,
            0x08 => Self::UpgradeGrant,
            0x09 => Self::Writeback,
            0x0a => Self::Unblock,
            0x0b => Self::Nack,
            0x0c => Self::Evict,
            0x0d => Self::EvictAck,
            0x0e => Self::HomeMove,
            0x20 => Self::Ipi,
            0x21 => Self::VpStart,
            0x22 => Self::ConsoleLine,
            0x23 => Self::VsExit,
            0x24 => Self::Heartbeat,
            0x25 => Self::ConfigUpdate,
            0x26 => Self::HomeChange,
            0x27 => Self::HomeChangeAck,
            _ => return None,
        })
    }

    /// True for the coherence messages (they name a page in the header).
    pub const fn is_coherence(self) -> bool {
        (self as u8) < 0x20
    }

    /// True for the messages the coherence engine takes: the coherence messages and the
    /// home changes of a range.
    pub const fn is_engine(self) -> bool {
        self.is_coherence() || matches!(self, Self::HomeChange | Self::HomeChangeAck)
    }

    const fn allowed_flags(self) -> u16 {
        match self {
            Self::WriteReq => FLAG_HAS_COPY,
            Self::PageData | Self::Evict => FLAG_EXCLUSIVE,
            Self::HomeMove => FLAG_EXCLUSIVE | FLAG_HAS_DATA,
            _ => 0,
        }
    }
}

/// The fixed start of every message. Little-endian on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct WireHeader {
    /// [`WIRE_MAGIC`].
    pub magic: u16,
    /// [`WIRE_VERSION`].
    pub version: u8,
    /// A [`MessageKind`].
    pub kind: u8,
    /// The virtual server the message belongs to (several may share one cluster).
    pub vs_id: u16,
    /// Per-kind flag bits ([`FLAG_HAS_COPY`], [`FLAG_EXCLUSIVE`]); undefined bits are 0.
    pub flags: u16,
    /// Sending node.
    pub src: u16,
    /// Receiving node.
    pub dst: u16,
    /// Bytes after the header.
    pub body_len: u32,
    /// Logical page number (address / 4096) of a coherence message; 0 for control.
    pub page: u64,
    /// Request id: chosen by the requester, copied into every message of its transaction
    /// so replies match; free for control messages.
    pub request_id: u64,
}

/// Body of [`MessageKind::ForwardRead`] and [`MessageKind::ForwardWrite`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ForwardBody {
    /// The node the owner sends the page to.
    pub requester: u16,
    /// Reserved, 0.
    pub reserved: [u16; 3],
}

/// Body of [`MessageKind::Ipi`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IpiBody {
    /// Target VP.
    pub vp: u32,
    /// Vector, an external vector (32..63).
    pub vector: u8,
    /// Reserved, 0.
    pub reserved: [u8; 3],
}

/// Body of [`MessageKind::VpStart`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VpStartBody {
    /// VP to start.
    pub vp: u32,
    /// Reserved, 0.
    pub reserved: u32,
    /// First instruction.
    pub entry: u64,
    /// Initial `rsp`.
    pub stack_top: u64,
    /// Initial `rdi`.
    pub arg: u64,
}

/// Start of the body of [`MessageKind::ConsoleLine`]; `len` bytes of text follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ConsoleLineBody {
    /// The VP that wrote the line.
    pub vp: u32,
    /// Bytes of text that follow (at most [`CONSOLE_LINE_MAX`]).
    pub len: u32,
}

/// Body of [`MessageKind::VsExit`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VsExitBody {
    /// The status the guest passed to `VsExit`.
    pub status: u64,
}

/// Body of [`MessageKind::Heartbeat`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HeartbeatBody {
    /// Counts up by one per heartbeat of the sender.
    pub sequence: u64,
}

/// Body of [`MessageKind::ConfigUpdate`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ConfigUpdateBody {
    /// The configuration epoch the update makes current.
    pub epoch: u32,
    /// The logical memory the sender homes, in MiB.
    pub mem_mib: u32,
    /// Bit `v` set: VP `v` is offline.
    pub offline: u64,
}

/// The directory entry in [`MessageKind::HomeMove`] (the page follows with
/// [`FLAG_HAS_DATA`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HomeMoveBody {
    /// Shared: bit `n` = node `n` holds a copy; 0 when Exclusive.
    pub sharers: u16,
    /// Exclusive: the owner; 0 when Shared.
    pub owner: u16,
    /// Reserved, 0.
    pub reserved: [u16; 2],
}

/// Body of [`MessageKind::HomeChange`] and [`MessageKind::HomeChangeAck`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HomeChangeBody {
    /// First logical page of the range.
    pub first: u64,
    /// Pages in the range (not 0).
    pub count: u64,
    /// The new home.
    pub home: u16,
    /// Reserved, 0.
    pub reserved: [u16; 3],
}

/// Converts between host and little-endian byte order (the conversion is its own inverse).
trait LittleEndian: Pod {
    fn swap_le(self) -> Self;
}

impl LittleEndian for WireHeader {
    fn swap_le(self) -> Self {
        Self {
            magic: self.magic.to_le(),
            version: self.version,
            kind: self.kind,
            vs_id: self.vs_id.to_le(),
            flags: self.flags.to_le(),
            src: self.src.to_le(),
            dst: self.dst.to_le(),
            body_len: self.body_len.to_le(),
            page: self.page.to_le(),
            request_id: self.request_id.to_le(),
        }
    }
}

impl LittleEndian for ForwardBody {
    fn swap_le(self) -> Self {
        Self {
            requester: self.requester.to_le(),
            reserved: self.reserved.map(u16::to_le),
        }
    }
}

impl LittleEndian for IpiBody {
    fn swap_le(self) -> Self {
        Self {
            vp: self.vp.to_le(),
            ..self
        }
    }
}

impl LittleEndian for VpStartBody {
    fn swap_le(self) -> Self {
        Self {
            vp: self.vp.to_le(),
            reserved: self.reserved.to_le(),
            entry: self.entry.to_le(),
            stack_top: self.stack_top.to_le(),
            arg: self.arg.to_le(),
        }
    }
}

impl LittleEndian for ConsoleLineBody {
    fn swap_le(self) -> Self {
        Self {
            vp: self.vp.to_le(),
            len: self.len.to_le(),
        }
    }
}

impl LittleEndian for VsExitBody {
    fn swap_le(self) -> Self {
        Self {
            status: self.status.to_le(),
        }
    }
}

impl LittleEndian for HeartbeatBody {
    fn swap_le(self) -> Self {
        Self {
            sequence: self.sequence.to_le(),
        }
    }
}

impl LittleEndian for HomeMoveBody {
    fn swap_le(self) -> Self {
        Self {
            sharers: self.sharers.to_le(),
            owner: self.owner.to_le(),
            reserved: self.reserved.map(u16::to_le),
        }
    }
}

impl LittleEndian for HomeChangeBody {
    fn swap_le(self) -> Self {
        Self {
            first: self.first.to_le(),
            count: self.count.to_le(),
            home: self.home.to_le(),
            reserved: self.reserved.map(u16::to_le),
        }
    }
}

impl LittleEndian for ConfigUpdateBody {
    fn swap_le(self) -> Self {
        Self {
            epoch: self.epoch.to_le(),
            mem_mib: self.mem_mib.to_le(),
            offline: self.offline.to_le(),
        }
    }
}

/// One decoded message, borrowing page contents and console text from the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// See [`WireHeader::vs_id`].
    pub vs_id: u16,
    /// Sending node.
    pub src: u16,
    /// Receiving node.
    pub dst: u16,
    /// See [`WireHeader::request_id`].
    pub request_id: u64,
    /// What the message says.
    pub body: Body<'a>,
}

/// The kinds of message and their contents. `page` is a logical page number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// See [`MessageKind::ReadReq`].
    ReadReq {
        /// Page.
        page: u64,
    },
    /// See [`MessageKind::WriteReq`].
    WriteReq {
        /// Page.
        page: u64,
        /// The requester held a Shared copy when it asked. Informational: the home's
        /// directory, not this flag, decides whether data is sent.
        has_copy: bool,
    },
    /// See [`MessageKind::ForwardRead`].
    ForwardRead {
        /// Page.
        page: u64,
        /// Node to send the page to.
        requester: u16,
    },
    /// See [`MessageKind::ForwardWrite`].
    ForwardWrite {
        /// Page.
        page: u64,
        /// Node to send the page to.
        requester: u16,
    },
    /// See [`MessageKind::Invalidate`].
    Invalidate {
        /// Page.
        page: u64,
    },
    /// See [`MessageKind::InvalidateAck`].
    InvalidateAck {
        /// Page.
        page: u64,
    },
    /// See [`MessageKind::PageData`].
    PageData {
        /// Page.
        page: u64,
        /// Granted Exclusive (else Shared).
        exclusive: bool,
        /// The page contents.
        data: &'a [u8; PAGE_BYTES],
    },
    /// See [`MessageKind::UpgradeGrant`].
    UpgradeGrant {
        /// Page.
        page: u64,
    },
    /// See [`MessageKind::Writeback`].
    Writeback {
        /// Page.
        page: u64,
        /// The page contents.
        data: &'a [u8; PAGE_BYTES],
    },
    /// See [`MessageKind::Unblock`].
    Unblock {
        /// Page.
        page: u64,
    },
    /// See [`MessageKind::Nack`].
    Nack {
        /// Page.
        page: u64,
    },
    /// See [`MessageKind::Evict`].
    Evict {
        /// Page.
        page: u64,
        /// The page contents when the copy was Exclusive; `None` for a Shared copy.
        data: Option<&'a [u8; PAGE_BYTES]>,
    },
    /// See [`MessageKind::EvictAck`].
    EvictAck {
        /// Page.
        page: u64,
    },
    /// See [`MessageKind::HomeMove`].
    HomeMove {
        /// Page.
        page: u64,
        /// The directory entry: Exclusive at `owner` (else Shared by `sharers`).
        exclusive: bool,
        /// Exclusive: the owner (0 when Shared).
        owner: u16,
        /// Shared: the sharers, bit `n` = node `n` (0 when Exclusive).
        sharers: u16,
        /// The page, when the new home's memory must take it.
        data: Option<&'a [u8; PAGE_BYTES]>,
    },
    /// See [`MessageKind::Ipi`].
    Ipi {
        /// Target VP.
        vp: u32,
        /// External vector (32..63).
        vector: u8,
    },
    /// See [`MessageKind::VpStart`].
    VpStart {
        /// VP to start.
        vp: u32,
        /// First instruction.
        entry: u64,
        /// Initial `rsp`.
        stack_top: u64,
        /// Initial `rdi`.
        arg: u64,
    },
    /// See [`MessageKind::ConsoleLine`].
    ConsoleLine {
        /// The VP that wrote the line.
        vp: u32,
        /// The text (at most [`CONSOLE_LINE_MAX`] bytes).
        line: &'a [u8],
    },
    /// See [`MessageKind::VsExit`].
    VsExit {
        /// The guest's exit status.
        status: u64,
    },
    /// See [`MessageKind::Heartbeat`].
    Heartbeat {
        /// The sender's heartbeat count.
        sequence: u64,
    },
    /// See [`MessageKind::HomeChange`].
    HomeChange {
        /// First page of the range.
        first: u64,
        /// Pages in the range.
        count: u64,
        /// The new home.
        home: u16,
    },
    /// See [`MessageKind::HomeChangeAck`].
    HomeChangeAck {
        /// First page of the range.
        first: u64,
        /// Pages in the range.
        count: u64,
        /// The new home.
        home: u16,
    },
    /// See [`MessageKind::ConfigUpdate`].
    ConfigUpdate {
        /// The new configuration epoch.
        epoch: u32,
        /// The logical memory the sender homes, in MiB.
        mem_mib: u32,
        /// Bit `v` set: VP `v` is offline.
        offline: u64,
    },
}

impl Body<'_> {
    /// The kind byte of this body.
    pub const fn kind(&self) -> MessageKind {
        match self {
            Self::ReadReq { .. } => MessageKind::ReadReq,
            Self::WriteReq { .. } => MessageKind::WriteReq,
            Self::ForwardRead { .. } => MessageKind::ForwardRead,
            Self::ForwardWrite { .. } => MessageKind::ForwardWrite,
            Self::Invalidate { .. } => MessageKind::Invalidate,
            Self::InvalidateAck { .. } => MessageKind::InvalidateAck,
            Self::PageData { .. } => MessageKind::PageData,
            Self::UpgradeGrant { .. } => MessageKind::UpgradeGrant,
            Self::Writeback { .. } => MessageKind::Writeback,
            Self::Unblock { .. } => MessageKind::Unblock,
            Self::Nack { .. } => MessageKind::Nack,
            Self::Evict { .. } => MessageKind::Evict,
            Self::EvictAck { .. } => MessageKind::EvictAck,
            Self::HomeMove { .. } => MessageKind::HomeMove,
            Self::HomeChange { .. } => MessageKind::HomeChange,
            Self::HomeChangeAck { .. } => MessageKind::HomeChangeAck,
            Self::Ipi { .. } => MessageKind::Ipi,
            Self::VpStart { .. } => MessageKind::VpStart,
            Self::ConsoleLine { .. } => MessageKind::ConsoleLine,
            Self::VsExit { .. } => MessageKind::VsExit,
            Self::Heartbeat { .. } => MessageKind::Heartbeat,
            Self::ConfigUpdate { .. } => MessageKind::ConfigUpdate,
        }
    }

    /// The page a coherence message is about; `None` for control messages.
    pub const fn page(&self) -> Option<u64> {
        match *self {
            Self::ReadReq { page }
            | Self::WriteReq { page, .. }
            | Self::ForwardRead { page, .. }
            | Self::ForwardWrite { page, .. }
            | Self::Invalidate { page }
            | Self::InvalidateAck { page }
            | Self::PageData { page, .. }
            | Self::UpgradeGrant { page }
            | Self::Writeback { page, .. }
            | Self::Unblock { page }
            | Self::Nack { page }
            | Self::Evict { page, .. }
            | Self::EvictAck { page }
            | Self::HomeMove { page, .. } => Some(page),
            Self::Ipi { .. }
            | Self::VpStart { .. }
            | Self::ConsoleLine { .. }
            | Self::VsExit { .. }
            | Self::Heartbeat { .. }
            | Self::ConfigUpdate { .. }
            | Self::HomeChange { .. }
            | Self::HomeChangeAck { .. } => None,
        }
    }
}

/// Why a message could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The output buffer is shorter than the message.
    BufferTooSmall,
    /// The input is shorter than a header.
    Truncated,
    /// The magic number is wrong.
    BadMagic,
    /// The version is not [`WIRE_VERSION`].
    BadVersion,
    /// The kind byte names no message.
    UnknownKind,
    /// The body length does not match the bytes received or what the kind requires.
    BadLength,
    /// A flag bit the kind does not define is set.
    BadFlags,
    /// A reserved field is not 0.
    BadReserved,
    /// A node id is not below [`MAX_NODES`], or source and destination are equal.
    BadNode,
    /// A coherence message names a page that is not coherent ([`is_coherent_page`]), or a
    /// control message has a page number other than 0.
    BadPage,
    /// A VP id is not below [`MAX_VPS`].
    BadVp,
    /// An interrupt vector is not an external vector.
    BadVector,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::BufferTooSmall => "Output buffer too small for the message",
            Self::Truncated => "Message shorter than its header",
            Self::BadMagic => "Wrong magic number",
            Self::BadVersion => "Unsupported wire version",
            Self::UnknownKind => "Unknown message kind",
            Self::BadLength => "Body length does not match the message",
            Self::BadFlags => "Undefined flag bits set",
            Self::BadReserved => "Reserved field not zero",
            Self::BadNode => "Node id out of range",
            Self::BadPage => "Page number not valid for this message",
            Self::BadVp => "VP id out of range",
            Self::BadVector => "Interrupt vector not external",
        })
    }
}

impl core::error::Error for WireError {}

fn read<T: LittleEndian>(bytes: &[u8]) -> Result<T, WireError> {
    let bytes = bytes
        .get(..core::mem::size_of::<T>())
        .ok_or(WireError::BadLength)?;
    Ok(bytemuck::pod_read_unaligned::<T>(bytes).swap_le())
}

fn exact<T: LittleEndian>(body: &[u8]) -> Result<T, WireError> {
    if body.len() != core::mem::size_of::<T>() {
        return Err(WireError::BadLength);
    }
    read(body)
}

fn no_body(body: &[u8]) -> Result<(), WireError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(WireError::BadLength)
    }
}

fn page_bytes(body: &[u8]) -> Result<&[u8; PAGE_BYTES], WireError> {
    body.try_into().map_err(|_| WireError::BadLength)
}

fn check_node(node: u16) -> Result<u16, WireError> {
    if usize::from(node) < MAX_NODES {
        Ok(node)
    } else {
        Err(WireError::BadNode)
    }
}

fn check_vp(vp: u32) -> Result<u32, WireError> {
    if usize::try_from(vp).is_ok_and(|vp| vp < MAX_VPS) {
        Ok(vp)
    } else {
        Err(WireError::BadVp)
    }
}

/// Decodes and checks one message. `bytes` is exactly one message (the transport frames
/// them): trailing bytes are an error.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, WireError> {
    let head = bytes.get(..HEADER_BYTES).ok_or(WireError::Truncated)?;
    let header: WireHeader = read(head)?;
    if header.magic != WIRE_MAGIC {
        return Err(WireError::BadMagic);
    }
    if header.version != WIRE_VERSION {
        return Err(WireError::BadVersion);
    }
    let kind = MessageKind::from_raw(header.kind).ok_or(WireError::UnknownKind)?;
    let body = &bytes[HEADER_BYTES..];
    if usize::try_from(header.body_len).ok() != Some(body.len()) {
        return Err(WireError::BadLength);
    }
    if header.flags & !kind.allowed_flags() != 0 {
        return Err(WireError::BadFlags);
    }
    let src = check_node(header.src)?;
    let dst = check_node(header.dst)?;
    if src == dst {
        return Err(WireError::BadNode);
    }
    let page = header.page;
    let page_ok = if kind.is_coherence() {
        is_coherent_page(page)
    } else {
        page == 0
    };
    if !page_ok {
        return Err(WireError::BadPage);
    }
    let flag = |bit: u16| header.flags & bit != 0;
    let body = match kind {
        MessageKind::ReadReq => no_body(body).map(|()| Body::ReadReq { page })?,
        MessageKind::WriteReq => no_body(body).map(|()| Body::WriteReq {
            page,
            has_copy: flag(FLAG_HAS_COPY),
        })?,
        MessageKind::ForwardRead | MessageKind::ForwardWrite => {
            let forward: ForwardBody = exact(body)?;
            if forward.reserved != [0; 3] {
                return Err(WireError::BadReserved);
            }
            // The requester may be the home itself (src), never the owner (dst).
            let requester = check_node(forward.requester)?;
            if requester == dst {
                return Err(WireError::BadNode);
            }
            if kind == MessageKind::ForwardRead {
                Body::ForwardRead { page, requester }
            } else {
                Body::ForwardWrite { page, requester }
            }
        }
        MessageKind::Invalidate => no_body(body).map(|()| Body::Invalidate { page })?,
        MessageKind::InvalidateAck => no_body(body).map(|()| Body::InvalidateAck { page })?,
        MessageKind::PageData => Body::PageData {
            page,
            exclusive: flag(FLAG_EXCLUSIVE),
            data: page_bytes(body)?,
        },
        MessageKind::UpgradeGrant => no_body(body).map(|()| Body::UpgradeGrant { page })?,
        MessageKind::Writeback => Body::Writeback {
            page,
            data: page_bytes(body)?,
        },
        MessageKind::Unblock => no_body(body).map(|()| Body::Unblock { page })?,
        MessageKind::Nack => no_body(body).map(|()| Body::Nack { page })?,
        MessageKind::Evict => Body::Evict {
            page,
            data: if flag(FLAG_EXCLUSIVE) {
                Some(page_bytes(body)?)
            } else {
                no_body(body).map(|()| None)?
            },
        },
        MessageKind::EvictAck => no_body(body).map(|()| Body::EvictAck { page })?,
        MessageKind::HomeMove => {
            let entry: HomeMoveBody = read(body)?;
            let rest = &body[core::mem::size_of::<HomeMoveBody>()..];
            let data = if flag(FLAG_HAS_DATA) {
                Some(page_bytes(rest)?)
            } else {
                no_body(rest).map(|()| None)?
            };
            if entry.reserved != [0; 2] {
                return Err(WireError::BadReserved);
            }
            let exclusive = flag(FLAG_EXCLUSIVE);
            let canonical = if exclusive {
                entry.sharers == 0
            } else {
                entry.owner == 0
            };
            if !canonical {
                return Err(WireError::BadReserved);
            }
            let owner = if exclusive {
                check_node(entry.owner)?
            } else {
                0
            };
            Body::HomeMove {
                page,
                exclusive,
                owner,
                sharers: entry.sharers,
                data,
            }
        }
        MessageKind::Ipi => {
            let ipi: IpiBody = exact(body)?;
            if ipi.reserved != [0; 3] {
                return Err(WireError::BadReserved);
            }
            if !is_external_vector(ipi.vector as u64) {
                return Err(WireError::BadVector);
            }
            Body::Ipi {
                vp: check_vp(ipi.vp)?,
                vector: ipi.vector,
            }
        }
        MessageKind::VpStart => {
            let start: VpStartBody = exact(body)?;
            if start.reserved != 0 {
                return Err(WireError::BadReserved);
            }
            Body::VpStart {
                vp: check_vp(start.vp)?,
                entry: start.entry,
                stack_top: start.stack_top,
                arg: start.arg,
            }
        }
        MessageKind::ConsoleLine => {
            let line: ConsoleLineBody = read(body)?;
            let text = &body[core::mem::size_of::<ConsoleLineBody>()..];
            let len_ok = usize::try_from(line.len).is_ok_and(|len| len == text.len());
            if !len_ok || text.len() > CONSOLE_LINE_MAX {
                return Err(WireError::BadLength);
            }
            Body::ConsoleLine {
                vp: check_vp(line.vp)?,
                line: text,
            }
        }
        MessageKind::VsExit => {
            let exit: VsExitBody = exact(body)?;
            Body::VsExit {
                status: exit.status,
            }
        }
        MessageKind::Heartbeat => {
            let beat: HeartbeatBody = exact(body)?;
            Body::Heartbeat {
                sequence: beat.sequence,
            }
        }
        MessageKind::HomeChange | MessageKind::HomeChangeAck => {
            let change: HomeChangeBody = exact(body)?;
            if change.reserved != [0; 3] {
                return Err(WireError::BadReserved);
            }
            let fits = change.count != 0
                && change
                    .first
                    .checked_add(change.count)
                    .is_some_and(|end| end <= PAGE_NUMBER_LIMIT);
            if !fits {
                return Err(WireError::BadPage);
            }
            let (first, count, home) = (change.first, change.count, check_node(change.home)?);
            if kind == MessageKind::HomeChange {
                Body::HomeChange { first, count, home }
            } else {
                Body::HomeChangeAck { first, count, home }
            }
        }
        MessageKind::ConfigUpdate => {
            let update: ConfigUpdateBody = exact(body)?;
            Body::ConfigUpdate {
                epoch: update.epoch,
                mem_mib: update.mem_mib,
                offline: update.offline,
            }
        }
    };
    Ok(Message {
        vs_id: header.vs_id,
        src,
        dst,
        request_id: header.request_id,
        body,
    })
}

/// Where [`encode`] writes a body.
struct BodyWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl BodyWriter<'_> {
    fn put_bytes(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(WireError::BufferTooSmall)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(WireError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn put<T: LittleEndian>(&mut self, value: T) -> Result<(), WireError> {
        self.put_bytes(bytemuck::bytes_of(&value.swap_le()))
    }
}

/// Encodes `msg` into `buf` and returns the bytes written. The output is checked with
/// [`decode`] before it is returned, so every encoded message is one peers accept.
pub fn encode(msg: &Message<'_>, buf: &mut [u8]) -> Result<usize, WireError> {
    let body_buf = buf
        .get_mut(HEADER_BYTES..)
        .ok_or(WireError::BufferTooSmall)?;
    let mut out = BodyWriter {
        buf: body_buf,
        len: 0,
    };
    let mut flags = 0;
    match msg.body {
        Body::ReadReq { .. }
        | Body::Invalidate { .. }
        | Body::InvalidateAck { .. }
        | Body::UpgradeGrant { .. }
        | Body::Unblock { .. }
        | Body::Nack { .. }
        | Body::EvictAck { .. } => {}
        Body::Evict { data, .. } => {
            if let Some(data) = data {
                flags |= FLAG_EXCLUSIVE;
                out.put_bytes(data)?;
            }
        }
        Body::HomeMove {
            exclusive,
            owner,
            sharers,
            data,
            ..
        } => {
            if exclusive {
                flags |= FLAG_EXCLUSIVE;
            }
            out.put(HomeMoveBody {
                sharers,
                owner,
                reserved: [0; 2],
            })?;
            if let Some(data) = data {
                flags |= FLAG_HAS_DATA;
                out.put_bytes(data)?;
            }
        }
        Body::HomeChange { first, count, home } | Body::HomeChangeAck { first, count, home } => {
            out.put(HomeChangeBody {
                first,
                count,
                home,
                reserved: [0; 3],
            })?;
        }
        Body::WriteReq { has_copy, .. } => {
            if has_copy {
                flags |= FLAG_HAS_COPY;
            }
        }
        Body::ForwardRead { requester, .. } | Body::ForwardWrite { requester, .. } => {
            out.put(ForwardBody {
                requester,
                reserved: [0; 3],
            })?;
        }
        Body::PageData {
            exclusive, data, ..
        } => {
            if exclusive {
                flags |= FLAG_EXCLUSIVE;
            }
            out.put_bytes(data)?;
        }
        Body::Writeback { data, .. } => out.put_bytes(data)?,
        Body::Ipi { vp, vector } => out.put(IpiBody {
            vp,
            vector,
            reserved: [0; 3],
        })?,
        Body::VpStart {
            vp,
            entry,
            stack_top,
            arg,
        } => out.put(VpStartBody {
            vp,
            reserved: 0,
            entry,
            stack_top,
            arg,
        })?,
        Body::ConsoleLine { vp, line } => {
            if line.len() > CONSOLE_LINE_MAX {
                return Err(WireError::BadLength);
            }
            let len = u32::try_from(line.len()).map_err(|_| WireError::BadLength)?;
            out.put(ConsoleLineBody { vp, len })?;
            out.put_bytes(line)?;
        }
        Body::VsExit { status } => out.put(VsExitBody { status })?,
        Body::Heartbeat { sequence } => out.put(HeartbeatBody { sequence })?,
        Body::ConfigUpdate {
            epoch,
            mem_mib,
            offline,
        } => out.put(ConfigUpdateBody {
            epoch,
            mem_mib,
            offline,
        })?,
    }
    let body_len = out.len;
    let header = WireHeader {
        magic: WIRE_MAGIC,
        version: WIRE_VERSION,
        kind: msg.body.kind() as u8,
        vs_id: msg.vs_id,
        flags,
        src: msg.src,
        dst: msg.dst,
        body_len: u32::try_from(body_len).map_err(|_| WireError::BadLength)?,
        page: msg.body.page().unwrap_or(0),
        request_id: msg.request_id,
    };
    buf[..HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header.swap_le()));
    let total = HEADER_BYTES + body_len;
    decode(&buf[..total])?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    const PAGE: u64 = 0x200;

    fn encoded(msg: &Message<'_>) -> ([u8; MAX_MESSAGE_BYTES], usize) {
        let mut buf = [0u8; MAX_MESSAGE_BYTES];
        let len = encode(msg, &mut buf).unwrap();
        (buf, len)
    }

    fn msg(body: Body<'_>) -> Message<'_> {
        Message {
            vs_id: 3,
            src: 1,
            dst: 2,
            request_id: 0x1122_3344_5566_7788,
            body,
        }
    }

    #[test]
    fn numbers_and_layout_are_fixed() {
        // The numbers are ABI: pin them, not just their round trip.
        let kinds = [
            (MessageKind::ReadReq, 0x01),
            (MessageKind::WriteReq, 0x02),
            (MessageKind::ForwardRead, 0x03),
            (MessageKind::ForwardWrite, 0x04),
            (MessageKind::Invalidate, 0x05),
            (MessageKind::InvalidateAck, 0x06),
            (MessageKind::PageData, 0x07),
            (MessageKind::UpgradeGrant, 0x08),
            (MessageKind::Writeback, 0x09),
            (MessageKind::Unblock, 0x0a),
            (MessageKind::Nack, 0x0b),
            (MessageKind::Evict, 0x0c),
            (MessageKind::EvictAck, 0x0d),
            (MessageKind::HomeMove, 0x0e),
            (MessageKind::Ipi, 0x20),
            (MessageKind::VpStart, 0x21),
            (MessageKind::ConsoleLine, 0x22),
            (MessageKind::VsExit, 0x23),
            (MessageKind::Heartbeat, 0x24),
            (MessageKind::ConfigUpdate, 0x25),
            (MessageKind::HomeChange, 0x26),
            (MessageKind::HomeChangeAck, 0x27),
        ];
        for (kind, raw) in kinds {
            assert_eq!(kind as u8, raw);
            assert_eq!(MessageKind::from_raw(raw), Some(kind));
            assert_eq!(kind.is_coherence(), raw < 0x20);
        }
        let known = (0..=255u8)
            .filter(|raw| MessageKind::from_raw(*raw).is_some())
            .count();
        assert_eq!(known, kinds.len());
        assert_eq!(core::mem::size_of::<ForwardBody>(), 8);
        assert_eq!(core::mem::size_of::<IpiBody>(), 8);
        assert_eq!(core::mem::size_of::<VpStartBody>(), 32);
        assert_eq!(core::mem::size_of::<ConsoleLineBody>(), 8);
        assert_eq!(MAX_MESSAGE_BYTES, 32 + 8 + 4096);
    }

    #[test]
    fn header_bytes_are_little_endian_at_fixed_offsets() {
        let (buf, len) = encoded(&Message {
            vs_id: 0x0102,
            src: 3,
            dst: 4,
            request_id: 0x0807_0605_0403_0201,
            body: Body::WriteReq {
                page: 0x1_2345,
                has_copy: true,
            },
        });
        let expected: [u8; 32] = [
            0x43, 0x56, 1, 0x02, // magic "CV", version, kind WriteReq
            0x02, 0x01, 0x01, 0x00, // vs_id, flags HAS_COPY
            0x03, 0x00, 0x04, 0x00, // src, dst
            0x00, 0x00, 0x00, 0x00, // body_len
            0x45, 0x23, 0x01, 0, 0, 0, 0, 0, // page
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // request id
        ];
        assert_eq!(&buf[..len], &expected);
    }

    #[test]
    fn page_data_carries_the_page() {
        let mut data = [0u8; PAGE_BYTES];
        data[0] = 0xaa;
        data[PAGE_BYTES - 1] = 0x55;
        let original = msg(Body::PageData {
            page: PAGE,
            exclusive: true,
            data: &data,
        });
        let (buf, len) = encoded(&original);
        assert_eq!(len, HEADER_BYTES + PAGE_BYTES);
        assert_eq!(buf[HEADER_BYTES], 0xaa);
        assert_eq!(buf[len - 1], 0x55);
        assert_eq!(decode(&buf[..len]), Ok(original));
    }

    #[test]
    fn malformed_inputs_get_typed_errors() {
        let (good, len) = encoded(&msg(Body::ForwardRead {
            page: PAGE,
            requester: 5,
        }));
        let mutate = |at: usize, value: u8| {
            let mut bad = good;
            bad[at] = value;
            decode(&bad[..len]).map(|m| m.body.page())
        };
        assert_eq!(decode(&good[..10]), Err(WireError::Truncated));
        assert_eq!(decode(&good[..len - 1]), Err(WireError::BadLength));
        assert_eq!(mutate(0, 0), Err(WireError::BadMagic));
        assert_eq!(mutate(2, 2), Err(WireError::BadVersion));
        assert_eq!(mutate(3, 0x7f), Err(WireError::UnknownKind));
        assert_eq!(mutate(6, 1), Err(WireError::BadFlags));
        assert_eq!(mutate(8, 16), Err(WireError::BadNode));
        assert_eq!(mutate(10, 1), Err(WireError::BadNode), "src == dst");
        assert_eq!(
            mutate(HEADER_BYTES, 2),
            Err(WireError::BadNode),
            "requester is dst"
        );
        assert!(
            mutate(HEADER_BYTES, 1).is_ok(),
            "the home forwards for itself"
        );
        assert_eq!(mutate(HEADER_BYTES + 2, 1), Err(WireError::BadReserved));
        assert_eq!(
            mutate(17, 0),
            Err(WireError::BadPage),
            "page 0 is the null page"
        );
        assert_eq!(mutate(16, 1), Ok(Some(0x201)));
    }

    #[test]
    fn page_rules() {
        assert!(!is_coherent_page(0));
        for page in 1..5 {
            assert!(!is_coherent_page(page), "per-node page {page}");
        }
        assert!(is_coherent_page(5));
        assert!(is_coherent_page(PAGE_NUMBER_LIMIT - 1));
        assert!(!is_coherent_page(PAGE_NUMBER_LIMIT));
        let mut buf = [0u8; MAX_MESSAGE_BYTES];
        let per_node = msg(Body::Invalidate { page: 2 });
        assert_eq!(encode(&per_node, &mut buf), Err(WireError::BadPage));
    }

    #[test]
    fn control_checks() {
        let mut buf = [0u8; MAX_MESSAGE_BYTES];
        let bad_vector = msg(Body::Ipi { vp: 1, vector: 31 });
        assert_eq!(encode(&bad_vector, &mut buf), Err(WireError::BadVector));
        let bad_vp = msg(Body::VpStart {
            vp: 64,
            entry: 0,
            stack_top: 0,
            arg: 0,
        });
        assert_eq!(encode(&bad_vp, &mut buf), Err(WireError::BadVp));
        let long = [b'x'; CONSOLE_LINE_MAX + 1];
        let too_long = msg(Body::ConsoleLine { vp: 0, line: &long });
        assert_eq!(encode(&too_long, &mut buf), Err(WireError::BadLength));
        let line = msg(Body::ConsoleLine {
            vp: 0,
            line: b"hello",
        });
        assert_eq!(
            encode(&line, &mut buf[..HEADER_BYTES + 12]),
            Err(WireError::BufferTooSmall)
        );
        let len = encode(&line, &mut buf).unwrap();
        assert_eq!(len, HEADER_BYTES + 8 + 5);
        // A control message must not name a page.
        buf[16] = 5;
        assert_eq!(decode(&buf[..len]), Err(WireError::BadPage));
    }

    /// Everything needed to build any message; the proptest strategy generates this and the
    /// test borrows the page and line from it.
    #[derive(Clone, Debug)]
    struct Parts {
        kind: usize,
        vs_id: u16,
        src: u16,
        dst_offset: u16,
        request_id: u64,
        page: u64,
        flag: bool,
        requester_offset: u16,
        vp: u32,
        vector: u8,
        words: [u64; 3],
        data: Vec<u8>,
        line: Vec<u8>,
    }

    fn parts() -> impl Strategy<Value = Parts> {
        (
            (0usize..22, any::<u16>(), 0u16..16, 1u16..16, any::<u64>()),
            (5u64..PAGE_NUMBER_LIMIT, any::<bool>(), 1u16..15),
            (0u32..64, 32u8..64, any::<[u64; 3]>()),
            (
                proptest::collection::vec(any::<u8>(), PAGE_BYTES),
                proptest::collection::vec(any::<u8>(), 0..=CONSOLE_LINE_MAX),
            ),
        )
            .prop_map(|(a, b, c, d)| Parts {
                kind: a.0,
                vs_id: a.1,
                src: a.2,
                dst_offset: a.3,
                request_id: a.4,
                page: b.0,
                flag: b.1,
                requester_offset: b.2,
                vp: c.0,
                vector: c.1,
                words: c.2,
                data: d.0,
                line: d.1,
            })
    }

    fn build(p: &Parts) -> Message<'_> {
        let dst = (p.src + p.dst_offset) % 16;
        // Any requester but the destination.
        let requester = (0..16u16)
            .cycle()
            .skip(usize::from(p.requester_offset))
            .find(|n| *n != dst)
            .unwrap();
        let page = p.page;
        let data: &[u8; PAGE_BYTES] = p.data.as_slice().try_into().unwrap();
        let body = match p.kind {
            0 => Body::ReadReq { page },
            1 => Body::WriteReq {
                page,
                has_copy: p.flag,
            },
            2 => Body::ForwardRead { page, requester },
            3 => Body::ForwardWrite { page, requester },
            4 => Body::Invalidate { page },
            5 => Body::InvalidateAck { page },
            6 => Body::PageData {
                page,
                exclusive: p.flag,
                data,
            },
            7 => Body::UpgradeGrant { page },
            8 => Body::Writeback { page, data },
            9 => Body::Unblock { page },
            10 => Body::Nack { page },
            11 => Body::Ipi {
                vp: p.vp,
                vector: p.vector,
            },
            12 => Body::VpStart {
                vp: p.vp,
                entry: p.words[0],
                stack_top: p.words[1],
                arg: p.words[2],
            },
            13 => Body::ConsoleLine {
                vp: p.vp,
                line: &p.line,
            },
            14 => Body::VsExit { status: p.words[0] },
            15 => Body::Heartbeat {
                sequence: p.words[0],
            },
            16 => Body::Evict {
                page,
                data: p.flag.then_some(data),
            },
            17 => Body::EvictAck { page },
            18 => Body::HomeMove {
                page,
                exclusive: p.flag,
                owner: if p.flag { p.src } else { 0 },
                sharers: if p.flag { 0 } else { p.requester_offset },
                data: p.vector.is_multiple_of(2).then_some(data),
            },
            19 => Body::HomeChange {
                first: page.min(PAGE_NUMBER_LIMIT - 8),
                count: 1 + p.words[0] % 8,
                home: p.src,
            },
            20 => Body::HomeChangeAck {
                first: page.min(PAGE_NUMBER_LIMIT - 8),
                count: 1 + p.words[0] % 8,
                home: dst,
            },
            _ => Body::ConfigUpdate {
                epoch: p.vp,
                mem_mib: u32::from(p.vector),
                offline: p.words[1],
            },
        };
        Message {
            vs_id: p.vs_id,
            src: p.src,
            dst,
            request_id: p.request_id,
            body,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn round_trip(p in parts()) {
            let original = build(&p);
            let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
            let len = encode(&original, &mut buf).unwrap();
            prop_assert_eq!(decode(&buf[..len]), Ok(original));
            // The length follows from the kind alone (the console line from its text).
            let expected_body = match original.body {
                Body::PageData { .. } | Body::Writeback { .. }
                | Body::Evict { data: Some(_), .. } => PAGE_BYTES,
                Body::HomeMove { data: Some(_), .. } => 8 + PAGE_BYTES,
                Body::HomeMove { data: None, .. } => 8,
                Body::HomeChange { .. } | Body::HomeChangeAck { .. } => 24,
                Body::ForwardRead { .. } | Body::ForwardWrite { .. } | Body::Ipi { .. }
                | Body::VsExit { .. } | Body::Heartbeat { .. } => 8,
                Body::VpStart { .. } => 32,
                Body::ConfigUpdate { .. } => 16,
                Body::ConsoleLine { line, .. } => 8 + line.len(),
                _ => 0,
            };
            prop_assert_eq!(len, HEADER_BYTES + expected_body);
        }

        #[test]
        fn corrupted_messages_never_panic_and_stay_canonical(
            p in parts(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
            extend in 0usize..3,
        ) {
            let original = build(&p);
            let mut buf = vec![0u8; MAX_MESSAGE_BYTES + 2];
            let len = encode(&original, &mut buf).unwrap();
            // Mostly edit the header, where the checks are.
            for (at, value) in edits {
                let limit = if at % 2 == 0 { HEADER_BYTES + 8 } else { len };
                buf[at % limit.min(len)] = value;
            }
            let len = if cut % 4 == 0 { cut % (len + 1) } else { len + extend };
            if let Ok(decoded) = decode(&buf[..len]) {
                // Whatever decodes is canonical: it re-encodes to the very same bytes.
                let mut again = vec![0u8; MAX_MESSAGE_BYTES];
                let again_len = encode(&decoded, &mut again).unwrap();
                prop_assert_eq!(&again[..again_len], &buf[..len]);
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), kind in any::<u8>()) {
            let mut bytes = bytes;
            // Give the decoder a fair chance to get past the magic.
            if bytes.len() >= 4 {
                bytes[0] = 0x43;
                bytes[1] = 0x56;
                bytes[2] = WIRE_VERSION;
                bytes[3] = kind;
            }
            let _ = decode(&bytes);
        }
    }
}
