//! The S3 sink: batches gathered into gzipped objects, each uploaded with a single PUT.
//!
//! Object keys are `{prefix}/{uid}/{YYYY}/{MM}/{DD}/{HH}/{first-event-time}-{seq}.{jsonl|pb}.gz`
//! (UTC; the time is when the object's first event was accepted). `seq` is `{run}-{batch}`: `run`
//! counts the process starts on this persistence directory (`stream-run`, bumped and fsynced at
//! startup), `batch` is the number of the object's first batch within the run. A key is fixed
//! when its object closes (`worker.rs` says when), so a
//! retried PUT overwrites its own earlier attempt instead of adding a copy, and a restart never
//! reuses a key of an earlier run, even when the clock steps back.
//!
//! A failing PUT is retried until it succeeds: transient failures (timeouts, connection errors,
//! 5xx, 429, SlowDown and throttling codes) with capped exponential backoff; other 4xx (a 403
//! from wrong credentials, a missing bucket) at the longest backoff delay, logged as errors,
//! because the operator fixes those without restarting the pod and expects the upload to go on.

mod client;
pub mod config;
mod layout;
mod state;
mod upload;
mod worker;

use thiserror::Error;
use tracing::info;

pub use client::{client, get_object};
pub use layout::ObjectLayout;
pub use state::{next_run, stream_uid};
pub use upload::S3Sink;

use super::{Sink, SinkContext, SinkError, Worker};
use crate::encode::object::ObjectFormat;
use config::S3Settings;

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

/// Opens the S3 sink: the stream id, this run's number, and a client. Runs after the filter
/// ring is open, so the persistence directory exists and is locked.
pub async fn open(settings: &S3Settings, ctx: &SinkContext<'_>) -> Result<Sink, SinkError> {
    let dir = ctx.state_dir;
    let discovered = match (&settings.uid, &ctx.cluster_uid) {
        (None, Some(lookup)) if !state::has_stream_uid(dir) => lookup().await,
        _ => None,
    };
    let uid = stream_uid(settings.uid.as_deref(), dir, discovered)?;
    let run = next_run(dir)?;
    let client = client(&settings.connection).await;
    let bucket = settings.bucket.clone();
    info!(bucket = %bucket, uid = %uid, run, format = ?settings.format, "S3 sink ready");
    let layout = ObjectLayout {
        prefix: settings.prefix.clone(),
        uid,
        run,
        format: settings.format,
    };
    let name = format!("s3 bucket {bucket}");
    let upload = S3Sink::new(client, settings, layout);
    let limits = ctx.limits;
    let sink = Sink::custom("S3", "s3", name, move |io| {
        Ok(Worker::Task(tokio::spawn(worker::run(upload, limits, io))))
    });
    Ok(if settings.format == ObjectFormat::Protobuf {
        sink.with_protobuf()
    } else {
        sink
    })
}
