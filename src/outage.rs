//! One way to retry and to log an outage.
//!
//! Whatever fails and is retried (a list or watch of the API server, a sink, the Lease, an
//! enrichment lookup) is logged the same way, so that an hour-long outage is two lines an
//! operator can read, not thousands: one WARN (or ERROR) line when the failure starts, saying
//! what failed, why and what happens or what to do about it; the attempts in between at DEBUG
//! only; one INFO line when it ends, with how long it lasted and how many attempts it took. A
//! failure of another kind during an outage is a new start line, since its cause (and its fix)
//! is new.
//!
//! [`Outage`] is the bookkeeping alone, on an injected clock, so that its rules are tested
//! without a logger or a timer; [`OutageLog`] writes the lines. [`backoff`] is the one
//! exponential backoff with jitter every retry loop waits with, and [`Backoff`] the delays it
//! gives, started over after a recovery.

use std::fmt;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// Exponential backoff from `min` doubling to `max`, with jitter so that many pipes (or the
/// replicas of a fleet) do not retry against a recovering peer in step, and no limit on the
/// number of attempts: what is retried here is retried until it works or the pipe stops.
pub fn backoff(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// The delays of one retry loop: [`backoff`]'s, started over by [`Backoff::reset`].
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = backoff(min, max);
        Backoff {
            delays: builder.build(),
            builder,
            max,
        }
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// Back to the shortest delay: the thing retried works again.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

/// What a failed attempt was, in the life of an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The first failure after a success (or ever): an outage starts.
    Started,
    /// A failure of another kind than the one before, during an outage.
    Changed,
    /// The same failure again.
    Repeated,
}

impl Attempt {
    /// Whether this attempt deserves a line at the default level.
    pub fn is_news(self) -> bool {
        !matches!(self, Attempt::Repeated)
    }
}

/// An outage that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The kind of the last failure.
    pub kind: String,
    /// Failed attempts during the outage.
    pub attempts: u64,
    /// From the first failure to the success.
    pub lasted: Duration,
}

/// The bookkeeping of failures and recoveries of one thing that is retried.
#[derive(Debug, Default)]
pub struct Outage {
    /// While failing: since when, and the kind of the last failure.
    failing: Option<(Instant, String)>,
    /// Failed attempts in the current outage.
    attempts: u64,
    /// Outages started so far.
    outages: u64,
}

impl Outage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a failed attempt of `kind` (a short, stable name of the failure) at `now`.
    pub fn failed_at(&mut self, now: Instant, kind: &str) -> Attempt {
        self.attempts += 1;
        match &mut self.failing {
            Some((_, k)) if k == kind => Attempt::Repeated,
            Some((_, k)) => {
                kind.clone_into(k);
                Attempt::Changed
            }
            None => {
                self.failing = Some((now, kind.to_string()));
                self.outages += 1;
                Attempt::Started
            }
        }
    }

    /// Records a successful attempt at `now`: the outage that ends, if there was one.
    pub fn succeeded_at(&mut self, now: Instant) -> Option<Ended> {
        let (since, kind) = self.failing.take()?;
        let attempts = std::mem::take(&mut self.attempts);
        Some(Ended {
            kind,
            attempts,
            lasted: now.saturating_duration_since(since),
        })
    }

    pub fn is_failing(&self) -> bool {
        self.failing.is_some()
    }

    /// Failed attempts in the current outage (0 when not failing).
    pub fn attempts(&self) -> u64 {
        self.attempts
    }

    /// Outages started so far.
    pub fn outages(&self) -> u64 {
        self.outages
    }
}

/// How bad the start of an outage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Expected to pass by itself (a restart of the peer, a network blip): WARN.
    Transient,
    /// Goes on until someone changes something (a credential, a policy): ERROR.
    NeedsFix,
}

/// The failing thing as the log lines name it, in the field operators already filter on.
#[derive(Debug, Clone)]
pub enum Subject {
    /// The source's scope ("in all namespaces"): the `scope` field.
    Scope(String),
    /// A sink's name: the `sink` field.
    Sink(String),
}

/// Writes one event at `$level` with the subject's field.
macro_rules! about {
    ($macro:ident, $subject:expr, $($rest:tt)+) => {
        match $subject {
            Subject::Scope(s) => $macro!(scope = %s, $($rest)+),
            Subject::Sink(s) => $macro!(sink = %s, $($rest)+),
        }
    };
}

/// An [`Outage`] that logs: the start line, the attempts at DEBUG, the end line, and a counter
/// of failed attempts.
pub struct OutageLog {
    subject: Subject,
    /// What happens next, or what to do, for the start line ("retrying with backoff until it
    /// works").
    fix: &'static str,
    outage: Outage,
    failures: Option<metrics::Counter>,
}

impl OutageLog {
    pub fn new(subject: Subject, fix: &'static str) -> Self {
        OutageLog {
            subject,
            fix,
            outage: Outage::new(),
            failures: None,
        }
    }

    /// Increments `counter` on every failed attempt.
    pub fn counting(mut self, counter: metrics::Counter) -> Self {
        self.failures = Some(counter);
        self
    }

    /// Records and logs a failed attempt: `kind` is what failed (stable across attempts, so
    /// that a repeat is recognised), `why` the detail of this attempt.
    pub fn failed(&mut self, severity: Severity, kind: &str, why: &dyn fmt::Display) -> Attempt {
        self.failed_at(Instant::now(), severity, kind, why)
    }

    pub fn failed_at(
        &mut self,
        now: Instant,
        severity: Severity,
        kind: &str,
        why: &dyn fmt::Display,
    ) -> Attempt {
        if let Some(counter) = &self.failures {
            counter.increment(1);
        }
        let attempt = self.outage.failed_at(now, kind);
        let fix = self.fix;
        match (attempt.is_news(), severity) {
            (false, _) => {
                let n = self.outage.attempts();
                about!(debug, &self.subject, attempt = n, "{kind}: {why}");
            }
            (true, Severity::Transient) => about!(warn, &self.subject, "{kind}: {why}; {fix}"),
            (true, Severity::NeedsFix) => about!(error, &self.subject, "{kind}: {why}; {fix}"),
        }
        attempt
    }

    /// Records a successful attempt and logs the end of the outage, if there was one.
    pub fn succeeded(&mut self) -> Option<Ended> {
        self.succeeded_at(Instant::now())
    }

    pub fn succeeded_at(&mut self, now: Instant) -> Option<Ended> {
        let ended = self.outage.succeeded_at(now)?;
        about!(
            info,
            &self.subject,
            attempts = ended.attempts,
            after_secs = ended.lasted.as_secs_f64(),
            "recovered from: {}",
            ended.kind
        );
        Some(ended)
    }

    pub fn is_failing(&self) -> bool {
        self.outage.is_failing()
    }

    pub fn outage(&self) -> &Outage {
        &self.outage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn an_outage_starts_repeats_and_ends_with_its_attempts_and_duration() {
        let t0 = Instant::now();
        let mut o = Outage::new();
        assert!(!o.is_failing());
        assert_eq!(o.succeeded_at(t0), None, "no outage, nothing ends");
        assert_eq!(o.failed_at(t0, "refused"), Attempt::Started);
        assert_eq!(o.failed_at(t0 + SEC, "refused"), Attempt::Repeated);
        assert_eq!(o.failed_at(t0 + 2 * SEC, "refused"), Attempt::Repeated);
        assert!(o.is_failing());
        assert_eq!(o.attempts(), 3);
        let ended = o.succeeded_at(t0 + 10 * SEC).expect("an outage ends");
        assert_eq!(
            ended,
            Ended {
                kind: "refused".into(),
                attempts: 3,
                lasted: 10 * SEC
            }
        );
        assert!(!o.is_failing());
        assert_eq!(o.attempts(), 0);
        assert_eq!(o.succeeded_at(t0 + 11 * SEC), None, "ends once");
    }

    #[test]
    fn another_kind_of_failure_is_news_but_the_same_outage() {
        let t0 = Instant::now();
        let mut o = Outage::new();
        assert!(o.failed_at(t0, "refused").is_news());
        assert!(!o.failed_at(t0 + SEC, "refused").is_news());
        assert_eq!(o.failed_at(t0 + 2 * SEC, "503"), Attempt::Changed);
        assert!(!o.failed_at(t0 + 3 * SEC, "503").is_news());
        let ended = o.succeeded_at(t0 + 4 * SEC).unwrap();
        assert_eq!((ended.kind.as_str(), ended.attempts), ("503", 4));
        assert_eq!(ended.lasted, 4 * SEC, "measured from the first failure");
        assert_eq!(o.outages(), 1);
    }

    #[test]
    fn outages_are_counted() {
        let t0 = Instant::now();
        let mut o = Outage::new();
        for i in 0..3 {
            o.failed_at(t0 + i * SEC, "x");
            o.succeeded_at(t0 + i * SEC);
        }
        assert_eq!(o.outages(), 3);
    }

    #[test]
    fn the_logger_reports_what_the_bookkeeping_says() {
        let t0 = Instant::now();
        let mut log = OutageLog::new(Subject::Scope("in all namespaces".into()), "retrying");
        let why = "connection refused";
        assert_eq!(
            log.failed_at(t0, Severity::Transient, "cannot list", &why),
            Attempt::Started
        );
        assert_eq!(
            log.failed_at(t0 + SEC, Severity::NeedsFix, "cannot list", &why),
            Attempt::Repeated
        );
        assert!(log.is_failing());
        let ended = log.succeeded_at(t0 + 3 * SEC).unwrap();
        assert_eq!((ended.attempts, ended.lasted), (2, 3 * SEC));
        assert!(!log.is_failing());
    }

    #[test]
    fn the_backoff_grows_to_its_cap_and_starts_over() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(min, max);
        let first = b.next_delay();
        assert!(first >= min && first < 2 * min, "{first:?}");
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
            // Jitter adds up to one delay on top of the cap.
            assert!(last <= 2 * max, "{last:?}");
        }
        assert!(last >= max, "{last:?}");
        b.reset();
        assert!(b.next_delay() < 2 * min);
    }
}
