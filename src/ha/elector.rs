//! The elector: one attempt at the Lease per retry period, each bounded so that a hung request
//! cannot keep a leader emitting past its renew deadline. Its state is a [`Role`]; one
//! [`Role::step`] takes an attempt's answer to the next role and says what changed, and the task
//! ([`run`]) only turns timers and answers into inputs and changes into the fence, the pipe's
//! standing, metrics and log lines.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::decide::{Action, Attempt, Observed, Sighting, decide, settle};
use super::election::{Published, Standing};
use super::fence::FenceState;
use super::lease::{LeaderError, LeaseApi, LeaseConfig};
use crate::metrics::{LEADER, LEADER_TRANSITIONS, WATERMARK_AGE};

/// One replica's view of the Lease and its attempts at it.
pub struct Elector {
    lease: LeaseApi,
    /// The record last read and when it was first seen in that state, by the monotonic clock.
    last: Option<Sighting>,
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Elector {
            lease: LeaseApi::new(client, config),
            last: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        self.lease.config()
    }

    /// One step: reads the Lease, then creates it, renews it (publishing `watermark`), takes it
    /// over when it expired, or leaves it to its holder.
    pub async fn try_acquire_or_renew(
        &mut self,
        watermark: Option<u64>,
    ) -> Result<Attempt, LeaderError> {
        let now = std::time::Instant::now();
        let read = self.lease.get().await?;
        let config = self.lease.config();
        let decision = decide(
            read.as_ref(),
            self.last.as_ref(),
            &config.identity,
            config.lease_duration,
            now,
        );
        if let Some(seen) = decision.sighting {
            self.last = Some(seen);
        }
        let (written, at) = match decision.action {
            Action::StandBy => return Ok(Attempt::Standby(decision.observed)),
            Action::Create => (self.lease.create(watermark).await?, now),
            Action::Acquire {
                version,
                transitions,
            } => {
                let written = self
                    .lease
                    .replace(version, None, watermark, transitions)
                    .await?;
                (written, std::time::Instant::now())
            }
            Action::Renew {
                version,
                acquired,
                transitions,
            } => {
                let written = self
                    .lease
                    .replace(version, acquired, watermark, transitions)
                    .await?;
                (written, std::time::Instant::now())
            }
        };
        let (attempt, seen) = settle(decision.observed, written, at);
        self.last = seen;
        Ok(attempt)
    }

    /// Gives the Lease up with a final watermark (see [`LeaseApi::release`]).
    pub async fn release(&mut self, watermark: Option<u64>) -> Result<(), LeaderError> {
        self.lease.release(watermark).await
    }
}

/// Where this replica stands, by its own reckoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Another replica holds the Lease, or it could not be renewed in time: not emitting.
    StandingBy,
    /// Holding the Lease, as renewed by the attempt sent at `since`. The Lease's renew time is
    /// no earlier, so a standby's expiry clock starts no earlier either: this replica may emit
    /// until `since` plus the renew deadline.
    Leading { since: Instant },
}

/// What the task hands the role: how an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The attempt sent at `sent` was answered.
    Answered { sent: Instant, attempt: Attempt },
    /// It failed or did not answer in time; the text says why.
    Failed(String),
}

/// What a step changed, in the order the task carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An attempt was answered: a run of failures, if any, is over.
    Reachable,
    /// An attempt failed.
    Unreachable(String),
    /// This replica took the Lease; the record as it was before.
    Elected(Observed),
    /// It led, and another replica (named, if the record says) holds the Lease now.
    Displaced(Option<String>),
    /// Standing by, the Lease as read: its holder's watermark.
    Observed(Observed),
    /// It led, and the renew deadline passed without a successful renewal.
    Expired,
}

impl Role {
    /// The role after `input`, judged at `now` against the renew `deadline`, and what changed.
    pub fn step(self, input: Input, now: Instant, deadline: Duration) -> (Role, Vec<Change>) {
        let mut changes = Vec::new();
        let next = match input {
            Input::Failed(why) => {
                changes.push(Change::Unreachable(why));
                self
            }
            Input::Answered {
                sent,
                attempt: Attempt::Leader(previous),
            } => {
                changes.push(Change::Reachable);
                if self == Role::StandingBy {
                    changes.push(Change::Elected(previous));
                }
                Role::Leading { since: sent }
            }
            Input::Answered {
                attempt: Attempt::Standby(observed),
                ..
            } => {
                changes.push(Change::Reachable);
                if self != Role::StandingBy {
                    changes.push(Change::Displaced(observed.holder.clone()));
                }
                changes.push(Change::Observed(observed));
                Role::StandingBy
            }
        };
        match next {
            Role::Leading { since } if now.saturating_duration_since(since) >= deadline => {
                changes.push(Change::Expired);
                (Role::StandingBy, changes)
            }
            next => (next, changes),
        }
    }

    /// How long an attempt sent at `sent` may take: a leader's until its deadline, a standby's
    /// a renew deadline.
    pub fn attempt_limit(self, sent: Instant, deadline: Duration) -> Duration {
        match self {
            Role::Leading { since } => (since + deadline).saturating_duration_since(sent),
            Role::StandingBy => deadline,
        }
    }

    /// When the attempt after the one sent at `sent` starts. A leader renews on time, and one
    /// whose renewals keep failing wakes at its deadline, not after it. A standby's attempts are
    /// spread by `jitter` in [0, 1) (client-go adds up to 20 %), so replicas started together
    /// do not keep colliding.
    pub fn next_attempt(self, sent: Instant, config: &LeaseConfig, jitter: f64) -> Instant {
        match self {
            Role::Leading { since } => {
                (sent + config.retry_period).min(since + config.renew_deadline)
            }
            Role::StandingBy => sent + config.retry_period.mul_f64(1.0 + jitter * 0.2),
        }
    }
}

/// The elector task: attempts until `release` fires, then gives the Lease up with the pipe's
/// final watermark.
pub(super) async fn run(
    mut elector: Elector,
    standing: watch::Sender<Standing>,
    watermark: watch::Receiver<Published>,
    fences: Arc<FenceState>,
    mut release: oneshot::Receiver<()>,
) {
    let config = elector.config().clone();
    let mut out = Outputs::new(standing, fences);
    let mut age = Age::default();
    let mut role = Role::StandingBy;
    loop {
        let sent = Instant::now();
        let published = *watermark.borrow();
        age.observe(published);
        let limit = role.attempt_limit(sent, config.renew_deadline);
        let answer = tokio::select! {
            biased;
            _ = &mut release => break,
            r = tokio::time::timeout(limit, elector.try_acquire_or_renew(published.watermark)) => r,
        };
        let input = match answer {
            Ok(Ok(attempt)) => Input::Answered { sent, attempt },
            Ok(Err(e)) => Input::Failed(e.to_string()),
            Err(_) => Input::Failed("a lease request did not answer in time".into()),
        };
        let (next, changes) = role.step(input, Instant::now(), config.renew_deadline);
        role = next;
        for change in changes {
            out.apply(change, &config, &watermark);
        }
        let wake = role.next_attempt(sent, &config, jitter());
        tokio::select! {
            biased;
            _ = &mut release => break,
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    // Released: the pipe has delivered and committed; publish its final watermark and go.
    out.leader.set(0.0);
    let last = watermark.borrow().watermark;
    match elector.release(last).await {
        Ok(()) => info!(watermark = ?last, "released the lease"),
        Err(e) => {
            warn!(error = %e, "could not release the lease; a standby takes over once it expires")
        }
    }
}

/// Where the elector's changes go: the fence, the pipe's standing, metrics and the log.
struct Outputs {
    standing: watch::Sender<Standing>,
    fences: Arc<FenceState>,
    leader: metrics::Gauge,
    transitions: metrics::Counter,
    /// The kind of failure being logged, while attempts fail.
    failing: Option<String>,
}

impl Outputs {
    fn new(standing: watch::Sender<Standing>, fences: Arc<FenceState>) -> Self {
        Outputs {
            standing,
            fences,
            leader: metrics::gauge!(LEADER),
            transitions: metrics::counter!(LEADER_TRANSITIONS),
            failing: None,
        }
    }

    fn apply(&mut self, change: Change, config: &LeaseConfig, own: &watch::Receiver<Published>) {
        match change {
            Change::Reachable => recovered(&mut self.failing),
            Change::Unreachable(why) => note(&mut self.failing, &why),
            Change::Elected(previous) => {
                self.transitions.increment(1);
                self.leader.set(1.0);
                info!(
                    identity = %config.identity,
                    lease = %format!("{}/{}", config.namespace, config.name),
                    previous = previous.holder.as_deref().unwrap_or("none"),
                    watermark = ?previous.watermark,
                    "became the leader; emitting"
                );
                self.fences.lead();
                self.standing.send_replace(Standing {
                    leading: true,
                    watermark: previous.watermark,
                });
            }
            Change::Displaced(holder) => {
                self.fences.step_down();
                self.leader.set(0.0);
                warn!(holder = ?holder, "another replica holds the lease; stopped emitting, standing by");
            }
            Change::Observed(observed) => {
                self.standing.send_if_modified(|s| {
                    let next = Standing {
                        leading: false,
                        watermark: observed.watermark.or(s.watermark),
                    };
                    std::mem::replace(s, next) != next
                });
            }
            Change::Expired => {
                self.fences.step_down();
                self.leader.set(0.0);
                warn!(
                    renew_deadline_secs = config.renew_deadline.as_secs_f64(),
                    "could not renew the lease within the renew deadline; stopped emitting, standing by"
                );
                self.standing.send_replace(Standing {
                    leading: false,
                    watermark: own.borrow().watermark,
                });
            }
        }
    }
}

/// The watermark's age: how long it has not moved while events wait for it. Kept here, beside
/// the renewals, because the pipe itself may be blocked for as long as the age grows (a leader
/// whose sink is down waits for room to hand events on).
struct Age {
    since: Option<(Instant, Option<u64>)>,
    gauge: metrics::Gauge,
}

impl Default for Age {
    fn default() -> Self {
        Age {
            since: None,
            gauge: metrics::gauge!(WATERMARK_AGE),
        }
    }
}

impl Age {
    fn observe(&mut self, now: Published) {
        self.since = match self.since {
            _ if !now.waiting => None,
            Some((at, seen)) if seen == now.watermark => Some((at, seen)),
            _ => Some((Instant::now(), now.watermark)),
        };
        self.gauge
            .set(self.since.map_or(0.0, |(at, _)| at.elapsed().as_secs_f64()));
    }
}

/// Logs a failing attempt once per kind of failure, not once per period.
fn note(failing: &mut Option<String>, text: &str) {
    let kind = text.split(':').next().unwrap_or(text).to_string();
    if failing.as_deref() != Some(kind.as_str()) {
        warn!(error = %text, "leader election: attempt failed; trying again every retry period");
        *failing = Some(kind);
    }
}

fn recovered(failing: &mut Option<String>) {
    if let Some(kind) = failing.take() {
        info!(after = %kind, "leader election: the lease is reachable again");
    }
}

/// A number in [0, 1) that differs between processes and attempts.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = xxhash_rust::xxh3::xxh3_64(
        &(u64::from(nanos) ^ u64::from(std::process::id())).to_le_bytes(),
    );
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn held_by(holder: &str, watermark: Option<u64>) -> Observed {
        Observed {
            holder: Some(holder.into()),
            watermark,
            transitions: 1,
        }
    }

    fn config() -> LeaseConfig {
        LeaseConfig {
            name: "kube-event-pipe".into(),
            namespace: "events".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: DEADLINE,
            retry_period: Duration::from_secs(2),
        }
    }

    #[test]
    fn a_standby_that_takes_the_lease_is_elected_once() {
        let t0 = Instant::now();
        let took = Input::Answered {
            sent: t0,
            attempt: Attempt::Leader(held_by("a", Some(7))),
        };
        let (role, changes) = Role::StandingBy.step(took, t0, DEADLINE);
        assert_eq!(role, Role::Leading { since: t0 });
        assert_eq!(
            changes,
            [Change::Reachable, Change::Elected(held_by("a", Some(7)))]
        );
        let t1 = t0 + Duration::from_secs(2);
        let renewed = Input::Answered {
            sent: t1,
            attempt: Attempt::Leader(held_by("me", Some(8))),
        };
        let (role, changes) = role.step(renewed, t1, DEADLINE);
        assert_eq!(role, Role::Leading { since: t1 });
        assert_eq!(changes, [Change::Reachable]);
    }

    #[test]
    fn a_leader_that_finds_another_holder_is_displaced() {
        let t0 = Instant::now();
        let seen = Input::Answered {
            sent: t0,
            attempt: Attempt::Standby(held_by("b", Some(3))),
        };
        let (role, changes) = Role::Leading { since: t0 }.step(seen.clone(), t0, DEADLINE);
        assert_eq!(role, Role::StandingBy);
        assert_eq!(
            changes,
            [
                Change::Reachable,
                Change::Displaced(Some("b".into())),
                Change::Observed(held_by("b", Some(3)))
            ]
        );
        let (_, changes) = Role::StandingBy.step(seen, t0, DEADLINE);
        assert_eq!(
            changes,
            [Change::Reachable, Change::Observed(held_by("b", Some(3)))]
        );
    }

    #[test]
    fn a_leader_whose_renewals_fail_past_its_deadline_stops() {
        let t0 = Instant::now();
        let leading = Role::Leading { since: t0 };
        let failed = || Input::Failed("cannot get the lease".into());
        let (role, changes) = leading.step(failed(), t0 + DEADLINE / 2, DEADLINE);
        assert_eq!(role, leading);
        assert_eq!(
            changes,
            [Change::Unreachable("cannot get the lease".into())]
        );
        let (role, changes) = leading.step(failed(), t0 + DEADLINE, DEADLINE);
        assert_eq!(role, Role::StandingBy);
        assert_eq!(changes.last(), Some(&Change::Expired));
        // A renewal that answers only after the deadline does not keep it leading either.
        let late = Input::Answered {
            sent: t0,
            attempt: Attempt::Leader(held_by("me", None)),
        };
        let (role, changes) = leading.step(late, t0 + DEADLINE, DEADLINE);
        assert_eq!(
            (role, changes.last()),
            (Role::StandingBy, Some(&Change::Expired))
        );
    }

    #[test]
    fn a_leader_attempts_on_time_and_never_past_its_deadline() {
        let config = config();
        let t0 = Instant::now();
        let leading = Role::Leading { since: t0 };
        assert_eq!(leading.attempt_limit(t0, DEADLINE), DEADLINE);
        let late = t0 + Duration::from_secs(9);
        assert_eq!(
            leading.attempt_limit(late, DEADLINE),
            Duration::from_secs(1)
        );
        assert_eq!(
            leading.next_attempt(t0, &config, 0.9),
            t0 + config.retry_period
        );
        assert_eq!(leading.next_attempt(late, &config, 0.9), t0 + DEADLINE);
        let standby = Role::StandingBy;
        assert_eq!(standby.attempt_limit(late, DEADLINE), DEADLINE);
        let next = standby.next_attempt(t0, &config, 0.5);
        assert_eq!(next, t0 + config.retry_period.mul_f64(1.1));
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
