//! The device's memory layout: PCI identity, BAR0 (registers, rings, message buffers), the
//! descriptor formats and the interrupt vectors. `docs/nic.md` is the prose version.
//!
//! Everything here is plain data (`#[repr(C)]`, bytemuck): the same bytes are written by
//! one process and read by another (or by a NIC), so each type has a fixed size and offsets
//! checked at compile time.

use bytemuck::{Pod, Zeroable};
use core::mem::{offset_of, size_of};

/// PCI vendor id of the cvmm NIC. 0x1de5 is not used for a real card we know of; the
/// driver also checks the BAR0 magic, so a clash would be caught before any DMA.
pub const VENDOR_ID: u16 = 0x1de5;
/// PCI device id of the cvmm NIC (offload engine, layout version 1).
pub const DEVICE_ID: u16 = 0xc001;
/// PCI class code: network controller (0x02), other (0x80).
pub const CLASS_CODE: u32 = 0x02_80_00;
/// PCI revision.
pub const REVISION: u8 = 1;

/// `"CVNI"`: the first register of BAR0.
pub const MAGIC: u32 = u32::from_le_bytes(*b"CVNI");
/// Version of the register and ring layout.
pub const LAYOUT_VERSION: u32 = 1;

/// Submission ring entries (host -> NIC). A power of two.
pub const SQ_ENTRIES: u32 = 256;
/// Completion ring entries (NIC -> host). A power of two.
pub const CQ_ENTRIES: u32 = 512;
/// Bytes of one message buffer: a whole wire message (`vima::wire::MAX_MESSAGE_BYTES`),
/// rounded up to a multiple of 512.
pub const BUFFER_BYTES: u32 = 4608;
/// Bytes of one descriptor or completion entry.
pub const ENTRY_BYTES: u32 = 32;

/// Offset of the register block in BAR0.
pub const REGS_OFFSET: u64 = 0;
/// Offset of the submission ring.
pub const SQ_OFFSET: u64 = 0x1000;
/// Offset of the completion ring.
pub const CQ_OFFSET: u64 = SQ_OFFSET + (SQ_ENTRIES as u64) * (ENTRY_BYTES as u64);
/// Offset of the submission buffers (one per submission slot).
pub const SQ_BUFFERS_OFFSET: u64 = CQ_OFFSET + (CQ_ENTRIES as u64) * (ENTRY_BYTES as u64);
/// Offset of the completion buffers (one per completion slot).
pub const CQ_BUFFERS_OFFSET: u64 = SQ_BUFFERS_OFFSET + (SQ_ENTRIES as u64) * (BUFFER_BYTES as u64);
/// End of what BAR0 uses.
pub const BAR0_USED: u64 = CQ_BUFFERS_OFFSET + (CQ_ENTRIES as u64) * (BUFFER_BYTES as u64);
/// Size of BAR0: the next power of two (PCI BARs are naturally aligned powers of two).
pub const BAR0_SIZE: u64 = BAR0_USED.next_power_of_two();

/// MSI-X vectors: vector 0 for the host's mapping work and control messages, one per VP.
#[allow(clippy::cast_possible_truncation)] // MAX_VPS is 64 (asserted below)
pub const MSIX_VECTORS: u32 = 1 + vima::layout::MAX_VPS as u32;
/// The vector that is not a VP's.
pub const HOST_VECTOR: u16 = 0;

/// The vfio-user interrupt index that carries, on this device, the host -> NIC doorbell
/// eventfd (index 4 is VFIO's "request" index, unused by this device otherwise). It stands
/// in for what hardware gets for free: a NIC sees a doorbell write, a process cannot see a
/// store to shared memory without polling. The host signals it only when `nic_idle` says
/// the firmware sleeps.
pub const DOORBELL_IRQ_INDEX: u32 = 4;

/// `status` bits (NIC -> host).
pub mod status {
    /// The device is initialised and its registers are valid.
    pub const READY: u32 = 1 << 0;
    /// The firmware runs the engine (after the host enabled it).
    pub const RUNNING: u32 = 1 << 1;
    /// The firmware stopped on an error (`error` says which).
    pub const FAILED: u32 = 1 << 2;
    /// The firmware finished after a shutdown request.
    pub const STOPPED: u32 = 1 << 3;
}

/// `control` bits (host -> NIC).
pub mod control {
    /// The host mapped memory, set the interrupts and the vector table: start.
    pub const ENABLE: u32 = 1 << 0;
    /// The host is leaving: send what is queued and stop.
    pub const SHUTDOWN: u32 = 1 << 1;
}

/// Number of counters the NIC exports.
pub const COUNTERS: usize = 32;

/// The register block at the start of BAR0 (4 KiB). All registers are little-endian and
/// accessed as aligned atomics in shared memory: nothing here traps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct RegisterBlock {
    /// [`MAGIC`] (NIC).
    pub magic: u32,
    /// [`LAYOUT_VERSION`] (NIC).
    pub version: u32,
    /// [`SQ_ENTRIES`] (NIC).
    pub sq_entries: u32,
    /// [`CQ_ENTRIES`] (NIC).
    pub cq_entries: u32,
    /// [`BUFFER_BYTES`] (NIC).
    pub buffer_bytes: u32,
    /// The node this NIC serves (NIC).
    pub node: u32,
    /// [`status`] bits (NIC).
    pub status: u32,
    /// Why the firmware failed, when `status` has FAILED (NIC).
    pub error: u32,
    /// The firmware's round count, published at least every 64 ms while it runs (NIC).
    pub heartbeat: u64,
    /// [`control`] bits (host).
    pub control: u32,
    /// Non-zero while the firmware sleeps (NIC): a host that posts a submission then
    /// signals the doorbell eventfd ([`DOORBELL_IRQ_INDEX`]) to wake it.
    pub nic_idle: u32,
    /// Reserved, 0.
    pub reserved1: [u64; 2],
    /// Submission ring doorbell: the host's producer index, free running (host).
    pub sq_tail: u32,
    /// Submissions the NIC consumed, free running (NIC).
    pub sq_head: u32,
    /// Completions the NIC produced, free running (NIC).
    pub cq_tail: u32,
    /// Completions the host has consumed **and applied** (host). This is also the
    /// acknowledgement of mapping changes the firmware waits for.
    pub cq_head: u32,
    /// Reserved, 0.
    pub reserved2: [u64; 6],
    /// VPs whose vector is live, bit = VP (host). Completions for an absent VP go to
    /// [`HOST_VECTOR`].
    pub vp_present: u64,
    /// Reserved, 0.
    pub reserved3: [u64; 7],
    /// MSI-X vector of each VP (host).
    pub vector_table: [u16; vima::layout::MAX_VPS],
    /// Reserved, 0.
    pub reserved5: [u64; 24],
    /// Counters exported by the NIC ([`Counter`] names the slots).
    pub counters: [u64; COUNTERS],
    /// Pads the block to 4 KiB.
    pub reserved4: [u64; (4096 - 0x200) / 8 - COUNTERS],
}

const _: () = assert!(size_of::<RegisterBlock>() == 4096);
const _: () = assert!(offset_of!(RegisterBlock, heartbeat) == 0x20);
const _: () = assert!(offset_of!(RegisterBlock, control) == 0x28);
const _: () = assert!(offset_of!(RegisterBlock, nic_idle) == 0x2c);
const _: () = assert!(offset_of!(RegisterBlock, sq_tail) == 0x40);
const _: () = assert!(offset_of!(RegisterBlock, cq_head) == 0x4c);
const _: () = assert!(offset_of!(RegisterBlock, vp_present) == 0x80);
const _: () = assert!(offset_of!(RegisterBlock, vector_table) == 0xc0);
const _: () = assert!(offset_of!(RegisterBlock, counters) == 0x200);
const _: () = assert!(vima::layout::MAX_VPS == 64);
const _: () = assert!(BUFFER_BYTES as usize >= vima::wire::MAX_MESSAGE_BYTES);
const _: () = assert!(SQ_ENTRIES.is_power_of_two() && CQ_ENTRIES.is_power_of_two());
const _: () = assert!(BAR0_USED <= BAR0_SIZE);

/// Byte offsets of the registers the driver and firmware touch.
pub mod reg {
    use super::RegisterBlock;
    use core::mem::offset_of;

    /// `magic`.
    pub const MAGIC: u64 = offset_of!(RegisterBlock, magic) as u64;
    /// `version`.
    pub const VERSION: u64 = offset_of!(RegisterBlock, version) as u64;
    /// `sq_entries`.
    pub const SQ_ENTRIES: u64 = offset_of!(RegisterBlock, sq_entries) as u64;
    /// `cq_entries`.
    pub const CQ_ENTRIES: u64 = offset_of!(RegisterBlock, cq_entries) as u64;
    /// `buffer_bytes`.
    pub const BUFFER_BYTES: u64 = offset_of!(RegisterBlock, buffer_bytes) as u64;
    /// `node`.
    pub const NODE: u64 = offset_of!(RegisterBlock, node) as u64;
    /// `status`.
    pub const STATUS: u64 = offset_of!(RegisterBlock, status) as u64;
    /// `error`.
    pub const ERROR: u64 = offset_of!(RegisterBlock, error) as u64;
    /// `heartbeat`.
    pub const HEARTBEAT: u64 = offset_of!(RegisterBlock, heartbeat) as u64;
    /// `control`.
    pub const CONTROL: u64 = offset_of!(RegisterBlock, control) as u64;
    /// `nic_idle`.
    pub const NIC_IDLE: u64 = offset_of!(RegisterBlock, nic_idle) as u64;
    /// `sq_tail`.
    pub const SQ_TAIL: u64 = offset_of!(RegisterBlock, sq_tail) as u64;
    /// `sq_head`.
    pub const SQ_HEAD: u64 = offset_of!(RegisterBlock, sq_head) as u64;
    /// `cq_tail`.
    pub const CQ_TAIL: u64 = offset_of!(RegisterBlock, cq_tail) as u64;
    /// `cq_head`.
    pub const CQ_HEAD: u64 = offset_of!(RegisterBlock, cq_head) as u64;
    /// `vp_present`.
    pub const VP_PRESENT: u64 = offset_of!(RegisterBlock, vp_present) as u64;
    /// `vector_table`.
    pub const VECTOR_TABLE: u64 = offset_of!(RegisterBlock, vector_table) as u64;
    /// `counters`.
    pub const COUNTERS: u64 = offset_of!(RegisterBlock, counters) as u64;
}

/// The slots of `RegisterBlock::counters`.
#[repr(usize)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Main loop rounds that found work.
    BusyRounds = 0,
    /// Submissions consumed.
    Submissions,
    /// Submissions rejected as malformed.
    BadSubmissions,
    /// Completions posted.
    Completions,
    /// Interrupts raised (eventfd writes).
    Interrupts,
    /// Wire messages received.
    MessagesReceived,
    /// Wire messages sent.
    MessagesSent,
    /// Wire messages dropped as malformed or misdirected.
    BadMessages,
    /// Wire sends that failed.
    SendFailures,
    /// Pages read by DMA and sent (PageData, Writeback).
    PagesSent,
    /// Pages sent without waiting for the host (no mapping change outstanding).
    PagesServedWithoutHost,
    /// Messages that waited for the host to acknowledge a mapping change.
    SendsHeld,
    /// Data-carrying messages that waited for the host before their DMA write.
    ReceivesHeld,
    /// Engine: invalidations sent.
    InvalidationsSent,
    /// Engine: invalidations received.
    InvalidationsReceived,
    /// Engine: forwards sent.
    ForwardsSent,
    /// Engine: requests queued at the home.
    RequestsQueued,
    /// Engine: pages received.
    PagesReceived,
    /// Engine: protocol errors.
    ProtocolErrors,
    /// Transport retransmissions.
    Retransmits,
    /// Completions steered to another vector because their VP was gone.
    Resteered,
    /// Faults the engine refused (answered so the VP retries).
    FaultsRefused,
}

/// Submission opcodes (host -> NIC).
pub mod sq_op {
    /// Fetch a page for a faulting VP: `page`, `vp`, flags bit 0 = write.
    pub const FETCH: u8 = 1;
    /// Send the wire message in this slot's buffer (`len` bytes): a control message.
    pub const SEND_CONTROL: u8 = 2;
    /// The node leaves: give up every copy of other nodes' pages, then hand every range
    /// homed here over to node `vp` (the field carries the node id). Answered by `LEFT`.
    pub const LEAVE: u8 = 3;
}

/// Submission flag: the fetch wants a writable copy.
pub const SQ_FLAG_WRITE: u8 = 1 << 0;

/// Completion opcodes (NIC -> host).
pub mod cq_op {
    /// Map the page (its contents are in memory) as `state`: Shared or Exclusive.
    pub const MAP_PAGE: u8 = 1;
    /// Unmap the page (Invalid); its contents stay in memory.
    pub const INVALIDATE: u8 = 2;
    /// Write-protect the page (Exclusive -> Shared).
    pub const DOWNGRADE: u8 = 3;
    /// Wake the page's SpinWait watchers.
    pub const WAKE_WATCHERS: u8 = 4;
    /// The fetch of `page` is done: the node holds it as `state`; resume the waiters.
    pub const FAULT_DONE: u8 = 5;
    /// A control message from another node is in this slot's buffer (`len` bytes).
    pub const CONTROL: u8 = 6;
    /// Node `vp` (the field carries the node id) stopped responding.
    pub const PEER_DOWN: u8 = 7;
    /// The NIC's wire failed: the node cannot reach the cluster any more.
    pub const WIRE_FAILED: u8 = 8;
    /// The `LEAVE` is done: `page` copies given up, `len` pages handed over; `state` 1
    /// when the NIC refused it (a bad target, or a leave already under way).
    pub const LEFT: u8 = 9;
}

/// One submission ring entry (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SubmissionDescriptor {
    /// [`sq_op`].
    pub opcode: u8,
    /// Per-opcode flags ([`SQ_FLAG_WRITE`]); undefined bits must be 0.
    pub flags: u8,
    /// Must be 0.
    pub reserved0: u16,
    /// The faulting VP (FETCH), else 0.
    pub vp: u32,
    /// The logical page (FETCH), else 0.
    pub page: u64,
    /// Bytes in this slot's buffer (SEND_CONTROL), else 0.
    pub len: u32,
    /// Must be 0.
    pub reserved1: u32,
    /// Free for the host (echoed nowhere; a debugging aid).
    pub cookie: u64,
}

/// One completion ring entry (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CompletionEntry {
    /// [`cq_op`].
    pub opcode: u8,
    /// Page state for MAP_PAGE and FAULT_DONE: 0 Invalid, 1 Shared, 2 Exclusive.
    pub state: u8,
    /// Must be 0.
    pub reserved0: u16,
    /// The VP (FAULT_DONE) or node (PEER_DOWN), else 0.
    pub vp: u32,
    /// The logical page, or 0.
    pub page: u64,
    /// Bytes in this slot's buffer (CONTROL), else 0.
    pub len: u32,
    /// Must be 0.
    pub reserved1: u32,
    /// The entry's position in the ring, free running: lets the host check it read a
    /// fresh entry.
    pub seq: u64,
}

const _: () = assert!(size_of::<SubmissionDescriptor>() == ENTRY_BYTES as usize);
const _: () = assert!(size_of::<CompletionEntry>() == ENTRY_BYTES as usize);

/// Where VP `vp`'s vector lives in the vector table: the aligned `u32` register holding
/// it and the shift of its 16 bits in that register (`vp` below `MAX_VPS`).
pub const fn vector_slot(vp: u32) -> (u64, u32) {
    let at = reg::VECTOR_TABLE + (vp as u64 % 64) * 2;
    (at & !3, if at & 2 == 0 { 0 } else { 16 })
}

/// Offset in BAR0 of submission slot `index` (taken modulo the ring size).
pub const fn sq_slot(index: u32) -> u64 {
    SQ_OFFSET + ((index % SQ_ENTRIES) as u64) * (ENTRY_BYTES as u64)
}

/// Offset in BAR0 of the buffer of submission slot `index`.
pub const fn sq_buffer(index: u32) -> u64 {
    SQ_BUFFERS_OFFSET + ((index % SQ_ENTRIES) as u64) * (BUFFER_BYTES as u64)
}

/// Offset in BAR0 of completion slot `index`.
pub const fn cq_slot(index: u32) -> u64 {
    CQ_OFFSET + ((index % CQ_ENTRIES) as u64) * (ENTRY_BYTES as u64)
}

/// Offset in BAR0 of the buffer of completion slot `index`.
pub const fn cq_buffer(index: u32) -> u64 {
    CQ_BUFFERS_OFFSET + ((index % CQ_ENTRIES) as u64) * (BUFFER_BYTES as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_do_not_overlap_and_fit_the_bar() {
        assert!(SQ_OFFSET >= size_of::<RegisterBlock>() as u64);
        assert_eq!(sq_slot(SQ_ENTRIES - 1) + u64::from(ENTRY_BYTES), CQ_OFFSET);
        assert_eq!(
            cq_slot(CQ_ENTRIES - 1) + u64::from(ENTRY_BYTES),
            SQ_BUFFERS_OFFSET
        );
        assert_eq!(
            sq_buffer(SQ_ENTRIES - 1) + u64::from(BUFFER_BYTES),
            CQ_BUFFERS_OFFSET
        );
        assert_eq!(
            cq_buffer(CQ_ENTRIES - 1) + u64::from(BUFFER_BYTES),
            BAR0_USED
        );
        assert_eq!(BAR0_SIZE, 4 << 20);
        // Slots wrap with the free-running index.
        assert_eq!(sq_slot(SQ_ENTRIES + 3), sq_slot(3));
        assert_eq!(cq_buffer(u32::MAX), cq_buffer(CQ_ENTRIES - 1));
    }

    #[test]
    fn every_buffer_and_slot_is_word_aligned() {
        for i in [0, 1, 7, SQ_ENTRIES - 1] {
            assert_eq!(sq_slot(i) % 8, 0);
            assert_eq!(sq_buffer(i) % 8, 0);
        }
        for i in [0, 1, 7, CQ_ENTRIES - 1] {
            assert_eq!(cq_slot(i) % 8, 0);
            assert_eq!(cq_buffer(i) % 8, 0);
        }
    }

    #[test]
    fn vector_slots_pack_two_vps_per_register() {
        assert_eq!(vector_slot(0), (reg::VECTOR_TABLE, 0));
        assert_eq!(vector_slot(1), (reg::VECTOR_TABLE, 16));
        assert_eq!(vector_slot(63), (reg::VECTOR_TABLE + 124, 16));
    }

    #[test]
    fn magic_spells_cvni() {
        assert_eq!(&MAGIC.to_le_bytes(), b"CVNI");
    }
}
