//! Arbitrary bytes as replay input: every value is an event or a counted, reported malformed
//! value; nothing panics.
#![no_main]

use kube_event_pipe::source::replay::decode_all;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (records, _malformed) = decode_all(data);
    for record in &records {
        assert!(!record.name().is_empty());
    }
});
