//! Unit tests of the kube source: list pages as records, and the watcher's steps through
//! responses read from memory: what it hands over and reports, in which order, and where it
//! goes next (built only under #[cfg(test)]).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::time::Instant;

use super::reader::{InitialEvents, WatchReader};
use super::*;
use crate::event::{self, Change, OccurrenceKey};
use crate::scan;

#[test]
fn list_items_get_kind_and_api_version_once() {
    let page = concat!(
        r#"{"kind":"EventList","metadata":{"resourceVersion":"9"},"items":["#,
        r#"{"metadata":{"name":"a","namespace":"n","resourceVersion":"3"},"count":2},"#,
        r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"b"}},"#,
        r#"{"apiVersion":"v1","metadata":{"name":"c"}}]}"#
    );
    let mut list = scan::list(page).unwrap();
    let items = event::with_type_meta(page, &mut list.items);
    let records: Vec<_> = list
        .items
        .iter()
        .map(|(span, f)| EventRecord::from_scanned(Change::Added, &items, span.clone(), f).unwrap())
        .collect();
    assert_eq!(
        records[0].raw.get(),
        r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"a","namespace":"n","resourceVersion":"3"},"count":2}"#
    );
    assert_eq!(records[0].resource_version(), Some("3"));
    assert_eq!(records[0].count, 2);
    assert_eq!((records[0].namespace(), records[0].name()), ("n", "a"));
    assert_eq!((records[2].namespace(), records[2].name()), ("", "c"));
    assert_eq!(records[0].key, OccurrenceKey::new("n", "a", 2));
    assert_eq!(
        records[1].raw.get(),
        r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"b"}}"#
    );
    // One of the two already there: left as it is rather than given a duplicate key.
    assert_eq!(
        records[2].raw.get(),
        r#"{"apiVersion":"v1","metadata":{"name":"c"}}"#
    );
    assert_eq!(list.resource_version.unwrap().value(page), "9");
}

fn watcher(
    index: usize,
    progress: bool,
    lists_pending: &Arc<AtomicUsize>,
    tx: &mpsc::Sender<SourceMsg>,
) -> Watcher {
    // Never used: these tests step through states that make no request.
    let client =
        Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let scope = Scope(None);
    let restarts = Restarts::new();
    let retry = Retry::new(&scope, restarts.error.clone());
    Watcher {
        index,
        progress: progress.then_some(None),
        client,
        url: "http://127.0.0.1:9".into(),
        path: scope.path(),
        scope,
        tx: tx.clone(),
        health: Arc::default(),
        lists_pending: lists_pending.clone(),
        first_list_done: false,
        watching: true,
        streaming: true,
        config: KubeConfig::default(),
        retry,
        restarts,
    }
}

fn added(name: &str, version: u64) -> String {
    format!(
        r#"{{"type":"ADDED","object":{{"metadata":{{"name":"{name}","namespace":"n","resourceVersion":"{version}"}}}}}}"#
    ) + "\n"
}

fn bookmark(version: u64) -> String {
    format!(r#"{{"type":"BOOKMARK","object":{{"metadata":{{"resourceVersion":"{version}"}}}}}}"#)
        + "\n"
}

fn initial_events_end(version: u64) -> String {
    format!(
        r#"{{"type":"BOOKMARK","object":{{"metadata":{{"resourceVersion":"{version}","annotations":{{"k8s.io/initial-events-end":"true"}}}}}}}}"#
    ) + "\n"
}

const GONE: &str = "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,\"message\":\"too old resource version\"}}\n";

/// A watch response (with `streaming`, a streaming list's) that arrives in these network
/// reads, then ends: closed by the server, or, with `broken`, by a failed read.
fn response(streaming: bool, reads: Vec<String>, broken: bool) -> State {
    let reads = reads
        .into_iter()
        .map(|r| Ok(Frame::data(Bytes::from(r))))
        .chain(broken.then(|| Err(std::io::Error::other("connection reset").into())));
    let started = Instant::now();
    State::Reading(Box::new(Response {
        body: StreamBody::new(futures::stream::iter(reads)).boxed_unsync(),
        reader: WatchReader::new(if streaming {
            InitialEvents::Awaited { events: 0 }
        } else {
            InitialEvents::NotAsked
        }),
        version: if streaming { String::new() } else { "1".into() },
        streaming,
        empty_watches: 0,
        started,
        deadline: started + Duration::from_secs(60),
    }))
}

/// Steps until the response has been read to its end; returns the state that follows.
async fn read_to_end(watcher: &mut Watcher, mut state: State) -> State {
    while matches!(state, State::Reading(_)) {
        state = watcher.step(state).await;
    }
    state
}

/// What the pipeline was told, in order.
fn told(rx: &mut mpsc::Receiver<SourceMsg>) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|msg| match msg {
            SourceMsg::Records(records) => {
                let versions: Vec<_> = records
                    .iter()
                    .filter_map(|r| r.resource_version())
                    .collect();
                format!("records {}", versions.join(","))
            }
            SourceMsg::InitialListSent => "initial list sent".into(),
            SourceMsg::Through { scope, version } => match version {
                Some(v) => format!("scope {scope} through {v}"),
                None => format!("scope {scope} through a version that is not a number"),
            },
            SourceMsg::Failed(e) => format!("failed: {e}"),
        })
        .collect()
}

fn is_backing_off_to_relist(state: &State) -> bool {
    matches!(state, State::BackingOff(then) if matches!(**then, State::Relisting))
}

#[tokio::test]
async fn a_streaming_list_reports_progress_only_from_its_end_and_each_version_once() {
    let (tx, mut rx) = mpsc::channel(64);
    let mut w = watcher(0, true, &Arc::new(AtomicUsize::new(1)), &tx);
    let reads = vec![
        // The initial events come in no particular order of versions.
        added("a", 7) + &added("b", 5),
        initial_events_end(9),
        added("c", 10),
        bookmark(10),
        bookmark(12),
    ];
    let state = read_to_end(&mut w, response(true, reads, false)).await;
    assert_eq!(
        told(&mut rx),
        [
            "records 7,5",
            "scope 0 through 9",
            "initial list sent",
            "records 10",
            "scope 0 through 10",
            "scope 0 through 12",
        ]
    );
    // The stream went on as a watch; the next one starts where it ended.
    assert!(matches!(&state, State::Watching { version, empty_watches: 0 } if version == "12"));
}

#[tokio::test]
async fn what_a_read_brought_before_a_410_is_handed_over_and_reported_before_the_relist() {
    let (tx, mut rx) = mpsc::channel(64);
    let mut w = watcher(1, true, &Arc::new(AtomicUsize::new(1)), &tx);
    let reads = vec![added("a", 5), added("b", 6) + &added("c", 8) + GONE];
    let state = read_to_end(&mut w, response(false, reads, false)).await;
    assert_eq!(
        told(&mut rx),
        [
            "records 5",
            "scope 1 through 5",
            "records 6,8",
            "scope 1 through 8",
        ]
    );
    assert!(is_backing_off_to_relist(&state));
}

#[tokio::test]
async fn a_streaming_list_answered_as_a_plain_watch_promises_nothing_and_falls_back_to_pages() {
    let (tx, mut rx) = mpsc::channel(64);
    let pending = Arc::new(AtomicUsize::new(1));
    let mut w = watcher(0, true, &pending, &tx);
    let reads = vec![added("a", 7), added("b", 5) + &bookmark(3) + &added("c", 8)];
    let state = read_to_end(&mut w, response(true, reads, false)).await;
    // What came before the ordinary bookmark is handed over (the list's pages repeat it,
    // and the filters drop it), but no version is promised and the state is not listed.
    assert_eq!(told(&mut rx), ["records 7", "records 5"]);
    assert!(matches!(state, State::Relisting) && !w.streaming);
    assert_eq!(pending.load(Ordering::Acquire), 1);
}

#[tokio::test]
async fn a_broken_streaming_list_backs_off_and_reads_the_state_again() {
    let (tx, mut rx) = mpsc::channel(64);
    let pending = Arc::new(AtomicUsize::new(1));
    let mut w = watcher(0, true, &pending, &tx);
    let reads = vec![added("a", 7), added("b", 5)];
    let state = read_to_end(&mut w, response(true, reads, true)).await;
    assert_eq!(told(&mut rx), ["records 7", "records 5"]);
    assert!(is_backing_off_to_relist(&state));
    assert_eq!(pending.load(Ordering::Acquire), 1);
}

#[tokio::test]
async fn the_last_scope_to_list_announces_the_initial_list_once_after_its_progress() {
    let (tx, mut rx) = mpsc::channel(64);
    let pending = Arc::new(AtomicUsize::new(2));
    let mut first = watcher(0, true, &pending, &tx);
    let mut second = watcher(1, true, &pending, &tx);
    let listed = |v: &str| State::Listed { version: v.into() };
    let state = first.step(listed("9")).await;
    assert!(matches!(&state, State::Watching { version, empty_watches: 0 } if version == "9"));
    assert_eq!(told(&mut rx), ["scope 0 through 9"]);
    second.step(listed("4")).await;
    assert_eq!(told(&mut rx), ["scope 1 through 4", "initial list sent"]);
    // Relists: progress when it moved, and never the initial list again.
    first.step(listed("9")).await;
    first.step(listed("11")).await;
    second.step(listed("x")).await;
    assert_eq!(
        told(&mut rx),
        [
            "scope 0 through 11",
            "scope 1 through a version that is not a number",
        ]
    );
}

#[tokio::test]
async fn without_progress_reports_only_records_and_the_initial_list_are_sent() {
    let (tx, mut rx) = mpsc::channel(64);
    let mut w = watcher(0, false, &Arc::new(AtomicUsize::new(1)), &tx);
    let reads = vec![added("a", 7), initial_events_end(9), added("b", 10)];
    read_to_end(&mut w, response(true, reads, false)).await;
    w.step(State::Listed {
        version: "12".into(),
    })
    .await;
    assert_eq!(
        told(&mut rx),
        ["records 7", "initial list sent", "records 10"]
    );
}

#[tokio::test]
async fn a_request_that_cannot_be_built_is_its_own_failure_not_a_kubeconfig_one() {
    let (tx, mut rx) = mpsc::channel(8);
    let pending = Arc::new(AtomicUsize::new(1));
    let mut w = watcher(0, false, &pending, &tx);
    // A space cannot be in a URI: the request fails before anything is sent.
    w.scope = Scope(Some("a b".into()));
    w.path = w.scope.path();
    let state = w.step(State::ListingPage(Pages::new())).await;
    assert!(matches!(state, State::Stopped));
    let told = told(&mut rx);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].starts_with("failed: cannot build the request to list events in namespace a b: "),
        "{told:?}"
    );
    assert!(!told[0].contains("--kubeconfig"), "{told:?}");
}
