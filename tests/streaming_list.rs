//! Streaming lists end to end: the real binary against the test API server, which serves
//! WatchList as kube-apiserver does (the state as ADDED events, then a BOOKMARK annotated
//! `k8s.io/initial-events-end`), or refuses it (feature gate off: 422), or ignores it (a server
//! that predates the parameters). Whatever the server does, every event is delivered once.

mod support;

use std::collections::BTreeSet;

use support::event::EventBuilder;
use support::fake_api::{ApiServer, WatchList};
use support::kube_pipe::Pipe;
use support::*;

/// `n` events named `{prefix}-{i}`, added to the server; their occurrences.
fn add_events(server: &ApiServer, prefix: &str, n: usize) -> BTreeSet<Occurrence> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    server.add_all(names.iter().map(|name| {
        EventBuilder::new("default", name)
            .reason("Pulled")
            .message(format!("Pulled the image for {name}"))
            .build()
    }));
    names
        .into_iter()
        .map(|name| ("default".to_string(), name, 1))
        .collect()
}

/// Starts a pipe over `present` events on a server answering streaming lists as `mode` says,
/// waits until it is ready and has delivered them, then adds more and waits for those too.
/// Returns the server's statistics and the pipe's log.
fn run(mode: WatchList, extra: &[&str]) -> (support::fake_api::Stats, String) {
    let server = ApiServer::start();
    server.set_watch_list(mode);
    let mut expected = add_events(&server, "before", 1_200);
    let state = tempfile::tempdir().unwrap();
    let pipe = Pipe::start(&server, state.path(), extra);
    pipe.wait_ready();
    // Ready means every event of the initial state is delivered.
    assert_eq!(count_lines(&pipe.out), expected.len(), "{}", pipe.log());
    expected.extend(add_events(&server, "after", 300));
    pipe.wait_lines(expected.len());
    let stats = server.stats();
    let (lines, log) = pipe.stop();
    assert_exactly_once(&tally(lines.iter().map(String::as_str)), &expected);
    (stats, log)
}

#[test]
fn a_server_with_watch_list_streams_the_initial_state_instead_of_listing_pages() {
    let (stats, log) = run(WatchList::On, &[]);
    assert_eq!(stats.streaming_list_requests, 1, "{log}");
    // The only list is the startup probe of one event (it checks the RBAC and the address).
    assert!(
        stats.list_limits.iter().all(|l| *l == Some(1)),
        "list limits {:?}\n{log}",
        stats.list_limits
    );
    assert!(log.contains("streamed the initial events"), "{log}");
}

#[test]
fn a_server_with_the_feature_gate_off_is_listed_in_pages_after_one_refusal() {
    let (stats, log) = run(WatchList::GateOff, &[]);
    assert_eq!(
        stats.streaming_list_requests, 1,
        "asked once, then remembered\n{log}"
    );
    assert!(
        stats.list_limits.contains(&Some(500)),
        "{:?}",
        stats.list_limits
    );
    assert_eq!(
        log.matches("listing in pages instead").count(),
        1,
        "the fallback is logged once\n{log}"
    );
    assert!(
        log.contains("feature gate"),
        "the server's reason is in the log\n{log}"
    );
}

#[test]
fn a_server_that_ignores_send_initial_events_is_listed_in_pages() {
    // It answers with a plain watch: the state as ADDED events (delivered, and then deduplicated
    // against the list) but no end-of-state bookmark, only ordinary ones.
    let (stats, log) = run(WatchList::Ignored, &[]);
    assert_eq!(stats.streaming_list_requests, 1, "{log}");
    assert!(
        stats.list_limits.contains(&Some(500)),
        "{:?}",
        stats.list_limits
    );
    assert!(log.contains("listing in pages instead"), "{log}");
}

#[test]
fn paginate_never_asks_for_a_streaming_list() {
    let (stats, log) = run(WatchList::On, &["--initial-list", "paginate"]);
    assert_eq!(stats.streaming_list_requests, 0, "{log}");
    assert!(
        stats.list_limits.contains(&Some(500)),
        "{:?}",
        stats.list_limits
    );
}

#[test]
fn stream_fails_at_startup_with_the_fix_when_the_server_refuses_it() {
    let server = ApiServer::start();
    server.set_watch_list(WatchList::GateOff);
    add_events(&server, "e", 3);
    let state = tempfile::tempdir().unwrap();
    let mut pipe = Pipe::start(&server, state.path(), &["--initial-list", "stream"]);
    let status = wait_exit(&mut pipe.child);
    let log = pipe.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("--initial-list auto") && log.contains("WatchList"),
        "the message names the fix\n{log}"
    );
    assert_eq!(count_lines(&pipe.out), 0, "{log}");
}

#[test]
fn a_relist_after_the_history_is_compacted_streams_again() {
    let server = ApiServer::start();
    let mut expected = add_events(&server, "early", 100);
    let state = tempfile::tempdir().unwrap();
    let pipe = Pipe::start(&server, state.path(), &[]);
    pipe.wait_ready();
    // A watch cut off while the history moves on finds it gone (410) and lists again. The
    // server refuses connections meanwhile: a watch that reconnected before the compaction
    // would stream the new events without needing a relist.
    server.stop_listening();
    expected.extend(add_events(&server, "late", 100));
    server.compact();
    server.resume_listening();
    pipe.wait_lines(expected.len());
    let stats = server.stats();
    let (lines, log) = pipe.stop();
    assert_exactly_once(&tally(lines.iter().map(String::as_str)), &expected);
    assert!(
        stats.streaming_list_requests >= 2,
        "{} streaming lists\n{log}",
        stats.streaming_list_requests
    );
    assert!(
        stats.list_limits.iter().all(|l| *l == Some(1)),
        "no paginated list: {:?}",
        stats.list_limits
    );
}
