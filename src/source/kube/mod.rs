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
//! read, and tested, one transition at a time. The steps themselves: `list` reads a paginated
//! list, `watch` a watch or streaming list. Beside them: `client` connects and checks the
//! identity at startup, `retry` paces and logs the retries, `reader` turns watch lines into
//! records.

mod client;
mod list;
mod reader;
mod retry;
#[cfg(test)]
mod tests;
mod watch;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kube::Client;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{SourceError, SourceHealth};
use crate::config::{InitialList, KubeConfig};
use crate::event::{EventError, EventRecord};
use crate::flow::HANDOFF_RECORDS;
use crate::source::SourceMsg;

use client::probe;
pub use client::{Cluster, ConfigError, cluster_uid, connect};
use list::Pages;
use retry::{Restarts, Retry};
use watch::Response;

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
        let restarts = Restarts::new();
        let retry = Retry::new(&scope, restarts.error.clone());
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
            retry,
            restarts,
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
        let mut batch = Vec::with_capacity(HANDOFF_RECORDS);
        for record in records {
            batch.push(record);
            if batch.len() == HANDOFF_RECORDS {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(HANDOFF_RECORDS));
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

    /// A 401 or 403 before a watch of this scope was ever accepted: a misconfiguration to stop
    /// on with its fix. Once watching, the same answer is an outage (RBAC being rolled out).
    fn refused_at_startup(&self, e: &kube::Error) -> bool {
        !self.watching && matches!(e, kube::Error::Api(s) if matches!(s.code, 401 | 403))
    }

    /// Every failure of a list or watch request leads to a retry, after the backoff the caller
    /// goes to: counted as a restart (by the outage log).
    fn note_failure(&mut self, kind: &str, detail: &dyn fmt::Display) {
        self.health.set_retrying(true);
        self.retry.failed(kind, detail);
    }

    fn recovered(&mut self) {
        if self.retry.is_failing() {
            self.retry.succeeded();
        }
        self.health.set_retrying(false);
        self.health.progress();
    }

    /// A list or watch request of this scope that cannot be formed: a bad namespace name or
    /// selector, not a client configuration to fix.
    fn request_error(&self, verb: &'static str, source: kube::core::request::Error) -> SourceError {
        SourceError::Request {
            verb,
            scope: self.scope.to_string(),
            source,
        }
    }

    /// Tells the pipeline the source cannot go on.
    async fn fail(&self, error: SourceError) -> State {
        let _ = self.tx.send(SourceMsg::Failed(error)).await;
        State::Stopped
    }
}
