//! The HTTP webhook sink against a real receiver on 127.0.0.1: an outage (503s, then a 429
//! with Retry-After) delivers every event once with the waits honoured; a 400 goes to the
//! dead-letter directory and is committed, or without one is logged once and retried on the
//! slow timer; the bearer token is re-read when it rotates; a kill -9 loses nothing.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_event_pipe::synth::{SynthConfig, generate};
use serde_json::Value;
use support::conformance::*;
use support::receiver::{Receiver, Reply, Request};
use support::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minikube-eventlist.json")
}

fn webhook_pipe(persistence: &Path, receiver: &Receiver) -> Command {
    let mut cmd = pipe(persistence);
    cmd.args(["--sink", "http", "--http-url"])
        .arg(format!("{}/hook", receiver.url()));
    cmd
}

/// Occurrences in the accepted NDJSON bodies, with how often each arrived.
fn delivered(requests: &[Request]) -> BTreeMap<Occurrence, usize> {
    let text: String = requests
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    tally(text.split_inclusive('\n'))
}

#[test]
fn an_outage_of_503s_then_a_429_with_retry_after_delivers_every_event_once_after_the_waits() {
    let dir = tempfile::tempdir().unwrap();
    let stream = generate(&SynthConfig {
        envelopes: 2000,
        seed: 3,
        ..SynthConfig::default()
    });
    let input = dir.path().join("input.jsonl");
    fs::write(&input, &stream.text).unwrap();
    // 503 for the first 1.5 s, then one 429 asking for 2 s, then 200.
    let started: Arc<Mutex<Option<Instant>>> = Arc::default();
    let first = started.clone();
    let mut asked = false;
    let receiver = Receiver::start(move |_, r| {
        let t0 = *first.lock().unwrap().get_or_insert(r.at);
        if r.at - t0 < Duration::from_millis(1500) {
            Reply::status(503)
        } else if !asked {
            asked = true;
            Reply::status(429).retry_after("2")
        } else {
            Reply::ok()
        }
    });
    let out = webhook_pipe(&dir.path().join("p"), &receiver)
        .arg("--replay-file")
        .arg(&input)
        .args(["--batch-size", "250"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let all = receiver.requests();
    let unavailable = all.iter().filter(|r| r.status == 503).count();
    assert!(unavailable >= 3, "{unavailable} attempts during the outage");
    let throttled = all.iter().position(|r| r.status == 429).expect("a 429");
    let waited = all[throttled + 1].at - all[throttled].at;
    assert!(
        waited >= Duration::from_secs(2),
        "retried {waited:?} after a 429 asking for 2 s"
    );
    for r in &all {
        assert_eq!(r.path, "/hook");
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
    }
    assert_exactly_once(&delivered(&receiver.accepted()), &stream.occurrences);
    // One WARN when the 503s start, one when they turn into a 429, one INFO at the end.
    assert_eq!(stderr.matches("HTTP sink failing").count(), 2, "{stderr}");
    assert_eq!(stderr.matches("HTTP sink recovered").count(), 1, "{stderr}");
}

#[test]
fn a_400_goes_to_the_dead_letter_directory_is_committed_and_the_pipe_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let persistence = dir.path().join("p");
    let letters = dir.path().join("dead");
    // The first batch is refused; every later one is taken.
    let receiver = Receiver::start(|n, _| {
        if n == 0 {
            Reply::status(400).body("application/json", br#"{"error":"schema"}"#.to_vec())
        } else {
            Reply::ok()
        }
    });
    let run = || {
        webhook_pipe(&persistence, &receiver)
            .arg("--replay-file")
            .arg(fixture())
            .arg("--dead-letter-dir")
            .arg(&letters)
            .args(["--batch-size", "5"])
            .output()
            .unwrap()
    };
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let files = dead_letter_files(&letters);
    assert_eq!(files.len(), 1, "{files:?}");
    let mut dead = Vec::new();
    for v in dead_letters(&files[0]) {
        assert_eq!(v["sink"], "http");
        assert!(
            v["reason"].as_str().unwrap().contains("400 Bad Request"),
            "{v}"
        );
        assert!(v["reason"].as_str().unwrap().contains("schema"), "{v}");
        dead.push(format!("{}\n", v["event"]));
    }
    // The refused batch: up to `--batch-size` events, fewer when the input went idle first.
    assert!(
        (1..=5).contains(&dead.len()),
        "the refused batch: {}",
        dead.len()
    );
    // Dead letters and deliveries together hold every event, once.
    let mut all = delivered(&receiver.accepted());
    for (o, n) in tally(dead.iter().map(String::as_str)) {
        *all.entry(o).or_insert(0) += n;
    }
    let expected = expected_occurrences(&fs::read_to_string(fixture()).unwrap());
    assert_exactly_once(&all, &expected);
    assert_eq!(
        stderr
            .matches("written to the dead-letter directory")
            .count(),
        1,
        "{stderr}"
    );

    // Committed: a second run sends nothing and writes no new dead letter.
    let before = receiver.count();
    let out = run();
    assert!(out.status.success());
    assert_eq!(receiver.count(), before);
    assert_eq!(fs::read_dir(&letters).unwrap().count(), 1);
}

#[test]
fn a_401_is_not_dead_lettered_but_retried_until_the_credentials_are_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let letters = dir.path().join("dead");
    let receiver = Receiver::start(|n, _| {
        if n < 2 {
            Reply::status(401)
        } else {
            Reply::ok()
        }
    });
    let out = webhook_pipe(&dir.path().join("p"), &receiver)
        .arg("--replay-file")
        .arg(fixture())
        .arg("--dead-letter-dir")
        .arg(&letters)
        .args(["--refused-retry-interval", "0.3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(fs::read_dir(&letters).unwrap().count(), 0, "no dead letter");
    let expected = expected_occurrences(&fs::read_to_string(fixture()).unwrap());
    assert_exactly_once(&delivered(&receiver.accepted()), &expected);
}

#[test]
fn without_a_dead_letter_directory_a_400_is_logged_once_and_retried_on_the_slow_timer() {
    let dir = tempfile::tempdir().unwrap();
    // Refused three times, then taken (someone fixed the receiver).
    let receiver = Receiver::start(|n, _| {
        if n < 3 {
            Reply::status(400)
        } else {
            Reply::ok()
        }
    });
    let out = webhook_pipe(&dir.path().join("p"), &receiver)
        .arg("--replay-file")
        .arg(fixture())
        .args(["--refused-retry-interval", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let all = receiver.requests();
    assert_eq!(all[..3].iter().filter(|r| r.status == 400).count(), 3);
    for pair in all[..4].windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_secs(1),
            "a refused batch was retried after {gap:?}, before the slow timer"
        );
    }
    let errors: Vec<_> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "ERROR once for the refusal: {stderr}");
    assert!(errors[0].contains("400"), "{}", errors[0]);
    let expected = expected_occurrences(&fs::read_to_string(fixture()).unwrap());
    assert_exactly_once(&delivered(&receiver.accepted()), &expected);
}

#[test]
fn a_json_array_carries_the_bearer_token_read_again_after_it_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    fs::write(&token, "first\n").unwrap();
    let rotate = token.clone();
    // The first request is answered 503; meanwhile the token rotates, as the kubelet replaces
    // a projected token (a new file renamed over the old one).
    let receiver = Receiver::start(move |n, _| {
        if n == 0 {
            let next = rotate.with_extension("new");
            fs::write(&next, "second\n").unwrap();
            fs::rename(&next, &rotate).unwrap();
            Reply::status(503).retry_after("0")
        } else {
            Reply::ok()
        }
    });
    let out = webhook_pipe(&dir.path().join("p"), &receiver)
        .arg("--replay-file")
        .arg(fixture())
        .args(["--http-format", "json", "--http-compression", "gzip"])
        .arg("--http-bearer-token-file")
        .arg(&token)
        .args(["--http-header", "X-Source=kube-event-pipe"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("first") && !stderr.contains("second"),
        "{stderr}"
    );
    let all = receiver.requests();
    assert_eq!(all[0].headers["authorization"], "Bearer first");
    assert_eq!(all[1].headers["authorization"], "Bearer second");
    let mut events = Vec::new();
    for r in &receiver.accepted() {
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["content-encoding"], "gzip");
        assert_eq!(r.headers["x-source"], "kube-event-pipe");
        let array: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
        events.extend(array.into_iter().map(|v| format!("{v}\n")));
    }
    let expected = expected_occurrences(&fs::read_to_string(fixture()).unwrap());
    assert_exactly_once(&tally(events.iter().map(String::as_str)), &expected);
}

#[test]
fn kill_9_during_a_post_then_a_rerun_loses_nothing() {
    let receiver = Receiver::start(|_, _| Reply::ok().delayed(Duration::from_millis(300)));
    let dir = tempfile::tempdir().unwrap();
    let persistence = dir.path().join("p");
    let (stream, input) = synthetic_input(dir.path(), 3000, 9);
    let run = || {
        let mut cmd = webhook_pipe(&persistence, &receiver);
        cmd.arg("--replay-file")
            .arg(&input)
            .args(["--batch-size", "100"]);
        cmd
    };
    let mut child = run().stderr(Stdio::null()).spawn().unwrap();
    wait_for("three posts", || (receiver.count() >= 3).then_some(()));
    kill_9(&mut child);
    assert!(
        receiver.count() * 100 < stream.occurrences.len(),
        "killed after the end"
    );
    run_to_success(&mut run());
    let got = delivered(&receiver.accepted());
    assert_nothing_lost(&stream.occurrences, |o| got.contains_key(o));
}
