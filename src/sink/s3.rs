//! The S3 sink: each batch becomes one gzipped object, uploaded with a single PUT.
//!
//! Object keys are `{prefix}/{uid}/{YYYY}/{MM}/{DD}/{HH}/{first-event-time}-{seq}.{jsonl|pb}.gz`
//! (UTC; the time is when the batch's first event was accepted). `seq` is `{run}-{batch}`: `run`
//! counts the process starts on this persistence directory (`stream-run`, bumped and fsynced at
//! startup), `batch` counts batches within the run. A key is fixed when its batch closes, so a
//! retried PUT overwrites its own earlier attempt instead of adding a copy, and a restart never
//! reuses a key of an earlier run, even when the clock steps back.
//!
//! A failing PUT is retried until it succeeds: transient failures (timeouts, connection errors,
//! 5xx, 429, SlowDown and throttling codes) with capped exponential backoff; other 4xx (a 403
//! from wrong credentials, a missing bucket) at the longest backoff delay, logged as errors,
//! because the operator fixes those without restarting the pod and expects the upload to go on.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::put_object::PutObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use base64::Engine;
use md5::{Digest, Md5};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::{BatchAck, MAX_RETRY_DELAY, SinkEnd, SinkState, Worker, retry_backoff, telemetry};
use crate::batch::Batch;
use crate::config::{ObjectFormat, S3Connection, S3Settings, Sse};
use crate::encode::object::gzip;

/// Failures of the S3 sink's setup. Not retryable: they name a file or setting to fix.
#[derive(Debug, Error)]
pub enum S3Error {
    #[error("cannot {action} {path}: {source}")]
    State {
        action: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {url}: {reason}")]
    Get { url: String, reason: String },
    #[error("{path} holds {content:?}, which is not {expected}; delete the file")]
    BadState {
        path: std::path::PathBuf,
        content: String,
        expected: &'static str,
    },
}

/// The file holding the stream id when none is configured.
const UID_FILE: &str = "stream-uid";
/// The file counting process starts, which keeps object keys of different runs apart.
const RUN_FILE: &str = "stream-run";

/// A connected S3 client for `connection`. No request is made here: credentials are resolved
/// (env, profile, web identity, instance metadata) at the first PUT.
pub async fn client(connection: &S3Connection) -> Client {
    // rustls with ring, as the kube client uses: no second crypto library to build.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &connection.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &connection.profile {
        loader = loader.profile_name(profile);
    }
    let shared = loader.load().await;
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        // The sink retries itself, forever and with its own logging; the SDK's three attempts
        // would only hide how long an outage lasts.
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
        .force_path_style(connection.force_path_style);
    if shared.region().is_none() {
        config = config.region(Region::from_static("us-east-1"));
    }
    if let Some(endpoint) = &connection.endpoint {
        config = config
            .endpoint_url(endpoint)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    Client::from_conf(config.build())
}

/// Reads one whole object, for `decode --s3`.
pub async fn get_object(
    connection: &S3Connection,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, S3Error> {
    let client = client(connection).await;
    let fail = |reason: String| S3Error::Get {
        url: format!("s3://{bucket}/{key}"),
        reason,
    };
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
    let body = out.body.collect().await.map_err(|e| fail(e.to_string()))?;
    Ok(body.into_bytes().to_vec())
}

/// The stream id: `--uid`, else the one stored in the persistence directory, else
/// `discovered` (the kube-system namespace's UID), else a new UUID; a new id is stored, so the
/// keys of one directory's stream never change between runs.
pub fn stream_uid(
    configured: Option<&str>,
    dir: &Path,
    discovered: Option<String>,
) -> Result<String, S3Error> {
    if let Some(uid) = configured {
        return Ok(uid.to_owned());
    }
    let path = dir.join(UID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let uid = text.trim();
            let valid = !uid.is_empty()
                && uid.len() <= 128
                && uid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if valid {
                Ok(uid.to_owned())
            } else {
                Err(S3Error::BadState {
                    path,
                    content: text,
                    expected: "a stream id (or pass --uid)",
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let uid = discovered.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            write_durably(&path, &uid)?;
            Ok(uid)
        }
        Err(source) => Err(S3Error::State {
            action: "read",
            path,
            source,
        }),
    }
}

/// Bumps and returns the run counter. Called once per start, after the persistence directory is
/// locked, so no two processes share a number.
pub fn next_run(dir: &Path) -> Result<u64, S3Error> {
    let path = dir.join(RUN_FILE);
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| S3Error::BadState {
            path: path.clone(),
            content: text.clone(),
            expected: "a run number",
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(source) => {
            return Err(S3Error::State {
                action: "read",
                path,
                source,
            });
        }
    };
    let run = previous + 1;
    write_durably(&path, &run.to_string())?;
    Ok(run)
}

/// Writes through a temporary file, fsynced and renamed, so a crash leaves the old or the new
/// content, never a torn one.
fn write_durably(path: &Path, content: &str) -> Result<(), S3Error> {
    let fail = |action, source| S3Error::State {
        action,
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| fail("create", e))?;
        f.write_all(content.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(|e| fail("write", e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| fail("rename into", e))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail("sync the directory of", e))?;
    }
    Ok(())
}

/// Where and how batches are written.
#[derive(Debug, Clone)]
pub struct ObjectLayout {
    pub prefix: Option<String>,
    pub uid: String,
    pub run: u64,
    pub format: ObjectFormat,
}

impl ObjectLayout {
    /// The batch's key; see the module doc for the scheme.
    pub fn key(&self, seq: u64, opened_at: SystemTime, format: ObjectFormat) -> String {
        let since = opened_at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let day_secs = secs % 86_400;
        let (hh, mm, ss) = (day_secs / 3600, day_secs % 3600 / 60, day_secs % 60);
        let ms = since.subsec_millis();
        let prefix = self
            .prefix
            .as_deref()
            .map(|p| format!("{p}/"))
            .unwrap_or_default();
        format!(
            "{prefix}{uid}/{y:04}/{m:02}/{d:02}/{hh:02}/{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}.{ms:03}Z-{run:06}-{seq:09}.{ext}.gz",
            uid = self.uid,
            run = self.run,
            ext = format.extension(),
        )
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm),
/// so keys need no date library.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The running sink.
pub struct S3Sink {
    pub client: Client,
    pub bucket: String,
    pub layout: ObjectLayout,
    pub storage_class: Option<String>,
    pub sse: Option<Sse>,
}

impl S3Sink {
    pub fn new(
        client: Client,
        settings: &S3Settings,
        bucket: String,
        layout: ObjectLayout,
    ) -> Self {
        S3Sink {
            client,
            bucket,
            layout,
            storage_class: settings.storage_class.clone(),
            sse: settings.sse.clone(),
        }
    }

    async fn put(
        &self,
        key: &str,
        body: &[u8],
        md5: &str,
        format: ObjectFormat,
    ) -> Result<(), PutFailure> {
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
            .map_err(|e| PutFailure::classify(&self.bucket, key, e))
    }
}

/// One failed PUT, sorted for the retry policy and the log.
#[derive(Debug)]
struct PutFailure {
    /// Fast retries pay off: the store or the network will be back.
    transient: bool,
    /// Identifies the kind of failure, so a log line is written when it changes, not per attempt.
    state: String,
    message: String,
}

impl PutFailure {
    fn classify(bucket: &str, key: &str, err: SdkError<PutObjectError, HttpResponse>) -> Self {
        let status = match &err {
            SdkError::ServiceError(ctx) => Some(ctx.raw().status().as_u16()),
            _ => None,
        };
        let code = err.code().unwrap_or_default().to_owned();
        let detail = DisplayErrorContext(&err).to_string();
        match status {
            Some(status) => {
                let throttled = matches!(
                    code.as_str(),
                    "SlowDown"
                        | "Throttling"
                        | "ThrottlingException"
                        | "RequestTimeout"
                        | "RequestLimitExceeded"
                        | "TooManyRequestsException"
                );
                let transient = status >= 500 || status == 429 || throttled;
                let message = if status == 403 {
                    format!(
                        "S3 refused the upload to bucket {bucket} with 403 Forbidden ({code}); check the credentials (AWS_ACCESS_KEY_ID, the profile or the pod's role) and the bucket policy"
                    )
                } else {
                    format!("S3 PUT s3://{bucket}/{key} failed with {status} {code}: {detail}")
                };
                PutFailure {
                    transient,
                    state: format!("{status} {code}"),
                    message,
                }
            }
            None => PutFailure {
                transient: true,
                // Refused, reset and timed-out connections are one outage, logged once.
                state: "transport".into(),
                message: format!("S3 PUT s3://{bucket}/{key} failed: {detail}"),
            },
        }
    }
}

/// Starts the S3 worker: for each batch of `queue`, gzip (on a blocking thread, off the async
/// runtime), PUT until it succeeds, then acknowledge.
pub fn spawn(
    sink: S3Sink,
    index: usize,
    mut queue: mpsc::Receiver<Arc<Batch>>,
    acks: mpsc::UnboundedSender<BatchAck>,
    state: Arc<SinkState>,
) -> Worker {
    let sink = Arc::new(sink);
    Worker::Task(tokio::spawn(async move {
        while let Some(batch) = queue.recv().await {
            telemetry::queue_depth("s3", queue.len());
            let started = Instant::now();
            let format = match (sink.layout.format, &batch.records) {
                (ObjectFormat::Protobuf, Some(_)) => ObjectFormat::Protobuf,
                _ => ObjectFormat::Jsonl,
            };
            let for_gzip = batch.clone();
            let body = tokio::task::spawn_blocking(move || {
                let payload = match format {
                    ObjectFormat::Protobuf => for_gzip.records.as_deref().unwrap_or_default(),
                    ObjectFormat::Jsonl => &for_gzip.bytes,
                };
                let body = gzip(payload);
                let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
                (body, md5)
            })
            .await;
            let Ok((body, md5)) = body else {
                // The runtime is shutting down.
                return SinkEnd::Drained;
            };
            let key = sink.layout.key(batch.seq, batch.opened_at, format);
            upload(&sink, &key, &body, &md5, format, &state).await;
            telemetry::delivered("s3", batch.events, started.elapsed());
            if acks.send(BatchAck { sink: index, batch }).is_err() {
                break;
            }
        }
        SinkEnd::Drained
    }))
}

/// PUTs until it succeeds, logging once per change of failure and once on recovery.
async fn upload(
    sink: &S3Sink,
    key: &str,
    body: &[u8],
    md5: &str,
    format: ObjectFormat,
    state: &SinkState,
) {
    let mut delays = backon::BackoffBuilder::build(retry_backoff());
    let mut failing: Option<String> = None;
    let mut attempts = 0u64;
    loop {
        match sink.put(key, body, md5, format).await {
            Ok(()) => {
                if failing.is_some() {
                    state.set_failing(false);
                    info!(bucket = %sink.bucket, attempts, "S3 sink recovered");
                }
                return;
            }
            Err(failure) => {
                attempts += 1;
                telemetry::error("s3");
                if failing.as_deref() != Some(failure.state.as_str()) {
                    state.set_failing(true);
                    if failure.transient {
                        warn!(bucket = %sink.bucket, error = %failure.message, "S3 sink failing; retrying with backoff until it recovers");
                    } else {
                        error!(bucket = %sink.bucket, error = %failure.message, "S3 sink failing; retrying every {}s until it is fixed", MAX_RETRY_DELAY.as_secs());
                    }
                    failing = Some(failure.state);
                }
                let delay = if failure.transient {
                    delays.next().unwrap_or(MAX_RETRY_DELAY)
                } else {
                    MAX_RETRY_DELAY
                };
                tracing::debug!(%key, attempt = attempts, ?delay, "S3 retry");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout_and_differ_between_runs() {
        let mut layout = ObjectLayout {
            prefix: Some("events".into()),
            uid: "c1".into(),
            run: 7,
            format: ObjectFormat::Jsonl,
        };
        // 2024-02-29T23:59:58.250Z
        let at = UNIX_EPOCH + Duration::from_millis(1_709_251_198_250);
        let key = layout.key(42, at, ObjectFormat::Jsonl);
        assert_eq!(
            key,
            "events/c1/2024/02/29/23/20240229T235958.250Z-000007-000000042.jsonl.gz"
        );
        assert_eq!(
            layout.key(42, at, ObjectFormat::Jsonl),
            key,
            "a retry reuses the key"
        );
        layout.run = 8;
        layout.prefix = None;
        assert_eq!(
            layout.key(42, at, ObjectFormat::Protobuf),
            "c1/2024/02/29/23/20240229T235958.250Z-000008-000000042.pb.gz"
        );
    }

    #[test]
    fn dates_are_right_across_leap_years_and_epochs() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn the_stream_id_and_run_counter_persist() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stream_uid(Some("x"), dir.path(), None).unwrap(), "x");
        let first = stream_uid(None, dir.path(), Some("kube-system-uid".into())).unwrap();
        assert_eq!(first, "kube-system-uid");
        // Stored: a later run that cannot reach the cluster keeps the same id.
        assert_eq!(stream_uid(None, dir.path(), None).unwrap(), first);
        assert_eq!(next_run(dir.path()).unwrap(), 1);
        assert_eq!(next_run(dir.path()).unwrap(), 2);
        std::fs::write(dir.path().join(RUN_FILE), "junk").unwrap();
        assert!(
            next_run(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a run number")
        );
    }
}
