//! The operations surface of the real binary: `/metrics` counts what a replay sent, and
//! `/readyz` turns ready only once the kube source's initial list is delivered.

mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::fake_api::ApiServer;
use support::*;

/// One GET over a fresh connection: the status code and the body, or `None` while the
/// listener is not there.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
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
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The address the binary logged after binding `--listen 127.0.0.1:0`.
fn bound_address(log: &Path) -> SocketAddr {
    wait_for("the telemetry listener's address in the log", || {
        let text = std::fs::read_to_string(log).ok()?;
        let line = text.lines().find(|l| l.contains("telemetry listening"))?;
        line.split("address=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Sample values of the Prometheus text: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn event_line(name: &str, count: u64, kind: &str, reason: &str) -> String {
    let event = json!({
        "kind": "Event", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-0"},
        "reason": reason, "message": "m", "type": kind, "count": count,
    });
    format!("{}\n", json!({"type": "ADDED", "object": event}))
}

struct Running {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn metrics_during_a_replay_count_what_was_sent() {
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("run.log");
    let child = pipe(&state.path().join("filters"))
        .args(["--replay-file", "-", "--listen", "127.0.0.1:0"])
        .args(["--metrics-by-reason", "--batch-interval", "0.05"])
        .args(["--sync-interval", "0.05"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("start the binary");
    let mut run = Running { child, log };
    let addr = bound_address(&run.log);

    // 40 occurrences (30 Warning BackOff, 10 Normal Pulled), 15 repeats of some of them, and
    // one line that is not JSON.
    let mut input = String::new();
    for i in 0..30 {
        input.push_str(&event_line(&format!("a{i}"), 1, "Warning", "BackOff"));
    }
    for i in 0..10 {
        input.push_str(&event_line(&format!("b{i}"), 2, "Normal", "Pulled"));
    }
    for i in 0..15 {
        input.push_str(&event_line(&format!("a{i}"), 1, "Warning", "BackOff"));
    }
    input.push_str("this is not an event\n");
    let mut stdin = run.child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut out = Reader::spawn(run.child.stdout.take().unwrap());
    assert_eq!(out.until(40).len(), 40);

    // Still running (stdin is open): the counters are scraped mid-replay.
    let expected = [
        (
            "kube_event_pipe_events_received_total{source=\"replay\"}",
            55.0,
        ),
        (
            "kube_event_pipe_events_emitted_total{sink=\"stdout\"}",
            40.0,
        ),
        ("kube_event_pipe_duplicates_dropped_total", 15.0),
        ("kube_event_pipe_malformed_events_total", 1.0),
        ("kube_event_pipe_dedup_generations", 1.0),
        (
            "kube_event_pipe_events_by_reason_total{type=\"Warning\",reason=\"BackOff\"}",
            30.0,
        ),
        (
            "kube_event_pipe_events_by_reason_total{type=\"Normal\",reason=\"Pulled\"}",
            10.0,
        ),
    ];
    let scraped = wait_for("the counters to reach what was sent", || {
        let (status, body) = get(addr, "/metrics")?;
        assert_eq!(status, 200);
        let s = samples(&body);
        // The filter gauges follow on the sync timer, a moment after the commit.
        let filled = s
            .get("kube_event_pipe_dedup_fill_ratio{generation=\"0\"}")
            .is_some_and(|f| *f > 0.0);
        (filled && expected.iter().all(|(name, v)| s.get(*name) == Some(v))).then_some(body)
    });
    for name in [
        "kube_event_pipe_events_received_total",
        "kube_event_pipe_dedup_fill_ratio",
        "kube_event_pipe_last_event_timestamp_seconds",
    ] {
        assert!(
            scraped.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{scraped}"
        );
    }
    let s = samples(&scraped);
    assert!(s["kube_event_pipe_last_event_timestamp_seconds"] > 1.7e9);
    // Replay may idle for ever: alive, and (not a kube source) never ready by a list.
    assert_eq!(get(addr, "/healthz").map(|r| r.0), Some(200));

    let log = std::fs::read_to_string(&run.log).unwrap();
    let config_line = log
        .lines()
        .find(|l| l.contains("effective configuration"))
        .expect("the effective configuration is logged");
    assert!(
        config_line.contains("listen=127.0.0.1:0 metrics_by_reason=true"),
        "{config_line}"
    );
    assert_eq!(log.matches("effective configuration").count(), 1);

    drop(stdin);
    let status = wait_exit(&mut run.child);
    assert!(status.success(), "{status:?}");
}

fn kube_event(i: usize) -> serde_json::Value {
    json!({
        "kind": "Event", "apiVersion": "v1",
        "metadata": {"name": format!("ev-{i}.18a2b3c4d5e6f7a8"), "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": format!("pod-{i}"), "apiVersion": "v1"},
        "reason": "Started", "message": format!("Started container number {i} of a long-running job"),
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": "2026-11-23T10:00:00Z", "lastTimestamp": "2026-11-23T10:00:00Z",
        "count": 1, "type": "Normal",
        "reportingComponent": "kubelet", "reportingInstance": "node-1"
    })
}

#[test]
fn readyz_turns_ready_when_the_initial_list_is_delivered() {
    let server = ApiServer::start();
    // About 1 MB of events: far more than a pipe buffer, so delivery waits for our reader.
    let listed = 2000;
    for i in 0..listed {
        server.add(kube_event(i));
    }
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("run.log");
    let child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .arg("--persistence-path")
        .arg(state.path().join("filters"))
        .args(["--destination", "-", "--listen", "127.0.0.1:0"])
        .args(["--log-level", "INFO", "--batch-interval", "0.05"])
        .stdout(Stdio::piped())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("start the binary");
    let mut run = Running { child, log };
    let addr = bound_address(&run.log);

    // Nobody reads stdout yet, so the first batch cannot be written: not ready, yet alive.
    let (status, body) = wait_for("/readyz to answer", || get(addr, "/readyz"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("initial list not delivered"), "{body}");
    assert_eq!(get(addr, "/healthz").map(|r| r.0), Some(200));

    let mut out = Reader::spawn(run.child.stdout.take().unwrap());
    wait_for("/readyz to turn 200", || {
        (get(addr, "/readyz")?.0 == 200).then_some(())
    });
    assert!(out.until(listed).len() >= listed);
    let metrics = get(addr, "/metrics").expect("scrape").1;
    let s = samples(&metrics);
    assert_eq!(
        s.get("kube_event_pipe_events_received_total{source=\"kube\"}"),
        Some(&(listed as f64)),
        "{metrics}"
    );

    signal(&run.child, libc::SIGTERM);
    let status = wait_exit(&mut run.child);
    assert!(status.success(), "{status:?}");
}
