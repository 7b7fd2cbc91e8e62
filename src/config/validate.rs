//! Validation: every option looked up through the layers, checked, and turned into a typed
//! [`Config`]; a rejected value names itself, where it came from and what is accepted.

use std::path::PathBuf;
use std::time::Duration;

use clap::ArgMatches;

use super::file::FileLayer;
use super::layers::{Get, Layers, Raw};
use super::{
    Cli, Config, ConfigError, EnrichConfig, InitialList, KubeConfig, LogFormat, OutputFormat,
    ReplayInput, SourceConfig, default_listen, defaults, parse,
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
    assemble(&|id: &str, keys: &[&str]| layers.get(id, keys))
}

/// The configuration from the layers, each option checked in the order written here (so that
/// of several bad values the same one is always reported first).
fn assemble(get: &Get<'_>) -> Result<Config, ConfigError> {
    let one = |id: &str| get(id, &[id]);
    let source = source(get)?;
    let emit_deleted = or(one("emit_deleted"), false, parse::boolean)?;
    let (sinks, s3) = super::sinks::sinks(get)?;
    let format = match one("format") {
        Some(raw) => match raw.parse(|v| parse::one_of(v, &["raw", "eventrouter"]))? {
            "eventrouter" => OutputFormat::Eventrouter,
            _ => OutputFormat::Raw,
        },
        None => OutputFormat::Raw,
    };
    let cluster_name = cluster_name(get("cluster_name", &["cluster_name", "cluster"]))?;
    let persistence_path = persistence_path(one("persistence_path"))?;
    let filter = filter(get)?;
    let batching = batching(get)?;
    let ops = operations(get, &source)?;
    Ok(Config {
        source,
        emit_deleted,
        sinks,
        format,
        cluster_name,
        persistence_path,
        filter_capacity: filter.capacity,
        filter_error_rate: filter.error_rate,
        generations: filter.generations,
        rotation_interval: filter.rotation_interval,
        sync_interval: filter.sync_interval,
        batch_size: batching.size,
        batch_interval: batching.interval,
        batch_max_bytes: batching.max_bytes,
        shutdown_timeout: batching.shutdown_timeout,
        log_filter: ops.log_filter,
        log_format: ops.log_format,
        listen: ops.listen,
        metrics_by_reason: ops.metrics_by_reason,
        s3,
        enrich: ops.enrich,
        dead_letter_dir: ops.dead_letter_dir,
        refused_retry_interval: ops.refused_retry_interval,
        ha: ops.ha,
    })
}

/// An option's value, or `default` when it is not given.
fn or<T>(
    raw: Option<Raw>,
    default: T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match raw {
        Some(raw) => raw.parse(parse),
        None => Ok(default),
    }
}

fn cluster_name(raw: Option<Raw>) -> Result<Option<String>, ConfigError> {
    match raw {
        Some(raw) if raw.value.trim().is_empty() || raw.value.chars().any(char::is_control) => {
            Err(raw.invalid("must be a non-empty name without control characters"))
        }
        Some(raw) => Ok(Some(raw.value)),
        None => Ok(None),
    }
}

fn persistence_path(raw: Option<Raw>) -> Result<PathBuf, ConfigError> {
    match raw {
        Some(raw) if raw.value.trim().is_empty() => Err(raw.invalid("must be a directory path")),
        Some(raw) => Ok(PathBuf::from(raw.value)),
        None => Ok(PathBuf::from(defaults::PERSISTENCE_PATH)),
    }
}

/// The filter ring's options.
struct Filter {
    capacity: u64,
    error_rate: f64,
    generations: usize,
    rotation_interval: Duration,
    sync_interval: Duration,
}

fn filter(get: &Get<'_>) -> Result<Filter, ConfigError> {
    let one = |id: &str| get(id, &[id]);
    Ok(Filter {
        capacity: or(one("filter_capacity"), defaults::FILTER_CAPACITY, |v| {
            parse::whole(v, 1_000, 1_000_000_000)
        })?,
        error_rate: or(
            one("filter_error_rate"),
            defaults::FILTER_ERROR_RATE,
            parse::rate,
        )?,
        generations: or(
            get("generations", &["generations", "batch_count"]),
            defaults::GENERATIONS,
            |v| parse::whole(v, 1, 100).map(|n| n as usize),
        )?,
        rotation_interval: or(
            get(
                "rotation_interval",
                &["rotation_interval", "batch_duration_sec"],
            ),
            defaults::ROTATION_INTERVAL,
            |v| parse::seconds(v, 1.0, 365.0 * 86_400.0),
        )?,
        sync_interval: or(one("sync_interval"), defaults::SYNC_INTERVAL, |v| {
            parse::seconds(v, 0.01, 3600.0)
        })?,
    })
}

/// The batcher's bounds and the shutdown's.
struct Batching {
    size: usize,
    interval: Duration,
    max_bytes: usize,
    shutdown_timeout: Duration,
}

fn batching(get: &Get<'_>) -> Result<Batching, ConfigError> {
    let one = |id: &str| get(id, &[id]);
    Ok(Batching {
        size: or(one("batch_size"), defaults::BATCH_SIZE, |v| {
            parse::whole(v, 1, 1_000_000).map(|n| n as usize)
        })?,
        interval: or(one("batch_interval"), defaults::BATCH_INTERVAL, |v| {
            parse::seconds(v, 0.001, 3600.0)
        })?,
        max_bytes: or(one("batch_max_bytes"), defaults::BATCH_MAX_BYTES, |v| {
            parse::whole(v, 1024, 1 << 30).map(|n| n as usize)
        })?,
        shutdown_timeout: or(one("shutdown_timeout"), defaults::SHUTDOWN_TIMEOUT, |v| {
            parse::seconds(v, 0.0, 3600.0)
        })?,
    })
}

/// Logging, the listener, enrichment, refusals and leader election.
struct Operations {
    log_filter: String,
    log_format: LogFormat,
    listen: Option<std::net::SocketAddr>,
    metrics_by_reason: bool,
    enrich: Option<EnrichConfig>,
    dead_letter_dir: Option<PathBuf>,
    refused_retry_interval: Duration,
    ha: Option<super::HaConfig>,
}

fn operations(get: &Get<'_>, source: &SourceConfig) -> Result<Operations, ConfigError> {
    let one = |id: &str| get(id, &[id]);
    Ok(Operations {
        log_filter: or(
            one("log_level"),
            defaults::LOG_LEVEL.to_string(),
            parse::log_filter,
        )?,
        log_format: match one("log_format") {
            Some(raw) => match raw.parse(|v| parse::one_of(v, &["text", "json"]))? {
                "json" => LogFormat::Json,
                _ => LogFormat::Text,
            },
            None => LogFormat::Text,
        },
        listen: match one("listen") {
            Some(raw) => raw.parse(parse::listen)?,
            // The variable every pod gets from the kubelet.
            None => default_listen(std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()),
        },
        metrics_by_reason: or(one("metrics_by_reason"), false, parse::boolean)?,
        enrich: enrich(get, source)?,
        dead_letter_dir: one("dead_letter_dir")
            .map(|raw| raw.parse(parse::path))
            .transpose()?,
        refused_retry_interval: or(
            one("refused_retry_interval"),
            defaults::REFUSED_RETRY_INTERVAL,
            |v| parse::seconds(v, 0.1, 3600.0),
        )?,
        ha: super::ha::settings(&get, source)?,
    })
}

/// `--enrich`, which looks objects up in the cluster and so needs the kube source.
fn enrich(get: &Get<'_>, source: &SourceConfig) -> Result<Option<EnrichConfig>, ConfigError> {
    if !or(get("enrich", &["enrich"]), false, parse::boolean)? {
        return Ok(None);
    }
    if !matches!(source, SourceConfig::Kube(_)) {
        return Err(ConfigError::Conflict(
            "--enrich looks objects up in the cluster, so it needs --source kube".into(),
        ));
    }
    enrich_config(get).map(Some)
}

/// `--source`: the cluster, or a replayed file (or stdin).
fn source(get: &Get<'_>) -> Result<SourceConfig, ConfigError> {
    let source_kind = match get("source", &["source"]) {
        Some(raw) => raw.parse(|v| parse::one_of(v, &["kube", "replay"]))?,
        None => defaults::SOURCE,
    };
    let replay = get("replay_file", &["replay_file"]);
    let kubeconfig = get("kubeconfig", &["kubeconfig"]).map(|r| PathBuf::from(r.value));
    Ok(match source_kind {
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
        _ => SourceConfig::Kube(kube_config(get, kubeconfig)?),
    })
}

fn enrich_config(get: &Get<'_>) -> Result<EnrichConfig, ConfigError> {
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

fn kube_config(get: &Get<'_>, kubeconfig: Option<PathBuf>) -> Result<KubeConfig, ConfigError> {
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
