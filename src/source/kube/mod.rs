//! The kube source: every core/v1 Event of the cluster (or of some namespaces), read as a
//! streaming list where the API server serves one (WatchList: a watch that starts with the
//! current state) or else listed in pages, then watched from the state's resourceVersion, and
//! read again when the history is gone.
//!
//! The list/watch loop is written here on `kube::Client` rather than taken from kube-runtime's
//! watcher, for three reasons the watcher cannot meet: it re-watches at once, without backoff
//! and without relisting, when a watch ends empty (which is how the API server answers a too-old
//! resourceVersion for events, since they bypass the watch cache: kubernetes issue 104171); it
//! decodes every object into a typed struct, where this pipe keeps each event's JSON as
//! received; and it has no way to tell when the first complete list has been handed over.
//!
//! It keeps the watcher's shape, though: a `State` per step of the cycle and one
//! `Watcher::step` from each to the next, so the order in which records, progress reports and
//! the end of the first list reach the pipeline (which a leader's watermark is built on) can be
//! read, and tested, one transition at a time. Beside it: `client` connects and checks the
//! identity at startup, `retry` paces and logs the retries, `reader` turns watch lines into
//! records.

mod client;
mod reader;
mod retry;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use kube::Client;
use kube::core::Request;
use kube::core::params::{ListParams, WatchParams};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{SourceError, SourceHealth};
use crate::config::{InitialList, KubeConfig};
use crate::event::{self, Change, EventError, EventRecord, SharedText};
use crate::flow::SourceMsg;
use crate::scan;

pub use client::{Cluster, cluster_uid, connect};
use client::{error_chain, probe, request_body, request_bytes, startup_error};
use reader::{InitialEvents, ReadEnd, WatchReader};
use retry::{Restarts, Retry};

/// Records per hand-off, as the replay source: a page or a burst of watch lines is split into
/// hand-offs of this size; a quieter stream is handed off as each network read ends.
const HANDOFF_BATCH: usize = 256;

/// Grace beyond the watch's own timeout before a silent connection counts as dead.
const WATCH_GRACE: Duration = Duration::from_secs(30);

/// A watch that ends this soon with nothing in it (no event, no bookmark) is suspect: the
/// API server's answer to a resourceVersion it no longer has.
const EMPTY_WATCH: Duration = Duration::from_secs(5);

/// Empty watches in a row after which the resourceVersion is taken as lost and the source
/// relists.
const EMPTY_WATCHES_BEFORE_RELIST: u32 = 2;

/// Checks that the identity may list events in every scope, then starts one watcher per scope.
/// Returns once the watchers run; they stop when `tx`'s receiver is dropped.
///
/// Fails fast (before any event is read) when the API server cannot be reached or the
/// identity may not list events. A watch refused at startup is
/// reported later through `tx` as [`SourceMsg::Failed`], after the list already handed over.
/// With `progress`, each scope also reports how far it has handed everything over
/// ([`SourceMsg::Through`]).
pub async fn start(
    config: &KubeConfig,
    cluster: &Cluster,
    tx: mpsc::Sender<SourceMsg>,
    health: Arc<SourceHealth>,
    progress: bool,
) -> Result<(), SourceError> {
    let Cluster { client, url } = cluster.clone();
    let scopes: Vec<Scope> = if config.namespaces.is_empty() {
        vec![Scope(None)]
    } else {
        config
            .namespaces
            .iter()
            .map(|n| Scope(Some(n.clone())))
            .collect()
    };
    for scope in &scopes {
        probe(&client, scope, config, &url).await?;
    }
    info!(
        server = %url,
        scopes = %scopes.iter().map(Scope::to_string).collect::<Vec<_>>().join(", "),
        "watching events"
    );
    let lists_pending = Arc::new(AtomicUsize::new(scopes.len()));
    for (index, scope) in scopes.into_iter().enumerate() {
        let watcher = Watcher {
            index,
            progress: progress.then_some(None),
            client: client.clone(),
            url: url.clone(),
            path: scope.path(),
            scope,
            tx: tx.clone(),
            health: health.clone(),
            lists_pending: lists_pending.clone(),
            first_list_done: false,
            watching: false,
            streaming: config.initial_list != InitialList::Paginate,
            config: config.clone(),
            retry: Retry::new(),
            restarts: Restarts::new(),
        };
        tokio::spawn(watcher.run());
    }
    Ok(())
}

/// All namespaces (`None`) or one.
#[derive(Clone, Debug)]
struct Scope(Option<String>);

impl Scope {
    fn path(&self) -> String {
        match &self.0 {
            None => "/api/v1/events".to_string(),
            Some(ns) => format!("/api/v1/namespaces/{ns}/events"),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("in all namespaces"),
            Some(ns) => write!(f, "in namespace {ns}"),
        }
    }
}

/// Where the watcher of one scope is in its list/watch cycle. [`Watcher::step`] takes a state
/// to the next one; every transition is an arm of its `match`, so what can follow what is read
/// in one place rather than pieced together from flags and nested loops.
enum State {
    /// The state must be read: at the start, and again whenever the watch history is gone. A
    /// streaming list where the server serves one, else a paginated list.
    Relisting,
    /// A paginated list, before its next page.
    ListingPage(Pages),
    /// A paginated list has handed over its last page: the state at `version`, from which the
    /// watch starts.
    Listed { version: String },
    /// A streaming list to request: a watch that begins with the state.
    Streaming,
    /// A watch to request, for the changes after `version`.
    Watching {
        version: String,
        /// Watches in a row, from this version, that ended at once with nothing in them.
        empty_watches: u32,
    },
    /// A watch (or streaming list) response being read, one network read per step.
    Reading(Box<Response>),
    /// The next backoff delay, then the state inside: after a failure, and before every relist,
    /// which costs the API server a full list.
    BackingOff(Box<State>),
    /// The pipeline is gone, or the source failed for good and has said so.
    Stopped,
}

impl State {
    fn after_backoff(then: State) -> State {
        State::BackingOff(Box::new(then))
    }
}

/// A paginated list under way.
struct Pages {
    continue_token: Option<String>,
    /// The next page, requested while this one is handed over: the server's time to build a
    /// page then overlaps the pipe's time to take one in, instead of adding to it.
    prefetched: Option<JoinHandle<Result<Bytes, kube::Error>>>,
    /// Events listed so far, for the log.
    listed: usize,
    started: Instant,
}

impl Pages {
    fn new() -> Self {
        Pages {
            continue_token: None,
            prefetched: None,
            listed: 0,
            started: Instant::now(),
        }
    }
}

/// A watch response's body, read frame by frame: records are slices of the frames.
type WatchBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// An open watch response.
struct Response {
    body: WatchBody,
    reader: WatchReader,
    /// The resourceVersion the watch was asked from; empty for a streaming list.
    version: String,
    /// A streaming list: the response begins with the state.
    streaming: bool,
    /// Carried over to the next watch from the same version.
    empty_watches: u32,
    /// When the watch was requested: one that ends soon after, empty, is suspect.
    started: Instant,
    /// When a silent connection counts as dead.
    deadline: Instant,
}

/// A watcher of one scope: list, then watch; relist when the history is gone.
struct Watcher {
    /// The scope's place in `--namespace`, as [`SourceMsg::Through`] names it.
    index: usize,
    /// With progress reports on: the version last reported.
    progress: Option<Option<String>>,
    client: Client,
    /// The API server, for messages.
    url: Arc<str>,
    scope: Scope,
    path: String,
    tx: mpsc::Sender<SourceMsg>,
    health: Arc<SourceHealth>,
    /// Watchers whose first complete list is not yet handed over; the last one to finish
    /// tells the pipeline.
    lists_pending: Arc<AtomicUsize>,
    first_list_done: bool,
    /// A watch of this scope has been accepted once: from then on a 403 is an outage to wait
    /// out (RBAC being rolled out), not a misconfiguration to stop on.
    watching: bool,
    /// The state is read with a streaming list; false after the server refused one in `auto`.
    streaming: bool,
    config: KubeConfig,
    retry: Retry,
    restarts: Restarts,
}

impl Watcher {
    async fn run(mut self) {
        let mut state = State::Relisting;
        while !matches!(state, State::Stopped) {
            state = self.step(state).await;
        }
    }

    async fn step(&mut self, state: State) -> State {
        match state {
            State::Relisting if self.streaming => State::Streaming,
            State::Relisting => State::ListingPage(Pages::new()),
            State::ListingPage(pages) => self.list_page(pages).await,
            State::Listed { version } => {
                // A list is a snapshot at its version: everything at or below it is handed over.
                if !self.report_through(&version).await || !self.initial_list_handed_over().await {
                    return State::Stopped;
                }
                State::Watching {
                    version,
                    empty_watches: 0,
                }
            }
            State::Streaming => self.open_watch(None, 0).await,
            State::Watching {
                version,
                empty_watches,
            } => self.open_watch(Some(version), empty_watches).await,
            State::Reading(response) => self.read(response).await,
            State::BackingOff(then) => {
                self.retry.wait().await;
                *then
            }
            State::Stopped => State::Stopped,
        }
    }

    /// Tells the pipeline, once, when the last scope has handed over its first complete state;
    /// false when the pipeline is gone.
    async fn initial_list_handed_over(&mut self) -> bool {
        if self.first_list_done {
            return true;
        }
        self.first_list_done = true;
        self.lists_pending.fetch_sub(1, Ordering::AcqRel) != 1
            || self.tx.send(SourceMsg::InitialListSent).await.is_ok()
    }

    fn list_request(
        &self,
        continue_token: Option<String>,
    ) -> Result<http::Request<Vec<u8>>, kube::core::request::Error> {
        let params = ListParams {
            limit: Some(self.config.list_page_size),
            continue_token,
            field_selector: self.config.field_selector.clone(),
            label_selector: self.config.label_selector.clone(),
            ..ListParams::default()
        };
        Request::new(&self.path).list(&params)
    }

    /// Reads the next page of a list and hands it over as it arrives, so memory holds one page,
    /// never the whole cluster's events.
    async fn list_page(&mut self, mut pages: Pages) -> State {
        let response = match pages.prefetched.take() {
            Some(next) => match next.await {
                Ok(result) => result,
                // The task cannot panic or be cancelled here; ask again if it somehow was.
                Err(_) => return State::ListingPage(pages),
            },
            None => match self.list_request(pages.continue_token.clone()) {
                Ok(request) => request_bytes(&self.client, request).await,
                Err(e) => return self.fail(SourceError::KubeConfig(e.to_string())).await,
            },
        };
        let body = match response {
            Ok(body) => body,
            Err(kube::Error::Api(status)) if status.code == 410 => {
                // The continue token outlived the server's history (about 5 minutes):
                // start the list over; the filters drop what was already delivered.
                info!(scope = %self.scope, "list continue token expired; listing again from the start");
                pages.continue_token = None;
                // A list that restarts at once can loop while the history churns faster
                // than a page is handed over; like every relist, it waits its turn.
                return State::after_backoff(State::ListingPage(pages));
            }
            Err(e) => {
                if !self.watching
                    && let kube::Error::Api(s) = &e
                    && matches!(s.code, 401 | 403)
                {
                    let err = startup_error(e, "list", &self.scope, &self.url);
                    return self.fail(err).await;
                }
                self.note_failure("cannot list events", &error_chain(&e));
                return State::after_backoff(State::ListingPage(pages));
            }
        };
        let page = SharedText::new(body)
            .map_err(|e| e.to_string())
            .and_then(|body| Ok((scan::list(body.as_str()).map_err(|e| e.to_string())?, body)));
        let (mut page, body) = match page {
            Ok(p) => p,
            Err(e) => {
                self.note_failure("the API server sent a list that is not an EventList", &e);
                return State::after_backoff(State::ListingPage(pages));
            }
        };
        let text = body.as_str();
        // Progress, but not recovery: that is a watch that delivers.
        self.health.set_retrying(false);
        self.health.progress();
        pages.listed += page.items.len();
        let token = page
            .continue_token
            .as_ref()
            .map(|t| t.value(text))
            .filter(|t| !t.is_empty());
        if let Some(token) = &token
            && let Ok(request) = self.list_request(Some(token.to_string()))
        {
            let client = self.client.clone();
            pages.prefetched = Some(tokio::spawn(async move {
                request_bytes(&client, request).await
            }));
        }
        let items = event::with_type_meta(text, &mut page.items);
        let records = page.items.iter().filter_map(|(span, fields)| {
            self.record(EventRecord::from_scanned(
                Change::Added,
                &items,
                span.clone(),
                fields,
            ))
        });
        if !self.hand_over(records).await {
            if let Some(next) = pages.prefetched.take() {
                next.abort();
            }
            return State::Stopped;
        }
        if let Some(token) = token {
            pages.continue_token = Some(token.into_owned());
            return State::ListingPage(pages);
        }
        let version = page
            .resource_version
            .as_ref()
            .map(|v| v.value(text))
            .filter(|v| !v.is_empty())
            .map(std::borrow::Cow::into_owned);
        match version {
            Some(version) => {
                info!(
                    scope = %self.scope,
                    events = pages.listed,
                    resource_version = %version,
                    took_ms = pages.started.elapsed().as_millis() as u64,
                    "listed events"
                );
                State::Listed { version }
            }
            None => {
                self.note_failure(
                    "the API server sent a list without a resourceVersion",
                    &"cannot watch from it",
                );
                pages.continue_token = None;
                pages.listed = 0;
                State::after_backoff(State::ListingPage(pages))
            }
        }
    }

    /// Requests a watch from `version`, or, with `None`, a streaming list (the current state as
    /// ADDED events up to a BOOKMARK annotated `k8s.io/initial-events-end`, then the changes
    /// after it).
    async fn open_watch(&mut self, version: Option<String>, empty_watches: u32) -> State {
        let streaming = version.is_none();
        let version = version.unwrap_or_default();
        let timeout_secs = self.config.watch_timeout.as_secs().max(1) as u32;
        let params = WatchParams {
            field_selector: self.config.field_selector.clone(),
            label_selector: self.config.label_selector.clone(),
            timeout: Some(timeout_secs),
            bookmarks: true,
            // With resourceVersionMatch=NotOlderThan and resourceVersion "": the newest state.
            send_initial_events: streaming,
        };
        let request = match Request::new(&self.path).watch(&params, &version) {
            Ok(r) => r,
            Err(e) => return self.fail(SourceError::KubeConfig(e.to_string())).await,
        };
        let started = Instant::now();
        let body = match request_body(&self.client, request).await {
            Ok(body) => body,
            // A server with the WatchList feature gate off answers 422 Invalid ("sendInitialEvents
            // is forbidden for watch unless the WatchList feature gate is enabled"); one that
            // predates resourceVersionMatch for watches, 422 or 400 as well.
            Err(kube::Error::Api(status)) if streaming && matches!(status.code, 400 | 422) => {
                return self
                    .no_streaming(format!("{} ({})", status.message, status.code))
                    .await;
            }
            Err(kube::Error::Api(status)) if status.code == 410 => {
                info!(scope = %self.scope, resource_version = %version, "watch history expired (410 Gone); listing again");
                self.restarts.relist.increment(1);
                return State::after_backoff(State::Relisting);
            }
            Err(e) => {
                if !self.watching
                    && let kube::Error::Api(s) = &e
                    && matches!(s.code, 401 | 403)
                {
                    let err = startup_error(e, "watch", &self.scope, &self.url);
                    return self.fail(err).await;
                }
                self.note_failure("cannot watch events", &error_chain(&e));
                return State::after_backoff(if streaming {
                    State::Relisting
                } else {
                    State::Watching {
                        version,
                        empty_watches,
                    }
                });
            }
        };
        self.watching = true;
        State::Reading(Box::new(Response {
            body: body.map_err(Into::into).boxed_unsync(),
            reader: WatchReader::new(if streaming {
                InitialEvents::Awaited { events: 0 }
            } else {
                InitialEvents::NotAsked
            }),
            version,
            streaming,
            empty_watches,
            started,
            deadline: started + self.config.watch_timeout + WATCH_GRACE,
        }))
    }

    /// Takes one network read of a watch response, hands over its records, and reports how far
    /// the scope is handed over.
    async fn read(&mut self, mut response: Box<Response>) -> State {
        let Response {
            body,
            reader,
            deadline,
            started,
            ..
        } = &mut *response;
        let end = match tokio::time::timeout_at(*deadline, body.frame()).await {
            Err(_) => Some(ReadEnd::Broken(format!(
                "no end of the watch {} s after its timeout",
                WATCH_GRACE.as_secs()
            ))),
            Ok(Some(Err(e))) => Some(ReadEnd::Broken(error_chain(&*e))),
            Ok(None) => Some(ReadEnd::Closed),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(chunk) => reader.feed(chunk, |result| self.record(result)),
                // Trailers: nothing to read.
                Err(_) => None,
            },
        };
        // Hand over what this read brought before anything else, so a 410 or a broken
        // connection loses nothing already read.
        if !reader.batch.is_empty() {
            let batch = std::mem::replace(&mut reader.batch, Vec::with_capacity(HANDOFF_BATCH));
            let sent = if batch.len() <= HANDOFF_BATCH {
                // A read's records are one hand-off as they are: no second vector to move them to.
                self.tx.send(SourceMsg::Records(batch)).await.is_ok()
            } else {
                self.hand_over(batch.into_iter()).await
            };
            if !sent {
                return State::Stopped;
            }
        }
        if reader.received > 0 {
            self.recovered();
        }
        // Inside a streaming list's initial events the order is not the versions' order:
        // nothing is promised before the bookmark that ends them.
        if !matches!(reader.initial, InitialEvents::Awaited { .. })
            && let Some(v) = reader.version.as_deref()
            && !self.report_through(v).await
        {
            return State::Stopped;
        }
        if let InitialEvents::Reached { events } = reader.initial {
            // Everything before the end-of-state bookmark is handed over (and perhaps a
            // few changes after it, which only makes readiness a little later).
            reader.initial = InitialEvents::Ended;
            info!(
                scope = %self.scope,
                events,
                resource_version = reader.version.as_deref().unwrap_or_default(),
                took_ms = started.elapsed().as_millis() as u64,
                "streamed the initial events"
            );
            if !self.initial_list_handed_over().await {
                return State::Stopped;
            }
        }
        match end {
            None => State::Reading(response),
            Some(end) => self.watch_ended(*response, end).await,
        }
    }

    /// What follows the end of a watch response.
    async fn watch_ended(&mut self, response: Response, end: ReadEnd) -> State {
        let Response {
            mut reader,
            version,
            streaming,
            mut empty_watches,
            started,
            ..
        } = response;
        // The watch goes on from the last event or bookmark read, so a broken connection
        // resumes where it stopped.
        let version = reader.version.take().unwrap_or(version);
        if streaming && reader.initial != InitialEvents::Ended {
            // The state was not read to its end: it must be read again, whole.
            return match end {
                ReadEnd::PlainWatch => self.no_streaming(
                    "it answered a streaming list with a plain watch (a bookmark came before the end of the initial events)".into(),
                ).await,
                ReadEnd::Closed => self.no_streaming(
                    "the watch ended without the bookmark that ends the initial events".into(),
                ).await,
                ReadEnd::Gone => {
                    self.restarts.relist.increment(1);
                    State::after_backoff(State::Relisting)
                }
                ReadEnd::Error(status) => {
                    self.note_failure(
                        "the streaming list reported an error",
                        &format!("{} ({})", status.message, status.code),
                    );
                    State::after_backoff(State::Relisting)
                }
                ReadEnd::Broken(reason) => {
                    self.note_failure("the streaming list connection broke", &reason);
                    State::after_backoff(State::Relisting)
                }
            };
        }
        match end {
            ReadEnd::Gone => {
                info!(scope = %self.scope, resource_version = %version, "watch history expired (410 Gone); listing again");
                self.restarts.relist.increment(1);
                State::after_backoff(State::Relisting)
            }
            ReadEnd::Error(status) => {
                self.note_failure(
                    "the watch reported an error",
                    &format!("{} ({})", status.message, status.code),
                );
                State::after_backoff(State::Watching {
                    version,
                    empty_watches,
                })
            }
            ReadEnd::Broken(reason) => {
                self.note_failure("the watch connection broke", &reason);
                State::after_backoff(State::Watching {
                    version,
                    empty_watches,
                })
            }
            // Only a streaming list looks for the end of its initial events.
            ReadEnd::PlainWatch => State::Watching {
                version,
                empty_watches,
            },
            ReadEnd::Closed if reader.received == 0 && started.elapsed() < EMPTY_WATCH => {
                // An empty watch closed at once: either a blip, or the API server telling us,
                // without a 410, that it no longer has this resourceVersion.
                empty_watches += 1;
                self.note_failure(
                    "watches end at once with nothing in them",
                    &format!("resourceVersion {version} is probably too old"),
                );
                if empty_watches >= EMPTY_WATCHES_BEFORE_RELIST {
                    info!(scope = %self.scope, resource_version = %version, "watch keeps ending empty; listing again");
                    self.restarts.relist.increment(1);
                    State::after_backoff(State::Relisting)
                } else {
                    State::after_backoff(State::Watching {
                        version,
                        empty_watches,
                    })
                }
            }
            ReadEnd::Closed => {
                // The API server answered and ended the watch on time: alive, even if quiet.
                self.health.progress();
                debug!(scope = %self.scope, resource_version = %version, "watch ended; watching again");
                State::Watching {
                    version,
                    empty_watches: 0,
                }
            }
        }
    }

    /// The API server does not serve streaming lists: it refused the request, or answered it
    /// as a plain watch. `auto` lists in pages from now on; `stream` stops.
    async fn no_streaming(&mut self, reason: String) -> State {
        if self.config.initial_list == InitialList::Stream {
            return self
                .fail(SourceError::NoStreamingList {
                    scope: self.scope.to_string(),
                    reason,
                })
                .await;
        }
        info!(scope = %self.scope, %reason, "the API server does not serve streaming lists; listing in pages instead");
        self.streaming = false;
        State::Relisting
    }

    fn record(&self, result: Result<EventRecord, EventError>) -> Option<EventRecord> {
        match result {
            Ok(r) => Some(r),
            Err(e) => {
                self.health.malformed.fetch_add(1, Ordering::Relaxed);
                warn!(scope = %self.scope, error = %e, "skipping an event the pipe cannot key");
                None
            }
        }
    }

    /// Sends records in hand-offs; false when the pipeline is gone.
    async fn hand_over(&self, records: impl Iterator<Item = EventRecord>) -> bool {
        let mut batch = Vec::with_capacity(HANDOFF_BATCH);
        for record in records {
            batch.push(record);
            if batch.len() == HANDOFF_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(HANDOFF_BATCH));
                if self.tx.send(SourceMsg::Records(full)).await.is_err() {
                    return false;
                }
            }
        }
        batch.is_empty() || self.tx.send(SourceMsg::Records(batch)).await.is_ok()
    }

    /// Reports that everything at or below `version` is handed over, when progress reports are
    /// on and it moved; false when the pipeline is gone.
    async fn report_through(&mut self, version: &str) -> bool {
        let Some(last) = &mut self.progress else {
            return true;
        };
        if last.as_deref() == Some(version) {
            return true;
        }
        *last = Some(version.to_string());
        let msg = SourceMsg::Through {
            scope: self.index,
            version: version.parse().ok(),
        };
        self.tx.send(msg).await.is_ok()
    }

    /// Every failure of a list or watch request leads to a retry, after the backoff the caller
    /// goes to: counted as a restart.
    fn note_failure(&mut self, kind: &str, detail: &dyn fmt::Display) {
        self.restarts.error.increment(1);
        self.health.set_retrying(true);
        self.retry.failed(&self.scope, kind, detail);
    }

    fn recovered(&mut self) {
        if self.retry.is_failing() {
            self.retry.succeeded(&self.scope);
        }
        self.health.set_retrying(false);
        self.health.progress();
    }

    /// Tells the pipeline the source cannot go on.
    async fn fail(&self, error: SourceError) -> State {
        let _ = self.tx.send(SourceMsg::Failed(error)).await;
        State::Stopped
    }
}
