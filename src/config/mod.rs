//! One validated, typed configuration, built in one place from flags, environment and a file.
//!
//! Precedence: flag > environment > config file > default. Every rejected value is reported with
//! its name as the user wrote it, where it came from and what is accepted, because an operator
//! reading a CrashLoopBackOff log has only that line to go on.

pub mod cli;
pub mod defaults;
mod delivery;
mod file;
pub mod kafka;
mod layers;
mod parse;
mod redact;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgMatches;
use thiserror::Error;

pub use cli::{Cli, Command, DecodeArgs, InspectArgs, RunArgs};

pub use crate::encode::object::ObjectFormat;
pub use delivery::{
    Compression, HeaderSpec, HeaderValueSource, OtlpBody, OtlpSettings, TlsFiles, WebhookFormat,
    WebhookSettings,
};
use file::FileLayer;
pub use kafka::KafkaSettings;
pub use layers::Origin;
use layers::{Layers, Raw};
pub use redact::{REDACTED, Redacted, redact};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The Event object as received, one per line, as the Python kube-event-pipe writes it.
    Raw,
    /// eventrouter's `{"verb", "event", "old_event"}` wrapper, for EFK pipelines built on it.
    Eventrouter,
}

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
    /// Gzipped batches to the bucket in [`Config::s3`].
    S3,
    /// One record per event to a Kafka topic, acknowledged by the brokers.
    Kafka(Box<KafkaSettings>),
    /// OTLP/HTTP logs to a collector.
    Otlp(OtlpSettings),
    /// POSTs to a webhook.
    Http(WebhookSettings),
}

/// Server-side encryption asked of S3 for each object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    S3,
    /// SSE-KMS, with the account's default key when `key_id` is none.
    Kms { key_id: Option<String> },
}

/// How to reach S3 (shared by the sink and `decode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Connection {
    /// Default: the SDK's chain (AWS_REGION, the profile), else us-east-1.
    pub region: Option<String>,
    /// A shared-config profile; default: the SDK's (AWS_PROFILE, else `default`).
    pub profile: Option<String>,
    /// An S3-compatible store's URL; request checksums are then sent only when required, since
    /// many such stores reject the CRC32 checksums recent SDKs add.
    pub endpoint: Option<String>,
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key`. Default false (AWS's style).
    pub force_path_style: bool,
    /// The longest one request attempt (a PUT with its body, and its answer) may take before it
    /// fails and is retried (default 30 s). An endpoint that accepts the connection and never
    /// answers pauses the pipe behind it; this bounds how long that goes unnoticed. Raise it
    /// for large batches over a slow link.
    pub timeout: Duration,
}

impl Default for S3Connection {
    fn default() -> Self {
        S3Connection {
            region: None,
            profile: None,
            endpoint: None,
            force_path_style: false,
            timeout: defaults::S3_TIMEOUT,
        }
    }
}

/// The S3 sink's settings. Validated whether or not the sink is on, so that a k8stream config
/// file is accepted whole and a typo is caught before the sink is switched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The stream's id in object keys. Default: the kube-system namespace's UID when the kube
    /// source can read it, else a UUID kept in the persistence directory (`stream-uid`).
    pub uid: Option<String>,
    /// Leading key segment(s), without a trailing `/`. Default: none.
    pub prefix: Option<String>,
    pub bucket: Option<String>,
    pub connection: S3Connection,
    /// Default jsonl: the same lines the other sinks get, readable with zcat.
    pub format: ObjectFormat,
    pub storage_class: Option<String>,
    pub sse: Option<Sse>,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            uid: None,
            prefix: None,
            bucket: None,
            connection: S3Connection::default(),
            format: ObjectFormat::Jsonl,
            storage_class: None,
            sse: None,
        }
    }
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
    pub s3: S3Settings,
    /// Off unless asked for: it needs `get` on more kinds than events.
    pub enrich: Option<EnrichConfig>,
    /// Where batches a sink refuses for good are written (then acknowledged). Default none:
    /// such a batch is logged at ERROR and retried on the slow timer, holding the pipe.
    pub dead_letter_dir: Option<PathBuf>,
    /// How often a batch a sink refused for good is tried again when there is no dead-letter
    /// directory. Default 30 s: a fixed credential or policy is noticed within it, and a peer
    /// that keeps refusing is not hammered.
    pub refused_retry_interval: Duration,
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

/// Validates the run options. `matches` must come from `Cli::command()`, so that value sources
/// and argument names are known.
pub fn build(matches: &ArgMatches) -> Result<Config, ConfigError> {
    use clap::CommandFactory;
    let command = Cli::command();
    let file = match matches.try_get_one::<String>("config").ok().flatten() {
        Some(path) => Some(FileLayer::load(PathBuf::from(path))?),
        None => None,
    };
    let layers = Layers {
        matches,
        command,
        file,
    };
    let get = |id: &str, keys: &[&str]| layers.get(id, keys);

    let source_kind = match get("source", &["source"]) {
        Some(raw) => raw.parse(|v| parse::one_of(v, &["kube", "replay"]))?,
        None => defaults::SOURCE,
    };
    let replay = get("replay_file", &["replay_file"]);
    let kubeconfig = get("kubeconfig", &["kubeconfig"]).map(|r| PathBuf::from(r.value));
    let source = match source_kind {
        "replay" => match replay {
            Some(raw) if raw.value == "-" => SourceConfig::Replay(ReplayInput::Stdin),
            Some(raw) if raw.value.trim().is_empty() => {
                return Err(raw.invalid("must be a file path, or - for stdin"));
            }
            Some(raw) => SourceConfig::Replay(ReplayInput::File(PathBuf::from(raw.value))),
            None => {
                return Err(ConfigError::Conflict(
                    "--source replay needs --replay-file PATH (or - for stdin)".into(),
                ));
            }
        },
        _ => SourceConfig::Kube(kube_config(&get, kubeconfig)?),
    };

    let emit_deleted = match get("emit_deleted", &["emit_deleted"]) {
        Some(raw) => raw.parse(parse::boolean)?,
        None => false,
    };
    let file_fsync = match get("file_fsync", &["file_fsync"]) {
        Some(raw) => raw.parse(parse::boolean)?,
        None => defaults::FILE_FSYNC,
    };

    // k8stream names a directory for its file sink; we append to one file inside it.
    let destination = match get("destination", &["destination"]) {
        Some(raw) if raw.value.trim().is_empty() => {
            return Err(raw.invalid("must be - for stdout, or a file path"));
        }
        Some(raw) => Some(raw.value),
        None => get("file_sink_dir", &["file_sink_dir"]).map(|raw| {
            PathBuf::from(raw.value)
                .join("events.jsonl")
                .to_string_lossy()
                .into_owned()
        }),
    };
    let file_path = destination
        .as_deref()
        .filter(|d| *d != "-")
        .map(PathBuf::from);
    let kafka = kafka::settings(&get, std::env::var(kafka::PASSWORD_ENV).ok())?;
    let otlp = delivery::otlp(&get)?;
    let webhook = delivery::webhook(&get)?;
    let sinks = match get("sink", &["sink"]) {
        Some(raw) => {
            let names = raw.parse(parse::sink_list)?;
            let mut sinks = Vec::new();
            for name in names {
                match name {
                    "stdout" => sinks.push(SinkConfig::Stdout),
                    "file" => match &file_path {
                        Some(path) => sinks.push(SinkConfig::File {
                            path: path.clone(),
                            fsync: file_fsync,
                        }),
                        None => {
                            return Err(raw.invalid(
                                "the file sink needs --destination PATH (or file_sink_dir in the config file)",
                            ));
                        }
                    },
                    "kafka" => match &kafka {
                        Some(settings) => sinks.push(SinkConfig::Kafka(Box::new(settings.clone()))),
                        None => {
                            return Err(raw.invalid(
                                "the kafka sink needs --kafka-brokers HOST:PORT (or KUBE_EVENT_PIPE_KAFKA_BROKERS, or kafka_brokers in the config file)",
                            ));
                        }
                    },
                    "otlp" => match &otlp {
                        Some(settings) => sinks.push(SinkConfig::Otlp(settings.clone())),
                        None => {
                            return Err(ConfigError::Conflict(
                                "the otlp sink needs an endpoint: set --otlp-endpoint, KUBE_EVENT_PIPE_OTLP_ENDPOINT or otlp_endpoint in the config file".into(),
                            ));
                        }
                    },
                    "http" => match &webhook {
                        Some(settings) => sinks.push(SinkConfig::Http(settings.clone())),
                        None => {
                            return Err(ConfigError::Conflict(
                                "the http sink needs a URL: set --http-url, KUBE_EVENT_PIPE_HTTP_URL or http_url in the config file".into(),
                            ));
                        }
                    },
                    _ => sinks.push(SinkConfig::S3),
                }
            }
            sinks
        }
        None => vec![match file_path {
            Some(path) => SinkConfig::File {
                path,
                fsync: file_fsync,
            },
            None => SinkConfig::Stdout,
        }],
    };

    let format = match get("format", &["format"]) {
        Some(raw) => match raw.parse(|v| parse::one_of(v, &["raw", "eventrouter"]))? {
            "eventrouter" => OutputFormat::Eventrouter,
            _ => OutputFormat::Raw,
        },
        None => OutputFormat::Raw,
    };
    let cluster_name = match get("cluster_name", &["cluster_name", "cluster"]) {
        Some(raw) if raw.value.trim().is_empty() || raw.value.chars().any(char::is_control) => {
            return Err(raw.invalid("must be a non-empty name without control characters"));
        }
        Some(raw) => Some(raw.value),
        None => None,
    };

    let persistence_path = match get("persistence_path", &["persistence_path"]) {
        Some(raw) if raw.value.trim().is_empty() => {
            return Err(raw.invalid("must be a directory path"));
        }
        Some(raw) => PathBuf::from(raw.value),
        None => PathBuf::from(defaults::PERSISTENCE_PATH),
    };
    let filter_capacity = match get("filter_capacity", &["filter_capacity"]) {
        Some(raw) => raw.parse(|v| parse::whole(v, 1_000, 1_000_000_000))?,
        None => defaults::FILTER_CAPACITY,
    };
    let filter_error_rate = match get("filter_error_rate", &["filter_error_rate"]) {
        Some(raw) => raw.parse(parse::rate)?,
        None => defaults::FILTER_ERROR_RATE,
    };
    let generations = match get("generations", &["generations", "batch_count"]) {
        Some(raw) => raw.parse(|v| parse::whole(v, 1, 100))? as usize,
        None => defaults::GENERATIONS,
    };
    let rotation_interval = match get(
        "rotation_interval",
        &["rotation_interval", "batch_duration_sec"],
    ) {
        Some(raw) => raw.parse(|v| parse::seconds(v, 1.0, 365.0 * 86_400.0))?,
        None => defaults::ROTATION_INTERVAL,
    };
    let sync_interval = match get("sync_interval", &["sync_interval"]) {
        Some(raw) => raw.parse(|v| parse::seconds(v, 0.01, 3600.0))?,
        None => defaults::SYNC_INTERVAL,
    };
    let batch_size = match get("batch_size", &["batch_size"]) {
        Some(raw) => raw.parse(|v| parse::whole(v, 1, 1_000_000))? as usize,
        None => defaults::BATCH_SIZE,
    };
    let batch_interval = match get("batch_interval", &["batch_interval"]) {
        Some(raw) => raw.parse(|v| parse::seconds(v, 0.001, 3600.0))?,
        None => defaults::BATCH_INTERVAL,
    };
    let batch_max_bytes = match get("batch_max_bytes", &["batch_max_bytes"]) {
        Some(raw) => raw.parse(|v| parse::whole(v, 1024, 1 << 30))? as usize,
        None => defaults::BATCH_MAX_BYTES,
    };
    let shutdown_timeout = match get("shutdown_timeout", &["shutdown_timeout"]) {
        Some(raw) => raw.parse(|v| parse::seconds(v, 0.0, 3600.0))?,
        None => defaults::SHUTDOWN_TIMEOUT,
    };
    let log_filter = match get("log_level", &["log_level"]) {
        Some(raw) => raw.parse(parse::log_filter)?,
        None => defaults::LOG_LEVEL.to_string(),
    };
    let log_format = match get("log_format", &["log_format"]) {
        Some(raw) => match raw.parse(|v| parse::one_of(v, &["text", "json"]))? {
            "json" => LogFormat::Json,
            _ => LogFormat::Text,
        },
        None => LogFormat::Text,
    };
    let listen = match get("listen", &["listen"]) {
        Some(raw) => raw.parse(parse::listen)?,
        // The variable every pod gets from the kubelet.
        None => default_listen(std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()),
    };
    let metrics_by_reason = match get("metrics_by_reason", &["metrics_by_reason"]) {
        Some(raw) => raw.parse(parse::boolean)?,
        None => false,
    };
    let s3 = s3_settings(&get)?;
    if sinks.contains(&SinkConfig::S3) && s3.bucket.is_none() {
        return Err(ConfigError::Conflict(
            "the s3 sink needs a bucket: set --s3-bucket, KUBE_EVENT_PIPE_S3_BUCKET or aws_bucket in the config file".into(),
        ));
    }

    let enrich = match get("enrich", &["enrich"]) {
        Some(raw) => raw.parse(parse::boolean)?,
        None => false,
    };
    let enrich = if enrich {
        if !matches!(source, SourceConfig::Kube(_)) {
            return Err(ConfigError::Conflict(
                "--enrich looks objects up in the cluster, so it needs --source kube".into(),
            ));
        }
        Some(enrich_config(&get)?)
    } else {
        None
    };

    let dead_letter_dir = delivery::dead_letter_dir(&get)?;
    let refused_retry_interval = match get("refused_retry_interval", &["refused_retry_interval"]) {
        Some(raw) => raw.parse(|v| parse::seconds(v, 0.1, 3600.0))?,
        None => defaults::REFUSED_RETRY_INTERVAL,
    };

    Ok(Config {
        source,
        emit_deleted,
        sinks,
        format,
        cluster_name,
        persistence_path,
        filter_capacity,
        filter_error_rate,
        generations,
        rotation_interval,
        sync_interval,
        batch_size,
        batch_interval,
        batch_max_bytes,
        shutdown_timeout,
        log_filter,
        log_format,
        listen,
        metrics_by_reason,
        s3,
        enrich,
        dead_letter_dir,
        refused_retry_interval,
    })
}

fn enrich_config(get: &impl Fn(&str, &[&str]) -> Option<Raw>) -> Result<EnrichConfig, ConfigError> {
    let d = EnrichConfig::default();
    Ok(EnrichConfig {
        labels: match get("enrich_labels", &["enrich_labels"]) {
            Some(raw) => raw.parse(parse::globs)?,
            None => d.labels,
        },
        annotations: match get("enrich_annotations", &["enrich_annotations"]) {
            Some(raw) => raw.parse(parse::globs)?,
            None => d.annotations,
        },
        max_bytes: match get("enrich_max_bytes", &["enrich_max_bytes"]) {
            Some(raw) => raw.parse(|v| parse::whole(v, 0, 1 << 20))? as usize,
            None => d.max_bytes,
        },
        timeout: match get("enrich_timeout", &["enrich_timeout"]) {
            Some(raw) => raw.parse(|v| parse::seconds(v, 0.01, 60.0))?,
            None => d.timeout,
        },
        cache_ttl: match get("enrich_cache_ttl", &["enrich_cache_ttl"]) {
            Some(raw) => raw.parse(|v| parse::seconds(v, 1.0, 86_400.0))?,
            None => d.cache_ttl,
        },
        cache_entries: match get("enrich_cache_size", &["enrich_cache_size"]) {
            Some(raw) => raw.parse(|v| parse::whole(v, 1, 10_000_000))?,
            None => d.cache_entries,
        },
        concurrency: match get("enrich_concurrency", &["enrich_concurrency"]) {
            Some(raw) => raw.parse(|v| parse::whole(v, 1, 10_000))? as usize,
            None => d.concurrency,
        },
    })
}

fn s3_settings(get: &impl Fn(&str, &[&str]) -> Option<Raw>) -> Result<S3Settings, ConfigError> {
    let sse = match get("s3_sse", &["s3_sse"]) {
        Some(raw) => Some(
            match raw.parse(|v| parse::one_of(v, &["AES256", "aws:kms"]))? {
                "AES256" => Sse::S3,
                _ => Sse::Kms { key_id: None },
            },
        ),
        None => None,
    };
    let sse = match (sse, get("s3_sse_kms_key_id", &["s3_sse_kms_key_id"])) {
        (Some(Sse::Kms { .. }), Some(raw)) if !raw.value.trim().is_empty() => Some(Sse::Kms {
            key_id: Some(raw.value.trim().to_string()),
        }),
        (_, Some(raw)) => return Err(raw.invalid("needs --s3-sse aws:kms")),
        (sse, None) => sse,
    };
    let prefix = match get("prefix", &["prefix", "s3_prefix"]) {
        Some(raw) => {
            let trimmed = raw.value.trim_matches('/');
            if trimmed.chars().any(char::is_control) || trimmed.split('/').any(|s| s == "..") {
                return Err(raw.invalid("must be a key prefix without control characters or .."));
            }
            (!trimmed.is_empty()).then(|| trimmed.to_string())
        }
        None => None,
    };
    Ok(S3Settings {
        uid: get("uid", &["uid"])
            .map(|r| r.parse(parse::uid))
            .transpose()?,
        prefix,
        bucket: get("aws_bucket", &["aws_bucket", "s3_bucket"])
            .map(|r| r.parse(parse::bucket))
            .transpose()?,
        connection: S3Connection {
            region: get("aws_region", &["aws_region"])
                .map(|r| r.parse(parse::region))
                .transpose()?,
            profile: get("aws_profile", &["aws_profile"]).map(|r| r.value),
            endpoint: get("s3_endpoint", &["s3_endpoint"])
                .map(|r| r.parse(parse::endpoint))
                .transpose()?,
            force_path_style: match get("s3_force_path_style", &["s3_force_path_style"]) {
                Some(raw) => raw.parse(parse::boolean)?,
                None => false,
            },
            timeout: match get("s3_timeout", &["s3_timeout"]) {
                Some(raw) => raw.parse(|v| parse::seconds(v, 0.1, 3600.0))?,
                None => defaults::S3_TIMEOUT,
            },
        },
        format: match get("s3_format", &["s3_format"]) {
            Some(raw) => match raw.parse(|v| parse::one_of(v, &["jsonl", "protobuf"]))? {
                "protobuf" => ObjectFormat::Protobuf,
                _ => ObjectFormat::Jsonl,
            },
            None => ObjectFormat::Jsonl,
        },
        storage_class: get("s3_storage_class", &["s3_storage_class"])
            .map(|r| r.parse(|v| parse::one_of(v, STORAGE_CLASSES).map(str::to_string)))
            .transpose()?,
        sse,
    })
}

/// The storage classes S3 accepts on a PUT.
const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
    "EXPRESS_ONEZONE",
];

/// Validates the S3 options of `decode`, with the same rules and messages as the run options.
pub fn decode_connection(args: &DecodeArgs) -> Result<S3Connection, ConfigError> {
    let flag = |name: &str, value: &str| Raw {
        name: format!("--{name}"),
        value: value.to_string(),
        origin: Origin::Flag,
    };
    Ok(S3Connection {
        region: args
            .aws_region
            .as_deref()
            .map(|v| flag("aws-region", v).parse(parse::region))
            .transpose()?,
        profile: args.aws_profile.clone(),
        endpoint: args
            .s3_endpoint
            .as_deref()
            .map(|v| flag("s3-endpoint", v).parse(parse::endpoint))
            .transpose()?,
        force_path_style: match args.s3_force_path_style.as_deref() {
            Some(v) => flag("s3-force-path-style", v).parse(parse::boolean)?,
            None => false,
        },
        timeout: defaults::S3_TIMEOUT,
    })
}

fn kube_config(
    get: &impl Fn(&str, &[&str]) -> Option<Raw>,
    kubeconfig: Option<PathBuf>,
) -> Result<KubeConfig, ConfigError> {
    let defaults = KubeConfig::default();
    let text = |raw: Raw| -> Result<String, ConfigError> {
        let trimmed = raw.value.trim();
        if trimmed.is_empty() || trimmed.chars().any(char::is_control) {
            return Err(raw.invalid("must be non-empty, without control characters"));
        }
        Ok(trimmed.to_string())
    };
    Ok(KubeConfig {
        kubeconfig,
        context: get("context", &["context"]).map(text).transpose()?,
        namespaces: match get("namespace", &["namespace", "namespaces"]) {
            Some(raw) => raw.parse(parse::namespaces)?,
            None => Vec::new(),
        },
        field_selector: get("field_selector", &["field_selector"])
            .map(text)
            .transpose()?,
        label_selector: get("label_selector", &["label_selector"])
            .map(text)
            .transpose()?,
        list_page_size: match get("list_page_size", &["list_page_size"]) {
            Some(raw) => raw.parse(|v| parse::whole(v, 1, 100_000))? as u32,
            None => defaults.list_page_size,
        },
        watch_timeout: match get("watch_timeout", &["watch_timeout"]) {
            Some(raw) => raw.parse(|v| parse::seconds(v, 1.0, 1800.0))?,
            None => defaults.watch_timeout,
        },
        initial_list: match get("initial_list", &["initial_list"]) {
            Some(raw) => match raw.parse(|v| parse::one_of(v, &["auto", "stream", "paginate"]))? {
                "stream" => InitialList::Stream,
                "paginate" => InitialList::Paginate,
                _ => InitialList::Auto,
            },
            None => defaults.initial_list,
        },
    })
}

#[cfg(test)]
mod tests;
