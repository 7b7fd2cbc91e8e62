//! Settings shared by the HTTP sinks (OTLP logs and the webhook): headers, TLS files, body
//! compression and the per-request timeout, with their validation from the layers.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ConfigError, Get, Raw, parse};

/// `--otlp-timeout` and `--http-timeout`: the OTLP exporters' default, per request.
pub const TIMEOUT: Duration = Duration::from_secs(10);

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

/// `--{prefix}-ca-file`, `--{prefix}-client-cert` and `--{prefix}-client-key`.
pub(crate) fn tls(get: &Get<'_>, prefix: &str) -> Result<TlsFiles, ConfigError> {
    let file = |name: &str| {
        let id = format!("{prefix}_{name}");
        get(&id, &[id.as_str()]).map(|raw| raw.parse(parse::path).map(|p| (raw, p)))
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

pub(crate) fn compression(
    raw: Option<Raw>,
    default: &'static str,
) -> Result<Compression, ConfigError> {
    let name = match raw {
        Some(raw) => raw.parse(|v| parse::one_of(v, &["gzip", "none"]))?,
        None => default,
    };
    Ok(match name {
        "gzip" => Compression::Gzip,
        _ => Compression::None,
    })
}

pub(crate) fn timeout(raw: Option<Raw>) -> Result<Duration, ConfigError> {
    match raw {
        Some(raw) => raw.parse(|v| parse::seconds(v, 0.1, 600.0)),
        None => Ok(TIMEOUT),
    }
}

/// An http:// or https:// URL with a host; a path is allowed, credentials in it are not
/// logged (see `redact`).
pub(crate) fn url(v: &str) -> Result<String, String> {
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
pub(crate) fn headers(raw: Option<Raw>) -> Result<Vec<HeaderSpec>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    raw.parse(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(header)
            .collect()
    })
}

const HEADER_REQUIREMENT: &str =
    "must be NAME=VALUE or NAME=@FILE, comma separated (a value holding a comma goes in a file)";

/// One `K=V` or `K=@/path`.
fn header(part: &str) -> Result<HeaderSpec, String> {
    let requirement = HEADER_REQUIREMENT;
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
    Ok(HeaderSpec {
        name: name.to_string(),
        value,
    })
}
