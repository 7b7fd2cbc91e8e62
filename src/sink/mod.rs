//! Sinks: where encoded batches go, and the acknowledgements that let the pipe commit them.
//!
//! Every sink has its own bounded queue of batches (shared as `Arc<Batch>`, so a batch's bytes
//! exist once however many sinks hold it) and its own worker: line sinks do blocking I/O (write,
//! fdatasync) on a thread each; the S3 sink is a task on the async runtime. Each worker
//! acknowledges a batch when it has it durably; the dedup stage counts the acks per batch and
//! commits the batch's keys when every sink has acknowledged it. A sink that fails keeps
//! retrying the same batch, its queue fills, and the batcher waits: the others run ahead by at
//! most their queue bound, then the whole pipe pauses (backpressure up to the source).

pub mod dead_letter;
pub mod file;
mod interface;
pub mod otlp;
pub mod s3;
pub mod stdout;
pub mod transport;
pub mod webhook;

pub use interface::{Deliver, Failure};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BlockingRetryable, ExponentialBuilder};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::batch::Batch;
use crate::config::SinkConfig;
use file::FileSink;
use stdout::StdoutSink;

/// Batches queued per sink, beside the one its worker is writing. Four lets a fast sink run
/// four batches ahead of a slow one before the pipe pauses, and keeps the events in flight (and
/// so the duplicates a crash can cause) small: see the bounds in `pipeline.rs`.
pub const SINK_QUEUE: usize = 4;

/// Sink failures. `Write` is retried (a full disk may be freed); `Closed` ends the pipe quietly;
/// `Open`, `Thread` and `S3` at startup are fatal and name what failed.
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
    #[error(transparent)]
    S3(#[from] s3::S3Error),
}

/// The longest pause between retries of a failing sink: long enough not to spin on a full disk,
/// short enough that recovery is noticed promptly.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The backoff every sink retries with: 100 ms doubling to [`MAX_RETRY_DELAY`], with jitter so
/// that replicas of a fleet do not retry against a recovering store in lockstep.
pub fn retry_backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(MAX_RETRY_DELAY)
        .with_jitter()
        .without_max_times()
}

/// One sink has a batch durably.
#[derive(Debug)]
pub struct BatchAck {
    /// The sink's index in the configured list.
    pub sink: usize,
    pub batch: Arc<Batch>,
}

/// Whether one sink currently accepts writes, for `/readyz` and the logs.
#[derive(Debug)]
pub struct SinkState {
    name: String,
    failing: AtomicBool,
}

impl SinkState {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True from a sink's first failed attempt at a batch until an attempt succeeds.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

/// Every configured sink's state. The pipeline registers each sink when it opens it; the
/// operations surface reads it (`all_accepting` is the sinks' half of readiness).
#[derive(Debug, Default)]
pub struct SinkHealth {
    sinks: Mutex<Vec<Arc<SinkState>>>,
}

impl SinkHealth {
    pub fn register(&self, name: &str) -> Arc<SinkState> {
        let state = Arc::new(SinkState {
            name: name.to_owned(),
            failing: AtomicBool::new(false),
        });
        self.lock().push(state.clone());
        state
    }

    /// True when no sink is failing (also before any is registered).
    pub fn all_accepting(&self) -> bool {
        self.lock().iter().all(|s| !s.is_failing())
    }

    /// The names of the sinks that are failing now.
    pub fn failing(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|s| s.is_failing())
            .map(|s| s.name.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<SinkState>>> {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The metric label of a sink: its kind, so series stay few and stable.
pub fn metric_label(config: &SinkConfig) -> &'static str {
    match config {
        SinkConfig::Stdout => "stdout",
        SinkConfig::File { .. } => "file",
        SinkConfig::S3 => "s3",
        SinkConfig::Otlp(_) => "otlp",
        SinkConfig::Http(_) => "http",
    }
}

/// Metrics every sink records, under one naming scheme (`kube_event_pipe_sink_*`).
pub(crate) mod telemetry {
    use std::time::Duration;

    use crate::metrics::{BATCH_FLUSH_SECONDS, EVENTS_EMITTED, SINK_ERRORS, SINK_QUEUE_DEPTH};

    pub fn queue_depth(sink: &'static str, depth: usize) {
        metrics::gauge!(SINK_QUEUE_DEPTH, "sink" => sink).set(depth as f64);
    }

    pub fn error(sink: &'static str) {
        metrics::counter!(SINK_ERRORS, "sink" => sink).increment(1);
    }

    pub fn delivered(sink: &'static str, events: usize, took: Duration) {
        metrics::histogram!(BATCH_FLUSH_SECONDS, "sink" => sink).record(took.as_secs_f64());
        metrics::counter!(EVENTS_EMITTED, "sink" => sink).increment(events as u64);
    }
}

/// One configured line sink.
pub enum LineSink {
    Stdout(StdoutSink),
    File(FileSink),
}

impl LineSink {
    /// Opens a stdout or file sink; `None` for S3, which the pipeline connects itself.
    pub fn open(
        config: &SinkConfig,
        reopen_requested: &Arc<AtomicBool>,
    ) -> Result<Option<Self>, SinkError> {
        Ok(match config {
            SinkConfig::Stdout => Some(LineSink::Stdout(StdoutSink)),
            SinkConfig::File { path, fsync } => Some(LineSink::File(FileSink::open(
                path,
                *fsync,
                reopen_requested.clone(),
            )?)),
            SinkConfig::S3 | SinkConfig::Otlp(_) | SinkConfig::Http(_) => None,
        })
    }

    pub fn name(&self) -> String {
        match self {
            LineSink::Stdout(_) => "stdout".into(),
            LineSink::File(f) => format!("file {}", f.path().display()),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            LineSink::Stdout(_) => "stdout",
            LineSink::File(_) => "file",
        }
    }

    fn write(&mut self, bytes: &[u8], written: &mut usize) -> Result<(), SinkError> {
        match self {
            LineSink::Stdout(s) => s.write(bytes, written),
            LineSink::File(f) => f.write(bytes, written),
        }
    }
}

/// How a sink worker ended.
#[derive(Debug)]
pub enum SinkEnd {
    /// Its queue closed: every batch it received was delivered and acknowledged.
    Drained,
    /// stdout's reader went away; batches from this one on were not delivered.
    StdoutClosed,
}

/// A running sink worker.
pub enum Worker {
    Thread(std::thread::JoinHandle<SinkEnd>),
    Task(tokio::task::JoinHandle<SinkEnd>),
}

impl Worker {
    /// Waits for the worker to end (call only once its queue is closed).
    pub async fn join(self) -> Option<SinkEnd> {
        match self {
            Worker::Thread(h) => tokio::task::spawn_blocking(move || h.join().ok())
                .await
                .ok()
                .flatten(),
            Worker::Task(h) => h.await.ok(),
        }
    }
}

/// Starts a line sink's thread: it writes each batch of `queue`, retrying failed writes with
/// capped exponential backoff, and acknowledges it on `acks`.
///
/// `acks` is unbounded on purpose: the dedup stage may be blocked sending into the pipe while
/// an ack is due, and the acks outstanding are bounded by the sink queues anyway.
pub fn spawn_line(
    mut sink: LineSink,
    index: usize,
    mut queue: mpsc::Receiver<Arc<Batch>>,
    acks: mpsc::UnboundedSender<BatchAck>,
    state: Arc<SinkState>,
) -> Result<Worker, SinkError> {
    let thread_name = format!("sink-{}", sink.label());
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let label = sink.label();
            while let Some(batch) = queue.blocking_recv() {
                telemetry::queue_depth(label, queue.len());
                let started = Instant::now();
                if let Err(SinkError::Closed) = deliver(&mut sink, &batch.bytes, &state) {
                    return SinkEnd::StdoutClosed;
                }
                telemetry::delivered(label, batch.events, started.elapsed());
                if acks.send(BatchAck { sink: index, batch }).is_err() {
                    // The pipeline stopped listening (forced shutdown): nothing left to report to.
                    break;
                }
            }
            SinkEnd::Drained
        })
        .map(Worker::Thread)
        .map_err(SinkError::Thread)
}

/// Writes one batch to one sink, retrying until it succeeds or stdout is closed. A failing sink
/// is logged when it starts failing and when it recovers, not on every attempt.
fn deliver(sink: &mut LineSink, bytes: &[u8], state: &SinkState) -> Result<(), SinkError> {
    let mut written = 0;
    let mut failures = 0u64;
    let name = sink.name();
    let label = sink.label();
    let result = (|| sink.write(bytes, &mut written))
        .retry(retry_backoff())
        .sleep(std::thread::sleep)
        .when(|e| !matches!(e, SinkError::Closed))
        .notify(|e, delay| {
            failures += 1;
            telemetry::error(label);
            if failures == 1 {
                state.set_failing(true);
                warn!(sink = %name, error = %e, "sink failing; retrying with backoff until it recovers");
            }
            tracing::debug!(sink = %name, error = %e, ?delay, attempt = failures, "sink retry");
        })
        .call();
    if result.is_ok() && failures > 0 {
        state.set_failing(false);
        info!(sink = %name, failures, "sink recovered");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reports_failing_sinks_by_name() {
        let health = SinkHealth::default();
        assert!(health.all_accepting());
        let a = health.register("stdout");
        let b = health.register("s3");
        b.set_failing(true);
        assert!(!health.all_accepting());
        assert_eq!(health.failing(), vec!["s3".to_string()]);
        b.set_failing(false);
        a.set_failing(false);
        assert!(health.all_accepting());
    }
}
