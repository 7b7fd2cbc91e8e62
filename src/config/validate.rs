//! Validation: every option looked up through the layers, checked, and turned into a typed
//! [`Config`]; a rejected value names itself, where it came from and what is accepted.

use std::path::PathBuf;

use clap::ArgMatches;

use super::file::FileLayer;
use super::layers::{Layers, Origin, Raw};
use super::{
    Cli, Config, ConfigError, DecodeArgs, EnrichConfig, InitialList, KubeConfig, LogFormat,
    ObjectFormat, OutputFormat, ReplayInput, S3Connection, S3Settings, SinkConfig, SourceConfig,
    Sse, default_listen, defaults, delivery, kafka, parse,
};

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

    let ha = super::ha::settings(&get, &source)?;

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
        ha,
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
