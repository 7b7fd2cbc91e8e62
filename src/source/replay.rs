//! The replay source: Events from a file or stdin, as watch envelopes, bare objects or lists.
//!
//! Replay is the demo, the backfill tool and the benchmark input, and it lets the pipe work as a
//! filter (`kubectl get events -A -w -o json | kube-event-pipe --source replay --replay-file -`).

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::SourceError;
use super::split::{Chunk, MAX_VALUE_BYTES, Splitter};
use crate::config::ReplayInput;
use crate::event::{Change, EventError, EventRecord, SharedText};
use crate::flow::{HANDOFF_RECORDS, SourceBatch};
use crate::source::SourceMsg;

/// Counters a caller can read while the replay runs.
#[derive(Debug, Default)]
pub struct ReplayStats {
    pub values: AtomicU64,
    pub events: AtomicU64,
    pub malformed: AtomicU64,
}

/// The top-level shapes replay accepts, borrowed from the input without copying.
#[derive(Deserialize)]
struct TopLevel<'a> {
    #[serde(rename = "type", borrow, default)]
    kind_of_change: Option<&'a str>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
    /// Only an Event (or a list) has it; an envelope never does.
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
}

const WATCH_TYPES: &[&str] = &["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"];

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Opens the input and starts a reader thread that feeds `tx` until the input ends or the
/// receiver is dropped.
///
/// A plain thread, not a tokio blocking task: a read on stdin cannot be cancelled, and the
/// runtime would wait for such a task at shutdown; a detached thread ends with the process.
pub fn spawn(
    input: &ReplayInput,
    tx: mpsc::Sender<SourceMsg>,
    stats: Arc<ReplayStats>,
) -> Result<(), SourceError> {
    let reader: Box<dyn Read + Send> = match input {
        ReplayInput::Stdin => Box::new(std::io::stdin()),
        ReplayInput::File(path) => {
            Box::new(
                std::fs::File::open(path).map_err(|source| SourceError::OpenReplay {
                    path: path.clone(),
                    source,
                })?,
            )
        }
    };
    let name = match input {
        ReplayInput::Stdin => "stdin".to_string(),
        ReplayInput::File(p) => p.display().to_string(),
    };
    std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || {
            let hand_off = |batch: SourceBatch| {
                tx.blocking_send(SourceMsg::Records(batch))
                    .map_err(|_| ReadEnd::ReceiverGone)
            };
            let result = read_all(
                BufReader::with_capacity(256 << 10, reader),
                hand_off,
                &stats,
            );
            let (values, events, malformed) = (
                stats.values.load(Ordering::Relaxed),
                stats.events.load(Ordering::Relaxed),
                stats.malformed.load(Ordering::Relaxed),
            );
            match result {
                Ok(()) => info!(
                    input = %name, values, events, malformed,
                    "replay input finished"
                ),
                Err(ReadEnd::ReceiverGone) => debug!("replay stopped: pipeline is shutting down"),
                Err(ReadEnd::Io(e)) => warn!(
                    input = %name, error = %e,
                    "replay input failed; events read so far are still delivered"
                ),
            }
        })
        .map_err(SourceError::Thread)?;
    Ok(())
}

/// Decodes a whole input held in memory, through the same reader the thread runs: the
/// records, and how many values were malformed. The fuzz target's entry point.
pub fn decode_all(input: &[u8]) -> (SourceBatch, u64) {
    let stats = ReplayStats::default();
    let mut records = Vec::new();
    let collect = |batch: SourceBatch| {
        records.extend(batch);
        Ok(())
    };
    // Reading from a slice cannot fail, and the collector never refuses.
    let _ = read_all(BufReader::new(input), collect, &stats);
    (records, stats.malformed.load(Ordering::Relaxed))
}

enum ReadEnd {
    ReceiverGone,
    Io(std::io::Error),
}

fn read_all<R: Read>(
    mut reader: BufReader<R>,
    mut hand_off: impl FnMut(SourceBatch) -> Result<(), ReadEnd>,
    stats: &ReplayStats,
) -> Result<(), ReadEnd> {
    let mut splitter = Splitter::new();
    let mut chunks = Vec::new();
    let mut batch = Vec::with_capacity(HANDOFF_RECORDS);
    let mut line = Vec::with_capacity(4096);
    let mut first = true;
    loop {
        line.clear();
        let n = read_line_capped(&mut reader, &mut line).map_err(ReadEnd::Io)?;
        if n == 0 {
            break;
        }
        // A UTF-8 byte-order mark (Windows editors, PowerShell's `Out-File`) is not JSON.
        if std::mem::take(&mut first) && line.starts_with(UTF8_BOM) {
            line.drain(..UTF8_BOM.len());
        }
        splitter.push_line(&line, &mut chunks);
        for chunk in chunks.drain(..) {
            decode_chunk(chunk, stats, &mut batch);
        }
        // An empty buffer means the next read may block: hand over what is ready first.
        if batch.len() >= HANDOFF_RECORDS || (!batch.is_empty() && reader.buffer().is_empty()) {
            send(&mut hand_off, &mut batch)?;
        }
    }
    if let Some(chunk) = splitter.finish() {
        decode_chunk(chunk, stats, &mut batch);
    }
    if !batch.is_empty() {
        send(&mut hand_off, &mut batch)?;
    }
    Ok(())
}

fn send(
    hand_off: &mut impl FnMut(SourceBatch) -> Result<(), ReadEnd>,
    batch: &mut SourceBatch,
) -> Result<(), ReadEnd> {
    let full = std::mem::replace(batch, Vec::with_capacity(HANDOFF_RECORDS));
    hand_off(full)
}

/// Reads one line, keeping at most `MAX_VALUE_BYTES + 1` bytes of it: the splitter then reports
/// it as oversized, and the rest of the line is skipped without being held in memory.
fn read_line_capped<R: BufRead>(reader: &mut R, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(total);
        }
        let (used, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = (MAX_VALUE_BYTES + 1).saturating_sub(line.len());
        line.extend_from_slice(&available[..used.min(room)]);
        reader.consume(used);
        total += used;
        if done {
            return Ok(total);
        }
    }
}

/// Turns one chunk into records, reporting what cannot be used with its line number. The
/// records share the chunk's buffer rather than copying their text out of it.
fn decode_chunk(chunk: Chunk, stats: &ReplayStats, out: &mut SourceBatch) {
    let malformed = |line: u64, reason: &dyn std::fmt::Display| {
        stats.malformed.fetch_add(1, Ordering::Relaxed);
        warn!("skipping malformed input at line {line}: {reason}");
    };
    if chunk.oversized {
        malformed(
            chunk.line,
            &format_args!("value longer than {MAX_VALUE_BYTES} bytes"),
        );
        return;
    }
    // Text that is not UTF-8 is left to serde to report, with its place.
    let (shared, invalid) = match String::from_utf8(chunk.bytes) {
        Ok(text) => (Some(SharedText::from(text)), Vec::new()),
        Err(e) => (None, e.into_bytes()),
    };
    let bytes = shared
        .as_ref()
        .map_or(invalid.as_slice(), |s| s.as_str().as_bytes());
    // Without its line ending, a value cut off mid-string reads as "EOF while parsing a
    // string" rather than as a control character inside one.
    let text = bytes.trim_ascii_end();
    let values = serde_json::Deserializer::from_slice(text).into_iter::<&RawValue>();
    for value in values {
        let value = match value {
            Ok(v) => v,
            Err(e) => {
                let line = chunk.line + e.line().saturating_sub(1) as u64;
                malformed(line, &SerdeReason(&e));
                // Past a syntax error the rest of the chunk cannot be trusted.
                return;
            }
        };
        stats.values.fetch_add(1, Ordering::Relaxed);
        match classify(value, shared.as_ref()) {
            Ok(records) => {
                for record in records {
                    match record {
                        Ok(r) => {
                            stats.events.fetch_add(1, Ordering::Relaxed);
                            out.push(r);
                        }
                        Err(reason) => malformed(chunk.line, &reason),
                    }
                }
            }
            Err(reason) => malformed(chunk.line, &reason),
        }
    }
}

/// A serde error's message with its column but without serde's chunk-relative line.
struct SerdeReason<'a>(&'a serde_json::Error);

impl std::fmt::Display for SerdeReason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.to_string();
        let message = text
            .rfind(" at line ")
            .map_or(text.as_str(), |i| &text[..i]);
        write!(f, "{message} (column {})", self.0.column())
    }
}

/// Why a value of the input, or one record in it, cannot be used: logged with its line number.
#[derive(Debug, thiserror::Error)]
enum Malformed {
    #[error("expected a JSON object: a watch envelope, an Event or an EventList")]
    NotAnObject,
    #[error(
        "the object has the member {0:?} more than once; each member name may appear once in a JSON object"
    )]
    RepeatedMember(String),
    /// An object, but a member of the wrong type.
    #[error("not a watch envelope, an Event or an EventList: {}", without_position(.0))]
    Shape(#[source] serde_json::Error),
    /// The watch's own error (the Status object, on one line).
    #[error("watch ERROR envelope: {}", one_line(.0))]
    WatchError(String),
    #[error("unknown watch event type {0:?}")]
    UnknownType(String),
    #[error("{0} envelope has no object")]
    NoObject(String),
    #[error(transparent)]
    Event(EventError),
}

/// A serde message without its " at line L column C", which is relative to the chunk.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    text.rfind(" at line ")
        .map_or(text.as_str(), |i| &text[..i])
        .to_string()
}

/// Why a value that parses as JSON is none of the shapes replay reads.
fn shape_error(value: &RawValue, e: serde_json::Error) -> Malformed {
    if !value.get().starts_with('{') {
        return Malformed::NotAnObject;
    }
    // An object, but not one of those shapes. serde names a repeated member as
    // "duplicate field `type`"; anything else is a member of the wrong type.
    let text = without_position(&e);
    match text
        .strip_prefix("duplicate field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        Some(member) => Malformed::RepeatedMember(member.to_string()),
        None => Malformed::Shape(e),
    }
}

/// What one top-level value holds: records (each possibly bad), or a reason it holds none.
/// `src` is the text the value was read from, which the records share.
fn classify(
    value: &RawValue,
    src: Option<&SharedText>,
) -> Result<Vec<Result<EventRecord, Malformed>>, Malformed> {
    let top: TopLevel<'_> = serde_json::from_str(value.get()).map_err(|e| shape_error(value, e))?;
    let record = |change, raw: &RawValue| {
        match src {
            Some(src) => EventRecord::from_json_in(change, src, raw.get()),
            None => EventRecord::from_raw(change, raw),
        }
        .map_err(Malformed::Event)
    };
    // Every Event has a `type` too (Normal, Warning): a value is an envelope when it carries an
    // object, or a watch type and no metadata of its own.
    let envelope = top.kind_of_change.filter(|kind| {
        top.object.is_some() || (top.metadata.is_none() && WATCH_TYPES.contains(kind))
    });
    if let Some(kind) = envelope {
        let change = match kind {
            "ADDED" => Change::Added,
            "MODIFIED" => Change::Modified,
            "DELETED" => Change::Deleted,
            // Progress markers of a watch, not events.
            "BOOKMARK" => return Ok(Vec::new()),
            "ERROR" => {
                let status = top.object.map_or("", |o| o.get());
                return Err(Malformed::WatchError(status.to_string()));
            }
            other => return Err(Malformed::UnknownType(other.to_string())),
        };
        return match top.object {
            Some(object) => Ok(vec![record(change, object)]),
            None => Err(Malformed::NoObject(kind.to_string())),
        };
    }
    if let Some(items) = top.items {
        return Ok(items
            .into_iter()
            .map(|i| record(Change::Added, i))
            .collect());
    }
    Ok(vec![record(Change::Added, value)])
}

fn one_line(s: &str) -> String {
    let mut out: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > 300 {
        let mut end = 300;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
