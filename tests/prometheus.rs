//! The alert rules against the real Prometheus tools: `promtool` checks and unit-tests every
//! alert (firing and not firing), and a real `prometheus` server on 127.0.0.1 scrapes a running
//! pipe and evaluates the rules. Also: every metric the rules and the Grafana dashboard use is
//! one the pipe exports, and every alert has its runbook section.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (`.ci/run` installs it).
//! Without them a local run prints why and passes; under CI (`CI` set) it fails.

mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rules_path() -> PathBuf {
    repo().join("deploy/prometheus/rules.yaml")
}

/// The tool's path, or None (after saying why) when a local run lacks it.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = format!("{name} is not installed: apt-get install prometheus (.ci/run does)");
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
    }
    found
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every alerting rule of rules.yaml.
fn alerts() -> Vec<Value> {
    let rules = yaml(&rules_path());
    let alerts: Vec<Value> = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .filter(|r| r["alert"].is_string())
        .collect();
    assert!(alerts.len() >= 8, "{} alerts", alerts.len());
    alerts
}

/// Names in a PromQL expression that look like the pipe's metrics.
fn pipe_metrics_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("kube_event_pipe_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// A histogram is exported as `_bucket`, `_sum` and `_count` series.
fn exported(name: &str) -> bool {
    let known = |n: &str| {
        kube_event_pipe::metrics::ALL
            .iter()
            .any(|(m, _, _)| *m == n)
    };
    known(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(known))
}

#[test]
fn every_alert_uses_exported_metrics_and_has_a_summary_a_description_and_a_runbook() {
    let guide = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        let expr = alert["expr"].as_str().expect("expr");
        let used = pipe_metrics_in(expr);
        assert!(!used.is_empty() || expr.contains("up{"), "{name}: {expr}");
        for metric in used {
            assert!(
                exported(&metric),
                "{name} uses {metric}, which src/metrics.rs does not export"
            );
        }
        for key in ["summary", "description"] {
            assert!(
                alert["annotations"][key]
                    .as_str()
                    .is_some_and(|s| s.len() > 20),
                "{name}: annotations.{key}"
            );
        }
        let anchor = name.to_lowercase();
        assert_eq!(
            alert["annotations"]["runbook_url"],
            format!("docs/operations.md#{anchor}"),
            "{name}"
        );
        assert!(
            guide.lines().any(|l| l.trim() == format!("### {name}")),
            "docs/operations.md has no runbook heading `### {name}`"
        );
        assert!(alert["labels"]["severity"].is_string(), "{name}: severity");
    }
}

#[test]
fn every_alert_has_a_unit_test_that_fires_and_one_that_does_not() {
    let tests = yaml(&repo().join("deploy/prometheus/rules.test.yaml"));
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        let of = |firing: bool| {
            cases.iter().any(|c| {
                c["alertname"] == name
                    && c["exp_alerts"]
                        .as_array()
                        .is_some_and(|a| a.is_empty() != firing)
            })
        };
        assert!(of(true), "{name}: no test where it fires");
        assert!(of(false), "{name}: no test where it stays quiet");
    }
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(rules_path())
        .output()
        .expect("run promtool");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", alerts().len())),
        "{text}"
    );

    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(repo().join("deploy/prometheus/rules.test.yaml"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_metric_on_the_grafana_dashboard_is_one_the_pipe_exports() {
    let path = repo().join("deploy/grafana/dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("target expr").to_string());
        }
    }
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| pipe_metrics_in(e)).collect();
    for metric in &used {
        assert!(
            exported(metric),
            "the dashboard uses {metric}, which src/metrics.rs does not export"
        );
    }
    // What the dashboard is for: rates in and out per sink, duplicates, acks pending, filter
    // fill, relists, latency, and which replica leads with what its standby holds.
    for needed in [
        "kube_event_pipe_events_received_total",
        "kube_event_pipe_events_emitted_total",
        "kube_event_pipe_duplicates_dropped_total",
        "kube_event_pipe_acks_pending",
        "kube_event_pipe_dedup_fill_ratio",
        "kube_event_pipe_watch_restarts_total",
        "kube_event_pipe_batch_flush_seconds_bucket",
        "kube_event_pipe_leader",
        "kube_event_pipe_watermark_age_seconds",
        "kube_event_pipe_standby_held_events",
    ] {
        assert!(used.contains(needed), "the dashboard shows no {needed}");
    }
    assert!(
        exprs.iter().any(|e| e.contains("by (sink)")),
        "rates are split per sink"
    );
}

/// One GET over a fresh connection: the status code and the body, or `None` while nothing
/// listens yet.
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
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query through Prometheus' HTTP API: the result vector.
fn query(prometheus: SocketAddr, promql: &str) -> Option<Vec<Value>> {
    let (status, body) = get(
        prometheus,
        &format!("/api/v1/query?query={}", encode(promql)),
    )?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"].as_array().cloned()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on right now (the OS's pick for an ephemeral bind).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn event_line(name: &str) -> String {
    let event = json!({
        "kind": "Event", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-0"},
        "reason": "BackOff", "message": "m", "type": "Warning", "count": 1,
    });
    format!("{}\n", json!({"type": "ADDED", "object": event}))
}

#[test]
fn prometheus_scrapes_a_running_pipe_and_evaluates_every_rule() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // The pipe: a replay from a stdin kept open, so it keeps running and serving /metrics.
    let log = dir.path().join("pipe.log");
    let pipe_child = pipe(&dir.path().join("filters"))
        .args(["--replay-file", "-", "--listen", "127.0.0.1:0"])
        .args(["--batch-interval", "0.05", "--sync-interval", "0.2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("start the pipe");
    let mut pipe_run = Killed(pipe_child);
    let target: SocketAddr = wait_for("the pipe's telemetry address in its log", || {
        let text = std::fs::read_to_string(&log).ok()?;
        let line = text.lines().find(|l| l.contains("telemetry listening"))?;
        line.split("address=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    });
    let mut stdin = pipe_run.0.stdin.take().unwrap();
    for i in 0..25 {
        stdin
            .write_all(event_line(&format!("e{i}")).as_bytes())
            .unwrap();
    }
    stdin.flush().unwrap();
    let mut out = Reader::spawn(pipe_run.0.stdout.take().unwrap());
    assert_eq!(out.until(25).len(), 25);

    // Prometheus: scrape the pipe every second under the job name the rules expect, and
    // evaluate the rules every second.
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: kube-event-pipe\n    static_configs:\n      - targets: ['{target}']\n",
            rules = rules_path().display()
        ),
    )
    .unwrap();
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let prom_log = dir.path().join("prometheus.log");
    let _prometheus = Killed(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={server}"))
            .stdout(File::create(&prom_log).unwrap())
            .stderr(File::create(dir.path().join("prometheus.err")).unwrap())
            .current_dir(dir.path())
            .spawn()
            .expect("start prometheus"),
    );
    wait_for("prometheus to be ready", || {
        get(server, "/-/ready").filter(|(s, _)| *s == 200)
    });

    // The pipe's series are scraped: the target is up and the counters hold what it received.
    wait_for("the pipe's target to be up", || {
        let r = query(server, "up{job=\"kube-event-pipe\"}")?;
        (r.len() == 1 && r[0]["value"][1] == "1").then_some(())
    });
    let received = wait_for("the received counter to be scraped", || {
        let r = query(
            server,
            "kube_event_pipe_events_received_total{source=\"replay\"}",
        )?;
        let v: f64 = r.first()?["value"][1].as_str()?.parse().ok()?;
        (v == 25.0).then_some(v)
    });
    assert_eq!(received, 25.0);
    for name in [
        "kube_event_pipe_events_emitted_total",
        "kube_event_pipe_acks_pending",
        "kube_event_pipe_dedup_fill_ratio",
        "kube_event_pipe_dedup_estimated_fp_rate",
        "kube_event_pipe_dedup_target_fp_rate",
    ] {
        wait_for(&format!("{name} in Prometheus"), || {
            query(server, name).filter(|r| !r.is_empty())
        });
    }
    let target_rate = query(server, "kube_event_pipe_dedup_target_fp_rate").unwrap();
    assert_eq!(target_rate[0]["value"][1], "0.000001");

    // Every rule was loaded and has been evaluated without error against these series.
    let names: BTreeSet<String> = alerts()
        .iter()
        .map(|a| a["alert"].as_str().unwrap().to_string())
        .collect();
    let evaluated = wait_for("every rule to have been evaluated", || {
        let (status, body) = get(server, "/api/v1/rules")?;
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        // A healthy pipe raises nothing once it is scraped. (Before the first scrape the
        // `up` alert may be pending for a moment: absent(up) was true.)
        let done = rules.len() == names.len()
            && rules.iter().all(|r| {
                r["health"] == "ok"
                    && r["state"] == "inactive"
                    && r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001-"))
            });
        done.then_some(rules)
    });
    let seen: BTreeSet<String> = evaluated
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, names);
    let (_, firing) = get(server, "/api/v1/alerts").expect("alerts API");
    let firing: Value = serde_json::from_str(&firing).unwrap();
    assert_eq!(
        firing["data"]["alerts"],
        json!([]),
        "no alert for a healthy pipe"
    );
    // And an alert expression evaluates over the real series: the newest generation's fill is
    // below the near-capacity threshold.
    let fill = wait_for("the newest generation's fill to be scraped above 0", || {
        query(
            server,
            "kube_event_pipe_dedup_fill_ratio{generation=\"0\"} > 0",
        )
        .filter(|r| !r.is_empty())
    });
    assert_eq!(fill.len(), 1, "one newest generation");
    drop(stdin);
}
