//! The command line as typed: raw strings, each with its environment variable.
//!
//! Values stay strings here so that validation (in `config::build`) can say where each one came
//! from (flag, environment or config file) and the file layer can sit between the environment and
//! the defaults, which clap alone cannot express.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kube-event-pipe",
    version,
    about = "Delivers every Kubernetes Event occurrence once, as JSON lines, with deduplication that survives restarts",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show each filter generation: age, inserted keys, fill and estimated false-positive rate.
    Inspect(InspectArgs),
    /// Print an object the S3 sink wrote (gzip of JSON lines or protobuf) as JSON lines.
    Decode(DecodeArgs),
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// A local object, or `-` for stdin.
    #[arg(
        value_name = "FILE|-",
        required_unless_present = "s3",
        conflicts_with = "s3"
    )]
    pub input: Option<String>,
    /// Read the object from S3 instead: `s3://bucket/key`.
    #[arg(long, value_name = "s3://BUCKET/KEY")]
    pub s3: Option<String>,
    /// AWS region of the bucket.
    #[arg(long, env = "AWS_REGION", value_name = "REGION")]
    pub aws_region: Option<String>,
    /// AWS shared-config profile.
    #[arg(long, env = "AWS_PROFILE", value_name = "PROFILE")]
    pub aws_profile: Option<String>,
    /// Endpoint URL of an S3-compatible store.
    #[arg(long, env = "KUBE_EVENT_PIPE_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible stores want.
    #[arg(long, env = "KUBE_EVENT_PIPE_S3_FORCE_PATH_STYLE", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub s3_force_path_style: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Directory holding the filter generations.
    #[arg(long, env = "KUBE_EVENT_PIPE_PERSISTENCE_PATH", default_value = super::defaults::PERSISTENCE_PATH)]
    pub persistence_path: std::path::PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of the main job. Defaults live in `config::build`, not here, so that a config file
/// can supply a value that neither a flag nor the environment set.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (JSON or YAML); also accepts k8stream's keys. Flags and environment win over it.
    #[arg(long, env = "KUBE_EVENT_PIPE_CONFIG", value_name = "FILE")]
    pub config: Option<String>,

    /// Where events come from: `kube` (watch the cluster) or `replay` (JSON from a file or stdin).
    #[arg(long, env = "KUBE_EVENT_PIPE_SOURCE", value_name = "kube|replay")]
    pub source: Option<String>,
    /// Replay input: a path, or `-` for stdin. Watch envelopes, bare Events or an EventList.
    #[arg(long, env = "KUBE_EVENT_PIPE_REPLAY_FILE", value_name = "PATH|-")]
    pub replay_file: Option<String>,
    /// Also emit DELETED events (TTL expiry), which are not occurrences. Default: false.
    #[arg(long, env = "KUBE_EVENT_PIPE_EMIT_DELETED", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub emit_deleted: Option<String>,

    /// Output: `-` for stdout, else a file appended to (reopened on SIGHUP or when moved).
    #[arg(long, env = "KUBE_EVENT_PIPE_DESTINATION", value_name = "PATH|-")]
    pub destination: Option<String>,
    /// Line format: `raw` (the Event as received) or `eventrouter` (verb, event, old_event).
    #[arg(long, env = "KUBE_EVENT_PIPE_FORMAT", value_name = "raw|eventrouter")]
    pub format: Option<String>,
    /// Adds a top-level `cluster` field to every line. Default: none, lines untouched.
    #[arg(long, env = "KUBE_EVENT_PIPE_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// fdatasync the output file before its events count as delivered. Default: true.
    #[arg(long, env = "KUBE_EVENT_PIPE_FILE_FSYNC", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub file_fsync: Option<String>,

    /// Directory for the filter generations (a persistent volume in production). Default: `.`.
    #[arg(long, env = "KUBE_EVENT_PIPE_PERSISTENCE_PATH", value_name = "DIR")]
    pub persistence_path: Option<String>,
    /// Keys per filter generation before it rotates. Default: 1_000_000.
    #[arg(long, env = "KUBE_EVENT_PIPE_FILTER_CAPACITY", value_name = "N")]
    pub filter_capacity: Option<String>,
    /// Target false-positive rate per generation; a false positive drops a real event. Default: 0.000001.
    #[arg(long, env = "KUBE_EVENT_PIPE_FILTER_ERROR_RATE", value_name = "RATE")]
    pub filter_error_rate: Option<String>,
    /// Filter generations kept; memory of delivered events spans about this many rotations. Default: 3.
    #[arg(long, env = "KUBE_EVENT_PIPE_BATCH_COUNT", value_name = "N")]
    pub generations: Option<String>,
    /// Seconds before a new filter generation starts. Default: 3600.
    #[arg(long, env = "KUBE_EVENT_PIPE_BATCH_DURATION_SEC", value_name = "SECS")]
    pub rotation_interval: Option<String>,
    /// Seconds between synchronous flushes of the filters to disk. Default: 5.
    #[arg(long, env = "KUBE_EVENT_PIPE_SYNC_INTERVAL_SEC", value_name = "SECS")]
    pub sync_interval: Option<String>,

    /// Events per batch written, flushed and committed together. Default: 500.
    #[arg(long, env = "KUBE_EVENT_PIPE_BATCH_SIZE", value_name = "N")]
    pub batch_size: Option<String>,
    /// Longest wait (seconds, fractions allowed) before a partial batch is flushed. Default: 1.
    #[arg(long, env = "KUBE_EVENT_PIPE_BATCH_INTERVAL", value_name = "SECS")]
    pub batch_interval: Option<String>,
    /// Closes a batch once its encoded lines reach this many bytes. Default: 8388608 (8 MiB).
    #[arg(long, env = "KUBE_EVENT_PIPE_BATCH_MAX_BYTES", value_name = "BYTES")]
    pub batch_max_bytes: Option<String>,
    /// Seconds to wait for in-flight events to be delivered on shutdown. Default: 30.
    #[arg(
        long,
        env = "KUBE_EVENT_PIPE_SHUTDOWN_TIMEOUT_SEC",
        value_name = "SECS"
    )]
    pub shutdown_timeout: Option<String>,

    /// DEBUG, INFO, WARNING, ERROR, CRITICAL (any case), or tracing directives that each name a level, such as `kube_event_pipe=debug,kube=warn`. Default: INFO.
    #[arg(long, env = "KUBE_EVENT_PIPE_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format on stderr: `text` or `json`. Default: text.
    #[arg(long, env = "KUBE_EVENT_PIPE_LOG_FORMAT", value_name = "text|json")]
    pub log_format: Option<String>,

    /// Address of the /metrics, /healthz and /readyz listener, or `off`. Port 0 picks a free port (logged). Default: 0.0.0.0:9090 in a pod, off elsewhere.
    #[arg(long, env = "KUBE_EVENT_PIPE_LISTEN", value_name = "ADDR|off")]
    pub listen: Option<String>,
    /// Count delivered events by type and reason in /metrics (one series per reason: mind the cardinality). Default: false.
    #[arg(long, env = "KUBE_EVENT_PIPE_METRICS_BY_REASON", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub metrics_by_reason: Option<String>,

    /// Kubeconfig for the `kube` source. Default: KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<String>,
    /// Kubeconfig context to use. Default: the kubeconfig's current context.
    #[arg(long, env = "KUBE_EVENT_PIPE_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// Namespaces to watch, repeated or comma separated (one watch each). Default: all namespaces.
    #[arg(long, env = "KUBE_EVENT_PIPE_NAMESPACE", value_name = "NS[,NS…]",
          action = clap::ArgAction::Append)]
    pub namespace: Vec<String>,
    /// Field selector on the events, e.g. `type=Warning` or `involvedObject.kind=Pod`.
    #[arg(long, env = "KUBE_EVENT_PIPE_FIELD_SELECTOR", value_name = "SELECTOR")]
    pub field_selector: Option<String>,
    /// Label selector on the events, e.g. `team=payments`.
    #[arg(long, env = "KUBE_EVENT_PIPE_LABEL_SELECTOR", value_name = "SELECTOR")]
    pub label_selector: Option<String>,
    /// Events per page of the initial list (and of every relist). Default: 500.
    #[arg(long, env = "KUBE_EVENT_PIPE_LIST_PAGE_SIZE", value_name = "N")]
    pub list_page_size: Option<String>,
    /// Seconds a watch request asks the API server to keep it open. Default: 290.
    #[arg(long, env = "KUBE_EVENT_PIPE_WATCH_TIMEOUT_SEC", value_name = "SECS")]
    pub watch_timeout: Option<String>,
    /// How the state is read before watching: `stream` (a streaming list, WatchList), `paginate`
    /// (pages of --list-page-size), or `auto` (stream, else pages). Default: auto.
    #[arg(
        long,
        env = "KUBE_EVENT_PIPE_INITIAL_LIST",
        value_name = "auto|stream|paginate"
    )]
    pub initial_list: Option<String>,
    /// Add the involved object's labels, annotations and owner, and the node, under `enrichment`.
    /// Needs `get` on the kinds looked up (deploy/kustomize/components/enrichment). Default: false.
    #[arg(long, env = "KUBE_EVENT_PIPE_ENRICH", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub enrich: Option<String>,
    /// Label keys to copy, comma-separated globs. Default: `*`.
    #[arg(long, env = "KUBE_EVENT_PIPE_ENRICH_LABELS", value_name = "GLOBS")]
    pub enrich_labels: Option<String>,
    /// Annotation keys to copy, comma-separated globs; empty for none. Default: `*`.
    #[arg(long, env = "KUBE_EVENT_PIPE_ENRICH_ANNOTATIONS", value_name = "GLOBS")]
    pub enrich_annotations: Option<String>,
    /// Cap on the bytes of labels plus annotations added to one event. Default: 4096.
    #[arg(long, env = "KUBE_EVENT_PIPE_ENRICH_MAX_BYTES", value_name = "BYTES")]
    pub enrich_max_bytes: Option<String>,
    /// Seconds an event waits for its lookups before it goes out unenriched. Default: 2.
    #[arg(long, env = "KUBE_EVENT_PIPE_ENRICH_TIMEOUT_SEC", value_name = "SECS")]
    pub enrich_timeout: Option<String>,
    /// Seconds a looked-up object (or its absence) is remembered. Default: 300.
    #[arg(
        long,
        env = "KUBE_EVENT_PIPE_ENRICH_CACHE_TTL_SEC",
        value_name = "SECS"
    )]
    pub enrich_cache_ttl: Option<String>,
    /// Objects remembered at most. Default: 10000.
    #[arg(long, env = "KUBE_EVENT_PIPE_ENRICH_CACHE_SIZE", value_name = "N")]
    pub enrich_cache_size: Option<String>,
    /// Events being enriched at once (each may wait on lookups). Default: 64.
    #[arg(long, env = "KUBE_EVENT_PIPE_ENRICH_CONCURRENCY", value_name = "N")]
    pub enrich_concurrency: Option<String>,
    /// Run as one of several replicas that elect a leader through a Lease: only the leader emits;
    /// a standby follows the stream and takes over with nothing lost. Needs --source kube and
    /// get, create and update on leases (deploy/kustomize/overlays/ha). Default: false.
    #[arg(long, env = "KUBE_EVENT_PIPE_LEADER_ELECT", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: Option<String>,
    /// The Lease the replicas share. Default: kube-event-pipe.
    #[arg(long, env = "KUBE_EVENT_PIPE_LEASE_NAME", value_name = "NAME")]
    pub lease_name: Option<String>,
    /// The Lease's namespace. Default: the pod's own (from its service account), else required.
    #[arg(long, env = "KUBE_EVENT_PIPE_LEASE_NAMESPACE", value_name = "NS")]
    pub lease_namespace: Option<String>,
    /// Seconds a Lease nobody renews stays held: the longest a standby waits after its leader died. Default: 15.
    #[arg(long, env = "KUBE_EVENT_PIPE_LEASE_DURATION_SEC", value_name = "SECS")]
    pub lease_duration: Option<String>,
    /// Seconds a leader keeps emitting without a successful renewal before it steps down. Default: 10.
    #[arg(long, env = "KUBE_EVENT_PIPE_RENEW_DEADLINE_SEC", value_name = "SECS")]
    pub renew_deadline: Option<String>,
    /// Seconds between renewals, and between a standby's attempts to acquire. Default: 2.
    #[arg(long, env = "KUBE_EVENT_PIPE_RETRY_PERIOD_SEC", value_name = "SECS")]
    pub retry_period: Option<String>,
    /// This replica's name in the Lease. Default: POD_NAME, else the hostname.
    #[arg(long, env = "KUBE_EVENT_PIPE_IDENTITY", value_name = "NAME")]
    pub identity: Option<String>,
    /// Event bytes a standby holds for its leader's watermark; past it the standby stops reading until the watermark frees room. Default: 67108864 (64 MiB).
    #[arg(long, env = "KUBE_EVENT_PIPE_STANDBY_MAX_BYTES", value_name = "BYTES")]
    pub standby_max_bytes: Option<String>,
    /// Sinks to deliver to, repeated or comma separated: `stdout`, `file`, `s3`, `kafka`, `otlp`, `http`. Default: from --destination.
    #[arg(long, env = "KUBE_EVENT_PIPE_SINK", value_name = "LIST",
          action = clap::ArgAction::Append)]
    pub sink: Vec<String>,
    /// Identifier of this event stream in object keys (S3). Default: derived from the cluster.
    #[arg(long, env = "KUBE_EVENT_PIPE_UID", value_name = "ID")]
    pub uid: Option<String>,
    /// Object key prefix (S3).
    #[arg(
        long = "s3-prefix",
        env = "KUBE_EVENT_PIPE_S3_PREFIX",
        value_name = "PREFIX"
    )]
    pub prefix: Option<String>,
    /// Bucket for the S3 sink.
    #[arg(
        long = "s3-bucket",
        env = "KUBE_EVENT_PIPE_S3_BUCKET",
        value_name = "BUCKET"
    )]
    pub aws_bucket: Option<String>,
    /// AWS region for the S3 sink.
    #[arg(long, env = "AWS_REGION", value_name = "REGION")]
    pub aws_region: Option<String>,
    /// AWS shared-config profile for the S3 sink.
    #[arg(long, env = "AWS_PROFILE", value_name = "PROFILE")]
    pub aws_profile: Option<String>,
    /// Endpoint URL of an S3-compatible store (MinIO, Ceph, R2…). Default: AWS.
    #[arg(long, env = "KUBE_EVENT_PIPE_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible stores want. Default: false.
    #[arg(long, env = "KUBE_EVENT_PIPE_S3_FORCE_PATH_STYLE", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub s3_force_path_style: Option<String>,
    /// Longest one upload attempt may take before it fails, is logged and retried (0.1 to 3600, fractions allowed). Default: 30.
    #[arg(long, env = "KUBE_EVENT_PIPE_S3_TIMEOUT_SEC", value_name = "SECS")]
    pub s3_timeout: Option<String>,
    /// Object format: `jsonl` (the lines stdout gets) or `protobuf`, gzipped either way. Default: jsonl.
    #[arg(long, env = "KUBE_EVENT_PIPE_S3_FORMAT", value_name = "jsonl|protobuf")]
    pub s3_format: Option<String>,
    /// Storage class of new objects, e.g. STANDARD_IA. Default: the bucket's (STANDARD).
    #[arg(long, env = "KUBE_EVENT_PIPE_S3_STORAGE_CLASS", value_name = "CLASS")]
    pub s3_storage_class: Option<String>,
    /// Server-side encryption: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS). Default: the bucket's.
    #[arg(long, env = "KUBE_EVENT_PIPE_S3_SSE", value_name = "AES256|aws:kms")]
    pub s3_sse: Option<String>,
    /// KMS key for `--s3-sse aws:kms`. Default: the account's aws/s3 key.
    #[arg(long, env = "KUBE_EVENT_PIPE_S3_SSE_KMS_KEY_ID", value_name = "KEY")]
    pub s3_sse_kms_key_id: Option<String>,
    /// Bootstrap brokers of the Kafka sink, comma separated (required with `--sink kafka`).
    #[arg(
        long,
        env = "KUBE_EVENT_PIPE_KAFKA_BROKERS",
        value_name = "HOST:PORT[,…]"
    )]
    pub kafka_brokers: Option<String>,
    /// Topic of the Kafka sink (created by the brokers or by you beforehand). Default: kube-events.
    #[arg(long, env = "KUBE_EVENT_PIPE_KAFKA_TOPIC", value_name = "TOPIC")]
    pub kafka_topic: Option<String>,
    /// Compression of Kafka record batches. Default: lz4.
    #[arg(
        long,
        env = "KUBE_EVENT_PIPE_KAFKA_COMPRESSION",
        value_name = "none|gzip|snappy|lz4|zstd"
    )]
    pub kafka_compression: Option<String>,
    /// TLS to the brokers (the system's CAs unless --kafka-tls-ca). Default: on when a TLS file (CA, certificate, key) is given.
    #[arg(long, env = "KUBE_EVENT_PIPE_KAFKA_TLS", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub kafka_tls: Option<String>,
    /// CA certificate(s) (PEM) the brokers' certificates are checked against.
    #[arg(long, env = "KUBE_EVENT_PIPE_KAFKA_TLS_CA", value_name = "FILE")]
    pub kafka_tls_ca: Option<String>,
    /// Client certificate (PEM) for brokers that authenticate clients by certificate.
    #[arg(long, env = "KUBE_EVENT_PIPE_KAFKA_TLS_CERT", value_name = "FILE")]
    pub kafka_tls_cert: Option<String>,
    /// Private key (PEM) of the client certificate.
    #[arg(long, env = "KUBE_EVENT_PIPE_KAFKA_TLS_KEY", value_name = "FILE")]
    pub kafka_tls_key: Option<String>,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. Default: no SASL.
    #[arg(
        long,
        env = "KUBE_EVENT_PIPE_KAFKA_SASL_MECHANISM",
        value_name = "MECHANISM"
    )]
    pub kafka_sasl_mechanism: Option<String>,
    /// SASL user name.
    #[arg(long, env = "KUBE_EVENT_PIPE_KAFKA_SASL_USERNAME", value_name = "NAME")]
    pub kafka_sasl_username: Option<String>,
    /// File holding the SASL password (or set KUBE_EVENT_PIPE_KAFKA_SASL_PASSWORD). Never logged.
    #[arg(
        long,
        env = "KUBE_EVENT_PIPE_KAFKA_SASL_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub kafka_sasl_password_file: Option<String>,
    /// Any other librdkafka producer property, repeatable, e.g. `linger.ms=20`.
    #[arg(long, env = "KUBE_EVENT_PIPE_KAFKA_PROPERTY", value_name = "KEY=VALUE",
          action = clap::ArgAction::Append)]
    pub kafka_property: Vec<String>,

    /// Directory where a batch a sink refuses for good (an HTTP 4xx) is written, fsynced, then committed. Default: none (logged at ERROR and retried slowly).
    #[arg(long, env = "KUBE_EVENT_PIPE_DEAD_LETTER_DIR", value_name = "DIR")]
    pub dead_letter_dir: Option<String>,
    /// Seconds between attempts at a batch a sink refused for good, when there is no dead-letter directory. Default: 30.
    #[arg(long, env = "KUBE_EVENT_PIPE_REFUSED_RETRY_SEC", value_name = "SECS")]
    pub refused_retry_interval: Option<String>,

    /// OTLP/HTTP endpoint of the otlp sink, e.g. http://otel-collector:4318 (`/v1/logs` is appended).
    #[arg(long, env = "KUBE_EVENT_PIPE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Header sent with every export, `NAME=VALUE` or `NAME=@FILE` (read again when the file changes); repeated or comma separated.
    #[arg(long, env = "KUBE_EVENT_PIPE_OTLP_HEADERS", value_name = "NAME=VALUE",
          action = clap::ArgAction::Append)]
    pub otlp_header: Vec<String>,
    /// PEM CA bundle trusted for the OTLP endpoint, besides the system's.
    #[arg(long, env = "KUBE_EVENT_PIPE_OTLP_CA_FILE", value_name = "FILE")]
    pub otlp_ca_file: Option<String>,
    /// PEM client certificate for mutual TLS with the OTLP endpoint; needs the client key too.
    #[arg(long, env = "KUBE_EVENT_PIPE_OTLP_CLIENT_CERT", value_name = "FILE")]
    pub otlp_client_cert: Option<String>,
    /// PEM private key of the OTLP client certificate.
    #[arg(long, env = "KUBE_EVENT_PIPE_OTLP_CLIENT_KEY", value_name = "FILE")]
    pub otlp_client_key: Option<String>,
    /// Export body compression: `gzip` or `none`. Default: gzip.
    #[arg(
        long,
        env = "KUBE_EVENT_PIPE_OTLP_COMPRESSION",
        value_name = "gzip|none"
    )]
    pub otlp_compression: Option<String>,
    /// Seconds one export may take, connection included. Default: 10.
    #[arg(long, env = "KUBE_EVENT_PIPE_OTLP_TIMEOUT_SEC", value_name = "SECS")]
    pub otlp_timeout: Option<String>,
    /// Log record body: `message` (as the Collector's k8s_events receiver) or `event` (the whole line). Default: message.
    #[arg(long, env = "KUBE_EVENT_PIPE_OTLP_BODY", value_name = "message|event")]
    pub otlp_body: Option<String>,

    /// URL the http sink POSTs each batch to.
    #[arg(long, env = "KUBE_EVENT_PIPE_HTTP_URL", value_name = "URL")]
    pub http_url: Option<String>,
    /// Request body: `ndjson` (one event per line) or `json` (an array). Default: ndjson.
    #[arg(long, env = "KUBE_EVENT_PIPE_HTTP_FORMAT", value_name = "ndjson|json")]
    pub http_format: Option<String>,
    /// Header sent with every request, `NAME=VALUE` or `NAME=@FILE`; repeated or comma separated.
    #[arg(long, env = "KUBE_EVENT_PIPE_HTTP_HEADERS", value_name = "NAME=VALUE",
          action = clap::ArgAction::Append)]
    pub http_header: Vec<String>,
    /// File holding a bearer token for `Authorization: Bearer`, read again when it changes.
    #[arg(
        long,
        env = "KUBE_EVENT_PIPE_HTTP_BEARER_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub http_bearer_token_file: Option<String>,
    /// PEM CA bundle trusted for the webhook, besides the system's.
    #[arg(long, env = "KUBE_EVENT_PIPE_HTTP_CA_FILE", value_name = "FILE")]
    pub http_ca_file: Option<String>,
    /// PEM client certificate for mutual TLS with the webhook; needs the client key too.
    #[arg(long, env = "KUBE_EVENT_PIPE_HTTP_CLIENT_CERT", value_name = "FILE")]
    pub http_client_cert: Option<String>,
    /// PEM private key of the webhook client certificate.
    #[arg(long, env = "KUBE_EVENT_PIPE_HTTP_CLIENT_KEY", value_name = "FILE")]
    pub http_client_key: Option<String>,
    /// Request body compression: `gzip` or `none`. Default: none.
    #[arg(
        long,
        env = "KUBE_EVENT_PIPE_HTTP_COMPRESSION",
        value_name = "gzip|none"
    )]
    pub http_compression: Option<String>,
    /// Seconds one request may take, connection included. Default: 10.
    #[arg(long, env = "KUBE_EVENT_PIPE_HTTP_TIMEOUT_SEC", value_name = "SECS")]
    pub http_timeout: Option<String>,
}
