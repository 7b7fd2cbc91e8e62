//! Retrying the list and watch requests: the backoff between attempts, the policy of logging a
//! failure once when it starts and once when it ends, and the restart counters.

use std::fmt;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Scope;

/// Exponential backoff with jitter, and logging once per change of state rather than once per
/// attempt, so an outage of an hour is two log lines, not thousands.
///
/// The backoff starts over only after `CALM` without a failure (client-go's reflector does the
/// same, after two minutes): a watch that delivers a little and then fails again, or relists
/// that keep being needed, must keep slowing down rather than loop at the shortest delay.
pub(super) struct Retry {
    backoff: ExponentialBackoff,
    failing: Option<(Instant, String)>,
    attempts: u32,
    last_wait: Option<Instant>,
}

/// Time without a failure after which the backoff starts again from its shortest delay.
const CALM: Duration = Duration::from_secs(60);

impl Retry {
    pub(super) fn new() -> Self {
        Retry {
            backoff: Self::builder().build(),
            failing: None,
            attempts: 0,
            last_wait: None,
        }
    }

    /// client-go's reflector backs off from 800 ms to 30 s; starting lower keeps a brief blip
    /// brief, the jitter keeps many pipes from reconnecting in step.
    fn builder() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(30))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
    }

    /// Logs the failure if it is a new kind; the caller then waits out the next backoff delay.
    pub(super) fn failed(&mut self, scope: &Scope, kind: &str, detail: &dyn fmt::Display) {
        self.attempts += 1;
        match &self.failing {
            Some((_, k)) if k == kind => {
                debug!(scope = %scope, attempt = self.attempts, "{kind}: {detail}");
            }
            _ => {
                warn!(scope = %scope, "{kind}: {detail}; retrying with backoff until it works");
                let since = self.failing.as_ref().map_or_else(Instant::now, |(t, _)| *t);
                self.failing = Some((since, kind.to_string()));
            }
        }
    }

    /// Waits out the next backoff delay (also before a relist, which costs the API server a
    /// full list).
    pub(super) async fn wait(&mut self) {
        if self.last_wait.is_some_and(|t| t.elapsed() >= CALM) {
            self.backoff = Self::builder().build();
        }
        let delay = self.backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(delay).await;
        self.last_wait = Some(Instant::now());
    }

    /// Ends a failure state: logs the recovery once. The backoff itself calms down with time.
    pub(super) fn succeeded(&mut self, scope: &Scope) {
        if let Some((since, kind)) = self.failing.take() {
            info!(
                scope = %scope,
                attempts = self.attempts,
                after_secs = since.elapsed().as_secs_f64(),
                "recovered from: {kind}"
            );
        }
        self.attempts = 0;
    }

    pub(super) fn is_failing(&self) -> bool {
        self.failing.is_some()
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
