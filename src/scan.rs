//! One validating pass over an Event's JSON that also finds the few fields the pipe needs.
//!
//! Every event is read at least once to find where it ends and once more to find its
//! namespace, name and count; with a general-purpose parser those are two passes over about a
//! kilobyte of text, most of it `managedFields` and messages the pipe never looks at. This
//! scanner does both in one pass: it checks the JSON grammar (so nothing invalid reaches a
//! sink) while jumping over string contents with `memchr`, and it records where the wanted
//! fields are instead of copying them.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

mod view;

pub use view::{LineFields, ObjectRefFields, SourceFields, ViewFields, event_view, line};

/// Why a text is not the JSON the pipe expected, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub at: usize,
    pub what: &'static str,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for ScanError {}

/// Nesting deeper than this is refused rather than recursed into (serde_json's own limit when
/// it builds values; Events nest about ten levels). Events inside envelopes and lists count
/// from their own start.
const MAX_DEPTH: usize = 128;

/// A JSON string's contents (between the quotes) inside the scanned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub range: Range<usize>,
    /// Whether it holds escapes, so its value needs decoding; names almost never do.
    pub escaped: bool,
}

impl Text {
    /// The string's value. Borrowed unless it holds escapes.
    pub fn value<'a>(&self, src: &'a str) -> Cow<'a, str> {
        let raw = &src[self.range.clone()];
        if !self.escaped {
            return Cow::Borrowed(raw);
        }
        // The scanner checked the escapes' syntax; only a lone surrogate (`\ud800`) fails to
        // decode, and then the text stays as written rather than failing the event.
        let quoted = &src[self.range.start - 1..self.range.end + 1];
        Cow::Owned(serde_json::from_str::<String>(quoted).unwrap_or_else(|_| raw.to_string()))
    }
}

/// What the pipe reads from an Event object. Ranges index the scanned text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFields {
    pub name: Option<Text>,
    pub namespace: Option<Text>,
    pub resource_version: Option<Text>,
    /// `count` and `series.count` as written, if they are numbers.
    pub count: Option<Range<usize>>,
    pub series_count: Option<Range<usize>>,
    /// Whether the object carries a `kind` or an `apiVersion` of its own (list items do not).
    pub has_type_meta: bool,
}

impl EventFields {
    /// Moves every range by the distance from `from` to `to`: the object was copied, and the
    /// byte that was at `from` is now at `to`. Every range must start at or after `from`.
    pub fn rebase(&mut self, from: usize, to: usize) {
        let mv = |r: &mut Range<usize>| *r = r.start - from + to..r.end - from + to;
        for t in [
            &mut self.name,
            &mut self.namespace,
            &mut self.resource_version,
        ]
        .into_iter()
        .flatten()
        {
            mv(&mut t.range);
        }
        for r in [&mut self.count, &mut self.series_count]
            .into_iter()
            .flatten()
        {
            mv(r);
        }
    }
}

/// What a list response holds: its version, continue token and items.
#[derive(Debug, Default)]
pub struct ListFields {
    pub resource_version: Option<Text>,
    pub continue_token: Option<Text>,
    /// Each item's span in the text, with its fields.
    pub items: Vec<(Range<usize>, EventFields)>,
}

/// A watch line: its type, and the object's span and fields.
#[derive(Debug)]
pub struct EnvelopeFields {
    pub kind: Option<Text>,
    pub object: Option<(Range<usize>, EventFields)>,
}

/// Scans `text` as one JSON object holding an Event (surrounding whitespace allowed).
pub fn event(text: &str) -> Result<EventFields, ScanError> {
    let mut s = Scanner::new(text);
    s.ws();
    let fields = s.event_object()?;
    s.end()?;
    Ok(fields)
}

/// Scans a watch line `{"type": …, "object": …}`. The object is scanned as an Event only if it
/// is an object; an ERROR's Status object is found the same way and read by the caller.
pub fn envelope(text: &str) -> Result<EnvelopeFields, ScanError> {
    let mut s = Scanner::new(text);
    s.ws();
    let mut out = EnvelopeFields {
        kind: None,
        object: None,
    };
    s.object(0, |s, key| {
        match key {
            b"type" if s.peek() == Some(b'"') => out.kind = Some(s.string()?),
            b"object" if s.peek() == Some(b'{') => {
                let start = s.i;
                let fields = s.event_object()?;
                out.object = Some((start..s.i, fields));
            }
            _ => s.value(1)?,
        }
        Ok(())
    })?;
    s.end()?;
    Ok(out)
}

/// Scans a list response (`EventList`): `metadata.resourceVersion`, `metadata.continue` and
/// each item of `items`.
pub fn list(text: &str) -> Result<ListFields, ScanError> {
    let mut s = Scanner::new(text);
    s.ws();
    let mut out = ListFields::default();
    s.object(0, |s, key| {
        match key {
            b"metadata" if s.peek() == Some(b'{') => s.object(1, |s, key| {
                match key {
                    b"resourceVersion" if s.peek() == Some(b'"') => {
                        out.resource_version = Some(s.string()?)
                    }
                    b"continue" if s.peek() == Some(b'"') => out.continue_token = Some(s.string()?),
                    _ => s.value(2)?,
                }
                Ok(())
            })?,
            b"items" if s.peek() == Some(b'[') => s.array(1, |s| {
                if s.peek() == Some(b'{') {
                    let start = s.i;
                    let fields = s.event_object()?;
                    out.items.push((start..s.i, fields));
                    Ok(())
                } else {
                    Err(s.error("a list item that is not an object"))
                }
            })?,
            _ => s.value(1)?,
        }
        Ok(())
    })?;
    s.end()?;
    Ok(out)
}

/// Checks that `text` is one JSON value, nothing more.
pub fn validate(text: &str) -> Result<(), ScanError> {
    let mut s = Scanner::new(text);
    s.ws();
    s.value(0)?;
    s.end()
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner {
            b: text.as_bytes(),
            i: 0,
        }
    }

    fn error(&self, what: &'static str) -> ScanError {
        ScanError { at: self.i, what }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Whether the next value is a string.
    #[inline]
    fn at_string(&self) -> bool {
        self.peek() == Some(b'"')
    }

    /// Whether the next value is an object.
    #[inline]
    fn at_object(&self) -> bool {
        self.peek() == Some(b'{')
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn end(&mut self) -> Result<(), ScanError> {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(self.error("text after the end of the value"))
        }
    }

    #[inline]
    fn eat(&mut self, c: u8, what: &'static str) -> Result<(), ScanError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// An Event object: the wanted fields are recorded, everything else validated and skipped.
    fn event_object(&mut self) -> Result<EventFields, ScanError> {
        let mut f = EventFields::default();
        let mut kind = false;
        let mut api_version = false;
        self.object(0, |s, key| {
            match key {
                b"metadata" if s.peek() == Some(b'{') => s.object(1, |s, key| {
                    match (key, s.peek()) {
                        (b"name", Some(b'"')) => f.name = Some(s.string()?),
                        (b"namespace", Some(b'"')) => f.namespace = Some(s.string()?),
                        (b"resourceVersion", Some(b'"')) => f.resource_version = Some(s.string()?),
                        _ => s.value(2)?,
                    }
                    Ok(())
                })?,
                b"count" => f.count = s.number_or_skip(1)?,
                b"series" if s.peek() == Some(b'{') => s.object(1, |s, key| {
                    if key == b"count" {
                        f.series_count = s.number_or_skip(2)?;
                    } else {
                        s.value(2)?;
                    }
                    Ok(())
                })?,
                b"kind" => {
                    kind = true;
                    s.value(1)?
                }
                b"apiVersion" => {
                    api_version = true;
                    s.value(1)?
                }
                _ => s.value(1)?,
            }
            Ok(())
        })?;
        f.has_type_meta = kind || api_version;
        Ok(f)
    }

    /// An object; `member` is called with each key, positioned at its value, and must consume
    /// the value. Keys with escapes are passed as written (no wanted key has one).
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &[u8]) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        if depth >= MAX_DEPTH {
            return Err(self.error("JSON nested too deeply"));
        }
        self.eat(b'{', "expected an object")?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            let b = self.b;
            self.ws();
            self.eat(b':', "expected ':' after a key")?;
            self.ws();
            member(self, &b[key.range])?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected ',' or '}' in an object")),
            }
        }
    }

    fn array(
        &mut self,
        depth: usize,
        mut element: impl FnMut(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        if depth >= MAX_DEPTH {
            return Err(self.error("JSON nested too deeply"));
        }
        self.eat(b'[', "expected an array")?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            element(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected ',' or ']' in an array")),
            }
        }
    }

    /// Any value, validated and skipped.
    fn value(&mut self, depth: usize) -> Result<(), ScanError> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => self.object(depth, |s, _| s.value(depth + 1)),
            Some(b'[') => self.array(depth, |s| s.value(depth + 1)),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("unexpected end of the text")),
        }
    }

    /// A number's span, or `None` (after skipping it) for any other value.
    fn number_or_skip(&mut self, depth: usize) -> Result<Option<Range<usize>>, ScanError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number().map(Some),
            _ => self.value(depth).map(|()| None),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.error("invalid literal"))
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<Range<usize>, ScanError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            self.digits();
        }
        Ok(start..self.i)
    }

    #[inline]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    /// A string at `"`: its contents' span. Contents are skipped eight bytes at a time up to
    /// the next quote, backslash or control character; escapes are checked on the way.
    fn string(&mut self) -> Result<Text, ScanError> {
        let start = self.i + 1;
        let mut at = start;
        let mut escaped = false;
        loop {
            let stop = at + special(&self.b[at..]);
            self.i = stop;
            match self.b.get(stop) {
                Some(b'"') => {
                    self.i = stop + 1;
                    return Ok(Text {
                        range: start..stop,
                        escaped,
                    });
                }
                Some(b'\\') => {}
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unterminated string")),
            }
            escaped = true;
            at = match self.b.get(stop + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => stop + 2,
                Some(b'u')
                    if self
                        .b
                        .get(stop + 2..stop + 6)
                        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                {
                    stop + 6
                }
                _ => return Err(self.error("invalid escape in a string")),
            };
        }
    }
}

/// The index of the first quote, backslash or control character in `b` (or its length).
///
/// Eight bytes per step with the classic "has a zero byte" bit tricks: a string's contents
/// are mostly plain text, and most strings are short, where a SIMD search does not pay for its
/// setup. Only the lowest flagged byte is exact (a borrow can flag bytes above it), which is the
/// one wanted.
#[inline]
fn special(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while let Some(chunk) = b.get(at..at + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let found = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w);
        let found = found & HIGH;
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + b[at..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(b.len() - at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::IgnoredAny;

    const EVENT: &str = r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"web-1.17f3","namespace":"shop","resourceVersion":"42","managedFields":[{"manager":"kubelet","fieldsV1":{"f:count":{},"f:source":{"f:host":{}}}}]},"involvedObject":{"kind":"Pod","name":"web-1"},"reason":"BackOff","message":"Back-off \"restarting\" failed container\n\u00e9","count":7,"series":{"count":9,"lastObservedTime":"2026-11-18T11:06:40Z"},"type":"Warning","eventTime":null,"deprecatedCount":-1.5e3,"flags":[true,false,null]}"#;

    fn serde_accepts(text: &str) -> bool {
        serde_json::from_str::<IgnoredAny>(text).is_ok()
    }

    #[test]
    fn finds_the_fields_of_an_event() {
        let f = event(EVENT).unwrap();
        let at = |r: &Range<usize>| &EVENT[r.clone()];
        assert_eq!(f.name.as_ref().unwrap().value(EVENT), "web-1.17f3");
        assert_eq!(f.namespace.as_ref().unwrap().value(EVENT), "shop");
        assert_eq!(f.resource_version.as_ref().unwrap().value(EVENT), "42");
        assert_eq!(at(f.count.as_ref().unwrap()), "7");
        assert_eq!(at(f.series_count.as_ref().unwrap()), "9");
        assert!(f.has_type_meta);
        // The involved object's name and kind are not the event's.
        assert!(
            event(r#"{"involvedObject":{"name":"x"}}"#)
                .unwrap()
                .name
                .is_none()
        );
    }

    #[test]
    fn a_view_reads_every_member_its_readers_take() {
        let f = event_view(EVENT).unwrap();
        let v = |t: &Option<Text>| t.as_ref().map(|t| t.value(EVENT).into_owned());
        assert_eq!(v(&f.name).as_deref(), Some("web-1.17f3"));
        assert_eq!(v(&f.reason).as_deref(), Some("BackOff"));
        assert_eq!(
            v(&f.message).as_deref(),
            Some("Back-off \"restarting\" failed container\n\u{e9}")
        );
        assert_eq!(v(&f.event_type).as_deref(), Some("Warning"));
        // `eventTime` is null: absent, as for serde's `Option`.
        assert_eq!(f.event_time, None);
        let involved = f.involved_object.unwrap();
        assert_eq!(v(&involved.kind).as_deref(), Some("Pod"));
        assert_eq!(involved.namespace, None);
        assert_eq!(&EVENT[f.count.unwrap()], "7");
        // A member of the wrong type reads as absent, and the rest is still read.
        let odd = r#"{"reason":5,"source":"kubelet","type":"Normal"}"#;
        let f = event_view(odd).unwrap();
        assert_eq!((f.reason, f.source), (None, None));
        assert_eq!(f.event_type.unwrap().value(odd), "Normal");
    }

    #[test]
    fn a_line_is_read_inside_eventrouters_wrapper() {
        let raw = format!(
            r#"{{"cluster":"c",{},"enrichment":{{"node":{{"name":"n"}}}}}}"#,
            &EVENT[1..EVENT.len() - 1]
        );
        let l = line(&raw).unwrap();
        assert!(!l.verb && l.wrapped.is_none());
        assert_eq!(l.cluster.unwrap().value(&raw), "c");
        assert_eq!(&raw[l.enrichment.unwrap()], r#"{"node":{"name":"n"}}"#);
        assert_eq!(l.top.reason.unwrap().value(&raw), "BackOff");
        let wrapped = format!(r#"{{"verb":"UPDATED","event":{EVENT},"old_event":{EVENT}}}"#);
        let l = line(&wrapped).unwrap();
        assert!(l.verb);
        assert_eq!(l.top.reason, None);
        assert_eq!(
            l.wrapped.unwrap().reason.unwrap().value(&wrapped),
            "BackOff"
        );
    }

    #[test]
    fn escaped_names_are_decoded() {
        let text = r#"{"metadata":{"name":"a\u002db\"c"}}"#;
        let f = event(text).unwrap();
        let name = f.name.unwrap();
        assert!(name.escaped);
        assert_eq!(name.value(text), "a-b\"c");
    }

    #[test]
    fn envelopes_and_lists_give_spans_of_their_objects() {
        let line = format!(r#"{{"type":"MODIFIED","object":{EVENT}}}"#);
        let e = envelope(&line).unwrap();
        assert_eq!(e.kind.unwrap().value(&line), "MODIFIED");
        let (span, f) = e.object.unwrap();
        assert_eq!(&line[span], EVENT);
        assert_eq!(f.name.unwrap().value(&line), "web-1.17f3");

        let page = format!(
            r#"{{"kind":"EventList","apiVersion":"v1","metadata":{{"resourceVersion":"77","continue":"abc"}},"items":[{EVENT}, {EVENT} ]}}"#
        );
        let l = list(&page).unwrap();
        assert_eq!(l.resource_version.unwrap().value(&page), "77");
        assert_eq!(l.continue_token.unwrap().value(&page), "abc");
        assert_eq!(l.items.len(), 2);
        assert!(l.items.iter().all(|(span, _)| &page[span.clone()] == EVENT));
        assert!(list(r#"{"items":[1]}"#).is_err());
    }

    #[test]
    fn rejects_what_json_rejects_and_says_where() {
        for (bad, what) in [
            (r#"{"a":1,}"#, "expected a string key"),
            (r#"{"a" 1}"#, "expected ':' after a key"),
            (r#"{"a":01}"#, "expected ',' or '}' in an object"),
            (r#"{"a":"x"#, "unterminated string"),
            ("{\"a\":\"x\ty\"}", "control character in a string"),
            (r#"{"a":"\x"}"#, "invalid escape in a string"),
            (r#"{"a":"\u12G4"}"#, "invalid escape in a string"),
            (r#"{"a":tru}"#, "invalid literal"),
            (r#"{"a":-}"#, "invalid number"),
            (r#"{"a":1.}"#, "invalid number"),
            (r#"{"a":[1 2]}"#, "expected ',' or ']' in an array"),
            (r#"{"a":1} x"#, "text after the end of the value"),
            ("", "unexpected end of the text"),
        ] {
            let err = validate(bad).unwrap_err();
            assert_eq!(err.what, what, "{bad}");
            assert!(!serde_accepts(bad), "{bad}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(validate(&deep).unwrap_err().what, "JSON nested too deeply");
    }

    #[test]
    fn special_bytes_are_found_at_every_offset() {
        for len in 0..40 {
            for (at, c) in [(len / 2, b'"'), (len / 3, b'\\'), (len / 4, 0x1f)] {
                let mut s = vec![b'a'; len];
                if len > 0 {
                    s[at] = c;
                    assert_eq!(special(&s), at, "len {len} byte {c} at {at}");
                } else {
                    assert_eq!(special(&s), 0);
                }
            }
            // Bytes above 0x7f (UTF-8) and just above the control range are plain text.
            let plain: Vec<u8> = (0..len)
                .map(|i| [0x20, 0x7f, 0xc3, 0xa9, b'!'][i % 5])
                .collect();
            assert_eq!(special(&plain), len);
        }
    }

    #[test]
    fn the_synthetic_stream_and_the_fixture_scan_cleanly() {
        let stream = crate::synth::generate(&crate::synth::SynthConfig {
            envelopes: 500,
            ..Default::default()
        });
        let mut lines = 0;
        for line in stream.text.lines().filter(|l| l.starts_with("{\"type\"")) {
            let e = envelope(line).unwrap();
            assert!(e.object.unwrap().1.name.is_some());
            lines += 1;
        }
        assert!(lines > 400);
        let fixture = include_str!("../tests/fixtures/minikube-eventlist.json");
        let l = list(fixture).unwrap();
        assert!(l.items.len() > 10);
    }

    /// Bytes that change the meaning of JSON text when inserted or substituted.
    fn json_byte() -> impl Strategy<Value = u8> {
        prop::sample::select(b"{}[]\":,\\ \n\t0123456789-+.eEtrufalsn\x01\x7fa/u".to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Damaged text is accepted exactly when serde_json accepts it, so nothing invalid is
        /// written to a sink and nothing valid is refused.
        #[test]
        fn agrees_with_serde_json_on_damaged_events(
            edits in prop::collection::vec((0usize..EVENT.len(), json_byte(), 0u8..3), 1..4)
        ) {
            let mut bytes = EVENT.as_bytes().to_vec();
            for (at, byte, op) in edits {
                let at = at.min(bytes.len());
                match op {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => bytes[at] = byte,
                    _ if at < bytes.len() => { bytes.remove(at); }
                    _ => {}
                }
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                prop_assert_eq!(validate(text).is_ok(), serde_accepts(text), "{}", text);
                prop_assert_eq!(event_view(text).is_ok(), event(text).is_ok());
                prop_assert_eq!(line(text).is_ok(), event(text).is_ok());
                if let Ok(f) = event(text) {
                    let v: serde_json::Value = serde_json::from_str(text).unwrap();
                    let name = f.name.map(|n| n.value(text).into_owned());
                    prop_assert_eq!(name.as_deref(), v["metadata"]["name"].as_str());
                }
            }
        }
    }
}
