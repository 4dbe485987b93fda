//! The transport's packet format (`dpdk_transport::wire`) and what rides in it.
//! Supersedes `dpdk-transport/fuzz` (`decode`): the same property, plus authentication and
//! the payload.
//!
//! Properties: `decode` never panics; what it accepts re-encodes to the same bytes (tag
//! bytes aside, which `encode` zeroes for the signer) with the claimed lengths; the
//! HMAC authenticator accepts the packet's tag exactly when it equals the tag it would
//! sign (a forged or truncated tag never verifies); the payload goes through
//! `vima::wire::decode` without panicking, canonical when accepted.
#![no_main]

use dpdk_transport::wire::{self, PacketKind, HEADER_LEN};
use dpdk_transport::{Authenticator, HmacSha256Auth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = wire::decode(data) else {
        return;
    };
    let header = packet.header;
    assert_eq!(packet.payload.len(), usize::from(header.payload_len));
    assert_eq!(packet.tag.len(), usize::from(header.tag_len));
    assert_eq!(
        HEADER_LEN + packet.payload.len() + packet.tag.len(),
        data.len()
    );
    if header.kind != PacketKind::Data {
        assert!(packet.payload.is_empty());
    }
    let again = wire::encode_to_vec(&header, packet.payload).expect("re-encode");
    assert_eq!(&again[..packet.authenticated.len()], packet.authenticated);
    assert_eq!(again.len(), data.len());

    let auth = HmacSha256Auth::with_raw_key(b"fuzzing key");
    let mut signed = [0u8; HmacSha256Auth::TAG_LEN];
    auth.sign(packet.authenticated, &mut signed);
    assert_eq!(
        auth.verify(packet.authenticated, packet.tag),
        packet.tag == signed,
        "verify must accept exactly the signed tag"
    );

    if let Ok(msg) = vima::wire::decode(packet.payload) {
        let mut buf = vec![0u8; vima::wire::MAX_MESSAGE_BYTES];
        let len = vima::wire::encode(&msg, &mut buf).expect("a decoded message encodes");
        assert_eq!(&buf[..len], packet.payload);
    }
});
