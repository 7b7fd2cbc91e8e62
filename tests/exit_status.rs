//! What the binary says and how it exits when something is wrong: events left undelivered, a
//! second signal, a mistyped log level, a persistence path that is a file, a torn output file
//! from a crash, a byte-order mark in the replay input.

mod support;

use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use support::event::EventBuilder;
use support::*;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The lines of stderr that the binary prints itself (`error: …`), not the log's.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect()
}

#[test]
fn events_left_undelivered_at_the_shutdown_timeout_exit_3_with_their_count() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample_path();
    let expected = expected_occurrences(&fs::read_to_string(&sample).unwrap()).len();
    let out = pipe(&dir.path().join("filters"))
        .arg("--replay-file")
        .arg(&sample)
        .args(["--destination", "/dev/full", "--shutdown-timeout", "1"])
        .output()
        .unwrap();
    let log = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    let errors = error_lines(&log);
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].starts_with(&format!(
            "error: {expected} accepted events were not delivered to every sink when the shutdown timeout (1s) passed; "
        )),
        "{}",
        errors[0]
    );
}

#[test]
fn a_second_sigterm_exits_with_128_plus_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = pipe(&dir.path().join("filters"))
        .args(["--replay-file", "-", "--destination", "/dev/full"])
        .args(["--shutdown-timeout", "600"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stdin stays open; the sink keeps failing, so the first signal's drain never ends.
    let mut stdin = child.stdin.take().unwrap();
    let line = EventBuilder::bare("default", "a")
        .reason("Tested")
        .count(1)
        .to_line();
    stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut stderr = Reader::spawn(child.stderr.take().unwrap());
    let mut seen = 0;
    let mut wait_for_line = |needle: &str| loop {
        seen += 1;
        if stderr.until(seen)[seen - 1].contains(needle) {
            break;
        }
    };
    wait_for_line("sink failing");
    signal(&child, libc::SIGTERM);
    wait_for_line("shutdown requested");
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child);
    assert_eq!(status.signal(), None, "{status:?}");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    drop(stdin);
}

#[test]
fn a_mistyped_log_level_is_refused_with_exit_2_and_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (variable, value, accepted) in [
        ("KUBE_EVENT_PIPE_LOG_LEVEL", "INF0", false),
        ("KUBE_EVENT_PIPE_LOG_LEVEL", "kube_event_pipe", false),
        ("KUBE_EVENT_PIPE_LOG_LEVEL", "warning", true),
        ("KUBE_EVENT_PIPE_LOG_LEVEL", "kube_event_pipe=DEBUG", true),
    ] {
        let out = Command::new(BIN)
            .env_clear()
            .env(variable, value)
            .args(["--source", "replay", "--replay-file"])
            .arg(sample_path())
            .arg("--persistence-path")
            .arg(dir.path().join(value))
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let log = stderr_of(&out);
        if accepted {
            assert_eq!(out.status.code(), Some(0), "{value}: {log}");
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{value}: {log}");
        assert_eq!(
            log,
            format!(
                "error: {variable}={value} (environment): must be DEBUG, INFO, WARNING, ERROR or CRITICAL, or tracing directives with a level such as kube_event_pipe=debug,kube=warn\n"
            )
        );
    }
}

#[test]
fn a_persistence_path_that_is_a_file_says_it_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("filters");
    fs::write(&file, b"").unwrap();
    let out = pipe(&file)
        .arg("--replay-file")
        .arg(sample_path())
        .output()
        .unwrap();
    let log = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(
        error_lines(&log),
        vec![format!(
            "error: persistence path {} is not a directory; set KUBE_EVENT_PIPE_PERSISTENCE_PATH (--persistence-path) to a directory on the filter volume",
            file.display()
        )]
    );
}

#[test]
fn a_torn_last_line_from_a_crash_is_cut_and_the_event_delivered_whole() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("events.jsonl");
    let tested = |name: &str| {
        EventBuilder::bare("default", name)
            .reason("Tested")
            .count(1)
            .to_line()
    };
    let earlier = format!("{}\n", tested("earlier"));
    // The crash cut the write of event "b" after 30 bytes.
    let fragment = &tested("b")[..30];
    fs::write(&output, format!("{earlier}{fragment}")).unwrap();
    let input = dir.path().join("input.jsonl");
    fs::write(&input, format!("{}\n{}\n", tested("a"), tested("b"))).unwrap();
    let out = pipe(&dir.path().join("filters"))
        .arg("--replay-file")
        .arg(&input)
        .arg("--destination")
        .arg(&output)
        .output()
        .unwrap();
    let log = stderr_of(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("output file ended in a partial line") && l.contains("bytes=30")),
        "{log}"
    );
    let lines = file_lines(&output);
    let got = tally(lines.iter().map(String::as_str));
    let names: Vec<_> = got.keys().map(|(_, name, _)| name.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "earlier"]);
    assert!(got.values().all(|&n| n == 1), "{got:?}");
}

#[test]
fn replay_input_starting_with_a_byte_order_mark_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    let [a, b] = ["a", "b"].map(|name| {
        EventBuilder::bare("default", name)
            .reason("Tested")
            .count(1)
            .to_line()
    });
    fs::write(&input, format!("\u{feff}{a}\n{b}\n")).unwrap();
    let out = pipe(&dir.path().join("filters"))
        .arg("--replay-file")
        .arg(&input)
        .output()
        .unwrap();
    let log = stderr_of(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("skipping malformed"), "{log}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let got = tally(stdout.split_inclusive('\n'));
    assert_eq!(got.len(), 2, "{stdout}");
}
