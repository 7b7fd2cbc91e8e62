//! Retrying the list and watch requests: the backoff between attempts, the outage log, and the
//! restart counters.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::Scope;
use crate::outage::{Backoff, OutageLog, Severity, Subject};

/// The crate's backoff and outage log, with one rule of the source's own: the backoff starts
/// over only after `CALM` without a failure (client-go's reflector does the same, after two
/// minutes), not at the first success. A watch that delivers a little and then fails again, or
/// relists that keep being needed, must keep slowing down rather than loop at the shortest
/// delay.
pub(super) struct Retry {
    log: OutageLog,
    backoff: Backoff,
    last_wait: Option<Instant>,
}

/// Time without a failure after which the backoff starts again from its shortest delay.
const CALM: Duration = Duration::from_secs(60);

/// client-go's reflector backs off from 800 ms to 30 s; starting lower keeps a brief blip
/// brief.
const MIN_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(30);

impl Retry {
    /// Every failed attempt counts on `failures` (`watch_restarts_total{reason="error"}`).
    pub(super) fn new(scope: &Scope, failures: metrics::Counter) -> Self {
        Retry {
            log: OutageLog::new(
                Subject::Scope(scope.to_string()),
                "retrying with backoff until it works",
            )
            .counting(failures),
            backoff: Backoff::new(MIN_DELAY, MAX_DELAY),
            last_wait: None,
        }
    }

    /// Logs the failure if it is a new kind; the caller then waits out the next backoff delay.
    pub(super) fn failed(&mut self, kind: &str, detail: &dyn fmt::Display) {
        self.log.failed(Severity::Transient, kind, detail);
    }

    /// Waits out the next backoff delay (also before a relist, which costs the API server a
    /// full list).
    pub(super) async fn wait(&mut self) {
        if self.last_wait.is_some_and(|t| t.elapsed() >= CALM) {
            self.backoff.reset();
        }
        tokio::time::sleep(self.backoff.next_delay()).await;
        self.last_wait = Some(Instant::now());
    }

    /// Ends a failure state: logs the recovery once. The backoff itself calms down with time.
    pub(super) fn succeeded(&mut self) {
        self.log.succeeded();
    }

    pub(super) fn is_failing(&self) -> bool {
        self.log.is_failing()
    }
}

/// `watch_restarts_total` handles, obtained once per watcher.
pub(super) struct Restarts {
    /// A list or watch failed and is retried.
    pub(super) error: metrics::Counter,
    /// The watch history expired and the scope is listed again.
    pub(super) relist: metrics::Counter,
}

impl Restarts {
    pub(super) fn new() -> Self {
        let counter = |reason: &'static str| metrics::counter!(crate::metrics::WATCH_RESTARTS, "reason" => reason);
        Restarts {
            error: counter("error"),
            relist: counter("relist"),
        }
    }
}
