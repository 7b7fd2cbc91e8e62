//! Leader election through a `coordination.k8s.io/v1` Lease, with the delivery watermark in the
//! same object.
//!
//! Two replicas, each with its own filters, agree through one Lease on which of them emits. The
//! holder renews it every `retry_period`; the others observe it. A Lease counts as expired for an
//! observer when it has not seen the record change for `lease_duration` by the observer's own
//! monotonic clock, never by comparing the holder's wall clock with its own (as client-go does),
//! so only the rate at which clocks run matters, not their offset. Every write carries the
//! resourceVersion the writer read, so of two replicas racing for an expired Lease exactly one
//! wins (the other gets 409 Conflict and stays standby).
//!
//! The Lease is written directly on `Api<Lease>` rather than through a leader-election crate:
//! the watermark must go into the very update that renews (one write, one resourceVersion), and
//! the holder must learn at once when a renewal fails, to stop emitting before the Lease can
//! expire (fencing). The renewal annotations carry the watermark: the highest resourceVersion up
//! to which everything the leader received is committed.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use thiserror::Error;

/// The annotation holding the leader's committed watermark (a resourceVersion).
pub const WATERMARK_ANNOTATION: &str = "kube-event-pipe.io/committed-resource-version";

/// Timing of the election; the defaults are client-go's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The Lease's name (default `kube-event-pipe`).
    pub name: String,
    /// Its namespace (default: the pod's own, from the service account's namespace file).
    pub namespace: String,
    /// This replica's identity (default: `POD_NAME`, else the hostname).
    pub identity: String,
    /// How long a Lease nobody renews stays held (default 15 s): the longest a standby waits
    /// after a leader dies without releasing.
    pub lease_duration: Duration,
    /// How long the leader keeps emitting without a successful renewal (default 10 s); must be
    /// below `lease_duration`, the margin is what covers clock-rate skew.
    pub renew_deadline: Duration,
    /// Between renewals and between a standby's attempts (default 2 s).
    pub retry_period: Duration,
}

/// Failures of one attempt at the Lease. All are retried on the next period; a leader that
/// sees them for longer than the renew deadline steps down.
#[derive(Debug, Error)]
pub enum LeaderError {
    #[error(
        "not allowed to {verb} the lease {namespace}/{name}: {message}; grant get, create and update on leases in that namespace (deploy/kustomize/overlays/ha)"
    )]
    Forbidden {
        verb: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
    #[error("cannot {verb} the lease {namespace}/{name}: {source}")]
    Api {
        verb: &'static str,
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error(
        "the lease {lease} kept changing while it was being released ({attempts} conflicts); a standby takes over once it expires"
    )]
    Conflict { lease: String, attempts: usize },
}

/// Reads and writes a release tries before it leaves the Lease to expire.
const RELEASE_ATTEMPTS: usize = 3;

/// The Lease as one replica last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub holder: Option<String>,
    /// The holder's published watermark.
    pub watermark: Option<u64>,
    pub transitions: i32,
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This replica holds the Lease (it just acquired or renewed it). The record as it was
    /// before this write: on a takeover, the previous holder and its last watermark.
    Leader(Observed),
    /// Another replica holds it, and it has not expired.
    Standby(Observed),
}

/// One replica's view of the Lease and its attempts at it.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The record last read (its resourceVersion and spec) and when it was first seen in that
    /// state, by the monotonic clock.
    last: Option<(Lease, Instant)>,
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            last: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One step: reads the Lease, then creates it, renews it (publishing `watermark`), takes it
    /// over when it expired, or leaves it to its holder.
    pub async fn try_acquire_or_renew(
        &mut self,
        watermark: Option<u64>,
    ) -> Result<Role, LeaderError> {
        let now = Instant::now();
        let current = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error("get", e))?;
        let Some(current) = current else {
            let lease = self.record(None, watermark, 0, false);
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.last = Some((created, now));
                    Ok(Role::Leader(Observed {
                        holder: None,
                        watermark: None,
                        transitions: 0,
                    }))
                }
                // Another replica created it first: it leads.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    self.last = None;
                    Ok(Role::Standby(Observed {
                        holder: None,
                        watermark: None,
                        transitions: 0,
                    }))
                }
                Err(e) => Err(self.error("create", e)),
            };
        };
        let observed = observe(&current);
        // A record that changed since the last read restarts the expiry clock.
        let seen_at = match &self.last {
            Some((last, at)) if same_record(last, &current) => *at,
            _ => now,
        };
        self.last = Some((current.clone(), seen_at));
        let mine = observed.holder.as_deref() == Some(self.config.identity.as_str());
        let expired = observed.holder.as_deref().is_none_or(str::is_empty)
            || now.duration_since(seen_at) >= self.lease_duration_of(&current);
        if !mine && !expired {
            return Ok(Role::Standby(observed));
        }
        let transitions = observed.transitions + i32::from(!mine);
        let acquired = if mine {
            current.spec.as_ref().and_then(|s| s.acquire_time.clone())
        } else {
            None
        };
        let mut lease = self.record(acquired, watermark, transitions, false);
        lease.metadata.resource_version = current.metadata.resource_version.clone();
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.last = Some((updated, Instant::now()));
                Ok(Role::Leader(observed))
            }
            // Someone wrote it since we read it: they renewed or took it first.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.last = None;
                Ok(Role::Standby(observed))
            }
            Err(e) => Err(self.error("update", e)),
        }
    }

    /// Gives the Lease up with a final watermark, so a standby takes over at its next attempt
    /// instead of waiting for the Lease to expire. Only when this replica still holds it.
    ///
    /// A conflict is read again: a renewal this replica gave up waiting for may land between
    /// the read and the write, and the Lease would then keep that renewal's older watermark.
    pub async fn release(&mut self, watermark: Option<u64>) -> Result<(), LeaderError> {
        for _ in 0..RELEASE_ATTEMPTS {
            let Some(current) = self
                .api
                .get_opt(&self.config.name)
                .await
                .map_err(|e| self.error("get", e))?
            else {
                return Ok(());
            };
            let observed = observe(&current);
            if observed.holder.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(());
            }
            let mut lease = self.record(None, watermark, observed.transitions, true);
            lease.metadata.resource_version = current.metadata.resource_version.clone();
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(self.error("update", e)),
            }
        }
        Err(LeaderError::Conflict {
            lease: format!("{}/{}", self.config.namespace, self.config.name),
            attempts: RELEASE_ATTEMPTS,
        })
    }

    fn lease_duration_of(&self, lease: &Lease) -> Duration {
        lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs)
    }

    /// The Lease as this replica writes it; `released` leaves the holder empty.
    fn record(
        &self,
        acquired: Option<MicroTime>,
        watermark: Option<u64>,
        transitions: i32,
        released: bool,
    ) -> Lease {
        let now = MicroTime(now());
        let annotations = watermark
            .map(|w| [(WATERMARK_ANNOTATION.to_string(), w.to_string())].into())
            .unwrap_or_default();
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(if released {
                    String::new()
                } else {
                    self.config.identity.clone()
                }),
                lease_duration_seconds: Some(
                    i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
                ),
                acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    fn error(&self, verb: &'static str, source: kube::Error) -> LeaderError {
        let (namespace, name) = (self.config.namespace.clone(), self.config.name.clone());
        match source {
            kube::Error::Api(status) if status.code == 403 => LeaderError::Forbidden {
                verb,
                namespace,
                name,
                message: status.message.clone(),
            },
            source => LeaderError::Api {
                verb,
                namespace,
                name,
                source,
            },
        }
    }
}

fn now() -> Timestamp {
    Timestamp::try_from(SystemTime::now()).unwrap_or(Timestamp::UNIX_EPOCH)
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

/// Whether two reads show the same record: the holder has not renewed in between.
fn same_record(a: &Lease, b: &Lease) -> bool {
    a.metadata.resource_version == b.metadata.resource_version
        && a.spec.as_ref().and_then(|s| s.holder_identity.as_ref())
            == b.spec.as_ref().and_then(|s| s.holder_identity.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_renewal_is_a_new_record() {
        assert!(same_record(&lease("a", "1", None), &lease("a", "1", None)));
        assert!(!same_record(&lease("a", "1", None), &lease("a", "2", None)));
        assert!(!same_record(&lease("a", "1", None), &lease("b", "1", None)));
    }
}
