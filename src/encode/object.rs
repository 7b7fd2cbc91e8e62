//! S3 objects: a batch as one gzip stream of JSON lines or of length-delimited protobuf records,
//! and the way back (`decode`).

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use prost::Message;
use thiserror::Error;

use super::json::write_compact;
use super::proto::schema;

/// What an object holds once unzipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFormat {
    Jsonl,
    Protobuf,
}

impl ObjectFormat {
    /// The key's extension, before `.gz`.
    pub fn extension(self) -> &'static str {
        match self {
            ObjectFormat::Jsonl => "jsonl",
            ObjectFormat::Protobuf => "pb",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ObjectFormat::Jsonl => "application/x-ndjson",
            ObjectFormat::Protobuf => "application/x-protobuf",
        }
    }

    /// From an object name, when it says.
    fn from_name(name: &str) -> Option<Self> {
        if name.ends_with(".jsonl.gz") || name.ends_with(".jsonl") {
            Some(ObjectFormat::Jsonl)
        } else if name.ends_with(".pb.gz") || name.ends_with(".pb") {
            Some(ObjectFormat::Protobuf)
        } else {
            None
        }
    }
}

/// Why an object cannot be read back. Not retryable: the bytes are what they are.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("{name}: not a complete gzip stream ({source}); the object is truncated or damaged")]
    Gzip {
        name: String,
        source: std::io::Error,
    },
    #[error("{name}: protobuf record {index} is damaged: {reason}")]
    Record {
        name: String,
        index: usize,
        reason: String,
    },
}

/// Gzips `payload` (a batch's lines or records). Level 6: a good ratio for JSON at a cost the
/// upload dwarfs.
pub fn gzip(payload: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(payload.len() / 6 + 64),
        Compression::default(),
    );
    // Writes into a Vec cannot fail.
    let _ = enc.write_all(payload);
    enc.finish().unwrap_or_default()
}

/// Turns an object this tool wrote back into JSON lines (protobuf records become their raw
/// Event JSON, with `cluster` first when the record has one). `name` labels errors and, by its
/// extension, says the format; without one the content decides.
pub fn decode(name: &str, gz: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut payload = Vec::with_capacity(gz.len() * 6);
    MultiGzDecoder::new(gz)
        .read_to_end(&mut payload)
        .map_err(|source| DecodeError::Gzip {
            name: name.to_owned(),
            source,
        })?;
    if gz.is_empty() {
        return Err(DecodeError::Gzip {
            name: name.to_owned(),
            source: std::io::ErrorKind::UnexpectedEof.into(),
        });
    }
    let format = ObjectFormat::from_name(name).unwrap_or_else(|| sniff(&payload));
    match format {
        ObjectFormat::Jsonl => Ok(payload),
        ObjectFormat::Protobuf => records_to_lines(name, &payload),
    }
}

/// JSON lines start with `{"` and their first line parses; anything else is taken as protobuf.
fn sniff(payload: &[u8]) -> ObjectFormat {
    let first = payload.split(|&b| b == b'\n').next().unwrap_or_default();
    if first.starts_with(b"{\"") && serde_json::from_slice::<serde_json::Value>(first).is_ok() {
        ObjectFormat::Jsonl
    } else {
        ObjectFormat::Protobuf
    }
}

fn records_to_lines(name: &str, mut payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(payload.len());
    let mut index = 0;
    while !payload.is_empty() {
        let rec = schema::EventRecord::decode_length_delimited(&mut payload).map_err(|e| {
            DecodeError::Record {
                name: name.to_owned(),
                index,
                reason: e.to_string(),
            }
        })?;
        let json = String::from_utf8_lossy(&rec.raw_json);
        match rec.cluster.as_deref() {
            Some(cluster) => {
                // The same splice the line encoder does for `--cluster-name`.
                let quoted = serde_json::to_string(cluster).unwrap_or_else(|_| "\"\"".into());
                match json.trim_start().strip_prefix('{') {
                    Some(body) => {
                        out.extend_from_slice(b"{\"cluster\":");
                        out.extend_from_slice(quoted.as_bytes());
                        if !body.trim_start().starts_with('}') {
                            out.push(b',');
                        }
                        write_compact(body, &mut out);
                    }
                    None => write_compact(&json, &mut out),
                }
            }
            None => write_compact(&json, &mut out),
        }
        out.push(b'\n');
        index += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::OutputFormat;
    use crate::encode::json::LineEncoder;
    use crate::encode::proto::ProtoEncoder;
    use crate::event::{Change, EventRecord};

    fn records() -> Vec<EventRecord> {
        (0..3)
            .map(|i| {
                let json =
                    format!(r#"{{"metadata":{{"name":"e{i}","namespace":"d"}},"count":{i}}}"#);
                EventRecord::from_json(Change::Added, &json).unwrap()
            })
            .collect()
    }

    fn both(cluster: Option<&str>) -> (Vec<u8>, Vec<u8>) {
        let lines = LineEncoder::new(OutputFormat::Raw, cluster);
        let proto = ProtoEncoder::new(cluster);
        let (mut l, mut p) = (Vec::new(), Vec::new());
        for r in records() {
            lines.encode(&r, None, None, &mut l);
            proto.encode(&r, None, &mut p);
        }
        (l, p)
    }

    #[test]
    fn jsonl_and_protobuf_objects_decode_to_the_same_lines() {
        for cluster in [None, Some("c1")] {
            let (lines, records) = both(cluster);
            assert_eq!(decode("a.jsonl.gz", &gzip(&lines)).unwrap(), lines);
            assert_eq!(decode("a.pb.gz", &gzip(&records)).unwrap(), lines);
            // Without a telling name the content decides.
            assert_eq!(decode("-", &gzip(&lines)).unwrap(), lines);
            assert_eq!(decode("-", &gzip(&records)).unwrap(), lines);
        }
    }

    #[test]
    fn a_truncated_object_names_itself() {
        let (lines, _) = both(None);
        let gz = gzip(&lines);
        let err = decode("b/x.jsonl.gz", &gz[..gz.len() - 9]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("b/x.jsonl.gz: not a complete gzip stream"),
            "{err}"
        );
        assert!(decode("empty.jsonl.gz", b"").is_err());
    }

    #[test]
    fn a_damaged_record_is_reported_by_index() {
        let (_, mut records) = both(None);
        records.truncate(records.len() - 3);
        let err = decode("r.pb.gz", &gzip(&records)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("r.pb.gz: protobuf record 2 is damaged"),
            "{err}"
        );
    }
}
