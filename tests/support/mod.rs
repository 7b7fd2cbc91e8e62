//! Shared by the integration tests: run the real binary, read what it wrote, wait for things
//! with a deadline instead of sleeping, and compute expected occurrences independently of the
//! library.

#![allow(dead_code)]

pub mod conformance;
pub mod event;
pub mod fake_api;
pub mod kafka;
pub mod kube_pipe;
pub mod receiver;
pub mod relay;
pub mod s3;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_kube-event-pipe");

/// Generous: CI machines are slow, and a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// One occurrence as the key sees it.
pub type Occurrence = (String, String, u64);

/// The binary with a clean environment, so a developer's KUBE_EVENT_PIPE_* or KUBECONFIG
/// cannot change what a test sees.
pub fn pipe(persistence: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["--source", "replay", "--persistence-path"])
        .arg(persistence)
        .args(["--log-level", "INFO"]);
    cmd
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for the child to exit, killing it if the deadline passes.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    wait_for("the process to exit", || {
        child.try_wait().expect("try_wait")
    })
}

pub fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid; it has not been reaped while we hold `child`.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Reads a child's stream on a thread: lines as they come, and all of it at the end.
pub struct Reader {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Reader {
    pub fn spawn(stream: impl Read + Send + 'static) -> Reader {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if tx.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        Reader {
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits until `n` lines have been read in total; returns them.
    pub fn until(&mut self, n: usize) -> &[String] {
        let end = Instant::now() + DEADLINE;
        while self.seen.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(e) => panic!("waiting for {n} lines, have {}: {e}", self.seen.len()),
            }
        }
        &self.seen
    }

    /// Takes whatever lines have arrived, without waiting; returns how many were read in total.
    pub fn drain_ready(&mut self) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.len()
    }

    /// Everything until the stream closes.
    pub fn all(mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            self.seen.push(line);
        }
        self.seen
    }
}

/// The occurrences a correct pipe delivers from watch envelopes, bare events or EventLists,
/// computed with serde_json alone: `series.count`, else `count` if > 0, else 1; DELETED skipped.
pub fn expected_occurrences(input: &str) -> std::collections::BTreeSet<Occurrence> {
    let mut out = std::collections::BTreeSet::new();
    for value in serde_json::Deserializer::from_str(input).into_iter::<serde_json::Value>() {
        let value = value.expect("test input is valid JSON");
        let events: Vec<&serde_json::Value> =
            if value["kind"] == "EventList" || value["kind"] == "List" {
                value["items"].as_array().expect("items").iter().collect()
            } else if value.get("object").is_some() {
                if value["type"] == "DELETED" {
                    continue;
                }
                vec![&value["object"]]
            } else {
                vec![&value]
            };
        for ev in events {
            out.insert(occurrence(ev));
        }
    }
    out
}

pub fn occurrence(ev: &serde_json::Value) -> Occurrence {
    let count = ev["series"]["count"]
        .as_u64()
        .or_else(|| ev["count"].as_u64().filter(|&c| c > 0))
        .unwrap_or(1);
    (
        ev["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        ev["metadata"]["name"].as_str().expect("name").to_owned(),
        count,
    )
}

/// Occurrences in output lines, with how often each appears. Panics on a line that is not one
/// whole JSON object ending in a newline (a torn line).
pub fn tally<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeMap<Occurrence, usize> {
    let mut out = BTreeMap::new();
    for line in lines {
        assert!(line.ends_with('\n'), "torn line (no newline): {line:?}");
        let ev: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("output line is not JSON ({e}): {line:?}"));
        *out.entry(occurrence(&ev)).or_insert(0) += 1;
    }
    out
}

/// The lines of a file, each with its newline.
pub fn file_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n').map(str::to_owned).collect()
}

pub fn count_lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

pub fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample-events.jsonl")
}

/// Asserts every expected occurrence appears exactly once.
pub fn assert_exactly_once(
    got: &BTreeMap<Occurrence, usize>,
    expected: &std::collections::BTreeSet<Occurrence>,
) {
    let missing: Vec<_> = expected.iter().filter(|o| !got.contains_key(*o)).collect();
    let extra: Vec<_> = got.keys().filter(|o| !expected.contains(*o)).collect();
    let repeated: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && repeated.is_empty(),
        "{} missing (first {:?}), {} unexpected (first {:?}), {} repeated (first {:?})",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first(),
        repeated.len(),
        repeated.first()
    );
}
