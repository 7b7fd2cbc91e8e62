//! The Lease's I/O: one `coordination.k8s.io/v1` Lease read, created and replaced on
//! `Api<Lease>`, every write carrying the resourceVersion the writer read.
//!
//! The Lease is written directly rather than through a leader-election crate: the watermark
//! must go into the very update that renews (one write, one resourceVersion), and the holder
//! must learn at once when a renewal fails, to stop emitting before the Lease can expire
//! (fencing). What a replica makes of a read is decided in [`super::decide`]; this file only
//! talks to the API server.

use std::time::SystemTime;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use thiserror::Error;

use super::decide::{Written, observe};

/// The annotation holding the leader's committed watermark (a resourceVersion): the highest one
/// up to which everything the leader received is committed.
pub const WATERMARK_ANNOTATION: &str = "kube-event-pipe.io/committed-resource-version";

/// The Lease and the election's timing, as the configuration holds them (the defaults are
/// client-go's).
pub type LeaseConfig = crate::config::LeaseSettings;

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

/// One replica's handle on the Lease.
pub struct LeaseApi {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaseApi {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        LeaseApi {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The Lease as it is now; none before anybody created it.
    pub async fn get(&self) -> Result<Option<Lease>, LeaderError> {
        self.api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error("get", e))
    }

    /// Creates the Lease held by this replica; a conflict means another replica created it
    /// first.
    pub async fn create(&self, watermark: Option<u64>) -> Result<Written, LeaderError> {
        let lease = self.record(None, watermark, 0, false);
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(created) => Ok(Written::Stored(Box::new(created))),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Written::Conflict),
            Err(e) => Err(self.error("create", e)),
        }
    }

    /// Writes this replica in as the holder over the record with resourceVersion `version`; a
    /// conflict means somebody wrote it since (they renewed or took it first).
    pub async fn replace(
        &self,
        version: Option<String>,
        acquired: Option<MicroTime>,
        watermark: Option<u64>,
        transitions: i32,
    ) -> Result<Written, LeaderError> {
        let mut lease = self.record(acquired, watermark, transitions, false);
        lease.metadata.resource_version = version;
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => Ok(Written::Stored(Box::new(updated))),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Written::Conflict),
            Err(e) => Err(self.error("update", e)),
        }
    }

    /// Gives the Lease up with a final watermark, so a standby takes over at its next attempt
    /// instead of waiting for the Lease to expire. Only when this replica still holds it.
    ///
    /// A conflict is read again: a renewal this replica gave up waiting for may land between
    /// the read and the write, and the Lease would then keep that renewal's older watermark.
    pub async fn release(&self, watermark: Option<u64>) -> Result<(), LeaderError> {
        for _ in 0..RELEASE_ATTEMPTS {
            let Some(current) = self.get().await? else {
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
