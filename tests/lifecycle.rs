//! Process lifecycle with real signals and real restarts: kill -9 mid-replay, SIGTERM, and a
//! reader that goes away (`| head`).

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use kube_event_pipe::synth::{SynthConfig, generate};
use support::conformance::*;
use support::*;

/// Default `--batch-size`: the crash bound below is stated in its terms.
const BATCH_SIZE: usize = 500;
/// One hand-off from the source to the dedup stage (`source::replay`).
const SOURCE_HANDOFF: usize = 256;
/// Batches a sink's queue holds (`sink::SINK_QUEUE`).
const SINK_QUEUE: usize = 4;

#[test]
fn kill_9_mid_replay_then_rerun_misses_nothing_and_repeats_at_most_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let filters = dir.path().join("filters");
    let (stream, input) = synthetic_input(dir.path(), 20_000, 99);
    let first = dir.path().join("first.jsonl");
    // The first run reads stdin and gets only two thirds of the input, with stdin kept open:
    // it cannot reach the end before the kill, however fast it runs.
    let mut child = pipe(&filters)
        .args(["--replay-file", "-"])
        .arg("--destination")
        .arg(&first)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines: Vec<&str> = stream.text.split_inclusive('\n').collect();
    let mut stdin = child.stdin.take().unwrap();
    for line in &lines[..lines.len() * 2 / 3] {
        stdin.write_all(line.as_bytes()).unwrap();
    }
    stdin.flush().unwrap();
    wait_for("a third of the events delivered", || {
        (count_lines(&first) >= stream.occurrences.len() / 3).then_some(())
    });
    let status = kill_9(&mut child);
    drop(stdin);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    let mut lines = file_lines(&first);
    // A write cut by the kill can leave a partial last line; that batch was never acknowledged,
    // so its events must come again in the second run.
    if lines.last().is_some_and(|l| !l.ends_with('\n')) {
        lines.pop();
    }
    let first_run = tally(lines.iter().map(String::as_str));
    assert!(
        first_run.len() < stream.occurrences.len(),
        "killed after the end"
    );

    let second = dir.path().join("second.jsonl");
    run_to_success(
        pipe(&filters)
            .arg("--replay-file")
            .arg(&input)
            .arg("--destination")
            .arg(&second),
    );
    let second_run = tally(file_lines(&second).iter().map(String::as_str));

    let repeated = first_run
        .keys()
        .filter(|k| second_run.contains_key(*k))
        .count();
    // The batcher's input and open batch, the batch it hands over, the sink's queue and the
    // four batches the file sink may have written and not yet synced (pipeline.rs's module doc).
    let bound = (SINK_QUEUE + 7) * BATCH_SIZE + SOURCE_HANDOFF;
    eprintln!(
        "first run {} lines, second run {} lines, {repeated} delivered by both (bound {bound})",
        first_run.len(),
        second_run.len()
    );
    assert!(repeated <= bound, "{repeated} repeated > {bound}");
    let mut union = first_run;
    for (k, n) in second_run {
        *union.entry(k).or_insert(0) += n;
    }
    union.retain(|_, n| {
        *n = 1;
        true
    });
    assert_exactly_once(&union, &stream.occurrences);
}

#[test]
fn sigterm_delivers_what_is_in_flight_exits_0_and_a_rerun_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let filters = dir.path().join("filters");
    let stream = generate(&SynthConfig {
        envelopes: 2000,
        seed: 5,
        ..SynthConfig::default()
    });
    let mut child = pipe(&filters)
        .args(["--replay-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stdin stays open: only the signal ends this run.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(stream.text.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut out = Reader::spawn(child.stdout.take().unwrap());
    let stderr = Reader::spawn(child.stderr.take().unwrap());
    out.until(stream.occurrences.len());
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child);
    let log = stderr.all().concat();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("end=Signal"), "{log}");
    assert_exactly_once(
        &tally(out.all().iter().map(String::as_str)),
        &stream.occurrences,
    );
    drop(stdin);

    let input = dir.path().join("input.jsonl");
    fs::write(&input, &stream.text).unwrap();
    let again = pipe(&filters)
        .arg("--replay-file")
        .arg(&input)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(again.stdout.is_empty(), "the rerun printed events");
}

#[test]
fn a_reader_that_goes_away_ends_the_process_quietly_with_status_0() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    let stream = generate(&SynthConfig {
        envelopes: 20_000,
        seed: 3,
        ..SynthConfig::default()
    });
    fs::write(&input, &stream.text).unwrap();
    let mut child = pipe(&dir.path().join("filters"))
        .arg("--replay-file")
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Reader::spawn(child.stderr.take().unwrap());
    {
        // `| head -n 5`
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        for _ in 0..5 {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.ends_with("}\n"), "{line:?}");
        }
    }
    let status = wait_exit(&mut child);
    let log = stderr.all().concat();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("end=StdoutClosed"), "{log}");
}
