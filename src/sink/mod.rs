//! Sinks: where encoded batches go, and the acknowledgement that lets the pipe commit them.
//!
//! Sinks do blocking I/O (write, fdatasync), so they run on a thread of their own rather than
//! on the async runtime. A batch is acknowledged only after every sink has it durably; the ack
//! carries the batch's keys back to the dedup stage, which commits them to the filters.

pub mod file;
pub mod stdout;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::batch::Batch;
use crate::config::SinkConfig;
use crate::event::OccurrenceKey;
use crate::health::{FailingSink, SinkHealth};
use crate::metrics::{EVENTS_EMITTED, SINK_ERRORS};
use file::FileSink;
use stdout::StdoutSink;

/// Sink failures. `Write` is retried (a full disk may be freed); `Closed` ends the pipe quietly;
/// `Open` at startup is fatal and names the path.
#[derive(Debug, Error)]
pub enum SinkError {
    #[error(
        "cannot open output file {path}: {source}; check that the directory exists and is writable"
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing to {sink} failed: {source}")]
    Write {
        sink: String,
        source: std::io::Error,
    },
    #[error("stdout was closed by its reader")]
    Closed,
    #[error("cannot start the sink thread: {0}")]
    Thread(std::io::Error),
}

/// The longest pause between retries of a failing sink: long enough not to spin on a full disk,
/// short enough that recovery is noticed promptly.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// A batch every sink has durably, on its way back to be committed.
#[derive(Debug)]
pub struct BatchAck {
    pub seq: u64,
    pub keys: Vec<OccurrenceKey>,
    pub events: usize,
}

/// One configured line sink.
pub enum LineSink {
    Stdout(StdoutSink),
    File(FileSink),
}

impl LineSink {
    pub fn open(
        config: &SinkConfig,
        reopen_requested: &Arc<AtomicBool>,
    ) -> Result<Self, SinkError> {
        Ok(match config {
            SinkConfig::Stdout => LineSink::Stdout(StdoutSink),
            SinkConfig::File { path, fsync } => {
                LineSink::File(FileSink::open(path, *fsync, reopen_requested.clone())?)
            }
        })
    }

    /// The `sink` label of its metrics: the kind, not the path, so a rename keeps the series.
    fn kind(&self) -> &'static str {
        match self {
            LineSink::Stdout(_) => "stdout",
            LineSink::File(_) => "file",
        }
    }

    fn name(&self) -> String {
        match self {
            LineSink::Stdout(_) => "stdout".into(),
            LineSink::File(f) => format!("file {}", f.path().display()),
        }
    }

    fn write(&mut self, bytes: &[u8], written: &mut usize) -> Result<(), SinkError> {
        match self {
            LineSink::Stdout(s) => s.write(bytes, written),
            LineSink::File(f) => f.write(bytes, written),
        }
    }
}

/// How the sink thread ended.
#[derive(Debug)]
pub enum SinkEnd {
    /// Its input closed: every batch it received was delivered and acknowledged.
    Drained,
    /// stdout's reader went away; batches from this one on were not delivered.
    StdoutClosed,
}

/// One sink with its metric handles, obtained once rather than per batch.
struct Instrumented {
    sink: LineSink,
    emitted: metrics::Counter,
    errors: metrics::Counter,
}

/// Starts the sink thread: it writes each batch to every sink, retrying failed writes with
/// capped exponential backoff, and acknowledges it on `acks`. A sink that is retrying counts
/// in `health` until it recovers, which takes the pod out of readiness.
///
/// `acks` is unbounded on purpose: the dedup stage may be blocked sending into the pipe while
/// an ack is due, and the number of acks outstanding is bounded by the batch queue anyway.
pub fn spawn(
    sinks: Vec<LineSink>,
    mut batches: mpsc::Receiver<Batch>,
    acks: mpsc::UnboundedSender<BatchAck>,
    health: Arc<SinkHealth>,
) -> Result<std::thread::JoinHandle<SinkEnd>, SinkError> {
    let mut sinks: Vec<Instrumented> = sinks
        .into_iter()
        .map(|sink| Instrumented {
            emitted: metrics::counter!(EVENTS_EMITTED, "sink" => sink.kind()),
            errors: metrics::counter!(SINK_ERRORS, "sink" => sink.kind()),
            sink,
        })
        .collect();
    std::thread::Builder::new()
        .name("sink-writer".into())
        .spawn(move || {
            while let Some(batch) = batches.blocking_recv() {
                for sink in sinks.iter_mut() {
                    if let Err(SinkError::Closed) = deliver(sink, &batch.bytes, &health) {
                        return SinkEnd::StdoutClosed;
                    }
                    sink.emitted.increment(batch.events as u64);
                }
                let ack = BatchAck {
                    seq: batch.seq,
                    keys: batch.keys,
                    events: batch.events,
                };
                if acks.send(ack).is_err() {
                    // The pipeline stopped listening (forced shutdown): nothing left to report to.
                    break;
                }
            }
            SinkEnd::Drained
        })
        .map_err(SinkError::Thread)
}

/// Writes one batch to one sink, retrying until it succeeds or stdout is closed. A failing sink
/// is logged when it starts failing and when it recovers, not on every attempt; every attempt
/// counts in `sink_errors_total`.
fn deliver(
    instrumented: &mut Instrumented,
    bytes: &[u8],
    health: &Arc<SinkHealth>,
) -> Result<(), SinkError> {
    let Instrumented { sink, errors, .. } = instrumented;
    let mut written = 0;
    let mut failures = 0u64;
    // Held from the first failure until this returns: the sink is unready meanwhile.
    let mut failing: Option<FailingSink> = None;
    let name = sink.name();
    let backoff = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(MAX_RETRY_DELAY)
        .with_jitter()
        .without_max_times();
    let result = (|| sink.write(bytes, &mut written))
        .retry(backoff)
        .sleep(std::thread::sleep)
        .when(|e| !matches!(e, SinkError::Closed))
        .notify(|e, delay| {
            failures += 1;
            errors.increment(1);
            if failures == 1 {
                failing = Some(health.failing());
                warn!(sink = %name, error = %e, "sink failing; retrying with backoff until it recovers");
            }
            tracing::debug!(sink = %name, error = %e, ?delay, attempt = failures, "sink retry");
        })
        .call();
    if result.is_ok() && failures > 0 {
        info!(sink = %name, failures, "sink recovered");
    }
    drop(failing);
    result
}
