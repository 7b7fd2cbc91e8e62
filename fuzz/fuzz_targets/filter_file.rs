//! Arbitrary bytes as a filter file: parsing must reject or accept, never panic, and an
//! accepted file must answer lookups (a truncated or lying header must not index past the end).
#![no_main]

use kube_event_pipe::dedup::filter::FilterView;
use kube_event_pipe::event::OccurrenceKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = FilterView::parse(data) {
        for count in 0..4 {
            let _ = view.contains(OccurrenceKey::new("default", "pod.1", count));
        }
        let _ = view.fill_ratio();
    }
});
