//! The binary over replayed input: each occurrence once, across runs, and the exact messages
//! for bad configuration and malformed input.

mod support;

use std::io::Write;
use std::process::Stdio;

use kube_event_pipe::synth::{SynthConfig, generate};
use support::*;

fn run_on_file(persistence: &std::path::Path, input: &std::path::Path) -> (Vec<String>, String) {
    let out = pipe(persistence)
        .arg("--replay-file")
        .arg(input)
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    (
        stdout.split_inclusive('\n').map(str::to_owned).collect(),
        stderr,
    )
}

#[test]
fn replaying_the_sample_twice_delivers_each_occurrence_once_then_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample_path();
    let input = std::fs::read_to_string(&sample).unwrap();
    let expected = expected_occurrences(&input);
    assert!(expected.len() > 300, "the sample has {}", expected.len());

    let (first, _) = run_on_file(dir.path(), &sample);
    assert_eq!(first.len(), expected.len());
    assert_exactly_once(&tally(first.iter().map(String::as_str)), &expected);

    let (second, stderr) = run_on_file(dir.path(), &sample);
    assert!(
        second.is_empty(),
        "second run printed {} lines",
        second.len()
    );
    assert!(stderr.contains("emitted=0"), "{stderr}");
}

#[test]
fn the_sample_mixes_both_event_styles_and_pretty_printed_envelopes() {
    let input = std::fs::read_to_string(sample_path()).unwrap();
    let mut old_style = 0;
    let mut new_style = 0;
    for v in serde_json::Deserializer::from_str(&input).into_iter::<serde_json::Value>() {
        let ev = &v.unwrap()["object"];
        if ev["eventTime"].is_string() {
            new_style += 1;
        } else if ev["count"].as_u64() > Some(0) {
            old_style += 1;
        }
    }
    assert!(
        old_style > 50 && new_style > 50,
        "{old_style} / {new_style}"
    );
    assert!(
        input.contains("{\n"),
        "no pretty-printed envelope in the sample"
    );
}

#[test]
fn duplicates_and_both_styles_through_stdin_come_out_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let stream = generate(&SynthConfig {
        envelopes: 5000,
        seed: 7,
        pretty_every: Some(97),
        ..SynthConfig::default()
    });
    assert!(stream.duplicates >= 400, "{} duplicates", stream.duplicates);
    let mut child = pipe(dir.path())
        .args(["--replay-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let text = stream.text.clone();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = Reader::spawn(child.stdout.take().unwrap()).all();
    writer.join().unwrap().unwrap();
    assert!(wait_exit(&mut child).success());
    assert_eq!(expected_occurrences(&stream.text), stream.occurrences);
    assert_exactly_once(&tally(out.iter().map(String::as_str)), &stream.occurrences);
}

#[test]
fn malformed_input_is_reported_by_line_and_the_rest_flows_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    let good = r#"{"type":"ADDED","object":{"kind":"Event","metadata":{"name":"ok.1","namespace":"default"},"count":1}}"#;
    std::fs::write(
        &input,
        format!(
            "{good}\n{{\"type\":\"ADDED\",\"object\":{{\"kind\":\"Event\"}}}}\n{{not json}}\n[1, 2\n{}\n",
            good.replace("ok.1", "ok.2")
        ),
    )
    .unwrap();
    let (out, stderr) = run_on_file(&dir.path().join("filters"), &input);
    assert_eq!(out.len(), 2, "{stderr}");
    for message in [
        "skipping malformed input at line 2: event has no metadata.name",
        "skipping malformed input at line 3: key must be a string (column 2)",
        "skipping malformed input at line 4:",
    ] {
        assert!(
            stderr.contains(message),
            "missing {message:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("malformed=3"), "{stderr}");
}

/// Runs the binary with a bad setting; returns its stderr after asserting exit status 2.
fn config_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = pipe(dir.path())
        .args(["--replay-file", "-"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(files.is_empty(), "a rejected config created {files:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_config_values_name_their_origin_the_value_and_what_is_accepted() {
    assert_eq!(
        config_error(&["--filter-capacity", "12x"], &[]),
        "error: --filter-capacity=12x (flag): must be a whole number from 1000 to 1000000000\n"
    );
    assert_eq!(
        config_error(&[], &[("KUBE_EVENT_PIPE_FILTER_ERROR_RATE", "2")]),
        "error: KUBE_EVENT_PIPE_FILTER_ERROR_RATE=2 (environment): must be a number in (0, 1), e.g. 0.000001\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "batch_size: 0\n").unwrap();
    assert_eq!(
        config_error(&["--config", file.to_str().unwrap()], &[]),
        format!(
            "error: batch_size=0 (config file {}): must be a whole number from 1 to 1000000\n",
            file.display()
        )
    );
    std::fs::write(&file, "sink: [stdout, s3]\n").unwrap();
    assert_eq!(
        config_error(&["--config", file.to_str().unwrap()], &[]),
        "error: the s3 sink needs a bucket: set --s3-bucket, KUBE_EVENT_PIPE_S3_BUCKET or aws_bucket in the config file\n"
    );
}

#[test]
fn the_default_kube_source_without_a_kubeconfig_says_what_to_set_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-kubeconfig");
    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("KUBECONFIG", &missing)
        .arg("--persistence-path")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: cannot load a Kubernetes client configuration: {}: ",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.ends_with(
            "; pass --kubeconfig FILE (and --context NAME), set KUBECONFIG, or run in a pod with a service account\n"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_missing_replay_file_is_named_once_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = pipe(dir.path())
        .args(["--replay-file", "/nonexistent/events.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: cannot open replay file /nonexistent/events.jsonl: No such file or directory (os error 2); check the path given to --replay-file\n"
    );
}
