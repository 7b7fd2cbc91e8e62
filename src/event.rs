//! The record carried through the pipe: one Kubernetes Event as received, and its occurrence key.
//!
//! The event's JSON is kept exactly as the source delivered it. Typed deserialization of a whole
//! Event would drop fields this version does not know (and cost time on every event); only the few
//! fields the pipe needs are read out of the raw text, by the one pass in `scan` that also checks it.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
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

/// Text received in one piece (a list page, a watch line, a replay value), checked once to be
/// UTF-8, that the records read from it share instead of each copying its part.
///
/// Cloning or slicing it takes a reference count, not a copy: the records of a page or of a
/// watch read are slices of the buffer the bytes arrived in, with no allocation of their own.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedText(Bytes);

impl SharedText {
    pub fn new(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(SharedText(bytes))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: checked in `new` (or built from a `str`), and only ever sliced at char
        // boundaries (`slice` checks them).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The text at `range`, sharing this buffer. Panics if the range does not fall on char
    /// boundaries, as slicing a `str` would.
    fn slice(&self, range: Range<usize>) -> SharedText {
        let text = self.as_str();
        assert!(text.is_char_boundary(range.start) && text.is_char_boundary(range.end));
        SharedText(self.0.slice(range))
    }

    /// Where `part`, a slice of this text, starts in it; `None` if it is not one.
    fn offset_of(&self, part: &str) -> Option<usize> {
        let at = (part.as_ptr() as usize).checked_sub(self.0.as_ptr() as usize)?;
        (at + part.len() <= self.0.len()).then_some(at)
    }
}

impl From<String> for SharedText {
    fn from(text: String) -> Self {
        SharedText(Bytes::from(text.into_bytes()))
    }
}

impl From<&str> for SharedText {
    fn from(text: &str) -> Self {
        SharedText(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl fmt::Debug for SharedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An Event object's JSON text, exactly as received (or with the `kind` and `apiVersion` a list
/// item lacks put back), checked to be valid JSON by the scanner that read its fields.
///
/// It shares the buffer it was read from: whoever keeps one for long (the prior versions for
/// `old_event`, a standby's held events) takes a [`RawJson::detached`] copy, so that one small
/// event does not keep a whole list page in memory.
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(SharedText);

impl RawJson {
    pub fn get(&self) -> &str {
        self.0.as_str()
    }

    /// The same text in a buffer of its own.
    pub fn detached(&self) -> RawJson {
        RawJson(SharedText::from(self.get()))
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

/// Where a string field's value is: in the record's raw text, or, in the rare case that the
/// JSON spells it with escapes, decoded on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FieldText {
    At(Range<usize>),
    Decoded(Box<str>),
}

impl FieldText {
    /// The field from the scanner's `text` inside `src`, relative to `base` (where the record's
    /// raw text starts in `src`).
    fn new(text: &scan::Text, src: &str, base: usize) -> Self {
        match text.value(src) {
            Cow::Borrowed(_) => FieldText::At(text.range.start - base..text.range.end - base),
            Cow::Owned(decoded) => FieldText::Decoded(decoded.into_boxed_str()),
        }
    }

    fn get<'a>(&'a self, raw: &'a RawJson) -> &'a str {
        match self {
            FieldText::At(r) => &raw.get()[r.clone()],
            FieldText::Decoded(s) => s,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            FieldText::At(r) => r.is_empty(),
            FieldText::Decoded(s) => s.is_empty(),
        }
    }
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

/// The start of a list item's object once its type fields are put back.
const TYPE_META: &str = "{\"kind\":\"Event\",\"apiVersion\":\"v1\"";

/// Puts back the `kind` and `apiVersion` that the items of a list page lack (the list carries
/// them) and watch objects have, so that lines of both look the same to whoever reads them.
///
/// The items are written one after another into one new buffer for the page, with the two
/// fields first, as a watch writes them; `items`' spans and fields are moved to point into it.
/// One copy and one allocation per page, where a copy per item would cost an allocation each.
/// An item with either field of its own is copied as it is rather than given a duplicate key.
pub fn with_type_meta(page: &str, items: &mut [(Range<usize>, EventFields)]) -> SharedText {
    let room: usize = items
        .iter()
        .map(|(span, _)| span.len() + TYPE_META.len() + 1)
        .sum();
    let mut out = String::with_capacity(room);
    for (span, fields) in items.iter_mut() {
        let object = &page[span.clone()];
        let start = out.len();
        let moved_from = if !fields.has_type_meta && object.starts_with('{') {
            let rest = &object[1..];
            out.push_str(TYPE_META);
            if !rest.trim_start().starts_with('}') {
                out.push(',');
            }
            out.push_str(rest);
            // Where the object's byte 1 (just past its `{`) went.
            span.start + 1
        } else {
            out.push_str(object);
            span.start
        };
        let moved_to = out.len() - (span.end - moved_from);
        fields.rebase(moved_from, moved_to);
        *span = start..out.len();
    }
    SharedText::from(out)
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
        let fields = scan::event(text).map_err(|e| EventError::NotAnObject(e.to_string()))?;
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
