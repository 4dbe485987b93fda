//! `vima::wire`: any bytes into `decode`, and any message into `encode`.
//!
//! Properties: `decode` never panics; what it accepts is canonical (`encode(decode(b)) ==
//! b`) and well formed (nodes in range and distinct, coherence pages coherent, control
//! messages on page 0); `encode` never panics, and what it produces `decode` gives back
//! unchanged (so a node never sends what its peers refuse).
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use vima::layout::MAX_NODES;
use vima::wire::{decode, encode, is_coherent_page, Body, Message, MAX_MESSAGE_BYTES, PAGE_BYTES};

/// A message built from fuzz input; page contents and console text come from `bytes`.
#[derive(Arbitrary, Debug)]
struct Built<'a> {
    vs_id: u16,
    src: u16,
    dst: u16,
    request_id: u64,
    kind: u8,
    page: u64,
    flag: bool,
    node: u16,
    vp: u32,
    vector: u8,
    words: [u64; 3],
    bytes: &'a [u8],
}

impl<'a> Built<'a> {
    fn message(&self, page_data: &'a [u8; PAGE_BYTES]) -> Message<'a> {
        let page = self.page;
        let [a, b, c] = self.words;
        let body = match self.kind % 22 {
            0 => Body::ReadReq { page },
            1 => Body::WriteReq {
                page,
                has_copy: self.flag,
            },
            2 => Body::ForwardRead {
                page,
                requester: self.node,
            },
            3 => Body::ForwardWrite {
                page,
                requester: self.node,
            },
            4 => Body::Invalidate { page },
            5 => Body::InvalidateAck { page },
            6 => Body::PageData {
                page,
                exclusive: self.flag,
                data: page_data,
            },
            7 => Body::UpgradeGrant { page },
            8 => Body::Writeback {
                page,
                data: page_data,
            },
            9 => Body::Unblock { page },
            10 => Body::Nack { page },
            11 => Body::Ipi {
                vp: self.vp,
                vector: self.vector,
            },
            12 => Body::VpStart {
                vp: self.vp,
                entry: a,
                stack_top: b,
                arg: c,
            },
            13 => Body::ConsoleLine {
                vp: self.vp,
                line: self.bytes,
            },
            14 => Body::VsExit { status: a },
            15 => Body::Heartbeat { sequence: a },
            16 => Body::Evict {
                page,
                data: self.flag.then_some(page_data),
            },
            17 => Body::EvictAck { page },
            18 => Body::HomeMove {
                page,
                exclusive: self.flag,
                owner: if self.flag { self.node } else { 0 },
                sharers: if self.flag { 0 } else { self.node },
                data: self.vector.is_multiple_of(2).then_some(page_data),
            },
            19 => Body::HomeChange {
                first: a,
                count: b,
                home: self.node,
            },
            20 => Body::HomeChangeAck {
                first: a,
                count: b,
                home: self.node,
            },
            _ => Body::ConfigUpdate {
                epoch: self.vp,
                mem_mib: u32::from(self.vector),
                offline: a,
            },
        };
        Message {
            vs_id: self.vs_id,
            src: self.src,
            dst: self.dst,
            request_id: self.request_id,
            body,
        }
    }
}

fn check_well_formed(msg: &Message<'_>) {
    assert!(usize::from(msg.src) < MAX_NODES && usize::from(msg.dst) < MAX_NODES);
    assert_ne!(msg.src, msg.dst);
    match msg.body.page() {
        Some(page) => assert!(
            is_coherent_page(page),
            "coherence message on page {page:#x}"
        ),
        None => assert!(msg.body.kind() as u8 >= 0x20),
    }
}

fuzz_target!(|raw: &[u8]| {
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    if let Ok(msg) = decode(raw) {
        check_well_formed(&msg);
        let len = encode(&msg, &mut buf).expect("a decoded message encodes");
        assert_eq!(&buf[..len], raw, "decode accepted a non-canonical encoding");
    }
    // The same bytes, read as the fields of a message to encode.
    let Ok(built) = Built::arbitrary(&mut Unstructured::new(raw)) else {
        return;
    };
    let mut page_data = [0u8; PAGE_BYTES];
    let n = built.bytes.len().min(PAGE_BYTES);
    page_data[..n].copy_from_slice(&built.bytes[..n]);
    let msg = built.message(&page_data);
    if let Ok(len) = encode(&msg, &mut buf) {
        let back = decode(&buf[..len]).expect("an encoded message decodes");
        check_well_formed(&back);
        // Control messages carry no page: the request id is all that may differ.
        assert_eq!(back.body, msg.body);
        assert_eq!(
            (back.vs_id, back.src, back.dst),
            (msg.vs_id, msg.src, msg.dst)
        );
    }
    // A buffer one byte short is refused, never overrun.
    if let Ok(len) = encode(&msg, &mut buf) {
        assert!(encode(&msg, &mut buf[..len - 1]).is_err());
    }
});
