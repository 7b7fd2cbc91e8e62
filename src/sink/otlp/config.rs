//! The OTLP sink's settings, defaults and validation.

use std::time::Duration;

use crate::config::{ConfigError, Get, parse};
use crate::sink::transport::config::{self as http, Compression, HeaderSpec, TlsFiles};

/// `--otlp-compression`: gzip, as OTLP exporters do; event batches shrink over tenfold.
pub const COMPRESSION: &str = "gzip";
/// `--otlp-body`: the message, as the Collector's `k8s_events` receiver writes it.
pub const BODY: &str = "message";

/// What an OTLP log record's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpBody {
    /// The Event's `message`, as the Collector's `k8s_events` receiver writes it. Default.
    #[default]
    Message,
    /// The whole line as the file sink writes it, for lossless archives.
    Event,
}

/// The OTLP logs sink (OTLP/HTTP, protobuf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The collector's base URL; `/v1/logs` is appended unless the path already ends with it.
    pub endpoint: String,
    pub headers: Vec<HeaderSpec>,
    pub tls: TlsFiles,
    /// Default gzip, as OTLP exporters do: event batches shrink about tenfold.
    pub compression: Compression,
    /// Per request, connection included. Default 10 s, the OTLP exporters' default.
    pub timeout: Duration,
    pub body: OtlpBody,
}

/// Why `--sink otlp` cannot be used without an endpoint.
pub const MISSING: &str = "the otlp sink needs an endpoint: set --otlp-endpoint, KUBE_EVENT_PIPE_OTLP_ENDPOINT or otlp_endpoint in the config file";

/// The OTLP settings when an endpoint is given (validated whether or not the sink is on, so a
/// typo is caught before it is switched on).
pub(crate) fn settings(get: &Get<'_>) -> Result<Option<OtlpSettings>, ConfigError> {
    let endpoint = get("otlp_endpoint", &["otlp_endpoint"])
        .map(|raw| raw.parse(http::url))
        .transpose()?;
    let headers = http::headers(get("otlp_header", &["otlp_header", "otlp_headers"]))?;
    let tls = http::tls(get, "otlp")?;
    let compression =
        http::compression(get("otlp_compression", &["otlp_compression"]), COMPRESSION)?;
    let timeout = http::timeout(get("otlp_timeout", &["otlp_timeout"]))?;
    let body = match get("otlp_body", &["otlp_body"]) {
        Some(raw) => raw.parse(|v| parse::one_of(v, &["message", "event"]))?,
        None => BODY,
    };
    let body = match body {
        "event" => OtlpBody::Event,
        _ => OtlpBody::Message,
    };
    Ok(endpoint.map(|endpoint| OtlpSettings {
        endpoint,
        headers,
        tls,
        compression,
        timeout,
        body,
    }))
}
