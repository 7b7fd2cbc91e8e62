//! The record carried through the pipe: one Kubernetes Event as received, and its occurrence key.
//!
//! The event's JSON is kept exactly as the source delivered it. Typed deserialization of a whole
//! Event would drop fields this version does not know (and cost time on every event); only the few
//! fields the pipe needs are read out of the raw text, by the one pass in `scan` that also checks it.
//!
//! - [`key`]: the occurrence key, whose encoding is part of the filters' file format;
//! - [`text`]: the shared buffers the records are slices of;
//! - [`view`]: every other member of an Event, for the readers that want them, read in place.

use std::ops::Range;

use serde_json::value::RawValue;
use thiserror::Error;

use crate::scan::{self, EventFields};

mod key;
mod text;
pub mod view;

pub use key::OccurrenceKey;
pub use text::{RawJson, SharedText, with_type_meta};
pub use view::{EventView, LineView, ObjectRef};

use text::FieldText;

/// How the source saw the event. Only additions and modifications can be occurrences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A watch `ADDED`, or an object from a list (bare object, EventList item).
    Added,
    Modified,
    /// TTL expiry: not an occurrence, forwarded only when asked for.
    Deleted,
}

impl Change {
    /// The verb eventrouter writes for this change.
    pub fn eventrouter_verb(self) -> &'static str {
        match self {
            Change::Added => "ADDED",
            Change::Modified => "UPDATED",
            Change::Deleted => "DELETED",
        }
    }
}

/// An event that cannot be keyed: the object is not an Event the pipe can identify.
#[derive(Debug, Error, PartialEq)]
pub enum EventError {
    #[error("not an Event object: {0}")]
    NotAnObject(#[source] scan::ScanError),
    #[error("event has no metadata.name")]
    MissingName,
}

/// One event as received, plus what the pipe derived from it.
///
/// Built without a heap allocation of its own: the raw text is a slice of the buffer it came
/// in, and the namespace and name are places in it.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub change: Change,
    /// The Event object as received (may span lines; sinks compact it).
    pub raw: RawJson,
    namespace: Option<FieldText>,
    name: FieldText,
    /// The occurrence number: `series.count`, else `count` if > 0, else 1.
    pub count: u64,
    pub key: OccurrenceKey,
    /// Where `metadata.resourceVersion`'s text is in `raw`: a watch resumes from the last one.
    resource_version: Option<Range<usize>>,
}

/// A count field as an occurrence number: only positive integers count. Anything else (zero,
/// negative, fractional, null, a string) reads as absent rather than failing the event, because
/// a malformed count must not cost the operator the event itself.
fn positive(n: Option<&str>) -> Option<u64> {
    n.and_then(|n| n.parse::<u64>().ok()).filter(|&c| c > 0)
}

impl EventRecord {
    /// Builds the record from an Event object's raw JSON, copying it.
    pub fn from_raw(change: Change, raw: &RawValue) -> Result<Self, EventError> {
        Self::from_json(change, raw.get())
    }

    /// Builds the record from an Event object's JSON text, copying it, and checking it in the
    /// same pass that reads the key's fields.
    pub fn from_json(change: Change, text: &str) -> Result<Self, EventError> {
        let start = text.len() - text.trim_start().len();
        let end = text.trim_end().len();
        Self::scanned(change, &SharedText::from(&text[start..end]))
    }

    /// Builds the record from an Event object's JSON text that is part of `src` (a replay value
    /// inside the chunk it was read in), sharing `src`'s buffer. Text that is not part of `src`
    /// is copied.
    pub fn from_json_in(change: Change, src: &SharedText, text: &str) -> Result<Self, EventError> {
        let text = text.trim();
        match src.offset_of(text) {
            Some(at) => Self::scanned(change, &src.slice(at..at + text.len())),
            None => Self::from_json(change, text),
        }
    }

    fn scanned(change: Change, object: &SharedText) -> Result<Self, EventError> {
        let text = object.as_str();
        let fields = scan::event(text).map_err(EventError::NotAnObject)?;
        Self::from_scanned(change, object, 0..text.len(), &fields)
    }

    /// Builds the record from an object the scanner already read inside `src` (a list page or
    /// a watch line), as a slice of it.
    pub fn from_scanned(
        change: Change,
        src: &SharedText,
        span: Range<usize>,
        fields: &EventFields,
    ) -> Result<Self, EventError> {
        let text = src.as_str();
        let base = span.start;
        let name = match &fields.name {
            Some(t) => FieldText::new(t, text, base),
            None => return Err(EventError::MissingName),
        };
        if name.is_empty() {
            return Err(EventError::MissingName);
        }
        let namespace = fields
            .namespace
            .as_ref()
            .map(|t| FieldText::new(t, text, base));
        // New-style events (events.k8s.io recorders) leave `count` unset and report repeats in
        // `series.count`, which jumps when the recorder flushes; it wins whenever it is set.
        let number = |r: &Option<Range<usize>>| r.as_ref().map(|r| &text[r.clone()]);
        let count = positive(number(&fields.series_count))
            .or_else(|| positive(number(&fields.count)))
            .unwrap_or(1);
        let resource_version = fields
            .resource_version
            .as_ref()
            .map(|t| t.range.start - base..t.range.end - base);
        let mut record = EventRecord {
            change,
            raw: RawJson(src.slice(span)),
            namespace,
            name,
            count,
            key: OccurrenceKey(0),
            resource_version,
        };
        record.key = OccurrenceKey::new(record.namespace(), record.name(), count);
        Ok(record)
    }

    /// `metadata.namespace`, empty when the object has none.
    pub fn namespace(&self) -> &str {
        self.namespace.as_ref().map_or("", |n| n.get(&self.raw))
    }

    /// `metadata.name`, never empty.
    pub fn name(&self) -> &str {
        self.name.get(&self.raw)
    }

    /// The same record with its raw text in a buffer of its own; see [`RawJson`].
    pub fn detached(mut self) -> Self {
        self.raw = self.raw.detached();
        self
    }

    /// Whether this record is an occurrence at all (deletions are TTL expiry, not news).
    pub fn is_occurrence(&self) -> bool {
        self.change != Change::Deleted
    }

    /// The object's `metadata.resourceVersion`, as written (versions never hold escapes).
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version
            .as_ref()
            .map(|r| &self.raw.get()[r.clone()])
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(change: Change, json: &str) -> EventRecord {
        let raw = RawValue::from_string(json.to_string()).unwrap();
        EventRecord::from_raw(change, &raw).unwrap()
    }

    fn old_style(ns: &str, name: &str, count: u64) -> String {
        format!(
            r#"{{"kind":"Event","metadata":{{"name":"{name}","namespace":"{ns}"}},"count":{count},"reason":"BackOff","firstTimestamp":"2020-02-20T08:39:04Z"}}"#
        )
    }

    #[test]
    fn old_style_events_are_keyed_by_their_count() {
        let keys: Vec<_> = (1..=3)
            .map(|c| rec(Change::Modified, &old_style("default", "pod.1", c)))
            .collect();
        assert_eq!(keys.iter().map(|r| r.count).collect::<Vec<_>>(), [1, 2, 3]);
        assert_ne!(keys[0].key, keys[1].key);
        assert_ne!(keys[1].key, keys[2].key);
        assert_eq!(keys[0].key, OccurrenceKey::new("default", "pod.1", 1));
    }

    #[test]
    fn new_style_events_use_series_count_and_default_to_one() {
        let first = rec(
            Change::Added,
            r#"{"metadata":{"name":"s.1","namespace":"kube-system"},"eventTime":"2020-02-20T08:39:03.935951Z","reportingComponent":"default-scheduler"}"#,
        );
        assert_eq!(first.count, 1);
        let second = rec(
            Change::Modified,
            r#"{"metadata":{"name":"s.1","namespace":"kube-system"},"eventTime":"2020-02-20T08:39:03.935951Z","series":{"count":2,"lastObservedTime":"2020-02-20T08:40:03Z"}}"#,
        );
        assert_eq!(second.count, 2);
        // After a recorder flush the series jumps; the jump is one new occurrence.
        let jumped = rec(
            Change::Modified,
            r#"{"metadata":{"name":"s.1","namespace":"kube-system"},"count":0,"series":{"count":17}}"#,
        );
        assert_eq!(jumped.count, 17);
        assert_ne!(first.key, second.key);
        assert_ne!(second.key, jumped.key);
    }

    #[test]
    fn series_count_wins_over_count() {
        let r = rec(
            Change::Modified,
            r#"{"metadata":{"name":"a","namespace":"b"},"count":4,"series":{"count":9}}"#,
        );
        assert_eq!(r.count, 9);
    }

    #[test]
    fn a_modified_event_with_unchanged_count_has_the_same_key() {
        let added = rec(Change::Added, &old_style("default", "pod.1", 5));
        let touched = rec(
            Change::Modified,
            r#"{"kind":"Event","metadata":{"name":"pod.1","namespace":"default","resourceVersion":"999"},"count":5,"reason":"BackOff","lastTimestamp":"2020-02-20T09:00:00Z"}"#,
        );
        assert_eq!(added.key, touched.key);
    }

    #[test]
    fn the_same_name_in_two_namespaces_is_two_occurrences() {
        let a = rec(Change::Added, &old_style("team-a", "web.1", 1));
        let b = rec(Change::Added, &old_style("team-b", "web.1", 1));
        assert_ne!(a.key, b.key);
    }

    #[test]
    fn negative_zero_or_fractional_counts_mean_one() {
        for c in ["0", "-3", "2.5", "null", "\"7\""] {
            let r = rec(
                Change::Added,
                &format!(r#"{{"metadata":{{"name":"n","namespace":"d"}},"count":{c}}}"#),
            );
            assert_eq!(r.count, 1, "count {c}");
        }
    }

    #[test]
    fn objects_without_a_name_are_rejected() {
        for bad in [
            r#"{"metadata":{"namespace":"d"}}"#,
            r#"{"metadata":{"name":""}}"#,
            r#"{"kind":"Event"}"#,
        ] {
            let raw = RawValue::from_string(bad.to_string()).unwrap();
            assert_eq!(
                EventRecord::from_raw(Change::Added, &raw).unwrap_err(),
                EventError::MissingName
            );
        }
        let raw = RawValue::from_string("[1,2]".to_string()).unwrap();
        assert!(matches!(
            EventRecord::from_raw(Change::Added, &raw),
            Err(EventError::NotAnObject(_))
        ));
    }

    #[test]
    fn names_are_read_in_place_and_escaped_ones_decoded() {
        let r = rec(
            Change::Added,
            r#"{"metadata":{"name":"web\u002d1","namespace":"shop"},"count":2}"#,
        );
        assert_eq!((r.namespace(), r.name()), ("shop", "web-1"));
        assert_eq!(r.key, OccurrenceKey::new("shop", "web-1", 2));
        let r = rec(Change::Added, r#"{"metadata":{"name":"n"}}"#);
        assert_eq!((r.namespace(), r.name()), ("", "n"));
    }

    #[test]
    fn records_share_the_text_they_were_read_from() {
        let src = SharedText::from(
            "{\"a\":1}\n  {\"metadata\":{\"name\":\"p\",\"namespace\":\"d\",\"resourceVersion\":\"7\"}}\n"
                .to_string(),
        );
        let object = &src.as_str()[10..];
        let r = EventRecord::from_json_in(Change::Added, &src, object).unwrap();
        assert_eq!(r.raw.get(), object.trim());
        assert_eq!(r.raw.get().as_ptr(), object.trim().as_ptr());
        assert_eq!(
            (r.namespace(), r.name(), r.resource_version()),
            ("d", "p", Some("7"))
        );
        // Text from elsewhere is copied.
        let other = "{\"metadata\":{\"name\":\"q\"}}".to_string();
        let r = EventRecord::from_json_in(Change::Added, &src, &other).unwrap();
        assert_eq!(r.name(), "q");
        // A detached copy reads the same.
        let d = r.clone().detached();
        assert_eq!((d.raw.get(), d.name(), d.key), (r.raw.get(), "q", r.key));
    }

    #[test]
    fn list_items_are_moved_into_one_buffer_with_their_type_fields() {
        let page = concat!(
            r#"{"items":[{"metadata":{"name":"a","namespace":"n","resourceVersion":"3"},"series":{"count":4},"count":2},"#,
            r#"{"kind":"Event","metadata":{"name":"b\u0062"}},{}]}"#
        );
        let mut list = scan::list(page).unwrap();
        let items = with_type_meta(page, &mut list.items);
        let records: Vec<_> = list
            .items
            .iter()
            .map(|(span, f)| EventRecord::from_scanned(Change::Added, &items, span.clone(), f))
            .collect();
        let a = records[0].as_ref().unwrap();
        assert_eq!(
            a.raw.get(),
            r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"a","namespace":"n","resourceVersion":"3"},"series":{"count":4},"count":2}"#
        );
        assert_eq!((a.namespace(), a.name(), a.count), ("n", "a", 4));
        assert_eq!(a.resource_version(), Some("3"));
        let b = records[1].as_ref().unwrap();
        assert_eq!(
            b.raw.get(),
            r#"{"kind":"Event","metadata":{"name":"b\u0062"}}"#
        );
        assert_eq!(b.name(), "bb");
        assert_eq!(records[2].as_ref().unwrap_err(), &EventError::MissingName);
        assert_eq!(
            items.as_str(),
            concat!(
                r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"a","namespace":"n","resourceVersion":"3"},"series":{"count":4},"count":2}"#,
                r#"{"kind":"Event","metadata":{"name":"b\u0062"}}"#,
                r#"{"kind":"Event","apiVersion":"v1"}"#
            )
        );
    }

    #[test]
    fn fixture_mixes_both_styles() {
        let text = include_str!("../../tests/fixtures/minikube-eventlist.json");
        let list: serde_json::Value = serde_json::from_str(text).unwrap();
        let items = list["items"].as_array().unwrap();
        let mut new_style = 0;
        for item in items {
            let raw = RawValue::from_string(item.to_string()).unwrap();
            let r = EventRecord::from_raw(Change::Added, &raw).unwrap();
            if item.get("count").is_none() {
                new_style += 1;
                assert_eq!(r.count, 1);
            } else {
                assert_eq!(r.count, item["count"].as_u64().unwrap().max(1));
            }
        }
        assert!(new_style > 0 && new_style < items.len());
    }
}
