//! A paginated list: one page per step, the next one fetched while this one is handed over.

use bytes::Bytes;
use kube::core::Request;
use kube::core::params::ListParams;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;

use super::client::{error_chain, request_bytes, startup_error};
use super::{State, Watcher};
use crate::event::{self, Change, EventRecord, SharedText};
use crate::scan;
use crate::source::SourceError;

/// A paginated list under way.
pub(super) struct Pages {
    continue_token: Option<String>,
    /// The next page, requested while this one is handed over: the server's time to build a
    /// page then overlaps the pipe's time to take one in, instead of adding to it.
    prefetched: Option<JoinHandle<Result<Bytes, kube::Error>>>,
    /// Events listed so far, for the log.
    listed: usize,
    started: Instant,
}

impl Pages {
    pub(super) fn new() -> Self {
        Pages {
            continue_token: None,
            prefetched: None,
            listed: 0,
            started: Instant::now(),
        }
    }
}

impl Watcher {
    pub(super) fn list_request(
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
    pub(super) async fn list_page(&mut self, mut pages: Pages) -> State {
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
                if self.refused_at_startup(&e) {
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
}
