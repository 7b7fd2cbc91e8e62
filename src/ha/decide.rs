//! What one replica makes of a read of the Lease. Pure, so that expiry and the race for an
//! expired Lease are tested without an API server.
//!
//! Two replicas, each with its own filters, agree through one Lease on which of them emits. The
//! holder renews it every retry period; the others observe it. A Lease counts as expired for an
//! observer when it has not seen the record change for the lease duration by the observer's own
//! monotonic clock, never by comparing the holder's wall clock with its own (as client-go does),
//! so only the rate at which clocks run matters, not their offset. Every write carries the
//! resourceVersion the writer read, so of two replicas racing for an expired Lease exactly one
//! wins (the other gets 409 Conflict and stays standby).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use super::lease::WATERMARK_ANNOTATION;

/// The Lease as one replica last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub holder: Option<String>,
    /// The holder's published watermark.
    pub watermark: Option<u64>,
    pub transitions: i32,
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the Lease (it just acquired or renewed it). The record as it was
    /// before this write: on a takeover, the previous holder and its last watermark.
    Leader(Observed),
    /// Another replica holds it, and it has not expired.
    Standby(Observed),
}

/// The record an observer last read, and when it first saw it in that state by its own
/// monotonic clock: the start of the Lease's expiry as that observer judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    version: Option<String>,
    holder: Option<String>,
    since: Instant,
}

impl Sighting {
    pub fn of(lease: &Lease, since: Instant) -> Self {
        Sighting {
            version: lease.metadata.resource_version.clone(),
            holder: lease.spec.as_ref().and_then(|s| s.holder_identity.clone()),
            since,
        }
    }

    /// Whether `lease` is still the record seen: the holder has not renewed in between.
    fn same(&self, lease: &Lease) -> bool {
        self.version == lease.metadata.resource_version
            && self.holder.as_ref() == lease.spec.as_ref().and_then(|s| s.holder_identity.as_ref())
    }
}

/// What to write after a read.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nobody created the Lease yet: create it, held by this replica.
    Create,
    /// It was released or has expired: take it over, one more transition.
    Acquire {
        version: Option<String>,
        transitions: i32,
    },
    /// This replica holds it: renew it, keeping the time it was acquired.
    Renew {
        version: Option<String>,
        acquired: Option<MicroTime>,
        transitions: i32,
    },
    /// Another replica holds it and it has not expired: leave it.
    StandBy,
}

/// What a read comes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// The record read (empty when there was none).
    pub observed: Observed,
    /// The observer's sighting after this read; none when there was no record (the last one
    /// stands).
    pub sighting: Option<Sighting>,
}

/// Decides on the record `read` at `now`, given the observer's `last` sighting, by this
/// replica (`identity`). `lease_duration` counts when the record does not say its own.
pub fn decide(
    read: Option<&Lease>,
    last: Option<&Sighting>,
    identity: &str,
    lease_duration: Duration,
    now: Instant,
) -> Decision {
    let Some(current) = read else {
        return Decision {
            action: Action::Create,
            observed: Observed::default(),
            sighting: None,
        };
    };
    let observed = observe(current);
    // A record that changed since the last read restarts the expiry clock.
    let since = match last {
        Some(seen) if seen.same(current) => seen.since,
        _ => now,
    };
    let mine = observed.holder.as_deref() == Some(identity);
    let expired = observed.holder.as_deref().is_none_or(str::is_empty)
        || now.duration_since(since) >= duration_of(current, lease_duration);
    let version = current.metadata.resource_version.clone();
    let action = if mine {
        Action::Renew {
            version,
            acquired: current.spec.as_ref().and_then(|s| s.acquire_time.clone()),
            transitions: observed.transitions,
        }
    } else if expired {
        Action::Acquire {
            version,
            transitions: observed.transitions + 1,
        }
    } else {
        Action::StandBy
    };
    Decision {
        action,
        observed,
        sighting: Some(Sighting::of(current, since)),
    }
}

/// How a write ended that did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// The record as stored.
    Stored(Box<Lease>),
    /// 409: somebody wrote the Lease since it was read.
    Conflict,
}

/// What a write after a read comes to, and the observer's sighting after it (`at` by its
/// clock). Of two replicas racing for the Lease, the one that met the conflict stands by and
/// forgets its sighting, so the winner's record starts its expiry clock afresh.
pub fn settle(observed: Observed, written: Written, at: Instant) -> (Attempt, Option<Sighting>) {
    match written {
        Written::Stored(lease) => (Attempt::Leader(observed), Some(Sighting::of(&lease, at))),
        Written::Conflict => (Attempt::Standby(observed), None),
    }
}

fn duration_of(lease: &Lease, fallback: Duration) -> Duration {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(fallback, Duration::from_secs)
}

/// Holder, watermark and transitions of a Lease record.
pub fn observe(lease: &Lease) -> Observed {
    let spec = lease.spec.as_ref();
    Observed {
        holder: spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty()),
        watermark: lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(WATERMARK_ANNOTATION))
            .and_then(|w| w.parse().ok()),
        transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    const DURATION: Duration = Duration::from_secs(15);

    fn lease(holder: &str, rv: &str, watermark: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                annotations: watermark
                    .map(|w| [(WATERMARK_ANNOTATION.to_string(), w.to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    fn decide_at(read: &Lease, last: Option<&Sighting>, now: Instant) -> Decision {
        decide(Some(read), last, "me", DURATION, now)
    }

    #[test]
    fn a_record_reads_as_holder_watermark_and_transitions() {
        let o = observe(&lease("a", "1", Some("42")));
        assert_eq!(
            o,
            Observed {
                holder: Some("a".into()),
                watermark: Some(42),
                transitions: 3
            }
        );
        // A released Lease has an empty holder; a non-numeric watermark is none.
        let o = observe(&lease("", "1", Some("x")));
        assert_eq!((o.holder, o.watermark), (None, None));
    }

    #[test]
    fn a_missing_lease_is_created_and_the_last_sighting_stands() {
        let d = decide(None, None, "me", DURATION, Instant::now());
        assert_eq!(d.action, Action::Create);
        assert_eq!(d.observed, Observed::default());
        assert_eq!(d.sighting, None);
    }

    #[test]
    fn a_held_lease_is_respected_until_it_expired_by_the_observers_clock() {
        let t0 = Instant::now();
        let held = lease("a", "1", Some("7"));
        // First sighting: the clock starts now, whatever the record's own times say.
        let first = decide_at(&held, None, t0);
        assert_eq!(first.action, Action::StandBy);
        assert_eq!(first.observed.watermark, Some(7));
        let seen = first.sighting.unwrap();
        let later = decide_at(&held, Some(&seen), t0 + DURATION - Duration::from_millis(1));
        assert_eq!(later.action, Action::StandBy);
        assert_eq!(later.sighting.as_ref().unwrap().since, t0);
    }

    #[test]
    fn an_expired_lease_is_taken_with_one_more_transition() {
        let t0 = Instant::now();
        let held = lease("a", "1", None);
        let seen = Sighting::of(&held, t0);
        let d = decide_at(&held, Some(&seen), t0 + DURATION);
        assert_eq!(
            d.action,
            Action::Acquire {
                version: Some("1".into()),
                transitions: 4
            }
        );
        assert_eq!(d.observed.holder.as_deref(), Some("a"));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let d = decide_at(&lease("", "5", Some("9")), None, Instant::now());
        assert!(matches!(d.action, Action::Acquire { transitions: 4, .. }));
        assert_eq!((d.observed.holder, d.observed.watermark), (None, Some(9)));
    }

    #[test]
    fn the_records_own_lease_duration_counts() {
        let t0 = Instant::now();
        let mut held = lease("a", "1", None);
        held.spec.as_mut().unwrap().lease_duration_seconds = Some(1);
        let seen = Sighting::of(&held, t0);
        let d = decide_at(&held, Some(&seen), t0 + Duration::from_secs(1));
        assert!(matches!(d.action, Action::Acquire { .. }));
    }

    #[test]
    fn an_own_lease_is_renewed_keeping_its_acquire_time() {
        let t0 = Instant::now();
        let mut mine = lease("me", "2", None);
        let acquired = MicroTime(Timestamp::UNIX_EPOCH);
        mine.spec.as_mut().unwrap().acquire_time = Some(acquired.clone());
        // Even long past its duration: nobody else renewed it.
        let seen = Sighting::of(&mine, t0);
        let d = decide_at(&mine, Some(&seen), t0 + 10 * DURATION);
        assert_eq!(
            d.action,
            Action::Renew {
                version: Some("2".into()),
                acquired: Some(acquired),
                transitions: 3
            }
        );
    }

    #[test]
    fn a_renewal_or_a_new_holder_restarts_the_observers_clock() {
        let t0 = Instant::now();
        let seen = Sighting::of(&lease("a", "1", None), t0);
        let now = t0 + 2 * DURATION;
        for changed in [lease("a", "2", None), lease("b", "1", None)] {
            let d = decide_at(&changed, Some(&seen), now);
            assert_eq!(d.action, Action::StandBy, "{changed:?}");
            assert_eq!(d.sighting.unwrap().since, now);
        }
        assert!(seen.same(&lease("a", "1", Some("8"))));
    }

    #[test]
    fn of_two_racing_writes_the_conflicting_one_stands_by_and_forgets_its_sighting() {
        let t0 = Instant::now();
        let previous = observe(&lease("a", "1", Some("7")));
        let stored = lease("me", "2", None);
        let (won, seen) = settle(
            previous.clone(),
            Written::Stored(Box::new(stored.clone())),
            t0,
        );
        assert_eq!(won, Attempt::Leader(previous.clone()));
        assert_eq!(seen, Some(Sighting::of(&stored, t0)));
        let (lost, seen) = settle(previous.clone(), Written::Conflict, t0);
        assert_eq!(lost, Attempt::Standby(previous));
        assert_eq!(seen, None);
    }
}
