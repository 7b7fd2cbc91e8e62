//! The OTLP logs sink against real HTTP receivers: one in the test that decodes the protobuf
//! with the same `opentelemetry-proto` types and checks the `k8s_events` receiver's layout on
//! the minikube capture, and `oteltap`, an independent OTLP receiver, taking 10k events once
//! each. Also the OTLP retry rules, partial success, dead letters and a kill -9.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kube_event_pipe::synth::{SynthConfig, generate};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value as V};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use serde_json::Value;
use support::conformance::*;
use support::receiver::{Receiver, Reply, Request};
use support::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minikube-eventlist.json")
}

fn otlp_pipe(persistence: &Path, receiver: &Receiver) -> Command {
    let mut cmd = pipe(persistence);
    cmd.args(["--sink", "otlp", "--otlp-endpoint"])
        .arg(receiver.url());
    cmd
}

/// One decoded record with its resource's attributes.
struct Record {
    resource: BTreeMap<String, V>,
    attributes: BTreeMap<String, V>,
    log: LogRecord,
}

fn map(kvs: &[KeyValue]) -> BTreeMap<String, V> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.clone().and_then(|v| v.value).expect("a value"),
            )
        })
        .collect()
}

fn records(requests: &[Request]) -> Vec<Record> {
    let mut out = Vec::new();
    for r in requests {
        let req = ExportLogsServiceRequest::decode(&r.body[..]).expect("an OTLP logs request");
        for rl in req.resource_logs {
            let resource = map(&rl.resource.expect("a resource").attributes);
            for sl in rl.scope_logs {
                assert_eq!(sl.scope.as_ref().unwrap().name, "kube-event-pipe");
                for log in sl.log_records {
                    out.push(Record {
                        resource: resource.clone(),
                        attributes: map(&log.attributes),
                        log,
                    });
                }
            }
        }
    }
    out
}

fn s(v: &str) -> V {
    V::StringValue(v.to_string())
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or("")
}

fn nanos(t: &str) -> u64 {
    let ts: jiff::Timestamp = t.parse().unwrap();
    ts.as_nanosecond() as u64
}

#[test]
fn the_minikube_capture_arrives_laid_out_as_the_k8s_events_receiver_lays_it_out() {
    let receiver = Receiver::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    fs::write(&token, "s3cr3t\n").unwrap();
    let out = otlp_pipe(&dir.path().join("p"), &receiver)
        .arg("--replay-file")
        .arg(fixture())
        .args(["--cluster-name", "minikube-test"])
        .args(["--otlp-header", "X-Scope-OrgID=tenant-a"])
        .arg(format!("--otlp-header=Authorization=@{}", token.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "a header value was logged");

    let requests = receiver.accepted();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.path, "/v1/logs");
        assert_eq!(r.headers["content-type"], "application/x-protobuf");
        assert_eq!(r.headers["content-encoding"], "gzip");
        assert_eq!(r.headers["x-scope-orgid"], "tenant-a");
        assert_eq!(r.headers["authorization"], "s3cr3t");
    }
    let got = records(&requests);
    let list: Value = serde_json::from_str(&fs::read_to_string(fixture()).unwrap()).unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(got.len(), items.len());

    let (mut old_style, mut new_style) = (0, 0);
    for ev in items {
        let name = text(ev, &["metadata", "name"]);
        let rec = got
            .iter()
            .find(|r| r.attributes.get("k8s.event.name") == Some(&s(name)))
            .unwrap_or_else(|| panic!("no record for {name}"));
        let io = |f: &str| s(text(ev, &["involvedObject", f]));
        assert_eq!(rec.resource["k8s.object.kind"], io("kind"), "{name}");
        assert_eq!(rec.resource["k8s.object.name"], io("name"));
        assert_eq!(rec.resource["k8s.object.uid"], io("uid"));
        assert_eq!(rec.resource["k8s.object.fieldpath"], io("fieldPath"));
        assert_eq!(rec.resource["k8s.object.api_version"], io("apiVersion"));
        assert_eq!(
            rec.resource["k8s.object.resource_version"],
            io("resourceVersion")
        );
        assert_eq!(
            rec.resource["k8s.node.name"],
            s(text(ev, &["source", "host"]))
        );
        assert_eq!(rec.resource["k8s.cluster.name"], s("minikube-test"));

        assert_eq!(rec.attributes["k8s.event.reason"], s(text(ev, &["reason"])));
        assert_eq!(rec.attributes["k8s.event.action"], s(text(ev, &["action"])));
        assert_eq!(
            rec.attributes["k8s.event.uid"],
            s(text(ev, &["metadata", "uid"]))
        );
        assert_eq!(rec.attributes["k8s.namespace.name"], io("namespace"));
        let created = text(ev, &["metadata", "creationTimestamp"]);
        // Go prints `2020-02-20T08:39:03Z` as `2020-02-20 08:39:03 +0000 UTC`.
        let go = format!(
            "{} +0000 UTC",
            created.trim_end_matches('Z').replace('T', " ")
        );
        assert_eq!(rec.attributes["k8s.event.start_time"], s(&go));

        let time = ["eventTime", "lastTimestamp", "firstTimestamp"]
            .iter()
            .find_map(|f| ev[*f].as_str())
            .map(nanos)
            .unwrap();
        assert_eq!(rec.log.time_unix_nano, time, "{name}");
        let (number, severity_text) = match text(ev, &["type"]) {
            "Normal" => (9, "Normal"),
            "Warning" => (13, "Warning"),
            other => panic!("unexpected type {other}"),
        };
        assert_eq!(rec.log.severity_number, number);
        assert_eq!(rec.log.severity_text, severity_text);
        assert_eq!(
            rec.log.body.clone().and_then(|b| b.value),
            Some(s(text(ev, &["message"])))
        );
        match ev["count"].as_i64() {
            Some(count) if count != 0 => {
                old_style += 1;
                assert_eq!(rec.attributes["k8s.event.count"], V::IntValue(count));
            }
            _ => {
                new_style += 1;
                assert!(!rec.attributes.contains_key("k8s.event.count"));
                assert!(ev["eventTime"].is_string());
            }
        }
    }
    assert!(
        old_style > 0 && new_style > 0,
        "{old_style} old, {new_style} new"
    );
}

#[test]
fn the_event_body_is_the_whole_line() {
    let receiver = Receiver::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let out = otlp_pipe(&dir.path().join("p"), &receiver)
        .arg("--replay-file")
        .arg(fixture())
        .args(["--otlp-body", "event", "--otlp-compression", "none"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = receiver.accepted();
    assert!(
        requests
            .iter()
            .all(|r| !r.headers.contains_key("content-encoding"))
    );
    let list: Value = serde_json::from_str(&fs::read_to_string(fixture()).unwrap()).unwrap();
    let mut bodies: Vec<Value> = records(&requests)
        .into_iter()
        .map(|r| match r.log.body.and_then(|b| b.value) {
            Some(V::StringValue(text)) => serde_json::from_str(&text).unwrap(),
            other => panic!("body {other:?}"),
        })
        .collect();
    let mut items = list["items"].as_array().unwrap().clone();
    let key = |v: &Value| v["metadata"]["uid"].as_str().unwrap().to_string();
    bodies.sort_by_key(key);
    items.sort_by_key(key);
    assert_eq!(bodies.len(), items.len());
    for (body, item) in bodies.iter().zip(&items) {
        // The list's items get back the kind and apiVersion the list carried.
        assert_eq!(body["metadata"], item["metadata"]);
        assert_eq!(body["message"], item["message"]);
        assert_eq!(body["involvedObject"], item["involvedObject"]);
    }
}

#[test]
fn retryable_statuses_are_retried_after_the_wait_asked_and_partial_success_is_logged() {
    // 429 asking for 1 s, then 503, then a partial success for everything after.
    let partial = ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: 2,
            error_message: "two records too large".into(),
        }),
    }
    .encode_to_vec();
    let receiver = Receiver::start(move |n, _| match n {
        0 => Reply::status(429).retry_after("1"),
        1 => Reply::status(503),
        _ => Reply::ok().body("application/x-protobuf", partial.clone()),
    });
    let dir = tempfile::tempdir().unwrap();
    let out = otlp_pipe(&dir.path().join("p"), &receiver)
        .arg("--replay-file")
        .arg(fixture())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let all = receiver.requests();
    assert!(all.len() >= 3, "{} requests", all.len());
    let waited = all[1].at - all[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "retried after {waited:?}, before the 1 s Retry-After"
    );
    assert_eq!(records(&receiver.accepted()).len(), 20);
    assert!(stderr.contains("rejected=2"), "{stderr}");
    assert!(stderr.contains("two records too large"), "{stderr}");
    assert_eq!(
        stderr.matches("OTLP sink failing").count(),
        2,
        "one WARN per kind of failure (429, then 503): {stderr}"
    );
}

#[test]
fn a_refused_export_goes_to_the_dead_letter_directory_and_is_committed() {
    let receiver =
        Receiver::start(|_, _| Reply::status(400).body("text/plain", b"bad data".to_vec()));
    let dir = tempfile::tempdir().unwrap();
    let persistence = dir.path().join("p");
    let letters = dir.path().join("dead");
    let run = || {
        otlp_pipe(&persistence, &receiver)
            .arg("--replay-file")
            .arg(fixture())
            .arg("--dead-letter-dir")
            .arg(&letters)
            .output()
            .unwrap()
    };
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let files = dead_letter_files(&letters);
    let mut events = 0;
    for f in &files {
        assert!(
            f.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("otlp-")
        );
        for v in dead_letters(f) {
            assert_eq!(v["sink"], "otlp");
            assert!(v["reason"].as_str().unwrap().contains("400"), "{v}");
            assert!(v["reason"].as_str().unwrap().contains("bad data"), "{v}");
            assert!(v["event"]["metadata"]["name"].is_string());
            events += 1;
        }
    }
    assert_eq!(events, 20);
    assert!(stderr.contains("dead-letter directory"), "{stderr}");
    // Committed: a second run finds every occurrence delivered.
    let before = receiver.count();
    let out = run();
    assert!(out.status.success());
    assert_eq!(receiver.count(), before, "nothing is sent again");
}

#[test]
fn kill_9_during_an_export_then_a_rerun_loses_nothing() {
    let receiver = Receiver::start(|_, _| Reply::ok().delayed(Duration::from_millis(300)));
    let dir = tempfile::tempdir().unwrap();
    let persistence = dir.path().join("p");
    let (stream, input) = synthetic_input(dir.path(), 3000, 5);
    let run = || {
        let mut cmd = otlp_pipe(&persistence, &receiver);
        cmd.arg("--replay-file")
            .arg(&input)
            .args(["--batch-size", "100", "--otlp-body", "event"]);
        cmd
    };
    let mut child = run().stderr(Stdio::null()).spawn().unwrap();
    wait_for("three exports", || (receiver.count() >= 3).then_some(()));
    kill_9(&mut child);
    let before = receiver.count();
    assert!(
        before * 100 < stream.occurrences.len(),
        "killed after the end"
    );
    run_to_success(&mut run());
    let mut seen = std::collections::BTreeSet::new();
    for rec in records(&receiver.accepted()) {
        let Some(V::StringValue(line)) = rec.log.body.and_then(|b| b.value) else {
            panic!("event body");
        };
        seen.insert(occurrence(&serde_json::from_str(&line).unwrap()));
    }
    assert_nothing_lost(&stream.occurrences, |o| seen.contains(o));
}

/// `oteltap` from PyPI: `.ci/run` installs it into a venv; `OTELTAP` may name another.
fn oteltap() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("OTELTAP").map(PathBuf::from),
        Some(std::env::temp_dir().join("kube-event-pipe-oteltap/bin/oteltap")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

#[test]
fn ten_thousand_events_reach_oteltap_exactly_once() {
    let Some(oteltap) = oteltap() else {
        eprintln!(
            "skipped: oteltap is not installed (.ci/run installs it into $TMPDIR/kube-event-pipe-oteltap)"
        );
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let tap_out = dir.path().join("oteltap.ndjson");
    let mut tap = Command::new(&oteltap)
        .args(["--port", &port.to_string()])
        .env("PYTHONUNBUFFERED", "1")
        .stdout(fs::File::create(&tap_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _ = &mut tap;
    let tap = KillOnDrop(tap);
    wait_for("oteltap listening", || {
        fs::read_to_string(&tap_out)
            .unwrap_or_default()
            .contains("Listening")
            .then_some(())
    });

    let stream = generate(&SynthConfig {
        envelopes: 12_000,
        seed: 17,
        ..SynthConfig::default()
    });
    let input = dir.path().join("input.jsonl");
    fs::write(&input, &stream.text).unwrap();
    // oteltap does not take gzip, so the bodies go plain.
    let out = pipe(&dir.path().join("p"))
        .args(["--sink", "otlp", "--otlp-endpoint"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--otlp-compression", "none", "--otlp-body", "event"])
        .arg("--replay-file")
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = stream.occurrences.len();
    assert!(n >= 10_000, "{n} occurrences");
    let lines = wait_for("oteltap to print every record", || {
        let text = fs::read_to_string(&tap_out).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(str::to_owned)
            .collect();
        (lines.len() >= n).then_some(lines)
    });
    drop(tap);
    let mut got = BTreeMap::new();
    for line in &lines {
        let record: Value = serde_json::from_str(line).unwrap();
        let body = record["body"]["stringValue"]
            .as_str()
            .expect("a string body");
        let event: Value = serde_json::from_str(body).unwrap();
        *got.entry(occurrence(&event)).or_insert(0) += 1;
    }
    assert_exactly_once(&got, &stream.occurrences);
}
