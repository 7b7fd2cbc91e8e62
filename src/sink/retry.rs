//! One retry-and-log-once policy for every sink.
//!
//! A sink that fails keeps the same batch and tries again: transient failures (a full disk, a
//! store or broker that is down, a 5xx or 429) after a capped exponential backoff, or after the
//! delay the peer asked for; failures the peer will repeat until an operator acts (a 403, a
//! missing bucket or topic) on a slow timer, logged at ERROR, because the fix (a secret, a
//! policy) is applied without restarting the pod and the upload is expected to go on. Either
//! way the sink is logged once when it starts failing or the kind of failure changes, once when
//! it recovers, every failed attempt is counted, and the sink's health says it is failing, so
//! `/readyz` does too.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tracing::{debug, error, info, warn};

use super::dead_letter::DeadLetters;
use super::gate::{self, WriteGate};
use super::{SinkState, telemetry};
use crate::outage::Outage;

/// The longest pause between retries of a failing sink, and the pause between attempts at a
/// refused one: long enough not to spin against a full disk or a wrong credential, short enough
/// that a recovery is noticed promptly.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The backoff every sink retries with: 100 ms doubling to [`MAX_RETRY_DELAY`], with jitter so
/// that replicas of a fleet do not retry against a recovering store in lockstep.
pub fn retry_backoff() -> ExponentialBuilder {
    crate::outage::backoff(Duration::from_millis(100), MAX_RETRY_DELAY)
}

/// Why one attempt at a batch failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Worth retrying soon: timeouts, connection errors, 5xx, 429, a full disk, a broker that is
    /// down. Retried with the backoff, waiting at least `retry_after` when the peer asked.
    Retry {
        /// A short, stable name of the failure ("503", "transport", "No space left on device"):
        /// a log line is written when it changes, not on every attempt.
        kind: String,
        /// What failed and what to do about it.
        error: String,
        retry_after: Option<Duration>,
    },
    /// The peer refuses this for good until someone changes something (a 403, a 400, a missing
    /// bucket or topic). Logged at ERROR and retried every [`MAX_RETRY_DELAY`].
    Refused { kind: String, error: String },
    /// stdout's reader went away: not retried, the pipe winds down.
    Closed,
}

impl Failure {
    pub fn retry(kind: impl Into<String>, error: impl Into<String>) -> Self {
        Failure::Retry {
            kind: kind.into(),
            error: error.into(),
            retry_after: None,
        }
    }

    pub fn refused(kind: impl Into<String>, error: impl Into<String>) -> Self {
        Failure::Refused {
            kind: kind.into(),
            error: error.into(),
        }
    }

    /// What failed, for logs and dead letters.
    pub fn message(&self) -> &str {
        match self {
            Failure::Retry { error, .. } | Failure::Refused { error, .. } => error,
            Failure::Closed => "stdout was closed by its reader",
        }
    }

    /// A transient failure from an I/O error, named by its kind.
    pub fn io(context: &str, e: &std::io::Error) -> Self {
        Failure::retry(e.kind().to_string(), format!("{context}: {e}"))
    }
}

/// A refusal whose kind starts with an HTTP status that refuses the caller, not the request.
fn is_access_refusal(kind: &str) -> bool {
    matches!(kind.split(' ').next(), Some("401" | "403" | "407"))
}

/// What a sink does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try the same batch again.
    RetryIn(Duration),
    /// Give up on this batch: the sink's reader is gone, or the fence shut.
    Stop,
}

/// One sink's retry state: where it is in the backoff, and what it last logged.
pub struct Policy {
    /// The sink in log lines ("S3", "file", "Kafka").
    title: &'static str,
    /// The sink's health name ("file /var/log/events.jsonl"), also the `sink` log field.
    name: String,
    /// The metric label.
    label: &'static str,
    state: Arc<SinkState>,
    builder: ExponentialBuilder,
    backoff: ExponentialBackoff,
    refused_delay: Duration,
    /// Where refused batches go instead of the slow timer, when configured.
    dead_letters: Option<DeadLetters>,
    /// The outage being retried through, if any: since when, its kind, its attempts.
    outage: Outage,
    /// Shut when this replica stops leading: no write after that.
    gate: Arc<dyn WriteGate>,
}

impl Policy {
    pub fn new(
        title: &'static str,
        name: String,
        label: &'static str,
        state: Arc<SinkState>,
    ) -> Self {
        let builder = retry_backoff();
        Policy {
            title,
            name,
            label,
            state,
            backoff: builder.build(),
            builder,
            refused_delay: MAX_RETRY_DELAY,
            dead_letters: None,
            outage: Outage::new(),
            gate: gate::open(),
        }
    }

    /// Writes only while `gate` is open.
    pub fn with_gate(mut self, gate: Arc<dyn WriteGate>) -> Self {
        self.gate = gate;
        self
    }

    /// Why a worker told to stop stops: the fence shut, or its reader (stdout) went away.
    pub fn stopped(&self) -> super::SinkEnd {
        if self.may_write() {
            super::SinkEnd::StdoutClosed
        } else {
            super::SinkEnd::Fenced
        }
    }

    /// Whether the sink may write now. Checked before every attempt, so a leader that lost its
    /// Lease stops within one write.
    pub fn may_write(&self) -> bool {
        self.gate.may_write()
    }

    /// What happens to a refused batch: retried every `refused_delay`, or, with a dead-letter
    /// directory, written there and acknowledged.
    pub fn with_refusals(
        mut self,
        refused_delay: Duration,
        dead_letters: Option<DeadLetters>,
    ) -> Self {
        self.refused_delay = refused_delay;
        self.dead_letters = dead_letters;
        self
    }

    /// The dead-letter directory a failure should go to: `Some` for a refusal when one is
    /// configured. The driver then writes the batch there and, once that is durable,
    /// acknowledges it ([`Policy::dead_lettered`]); if the write fails, the batch is retried.
    ///
    /// A refusal of the sink's credentials (401, 403, 407) is not about the batch: every batch
    /// would be refused alike until someone fixes a token or a policy, and dead-lettering them
    /// would empty the pipe into the directory. Those stay on the slow timer.
    pub fn dead_letters_for(&self, failure: &Failure) -> Option<DeadLetters> {
        match failure {
            Failure::Refused { kind, .. } if !is_access_refusal(kind) => self.dead_letters.clone(),
            _ => None,
        }
    }

    /// A refused batch is in the dead-letter directory: logged at ERROR, since its events did
    /// not reach the sink and someone should look at them.
    pub fn dead_lettered(&mut self, failure: &Failure, path: &std::path::Path, events: usize) {
        if let Failure::Refused { error, .. } = failure {
            error!(sink = %self.name, error = %error, events, file = %path.display(), "{} sink refused a batch for good; written to the dead-letter directory", self.title);
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn label(&self) -> &'static str {
        self.label
    }

    /// True from the first failed attempt at a batch until an attempt succeeds.
    pub fn is_failing(&self) -> bool {
        self.outage.is_failing()
    }

    /// Records a failed attempt and says what to do next.
    pub fn failed(&mut self, failure: &Failure) -> Next {
        if !self.may_write() {
            return Next::Stop;
        }
        let (kind, error, refused, retry_after) = match failure {
            Failure::Closed => return Next::Stop,
            Failure::Retry {
                kind,
                error,
                retry_after,
            } => (kind, error, false, *retry_after),
            Failure::Refused { kind, error } => (kind, error, true, None),
        };
        telemetry::error(self.label);
        if self
            .outage
            .failed_at(tokio::time::Instant::now(), kind)
            .is_news()
        {
            self.state.set_failing(true);
            let (title, sink) = (self.title, &self.name);
            if refused {
                error!(sink = %sink, error = %error, "{title} sink failing; retrying every {}s until it is fixed", self.refused_delay.as_secs());
            } else {
                warn!(sink = %sink, error = %error, "{title} sink failing; retrying with backoff until it recovers");
            }
        }
        let delay = if refused {
            self.refused_delay
        } else {
            let backoff = self.backoff.next().unwrap_or(MAX_RETRY_DELAY);
            retry_after.map_or(backoff, |asked| asked.max(backoff))
        };
        debug!(sink = %self.name, attempt = self.outage.attempts(), ?delay, "sink retry");
        Next::RetryIn(delay)
    }

    /// Records a successful attempt: the end of an outage, if there was one.
    pub fn succeeded(&mut self) {
        if let Some(ended) = self.outage.succeeded_at(tokio::time::Instant::now()) {
            self.state.set_failing(false);
            info!(sink = %self.name, attempts = ended.attempts, after_secs = ended.lasted.as_secs(), "{} sink recovered", self.title);
            self.backoff = self.builder.build();
        }
    }

    /// The sink's queue depth, for its gauge.
    pub fn queue_depth(&self, depth: usize) {
        telemetry::queue_depth(self.label, depth);
    }

    /// A batch is delivered: counts its events and how long it took.
    pub fn delivered(&self, events: usize, took: Duration) {
        telemetry::delivered(self.label, events, took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkHealth;

    fn policy() -> (Policy, Arc<SinkState>) {
        let health = SinkHealth::default();
        let state = health.register("test");
        (
            Policy::new("Test", "test".into(), "test", state.clone()),
            state,
        )
    }

    #[test]
    fn a_failure_marks_the_sink_failing_until_an_attempt_succeeds() {
        let (mut p, state) = policy();
        assert!(!state.is_failing());
        assert!(matches!(
            p.failed(&Failure::retry("503", "down")),
            Next::RetryIn(_)
        ));
        assert!(state.is_failing() && p.is_failing());
        p.succeeded();
        assert!(!state.is_failing() && !p.is_failing());
    }

    #[test]
    fn refused_waits_the_slow_timer_and_retry_after_is_honoured() {
        let (mut p, _) = policy();
        assert_eq!(
            p.failed(&Failure::refused("403", "no")),
            Next::RetryIn(MAX_RETRY_DELAY)
        );
        let asked = Duration::from_secs(7);
        let Next::RetryIn(wait) = p.failed(&Failure::Retry {
            kind: "429".into(),
            error: "slow down".into(),
            retry_after: Some(asked),
        }) else {
            panic!("a 429 is retried");
        };
        assert!(wait >= asked, "{wait:?}");
        assert_eq!(p.failed(&Failure::Closed), Next::Stop);
    }

    #[test]
    fn refusals_of_the_batch_go_to_dead_letters_and_refusals_of_the_credentials_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let letters = DeadLetters::open(dir.path()).unwrap();
        let (p, _) = policy();
        let p = p.with_refusals(Duration::from_secs(1), Some(letters));
        assert!(
            p.dead_letters_for(&Failure::refused("400", "bad"))
                .is_some()
        );
        assert!(
            p.dead_letters_for(&Failure::refused("413", "big"))
                .is_some()
        );
        assert!(
            p.dead_letters_for(&Failure::refused("403 AccessDenied", "no"))
                .is_none()
        );
        assert!(
            p.dead_letters_for(&Failure::refused("401", "who"))
                .is_none()
        );
        assert!(p.dead_letters_for(&Failure::retry("503", "down")).is_none());
        let (plain, _) = policy();
        assert!(
            plain
                .dead_letters_for(&Failure::refused("400", "bad"))
                .is_none()
        );
    }

    #[test]
    fn the_backoff_starts_over_after_a_recovery() {
        let (mut p, _) = policy();
        let mut last = Duration::ZERO;
        for _ in 0..8 {
            if let Next::RetryIn(d) = p.failed(&Failure::retry("x", "x")) {
                last = d;
            }
        }
        assert!(last > Duration::from_secs(1), "{last:?}");
        p.succeeded();
        let Next::RetryIn(first) = p.failed(&Failure::retry("x", "x")) else {
            panic!("retried");
        };
        assert!(first < Duration::from_secs(1), "{first:?}");
    }
}
