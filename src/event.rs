//! The record carried through the pipe: one Kubernetes Event as received, and its occurrence key.
//!
//! The event's JSON is kept exactly as the source delivered it. Typed deserialization of a whole
//! Event would drop fields this version does not know (and cost time on every event); only the few
//! fields the pipe needs are read out of the raw text, by the one pass in `scan` that also checks it.

use std::fmt;

use std::ops::Range;

use serde_json::value::RawValue;
use thiserror::Error;
use xxhash_rust::xxh3::xxh3_128;

use crate::scan::{self, EventFields};

/// One occurrence of an event: `namespace/name/count`, hashed with xxh3-128.
///
/// The hash is persisted (its halves index the on-disk filters), so its input encoding is part
/// of the file format: the namespace's length (u64 little-endian) and bytes, the name's length
/// and bytes, then the count as u64 little-endian, hashed with xxh3-128 and seed 0. Length
/// prefixes keep `a`+`b/c` apart from `a/b`+`c` whatever bytes the names hold. Changing any of
/// that makes every existing filter forget what it delivered.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OccurrenceKey(pub u128);

impl OccurrenceKey {
    pub fn new(namespace: &str, name: &str, count: u64) -> Self {
        // One-shot hashing over a stack buffer: the streaming hasher's setup costs more than
        // hashing a typical 60-byte key. Names are at most 253 bytes, so this is the usual path.
        let len = 8 + namespace.len() + 8 + name.len() + 8;
        let mut stack = [0u8; 576];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap
        };
        let mut at = 0;
        for part in [namespace.as_bytes(), name.as_bytes()] {
            buf[at..at + 8].copy_from_slice(&(part.len() as u64).to_le_bytes());
            at += 8;
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        buf[at..at + 8].copy_from_slice(&count.to_le_bytes());
        OccurrenceKey(xxh3_128(buf))
    }

    /// The two 64-bit halves that drive double hashing in the filter.
    #[inline]
    pub fn halves(self) -> (u64, u64) {
        ((self.0 >> 64) as u64, self.0 as u64)
    }
}

impl fmt::Debug for OccurrenceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OccurrenceKey({:032x})", self.0)
    }
}

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
    NotAnObject(String),
    #[error("event has no metadata.name")]
    MissingName,
}

/// An Event object's JSON text, exactly as received (or with the `kind` and `apiVersion` a list
/// item lacks put back), checked to be valid JSON by the scanner that read its fields.
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(Box<str>);

impl RawJson {
    pub fn get(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One event as received, plus what the pipe derived from it.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub change: Change,
    /// The Event object as received (may span lines; sinks compact it).
    pub raw: RawJson,
    pub namespace: String,
    pub name: String,
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

/// The start of a list item's object once its type fields are put back.
const TYPE_META: &str = "{\"kind\":\"Event\",\"apiVersion\":\"v1\"";

impl EventRecord {
    /// Builds the record from an Event object's raw JSON.
    pub fn from_raw(change: Change, raw: &RawValue) -> Result<Self, EventError> {
        Self::from_json(change, raw.get())
    }

    /// Builds the record from an Event object's JSON text, checking it in the same pass that
    /// reads the key's fields.
    pub fn from_json(change: Change, text: &str) -> Result<Self, EventError> {
        let fields = scan::event(text).map_err(|e| EventError::NotAnObject(e.to_string()))?;
        let start = text.len() - text.trim_start().len();
        let end = text.trim_end().len();
        Self::from_scanned(change, text, start..end, &fields, false)
    }

    /// Builds the record from an object the scanner already read inside `src` (a list page or
    /// a watch line), copying its text once. List items lack `kind` and `apiVersion` (the list
    /// carries them) while watch objects have them; lines of both must look the same to whoever
    /// reads them, so `add_type_meta` puts the two fields back, first, as a watch writes them.
    pub fn from_scanned(
        change: Change,
        src: &str,
        span: Range<usize>,
        fields: &EventFields,
        add_type_meta: bool,
    ) -> Result<Self, EventError> {
        let name = match fields.name.as_ref().map(|t| t.value(src)) {
            Some(n) if !n.is_empty() => n.into_owned(),
            _ => return Err(EventError::MissingName),
        };
        let namespace = fields
            .namespace
            .as_ref()
            .map(|t| t.value(src).into_owned())
            .unwrap_or_default();
        // New-style events (events.k8s.io recorders) leave `count` unset and report repeats in
        // `series.count`, which jumps when the recorder flushes; it wins whenever it is set.
        let number = |r: &Option<Range<usize>>| r.as_ref().map(|r| &src[r.clone()]);
        let count = positive(number(&fields.series_count))
            .or_else(|| positive(number(&fields.count)))
            .unwrap_or(1);
        let key = OccurrenceKey::new(&namespace, &name, count);
        let object = &src[span.clone()];
        let (raw, moved) = if add_type_meta && !fields.has_type_meta && object.starts_with('{') {
            // Only objects without either field come from lists; one with just one of them is
            // left alone rather than given a duplicate key.
            let rest = &object[1..];
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            let mut text = String::with_capacity(object.len() + TYPE_META.len() + 1);
            text.push_str(TYPE_META);
            text.push_str(sep);
            text.push_str(rest);
            (text.into_boxed_str(), TYPE_META.len() + sep.len() - 1)
        } else {
            (Box::from(object), 0)
        };
        let resource_version = fields
            .resource_version
            .as_ref()
            .map(|t| t.range.start - span.start + moved..t.range.end - span.start + moved);
        Ok(EventRecord {
            change,
            raw: RawJson(raw),
            namespace,
            name,
            count,
            key,
            resource_version,
        })
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
    fn the_key_encoding_is_stable() {
        // Persisted in every filter file: this value must never change.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&7u64.to_le_bytes());
        bytes.extend_from_slice(b"default");
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(b"pod.1");
        bytes.extend_from_slice(&3u64.to_le_bytes());
        assert_eq!(
            OccurrenceKey::new("default", "pod.1", 3).0,
            xxh3_128(&bytes)
        );
        let long = "n".repeat(1000);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1000u64.to_le_bytes());
        bytes.extend_from_slice(long.as_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        assert_eq!(OccurrenceKey::new("", &long, 1).0, xxh3_128(&bytes));
    }

    #[test]
    fn key_encoding_separates_fields() {
        // "a" + "b/c" must not collide with "a/b" + "c".
        assert_ne!(
            OccurrenceKey::new("a", "b\0c", 1),
            OccurrenceKey::new("a\0b", "c", 1)
        );
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
    fn fixture_mixes_both_styles() {
        let text = include_str!("../tests/fixtures/minikube-eventlist.json");
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
