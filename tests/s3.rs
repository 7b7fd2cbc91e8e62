//! The S3 sink against a real S3-protocol server on 127.0.0.1 (tests/support/s3.rs): every
//! occurrence reaches the bucket once beside the file, an outage and a kill -9 lose nothing,
//! both object formats decode to the same events, and bad settings or credentials say so.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kube_event_pipe::encode::object;
use kube_event_pipe::synth::{SynthConfig, generate};
use support::conformance::*;
use support::s3::*;
use support::*;

const BUCKET: &str = "kep-events";

/// Decodes every object of the bucket; returns the occurrences with how often each appears.
fn bucket_tally(server: &S3Server, bucket: &str) -> (usize, BTreeMap<Occurrence, usize>) {
    let objects = server.objects(bucket);
    let mut lines = Vec::new();
    for (key, body) in &objects {
        let text = object::decode(key, body).unwrap_or_else(|e| panic!("{e}"));
        lines.extend(
            String::from_utf8(text)
                .expect("UTF-8")
                .split_inclusive('\n')
                .map(str::to_owned),
        );
    }
    (objects.len(), tally(lines.iter().map(String::as_str)))
}

fn s3_pipe(
    persistence: &std::path::Path,
    server: &S3Server,
    secret: &str,
) -> std::process::Command {
    let mut cmd = pipe(persistence);
    cmd.args(pipe_s3_args(server, BUCKET))
        .envs(pipe_s3_env(secret));
    cmd
}

#[test]
fn a_trickle_of_events_reaches_the_file_at_once_and_the_bucket_as_one_object() {
    let server = S3Server::start(&[BUCKET]);
    let dir = tempfile::tempdir().unwrap();
    // Every envelope a new occurrence, one per line.
    let stream = generate(&SynthConfig {
        envelopes: 40,
        seed: 3,
        duplicate_ratio: 0.0,
        deleted_ratio: 0.0,
        pretty_every: None,
    });
    assert_eq!(stream.occurrences.len(), 40);
    let out_file = dir.path().join("events.jsonl");
    let mut child = s3_pipe(&dir.path().join("filters"), &server, SECRET_KEY)
        .args(["--replay-file", "-"])
        .arg("--destination")
        .arg(&out_file)
        .args(["--sink", "file", "--sink", "s3", "--batch-interval", "3600"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // One envelope at a time, each written to the file before the next is sent: every event
    // is a batch of its own, as on a quiet cluster.
    for (i, envelope) in stream.text.split_inclusive('\n').enumerate() {
        stdin.write_all(envelope.as_bytes()).unwrap();
        stdin.flush().unwrap();
        wait_for("the event in the file", || {
            (count_lines(&out_file) > i).then_some(())
        });
    }
    assert!(
        server.objects(BUCKET).is_empty(),
        "the bucket got an object before it was full or due"
    );
    drop(stdin);
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status}");
    let (objects, in_bucket) = bucket_tally(&server, BUCKET);
    assert_exactly_once(&in_bucket, &stream.occurrences);
    assert_eq!(objects, 1, "one object for 40 events");
}

#[test]
fn twenty_five_thousand_events_reach_the_file_and_the_bucket_once_each() {
    let server = S3Server::start(&[BUCKET]);
    let dir = tempfile::tempdir().unwrap();
    let stream = generate(&SynthConfig {
        envelopes: 25_000,
        seed: 11,
        ..SynthConfig::default()
    });
    let input = dir.path().join("input.jsonl");
    fs::write(&input, &stream.text).unwrap();
    let out_file = dir.path().join("events.jsonl");
    let out = s3_pipe(&dir.path().join("filters"), &server, SECRET_KEY)
        .arg("--replay-file")
        .arg(&input)
        .arg("--destination")
        .arg(&out_file)
        .args(["--sink", "file", "--sink", "s3", "--batch-size", "500"])
        // Size, idle input and the end of input close batches here, not the interval.
        .args(["--batch-interval", "3600"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let n = stream.occurrences.len();
    assert_exactly_once(
        &tally(file_lines(&out_file).iter().map(String::as_str)),
        &stream.occurrences,
    );
    let (objects, in_bucket) = bucket_tally(&server, BUCKET);
    assert_exactly_once(&in_bucket, &stream.occurrences);
    // Objects of at most 500 events, gathered from batches however small: any two objects in
    // a row hold more than 500 (the second started because the first could not take its
    // first batch), so there are at most 2n/500 + 1 of them.
    assert!(
        (n.div_ceil(500)..=2 * n / 500 + 1).contains(&objects),
        "{objects} objects for {n} events in objects of at most 500"
    );
    for (key, _) in server.objects(BUCKET).iter().take(3) {
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 6, "{key}");
        assert_eq!(parts[0], "test-stream");
        assert!(
            parts[5].ends_with(".jsonl.gz") && parts[5].contains("-000001-"),
            "{key}"
        );
    }
}

#[test]
fn an_s3_outage_loses_nothing_while_stdout_runs_ahead_until_its_queue_bound() {
    let server = S3Server::start(&[BUCKET]);
    let dir = tempfile::tempdir().unwrap();
    let stream = generate(&SynthConfig {
        envelopes: 8_000,
        seed: 21,
        ..SynthConfig::default()
    });
    let lines: Vec<&str> = stream.text.split_inclusive('\n').collect();
    let (first, second) = lines.split_at(lines.len() / 4);
    let (first, second) = (first.concat(), second.concat());
    let first_n = expected_occurrences(&first).len();
    const BATCH: usize = 100;
    let mut child = s3_pipe(&dir.path().join("filters"), &server, SECRET_KEY)
        .args(["--replay-file", "-", "--sink", "stdout,s3"])
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
    let stderr = Reader::spawn(child.stderr.take().unwrap());
    stdin.write_all(first.as_bytes()).unwrap();
    stdin.flush().unwrap();
    out.until(first_n);
    wait_for("the first part in the bucket", || {
        (bucket_tally(&server, BUCKET).1.len() >= first_n).then_some(())
    });

    server.stop_listening();
    let writer = std::thread::spawn(move || {
        // Blocks once the pipe pushes back; returns when the pipe has read everything.
        let r = stdin.write_all(second.as_bytes());
        (stdin, r)
    });
    // The outage lasts 30 s. stdout keeps flowing until the S3 queue is full, then the pipe
    // pushes back: it must stop short of the whole input while S3 is away.
    let outage = Instant::now() + Duration::from_secs(30);
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
    // In flight at most: the S3 queue, the batch being uploaded, the batch being handed over,
    // the open batch and the batcher's input, plus one source hand-off.
    let bound = (4 + 4) * BATCH + 256;
    eprintln!("stdout: {first_n} before the outage, {during} during it, {total} in all");
    assert!(during > first_n + BATCH, "stdout stopped with S3: {during}");
    assert!(
        during < total,
        "no backpressure: stdout got everything during the outage"
    );
    assert!(
        during - first_n <= bound + BATCH * 4,
        "{during} ran too far ahead"
    );

    server.resume_listening();
    out.until(total);
    let (stdin, written) = writer.join().unwrap();
    written.unwrap();
    drop(stdin);
    let status = wait_exit(&mut child);
    let log = stderr.all().concat();
    assert!(status.success(), "{status:?}\n{log}");
    assert_eq!(log.matches("S3 sink failing").count(), 1, "{log}");
    assert!(log.contains("S3 sink recovered"), "{log}");
    assert_exactly_once(
        &tally(out.all().iter().map(String::as_str)),
        &stream.occurrences,
    );
    assert_exactly_once(&bucket_tally(&server, BUCKET).1, &stream.occurrences);
}

#[test]
fn kill_9_during_an_upload_then_restart_leaves_nothing_missing_from_the_bucket() {
    let server = S3Server::start(&[BUCKET]);
    let dir = tempfile::tempdir().unwrap();
    let filters = dir.path().join("filters");
    let (stream, input) = synthetic_input(dir.path(), 10_000, 31);
    // Each PUT takes half a second, so the kill lands while one is being uploaded.
    server.delay_puts(Duration::from_millis(500));
    let mut child = s3_pipe(&filters, &server, SECRET_KEY)
        .arg("--replay-file")
        .arg(&input)
        .args(["--sink", "s3", "--batch-size", "500"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("three uploads started", || {
        (server.puts.load(std::sync::atomic::Ordering::Relaxed) >= 3).then_some(())
    });
    kill_9(&mut child);
    server.delay_puts(Duration::ZERO);
    let (objects_before, before) = bucket_tally(&server, BUCKET);
    assert!(
        before.len() < stream.occurrences.len(),
        "killed after the end"
    );

    run_to_success(
        s3_pipe(&filters, &server, SECRET_KEY)
            .arg("--replay-file")
            .arg(&input)
            .args(["--sink", "s3", "--batch-size", "500"]),
    );
    let (objects_after, after) = bucket_tally(&server, BUCKET);
    let repeated = repeats(&after);
    eprintln!(
        "{objects_before} objects before the kill, {objects_after} after the rerun, {repeated} events twice"
    );
    assert_complete_within(after, &stream.occurrences, (4 + 4) * 500 + 256);
}

/// Runs `decode` on a file; returns (exit code, stdout, stderr).
fn decode_file(path: &std::path::Path) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(BIN)
        .env_clear()
        .arg("decode")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn protobuf_and_jsonl_objects_decode_to_the_same_events() {
    let server = S3Server::start(&["kep-jsonl", "kep-pb"]);
    let dir = tempfile::tempdir().unwrap();
    let stream = generate(&SynthConfig {
        envelopes: 3_000,
        seed: 41,
        ..SynthConfig::default()
    });
    let input = dir.path().join("input.jsonl");
    fs::write(&input, &stream.text).unwrap();
    for (bucket, format) in [("kep-jsonl", "jsonl"), ("kep-pb", "protobuf")] {
        let out = pipe(&dir.path().join(bucket))
            .arg("--replay-file")
            .arg(&input)
            .args(pipe_s3_args(&server, bucket))
            .envs(pipe_s3_env(SECRET_KEY))
            .args(["--sink", "s3", "--s3-format", format, "--batch-size", "700"])
            .args(["--cluster-name", "prod"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut decoded = Vec::new();
    for bucket in ["kep-jsonl", "kep-pb"] {
        let mut lines = Vec::new();
        for (i, (key, body)) in server.objects(bucket).into_iter().enumerate() {
            assert!(key.ends_with(if bucket == "kep-pb" {
                ".pb.gz"
            } else {
                ".jsonl.gz"
            }));
            // The file name says nothing: decode must tell the format from the content.
            let path = dir.path().join(format!("{bucket}-{i}.gz"));
            fs::write(&path, body).unwrap();
            let (code, stdout, stderr) = decode_file(&path);
            assert_eq!(code, Some(0), "{stderr}");
            lines.extend(stdout.split_inclusive('\n').map(str::to_owned));
        }
        assert_exactly_once(
            &tally(lines.iter().map(String::as_str)),
            &stream.occurrences,
        );
        assert!(lines.iter().all(|l| l.starts_with(r#"{"cluster":"prod","#)));
        lines.sort();
        decoded.push(lines);
    }
    assert_eq!(
        decoded[0], decoded[1],
        "the formats decode to different lines"
    );

    // Straight from the bucket, with the same S3 options the sink takes.
    let (key, body) = server.objects("kep-pb").remove(0);
    // Batches close at 700 events or when the reader pauses: count what this one holds.
    let local = dir.path().join("first.pb.gz");
    fs::write(&local, body).unwrap();
    let (_, expected, _) = decode_file(&local);
    let expected = expected.lines().count();
    assert!(
        (1..=700).contains(&expected),
        "{expected} events in one object"
    );
    let out = std::process::Command::new(BIN)
        .env_clear()
        .envs(pipe_s3_env(SECRET_KEY))
        .args(["decode", "--s3", &format!("s3://kep-pb/{key}")])
        .args([
            "--s3-endpoint",
            &server.endpoint(),
            "--s3-force-path-style",
            "--aws-region",
            REGION,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        expected
    );
}

#[test]
fn decode_of_a_truncated_object_names_it_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let lines = b"{\"metadata\":{\"name\":\"a\",\"namespace\":\"d\"}}\n".repeat(100);
    let gz = object::gzip(&lines);
    let path = dir
        .path()
        .join("20240101T000000.000Z-000001-000000001.jsonl.gz");
    fs::write(&path, &gz[..gz.len() / 2]).unwrap();
    let (code, stdout, stderr) = decode_file(&path);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: {}: not a complete gzip stream (incomplete deflate stream); the object is truncated or damaged\n",
            path.display()
        )
    );
    assert!(stdout.is_empty(), "printed part of a damaged object");
}

#[test]
fn bad_s3_settings_stop_the_start_with_exact_messages() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["--sink", "stdout,s3"],
            "error: the s3 sink needs a bucket: set --s3-bucket, KUBE_EVENT_PIPE_S3_BUCKET or aws_bucket in the config file\n",
        ),
        (
            &[
                "--sink",
                "s3",
                "--s3-bucket",
                "b1x",
                "--s3-endpoint",
                "localhost:9000",
            ],
            "error: --s3-endpoint=localhost:9000 (flag): must be an http:// or https:// URL such as http://127.0.0.1:9000\n",
        ),
        (
            &[
                "--sink",
                "s3",
                "--s3-bucket",
                "b1x",
                "--aws-region",
                "EU_West",
            ],
            "error: --aws-region=EU_West (flag): must be a region name such as eu-west-1 (lower-case letters, digits and '-')\n",
        ),
    ];
    for (args, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = pipe(dir.path())
            .args(["--replay-file", "-"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), message);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{args:?} touched the directory"
        );
    }
}

#[test]
fn wrong_credentials_give_a_runtime_error_naming_the_bucket_and_the_403() {
    let server = S3Server::start(&[BUCKET]);
    let dir = tempfile::tempdir().unwrap();
    let stream = generate(&SynthConfig {
        envelopes: 50,
        seed: 51,
        ..SynthConfig::default()
    });
    let mut child = s3_pipe(&dir.path().join("filters"), &server, "not-the-secret")
        .args([
            "--replay-file",
            "-",
            "--sink",
            "s3",
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
    let line = wait_for("the 403 in the log", || {
        let n = stderr.drain_ready();
        // "403 Forbidden", not just "403": a filter file's name may hold those digits.
        stderr
            .until(n)
            .iter()
            .find(|l| l.contains("403 Forbidden"))
            .cloned()
    });
    assert!(
        line.contains(&format!(
            "S3 refused the upload to bucket {BUCKET} with 403 Forbidden"
        )),
        "{line}"
    );
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "it gave up instead of retrying"
    );
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child);
    // Nothing reached the bucket: the shutdown timeout ends the run with the events undelivered.
    assert_eq!(status.code(), Some(3), "{status:?}");
    let rest = stderr.all();
    assert!(
        rest.iter().any(|l| l.starts_with("error: ")
            && l.contains("accepted events were not delivered to every sink")),
        "{rest:?}"
    );
    assert!(server.objects(BUCKET).is_empty());
}

/// One GET of `/metrics` over a fresh connection; the body.
fn scrape(addr: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn a_hung_endpoint_is_logged_and_counted_within_the_s3_timeout() {
    // Takes connections and never answers, like a wedged proxy in front of the store.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut child = pipe(&dir.path().join("filters"))
        .args(["--replay-file", "-", "--sink", "s3", "--s3-bucket", BUCKET])
        .args(["--s3-endpoint", &endpoint, "--s3-force-path-style"])
        .args(["--aws-region", REGION, "--uid", "test-stream"])
        .args(["--s3-timeout", "1", "--listen", "127.0.0.1:0"])
        .envs(pipe_s3_env(SECRET_KEY))
        .stdin(Stdio::piped())
        .stderr(fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"{\"kind\":\"Event\",\"metadata\":{\"name\":\"e\",\"namespace\":\"default\"},\"count\":1}\n",
        )
        .unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    let log = || fs::read_to_string(&log_path).unwrap_or_default();
    let line = wait_for("the stalled upload in the log", || {
        log()
            .lines()
            .find(|l| l.contains("S3 sink failing"))
            .map(str::to_owned)
    });
    let took = started.elapsed();
    assert!(
        line.contains("got no answer within 1s (--s3-timeout): the endpoint stalled"),
        "{line}"
    );
    assert!(took < Duration::from_secs(15), "logged after {took:?}");
    let addr = wait_for("the telemetry address", || {
        let text = log();
        let line = text.lines().find(|l| l.contains("telemetry listening"))?;
        Some(
            line.split("address=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_owned(),
        )
    });
    let metrics = scrape(&addr);
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kube_event_pipe_sink_errors_total{sink=\"s3\"} "))
        .unwrap_or_else(|| panic!("no S3 error count in\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(errors >= 1.0, "{errors}");
    signal(&child, libc::SIGKILL);
    wait_exit(&mut child);
    drop(stdin);
}
