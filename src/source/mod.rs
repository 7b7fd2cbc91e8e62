//! Where events come from. Every source feeds one bounded channel of
//! [`SourceMsg`]s.

pub mod kube;
pub mod replay;
pub mod split;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::errors::error_chain;
use crate::flow::SourceBatch;

/// The source's state as the operations surface reports it (`/readyz`, `/healthz`).
/// What a source tells the pipeline, in order.
#[derive(Debug)]
pub enum SourceMsg {
    Records(SourceBatch),
    /// Every record of the first complete list has been sent; once they are delivered the
    /// pipe is ready.
    InitialListSent,
    /// The source cannot go on; the pipeline delivers what it has and stops with this error.
    Failed(SourceError),
    /// Scope `scope` (one list/watch, in the order of `--namespace`) has handed over every event
    /// it will ever hand over with a resourceVersion at or below `version`: sent after a watch
    /// read's records (a watch delivers in resourceVersion order) and after a list's last page
    /// (a list is a snapshot at its version), never inside a streaming list's unordered initial
    /// events. `None`: the server's resourceVersions are not numbers. Only with `--leader-elect`,
    /// whose watermark is built from these.
    Through {
        scope: usize,
        version: Option<u64>,
    },
}

#[derive(Debug, Default)]
pub struct SourceHealth {
    /// Set by the pipeline when everything of the first complete list is delivered.
    ready: AtomicBool,
    /// A source is retrying after an error (an outage, not a hang).
    retrying: AtomicBool,
    /// Unix milliseconds of the last successful read.
    last_progress_ms: AtomicU64,
    /// Objects the source could not key, skipped.
    pub malformed: AtomicU64,
}

impl SourceHealth {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_retrying(&self) -> bool {
        self.retrying.load(Ordering::Relaxed)
    }

    pub fn set_retrying(&self, retrying: bool) {
        self.retrying.store(retrying, Ordering::Relaxed);
    }

    pub fn progress(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_progress_ms.store(now, Ordering::Relaxed);
    }

    /// Unix milliseconds of the last successful read, 0 before the first.
    pub fn last_progress_ms(&self) -> u64 {
        self.last_progress_ms.load(Ordering::Relaxed)
    }
}

/// Failures that stop a source. Not retryable: the input, the configuration or the cluster's
/// permissions must change.
#[derive(Debug, Error)]
pub enum SourceError {
    #[error("cannot open replay file {path}: {source}; check the path given to --replay-file")]
    OpenReplay {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the replay reader thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error(
        "cannot load a Kubernetes client configuration: {}; pass --kubeconfig FILE (and --context NAME), set KUBECONFIG, or run in a pod with a service account",
        error_chain(.0)
    )]
    KubeConfig(#[source] kube::ConfigError),
    /// The request itself could not be formed: nothing to do with the client configuration.
    #[error(
        "cannot build the request to {verb} events {scope}: {}; check the --namespace names, --field-selector and --label-selector",
        error_chain(.source)
    )]
    Request {
        verb: &'static str,
        scope: String,
        #[source]
        source: ::kube::core::request::Error,
    },
    #[error(
        "cannot reach the Kubernetes API server at {url}: {}; check the kubeconfig's server address (or --context) and the network path to it",
        error_chain(.source)
    )]
    Unreachable {
        url: String,
        #[source]
        source: ::kube::Error,
    },
    #[error(
        "the Kubernetes API server did not accept the credentials (401 Unauthorized: {0}); check the kubeconfig's user, or the pod's service account token"
    )]
    Unauthorized(String),
    #[error("not allowed to {verb} events {scope} (403 Forbidden: {message}); {hint}")]
    Forbidden {
        verb: &'static str,
        scope: String,
        message: String,
        hint: &'static str,
    },
    #[error(
        "the Kubernetes API server does not serve streaming lists of events {scope}: {reason}; run with --initial-list auto (or paginate) to list in pages, or enable the WatchList feature gate on the API server"
    )]
    NoStreamingList { scope: String, reason: String },
    #[error("the Kubernetes API server refused to {verb} events {scope} ({code}: {message})")]
    Refused {
        verb: &'static str,
        scope: String,
        code: u16,
        message: String,
    },
}
