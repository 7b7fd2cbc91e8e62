//! A paginated list: one page per step, the next one fetched while this one is handed over.

use bytes::Bytes;
use kube::core::Request;
use kube::core::params::ListParams;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;

use super::client::{request_bytes, startup_error};
use super::{State, Watcher};
use crate::errors::error_chain;
use crate::event::{self, Change, EventRecord, SharedText};
use crate::scan::{self, ListFields};

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
    pub(super) async fn list_page(&mut self, pages: Pages) -> State {
        let (body, mut pages) = match self.fetch_page(pages).await {
            Ok(fetched) => fetched,
            Err(next) => return next,
        };
        let (mut page, body) = match parse_page(body) {
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
        if let Some(token) = &token {
            self.prefetch(&mut pages, token);
        }
        if !self.hand_over_page(text, &mut page).await {
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
        self.list_ended(pages, version)
    }

    /// The body of the next page: the one prefetched, or one requested now. `Err` holds the
    /// state to go to when there is none.
    async fn fetch_page(&mut self, mut pages: Pages) -> Result<(Bytes, Pages), State> {
        let response = match pages.prefetched.take() {
            Some(next) => match next.await {
                Ok(result) => result,
                // The task cannot panic or be cancelled here; ask again if it somehow was.
                Err(_) => return Err(State::ListingPage(pages)),
            },
            None => match self.list_request(pages.continue_token.clone()) {
                Ok(request) => request_bytes(&self.client, request).await,
                Err(source) => return Err(self.fail(self.request_error("list", source)).await),
            },
        };
        match response {
            Ok(body) => Ok((body, pages)),
            Err(e) => Err(self.list_failed(pages, e).await),
        }
    }

    /// What follows a list request the API server did not answer with a page.
    async fn list_failed(&mut self, mut pages: Pages, e: kube::Error) -> State {
        match e {
            kube::Error::Api(status) if status.code == 410 => {
                // The continue token outlived the server's history (about 5 minutes):
                // start the list over; the filters drop what was already delivered.
                info!(scope = %self.scope, "list continue token expired; listing again from the start");
                pages.continue_token = None;
                // A list that restarts at once can loop while the history churns faster
                // than a page is handed over; like every relist, it waits its turn.
                State::after_backoff(State::ListingPage(pages))
            }
            e if self.refused_at_startup(&e) => {
                let err = startup_error(e, "list", &self.scope, &self.url);
                self.fail(err).await
            }
            e => {
                self.note_failure("cannot list events", &error_chain(&e));
                State::after_backoff(State::ListingPage(pages))
            }
        }
    }

    /// Requests the page after `token` while this one is handed over. A request that cannot be
    /// built is left to the next step, which reports it.
    fn prefetch(&self, pages: &mut Pages, token: &str) {
        if let Ok(request) = self.list_request(Some(token.to_string())) {
            let client = self.client.clone();
            pages.prefetched = Some(tokio::spawn(async move {
                request_bytes(&client, request).await
            }));
        }
    }

    /// Hands a page's events over; false when the pipeline is gone.
    async fn hand_over_page(&self, text: &str, page: &mut ListFields) -> bool {
        let items = event::with_type_meta(text, &mut page.items);
        let records = page.items.iter().filter_map(|(span, fields)| {
            self.record(EventRecord::from_scanned(
                Change::Added,
                &items,
                span.clone(),
                fields,
            ))
        });
        self.hand_over(records).await
    }

    /// The last page is handed over: the list is done at `version`, or, without one, cannot be
    /// watched from and is read again.
    fn list_ended(&mut self, mut pages: Pages, version: Option<String>) -> State {
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

/// A page's fields and its text, or why it is not an EventList.
fn parse_page(body: Bytes) -> Result<(ListFields, SharedText), Box<dyn std::error::Error>> {
    let body = SharedText::new(body)?;
    let page = scan::list(body.as_str())?;
    Ok((page, body))
}
