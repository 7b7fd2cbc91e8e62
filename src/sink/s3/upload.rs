//! One object's upload: gzip, one PUT, retried under the sinks' policy.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::put_object::PutObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use base64::Engine;
use md5::{Digest, Md5};

use super::config::{S3Settings, Sse};
use super::layout::ObjectLayout;
use crate::encode::object::{ObjectFormat, gzip};
use crate::sink::classify::Verdict;
use std::sync::Arc;
use std::time::Duration;

use crate::flow::Batch;
use crate::sink::{Deliver, Failure};

/// The running sink.
pub struct S3Sink {
    client: Client,
    bucket: String,
    layout: ObjectLayout,
    storage_class: Option<String>,
    sse: Option<Sse>,
    /// `--s3-timeout`: the SDK ends an attempt that takes longer.
    timeout: Duration,
    /// The object of the batch being uploaded, kept across retries so a retry neither gzips
    /// again nor changes the key.
    prepared: Option<Prepared>,
}

struct Prepared {
    seq: u64,
    key: String,
    body: Vec<u8>,
    md5: String,
    format: ObjectFormat,
}

impl S3Sink {
    pub fn new(client: Client, settings: &S3Settings, layout: ObjectLayout) -> Self {
        S3Sink {
            client,
            bucket: settings.bucket.clone(),
            layout,
            storage_class: settings.storage_class.clone(),
            sse: settings.sse.clone(),
            timeout: settings.connection.timeout,
            prepared: None,
        }
    }

    async fn put(&self, object: &Prepared) -> Result<(), Failure> {
        let Prepared {
            key,
            body,
            md5,
            format,
            ..
        } = object;
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .content_type(format.content_type())
            .content_encoding("gzip")
            .content_md5(md5);
        if let Some(class) = &self.storage_class {
            put = put.storage_class(StorageClass::from(class.as_str()));
        }
        match &self.sse {
            Some(Sse::S3) => put = put.server_side_encryption(ServerSideEncryption::Aes256),
            Some(Sse::Kms { key_id }) => {
                put = put.server_side_encryption(ServerSideEncryption::AwsKms);
                if let Some(id) = key_id {
                    put = put.ssekms_key_id(id);
                }
            }
            None => {}
        }
        put.send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&self.bucket, key, self.timeout, e))
    }
}

/// Sorts a failed PUT for the retry policy: transient failures retry with the backoff, a 403
/// or another 4xx waits for an operator on the slow timer.
fn classify(
    bucket: &str,
    key: &str,
    timeout: Duration,
    err: SdkError<PutObjectError, HttpResponse>,
) -> Failure {
    if let SdkError::TimeoutError(_) = err {
        // The endpoint took the connection and did not answer: a hung store (or a batch too
        // large for the link). Logged now, not when the kernel gives up on the connection.
        return Failure::retry(
            "timeout",
            format!(
                "S3 PUT s3://{bucket}/{key} got no answer within {}s (--s3-timeout): the endpoint stalled; check it, or raise --s3-timeout for large batches over a slow link",
                timeout.as_secs_f64()
            ),
        );
    }
    let status = match &err {
        SdkError::ServiceError(ctx) => Some(ctx.raw().status().as_u16()),
        _ => None,
    };
    let code = err.code().unwrap_or_default().to_owned();
    let detail = DisplayErrorContext(&err).to_string();
    let Some(status) = status else {
        // Refused, reset and timed-out connections are one outage, logged once.
        return Failure::retry(
            "transport",
            format!("S3 PUT s3://{bucket}/{key} failed: {detail}"),
        );
    };
    let kind = format!("{status} {code}");
    let message = if status == 403 {
        format!(
            "S3 refused the upload to bucket {bucket} with 403 Forbidden ({code}); check the credentials (AWS_ACCESS_KEY_ID, the profile or the pod's role) and the bucket policy"
        )
    } else {
        format!("S3 PUT s3://{bucket}/{key} failed with {status} {code}: {detail}")
    };
    match verdict(status, &code) {
        Verdict::Retry => Failure::retry(kind, message),
        Verdict::Refused => Failure::refused(kind, message),
    }
}

/// The error codes S3 and S3-compatible stores throttle with, whatever the status.
const THROTTLING_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestLimitExceeded",
    "TooManyRequestsException",
];

/// The rule for an answered PUT: 5xx, 429 and the throttling codes are transient; any other
/// 4xx (a 403 from wrong credentials, a missing bucket) waits for an operator.
pub fn verdict(status: u16, code: &str) -> Verdict {
    if status >= 500 || status == 429 || THROTTLING_CODES.contains(&code) {
        Verdict::Retry
    } else {
        Verdict::Refused
    }
}

impl Deliver for S3Sink {
    /// Gzips the batch (on a blocking thread, off the runtime) into one object and PUTs it.
    async fn deliver(&mut self, batch: &Arc<Batch>) -> Result<(), Failure> {
        if self.prepared.as_ref().is_none_or(|p| p.seq != batch.seq) {
            self.prepared = Some(self.prepare(batch).await?);
        }
        let Some(object) = &self.prepared else {
            return Ok(());
        };
        self.put(object).await?;
        self.prepared = None;
        Ok(())
    }
}

impl S3Sink {
    async fn prepare(&self, batch: &Arc<Batch>) -> Result<Prepared, Failure> {
        let format = match (self.layout.format, &batch.records) {
            (ObjectFormat::Protobuf, Some(_)) => ObjectFormat::Protobuf,
            _ => ObjectFormat::Jsonl,
        };
        let shared = batch.clone();
        let (body, md5) = tokio::task::spawn_blocking(move || {
            let payload = match format {
                ObjectFormat::Protobuf => shared.records.as_deref().unwrap_or_default(),
                ObjectFormat::Jsonl => &shared.bytes,
            };
            let body = gzip(payload);
            let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
            (body, md5)
        })
        .await
        .map_err(|e| Failure::retry("gzip", format!("compressing a batch failed: {e}")))?;
        Ok(Prepared {
            seq: batch.seq,
            key: self.layout.key(batch.seq, batch.opened_at, format),
            body,
            md5,
            format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_and_throttling_are_retried_other_refusals_wait() {
        for (status, code) in [
            (500, "InternalError"),
            (503, "SlowDown"),
            (429, ""),
            (400, "RequestTimeout"),
            (400, "Throttling"),
            (400, "ThrottlingException"),
            (403, "RequestLimitExceeded"),
            (400, "TooManyRequestsException"),
        ] {
            assert_eq!(verdict(status, code), Verdict::Retry, "{status} {code}");
        }
        for (status, code) in [
            (403, "AccessDenied"),
            (404, "NoSuchBucket"),
            (400, "InvalidArgument"),
            (301, "PermanentRedirect"),
        ] {
            assert_eq!(verdict(status, code), Verdict::Refused, "{status} {code}");
        }
    }
}
