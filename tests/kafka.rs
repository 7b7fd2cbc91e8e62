//! The Kafka sink against a real Kafka-protocol broker (Tansu, tests/support/kafka.rs), read
//! back by an independent consumer (kafka-python): every occurrence reaches the topic once
//! beside the file, an outage and a kill -9 lose nothing, and a missing topic or a refused
//! login is logged with the fix.

mod support;

use std::time::{Duration, SystemTime};

use kube_event_pipe::config::kafka::{Compression, KafkaSettings};
use kube_event_pipe::flow::Batch;
use kube_event_pipe::sink::kafka;
use support::kafka::*;

fn settings(broker: &Broker, topic: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: vec![broker.address()],
        topic: topic.into(),
        compression: Compression::Lz4,
        tls: None,
        sasl: None,
        properties: Vec::new(),
    }
}

fn batch(seq: u64, lines: &[String]) -> Batch {
    let mut bytes = Vec::new();
    for l in lines {
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(b'\n');
    }
    Batch {
        seq,
        bytes,
        records: None,
        keys: Vec::new(),
        events: lines.len(),
        opened_at: SystemTime::now(),
    }
}

fn event_line(i: usize) -> String {
    format!(
        r#"{{"kind":"Event","metadata":{{"name":"web-{i}.1","namespace":"ns{ns}"}},"involvedObject":{{"kind":"Pod","namespace":"ns{ns}","name":"web-{i}"}},"reason":"BackOff","type":"Warning","count":1}}"#,
        ns = i % 3
    )
}

#[test]
fn a_delivered_batch_is_in_the_topic_with_its_keys_and_headers() {
    let Some(tools) = Tools::find() else { return };
    let broker = Broker::start(&tools, false);
    broker.create_topic(&tools, "events", 3);
    let lines: Vec<String> = (0..200).map(event_line).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut sink = kafka::producer(&settings(&broker, "events"), Some("prod-eu")).unwrap();
        let first = tokio::time::timeout(
            Duration::from_secs(60),
            sink.deliver_batch(&batch(0, &lines[..150])),
        )
        .await
        .expect("delivered in time");
        assert!(first.is_ok(), "{first:?}");
        let second = tokio::time::timeout(
            Duration::from_secs(60),
            sink.deliver_batch(&batch(1, &lines[150..])),
        )
        .await
        .expect("delivered in time");
        assert!(second.is_ok(), "{second:?}");
    });
    let records = consume(
        &tools,
        &broker,
        "events",
        lines.len(),
        Duration::from_secs(5),
    );
    assert_eq!(records.len(), lines.len());
    let mut values: Vec<&str> = records.iter().map(|r| r.value.as_str()).collect();
    values.sort_unstable();
    let mut want: Vec<&str> = lines.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(values, want, "every line once, byte for byte");
    let r = records
        .iter()
        .find(|r| r.value == lines[7])
        .expect("line 7");
    assert_eq!(r.key.as_deref(), Some("ns1/Pod/web-7"));
    assert_eq!(
        r.headers,
        vec![
            ("cluster".to_string(), "prod-eu".to_string()),
            ("type".to_string(), "Warning".to_string()),
            ("reason".to_string(), "BackOff".to_string()),
        ]
    );
    // One object's events share a key, so they share a partition.
    let parts: std::collections::BTreeSet<i32> = records
        .iter()
        .filter(|r| r.key.as_deref() == Some("ns1/Pod/web-7"))
        .map(|r| r.partition)
        .collect();
    assert_eq!(parts.len(), 1);
}

// The pipe end to end: the real binary, replayed input, the broker behind its relay.

use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::time::Instant;

use kube_event_pipe::synth::{SynthConfig, generate};
use support::conformance::*;
use support::*;

/// The pipe replaying into `topic` on `broker` (plus whatever else the caller adds).
fn kafka_pipe(
    persistence: &std::path::Path,
    broker: &Broker,
    topic: &str,
) -> std::process::Command {
    let mut cmd = pipe(persistence);
    cmd.args(["--kafka-brokers", &broker.address(), "--kafka-topic", topic]);
    cmd
}

/// One GET on the pipe's telemetry listener: status and body, `None` while it is not there.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n")?.1.to_string()))
}

/// The listener's address from the pipe's log (`--listen 127.0.0.1:0`).
fn listen_address(stderr: &mut Reader) -> String {
    wait_for("the telemetry listener's address in the log", || {
        let n = stderr.drain_ready();
        let line = stderr
            .until(n)
            .iter()
            .find(|l| l.contains("telemetry listening"))?
            .clone();
        Some(
            line.split("address=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_string(),
        )
    })
}

/// A sample of the Prometheus text, e.g. `kube_event_pipe_events_emitted_total{sink="kafka"}`.
fn metric(addr: &str, sample: &str) -> Option<f64> {
    let (_, body) = get(addr, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

/// Occurrences in the topic, with how often each appears.
fn topic_tally(
    tools: &Tools,
    broker: &Broker,
    topic: &str,
    expect: usize,
) -> std::collections::BTreeMap<Occurrence, usize> {
    let records = consume(tools, broker, topic, expect, Duration::from_secs(5));
    let lines: Vec<String> = records.into_iter().map(|r| r.value + "\n").collect();
    tally(lines.iter().map(String::as_str))
}

#[test]
fn twenty_five_thousand_replayed_events_reach_the_file_and_the_topic_once_each() {
    let Some(tools) = Tools::find() else { return };
    let broker = Broker::start(&tools, false);
    broker.create_topic(&tools, "events", 3);
    let dir = tempfile::tempdir().unwrap();
    let stream = generate(&SynthConfig {
        envelopes: 25_000,
        seed: 15,
        ..SynthConfig::default()
    });
    let input = dir.path().join("input.jsonl");
    fs::write(&input, &stream.text).unwrap();
    let out_file = dir.path().join("events.jsonl");
    let out = kafka_pipe(&dir.path().join("filters"), &broker, "events")
        .arg("--replay-file")
        .arg(&input)
        .arg("--destination")
        .arg(&out_file)
        .args(["--sink", "file,kafka", "--cluster-name", "test-cluster"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let n = stream.occurrences.len();
    let in_file = tally(file_lines(&out_file).iter().map(String::as_str));
    assert_exactly_once(&in_file, &stream.occurrences);
    let records = consume(&tools, &broker, "events", n + 1, Duration::from_secs(5));
    let lines: Vec<String> = records.iter().map(|r| r.value.clone() + "\n").collect();
    assert_exactly_once(
        &tally(lines.iter().map(String::as_str)),
        &stream.occurrences,
    );
    // The values are the file's lines, byte for byte.
    let mut file_sorted = file_lines(&out_file);
    let mut topic_sorted = lines;
    file_sorted.sort_unstable();
    topic_sorted.sort_unstable();
    assert!(
        file_sorted == topic_sorted,
        "the topic's values differ from the file's lines"
    );
    for r in records.iter().take(50) {
        let ev: serde_json::Value = serde_json::from_str(&r.value).unwrap();
        let o = &ev["involvedObject"];
        let want = format!(
            "{}/{}/{}",
            o["namespace"].as_str().unwrap_or(""),
            o["kind"].as_str().unwrap(),
            o["name"].as_str().unwrap()
        );
        assert_eq!(r.key.as_deref(), Some(want.as_str()));
        assert_eq!(r.headers[0], ("cluster".into(), "test-cluster".into()));
        assert_eq!(r.headers[1].0, "type");
        assert_eq!(r.headers[1].1, ev["type"].as_str().unwrap());
        assert_eq!(r.headers[2].0, "reason");
    }
}

#[test]
fn a_twenty_second_broker_outage_pauses_the_pipe_loses_nothing_and_is_logged_once() {
    let Some(tools) = Tools::find() else { return };
    let broker = Broker::start(&tools, false);
    broker.create_topic(&tools, "events", 3);
    let dir = tempfile::tempdir().unwrap();
    let stream = generate(&SynthConfig {
        envelopes: 8_000,
        seed: 25,
        ..SynthConfig::default()
    });
    let lines: Vec<&str> = stream.text.split_inclusive('\n').collect();
    let (first, second) = lines.split_at(lines.len() / 4);
    let (first, second) = (first.concat(), second.concat());
    let first_n = expected_occurrences(&first).len();
    const BATCH: usize = 100;
    let mut child = kafka_pipe(&dir.path().join("filters"), &broker, "events")
        .args([
            "--replay-file",
            "-",
            "--sink",
            "stdout,kafka",
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--batch-size",
            &BATCH.to_string(),
            "--batch-interval",
            "0.1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = Reader::spawn(child.stdout.take().unwrap());
    let mut stderr = Reader::spawn(child.stderr.take().unwrap());
    let addr = listen_address(&mut stderr);
    stdin.write_all(first.as_bytes()).unwrap();
    stdin.flush().unwrap();
    out.until(first_n);
    wait_for("the first part in the topic", || {
        metric(
            &addr,
            "kube_event_pipe_events_emitted_total{sink=\"kafka\"}",
        )
        .filter(|&n| n >= first_n as f64)
    });

    broker.stop();
    let writer = std::thread::spawn(move || {
        let r = stdin.write_all(second.as_bytes());
        (stdin, r)
    });
    let outage = Instant::now() + Duration::from_secs(20);
    while Instant::now() < outage {
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pipe exited during the outage"
        );
        out.drain_ready();
    }
    let during = out.drain_ready();
    let total = stream.occurrences.len();
    eprintln!("stdout: {first_n} before the outage, {during} at its end, {total} in all");

    // The shared sink state counts it (a replay from stdin is never ready, so /readyz says
    // nothing more here).
    let errors = metric(&addr, "kube_event_pipe_sink_errors_total{sink=\"kafka\"}");
    assert!(errors.unwrap_or(0.0) >= 1.0, "{errors:?}");
    assert!(during > first_n, "stdout stopped with Kafka: {during}");
    assert!(
        during < total,
        "no backpressure: stdout got everything during the outage"
    );
    // stdout runs ahead of Kafka by at most the in-flight bound.
    assert!(
        during <= first_n + (4 + 4) * BATCH + 256 + BATCH * 4,
        "{during} ran too far ahead"
    );

    broker.restart();
    out.until(total);
    let (stdin, written) = writer.join().unwrap();
    written.unwrap();
    drop(stdin);
    let status = wait_exit(&mut child);
    let log = stderr.all().concat();
    assert!(status.success(), "{status:?}\n{log}");
    assert_eq!(log.matches("Kafka sink failing").count(), 1, "{log}");
    assert_eq!(log.matches("Kafka sink recovered").count(), 1, "{log}");
    assert!(log.contains("no Kafka broker of"), "{log}");
    assert_exactly_once(
        &topic_tally(&tools, &broker, "events", total + 1),
        &stream.occurrences,
    );
}

#[test]
fn kill_9_mid_run_then_a_rerun_leaves_nothing_missing_from_the_topic() {
    let Some(tools) = Tools::find() else { return };
    let broker = Broker::start(&tools, false);
    broker.create_topic(&tools, "events", 3);
    let dir = tempfile::tempdir().unwrap();
    let filters = dir.path().join("filters");
    let (stream, input) = synthetic_input(dir.path(), 20_000, 35);
    // Each answer of the broker takes 100 ms, so batches are in flight when the kill lands.
    broker.delay_answers(Duration::from_millis(100));
    let mut child = kafka_pipe(&filters, &broker, "events")
        .arg("--replay-file")
        .arg(&input)
        .args([
            "--sink",
            "kafka",
            "--batch-size",
            "500",
            "--listen",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = Reader::spawn(child.stderr.take().unwrap());
    let addr = listen_address(&mut stderr);
    // Killed once the brokers have a few batches and more are on their way.
    wait_for("3 batches delivered to Kafka", || {
        metric(
            &addr,
            "kube_event_pipe_events_emitted_total{sink=\"kafka\"}",
        )
        .filter(|&n| n >= 1_500.0)
    });
    kill_9(&mut child);
    broker.delay_answers(Duration::ZERO);
    let before = topic_tally(&tools, &broker, "events", stream.occurrences.len() + 1);
    assert!(
        before.len() >= 1_500 && before.len() < stream.occurrences.len(),
        "killed at {} of {}",
        before.len(),
        stream.occurrences.len()
    );

    run_to_success(
        kafka_pipe(&filters, &broker, "events")
            .arg("--replay-file")
            .arg(&input)
            .args(["--sink", "kafka", "--batch-size", "500"]),
    );
    let after = topic_tally(&tools, &broker, "events", 2 * stream.occurrences.len());
    let repeated = repeats(&after);
    eprintln!(
        "{} occurrences before the kill, {} after the rerun, {repeated} twice",
        before.len(),
        after.len()
    );
    assert_complete_within(after, &stream.occurrences, (4 + 4) * 500 + 256);
}

/// Runs the pipe on a few events until `what` appears in its log; returns that line, after
/// checking the pipe keeps retrying and, on SIGTERM, says that events were left undelivered.
fn error_line(mut cmd: std::process::Command, what: &str) -> String {
    let stream = generate(&SynthConfig {
        envelopes: 20,
        seed: 45,
        ..SynthConfig::default()
    });
    let mut child = cmd
        .args([
            "--replay-file",
            "-",
            "--sink",
            "kafka",
            "--shutdown-timeout",
            "1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(stream.text.as_bytes()).unwrap();
    let mut stderr = Reader::spawn(child.stderr.take().unwrap());
    let line = wait_for(what, || {
        let n = stderr.drain_ready();
        stderr.until(n).iter().find(|l| l.contains(what)).cloned()
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "it gave up instead of retrying"
    );
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child);
    // Nothing was delivered by the shutdown timeout: status 3, the events stay uncommitted.
    assert_eq!(status.code(), Some(3), "{status:?}");
    let log = stderr.all().concat();
    assert_eq!(
        log.matches(what).count(),
        1,
        "logged more than once:\n{log}"
    );
    line
}

#[test]
fn a_missing_topic_is_logged_once_at_error_with_the_fix() {
    let Some(tools) = Tools::find() else { return };
    let broker = Broker::start(&tools, false);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = kafka_pipe(&dir.path().join("filters"), &broker, "absent");
    cmd.args(["--kafka-property", "allow.auto.create.topics=false"]);
    let line = error_line(cmd, "does not exist");
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("Kafka sink failing; retrying every 30s until it is fixed"),
        "{line}"
    );
    assert!(line.contains(&format!(
        "topic absent does not exist on the Kafka brokers {}, which do not create topics on first use; create it (kafka-topics.sh --create --topic absent) or point --kafka-topic at an existing one",
        broker.address()
    )), "{line}");
}

#[test]
fn a_refused_login_is_logged_once_at_error_with_the_fix_and_never_shows_the_password() {
    let Some(tools) = Tools::find() else { return };
    let broker = Broker::start(&tools, true);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = kafka_pipe(&dir.path().join("filters"), &broker, "events");
    cmd.args([
        "--kafka-sasl-mechanism",
        "SCRAM-SHA-512",
        "--kafka-sasl-username",
        "pipe",
    ])
    .env(
        "KUBE_EVENT_PIPE_KAFKA_SASL_PASSWORD",
        "not-the-password-3x7",
    );
    let line = error_line(cmd, "refused the login");
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!(
            "the Kafka brokers {} refused the login of user pipe (",
            broker.address()
        )),
        "{line}"
    );
    assert!(line.contains("check --kafka-sasl-mechanism, --kafka-sasl-username and the password (file or KUBE_EVENT_PIPE_KAFKA_SASL_PASSWORD), or the --kafka-tls-* files"), "{line}");
    assert!(!line.contains("not-the-password-3x7"), "{line}");
}
