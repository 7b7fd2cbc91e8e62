//! The configuration's types: what the rest of the program reads once `build` has validated
//! the flags, the environment and the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use super::ha::LeaseSettings;
use super::layers::Origin;
use super::{KafkaSettings, OtlpSettings, S3Options, S3Settings, WebhookSettings, defaults};

/// A configuration the process cannot start with. Not retryable: the operator must fix a value.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    /// `name` is spelled as the user wrote it: `--batch-size`, `KUBE_EVENT_PIPE_BATCH_SIZE` or
    /// the file key `batch_size`.
    #[error("{name}={value} ({origin}): {requirement}")]
    Invalid {
        name: String,
        value: String,
        origin: Origin,
        requirement: String,
    },
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Conflict(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayInput {
    Stdin,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// Watch the cluster's Events.
    Kube(KubeConfig),
    Replay(ReplayInput),
}

/// How to reach the cluster and which events to watch.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeConfig {
    /// Default: KUBECONFIG, ~/.kube/config, then the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Empty: all namespaces, one cluster-wide watch.
    pub namespaces: Vec<String>,
    pub field_selector: Option<String>,
    pub label_selector: Option<String>,
    /// Default [`defaults::LIST_PAGE_SIZE`].
    pub list_page_size: u32,
    /// Default [`defaults::WATCH_TIMEOUT`].
    pub watch_timeout: Duration,
    /// Default [`defaults::INITIAL_LIST`] (`Auto`): a streaming list where the API server serves
    /// one (it costs the server one pass over its state instead of building every page), pages
    /// where it does not.
    pub initial_list: InitialList,
}

/// How the kube source reads the current state before it watches (and again after a 410).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialList {
    /// A streaming list, falling back to pages for the rest of the run when the API server
    /// refuses it (WatchList feature gate off) or answers it with a plain watch (older servers).
    Auto,
    /// A streaming list only; a server without one stops the source with the fix in the message.
    Stream,
    /// Pages of `list_page_size`, as before streaming lists existed.
    Paginate,
}

impl Default for KubeConfig {
    fn default() -> Self {
        KubeConfig {
            kubeconfig: None,
            context: None,
            namespaces: Vec::new(),
            field_selector: None,
            label_selector: None,
            list_page_size: defaults::LIST_PAGE_SIZE,
            watch_timeout: defaults::WATCH_TIMEOUT,
            initial_list: defaults::INITIAL_LIST,
        }
    }
}

pub use crate::encode::OutputFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    Stdout,
    /// Appends to the path; `fsync` makes each batch durable before it is acknowledged.
    File {
        path: PathBuf,
        fsync: bool,
    },
    /// Gzipped batches to a bucket.
    S3(Box<S3Settings>),
    /// One record per event to a Kafka topic, acknowledged by the brokers.
    Kafka(Box<KafkaSettings>),
    /// OTLP/HTTP logs to a collector.
    Otlp(OtlpSettings),
    /// POSTs to a webhook.
    Http(WebhookSettings),
}

/// The validated configuration of the main job.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: SourceConfig,
    /// Forward DELETED events too. Default false: deletion is TTL expiry, not an occurrence.
    pub emit_deleted: bool,
    pub sinks: Vec<SinkConfig>,
    pub format: OutputFormat,
    /// Added as a top-level `cluster` field when set; default none keeps lines untouched.
    pub cluster_name: Option<String>,
    /// Filter directory; a persistent volume in production. Default
    /// [`defaults::PERSISTENCE_PATH`] (the Python tool's).
    pub persistence_path: PathBuf,
    /// Keys per generation before it rotates. Default [`defaults::FILTER_CAPACITY`].
    pub filter_capacity: u64,
    /// Target false-positive rate per generation. Default [`defaults::FILTER_ERROR_RATE`], not
    /// the Python tool's 1e-2: each false positive silently drops a real event.
    pub filter_error_rate: f64,
    /// Generations kept. Default [`defaults::GENERATIONS`]: with the default interval, about
    /// 2–3 hours of memory, well beyond the API server's one-hour event TTL.
    pub generations: usize,
    /// Age at which a new generation starts. Default [`defaults::ROTATION_INTERVAL`].
    pub rotation_interval: Duration,
    /// Period of the synchronous filter flush. Default [`defaults::SYNC_INTERVAL`]: a power
    /// loss can cost at most this much memory of delivered events (duplicates on restart, never
    /// loss).
    pub sync_interval: Duration,
    /// Events per batch. Default [`defaults::BATCH_SIZE`]: larger batches mean fewer writes and
    /// fsyncs, more events in flight (replayed after a crash).
    pub batch_size: usize,
    /// Longest a partial batch waits. Default [`defaults::BATCH_INTERVAL`].
    pub batch_interval: Duration,
    /// Encoded bytes at which a batch closes. Default [`defaults::BATCH_MAX_BYTES`]: bounds the
    /// memory a batch holds in every sink queue and the size of one S3 PUT, whatever the events
    /// weigh.
    pub batch_max_bytes: usize,
    /// How long shutdown waits for in-flight events. Default [`defaults::SHUTDOWN_TIMEOUT`] (a
    /// pod's default grace period).
    pub shutdown_timeout: Duration,
    /// A tracing filter directive; Python level names are translated, and every directive names a level.
    pub log_filter: String,
    pub log_format: LogFormat,
    /// Where /metrics, /healthz and /readyz listen; `None` turns the listener (and metric
    /// recording) off. Default [`defaults::LISTEN_IN_POD`] in a pod (the probes need it), off elsewhere, so
    /// a local run or a test suite running many pipes at once does not fight over one port.
    pub listen: Option<SocketAddr>,
    /// Split delivered events by type and reason in /metrics. Default false: reasons are free
    /// text from every controller, one series each.
    pub metrics_by_reason: bool,
    /// The S3 options as given, whether or not the S3 sink is on (the startup line shows
    /// them); the sink reads its own settings in [`SinkConfig::S3`].
    pub s3: S3Options,
    /// Off unless asked for: it needs `get` on more kinds than events.
    pub enrich: Option<EnrichConfig>,
    /// Where batches a sink refuses for good are written (then acknowledged). Default none:
    /// such a batch is logged at ERROR and retried on the slow timer, holding the pipe.
    pub dead_letter_dir: Option<PathBuf>,
    /// How often a batch a sink refused for good is tried again when there is no dead-letter
    /// directory. Default 30 s: a fixed credential or policy is noticed within it, and a peer
    /// that keeps refusing is not hammered.
    pub refused_retry_interval: Duration,
    /// Leader election among replicas (`--leader-elect`); `None` runs alone, always emitting.
    pub ha: Option<HaConfig>,
}

/// Several replicas, one emitting: the Lease they agree through and what a standby may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    pub lease: LeaseSettings,
    /// Event bytes a standby holds above its leader's watermark before it stops reading.
    pub standby_max_bytes: usize,
}

/// How events are enriched with their involved object and node.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichConfig {
    /// Globs of label and annotation keys to copy; empty copies none.
    pub labels: Vec<String>,
    pub annotations: Vec<String>,
    /// Labels and annotations beyond this many bytes per event are left out (annotations first):
    /// one `last-applied-configuration` can be hundreds of kilobytes.
    pub max_bytes: usize,
    /// An event never waits longer than this for its lookups; it goes out unenriched instead.
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub cache_entries: u64,
    /// Events in the enrichment stage at once: bounds the lookups in flight and the memory.
    pub concurrency: usize,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            labels: vec![defaults::ENRICH_KEYS.into()],
            annotations: vec![defaults::ENRICH_KEYS.into()],
            max_bytes: defaults::ENRICH_MAX_BYTES,
            timeout: defaults::ENRICH_TIMEOUT,
            cache_ttl: defaults::ENRICH_CACHE_TTL,
            cache_entries: defaults::ENRICH_CACHE_ENTRIES,
            concurrency: defaults::ENRICH_CONCURRENCY,
        }
    }
}

/// The default listen address: on in a pod, where the kubelet probes it; off elsewhere.
pub fn default_listen(in_cluster: bool) -> Option<SocketAddr> {
    in_cluster.then_some(defaults::LISTEN_IN_POD)
}
