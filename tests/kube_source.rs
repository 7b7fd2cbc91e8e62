//! The kube source end to end: the real binary against the test API server over HTTPS, through
//! pagination, watch, compaction (410), outages, stale resourceVersions, selectors and RBAC.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kube_event_pipe::synth::{SynthConfig, generate};
use serde_json::{Value, json};
use support::event::EventBuilder;
use support::fake_api::{ApiServer, StaleWatch};
use support::kube_pipe::Pipe;
use support::*;

/// A pipe with default options in a fresh state directory, once it is ready.
fn ready_pipe(server: &ApiServer) -> (tempfile::TempDir, Pipe) {
    let state = tempfile::tempdir().unwrap();
    let pipe = Pipe::start(server, state.path(), &[]);
    pipe.wait_ready();
    (state, pipe)
}

fn add_events(server: &ApiServer, prefix: &str, n: usize) -> BTreeSet<Occurrence> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i}.18a2b3c4d5e6f7a8");
            server.add(
                EventBuilder::new("default", &name)
                    .involved("v1", "Pod", &format!("{name}-object"))
                    .reported_by("kubelet", "node-1")
                    .build(),
            );
            ("default".to_string(), name, 1)
        })
        .collect()
}

fn present(server: &ApiServer) -> BTreeSet<Occurrence> {
    server.events().iter().map(occurrence).collect()
}

fn assert_lines_exactly_once(pipe_lines: &[String], expected: &BTreeSet<Occurrence>) {
    let got = tally(pipe_lines.iter().map(String::as_str));
    assert_exactly_once(&got, expected);
}

#[test]
fn events_present_and_arriving_are_delivered_once_and_a_restart_emits_nothing() {
    let server = ApiServer::start();
    let before = generate(&SynthConfig {
        envelopes: 19_000,
        seed: 41,
        ..SynthConfig::default()
    });
    server.add_envelopes(&before.text);
    let mut expected = present(&server);
    assert!(expected.len() >= 10_000, "{} present", expected.len());

    let (state, pipe) = ready_pipe(&server);
    // Ready means delivered: every listed event is in the file by then.
    assert_eq!(count_lines(&pipe.out), expected.len());

    let during = generate(&SynthConfig {
        envelopes: 12_000,
        seed: 42,
        ..SynthConfig::default()
    });
    let chunks: Vec<&str> = during.text.split_inclusive('\n').collect();
    for chunk in chunks.chunks(1000) {
        server.add_envelopes(&chunk.concat());
    }
    let arriving = expected_occurrences(&during.text);
    assert!(arriving.len() >= 10_000, "{} arriving", arriving.len());
    expected.extend(arriving);
    pipe.wait_lines(expected.len());
    let (lines, _) = pipe.stop();
    assert_lines_exactly_once(&lines, &expected);
    // The state was read with one streaming list; the only list is the startup probe.
    let stats = server.stats();
    assert_eq!(stats.streaming_list_requests, 1);
    assert!(
        stats.list_limits.iter().all(|l| *l == Some(1)),
        "list limits {:?}",
        stats.list_limits
    );

    // A restart over the same filters, with every event still on the server.
    let again = Pipe::start(&server, state.path(), &[]);
    again.wait_ready();
    let (after_restart, log) = again.stop();
    assert_eq!(
        after_restart.len(),
        lines.len(),
        "the restart re-emitted events\n{log}"
    );
}

#[test]
fn compaction_mid_stream_and_on_resume_relists_without_loss_or_repeat() {
    let server = ApiServer::start();
    let mut expected = add_events(&server, "early", 200);
    let (_state, pipe) = ready_pipe(&server);

    // Mid-stream: the open watch is behind the head when history is compacted away, so the
    // server ends it with a 410 ERROR event.
    server.set_stream_delay(Duration::from_millis(2));
    expected.extend(add_events(&server, "streamed", 1500));
    pipe.wait_lines(400);
    assert!(
        count_lines(&pipe.out) < expected.len(),
        "the watch was not behind"
    );
    server.compact();
    server.set_stream_delay(Duration::ZERO);
    pipe.wait_lines(expected.len());
    pipe.wait_log("watch history expired (410 Gone); listing again");

    // On resume: the pipe cannot connect while events arrive and history is compacted, so
    // its next watch starts from a resourceVersion the server no longer has.
    // A relist reads the state again: a streaming list (or a paginated one).
    let relists = |s: support::fake_api::Stats| s.list_requests + s.streaming_list_requests;
    let lists_before = relists(server.stats());
    server.stop_listening();
    expected.extend(add_events(&server, "while-away", 300));
    server.compact();
    server.resume_listening();
    pipe.wait_lines(expected.len());
    let (lines, log) = pipe.stop();
    assert!(relists(server.stats()) > lists_before, "no relist\n{log}");
    assert_lines_exactly_once(&lines, &expected);
}

#[test]
fn ten_seconds_of_refused_connections_lose_nothing_and_log_once() {
    let server = ApiServer::start();
    let mut expected = add_events(&server, "before", 300);
    let (_state, pipe) = ready_pipe(&server);

    let outage = Instant::now();
    server.refuse_connections(Duration::from_secs(10));
    expected.extend(add_events(&server, "during", 1000));
    pipe.wait_lines(expected.len());
    assert!(
        outage.elapsed() >= Duration::from_secs(10),
        "delivered while refusing connections"
    );
    let (lines, log) = pipe.stop();
    assert_lines_exactly_once(&lines, &expected);
    // Several attempts failed, but the log says so once per kind of failure, then recovers.
    let warnings = log.matches("retrying with backoff").count();
    assert!((1..=2).contains(&warnings), "{warnings} warnings\n{log}");
    assert!(log.contains("recovered from: "), "{log}");
}

#[test]
fn namespaces_and_selectors_narrow_what_is_delivered() {
    let server = ApiServer::start();
    let mut all = Vec::new();
    for (i, ns) in ["alpha", "beta", "gamma"].iter().enumerate() {
        for j in 0..40 {
            let kind = if j % 3 == 0 { "Warning" } else { "Normal" };
            let of = if j % 2 == 0 { "Pod" } else { "Node" };
            let name = format!("ev-{i}-{j}.18a2b3c4");
            let mut ev = EventBuilder::new(ns, &name)
                .involved("v1", of, &format!("{name}-object"))
                .event_type(kind)
                .reported_by("kubelet", "node-1")
                .build();
            if j % 4 == 0 {
                ev["metadata"]["labels"] = json!({"team": "payments"});
            }
            server.add(ev.clone());
            all.push(ev);
        }
    }
    let expect = |keep: &dyn Fn(&Value) -> bool| -> BTreeSet<Occurrence> {
        all.iter().filter(|e| keep(e)).map(occurrence).collect()
    };

    let run = |extra: &[&str]| -> Vec<String> {
        let state = tempfile::tempdir().unwrap();
        let pipe = Pipe::start(&server, state.path(), extra);
        pipe.wait_ready();
        pipe.stop().0
    };

    let lines = run(&[
        "--namespace",
        "alpha",
        "--namespace",
        "beta",
        "--field-selector",
        "type=Warning",
    ]);
    let wanted = expect(&|e| e["metadata"]["namespace"] != "gamma" && e["type"] == "Warning");
    assert!(!wanted.is_empty());
    assert_lines_exactly_once(&lines, &wanted);
    let paths = server.stats().requests_by_path;
    assert!(
        paths.contains_key("/api/v1/namespaces/alpha/events"),
        "{paths:?}"
    );
    assert!(
        !paths.contains_key("/api/v1/namespaces/gamma/events"),
        "{paths:?}"
    );

    let lines = run(&[
        "--label-selector",
        "team=payments",
        "--field-selector",
        "involvedObject.kind=Pod",
    ]);
    let wanted = expect(&|e| {
        e["metadata"]["labels"]["team"] == "payments" && e["involvedObject"]["kind"] == "Pod"
    });
    assert!(!wanted.is_empty());
    assert_lines_exactly_once(&lines, &wanted);
}

#[test]
fn an_identity_without_list_rights_stops_at_startup_naming_the_fix() {
    let server = ApiServer::start();
    add_events(&server, "secret", 5);
    server.forbid_user("viewer");
    let state = tempfile::tempdir().unwrap();
    let pipe = Pipe::start(&server, state.path(), &["--context", "forbidden"]);
    let mut child = pipe.child;
    let status = wait_exit(&mut child);
    let log = std::fs::read_to_string(&pipe.log).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: not allowed to list events in all namespaces (403 Forbidden: "),
        "{log}"
    );
    assert!(
        last.ends_with("); grant get, list and watch on events (deploy/kustomize/base/rbac.yaml)"),
        "{log}"
    );
    assert!(!state.path().join("filters").exists(), "filters created");
    assert!(!pipe.out.exists() || count_lines(&pipe.out) == 0);
}

#[test]
fn an_unreachable_api_server_is_named_at_startup() {
    let server = ApiServer::start();
    let kubeconfig = std::fs::read_to_string(server.kubeconfig()).unwrap();
    let url = server.https_url();
    drop(server);
    let state = tempfile::tempdir().unwrap();
    let kc = state.path().join("kubeconfig");
    std::fs::write(&kc, kubeconfig).unwrap();
    let pipe = Pipe::start_with(&kc, state.path(), &[]);
    let mut child = pipe.child;
    let status = wait_exit(&mut child);
    let log = std::fs::read_to_string(&pipe.log).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "error: cannot reach the Kubernetes API server at {url}/: "
        )),
        "{log}"
    );
    assert!(last.contains("onnection refused"), "{log}");
}

#[test]
fn watches_that_end_at_once_and_empty_make_it_relist_with_backoff() {
    let server = ApiServer::start();
    server.set_stale_watch(StaleWatch::EmptyOk);
    let mut expected = add_events(&server, "first", 200);
    let (_state, pipe) = ready_pipe(&server);

    // The pipe's resourceVersion goes stale while it cannot connect; the server then answers
    // its watch with 200 and an empty, closed stream instead of a 410.
    server.stop_listening();
    expected.extend(add_events(&server, "second", 300));
    server.compact();
    let before = server.stats();
    let resumed = Instant::now();
    server.resume_listening();
    pipe.wait_lines(expected.len());
    let after = server.stats();
    pipe.wait_log("watch keeps ending empty; listing again");
    // Two empty watches, then one relist (a streaming list) and one good watch: a handful, and
    // within the first backoff steps (0.25 s, 0.5 s, each with jitter) of the reconnect.
    let watches = after.watch_requests - before.watch_requests;
    assert!(watches <= 4, "{watches} watch requests to recover");
    assert!(resumed.elapsed() < Duration::from_secs(45));

    // Keep every watch stale for ten seconds: each relist's resourceVersion is gone before its
    // watch starts, so no watch ever delivers. A loop without backoff would send thousands of
    // requests.
    server.set_all_watches_stale(true);
    let before = server.stats();
    server.drop_watches();
    let window = Instant::now();
    let mut n = 0;
    while window.elapsed() < Duration::from_secs(10) {
        expected.extend(add_events(&server, &format!("churn{n}"), 1));
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = server.stats();
    server.set_all_watches_stale(false);
    let requests = (after.watch_requests - before.watch_requests)
        + (after.list_requests - before.list_requests);
    eprintln!("{requests} list and watch requests in 10 s of stale watches");
    // Backoff doubles from 0.25 s: at most about 6 waits in 10 s, two requests each, plus slack.
    // At least the watch that replaces the dropped one; how many more depends on how far the
    // backoff had grown during the outage before (up to 30 s a step).
    assert!(
        (1..=20).contains(&requests),
        "{requests} requests in 10 s of stale watches: it must keep trying, with backoff"
    );
    pipe.wait_lines(expected.len());
    let (lines, _) = pipe.stop();
    assert_lines_exactly_once(&lines, &expected);
}
