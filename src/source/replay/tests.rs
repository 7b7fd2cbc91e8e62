//! Replay decoding tests over in-memory input (built only under #[cfg(test)]).

use std::io::BufReader;

use super::*;

fn replay(text: &str) -> (Vec<EventRecord>, ReplayStats) {
    let stats = ReplayStats::default();
    let mut out = Vec::new();
    let collect = |batch: SourceBatch| {
        out.extend(batch);
        Ok(())
    };
    let result = read_all(BufReader::new(text.as_bytes()), collect, &stats);
    assert!(result.is_ok());
    (out, stats)
}

fn ev(name: &str, count: u64) -> String {
    format!(
        r#"{{"kind":"Event","metadata":{{"name":"{name}","namespace":"default"}},"count":{count}}}"#
    )
}

#[test]
fn reads_envelopes_bare_events_and_lists() {
    let text = format!(
        "{{\"type\":\"ADDED\",\"object\":{}}}\n{{\"type\":\"MODIFIED\",\"object\":{}}}\n{}\n{{\"kind\":\"EventList\",\"items\":[{},{}]}}\n",
        ev("a", 1),
        ev("a", 2),
        ev("b", 1),
        ev("c", 1),
        ev("d", 1)
    );
    let (records, stats) = replay(&text);
    let got: Vec<_> = records
        .iter()
        .map(|r| (r.name(), r.count, r.change))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a", 1, Change::Added),
            ("a", 2, Change::Modified),
            ("b", 1, Change::Added),
            ("c", 1, Change::Added),
            ("d", 1, Change::Added)
        ]
    );
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 0);
    assert_eq!(stats.events.load(Ordering::Relaxed), 5);
}

#[test]
fn bare_events_with_their_own_type_are_events_not_envelopes() {
    // Every Event carries `type: Normal|Warning`; only an object or a watch type without
    // metadata makes a value an envelope.
    let text = concat!(
        r#"{"kind":"Event","type":"Warning","metadata":{"name":"w","namespace":"d"},"count":2}"#,
        "\n",
        r#"{"type":"Normal","metadata":{"name":"n","namespace":"d"}}"#,
        "\n",
        r#"{"type":"ADDED"}"#,
        "\n",
    );
    let (records, stats) = replay(text);
    let got: Vec<_> = records.iter().map(|r| (r.name(), r.count)).collect();
    assert_eq!(got, vec![("w", 2), ("n", 1)]);
    // The envelope without an object is still reported as one.
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 1);
}

#[test]
fn bookmarks_are_skipped_and_deletions_are_marked() {
    let text = format!(
        "{{\"type\":\"BOOKMARK\",\"object\":{{\"metadata\":{{\"resourceVersion\":\"9\"}}}}}}\n{{\"type\":\"DELETED\",\"object\":{}}}\n",
        ev("gone", 3)
    );
    let (records, stats) = replay(&text);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].change, Change::Deleted);
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 0);
}

#[test]
fn the_sample_fixture_reads_as_one_event_list() {
    let text = include_str!("../../../tests/fixtures/minikube-eventlist.json");
    let (records, stats) = replay(text);
    assert_eq!(records.len(), 20);
    assert_eq!(stats.values.load(Ordering::Relaxed), 1);
    // The raw object survives untouched: a field the pipe never reads is still there.
    assert!(records[0].raw.get().contains("\"reportingInstance\""));
}

#[test]
fn malformed_values_are_skipped_and_the_stream_flows_on() {
    let text = format!(
        "{}\n{{\"type\":\"ADDED\",\"object\":{{\"metadata\":\n{}\nnot json\n{{\"type\":\"ADDED\",\"object\":{{\"metadata\":{{}}}}}}\n{{\"type\":\"SYNC\",\"object\":{{}}}}\n[1,2]\n{}\n",
        ev("a", 1),
        ev("b", 1),
        ev("c", 1)
    );
    let (records, stats) = replay(&text);
    let names: Vec<_> = records.iter().map(|r| r.name()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 5);
}

#[test]
fn kubectl_watch_output_spans_lines() {
    let pretty = format!(
        "{{\n    \"type\": \"ADDED\",\n    \"object\": {{\n        \"metadata\": {{\n            \"name\": \"x\",\n            \"namespace\": \"kube-system\"\n        }},\n        \"message\": \"a\\nb\"\n    }}\n}}\n{}\n",
        ev("y", 4)
    );
    let (records, _) = replay(&pretty);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].namespace(), "kube-system");
    assert_eq!(records[1].count, 4);
}

#[test]
fn serde_reasons_drop_the_chunk_relative_line() {
    let err = serde_json::from_str::<serde_json::Value>("{\"a\":").unwrap_err();
    assert_eq!(
        SerdeReason(&err).to_string(),
        "EOF while parsing a value (column 5)"
    );
}

#[test]
fn decode_all_reads_a_whole_input_like_the_thread_does() {
    let list = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minikube-eventlist.json"
    ))
    .unwrap();
    let (records, malformed) = super::decode_all(&list);
    assert_eq!((records.len(), malformed), (20, 0));
    let mut bad = list.clone();
    bad.extend_from_slice(b"\n{\"type\":\"ADDED\"}\n{oops\n");
    let (records, malformed) = super::decode_all(&bad);
    assert_eq!((records.len(), malformed), (20, 2));
}

#[test]
fn a_byte_order_mark_before_the_first_value_is_skipped() {
    let text = format!("\u{feff}{}\n{}\n", ev("a", 1), ev("b", 1));
    let (records, stats) = replay(&text);
    let got: Vec<_> = records.iter().map(|r| r.name()).collect();
    assert_eq!(got, vec!["a", "b"]);
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 0);
}

#[test]
fn an_object_with_a_repeated_member_is_reported_as_such() {
    let reasons = classify_reason(r#"{"type":"ADDED","type":"MODIFIED","object":{}}"#);
    assert_eq!(
        reasons,
        r#"the object has the member "type" more than once; each member name may appear once in a JSON object"#
    );
    let reasons = classify_reason(r#"{"type":"ADDED","object":5,"metadata":{},"metadata":{}}"#);
    assert!(
        reasons.contains(r#"member "metadata" more than once"#),
        "{reasons}"
    );
    assert_eq!(
        classify_reason("[1, 2]"),
        "expected a JSON object: a watch envelope, an Event or an EventList"
    );
}

fn classify_reason(text: &str) -> String {
    let value: &RawValue = serde_json::from_str(text).unwrap();
    match classify(value, None) {
        Err(reason) => reason.to_string(),
        Ok(_) => panic!("{text} was accepted"),
    }
}
