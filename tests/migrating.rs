//! docs/migrating.md works as written: every example marked `<!-- example: NAME -->` runs
//! against the real binary, with the test API server where the example needs a cluster. Only
//! paths are swapped for temporary ones.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::event::EventBuilder;
use support::fake_api::ApiServer;
use support::*;

fn guide() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/migrating.md"))
        .expect("docs/migrating.md")
}

/// The fenced block right after `<!-- example: NAME -->`.
fn example(name: &str) -> String {
    let text = guide();
    let marker = format!("<!-- example: {name} -->");
    let after = text
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/migrating.md has no {marker}"))
        .1;
    let mut lines = after.trim_start().lines();
    let fence = lines.next().expect("a fence after the marker");
    assert!(
        fence.starts_with("```"),
        "{marker} is not followed by a code block"
    );
    lines
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A core/v1 Event as the API server returns it, without a count: `count` makes it an
/// old-style one, `series` a new-style one.
fn kubelet_event(ns: &str, name: &str, kind: &str) -> EventBuilder {
    EventBuilder::new(ns, name)
        .reason(if kind == "Warning" {
            "BackOff"
        } else {
            "Pulled"
        })
        .message("m")
        .event_type(kind)
        .reported_by("kubelet", "node-1")
        .no_timestamps()
        .no_count()
}

fn envelope(verb: &str, event: &Value) -> String {
    format!("{}\n", json!({"type": verb, "object": event}))
}

#[test]
fn the_python_tools_environment_runs_unchanged_and_its_bloom_files_are_left_alone() {
    let env: BTreeMap<String, String> = example("python-env")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    for name in [
        "KUBE_EVENT_PIPE_DESTINATION",
        "KUBE_EVENT_PIPE_LOG_LEVEL",
        "KUBE_EVENT_PIPE_PERSISTENCE_PATH",
        "KUBE_EVENT_PIPE_FILTER_CAPACITY",
        "KUBE_EVENT_PIPE_BATCH_COUNT",
        "KUBE_EVENT_PIPE_BATCH_DURATION_SEC",
    ] {
        assert!(env.contains_key(name), "the example sets {name}");
    }

    let dir = tempfile::tempdir().unwrap();
    let filters = dir.path().join("filters");
    std::fs::create_dir(&filters).unwrap();
    let old_filter = b"pybloomfiltermmap bits of the Python tool";
    std::fs::write(filters.join("filter.bloom"), old_filter).unwrap();
    let out = dir.path().join("events.jsonl");

    // An old-style event counted by `count`, and a new-style one that repeats in
    // `series.count` with `count` unset: the Python tool would print its first occurrence only.
    let mut input = String::new();
    input.push_str(&envelope(
        "ADDED",
        &kubelet_event("shop", "web.1", "Warning").count(1).build(),
    ));
    input.push_str(&envelope(
        "MODIFIED",
        &kubelet_event("shop", "web.1", "Warning").count(2).build(),
    ));
    input.push_str(&envelope(
        "ADDED",
        &kubelet_event("shop", "sched.1", "Warning")
            .series(1)
            .build(),
    ));
    input.push_str(&envelope(
        "MODIFIED",
        &kubelet_event("shop", "sched.1", "Warning")
            .series(2)
            .build(),
    ));
    input.push_str(&envelope(
        "MODIFIED",
        &kubelet_event("shop", "sched.1", "Warning")
            .series(2)
            .build(),
    ));
    let replay = dir.path().join("input.jsonl");
    std::fs::write(&replay, &input).unwrap();

    let run = |log: &str| {
        let status = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(&env)
            .env("KUBE_EVENT_PIPE_DESTINATION", &out)
            .env("KUBE_EVENT_PIPE_PERSISTENCE_PATH", &filters)
            .args(["--source", "replay", "--replay-file"])
            .arg(&replay)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(log)).unwrap())
            .status()
            .expect("run the binary");
        assert!(
            status.success(),
            "{}",
            std::fs::read_to_string(dir.path().join(log)).unwrap()
        );
        std::fs::read_to_string(dir.path().join(log)).unwrap()
    };
    let log = run("first.log");
    let occurrences: Vec<Occurrence> = file_lines(&out)
        .iter()
        .map(|l| occurrence(&serde_json::from_str(l).unwrap()))
        .collect();
    assert_eq!(
        occurrences,
        vec![
            ("shop".into(), "web.1".into(), 1),
            ("shop".into(), "web.1".into(), 2),
            ("shop".into(), "sched.1".into(), 1),
            ("shop".into(), "sched.1".into(), 2),
        ],
        "each occurrence once, new-style repeats included"
    );
    // WARNING is the Python level name; the pipe's warning about the old files shows at it.
    assert!(
        log.contains("found *.bloom files of the Python kube-event-pipe; they are not read and are left in place"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(filters.join("filter.bloom")).unwrap(),
        old_filter
    );
    assert!(guide().contains(
        "`found *.bloom files of the Python kube-event-pipe; they are not read and are left in place`"
    ));

    // The filters were made with the example's capacity and the 1e-6 default rate.
    let inspect = Command::new(BIN)
        .env_clear()
        .args(["inspect", "--json", "--persistence-path"])
        .arg(&filters)
        .output()
        .expect("run inspect");
    assert!(inspect.status.success());
    let report: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let generation = &report["generations"][0];
    assert_eq!(
        generation["capacity"].as_u64().map(|c| c.to_string()),
        Some(env["KUBE_EVENT_PIPE_FILTER_CAPACITY"].clone())
    );
    assert_eq!(generation["target_fp_rate"], 1e-6);
    assert_eq!(generation["inserted"], 4);

    // A second run delivers nothing more: the new filters remember.
    run("second.log");
    assert_eq!(count_lines(&out), 4);
}

#[test]
fn a_k8stream_config_json_drives_the_pipe_as_it_is() {
    let server = ApiServer::start();
    for i in 0..12 {
        server.add(
            kubelet_event("default", &format!("e{i}"), "Normal")
                .count(1)
                .build(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let sink_dir = dir.path().join("l9k8stream");
    std::fs::create_dir(&sink_dir).unwrap();
    let mut config: Value = serde_json::from_str(&example("k8stream-config")).expect("JSON");
    for key in [
        "batch_size",
        "batch_interval",
        "uid",
        "file_sink_dir",
        "prefix",
        "aws_region",
        "aws_bucket",
        "aws_profile",
        "sink",
        "kubeconfig",
    ] {
        assert!(
            config.get(key).is_some(),
            "the example has k8stream's {key}"
        );
    }
    config["file_sink_dir"] = json!(sink_dir);
    config["kubeconfig"] = json!(server.kubeconfig());
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();

    let log = dir.path().join("run.log");
    let child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--config")
        .arg(&path)
        .arg("--persistence-path")
        .arg(dir.path().join("filters"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the binary");
    let mut child = Killed(child);
    let out = sink_dir.join("events.jsonl");
    wait_for("12 events in file_sink_dir/events.jsonl", || {
        (count_lines(&out) == 12).then_some(())
    });
    assert_eq!(child.0.try_wait().unwrap(), None, "still watching");
    signal(&child.0, libc::SIGTERM);
    assert!(
        wait_exit(&mut child.0).success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn format_eventrouter_prints_eventrouters_wrapper_with_the_previous_version() {
    let command = example("eventrouter");
    let args: Vec<&str> = command
        .trim()
        .strip_prefix("kube-event-pipe ")
        .expect("a kube-event-pipe command")
        .split_whitespace()
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let first = kubelet_event("shop", "web-0.1", "Warning").count(1).build();
    let second = kubelet_event("shop", "web-0.1", "Warning").count(2).build();
    let input = [
        envelope("ADDED", &first),
        envelope("MODIFIED", &second),
        // Unchanged count: not an occurrence, printed by eventrouter but not here.
        envelope("MODIFIED", &second),
    ]
    .concat();
    let mut child = pipe(&dir.path().join("filters"))
        .args(["--replay-file", "-"])
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the binary");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["verb"], "ADDED");
    assert_eq!(lines[0]["event"], first);
    assert!(lines[0].get("old_event").is_none_or(Value::is_null));
    assert_eq!(lines[1]["verb"], "UPDATED");
    assert_eq!(lines[1]["event"], second);
    assert_eq!(lines[1]["old_event"], first);

    // The guide's sample lines have the same shape.
    let guide = guide();
    let sample: Vec<Value> = guide
        .lines()
        .filter(|l| l.starts_with("{\"verb\""))
        .map(|l| serde_json::from_str(l).expect("sample line is JSON"))
        .collect();
    assert_eq!(sample.len(), 2);
    for (doc, real) in sample.iter().zip(&lines) {
        assert_eq!(doc["verb"], real["verb"]);
        assert_eq!(doc["event"]["count"], real["event"]["count"]);
        assert_eq!(doc["old_event"]["count"], real["old_event"]["count"]);
    }
}

#[test]
fn the_event_exporter_translation_filters_at_the_api_server() {
    let server = ApiServer::start();
    server.add(
        kubelet_event("default", "warn.1", "Warning")
            .count(1)
            .build(),
    );
    server.add(
        kubelet_event("default", "normal.1", "Normal")
            .count(1)
            .build(),
    );
    server.add(
        kubelet_event("kube-system", "warn.2", "Warning")
            .count(1)
            .build(),
    );
    server.add(
        kubelet_event("payments", "warn.3", "Warning")
            .count(3)
            .build(),
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let config_text = example("event-exporter-config")
        .replace("/var/log/kube-events/events.jsonl", out.to_str().unwrap())
        .replace(
            "/var/lib/kube-event-pipe",
            dir.path().join("filters").to_str().unwrap(),
        );
    assert!(
        config_text.contains(out.to_str().unwrap()),
        "the example names a destination"
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_text).unwrap();

    let log = dir.path().join("run.log");
    let child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--config")
        .arg(&config)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        // Flags win over the file: INFO shows when the initial list is delivered.
        .args(["--log-level", "INFO", "--log-format", "text"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the binary");
    let mut child = Killed(child);
    wait_for("the initial list to be delivered", || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("initial list delivered; ready")
            .then_some(())
    });
    let mut got: Vec<Occurrence> = file_lines(&out)
        .iter()
        .map(|l| occurrence(&serde_json::from_str(l).unwrap()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("default".into(), "warn.1".into(), 1),
            ("payments".into(), "warn.3".into(), 3),
        ],
        "Warnings outside kube-system only"
    );
    signal(&child.0, libc::SIGTERM);
    assert!(wait_exit(&mut child.0).success());
}
