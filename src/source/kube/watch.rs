//! A watch, or a streaming list (a watch that begins with the current state): requested, read
//! one network read per step, and what follows its end.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use kube::core::Request;
use kube::core::params::WatchParams;
use tokio::time::Instant;
use tracing::{debug, info};

use super::client::{request_body, startup_error};
use super::reader::{InitialEvents, ReadEnd, WatchReader};
use super::{State, Watcher};
use crate::config::InitialList;
use crate::errors::error_chain;
use crate::flow::HANDOFF_RECORDS;
use crate::source::SourceError;
use crate::source::SourceMsg;

/// Grace beyond the watch's own timeout before a silent connection counts as dead.
const WATCH_GRACE: Duration = Duration::from_secs(30);

/// A watch that ends this soon with nothing in it (no event, no bookmark) is suspect: the
/// API server's answer to a resourceVersion it no longer has.
const EMPTY_WATCH: Duration = Duration::from_secs(5);

/// Empty watches in a row after which the resourceVersion is taken as lost and the source
/// relists.
const EMPTY_WATCHES_BEFORE_RELIST: u32 = 2;

/// A watch response's body, read frame by frame: records are slices of the frames.
pub(super) type WatchBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// An open watch response.
pub(super) struct Response {
    pub(super) body: WatchBody,
    pub(super) reader: WatchReader,
    /// The resourceVersion the watch was asked from; empty for a streaming list.
    pub(super) version: String,
    /// A streaming list: the response begins with the state.
    pub(super) streaming: bool,
    /// Carried over to the next watch from the same version.
    pub(super) empty_watches: u32,
    /// When the watch was requested: one that ends soon after, empty, is suspect.
    pub(super) started: Instant,
    /// When a silent connection counts as dead.
    pub(super) deadline: Instant,
}

impl Watcher {
    /// Requests a watch from `version`, or, with `None`, a streaming list (the current state as
    /// ADDED events up to a BOOKMARK annotated `k8s.io/initial-events-end`, then the changes
    /// after it).
    pub(super) async fn open_watch(
        &mut self,
        version: Option<String>,
        empty_watches: u32,
    ) -> State {
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
            Err(source) => return self.fail(self.request_error("watch", source)).await,
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
                if self.refused_at_startup(&e) {
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
    pub(super) async fn read(&mut self, mut response: Box<Response>) -> State {
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
            let batch = std::mem::replace(&mut reader.batch, Vec::with_capacity(HANDOFF_RECORDS));
            let sent = if batch.len() <= HANDOFF_RECORDS {
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
    pub(super) async fn watch_ended(&mut self, response: Response, end: ReadEnd) -> State {
        let Response {
            mut reader,
            version,
            streaming,
            empty_watches,
            started,
            ..
        } = response;
        // The watch goes on from the last event or bookmark read, so a broken connection
        // resumes where it stopped.
        let version = reader.version.take().unwrap_or(version);
        if streaming && reader.initial != InitialEvents::Ended {
            return self.stream_cut_short(end).await;
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
                self.empty_watch(version, empty_watches + 1)
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

    /// A streaming list ended before the end of its initial events: the state was not read to
    /// its end and must be read again, whole.
    async fn stream_cut_short(&mut self, end: ReadEnd) -> State {
        match end {
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
        }
    }

    /// An empty watch closed at once, the `empty_watches`th in a row: either a blip, or the API
    /// server telling us, without a 410, that it no longer has this resourceVersion.
    fn empty_watch(&mut self, version: String, empty_watches: u32) -> State {
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

    /// The API server does not serve streaming lists: it refused the request, or answered it
    /// as a plain watch. `auto` lists in pages from now on; `stream` stops.
    pub(super) async fn no_streaming(&mut self, reason: String) -> State {
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
}
