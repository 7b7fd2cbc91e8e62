//! Dead letters: where a batch a sink refused for good goes, so it is neither dropped silently
//! nor retried forever against a peer that will never take it.
//!
//! Each refused batch becomes one file in the dead-letter directory,
//! `<sink>-<time>-<batch>.jsonl`, one line per event:
//! `{"sink":"otlp","time":"2026-11-29T19:40:00.123Z","reason":"otlp: HTTP 400 …","event":{…}}`
//! where `event` is the line the sink was given (the Event, or the eventrouter wrapper). The
//! file is written under a temporary name, fsynced, linked to its name (never replacing an
//! existing file) and the directory fsynced; only then does the caller acknowledge the batch,
//! so its keys are committed only once the dead letter is on disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use thiserror::Error;

use super::Failure;
use crate::flow::Batch;
use crate::metrics::DEAD_LETTERS;
use crate::scan;

/// Dead-letter failures. At startup (`Open`) fatal; while running, the batch stays unacked and
/// is retried like any failed delivery, so a full disk delays the pipe but loses nothing.
#[derive(Debug, Error)]
pub enum DeadLetterError {
    #[error(
        "dead-letter directory {path}: {source}; create it or mount a writable volume there (--dead-letter-dir)"
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write dead letter {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The dead-letter directory.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    dir: PathBuf,
}

impl DeadLetters {
    /// Creates the directory if needed and checks that files can be created in it.
    pub fn open(dir: &Path) -> Result<Self, DeadLetterError> {
        let fail = |source| DeadLetterError::Open {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(fail)?;
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        File::create(&probe).map_err(fail)?;
        std::fs::remove_file(&probe).map_err(fail)?;
        Ok(DeadLetters {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `batch` durably as dead letters of `sink` and counts its events in
    /// `kube_event_pipe_dead_letters_total{sink}`. Blocking (file I/O and fsync): call it from
    /// a blocking thread.
    pub fn write(
        &self,
        sink: &'static str,
        batch: &Batch,
        reason: &str,
    ) -> Result<PathBuf, DeadLetterError> {
        let now =
            jiff::Timestamp::try_from(SystemTime::now()).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let content = render(sink, &now.to_string(), reason, &batch.bytes);
        let stem = format!(
            "{sink}-{}-{:09}",
            now.strftime("%Y%m%dT%H%M%S%.3fZ"),
            batch.seq
        );
        let tmp = self.dir.join(format!(".{stem}.tmp"));
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DeadLetterError::Write { path, source }
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(write_err(&tmp))?;
        file.write_all(&content).map_err(write_err(&tmp))?;
        file.sync_all().map_err(write_err(&tmp))?;
        drop(file);
        // A hard link never replaces an existing file: two refusals of batches with the same
        // number in the same millisecond (a restart) both keep their letters.
        let mut path = self.dir.join(format!("{stem}.jsonl"));
        let mut attempt = 1;
        loop {
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => {
                    path = self.dir.join(format!("{stem}-{attempt}.jsonl"));
                    attempt += 1;
                }
                Err(e) => return Err(write_err(&path)(e)),
            }
        }
        std::fs::remove_file(&tmp).map_err(write_err(&tmp))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err(&self.dir))?;
        metrics::counter!(DEAD_LETTERS, "sink" => sink).increment(batch.events as u64);
        Ok(path)
    }
}

/// The result of a dead-letter write run on a blocking thread: the file, or the failure the
/// batch is retried with (a full disk is transient: the batch waits and nothing is lost).
pub fn outcome(
    written: Result<Result<PathBuf, DeadLetterError>, tokio::task::JoinError>,
) -> Result<PathBuf, Failure> {
    match written {
        Ok(Ok(path)) => Ok(path),
        Ok(Err(e)) => Err(Failure::retry("dead letter", e.to_string())),
        Err(e) => Err(Failure::retry(
            "dead letter",
            format!("the dead-letter write did not finish: {e}"),
        )),
    }
}

/// The dead-letter lines of a batch: each event line wrapped with the sink, time and reason,
/// `{"sink":…,"time":…,"reason":…,"event":<the line>}`. A line that is not JSON (it cannot
/// come from our encoders) is kept as text in `line` instead of `event`.
fn render(sink: &str, time: &str, reason: &str, lines: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.len() + lines.len() / 4);
    for line in lines.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.extend_from_slice(b"{\"sink\":");
        push_string(&mut out, sink);
        out.extend_from_slice(b",\"time\":");
        push_string(&mut out, time);
        out.extend_from_slice(b",\"reason\":");
        push_string(&mut out, reason);
        match json_text(line) {
            Some(event) => {
                out.extend_from_slice(b",\"event\":");
                out.extend_from_slice(event.as_bytes());
            }
            None => {
                out.extend_from_slice(b",\"line\":");
                push_string(&mut out, &String::from_utf8_lossy(line));
            }
        }
        out.extend_from_slice(b"}\n");
    }
    out
}

/// The line as JSON text without the whitespace around it, if the scanner finds it to be one
/// JSON value.
fn json_text(line: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(line).ok()?;
    scan::validate(text).ok()?;
    Some(text.trim_matches([' ', '\t', '\n', '\r']))
}

fn push_string(out: &mut Vec<u8>, text: &str) {
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64, bytes: &[u8]) -> Batch {
        Batch {
            seq,
            bytes: bytes.to_vec(),
            records: None,
            keys: Vec::new(),
            events: bytes.iter().filter(|b| **b == b'\n').count(),
            opened_at: SystemTime::now(),
        }
    }

    #[test]
    fn a_refused_batch_becomes_one_file_of_wrapped_lines() {
        let dir = tempfile::tempdir().unwrap();
        let letters = DeadLetters::open(&dir.path().join("dead")).unwrap();
        let path = letters
            .write(
                "http",
                &batch(7, b"{\"a\":1}\n{\"b\":2}\n"),
                "HTTP 400 Bad Request",
            )
            .unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("http-") && name.ends_with("-000000007.jsonl"),
            "{name}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["sink"], "http");
        assert_eq!(lines[0]["reason"], "HTTP 400 Bad Request");
        assert_eq!(lines[1]["event"], serde_json::json!({"b": 2}));
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        // Nothing temporary is left behind.
        let names: Vec<_> = std::fs::read_dir(letters.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn letters_never_replace_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let letters = DeadLetters::open(dir.path()).unwrap();
        let paths: Vec<_> = (0..3)
            .map(|_| letters.write("otlp", &batch(1, b"{}\n"), "r").unwrap())
            .collect();
        assert_eq!(
            paths.iter().collect::<std::collections::HashSet<_>>().len(),
            3
        );
    }

    /// The letters as serde wrote them before: the same bytes, line for line.
    fn render_with_serde(sink: &str, time: &str, reason: &str, lines: &[u8]) -> Vec<u8> {
        use serde_json::value::RawValue;
        #[derive(serde::Serialize)]
        struct Letter<'a> {
            sink: &'a str,
            time: &'a str,
            reason: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            event: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            line: Option<&'a str>,
        }
        let mut out = Vec::new();
        for line in lines.split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let event: Option<&RawValue> = serde_json::from_slice(line).ok();
            let text = String::from_utf8_lossy(line);
            let letter = Letter {
                sink,
                time,
                reason,
                event,
                line: event.is_none().then_some(text.as_ref()),
            };
            serde_json::to_writer(&mut out, &letter).unwrap();
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn letters_are_written_as_serde_wrote_them() {
        let lines: &[u8] = b"{\"a\":1}\n  {\"b\":[1, 2]} \r\nnot json\n{\"c\":\"\xff\"}\n\t\n\"s\\u00e9\"\n{\"d\":\"\\ud800\"}\n";
        for (sink, reason) in [("otlp", "HTTP 400 \"bad\"\n\u{e9}"), ("http", "")] {
            assert_eq!(
                String::from_utf8_lossy(&render(sink, "2026-01-01T00:00:00Z", reason, lines)),
                String::from_utf8_lossy(&render_with_serde(
                    sink,
                    "2026-01-01T00:00:00Z",
                    reason,
                    lines
                ))
            );
        }
    }

    #[test]
    fn a_line_that_is_not_json_is_kept_as_text() {
        let out = render("otlp", "t", "r", b"not json\n");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["line"], "not json");
        assert!(v.get("event").is_none());
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = DeadLetters::open(&file.join("sub"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--dead-letter-dir"), "{err}");
    }
}
