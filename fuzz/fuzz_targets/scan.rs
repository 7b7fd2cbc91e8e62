//! Arbitrary text through the one-pass scanner: it never panics, accepts exactly what
//! serde_json accepts (within the nesting limit), and an Event it reads has the name serde
//! reads.
#![no_main]

use kube_event_pipe::scan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ours = scan::validate(text);
    let theirs = serde_json::from_str::<serde::de::IgnoredAny>(text);
    match (&ours, &theirs) {
        (Ok(()), Err(e)) => panic!("scanner accepted what serde_json refuses: {e}"),
        (Err(e), Ok(_)) if e.what != "JSON nested too deeply" => {
            panic!("scanner refused what serde_json accepts: {e}")
        }
        _ => {}
    }
    if let Ok(fields) = scan::event(text) {
        let value: serde_json::Value = serde_json::from_str(text).expect("accepted above");
        let name = fields.name.map(|n| n.value(text).into_owned());
        // Duplicate `metadata` keys (serde keeps the last) and keys spelled with `\u` escapes
        // (the scanner matches keys as written) are outside what the comparison can say.
        if text.matches("\"metadata\"").count() == 1 && !text.contains("\\u") {
            assert_eq!(name.as_deref(), value["metadata"]["name"].as_str());
        }
    }
    let _ = scan::envelope(text);
    let _ = scan::list(text);
});
