//! Any 32 bytes as a submission (what the firmware reads from the host) and as a completion
//! (what the host reads from the NIC): the decoders return a result, never panic, and what
//! they accept re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio::layout::{CompletionEntry, SubmissionDescriptor};
use vfio::ring::{Completion, Submission};

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = data.get(..32) else {
        return;
    };
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
});
