//! Settings of the HTTP sinks (OTLP logs and the webhook) and of the dead-letter directory:
//! their types and their validation from the layers.

use std::path::PathBuf;
use std::time::Duration;

use super::layers::Raw;
use super::{ConfigError, defaults, parse};

/// Where a header's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValueSource {
    /// `K=V`: the value as written.
    Literal(String),
    /// `K=@/path`: the file's content, trimmed, read again whenever the file changes (tokens).
    File(PathBuf),
}

/// One header sent with every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSpec {
    pub name: String,
    pub value: HeaderValueSource,
}

/// TLS files of an HTTP sink. Default: the system's CA certificates, no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM bundle of CA certificates trusted besides the system's (a private CA).
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key for mutual TLS; both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    None,
}

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

type Get<'a> = dyn Fn(&str, &[&str]) -> Option<Raw> + 'a;

/// The OTLP settings when an endpoint is given (validated whether or not the sink is on, so a
/// typo is caught before it is switched on).
pub(super) fn otlp(get: &Get<'_>) -> Result<Option<OtlpSettings>, ConfigError> {
    let endpoint = get("otlp_endpoint", &["otlp_endpoint"])
        .map(|raw| raw.parse(url))
        .transpose()?;
    let headers = headers(get("otlp_header", &["otlp_header", "otlp_headers"]))?;
    let tls = tls(get, "otlp")?;
    let compression = compression(
        get("otlp_compression", &["otlp_compression"]),
        defaults::OTLP_COMPRESSION,
    )?;
    let timeout = timeout(get("otlp_timeout", &["otlp_timeout"]))?;
    let body = match get("otlp_body", &["otlp_body"]) {
        Some(raw) => raw.parse(|v| parse::one_of(v, &["message", "event"]))?,
        None => defaults::OTLP_BODY,
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

/// The webhook settings when a URL is given.
pub(super) fn webhook(get: &Get<'_>) -> Result<Option<WebhookSettings>, ConfigError> {
    let url_value = get("http_url", &["http_url"])
        .map(|raw| raw.parse(url))
        .transpose()?;
    let format = match get("http_format", &["http_format"]) {
        Some(raw) => raw.parse(|v| parse::one_of(v, &["ndjson", "json"]))?,
        None => defaults::HTTP_FORMAT,
    };
    let format = match format {
        "json" => WebhookFormat::Json,
        _ => WebhookFormat::Ndjson,
    };
    let headers = headers(get("http_header", &["http_header", "http_headers"]))?;
    let bearer_token_file = get("http_bearer_token_file", &["http_bearer_token_file"])
        .map(|raw| raw.parse(path))
        .transpose()?;
    let tls = tls(get, "http")?;
    let compression = compression(
        get("http_compression", &["http_compression"]),
        defaults::HTTP_COMPRESSION,
    )?;
    let timeout = timeout(get("http_timeout", &["http_timeout"]))?;
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

/// `--dead-letter-dir`.
pub(super) fn dead_letter_dir(get: &Get<'_>) -> Result<Option<PathBuf>, ConfigError> {
    get("dead_letter_dir", &["dead_letter_dir"])
        .map(|raw| raw.parse(path))
        .transpose()
}

fn tls(get: &Get<'_>, prefix: &str) -> Result<TlsFiles, ConfigError> {
    let file = |name: &str| {
        let id = format!("{prefix}_{name}");
        get(&id, &[id.as_str()]).map(|raw| raw.parse(path).map(|p| (raw, p)))
    };
    let ca = file("ca_file").transpose()?.map(|(_, p)| p);
    let cert = file("client_cert").transpose()?;
    let key = file("client_key").transpose()?;
    match (cert, key) {
        (Some((_, cert)), Some((_, key))) => Ok(TlsFiles {
            ca,
            client_cert: Some(cert),
            client_key: Some(key),
        }),
        (None, None) => Ok(TlsFiles {
            ca,
            ..TlsFiles::default()
        }),
        (Some((raw, _)), None) => Err(raw.invalid(format!(
            "needs --{prefix}-client-key too: a client certificate is used with its key"
        ))),
        (None, Some((raw, _))) => Err(raw.invalid(format!(
            "needs --{prefix}-client-cert too: a client key is used with its certificate"
        ))),
    }
}

fn compression(raw: Option<Raw>, default: &'static str) -> Result<Compression, ConfigError> {
    let name = match raw {
        Some(raw) => raw.parse(|v| parse::one_of(v, &["gzip", "none"]))?,
        None => default,
    };
    Ok(match name {
        "gzip" => Compression::Gzip,
        _ => Compression::None,
    })
}

fn timeout(raw: Option<Raw>) -> Result<Duration, ConfigError> {
    match raw {
        Some(raw) => raw.parse(|v| parse::seconds(v, 0.1, 600.0)),
        None => Ok(defaults::HTTP_TIMEOUT),
    }
}

fn path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        Err("must be a file or directory path".into())
    } else {
        Ok(PathBuf::from(v))
    }
}

/// An http:// or https:// URL with a host; a path is allowed, credentials in it are not
/// logged (see `redact`).
fn url(v: &str) -> Result<String, String> {
    let requirement =
        || "must be an http:// or https:// URL such as http://otel-collector:4318".to_string();
    let uri: http::Uri = v.parse().map_err(|_| requirement())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    if scheme_ok && host_ok {
        Ok(v.to_string())
    } else {
        Err(requirement())
    }
}

/// `K=V` or `K=@/path`, comma separated (as `OTEL_EXPORTER_OTLP_HEADERS`); repeated flags are
/// joined by the layers. A value holding a comma goes in a file.
fn headers(raw: Option<Raw>) -> Result<Vec<HeaderSpec>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    raw.parse(|v| {
        let requirement = "must be NAME=VALUE or NAME=@FILE, comma separated (a value holding a comma goes in a file)";
        let mut out = Vec::new();
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = part.split_once('=') else {
                return Err(requirement.to_string());
            };
            let name = name.trim();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("{name:?} is not a header name; {requirement}"));
            }
            let value = value.trim();
            let value = match value.strip_prefix('@') {
                Some(file) if !file.is_empty() => HeaderValueSource::File(PathBuf::from(file)),
                Some(_) => return Err(requirement.to_string()),
                None => {
                    if http::HeaderValue::from_str(value).is_err() {
                        return Err(format!(
                            "the value of {name} holds characters a header cannot carry; {requirement}"
                        ));
                    }
                    HeaderValueSource::Literal(value.to_string())
                }
            };
            out.push(HeaderSpec {
                name: name.to_string(),
                value,
            });
        }
        Ok(out)
    })
}
