//! The HTTP webhook sink: each batch is POSTed as one request, as NDJSON (the lines the file
//! sink writes) or as a JSON array of them.
//!
//! - 2xx is an ack.
//! - 408, 429 and 5xx are retried with backoff, waiting at least the `Retry-After` the server
//!   sent; so are connection failures and timeouts.
//! - Any other status (4xx, or a redirect left unfollowed) is permanent for that batch
//!   (`Failure::Refused`): the dead-letter directory takes it, or it is retried on the slow
//!   timer.
//!
//! `--http-bearer-token-file` is read again whenever the file changes, so a projected
//! service-account token or a mounted Secret can rotate under a running pipe.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderName;
use tracing::info;

pub mod config;

use super::classify::HttpStatuses;
use super::transport::config::Compression;
use super::transport::{self, Endpoint, TransportError, WatchedValue};
use super::{Failure, Sink, SinkError};
use config::{WebhookFormat, WebhookSettings};

/// 408, 429 and every 5xx are retried; any other status (4xx, or a redirect left unfollowed)
/// is refused for that batch.
pub const RETRIED: HttpStatuses = HttpStatuses {
    retried: &[408, 429],
    server_errors: true,
};
use crate::flow::Batch;

/// A running webhook sink.
#[derive(Debug)]
pub struct WebhookSink {
    endpoint: Endpoint,
    format: WebhookFormat,
    gzip: bool,
    /// The last batch's request body, kept across retries of that batch.
    encoded: Option<(u64, Bytes)>,
}

impl WebhookSink {
    pub fn open(settings: &WebhookSettings) -> Result<Self, TransportError> {
        let mut endpoint = Endpoint::new(
            "http",
            &settings.url,
            &settings.headers,
            &settings.tls,
            settings.timeout,
        )?;
        if let Some(path) = &settings.bearer_token_file {
            let token =
                WatchedValue::open(path, "Bearer ").map_err(|source| TransportError::Read {
                    sink: "http",
                    what: "bearer token file",
                    path: path.clone(),
                    source,
                })?;
            endpoint.add_file_header(HeaderName::from_static("authorization"), token);
        }
        Ok(WebhookSink {
            endpoint,
            format: settings.format,
            gzip: settings.compression == Compression::Gzip,
            encoded: None,
        })
    }

    fn encode(&mut self, batch: &Batch) -> Bytes {
        if let Some((seq, body)) = &self.encoded
            && *seq == batch.seq
        {
            return body.clone();
        }
        let plain = match self.format {
            WebhookFormat::Ndjson => batch.bytes.clone(),
            WebhookFormat::Json => json_array(&batch.bytes),
        };
        let body = Bytes::from(if self.gzip {
            transport::gzip(&plain)
        } else {
            plain
        });
        self.encoded = Some((batch.seq, body.clone()));
        body
    }

    pub async fn deliver(&mut self, batch: &Batch) -> Result<(), Failure> {
        let body = self.encode(batch);
        let content_type = match self.format {
            WebhookFormat::Ndjson => "application/x-ndjson",
            WebhookFormat::Json => "application/json",
        };
        let response = self.endpoint.post(content_type, self.gzip, body).await?;
        let status = response.status();
        if status.is_success() {
            // Read the body so the connection goes back to the pool.
            let _ = response.bytes().await;
            self.encoded = None;
            return Ok(());
        }
        Err(self.endpoint.failure(response, &RETRIED).await)
    }
}

impl super::Deliver for WebhookSink {
    fn deliver(
        &mut self,
        batch: &Arc<Batch>,
    ) -> impl std::future::Future<Output = Result<(), Failure>> + Send {
        WebhookSink::deliver(self, batch)
    }
}

/// Opens the webhook sink: reads its TLS, header and token files and builds its client.
pub fn open(settings: &WebhookSettings) -> Result<Sink, SinkError> {
    let sink = WebhookSink::open(settings)?;
    let url = crate::config::redact("url", sink.endpoint.url().as_str());
    info!(url = %url, format = ?settings.format, "HTTP webhook sink ready");
    Ok(Sink::from_async(
        "HTTP",
        "http",
        format!("http {url}"),
        sink,
    ))
}

/// The lines as one JSON array: each line is already a JSON value, so they are joined as they
/// are, never parsed again.
pub fn json_array(lines: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.len() + 2);
    out.push(b'[');
    let mut first = true;
    for line in lines.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(line);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_one_json_array() {
        let array = json_array(b"{\"a\":1}\n{\"b\":[2]}\n");
        let parsed: serde_json::Value = serde_json::from_slice(&array).unwrap();
        assert_eq!(parsed, serde_json::json!([{"a": 1}, {"b": [2]}]));
        assert_eq!(json_array(b""), b"[]");
    }

    #[test]
    fn timeouts_throttling_and_server_errors_are_retried_the_rest_refused() {
        use crate::sink::classify::Verdict::{Refused, Retry};
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(RETRIED.verdict(status), Retry, "{status}");
        }
        for status in [301, 400, 401, 403, 404, 409, 413, 422] {
            assert_eq!(RETRIED.verdict(status), Refused, "{status}");
        }
    }
}
