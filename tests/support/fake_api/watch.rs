//! Watches: chunked streams of envelopes from a resourceVersion, bookmarks, `timeoutSeconds`,
//! 410 Gone (or an empty 200) once the history asked for is compacted, and streaming lists
//! (`sendInitialEvents=true`) in each of the modes of [`WatchList`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::Response;
use serde_json::json;
use tokio::sync::mpsc;

use super::http::status;
use super::selector::Selector;
use super::store::Store;
use super::{Inner, StaleWatch, WatchList};

pub(super) fn watch_response(
    inner: Arc<Inner>,
    q: &HashMap<String, String>,
    sel: Selector,
) -> Response<Body> {
    let bookmarks = matches!(
        q.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let asked = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse::<u64>().ok());
    let mut initial = String::new();
    let start;
    {
        let mut s = inner.store();
        s.stats.watch_requests += 1;
        let send_initial = q.get("sendInitialEvents").map(String::as_str);
        if send_initial.is_some() {
            s.stats.streaming_list_requests += 1;
        }
        if s.watch_list != WatchList::Ignored {
            let problems = watch_list_problems(
                send_initial,
                q.get("resourceVersionMatch").map(String::as_str),
                s.watch_list == WatchList::On,
            );
            if !problems.is_empty() {
                let listed = if problems.len() == 1 {
                    problems[0].clone()
                } else {
                    format!("[{}]", problems.join(", "))
                };
                return status(
                    422,
                    "Invalid",
                    &format!("ListOptions.meta.k8s.io \"\" is invalid: {listed}"),
                );
            }
            if send_initial == Some("true") {
                // The state at the newest resourceVersion at or after the one asked for.
                if let Some(v) = asked
                    && v > s.head
                {
                    return status(
                        504,
                        "Timeout",
                        &format!("Too large resource version: {v}, current: {}", s.head),
                    );
                }
                current_state(&s, &sel, &mut initial);
                // Without bookmarks the end of the initial events is not announced.
                if bookmarks {
                    initial.push_str(&initial_events_end(s.head));
                }
                start = s.head;
                drop(s);
                return stream(inner, start, sel, bookmarks, timeout, initial);
            }
        }
        match asked {
            Some(v) if v < s.compacted || s.all_watches_stale => match s.stale {
                StaleWatch::EmptyOk => {
                    return Response::builder()
                        .header("content-type", "application/json")
                        .body(Body::empty())
                        .expect("response");
                }
                StaleWatch::Gone => {
                    s.stats.watch_events_sent += 1;
                    return Response::builder()
                        .header("content-type", "application/json")
                        .body(Body::from(gone(v, s.compacted)))
                        .expect("response");
                }
            },
            Some(v) => start = v,
            None => {
                // No resourceVersion: the current state first, as ADDED, then what follows.
                current_state(&s, &sel, &mut initial);
                start = s.head;
            }
        }
    }
    stream(inner, start, sel, bookmarks, timeout, initial)
}

/// Every current event the selector matches, as ADDED.
fn current_state(s: &Store, sel: &Selector, out: &mut String) {
    for versions in s.objects.values() {
        if let Some(o) = versions.last().and_then(|(_, o)| o.as_ref())
            && sel.matches(o)
        {
            o.watch_line("ADDED", out);
        }
    }
}

/// The BOOKMARK that ends a streaming list's initial events, as kube-apiserver writes it.
fn initial_events_end(rv: u64) -> String {
    format!(
        "{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"Event\",\"apiVersion\":\"v1\",\"metadata\":{{\"resourceVersion\":\"{rv}\",\"creationTimestamp\":null,\"annotations\":{{\"k8s.io/initial-events-end\":\"true\"}}}},\"involvedObject\":{{}},\"reportingComponent\":\"\",\"reportingInstance\":\"\",\"source\":{{}},\"firstTimestamp\":null,\"lastTimestamp\":null,\"eventTime\":null}}}}\n"
    )
}

/// The ERROR envelope of a watch from a resourceVersion older than the retained history.
fn gone(rv: u64, compacted: u64) -> String {
    format!(
        "{}\n",
        json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
            "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {rv} ({compacted})"),
            "reason": "Expired", "code": 410}})
    )
}

/// A 200 whose body is the watch from `start`, streamed as it happens.
fn stream(
    inner: Arc<Inner>,
    start: u64,
    sel: Selector,
    bookmarks: bool,
    timeout: Duration,
    initial: String,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(8);
    tokio::spawn(async move {
        stream_watch(inner, tx, start, sel, bookmarks, timeout, initial).await;
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .expect("response")
}

/// What kube-apiserver's validation of watch options says about the streaming-list parameters
/// (`validateWatchOptions`), one "field: Reason: detail" per problem.
fn watch_list_problems(
    send_initial: Option<&str>,
    version_match: Option<&str>,
    feature_on: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let version_match = version_match.filter(|m| !m.is_empty());
    if send_initial.is_some() {
        if version_match != Some("NotOlderThan") {
            problems.push("resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".to_string());
        }
        if !feature_on {
            problems.push("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled".to_string());
        }
    }
    if let Some(m) = version_match {
        if send_initial.is_none() {
            problems.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided".to_string());
        }
        if m != "NotOlderThan" {
            problems.push(format!("resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"NotOlderThan\""));
        }
    }
    problems
}

async fn stream_watch(
    inner: Arc<Inner>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    mut pos: u64,
    sel: Selector,
    bookmarks: bool,
    timeout: Duration,
    initial: String,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut head_rx = inner.head_tx.subscribe();
    let mut drop_rx = inner.drop_tx.subscribe();
    let mut bookmark = tokio::time::interval(inner.options.bookmark_interval);
    bookmark.tick().await;
    if !initial.is_empty() && tx.send(Ok(Bytes::from(initial))).await.is_err() {
        return;
    }
    loop {
        // Everything after `pos`, a slice at a time.
        let (chunk, lines, delay, gone) = {
            let mut s = inner.store();
            if pos < s.compacted {
                let line = gone(pos, s.compacted);
                s.stats.watch_events_sent += 1;
                (line, 1, Duration::ZERO, true)
            } else {
                let from = s.log.partition_point(|(rv, _)| *rv <= pos);
                let delay = s.delay;
                let max = if delay.is_zero() { 2000 } else { 1 };
                let mut out = String::new();
                let mut lines = 0u64;
                for (rv, entry) in s.log[from..].iter().take(max) {
                    pos = *rv;
                    if sel.matches(&entry.obj) {
                        entry.obj.watch_line(entry.kind, &mut out);
                        lines += 1;
                    }
                }
                s.stats.watch_events_sent += lines;
                (out, lines, delay, false)
            }
        };
        if lines > 0 {
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
            if gone {
                return;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if drop_rx.has_changed().unwrap_or(true) {
                return;
            }
            continue;
        }
        if pos < *head_rx.borrow_and_update() {
            continue;
        }
        tokio::select! {
            changed = head_rx.changed() => if changed.is_err() { return },
            _ = drop_rx.changed() => return,
            () = tokio::time::sleep_until(deadline) => return,
            _ = bookmark.tick(), if bookmarks => {
                let line = format!(
                    "{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"Event\",\"apiVersion\":\"v1\",\"metadata\":{{\"resourceVersion\":\"{pos}\"}}}}}}\n"
                );
                inner.store().stats.watch_events_sent += 1;
                if tx.send(Ok(Bytes::from(line))).await.is_err() {
                    return;
                }
            }
        }
    }
}
