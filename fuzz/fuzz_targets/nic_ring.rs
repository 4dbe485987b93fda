//! The NIC's shared descriptor rings (`vfio::ring`) as a hostile other side can leave
//! them: any ring entry, any index in the doorbell registers. Ported from
//! `vfio/fuzz` (`descriptors`: the entry decoders), plus the consumers over a whole BAR.
//!
//! Input: the first 32 bytes are one entry, decoded both as a submission and as a
//! completion; the rest is a list of 8-byte stores `[what, slot, value: u32 le, ...]` into
//! the doorbell registers, the ring entries and their buffers, after which the firmware's
//! submission consumer and the host's completion consumer drain what they find.
//!
//! Properties: nothing panics; accepted entries re-encode to the same bytes; a doorbell
//! that claims more than a ring's worth is refused without consuming anything; a consumer
//! never takes more than a ring's worth before it finds the ring empty; a returned payload
//! length fits the buffer.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vfio::layout::{
    self, reg, CompletionEntry, SubmissionDescriptor, BAR0_SIZE, BUFFER_BYTES, CQ_ENTRIES,
    SQ_ENTRIES,
};
use vfio::region::{HeapRegion, SharedMemory};
use vfio::ring::{Completion, CompletionConsumer, RingPollError, Submission, SubmissionConsumer};

/// One BAR for every run (allocating 4 MiB per input would dominate); each run writes only
/// through `store` and clears what it wrote before it returns.
fn bar() -> &'static HeapRegion {
    static BAR: OnceLock<HeapRegion> = OnceLock::new();
    BAR.get_or_init(|| HeapRegion::new(BAR0_SIZE))
}

fn check_entry(bytes: &[u8]) {
    let d: SubmissionDescriptor = bytemuck::pod_read_unaligned(bytes);
    if let Ok(s) = Submission::decode(&d) {
        let mut again = s.encode();
        again.cookie = d.cookie;
        assert_eq!(again, d);
    }
    let e: CompletionEntry = bytemuck::pod_read_unaligned(bytes);
    let at = u32::try_from(e.seq & u64::from(u32::MAX)).expect("masked");
    if let Ok(c) = Completion::decode(&e, at) {
        assert_eq!(c.encode(e.seq), e);
    }
}

/// Where store `what` of `slot` goes: a doorbell register, a word of an entry, or a word of
/// a buffer (slots 0..8 only, so the fuzzer meets them).
fn target(what: u8, slot: u8, word: u8) -> u64 {
    let slot = u32::from(slot % 8);
    let word = u64::from(word % 8) * 4;
    match what % 8 {
        0 => reg::SQ_TAIL,
        1 => reg::SQ_HEAD,
        2 => reg::CQ_TAIL,
        3 => reg::CQ_HEAD,
        4 => layout::sq_slot(slot) + word,
        5 => layout::cq_slot(slot) + word,
        6 => layout::sq_buffer(slot) + word,
        _ => layout::cq_buffer(slot) + word,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(entry) = data.get(..32) else { return };
    check_entry(entry);
    let mem = bar();
    let mut written = Vec::new();
    for store in data[32..].chunks_exact(8) {
        let offset = target(store[0], store[1], store[2]);
        let value = u32::from_le_bytes([store[4], store[5], store[6], store[7]]);
        mem.store_u32(offset, value);
        written.push(offset);
    }

    let mut payload = vec![0u8; BUFFER_BYTES as usize];
    let mut sq = SubmissionConsumer::new(mem);
    for taken in 0..=SQ_ENTRIES {
        let head = mem.load_u32(reg::SQ_HEAD);
        match sq.pop(mem, &mut payload) {
            Ok(None) => break,
            Ok(Some((_, len))) => assert!(len <= payload.len()),
            Err(RingPollError::Doorbell { .. }) => {
                assert_eq!(mem.load_u32(reg::SQ_HEAD), head, "a bad doorbell consumed");
                break;
            }
            Err(_) => {}
        }
        assert!(taken < SQ_ENTRIES, "took more than a ring's worth");
    }
    let mut cq = CompletionConsumer::new(mem);
    for taken in 0..=CQ_ENTRIES {
        match cq.peek(mem, &mut payload) {
            Ok(None) | Err(RingPollError::Doorbell { .. }) => break,
            Ok(Some((_, len))) => assert!(len <= payload.len()),
            Err(_) => {}
        }
        cq.advance(mem);
        assert!(taken < CQ_ENTRIES, "took more than a ring's worth");
    }

    // Leave the BAR as the next run expects it: all zero.
    for offset in written {
        mem.store_u32(offset, 0);
    }
    mem.store_u32(reg::SQ_HEAD, 0);
    mem.store_u32(reg::CQ_HEAD, 0);
});
