//! JSON-lines encoding: the Event as received, or eventrouter's wrapper, one object per line.
//!
//! The Event's bytes are copied, not re-serialized: unknown fields, key order and number
//! spellings survive. Only whitespace between tokens is dropped, and only when the input spans
//! lines (kubectl's pretty output), because a JSON line must not contain a newline.

use super::OutputFormat;
use crate::event::{EventRecord, RawJson};

/// Encodes records as lines, with the options that shape every line.
#[derive(Debug, Clone)]
pub struct LineEncoder {
    format: OutputFormat,
    /// `"cluster":"<name>",` pre-encoded once, ready to splice after an opening brace.
    cluster_field: Option<String>,
}

impl LineEncoder {
    pub fn new(format: OutputFormat, cluster_name: Option<&str>) -> Self {
        let cluster_field = cluster_name.map(|name| {
            // Serializing a &str cannot fail.
            let quoted = serde_json::to_string(name).unwrap_or_else(|_| "\"\"".into());
            format!("\"cluster\":{quoted}")
        });
        LineEncoder {
            format,
            cluster_field,
        }
    }

    /// Appends one line (with its newline) for `record` to `out`. `prior` is the previous version
    /// of the same object seen in this run, used by the eventrouter format; `enrichment` is added
    /// as the line's last top-level member.
    pub fn encode(
        &self,
        record: &EventRecord,
        prior: Option<&RawJson>,
        enrichment: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        match self.format {
            OutputFormat::Raw => match &self.cluster_field {
                Some(field) => splice_field(record.raw.get(), field, out),
                None => write_compact(record.raw.get(), out),
            },
            OutputFormat::Eventrouter => {
                out.extend_from_slice(b"{\"verb\":\"");
                out.extend_from_slice(record.change.eventrouter_verb().as_bytes());
                out.extend_from_slice(b"\",");
                if let Some(field) = &self.cluster_field {
                    out.extend_from_slice(field.as_bytes());
                    out.push(b',');
                }
                out.extend_from_slice(b"\"event\":");
                write_compact(record.raw.get(), out);
                if let Some(prior) = prior {
                    out.extend_from_slice(b",\"old_event\":");
                    write_compact(prior.get(), out);
                }
                out.push(b'}');
            }
        }
        if let Some(enrichment) = enrichment {
            append_member(out, b"enrichment", enrichment);
        }
        out.push(b'\n');
    }
}

/// Adds `"name":value` as the last member of the object that `out` ends with.
fn append_member(out: &mut Vec<u8>, name: &[u8], value: &str) {
    if out.last() != Some(&b'}') {
        return;
    }
    out.pop();
    // An empty object takes no comma (whitespace may remain inside `{ }` on one line).
    let empty = out
        .iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if !empty {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(name);
    out.extend_from_slice(b"\":");
    out.extend_from_slice(value.as_bytes());
    out.push(b'}');
}

/// Writes `object` with `field` (a `"key":value` pair) as its first member.
fn splice_field(object: &str, field: &str, out: &mut Vec<u8>) {
    // Records only hold objects (the key was read from their metadata), so the text starts
    // with `{`; anything else is passed through unchanged rather than broken.
    let Some(body) = object.trim_start().strip_prefix('{') else {
        write_compact(object, out);
        return;
    };
    out.push(b'{');
    out.extend_from_slice(field.as_bytes());
    if !body.trim_start().starts_with('}') {
        out.push(b',');
    }
    write_compact(body, out);
}

/// Copies JSON text, dropping whitespace outside strings when the text spans lines.
pub fn write_compact(json: &str, out: &mut Vec<u8>) {
    let bytes = json.as_bytes();
    if memchr::memchr2(b'\n', b'\r', bytes).is_none() {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(bytes.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Change;

    fn record(change: Change, json: &str) -> EventRecord {
        EventRecord::from_json(change, json).unwrap()
    }

    fn line(enc: &LineEncoder, r: &EventRecord, prior: Option<&RawJson>) -> String {
        let mut out = Vec::new();
        enc.encode(r, prior, None, &mut out);
        String::from_utf8(out).unwrap()
    }

    const EVENT: &str = r#"{"metadata":{"name":"a","namespace":"d"},"message":"x  y","zz":1.50}"#;

    #[test]
    fn raw_lines_are_the_object_byte_for_byte() {
        let enc = LineEncoder::new(OutputFormat::Raw, None);
        assert_eq!(
            line(&enc, &record(Change::Added, EVENT), None),
            format!("{EVENT}\n")
        );
    }

    #[test]
    fn multi_line_objects_are_compacted_outside_strings() {
        let pretty = "{\n  \"metadata\": {\"name\": \"a\", \"namespace\": \"d\"},\n  \"message\": \"two  spaces\\n\"\n}";
        let enc = LineEncoder::new(OutputFormat::Raw, None);
        assert_eq!(
            line(&enc, &record(Change::Added, pretty), None),
            "{\"metadata\":{\"name\":\"a\",\"namespace\":\"d\"},\"message\":\"two  spaces\\n\"}\n"
        );
    }

    #[test]
    fn cluster_name_becomes_the_first_field() {
        let enc = LineEncoder::new(OutputFormat::Raw, Some("prod \"eu\""));
        let out = line(&enc, &record(Change::Added, EVENT), None);
        assert!(
            out.starts_with(r#"{"cluster":"prod \"eu\"","metadata":"#),
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["zz"].to_string(), "1.5");
        assert_eq!(v["cluster"], "prod \"eu\"");
    }

    #[test]
    fn cluster_name_in_an_empty_object_needs_no_comma() {
        let mut out = Vec::new();
        splice_field("{ \n }", "\"cluster\":\"c\"", &mut out);
        assert_eq!(out, b"{\"cluster\":\"c\"}");
    }

    #[test]
    fn eventrouter_wraps_with_verb_and_old_event() {
        let enc = LineEncoder::new(OutputFormat::Eventrouter, Some("c1"));
        let new = record(Change::Modified, EVENT);
        let old = record(Change::Added, r#"{"metadata":{"name":"a"},"count":1}"#);
        let out = line(&enc, &new, Some(&old.raw));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["verb"], "UPDATED");
        assert_eq!(v["cluster"], "c1");
        assert_eq!(v["event"]["message"], "x  y");
        assert_eq!(v["old_event"]["count"], 1);
        let added = line(&enc, &record(Change::Added, EVENT), None);
        assert!(added.starts_with(r#"{"verb":"ADDED","#));
        assert!(!added.contains("old_event"));
    }

    #[test]
    fn every_line_is_one_line_of_valid_json() {
        let enc = LineEncoder::new(OutputFormat::Raw, Some("c"));
        let weird =
            "{\"metadata\":{\"name\":\"a\\\"\\\\\",\"namespace\":\"d\"},\r\n\"m\":\"{\\\"\"}";
        let out = line(&enc, &record(Change::Added, weird), None);
        assert_eq!(out.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["metadata"]["name"], "a\"\\");
        assert_eq!(v["m"], "{\"");
    }
}
