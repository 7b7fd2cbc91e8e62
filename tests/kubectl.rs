//! Keeps the test API server honest: the real kubectl lists, watches and is refused by it as it
//! would be by a cluster.

mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use serde_json::{Value, json};
use support::event::EventBuilder;
use support::fake_api::ApiServer;
use support::*;

fn kubectl(server: &ApiServer) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", server.kubeconfig().parent().unwrap())
        .arg("--kubeconfig")
        .arg(server.kubeconfig());
    cmd
}

type Identity = (String, String, String);

fn identity(ev: &Value) -> Identity {
    let m = &ev["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().unwrap_or_default().to_string(),
        m["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn kubectl_lists_every_event_in_pages() {
    let server = ApiServer::start();
    for i in 0..1200 {
        let ns = ["default", "kube-system", "shop"][i % 3];
        server.add(
            EventBuilder::new(ns, &format!("ev-{i}.18a2"))
                .involved("v1", "Pod", "web-0")
                .reason("Pulled")
                .message("Container image already present on machine")
                .build(),
        );
    }
    let out = kubectl(&server)
        .args(["get", "events", "-A", "-o", "json"])
        .output()
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let list: Value = serde_json::from_slice(&out.stdout).expect("kubectl printed JSON");
    let items = list["items"].as_array().expect("items");
    let got: BTreeSet<Identity> = items.iter().map(identity).collect();
    let want: BTreeSet<Identity> = server.events().iter().map(identity).collect();
    assert_eq!(items.len(), 1200);
    assert_eq!(got, want);
    assert!(items.iter().all(|i| i["kind"] == "Event"));
    let pages = server
        .stats()
        .list_limits
        .iter()
        .filter(|l| **l == Some(500))
        .count();
    assert!(pages >= 3, "kubectl fetched {pages} pages of 500");
}

#[test]
fn kubectl_watch_prints_what_happens_after_the_list() {
    let server = ApiServer::start();
    for i in 0..5 {
        server.add(
            EventBuilder::new("default", &format!("before-{i}"))
                .involved("v1", "Pod", "web-0")
                .reason("Pulled")
                .message("Container image already present on machine")
                .build(),
        );
    }
    let mut child = kubectl(&server)
        .args(["get", "events", "-A", "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kubectl");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        // kubectl prints pretty JSON objects one after another; parse them as they come.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            let mut consumed = 0;
            while let Some(Ok(v)) = stream.next() {
                consumed = stream.byte_offset();
                if tx.send(v).is_err() {
                    return;
                }
            }
            buf.drain(..consumed);
        }
    });
    let mut seen = BTreeSet::new();
    let wait_names = |want: &[String], seen: &mut BTreeSet<String>| {
        let end = Instant::now() + DEADLINE;
        while !want.iter().all(|n| seen.contains(n)) {
            let left = end.saturating_duration_since(Instant::now());
            let v = rx
                .recv_timeout(left)
                .expect("kubectl printed the events in time");
            seen.insert(
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    };
    let before: Vec<String> = (0..5).map(|i| format!("before-{i}")).collect();
    wait_names(&before, &mut seen);
    let after: Vec<String> = (0..3).map(|i| format!("after-{i}")).collect();
    for name in &after {
        server.add(
            EventBuilder::new("shop", name)
                .involved("v1", "Pod", "web-0")
                .reason("Pulled")
                .message("Container image already present on machine")
                .build(),
        );
    }
    server.modify("default", "before-0", |e| e["count"] = json!(2));
    wait_names(&after, &mut seen);
    let _ = child.kill();
    let _ = child.wait();
    assert!(server.stats().watch_requests >= 1);
}

#[test]
fn kubectl_is_refused_for_an_identity_without_rights() {
    let server = ApiServer::start();
    server.add(
        EventBuilder::new("default", "secret")
            .involved("v1", "Pod", "web-0")
            .reason("Pulled")
            .message("Container image already present on machine")
            .build(),
    );
    server.forbid_user("viewer");
    let out = kubectl(&server)
        .args([
            "--context",
            "forbidden",
            "get",
            "events",
            "-A",
            "-o",
            "json",
        ])
        .output()
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("events is forbidden: User \"viewer\" cannot list resource \"events\""),
        "{stderr}"
    );
}
