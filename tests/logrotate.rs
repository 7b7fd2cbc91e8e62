//! The file sink under logrotate: `create` mode with a SIGHUP, a move or delete without one,
//! and `copytruncate`. Each chunk of input is its own stream (its own seed), so the test knows
//! how many lines each chunk must add.

mod support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};

use kube_event_pipe::synth::{Stream, SynthConfig, generate};
use support::*;

fn chunks(n: usize, envelopes: usize) -> Vec<Stream> {
    (0..n)
        .map(|i| {
            generate(&SynthConfig {
                envelopes,
                seed: 1000 + i as u64,
                ..SynthConfig::default()
            })
        })
        .collect()
}

fn start(dir: &Path, out: &Path) -> (Child, ChildStdin) {
    let mut child = pipe(&dir.join("filters"))
        .args([
            "--replay-file",
            "-",
            "--batch-interval",
            "0.02",
            "--destination",
        ])
        .arg(out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

fn finish(mut child: Child, stdin: ChildStdin, dir: &Path) {
    drop(stdin);
    let status = wait_exit(&mut child);
    let log = fs::read_to_string(dir.join("stderr.log")).unwrap();
    assert!(status.success(), "exit {status:?}:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

fn all_expected(streams: &[Stream]) -> std::collections::BTreeSet<Occurrence> {
    streams
        .iter()
        .flat_map(|s| s.occurrences.iter().cloned())
        .collect()
}

#[test]
fn sighup_after_each_of_20_renames_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let streams = chunks(20, 1000);
    let (child, mut stdin) = start(dir.path(), &out);
    for (i, stream) in streams.iter().enumerate() {
        stdin.write_all(stream.text.as_bytes()).unwrap();
        stdin.flush().unwrap();
        // Rename while lines are flowing: as soon as the current file has any.
        wait_for("lines in the current file", || {
            (count_lines(&out) > 0).then_some(())
        });
        fs::rename(&out, dir.path().join(format!("events.jsonl.{i}"))).unwrap();
        signal(&child, libc::SIGHUP);
    }
    finish(child, stdin, dir.path());

    let mut lines = Vec::new();
    for i in 0..20 {
        let part = file_lines(&dir.path().join(format!("events.jsonl.{i}")));
        assert!(!part.is_empty(), "rotated file {i} is empty");
        lines.extend(part);
    }
    lines.extend(file_lines(&out));
    let expected = all_expected(&streams);
    assert!(expected.len() > 15_000, "{}", expected.len());
    assert_exactly_once(&tally(lines.iter().map(String::as_str)), &expected);
}

#[test]
fn a_moved_or_deleted_file_is_noticed_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let streams = chunks(3, 300);
    let (child, mut stdin) = start(dir.path(), &out);
    let mut kept = Vec::new();

    // Chunk 0, then move the file away as logrotate's `create` mode does, without a SIGHUP.
    stdin.write_all(streams[0].text.as_bytes()).unwrap();
    let n0 = streams[0].occurrences.len();
    wait_for("chunk 0", || (count_lines(&out) == n0).then_some(()));
    fs::rename(&out, dir.path().join("events.jsonl.1")).unwrap();
    kept.extend(file_lines(&dir.path().join("events.jsonl.1")));

    // Chunk 1 must land in a new file at the same path.
    stdin.write_all(streams[1].text.as_bytes()).unwrap();
    let n1 = streams[1].occurrences.len();
    wait_for("chunk 1 in a new file", || {
        (count_lines(&out) == n1).then_some(())
    });
    assert_eq!(count_lines(&dir.path().join("events.jsonl.1")), n0);
    kept.extend(file_lines(&out));
    fs::remove_file(&out).unwrap();

    // Deleted: chunk 2 recreates it.
    stdin.write_all(streams[2].text.as_bytes()).unwrap();
    let n2 = streams[2].occurrences.len();
    wait_for("chunk 2 in a recreated file", || {
        (count_lines(&out) == n2).then_some(())
    });
    finish(child, stdin, dir.path());
    kept.extend(file_lines(&out));
    assert_exactly_once(
        &tally(kept.iter().map(String::as_str)),
        &all_expected(&streams),
    );
}

#[test]
fn copytruncate_leaves_no_hole_and_no_lost_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let streams = chunks(4, 300);
    let (child, mut stdin) = start(dir.path(), &out);
    let mut kept = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        stdin.write_all(stream.text.as_bytes()).unwrap();
        let n = stream.occurrences.len();
        wait_for("the chunk's lines", || {
            (count_lines(&out) == n).then_some(())
        });
        let bytes = fs::read(&out).unwrap();
        // O_APPEND: after the truncation the next write starts at 0, not at the old offset,
        // which would leave a run of NUL bytes that log shippers choke on.
        assert_ne!(bytes.first(), Some(&0), "hole at the start of chunk {i}");
        kept.extend(file_lines(&out));
        // logrotate's copytruncate, done while the writer is idle so that no line falls in
        // the window between the copy and the truncation (a limit of copytruncate itself).
        fs::copy(&out, dir.path().join(format!("events.jsonl.{i}"))).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&out)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    finish(child, stdin, dir.path());
    assert_eq!(fs::metadata(&out).unwrap().len(), 0);
    assert_exactly_once(
        &tally(kept.iter().map(String::as_str)),
        &all_expected(&streams),
    );
}
