//! Any bytes into the wire decoder: it must return a result, never panic, and what it
//! accepts must re-encode to the same bytes (tag bytes aside, which encode zeroes).
#![no_main]

use dpdk_transport::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = wire::decode(data) {
        let again = wire::encode_to_vec(&packet.header, packet.payload).expect("re-encode");
        assert_eq!(&again[..packet.authenticated.len()], packet.authenticated);
        assert_eq!(again.len(), data.len());
    }
});
