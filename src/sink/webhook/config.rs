//! The webhook sink's settings, defaults and validation.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ConfigError, Get, parse};
use crate::sink::transport::config::{self as http, Compression, HeaderSpec, TlsFiles};

/// `--http-format`: the lines stdout gets.
pub const FORMAT: &str = "ndjson";
/// `--http-compression`: many webhook receivers take only plain bodies.
pub const COMPRESSION: &str = "none";

/// How the webhook sink lays out a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// One event per line (`application/x-ndjson`): exactly the lines the file sink writes.
    Ndjson,
    /// One JSON array of the events (`application/json`).
    Json,
}

/// The HTTP webhook sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub url: String,
    pub format: WebhookFormat,
    pub headers: Vec<HeaderSpec>,
    /// Sent as `Authorization: Bearer <content>`, read again when the file changes.
    pub bearer_token_file: Option<PathBuf>,
    pub tls: TlsFiles,
    /// Default none: many webhook receivers do not accept a compressed body.
    pub compression: Compression,
    /// Per request, connection included. Default 10 s.
    pub timeout: Duration,
}

/// Why `--sink http` cannot be used without a URL.
pub const MISSING: &str = "the http sink needs a URL: set --http-url, KUBE_EVENT_PIPE_HTTP_URL or http_url in the config file";

/// The webhook settings when a URL is given.
pub(crate) fn settings(get: &Get<'_>) -> Result<Option<WebhookSettings>, ConfigError> {
    let url_value = get("http_url", &["http_url"])
        .map(|raw| raw.parse(http::url))
        .transpose()?;
    let format = match get("http_format", &["http_format"]) {
        Some(raw) => raw.parse(|v| parse::one_of(v, &["ndjson", "json"]))?,
        None => FORMAT,
    };
    let format = match format {
        "json" => WebhookFormat::Json,
        _ => WebhookFormat::Ndjson,
    };
    let headers = http::headers(get("http_header", &["http_header", "http_headers"]))?;
    let bearer_token_file = get("http_bearer_token_file", &["http_bearer_token_file"])
        .map(|raw| raw.parse(parse::path))
        .transpose()?;
    let tls = http::tls(get, "http")?;
    let compression =
        http::compression(get("http_compression", &["http_compression"]), COMPRESSION)?;
    let timeout = http::timeout(get("http_timeout", &["http_timeout"]))?;
    Ok(url_value.map(|url| WebhookSettings {
        url,
        format,
        headers,
        bearer_token_file,
        tls,
        compression,
        timeout,
    }))
}
