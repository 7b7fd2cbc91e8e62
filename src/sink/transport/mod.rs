//! HTTP delivery shared by the OTLP and webhook sinks: the client (TLS CA, client certificate,
//! timeout), headers whose values may come from files that are re-read when they change
//! (rotated tokens), gzip, and the reading of a response as an ack, a retry with the peer's
//! `Retry-After`, or a refusal for good.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use thiserror::Error;

pub mod config;

use super::Failure;
use super::classify::{HttpStatuses, Verdict};
use config::{HeaderSpec, HeaderValueSource, TlsFiles};

/// Why an HTTP sink cannot start. Not retryable: the operator fixes a file or a value.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error(
        "{sink} sink: cannot read {what} {path}: {source}; check the path and the volume mount"
    )]
    Read {
        sink: &'static str,
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{sink} sink: {path} is not a usable {what} ({reason}); it must be PEM")]
    Pem {
        sink: &'static str,
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{sink} sink: header {name}: {reason}")]
    Header {
        sink: &'static str,
        name: String,
        reason: String,
    },
    #[error("{sink} sink: {url} is not a usable URL: {reason}")]
    Url {
        sink: &'static str,
        url: String,
        reason: String,
    },
    #[error("{sink} sink: cannot build the HTTP client: {source}")]
    Client {
        sink: &'static str,
        source: reqwest::Error,
    },
}

/// A header value kept in a file (a token), read again whenever the file changes: projected
/// service-account tokens and mounted Secrets are replaced in place while the pipe runs.
#[derive(Debug)]
pub struct WatchedValue {
    path: PathBuf,
    /// Put before the file's content: `Bearer ` for a bearer token, empty otherwise.
    prefix: &'static str,
    /// Modification time, length and inode of the file the value was read from.
    stamp: Option<(SystemTime, u64, u64)>,
    value: HeaderValue,
}

impl WatchedValue {
    pub fn open(path: &Path, prefix: &'static str) -> std::io::Result<Self> {
        let mut watched = WatchedValue {
            path: path.to_path_buf(),
            prefix,
            stamp: None,
            value: HeaderValue::from_static(""),
        };
        watched.refresh()?;
        Ok(watched)
    }

    /// The current value, re-read when the file's stamp changed since the last read.
    pub fn current(&mut self) -> std::io::Result<&HeaderValue> {
        self.refresh()?;
        Ok(&self.value)
    }

    fn refresh(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        // metadata follows symlinks: the kubelet swaps a `..data` link to rotate a volume.
        let meta = std::fs::metadata(&self.path)?;
        let stamp = (meta.modified()?, meta.len(), meta.ino());
        if self.stamp == Some(stamp) {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path)?;
        let value = format!("{}{}", self.prefix, text.trim());
        self.value = HeaderValue::from_str(&value).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file holds characters a header value cannot carry (a line break inside?)",
            )
        })?;
        self.value.set_sensitive(true);
        self.stamp = Some(stamp);
        Ok(())
    }
}

#[derive(Debug)]
enum Header {
    Fixed(HeaderValue),
    File(WatchedValue),
}

/// One HTTP endpoint batches are POSTed to.
#[derive(Debug)]
pub struct Endpoint {
    sink: &'static str,
    client: reqwest::Client,
    url: reqwest::Url,
    headers: Vec<(HeaderName, Header)>,
}

impl Endpoint {
    /// Builds the client and reads every file it needs now, so a missing CA or token file stops
    /// the start with its path instead of failing every request later.
    pub fn new(
        sink: &'static str,
        url: &str,
        headers: &[HeaderSpec],
        tls: &TlsFiles,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let url = reqwest::Url::parse(url).map_err(|e| TransportError::Url {
            sink,
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let client = client(sink, tls, timeout)?;
        let headers = headers
            .iter()
            .map(|spec| header(sink, spec))
            .collect::<Result<_, _>>()?;
        Ok(Endpoint {
            sink,
            client,
            url,
            headers,
        })
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// Adds a header whose value is read from a file (re-read when the file changes).
    pub fn add_file_header(&mut self, name: HeaderName, value: WatchedValue) {
        self.headers.push((name, Header::File(value)));
    }

    /// POSTs one body. A transport failure (refused connection, timeout, reset) and a header
    /// file that cannot be read now are `Failure::Retry`; any response is returned for the
    /// sink to judge by its own protocol's rules.
    pub async fn post(
        &mut self,
        content_type: &'static str,
        gzip: bool,
        body: Bytes,
    ) -> Result<reqwest::Response, Failure> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(http::header::CONTENT_TYPE, content_type);
        if gzip {
            request = request.header(http::header::CONTENT_ENCODING, "gzip");
        }
        for (name, header) in &mut self.headers {
            let value = match header {
                Header::Fixed(v) => v.clone(),
                Header::File(watched) => match watched.current() {
                    Ok(v) => v.clone(),
                    Err(e) => {
                        return Err(Failure::retry(
                            "header file",
                            format!(
                                "cannot read the {name} header's file {}: {e}",
                                watched.path.display()
                            ),
                        ));
                    }
                },
            };
            request = request.header(name.clone(), value);
        }
        request.body(body).send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                "timeout"
            } else {
                "transport"
            };
            Failure::retry(
                kind,
                format!(
                    "{}: POST {} failed: {}",
                    self.sink,
                    redacted_url(&self.url),
                    crate::errors::error_chain(&e)
                ),
            )
        })
    }

    /// The failure a response that is not a success stands for, by the sink's `rule`: a retry
    /// (after at least the peer's `Retry-After`) or a refusal, both with the status and the
    /// start of the body, which is where collectors and webhooks say what they did not like.
    pub async fn failure(&self, response: reqwest::Response, rule: &HttpStatuses) -> Failure {
        let status = response.status();
        let retryable = rule.verdict(status.as_u16()) == Verdict::Retry;
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let body = response.bytes().await.unwrap_or_default();
        let error = describe(self.sink, &self.url, status, &body);
        let kind = status.as_u16().to_string();
        if retryable {
            Failure::Retry {
                kind,
                error,
                retry_after,
            }
        } else {
            Failure::Refused { kind, error }
        }
    }
}

/// The HTTP client: the timeout, the extra CA bundle and the client certificate.
fn client(
    sink: &'static str,
    tls: &TlsFiles,
    timeout: Duration,
) -> Result<reqwest::Client, TransportError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TransportError::Read {
            sink,
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let pem_error = |what: &'static str, path: &Path, reason: String| TransportError::Pem {
        sink,
        what,
        path: path.to_path_buf(),
        reason,
    };
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("kube-event-pipe/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &tls.ca {
        let pem = read("CA file", ca)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| pem_error("CA bundle", ca, e.to_string()))?;
        if certs.is_empty() {
            return Err(pem_error("CA bundle", ca, "no certificate in it".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let mut pem = read("client certificate", cert)?;
        pem.push(b'\n');
        pem.extend(read("client key", key)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| pem_error("client certificate and key", cert, e.to_string()))?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|source| TransportError::Client { sink, source })
}

/// One configured header, its value sensitive (kept out of debug output); a file's value is
/// read now and again whenever the file changes.
fn header(sink: &'static str, spec: &HeaderSpec) -> Result<(HeaderName, Header), TransportError> {
    let invalid = |reason: &str| TransportError::Header {
        sink,
        name: spec.name.clone(),
        reason: reason.into(),
    };
    let name = HeaderName::from_bytes(spec.name.as_bytes())
        .map_err(|_| invalid("not a valid header name"))?;
    let header = match &spec.value {
        HeaderValueSource::Literal(v) => {
            let mut value = HeaderValue::from_str(v)
                .map_err(|_| invalid("the value holds characters a header cannot carry"))?;
            value.set_sensitive(true);
            Header::Fixed(value)
        }
        HeaderValueSource::File(path) => Header::File(WatchedValue::open(path, "").map_err(
            |source| TransportError::Read {
                sink,
                what: "header value file",
                path: path.clone(),
                source,
            },
        )?),
    };
    Ok((name, header))
}

/// `HTTP 400 Bad Request from http://host/path: <start of the body>`.
fn describe(sink: &str, url: &reqwest::Url, status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    let mut out = format!("{sink}: HTTP {status} from {}", redacted_url(url));
    if !text.is_empty() {
        out.push_str(": ");
        out.push_str(text);
    }
    out
}

/// The URL without credentials or query, for logs.
fn redacted_url(url: &reqwest::Url) -> String {
    crate::config::redact("url", url.as_str())
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
/// A date in the past is no wait; an unreadable value is ignored (the backoff applies).
pub fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The one gzip the pipe writes, for request bodies too.
pub use crate::encode::object::gzip;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(retry_after(&headers, SystemTime::now()), None);
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(
            retry_after(&headers, SystemTime::now()),
            Some(Duration::from_secs(3))
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        headers.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_str(&later).unwrap(),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(120)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(120));
        headers.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_str(&earlier).unwrap(),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn a_watched_value_follows_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let mut watched = WatchedValue::open(&path, "Bearer ").unwrap();
        assert_eq!(watched.current().unwrap(), "Bearer one");
        // A rotation replaces the file (a new inode), as the kubelet does.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "two-longer\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(watched.current().unwrap(), "Bearer two-longer");
        std::fs::remove_file(&path).unwrap();
        assert!(watched.current().is_err());
    }

    #[test]
    fn descriptions_name_the_status_and_hide_credentials() {
        let url = reqwest::Url::parse("https://u:p@collector:4318/v1/logs?sig=x").unwrap();
        let text = describe("otlp", &url, StatusCode::BAD_REQUEST, b"bad\nrecord");
        assert_eq!(
            text,
            "otlp: HTTP 400 Bad Request from https://<redacted>@collector:4318/v1/logs?<redacted>: bad record"
        );
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let packed = gzip(b"{\"a\":1}\n");
        let mut out = String::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "{\"a\":1}\n");
    }
}
