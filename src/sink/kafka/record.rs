//! What one line becomes in Kafka: its key and headers, read from the line itself.
//!
//! Pure code over bytes: the key is the involved object (`namespace/kind/name`), so one
//! object's events land on one partition, in order; the headers carry the event type and
//! reason (and the cluster name, from the configuration) so that consumers can route without
//! parsing the value.

use std::borrow::Cow;

use crate::event::LineView;

/// A record's key and headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// `namespace/kind/name` of the involved object; the namespace is empty for cluster-scoped
    /// objects (`/Node/worker-1`). `None` when the event names no object: the record then goes
    /// to a partition of the producer's choosing.
    pub key: Option<String>,
    /// `Normal`, `Warning`…
    pub event_type: Option<String>,
    pub reason: Option<String>,
}

/// Reads a line's key and headers: raw lines are the Event, eventrouter lines wrap it in
/// `event`. A line that is not the JSON the pipe writes (which cannot happen: the scanner
/// validated it) yields an empty `RecordMeta`, never an error: the record is still delivered,
/// only without a key.
pub fn meta(line: &[u8]) -> RecordMeta {
    let Some(line) = LineView::parse_bytes(line) else {
        return RecordMeta::default();
    };
    let event = line.event();
    let key = event.involved_object().and_then(|o| {
        let kind = o.kind()?;
        let name = o.name()?;
        Some(format!(
            "{}/{kind}/{name}",
            o.namespace().as_deref().unwrap_or("")
        ))
    });
    RecordMeta {
        key,
        event_type: event.event_type().map(Cow::into_owned),
        reason: event.reason().map(Cow::into_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_lines_give_the_involved_object_as_key() {
        let line = br#"{"kind":"Event","metadata":{"name":"p.1","namespace":"default"},"involvedObject":{"kind":"Pod","namespace":"default","name":"web-0","uid":"u"},"reason":"BackOff","type":"Warning","count":3}"#;
        assert_eq!(
            meta(line),
            RecordMeta {
                key: Some("default/Pod/web-0".into()),
                event_type: Some("Warning".into()),
                reason: Some("BackOff".into()),
            }
        );
    }

    #[test]
    fn eventrouter_lines_are_read_inside_the_wrapper() {
        let line = br#"{"verb":"ADDED","event":{"involvedObject":{"kind":"Node","name":"worker-1"},"reason":"Rebooted","type":"Normal"},"cluster":"prod"}"#;
        let m = meta(line);
        assert_eq!(m.key.as_deref(), Some("/Node/worker-1"));
        assert_eq!(m.reason.as_deref(), Some("Rebooted"));
        assert_eq!(m.event_type.as_deref(), Some("Normal"));
    }

    #[test]
    fn escaped_names_are_decoded_and_missing_objects_give_no_key() {
        let m = meta(br#"{"involvedObject":{"kind":"Pod","namespace":"a","name":"x\u0041"},"type":"Normal"}"#);
        assert_eq!(m.key.as_deref(), Some("a/Pod/xA"));
        let m = meta(br#"{"reason":"Started"}"#);
        assert_eq!(m.key, None);
        assert_eq!(m.reason.as_deref(), Some("Started"));
        assert_eq!(meta(b"not json"), RecordMeta::default());
    }
}
