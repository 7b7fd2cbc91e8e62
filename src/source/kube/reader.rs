//! Reading a watch response: bytes split into lines across network reads, lines into records,
//! and the lines that end a watch (a 410, another ERROR, the end of a streaming list's initial
//! events, or an ordinary bookmark where that end was awaited).

use bytes::{Bytes, BytesMut};
use kube::core::Status;
use tracing::warn;

use crate::event::{Change, EventError, EventRecord, SharedText};
use crate::flow::HANDOFF_RECORDS;
use crate::scan;

/// A watch line longer than this is not an Event (the API server caps objects at 1.5 MiB).
const MAX_LINE: usize = 16 << 20;

/// The annotation of the BOOKMARK that ends the initial events of a streaming list.
const INITIAL_EVENTS_END: &str = "\"k8s.io/initial-events-end\":\"true\"";

/// What one watch line asked for.
enum LineOutcome {
    Continue,
    /// A 410 ERROR: the watch's resourceVersion is gone.
    Gone,
    /// Another ERROR event: the watch should be restarted.
    Error(Box<Status>),
    /// An ordinary bookmark where the end of the initial events was awaited.
    PlainWatch,
}

/// How reading one watch response ended.
pub(super) enum ReadEnd {
    /// The server ended the stream.
    Closed,
    Gone,
    Error(Box<Status>),
    /// A read failed or the connection went silent.
    Broken(String),
    /// A streaming list turned out to be a plain watch: an ordinary bookmark came before the
    /// end of the initial events.
    PlainWatch,
}

/// Where a watch is in the initial events of a streaming list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum InitialEvents {
    /// A plain watch: there are none.
    NotAsked,
    /// Still reading them; `events` so far.
    Awaited { events: u64 },
    /// The bookmark that ends them was read, not yet reported.
    Reached { events: u64 },
    /// Reported: the rest is an ordinary watch.
    Ended,
}

/// Splits a watch response into lines and lines into records, across reads.
///
/// A record is a slice of the read its line arrived in, so a line is not copied on its way in;
/// only a line split across reads is put together in a buffer of its own.
pub(super) struct WatchReader {
    /// Events and bookmarks read from this response.
    pub(super) received: u64,
    /// The start of a line whose end has not been read yet.
    partial: BytesMut,
    /// Records read and not yet handed over.
    pub(super) batch: Vec<EventRecord>,
    /// The resourceVersion of the last event or bookmark read.
    pub(super) version: Option<String>,
    pub(super) initial: InitialEvents,
}

impl WatchReader {
    pub(super) fn new(initial: InitialEvents) -> Self {
        WatchReader {
            received: 0,
            partial: BytesMut::new(),
            batch: Vec::with_capacity(HANDOFF_RECORDS),
            version: None,
            initial,
        }
    }

    /// Takes one read's bytes; returns how the watch ends if a line said so.
    pub(super) fn feed(
        &mut self,
        chunk: Bytes,
        mut record: impl FnMut(Result<EventRecord, EventError>) -> Option<EventRecord>,
    ) -> Option<ReadEnd> {
        let mut at = 0;
        // Whether the last line of this read that carried a resourceVersion was an event (its
        // record is then the batch's last) rather than a bookmark.
        let mut last_is_event = false;
        let mut end = None;
        while let Some(pos) = memchr::memchr(b'\n', &chunk[at..]) {
            let line = if self.partial.is_empty() {
                chunk.slice(at..at + pos)
            } else {
                self.partial.extend_from_slice(&chunk[at..at + pos]);
                self.partial.split().freeze()
            };
            at += pos + 1;
            let outcome = self.line(line, &mut record, &mut last_is_event);
            match outcome {
                LineOutcome::Continue => {}
                LineOutcome::Gone => {
                    end = Some(ReadEnd::Gone);
                    break;
                }
                LineOutcome::Error(status) => {
                    end = Some(ReadEnd::Error(status));
                    break;
                }
                LineOutcome::PlainWatch => {
                    end = Some(ReadEnd::PlainWatch);
                    break;
                }
            }
        }
        let rest = &chunk[at..];
        if end.is_none() {
            if self.partial.len() + rest.len() > MAX_LINE {
                self.partial.clear();
                end = Some(ReadEnd::Broken(format!(
                    "a watch line longer than {MAX_LINE} bytes"
                )));
            } else {
                self.partial.extend_from_slice(rest);
            }
        }
        // One resourceVersion parse per read, not per event: only the last one matters.
        if last_is_event && let Some(v) = self.batch.last().and_then(|r| r.resource_version()) {
            self.version = Some(v.to_string());
        }
        end
    }

    fn line(
        &mut self,
        line: Bytes,
        record: &mut impl FnMut(Result<EventRecord, EventError>) -> Option<EventRecord>,
        last_is_event: &mut bool,
    ) -> LineOutcome {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            return LineOutcome::Continue;
        }
        let Ok(line) = SharedText::new(line.slice_ref(trimmed)) else {
            warn!("skipping a watch line that is not UTF-8");
            return LineOutcome::Continue;
        };
        let text = line.as_str();
        let envelope = match scan::envelope(text) {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "skipping a watch line that is not a watch event");
                return LineOutcome::Continue;
            }
        };
        let (Some(kind), Some((span, fields))) = (envelope.kind, envelope.object) else {
            warn!("skipping a watch line without a type and an object");
            return LineOutcome::Continue;
        };
        let change = match kind.value(text).as_ref() {
            "ADDED" => Change::Added,
            "MODIFIED" => Change::Modified,
            "DELETED" => Change::Deleted,
            "BOOKMARK" => {
                self.received += 1;
                if let InitialEvents::Awaited { events } = self.initial {
                    // Bookmarks are rare: a substring search of the line is cheap enough.
                    if !text.contains(INITIAL_EVENTS_END) {
                        return LineOutcome::PlainWatch;
                    }
                    self.initial = InitialEvents::Reached { events };
                }
                if let Some(v) = fields
                    .resource_version
                    .map(|v| v.value(text))
                    .filter(|v| !v.is_empty())
                {
                    self.version = Some(v.into_owned());
                    *last_is_event = false;
                }
                return LineOutcome::Continue;
            }
            "ERROR" => {
                let object = &text[span];
                let status: Status = serde_json::from_str(object)
                    .unwrap_or_else(|_| Status::failure(object, "Unknown"));
                return if status.code == 410 {
                    LineOutcome::Gone
                } else {
                    LineOutcome::Error(Box::new(status))
                };
            }
            other => {
                warn!(kind = other, "skipping a watch event of an unknown type");
                return LineOutcome::Continue;
            }
        };
        self.received += 1;
        if let InitialEvents::Awaited { events } = &mut self.initial {
            *events += 1;
        }
        if let Some(r) = record(EventRecord::from_scanned(change, &line, span, &fields)) {
            self.batch.push(r);
            *last_is_event = true;
        }
        LineOutcome::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(reader: &mut WatchReader, chunks: &[&str]) -> Option<ReadEnd> {
        for c in chunks {
            if let Some(end) = reader.feed(Bytes::copy_from_slice(c.as_bytes()), Result::ok) {
                return Some(end);
            }
        }
        None
    }

    fn reader() -> WatchReader {
        WatchReader::new(InitialEvents::NotAsked)
    }

    #[test]
    fn a_streaming_list_ends_at_the_annotated_bookmark_and_follows_its_version() {
        let mut r = reader();
        r.initial = InitialEvents::Awaited { events: 0 };
        let end = feed_all(
            &mut r,
            &[
                r#"{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"n","resourceVersion":"5"}}}"#,
                "\n",
                r#"{"type":"BOOKMARK","object":{"kind":"Event","apiVersion":"v1","metadata":{"resourceVersion":"9","annotations":{"k8s.io/initial-events-end":"true"}}}}"#,
                "\n",
                r#"{"type":"ADDED","object":{"metadata":{"name":"b","namespace":"n","resourceVersion":"10"}}}"#,
                "\n",
            ],
        );
        assert!(end.is_none());
        assert_eq!(r.initial, InitialEvents::Reached { events: 1 });
        assert_eq!(r.batch.len(), 2);
        assert_eq!(r.version.as_deref(), Some("10"));
        // Once ended, an ordinary bookmark is just a bookmark.
        r.initial = InitialEvents::Ended;
        let end = feed_all(
            &mut r,
            &["{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"12\"}}}\n"],
        );
        assert!(end.is_none());
        assert_eq!(r.version.as_deref(), Some("12"));
    }

    #[test]
    fn an_ordinary_bookmark_before_the_end_of_the_initial_events_means_a_plain_watch() {
        let mut r = reader();
        r.initial = InitialEvents::Awaited { events: 0 };
        let end = feed_all(
            &mut r,
            &[
                r#"{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"n","resourceVersion":"5"}}}"#,
                "\n",
                r#"{"type":"BOOKMARK","object":{"kind":"Event","apiVersion":"v1","metadata":{"resourceVersion":"9"}}}"#,
                "\n",
            ],
        );
        assert!(matches!(end, Some(ReadEnd::PlainWatch)));
        // What came before it is kept: delivered now, deduplicated against the list later.
        assert_eq!(r.batch.len(), 1);
    }

    #[test]
    fn lines_split_across_reads_become_records_and_the_version_follows() {
        let mut r = reader();
        let end = feed_all(
            &mut r,
            &[
                r#"{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"n","resourceVersion":"5"}}}"#,
                "\n{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"a\",\"names",
                "pace\":\"n\",\"resourceVersion\":\"7\"},\"count\":2}}\n",
            ],
        );
        assert!(end.is_none());
        assert_eq!(r.batch.len(), 2);
        assert_eq!(r.batch[1].count, 2);
        assert_eq!(r.version.as_deref(), Some("7"));
        let end = feed_all(
            &mut r,
            &[
                "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Event\",\"metadata\":{\"resourceVersion\":\"12\"}}}\n",
            ],
        );
        assert!(end.is_none());
        assert_eq!(r.version.as_deref(), Some("12"));
        assert_eq!(r.received, 3);
    }

    #[test]
    fn a_410_error_event_ends_the_watch_after_the_events_before_it() {
        let mut r = reader();
        let end = feed_all(
            &mut r,
            &[concat!(
                r#"{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"n","resourceVersion":"5"}}}"#,
                "\n",
                r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (9)","reason":"Expired","code":410}}"#,
                "\n",
            )],
        );
        assert!(matches!(end, Some(ReadEnd::Gone)));
        assert_eq!(r.batch.len(), 1);
        let mut r = reader();
        let end = feed_all(
            &mut r,
            &[
                "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":500,\"message\":\"boom\"}}\n",
            ],
        );
        assert!(matches!(end, Some(ReadEnd::Error(s)) if s.code == 500));
    }

    #[test]
    fn garbage_lines_are_skipped_not_fatal() {
        let mut r = reader();
        let end = feed_all(
            &mut r,
            &[
                "not json\n",
                "{\"type\":\"ADDED\",\"object\":{\"metadata\":{}}}\n",
                "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"b\"}}}\n",
            ],
        );
        assert!(end.is_none());
        assert_eq!(r.batch.len(), 1);
    }
}
