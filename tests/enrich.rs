//! Enrichment end to end: the real binary against the test API server, which serves pods,
//! nodes and workloads and counts every GET, so the tests can state how many lookups the cache
//! let through.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::event::EventBuilder;
use support::fake_api::{ApiServer, object_path};
use support::kube_pipe::Pipe;
use support::wait_for;

const NS: &str = "shop";

fn node(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": format!("node-{i}"), "labels": {"zone": "a"}},
           "status": {"addresses": [
               {"type": "Hostname", "address": format!("node-{i}")},
               {"type": "InternalIP", "address": format!("10.0.0.{i}")}]}})
}

fn pod(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("web-{i}"), "namespace": NS,
               "labels": {"app": format!("web-{}", i % 10), "tier": "frontend"},
               "annotations": {"team": "payments"},
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                   "name": format!("web-{}-7d9f", i % 10), "uid": "u", "controller": true}]},
           "spec": {"nodeName": format!("node-{}", i % 5)}})
}

/// A container's restart back-off as the kubelet writes it: a Warning, no timestamps, no host;
/// the object it is about is the test's to say.
fn back_off(name: &str) -> EventBuilder {
    EventBuilder::new(NS, name)
        .reason("BackOff")
        .message("Back-off restarting failed container")
        .source("kubelet", None)
        .event_type("Warning")
        .no_timestamps()
}

fn gets_under(server: &ApiServer, prefix: &str) -> u64 {
    server
        .stats()
        .requests_by_path
        .iter()
        .filter(|(p, _)| p.starts_with(prefix))
        .map(|(_, n)| n)
        .sum()
}

fn parsed(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ten_thousand_events_about_a_hundred_pods_cost_a_hundred_and_five_gets() {
    let server = ApiServer::start();
    for i in 0..5 {
        server.put_object(node(i));
    }
    for i in 0..100 {
        server.put_object(pod(i));
    }
    // Present before the pipe starts: the initial list brings them in pages, so many events
    // about one pod are being enriched at the same time.
    for i in 0..10_000 {
        server.add(
            back_off(&format!("web-{}.{i:08x}", i % 100))
                .involved("v1", "Pod", &format!("web-{}", i % 100))
                .build(),
        );
    }
    let state = tempfile::tempdir().unwrap();
    let pipe = Pipe::start(&server, state.path(), &["--enrich"]);
    pipe.wait_lines(10_000);
    let (lines, log) = pipe.stop();
    assert_eq!(lines.len(), 10_000);

    for v in parsed(&lines) {
        let pod_name = v["involvedObject"]["name"].as_str().unwrap();
        let i: usize = pod_name.trim_start_matches("web-").parse().unwrap();
        let e = &v["enrichment"];
        assert_eq!(e["labels"]["app"], format!("web-{}", i % 10), "{v}");
        assert_eq!(e["labels"]["tier"], "frontend");
        assert_eq!(e["annotations"]["team"], "payments");
        assert_eq!(
            e["owner"],
            json!({"kind": "ReplicaSet", "name": format!("web-{}-7d9f", i % 10)})
        );
        assert_eq!(
            e["node"],
            json!({"name": format!("node-{}", i % 5), "address": format!("10.0.0.{}", i % 5)})
        );
        // The Event's own fields are untouched.
        assert_eq!(v["reason"], "BackOff");
    }
    let pod_gets = gets_under(&server, &format!("/api/v1/namespaces/{NS}/pods/"));
    let node_gets = gets_under(&server, "/api/v1/nodes/");
    let discovery = server
        .stats()
        .requests_by_path
        .get("/api/v1")
        .copied()
        .unwrap_or(0);
    eprintln!(
        "{pod_gets} pod GETs and {node_gets} node GETs for 10000 events, {discovery} discovery"
    );
    // Kinds are resolved once (Pod and Node), however many objects are fetched.
    assert!(discovery <= 2, "{discovery} discovery requests");
    assert!((100..=105).contains(&pod_gets), "{pod_gets} pod GETs");
    assert_eq!(node_gets, 5, "node GETs");
    assert!(!log.contains("WARN"), "{log}");
}

#[test]
fn a_deleted_object_is_looked_up_once_per_ttl_not_once_per_event() {
    let server = ApiServer::start();
    let missing = object_path("v1", "Pod", NS, "gone-1").unwrap();
    for i in 0..300 {
        server.add(
            back_off(&format!("gone-1.{i:08x}"))
                .involved("v1", "Pod", "gone-1")
                .build(),
        );
    }
    let state = tempfile::tempdir().unwrap();
    // Before the start: the first GET comes after it, the second a TTL after the first.
    let started = Instant::now();
    let pipe = Pipe::start(
        &server,
        state.path(),
        &["--enrich", "--enrich-cache-ttl", "1"],
    );
    pipe.wait_lines(300);
    assert_eq!(server.stats().requests_by_path.get(&missing), Some(&1));

    // More events about it keep arriving; each TTL lets one more GET through, no more.
    let mut sent = 300;
    wait_for("a second lookup once the TTL has passed", || {
        server.add(
            back_off(&format!("gone-1.{sent:08x}"))
                .involved("v1", "Pod", "gone-1")
                .build(),
        );
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
        (server.stats().requests_by_path.get(&missing) >= Some(&2)).then_some(())
    });
    let elapsed = started.elapsed().as_secs_f64();
    pipe.wait_lines(sent);
    let (lines, _) = pipe.stop();
    let gets = server.stats().requests_by_path[&missing];
    eprintln!("{gets} GETs of a missing pod for {sent} events in {elapsed:.1} s");
    assert!(
        elapsed >= 1.0,
        "a second GET after {elapsed:.2} s, inside the TTL"
    );
    assert!(
        gets as f64 <= elapsed + 2.0,
        "{gets} GETs in {elapsed:.1} s"
    );
    // Nothing to add for an object that is gone, and no source host: no enrichment key.
    assert!(parsed(&lines).iter().all(|v| v.get("enrichment").is_none()));
}

#[test]
fn a_forbidden_kind_is_logged_once_and_its_events_go_out_unenriched() {
    let server = ApiServer::start();
    server.forbid_resource("deployments");
    server.put_object(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS, "labels": {"app": "web"}}}));
    server.put_object(node(0));
    server.put_object(pod(0));
    let mut expected = BTreeMap::new();
    for i in 0..200 {
        let (kind, api_version, object) = if i % 2 == 0 {
            ("Deployment", "apps/v1", "web")
        } else {
            ("Pod", "v1", "web-0")
        };
        let name = format!("{object}.{i:08x}");
        server.add(back_off(&name).involved(api_version, kind, object).build());
        expected.insert(name, kind);
    }
    let state = tempfile::tempdir().unwrap();
    let pipe = Pipe::start(&server, state.path(), &["--enrich"]);
    pipe.wait_lines(200);
    let (lines, log) = pipe.stop();
    for v in parsed(&lines) {
        let name = v["metadata"]["name"].as_str().unwrap();
        match expected[name] {
            "Deployment" => assert!(v.get("enrichment").is_none(), "{v}"),
            _ => assert_eq!(v["enrichment"]["labels"]["app"], "web-0", "{v}"),
        }
    }
    let warnings = log.matches("enrichment may not get deployments").count();
    assert_eq!(warnings, 1, "{log}");
    // Concurrent lookups share the one refused GET, and the kind is skipped from then on.
    let deployment_gets = gets_under(&server, "/apis/apps/v1/namespaces/");
    assert_eq!(deployment_gets, 1, "GETs of a forbidden kind");
}

#[test]
fn a_stalled_api_server_delays_no_event_beyond_the_timeout() {
    let server = ApiServer::start();
    server.put_object(pod(0));
    server.set_get_delay(Duration::from_secs(30));
    // Many events about one pod, more than the stage holds at once: each waits for the one
    // shared GET at most the timeout, and none of them cancels it for the others.
    for i in 0..300 {
        server.add(
            back_off(&format!("web-0.{i:08x}"))
                .involved("v1", "Pod", "web-0")
                .build(),
        );
    }
    let state = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let pipe = Pipe::start(
        &server,
        state.path(),
        &["--enrich", "--enrich-timeout", "0.2"],
    );
    pipe.wait_lines(300);
    let took = started.elapsed();
    let (lines, log) = pipe.stop();
    assert_eq!(lines.len(), 300);
    // All out long before the GET could answer, and without enrichment.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(parsed(&lines).iter().all(|v| v.get("enrichment").is_none()));
    let gets = gets_under(&server, &format!("/api/v1/namespaces/{NS}/pods/"));
    assert_eq!(gets, 1, "one shared GET, never cancelled and restarted");
    assert!(!log.contains("panicked"), "{log}");
}
