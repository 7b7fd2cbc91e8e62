//! The OTLP logs sink: each batch becomes one OTLP/HTTP export request (protobuf, gzipped by
//! default) to a collector or any OTLP-capable backend, delivered by the OTLP spec's rules.
//!
//! - 2xx is an ack. A body with `partial_success.rejected_log_records` means the receiver kept
//!   the rest and dropped those for good (retrying cannot help, says the spec): logged at WARN
//!   and counted in `kube_event_pipe_otlp_rejected_records_total`, and the batch is acked.
//! - 429, 502, 503 and 504 are retried with backoff, waiting at least the `Retry-After` the
//!   server sent; so are connection failures and timeouts.
//! - Every other status is permanent for that batch (`Failure::Refused`): the dead-letter
//!   directory takes it, or it is retried on the slow timer.
//!
//! Only OTLP/HTTP: every collector and OTLP backend accepts it, and gRPC would bring tonic's
//! transport and HTTP/2 stack for no reach the HTTP form lacks.

pub mod config;
pub mod mapping;

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use tracing::{info, warn};

use super::classify::HttpStatuses;
use super::transport::config::Compression;
use super::transport::{self, Endpoint, TransportError};
use super::{Failure, Sink, SinkError};
use crate::flow::Batch;
use crate::metrics::OTLP_REJECTED_RECORDS;
use config::{OtlpBody, OtlpSettings};

/// The statuses the OTLP spec says to retry (429, 502, 503, 504); every other one, other 5xx
/// included, is refused for that batch.
pub const RETRIED: HttpStatuses = HttpStatuses {
    retried: &[429, 502, 503, 504],
    server_errors: false,
};

/// The OTLP/HTTP logs path, appended to the endpoint as the spec says for a base endpoint.
pub const LOGS_PATH: &str = "/v1/logs";

/// A running OTLP sink.
#[derive(Debug)]
pub struct OtlpSink {
    endpoint: Endpoint,
    gzip: bool,
    body: OtlpBody,
    /// The last batch's encoded request, kept across retries of that batch.
    encoded: Option<(u64, Bytes)>,
}

/// The URL export requests go to: the endpoint with `/v1/logs` appended, unless it already
/// ends with it (a signal-specific endpoint, as `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` takes).
pub fn logs_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with(LOGS_PATH) {
        base.to_string()
    } else {
        format!("{base}{LOGS_PATH}")
    }
}

impl OtlpSink {
    pub fn open(settings: &OtlpSettings) -> Result<Self, TransportError> {
        let endpoint = Endpoint::new(
            "otlp",
            &logs_url(&settings.endpoint),
            &settings.headers,
            &settings.tls,
            settings.timeout,
        )?;
        Ok(OtlpSink {
            endpoint,
            gzip: settings.compression == Compression::Gzip,
            body: settings.body,
            encoded: None,
        })
    }

    /// The request body for `batch`, built once per batch however often it is retried.
    fn encode(&mut self, batch: &Batch) -> Bytes {
        if let Some((seq, body)) = &self.encoded
            && *seq == batch.seq
        {
            return body.clone();
        }
        let observed = batch
            .opened_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let request = mapping::export_request(&batch.bytes, self.body, observed);
        let protobuf = request.encode_to_vec();
        let body = Bytes::from(if self.gzip {
            transport::gzip(&protobuf)
        } else {
            protobuf
        });
        self.encoded = Some((batch.seq, body.clone()));
        body
    }

    pub async fn deliver(&mut self, batch: &Batch) -> Result<(), Failure> {
        let body = self.encode(batch);
        let response = self
            .endpoint
            .post("application/x-protobuf", self.gzip, body)
            .await?;
        let status = response.status();
        if status.is_success() {
            let content = response.bytes().await.unwrap_or_default();
            self.encoded = None;
            self.partial_success(&content);
            return Ok(());
        }
        Err(self.endpoint.failure(response, &RETRIED).await)
    }

    /// Logs and counts the records a 2xx response says were rejected. An empty or unreadable
    /// body is a full success, as the spec allows servers to send nothing.
    fn partial_success(&self, content: &[u8]) {
        let Ok(response) = ExportLogsServiceResponse::decode(content) else {
            return;
        };
        let Some(partial) = response.partial_success else {
            return;
        };
        if partial.rejected_log_records > 0 || !partial.error_message.is_empty() {
            metrics::counter!(OTLP_REJECTED_RECORDS)
                .increment(u64::try_from(partial.rejected_log_records).unwrap_or(0));
            warn!(
                sink = "otlp",
                endpoint = %crate::config::redact("url", self.endpoint.url().as_str()),
                rejected = partial.rejected_log_records,
                message = %partial.error_message,
                "the OTLP receiver accepted the batch but rejected some records; they are not retried (OTLP partial success)"
            );
        }
    }
}

impl super::Deliver for OtlpSink {
    fn deliver(
        &mut self,
        batch: &Arc<Batch>,
    ) -> impl std::future::Future<Output = Result<(), Failure>> + Send {
        OtlpSink::deliver(self, batch)
    }
}

/// Opens the OTLP sink: reads its TLS and header files and builds its client.
pub fn open(settings: &OtlpSettings) -> Result<Sink, SinkError> {
    let sink = OtlpSink::open(settings)?;
    let url = crate::config::redact("url", sink.endpoint.url().as_str());
    info!(endpoint = %url, compression = ?settings.compression, body = ?settings.body, "OTLP sink ready");
    Ok(Sink::from_async(
        "OTLP",
        "otlp",
        format!("otlp {url}"),
        sink,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logs_path_is_appended_once() {
        assert_eq!(
            logs_url("http://collector:4318"),
            "http://collector:4318/v1/logs"
        );
        assert_eq!(
            logs_url("http://collector:4318/"),
            "http://collector:4318/v1/logs"
        );
        assert_eq!(
            logs_url("https://otlp.example/otlp/v1/logs"),
            "https://otlp.example/otlp/v1/logs"
        );
        assert_eq!(
            logs_url("https://otlp.example/otlp"),
            "https://otlp.example/otlp/v1/logs"
        );
    }

    #[test]
    fn only_the_specs_retryable_statuses_are_retried() {
        use crate::sink::classify::Verdict::{Refused, Retry};
        for status in [429, 502, 503, 504] {
            assert_eq!(RETRIED.verdict(status), Retry, "{status}");
        }
        for status in [400, 401, 403, 404, 408, 413, 500, 501, 505] {
            assert_eq!(RETRIED.verdict(status), Refused, "{status}");
        }
    }
}
