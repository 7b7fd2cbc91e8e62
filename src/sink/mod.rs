//! Sinks: where encoded batches go, and the acknowledgements that let the pipe commit them.
//!
//! Every sink has the same shape: [`open`] builds it from its `SinkConfig` (nothing here or in
//! the pipeline names a particular sink beyond that one match), and [`Sink::start`] registers
//! its health and runs its worker on its own bounded queue of batches (shared as `Arc<Batch>`,
//! so a batch's bytes exist once however many sinks hold it). A worker acknowledges each batch,
//! in order, once it has it durably; the dedup stage counts the acks per batch and commits the
//! batch's keys when every sink has acknowledged it.
//!
//! Most sinks deliver one batch at a time and implement [`Deliver`] (on the runtime) or
//! [`DeliverBlocking`] (blocking I/O, on a thread); the shared drivers retry them under the one
//! [`retry::Policy`] and acknowledge. A sink whose acknowledgements do not follow its writes
//! one to one runs its own loop over [`SinkIo`] with the same policy.
//!
//! A sink that fails keeps retrying the same batch, its queue fills, and the batcher waits: the
//! others run ahead by at most their queue bound, then the whole pipe pauses (backpressure up to
//! the source).

pub mod classify;
pub mod dead_letter;
pub mod fanout;
pub mod file;
pub mod gate;
pub mod kafka;
pub mod otlp;
pub mod retry;
pub mod s3;
pub mod stdout;
pub mod transport;
pub mod webhook;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::batch::Limits;
use crate::config::SinkConfig;
use crate::flow::{Batch, BatchAck};
pub use retry::{Failure, MAX_RETRY_DELAY, Next, Policy, retry_backoff};

/// Batches queued per sink, beside the one its worker is writing. Four lets a fast sink run
/// four batches ahead of a slow one before the pipe pauses, and keeps the events in flight (and
/// so the duplicates a crash can cause) small: see the bounds in `pipeline.rs`.
pub const SINK_QUEUE: usize = 4;

/// Failures to open or start a sink. Not retryable: each names what to fix. Failures while
/// running are [`Failure`]s, which the sink retries.
#[derive(Debug, Error)]
pub enum SinkError {
    #[error(
        "cannot open output file {path}: {source}; check that the directory exists and is writable"
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the sink thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    S3(#[from] s3::S3Error),
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaSetupError),
    #[error(transparent)]
    Http(#[from] transport::TransportError),
    #[error(transparent)]
    DeadLetter(#[from] dead_letter::DeadLetterError),
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

    /// Forgets the sinks of a pipe that ended, before a new pipe registers its own.
    pub fn reset(&self) {
        self.lock().clear();
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

/// Looks the cluster's UID up (the kube-system namespace's), `None` when it cannot be read.
/// A function rather than the UID itself, so the API server is asked only by a sink that
/// needs it (the S3 sink without a stream id of its own yet).
pub type ClusterUid = dyn Fn() -> BoxFuture<'static, Option<String>> + Send + Sync;

/// What a sink is opened with besides its own settings: the parts of the pipe's configuration
/// a sink acts on, the SIGHUP flag, and a way to the cluster's UID when the source watches
/// one. No sink reads the whole `Config`, so what a sink depends on is written here.
pub struct SinkContext<'a> {
    /// Where a sink keeps its state files (the S3 sink's stream id and run number); locked by
    /// the filter ring, which opens first.
    pub state_dir: &'a Path,
    /// `--cluster-name`, which the Kafka sink sends as a record header.
    pub cluster_name: Option<&'a str>,
    /// The batcher's bounds: the S3 sink gathers batches into objects by the same bounds.
    pub limits: Limits,
    /// Where batches a sink refuses for good are written, when anywhere.
    pub dead_letter_dir: Option<&'a Path>,
    /// How often such a batch is tried again when there is no dead-letter directory.
    pub refused_retry_interval: Duration,
    /// Raised by SIGHUP; sinks that write files reopen them.
    pub reopen: &'a Arc<AtomicBool>,
    pub cluster_uid: Option<Box<ClusterUid>>,
}

/// Opens the sink `config` names. Configuration problems and unreachable setup (a file that
/// cannot be created, a state file that cannot be read) fail here, before the pipe runs.
pub async fn open(config: &SinkConfig, ctx: &SinkContext<'_>) -> Result<Sink, SinkError> {
    let sink = match config {
        SinkConfig::Stdout => Ok(stdout::open()),
        SinkConfig::File { path, fsync } => file::open(path, *fsync, ctx),
        SinkConfig::S3(settings) => s3::open(settings, ctx).await,
        SinkConfig::Kafka(settings) => kafka::open(settings, ctx),
        SinkConfig::Otlp(settings) => otlp::open(settings),
        SinkConfig::Http(settings) => webhook::open(settings),
    }?;
    let dead_letters = match ctx.dead_letter_dir {
        Some(dir) => Some(dead_letter::DeadLetters::open(dir)?),
        None => None,
    };
    Ok(sink.with_refusals(ctx.refused_retry_interval, dead_letters))
}

/// Delivers one batch at a time on the async runtime; the shared driver retries and acks.
pub trait Deliver: Send + 'static {
    /// Delivers `batch` durably; `Ok` means it may be acknowledged. Called again with the same
    /// batch after a failure.
    fn deliver(&mut self, batch: &Arc<Batch>) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// Delivers one batch at a time with blocking I/O, on a thread of its own.
pub trait DeliverBlocking: Send + 'static {
    fn deliver(&mut self, batch: &Arc<Batch>) -> Result<(), Failure>;
}

/// Where a sink worker sends its acknowledgements.
pub struct Acks {
    sink: usize,
    tx: mpsc::UnboundedSender<BatchAck>,
}

impl Acks {
    /// Acknowledges `batch`; false when the pipeline no longer listens (a forced shutdown).
    /// A sink acknowledges its batches in the order it received them.
    pub fn ack(&self, batch: Arc<Batch>) -> bool {
        self.tx
            .send(BatchAck {
                sink: self.sink,
                batch,
            })
            .is_ok()
    }
}

/// What a running sink worker is given: its queue, where its acks go, and its retry policy
/// (which also holds its health and metrics).
pub struct SinkIo {
    pub queue: mpsc::Receiver<Arc<Batch>>,
    pub acks: Acks,
    pub policy: Policy,
}

type Start = Box<dyn FnOnce(SinkIo) -> Result<Worker, SinkError> + Send>;

/// An opened sink, ready to start.
pub struct Sink {
    name: String,
    title: &'static str,
    label: &'static str,
    protobuf: bool,
    refused_delay: std::time::Duration,
    dead_letters: Option<dead_letter::DeadLetters>,
    start: Start,
}

impl Sink {
    /// A sink that delivers one batch at a time on the runtime, driven by [`run_async`].
    pub fn from_async<D: Deliver>(
        title: &'static str,
        label: &'static str,
        name: String,
        d: D,
    ) -> Self {
        Self::custom(title, label, name, move |io| {
            Ok(Worker::Task(tokio::spawn(run_async(d, io))))
        })
    }

    /// A sink that delivers one batch at a time with blocking I/O on its own thread.
    pub fn from_blocking<D: DeliverBlocking>(
        title: &'static str,
        label: &'static str,
        name: String,
        d: D,
    ) -> Self {
        Self::custom(title, label, name, move |io| {
            std::thread::Builder::new()
                .name(format!("sink-{label}"))
                .spawn(move || run_blocking(d, io))
                .map(Worker::Thread)
                .map_err(SinkError::Thread)
        })
    }

    /// A sink with its own worker loop (acks that do not follow each delivery one to one).
    pub fn custom(
        title: &'static str,
        label: &'static str,
        name: String,
        start: impl FnOnce(SinkIo) -> Result<Worker, SinkError> + Send + 'static,
    ) -> Self {
        Sink {
            name,
            title,
            label,
            protobuf: false,
            refused_delay: MAX_RETRY_DELAY,
            dead_letters: None,
            start: Box::new(start),
        }
    }

    /// How often a batch the sink refused for good is tried again, and the dead-letter
    /// directory that takes such a batch instead, when there is one.
    pub fn with_refusals(
        mut self,
        refused_delay: std::time::Duration,
        dead_letters: Option<dead_letter::DeadLetters>,
    ) -> Self {
        self.refused_delay = refused_delay;
        self.dead_letters = dead_letters;
        self
    }

    /// The batches this sink gets carry protobuf records as well as lines.
    pub fn with_protobuf(mut self) -> Self {
        self.protobuf = true;
        self
    }

    /// Its health name ("file /var/log/events.jsonl", "s3 bucket archive").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its metric label ("file", "s3").
    pub fn label(&self) -> &'static str {
        self.label
    }

    pub fn wants_protobuf(&self) -> bool {
        self.protobuf
    }

    /// Starts the worker: it takes batches from `queue` and acknowledges each on `acks` once
    /// it has it durably, as sink number `index`. The sink registers its health in `health`.
    ///
    /// `acks` is unbounded on purpose: the dedup stage may be blocked sending into the pipe
    /// while an ack is due, and the acks outstanding are bounded by the sink queues anyway.
    pub fn start(
        self,
        index: usize,
        queue: mpsc::Receiver<Arc<Batch>>,
        acks: mpsc::UnboundedSender<BatchAck>,
        health: &SinkHealth,
        gate: Arc<dyn gate::WriteGate>,
    ) -> Result<Worker, SinkError> {
        let state = health.register(&self.name);
        let io = SinkIo {
            queue,
            acks: Acks {
                sink: index,
                tx: acks,
            },
            policy: Policy::new(self.title, self.name, self.label, state)
                .with_refusals(self.refused_delay, self.dead_letters)
                .with_gate(gate),
        };
        (self.start)(io)
    }
}

/// How a sink worker ended.
#[derive(Debug)]
pub enum SinkEnd {
    /// Its queue closed: every batch it received was delivered and acknowledged.
    Drained,
    /// stdout's reader went away; batches from this one on were not delivered.
    StdoutClosed,
    /// This replica stopped leading: batches from this one on were left to the next leader.
    Fenced,
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

/// The worker of a [`Deliver`] sink: each batch until it is delivered, then its ack.
pub async fn run_async<D: Deliver>(mut sink: D, mut io: SinkIo) -> SinkEnd {
    while let Some(batch) = io.queue.recv().await {
        io.policy.queue_depth(io.queue.len());
        let started = Instant::now();
        if let Err(end) = deliver_retrying(&mut sink, &batch, &mut io.policy).await {
            return end;
        }
        io.policy.delivered(batch.events, started.elapsed());
        if !io.acks.ack(batch) {
            break;
        }
    }
    SinkEnd::Drained
}

/// Delivers one batch under the sink's policy: retried until it succeeds, or written to the
/// dead-letter directory when the peer refuses it for good and one is configured. `Err` when
/// the sink's reader went away.
pub async fn deliver_retrying<D: Deliver>(
    sink: &mut D,
    batch: &Arc<Batch>,
    policy: &mut Policy,
) -> Result<(), SinkEnd> {
    loop {
        if !policy.may_write() {
            return Err(SinkEnd::Fenced);
        }
        match sink.deliver(batch).await {
            Ok(()) => break,
            Err(failure) => {
                let failure = match policy.dead_letters_for(&failure) {
                    Some(letters) => {
                        let (label, reason) = (policy.label(), failure.message().to_string());
                        let letter = batch.clone();
                        let written = tokio::task::spawn_blocking(move || {
                            letters.write(label, &letter, &reason)
                        })
                        .await;
                        match dead_letter::outcome(written) {
                            Ok(path) => {
                                policy.dead_lettered(&failure, &path, batch.events);
                                break;
                            }
                            Err(retry) => retry,
                        }
                    }
                    None => failure,
                };
                match policy.failed(&failure) {
                    Next::RetryIn(delay) => tokio::time::sleep(delay).await,
                    Next::Stop => return Err(policy.stopped()),
                }
            }
        }
    }
    policy.succeeded();
    Ok(())
}

/// The worker of a [`DeliverBlocking`] sink, on its own thread.
pub fn run_blocking<D: DeliverBlocking>(mut sink: D, mut io: SinkIo) -> SinkEnd {
    while let Some(batch) = io.queue.blocking_recv() {
        io.policy.queue_depth(io.queue.len());
        let started = Instant::now();
        loop {
            if !io.policy.may_write() {
                return SinkEnd::Fenced;
            }
            match sink.deliver(&batch) {
                Ok(()) => break,
                Err(failure) => {
                    let failure = match io.policy.dead_letters_for(&failure) {
                        Some(letters) => {
                            let written =
                                letters.write(io.policy.label(), &batch, failure.message());
                            match dead_letter::outcome(Ok(written)) {
                                Ok(path) => {
                                    io.policy.dead_lettered(&failure, &path, batch.events);
                                    break;
                                }
                                Err(retry) => retry,
                            }
                        }
                        None => failure,
                    };
                    match io.policy.failed(&failure) {
                        Next::RetryIn(delay) => std::thread::sleep(delay),
                        Next::Stop => return io.policy.stopped(),
                    }
                }
            }
        }
        io.policy.succeeded();
        io.policy.delivered(batch.events, started.elapsed());
        if !io.acks.ack(batch) {
            break;
        }
    }
    SinkEnd::Drained
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
