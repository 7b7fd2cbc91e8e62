//! Wiring: source → dedup → batcher → sinks, and acks back into the filters; shutdown.
//!
//! The dedup stage owns the filter ring and is the only place that touches it: it checks each
//! record against the ring and the keys in flight, and commits a batch's keys when every
//! configured sink has acknowledged that batch (it counts the acks per batch sequence number).
//! Commit follows delivery, so a crash at any point replays at most what was in flight and
//! never loses an event.
//!
//! Queues, their bounds and what happens when one is full:
//! - source → dedup: `SOURCE_QUEUE` hand-offs of up to 256 records. Full: the source blocks
//!   (the replay reader stops reading; a watch stops pulling from the API server).
//! - dedup → batcher: `batch_size` records. Full: the dedup stage waits, so the source queue
//!   fills.
//! - with `--enrich`, dedup → enrichment → batcher: `batch_size` records, then at most
//!   `enrich_concurrency` being looked up, then `batch_size` more. Full: as above.
//! - batcher → each sink: `sink::SINK_QUEUE` (4) batches per sink, shared between sinks as
//!   `Arc<Batch>`. Full: the batcher waits on that sink, so a healthy sink runs at most four
//!   batches ahead of a failing one (stdout keeps flowing while S3 is down until then), then
//!   the whole pipe pauses. Nothing accepted is dropped.
//! - sinks → dedup (acks): unbounded, but never longer than the batches in flight.
//!
//! Hence at most `SINK_QUEUE + 4` batches of events await their last ack: in the dedup → batcher
//! queue, in the open batch, the batch the batcher is handing over, the slowest sink's queue,
//! and the batch that sink is writing. Acks are applied between source hand-offs, so
//! accepted-but-uncommitted events stay within `(SINK_QUEUE + 4) × batch_size` + one hand-off
//! (256), 4,256 at the defaults: the bound on duplicates after a crash. Memory: each sink
//! queue holds up to `SINK_QUEUE` batches of at most `batch_max_bytes` encoded bytes (plus the
//! protobuf records when S3 writes protobuf), shared, so about `(SINK_QUEUE + 2) ×
//! min(batch_size × event size, batch_max_bytes)` in all: about 3 MB at the defaults with 1 KiB
//! events, at most 48 MiB however large the events. Enrichment adds its queue and the events
//! it holds (`batch_size` + `enrich_concurrency`) to the duplicate bound.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lru::LruCache;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::batch::{self, Accepted, Encoders, Fanout, Limits};
use crate::config::{Config, ObjectFormat, OutputFormat, SinkConfig, SourceConfig};
use crate::dedup::{DedupError, Ring, RingConfig};
use crate::encode::json::LineEncoder;
use crate::encode::proto::ProtoEncoder;
use crate::enrich::Enricher;
use crate::event::{EventRecord, OccurrenceKey, RawJson};
use crate::health::Health;
use crate::metrics::{
    DEDUP_CORRUPT_FILES, DEDUP_FILL_RATIO, DEDUP_GENERATIONS, DUPLICATES_DROPPED, EVENTS_RECEIVED,
    LAST_EVENT_TIMESTAMP, MALFORMED_EVENTS, ReasonCounters,
};
use crate::sink::{self, BatchAck, LineSink, SinkEnd, SinkError};
use crate::source::{self, SourceBatch, SourceError, SourceHealth, SourceMsg, replay::ReplayStats};

/// Hand-offs queued between the source and the dedup stage.
const SOURCE_QUEUE: usize = 16;

/// Objects whose last version is remembered for eventrouter's `old_event`. Events live an hour
/// in the API server; this covers the busy part of that window in a few MiB.
const PRIOR_VERSIONS: usize = 4096;

/// Failures that stop the pipe before or while it runs. Start-up errors are not retryable.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Dedup(#[from] DedupError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The enrichment stage ended on its own; what it held stays uncommitted for the next run.
    #[error("the enrichment stage failed: {0}")]
    Enrich(String),
}

/// Why the pipe stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The replay input ended and everything read was delivered.
    InputEnded,
    /// SIGTERM or SIGINT, and everything accepted was delivered.
    Signal,
    /// stdout's reader went away; what was in flight stays uncommitted for the next run.
    StdoutClosed,
    /// The shutdown timeout passed with events still in flight (they are delivered again later).
    ShutdownTimeout,
}

/// What a run did, for the final log line and the tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub received: u64,
    pub duplicates: u64,
    pub deleted_skipped: u64,
    pub emitted: u64,
    pub committed: u64,
    /// Emitted events every sink acknowledged; `emitted - delivered` were accepted and not
    /// delivered when the pipe ended (deletions count here too, with `--emit-deleted`).
    pub delivered: u64,
}

impl Tally {
    /// Accepted events that did not reach every sink: the next run delivers them again.
    pub fn undelivered(&self) -> u64 {
        self.emitted.saturating_sub(self.delivered)
    }
}

#[derive(Debug)]
pub struct Report {
    pub end: EndReason,
    pub tally: Tally,
}

/// In-flight keys are already uniform hashes: use their low bits instead of hashing again.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type KeySet = HashSet<OccurrenceKey, BuildHasherDefault<KeyHasher>>;

/// The dedup stage's phases. Draining: no more input; waiting for the last acks.
enum Phase {
    Running,
    Draining { deadline: Instant },
}

struct DedupStage {
    ring: Ring,
    in_flight: KeySet,
    /// Scratch for `Ring::contains_many`, kept to avoid an allocation per hand-off.
    keys: Vec<OccurrenceKey>,
    in_ring: Vec<bool>,
    flushing: Option<tokio::task::JoinHandle<()>>,
    priors: Option<LruCache<(String, String), RawJson>>,
    emit_deleted: bool,
    tally: Tally,
    /// Acks received per batch sequence number, until every sink has acknowledged it.
    acks: HashMap<u64, usize>,
    /// How many sinks must acknowledge a batch before its keys are committed.
    sinks: usize,
    /// Events of batches every sink acknowledged. Sinks handle batches in order, so batches
    /// complete in order: everything emitted before a point is delivered once this reaches the
    /// emitted count at that point.
    acked_events: u64,
    /// The emitted count when the source's first complete list had been received.
    ready_at: Option<u64>,
    /// A commit failed because the full newest generation could not rotate: the pipe stops.
    failed: Option<DedupError>,
    meters: StageMeters,
}

/// The dedup stage's metric handles, obtained once; counters move once per hand-off.
struct StageMeters {
    received: metrics::Counter,
    duplicates: metrics::Counter,
    last_event: metrics::Gauge,
    generations: metrics::Gauge,
    /// One per generation slot, newest first, so the series stay bounded across rotations.
    fill_ratio: Vec<metrics::Gauge>,
    corrupt: metrics::Counter,
    malformed: metrics::Counter,
    by_reason: Option<ReasonCounters>,
}

impl StageMeters {
    fn new(source: &'static str, generations: usize, by_reason: bool) -> Self {
        StageMeters {
            received: metrics::counter!(EVENTS_RECEIVED, "source" => source),
            duplicates: metrics::counter!(DUPLICATES_DROPPED),
            last_event: metrics::gauge!(LAST_EVENT_TIMESTAMP),
            generations: metrics::gauge!(DEDUP_GENERATIONS),
            fill_ratio: (0..generations)
                .map(|g| metrics::gauge!(DEDUP_FILL_RATIO, "generation" => g.to_string()))
                .collect(),
            corrupt: metrics::counter!(DEDUP_CORRUPT_FILES),
            malformed: metrics::counter!(MALFORMED_EVENTS),
            by_reason: by_reason.then(ReasonCounters::default),
        }
    }
}

impl DedupStage {
    /// Sends the new occurrences of `batch` on; returns false if shutdown interrupted it.
    async fn accept(
        &mut self,
        batch: SourceBatch,
        out: &mpsc::Sender<Accepted>,
        shutdown: &CancellationToken,
    ) -> bool {
        // The ring answers for the whole hand-off at once, which lets it overlap the cache
        // misses of consecutive keys. Commits only happen between hand-offs, so the answers
        // stay true while the loop runs.
        self.keys.clear();
        self.keys.extend(batch.iter().map(|r| r.key));
        let mut in_ring = std::mem::take(&mut self.in_ring);
        self.ring.contains_many(&self.keys, &mut in_ring);
        if !batch.is_empty() {
            self.meters.received.increment(batch.len() as u64);
            self.meters.last_event.set(unix_seconds());
        }
        let duplicates_before = self.tally.duplicates;
        let keep_going = self.accept_checked(batch, &in_ring, out, shutdown).await;
        self.meters
            .duplicates
            .increment(self.tally.duplicates - duplicates_before);
        self.in_ring = in_ring;
        keep_going
    }

    async fn accept_checked(
        &mut self,
        batch: SourceBatch,
        in_ring: &[bool],
        out: &mpsc::Sender<Accepted>,
        shutdown: &CancellationToken,
    ) -> bool {
        for (record, &in_ring) in batch.into_iter().zip(in_ring) {
            self.tally.received += 1;
            let prior = self.remember(&record);
            if !record.is_occurrence() {
                if !self.emit_deleted {
                    self.tally.deleted_skipped += 1;
                    continue;
                }
            } else if in_ring || self.in_flight.contains(&record.key) {
                self.tally.duplicates += 1;
                continue;
            } else {
                self.in_flight.insert(record.key);
            }
            let key = record.is_occurrence().then_some(record.key);
            // Fast path: room in the queue. Only a full queue needs to watch for shutdown.
            let permit = match out.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Closed(())) => return false,
                Err(mpsc::error::TrySendError::Full(())) => tokio::select! {
                    permit = out.reserve() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return false,
                    },
                    () = shutdown.cancelled() => {
                        // Never handed on: forget it so the next run delivers it.
                        if let Some(k) = key {
                            self.in_flight.remove(&k);
                        }
                        return false;
                    }
                },
            };
            if let Some(by_reason) = &mut self.meters.by_reason
                && key.is_some()
            {
                by_reason.count(record.raw.get());
            }
            permit.send(Accepted {
                record,
                prior,
                enrichment: None,
            });
            self.tally.emitted += 1;
        }
        true
    }

    /// Records the latest version of the record's object, returning the one before it.
    fn remember(&mut self, record: &EventRecord) -> Option<RawJson> {
        let priors = self.priors.as_mut()?;
        priors.put(
            (record.namespace.clone(), record.name.clone()),
            record.raw.clone(),
        )
    }

    /// Marks the pipe ready once everything of the first complete list is delivered.
    fn check_ready(&mut self, health: &SourceHealth) {
        if let Some(at) = self.ready_at
            && self.acked_events >= at
        {
            self.ready_at = None;
            health.set_ready();
            info!(
                delivered = self.acked_events,
                "initial list delivered; ready"
            );
        }
    }

    /// Counts one sink's ack; commits the batch when it was the last sink to have it.
    fn ack(&mut self, ack: BatchAck) {
        let seq = ack.batch.seq;
        let count = self.acks.entry(seq).or_insert(0);
        *count += 1;
        if *count < self.sinks {
            return;
        }
        self.acks.remove(&seq);
        let batch = ack.batch;
        self.acked_events += batch.events as u64;
        if let Err(e) = self.ring.commit(&batch.keys) {
            // Delivered but not remembered: a later run delivers these again. Never a loss; but
            // the full generation cannot take more keys without dropping events, so stop.
            error!(error = %e, batch = seq, "cannot commit delivered events to the filters; stopping (they are delivered again by the next run)");
            self.failed.get_or_insert(e);
        } else {
            self.tally.committed += batch.keys.len() as u64;
        }
        for key in &batch.keys {
            self.in_flight.remove(key);
        }
    }

    /// The sync timer: rotate if due, then msync the dirty generations on a blocking thread,
    /// so the checks never wait for the disk. One flush at a time; a tick that finds the last
    /// one still running leaves the generations dirty for the next.
    fn sync(&mut self) {
        if let Err(e) = self.ring.rotate_if_due() {
            error!(error = %e, "filter rotation failed; keeping the current generation");
        }
        self.observe_ring();
        if self.flushing.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let flushes = self.ring.take_flushes();
        if flushes.is_empty() {
            return;
        }
        self.flushing = Some(tokio::task::spawn_blocking(move || {
            for flush in flushes {
                if let Err(e) = flush.run() {
                    error!(file = %flush.path().display(), error = %e, "filter flush failed; delivered events may be delivered again after a power loss");
                }
            }
        }));
    }

    /// Refreshes the filter gauges. Runs on the sync timer: the fill ratio counts the bits of
    /// every generation (a few MiB), too much for every hand-off and cheap every few seconds.
    fn observe_ring(&self) {
        let generations = self.ring.generations();
        self.meters.generations.set(generations.len() as f64);
        for (slot, gauge) in self.meters.fill_ratio.iter().enumerate() {
            let fill = generations
                .len()
                .checked_sub(slot + 1)
                .map_or(0.0, |i| generations[i].fill_ratio);
            gauge.set(fill);
        }
        self.meters.corrupt.absolute(self.ring.quarantined_total());
    }

    /// The last flush, on the way out: waits for a running one, then syncs what is left.
    async fn flush_all(&mut self) -> Result<(), DedupError> {
        if let Some(running) = self.flushing.take() {
            let _ = running.await;
        }
        self.ring.flush()
    }
}

/// Runs the pipe until its input ends, `shutdown` is cancelled, stdout closes or the source
/// fails for good. `reopen` is raised by SIGHUP and read by the file sinks; `health.source` is
/// marked ready once the source's first complete list is delivered; every sink registers its
/// state in `health.sinks` (failing or accepting) when it starts.
pub async fn run(
    config: &Config,
    shutdown: CancellationToken,
    reopen: Arc<AtomicBool>,
    health: Health,
) -> Result<Report, PipelineError> {
    let sinks = health.sinks.clone();
    let health = health.source;
    // The source first: a wrong input path or an unreachable cluster must not leave a new
    // filter file behind.
    let (source_tx, mut source_rx) = mpsc::channel::<SourceMsg>(SOURCE_QUEUE);
    let replay_stats = Arc::new(ReplayStats::default());
    match &config.source {
        SourceConfig::Replay(input) => {
            source::replay::spawn(input, source_tx, replay_stats.clone())?
        }
        SourceConfig::Kube(kube) => source::kube::start(kube, source_tx, health.clone()).await?,
    }

    let ring = Ring::open(RingConfig {
        dir: config.persistence_path.clone(),
        generations: config.generations,
        capacity: config.filter_capacity,
        error_rate: config.filter_error_rate,
        rotation_interval: config.rotation_interval,
    })?;
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let mut queues = Vec::with_capacity(config.sinks.len());
    let mut workers = Vec::with_capacity(config.sinks.len());
    for (index, sink_config) in config.sinks.iter().enumerate() {
        let (tx, rx) = mpsc::channel(sink::SINK_QUEUE);
        queues.push(tx);
        let worker = match LineSink::open(sink_config, &reopen)? {
            Some(line) => {
                let state = sinks.register(&line.name());
                sink::spawn_line(line, index, rx, ack_tx.clone(), state)?
            }
            None => {
                let s3 = open_s3(config).await?;
                let state = sinks.register(&format!("s3 bucket {}", s3.bucket));
                sink::s3::spawn(s3, index, rx, ack_tx.clone(), state)
            }
        };
        workers.push(worker);
    }
    // Only the workers hold ack senders now: the channel closes when the last one ends.
    drop(ack_tx);

    let (accepted_tx, accepted_rx) = mpsc::channel::<Accepted>(config.batch_size);
    // Enrichment sits between the dedup stage and the batcher, in order, when it is on.
    let mut enrich_task = None;
    let accepted_rx = match (&config.enrich, &config.source) {
        (Some(enrich), SourceConfig::Kube(kube)) => {
            let (client, _) = source::kube::connect(kube).await?;
            let (enriched_tx, enriched_rx) = mpsc::channel::<Accepted>(config.batch_size);
            let enricher = Arc::new(Enricher::new(client, enrich));
            enrich_task = Some(tokio::spawn(enricher.run(accepted_rx, enriched_tx)));
            enriched_rx
        }
        _ => accepted_rx,
    };
    let protobuf =
        config.sinks.contains(&SinkConfig::S3) && config.s3.format == ObjectFormat::Protobuf;
    let encoders = Encoders {
        lines: LineEncoder::new(config.format, config.cluster_name.as_deref()),
        proto: protobuf.then(|| ProtoEncoder::new(config.cluster_name.as_deref())),
    };
    let batcher = tokio::spawn(batch::run(
        accepted_rx,
        Fanout(queues),
        encoders,
        Limits {
            max_events: config.batch_size,
            max_bytes: config.batch_max_bytes,
            max_wait: config.batch_interval,
        },
    ));

    let mut stage = DedupStage {
        ring,
        in_flight: KeySet::default(),
        keys: Vec::new(),
        in_ring: Vec::new(),
        flushing: None,
        priors: (config.format == OutputFormat::Eventrouter)
            .then(|| LruCache::new(NonZeroUsize::new(PRIOR_VERSIONS).unwrap_or(NonZeroUsize::MIN))),
        emit_deleted: config.emit_deleted,
        tally: Tally::default(),
        acks: HashMap::new(),
        sinks: config.sinks.len(),
        acked_events: 0,
        ready_at: None,
        failed: None,
        meters: StageMeters::new(
            match config.source {
                SourceConfig::Kube(_) => "kube",
                SourceConfig::Replay(_) => "replay",
            },
            config.generations,
            config.metrics_by_reason,
        ),
    };
    stage.observe_ring();
    let mut sync_timer = tokio::time::interval(config.sync_interval);
    sync_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    sync_timer.reset();

    let mut phase = Phase::Running;
    let mut accepted_tx = Some(accepted_tx);
    let mut end = EndReason::InputEnded;
    let mut source_failure: Option<SourceError> = None;
    // Once the source and sinks are open: a start that fails prints its one error line alone.
    info!(config = %config.redacted(), "effective configuration");
    info!(
        generations = stage.ring.generations().len(),
        "pipeline running"
    );
    loop {
        let draining_deadline = match phase {
            Phase::Draining { deadline } => Some(deadline),
            Phase::Running => None,
        };
        tokio::select! {
            biased;
            ack = ack_rx.recv() => match ack {
                Some(ack) => {
                    stage.ack(ack);
                    if stage.failed.is_some() {
                        break;
                    }
                    stage.check_ready(&health);
                }
                // Every sink worker is gone: they drained everything, or stdout closed.
                None => break,
            },
            _ = sync_timer.tick() => {
                stage.sync();
                stage.meters.malformed.absolute(
                    replay_stats.malformed.load(Ordering::Relaxed)
                        + health.malformed.load(Ordering::Relaxed),
                );
            }
            () = shutdown.cancelled(), if draining_deadline.is_none() => {
                info!("shutting down: delivering what is in flight");
                end = EndReason::Signal;
                phase = Phase::Draining { deadline: Instant::now() + config.shutdown_timeout };
                accepted_tx = None;
                source_rx.close();
            }
            msg = source_rx.recv(), if draining_deadline.is_none() => {
                let keep_going = match (msg, &accepted_tx) {
                    (Some(SourceMsg::Records(batch)), Some(tx)) => {
                        stage.accept(batch, tx, &shutdown).await
                    }
                    (Some(SourceMsg::InitialListSent), Some(_)) => {
                        stage.ready_at = Some(stage.tally.emitted);
                        stage.check_ready(&health);
                        true
                    }
                    (Some(SourceMsg::Failed(e)), _) => {
                        error!(error = %e, "the source cannot go on; delivering what is in flight, then stopping");
                        source_failure = Some(e);
                        false
                    }
                    _ => false,
                };
                if !keep_going {
                    if shutdown.is_cancelled() {
                        end = EndReason::Signal;
                    }
                    phase = Phase::Draining { deadline: Instant::now() + config.shutdown_timeout };
                    accepted_tx = None;
                    source_rx.close();
                }
            }
            () = sleep_until_opt(draining_deadline) => {
                warn!(
                    in_flight = stage.in_flight.len(),
                    "shutdown timeout passed; events in flight stay uncommitted and will be delivered again after restart"
                );
                end = EndReason::ShutdownTimeout;
                break;
            }
        }
    }
    drop(accepted_tx);
    if let Some(e) = stage.failed.take() {
        // Nothing more can be committed: end now, as after a shutdown timeout.
        let _ = stage.flush_all().await;
        return Err(e.into());
    }

    if end != EndReason::ShutdownTimeout {
        // Both have finished (the ack channel closed), so these joins do not wait.
        let _ = batcher.await;
        for worker in workers {
            if let Some(SinkEnd::StdoutClosed) = worker.join().await {
                info!(
                    in_flight = stage.in_flight.len(),
                    "stdout closed by its reader; events in flight stay uncommitted"
                );
                end = EndReason::StdoutClosed;
            }
        }
    }
    stage.flush_all().await?;
    let malformed = replay_stats.malformed.load(Ordering::Relaxed);
    stage
        .meters
        .malformed
        .absolute(malformed + health.malformed.load(Ordering::Relaxed));
    stage.tally.delivered = stage.acked_events;
    let t = &stage.tally;
    info!(
        received = t.received,
        emitted = t.emitted,
        duplicates = t.duplicates,
        deleted_skipped = t.deleted_skipped,
        committed = t.committed,
        malformed,
        end = ?end,
        "pipeline stopped"
    );
    if let Some(e) = source_failure {
        return Err(e.into());
    }
    // A stage that panicked looks to the batcher like input that ended: say so instead.
    if let Some(task) = enrich_task.filter(|t| t.is_finished())
        && let Err(e) = task.await
        && e.is_panic()
    {
        error!(error = %e, "the enrichment stage failed; undelivered events stay uncommitted");
        return Err(PipelineError::Enrich(e.to_string()));
    }
    Ok(Report {
        end,
        tally: stage.tally,
    })
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Connects the S3 sink: the stream id, this run's number, and a client. Runs after the ring is
/// open, so the persistence directory exists and is locked.
async fn open_s3(config: &Config) -> Result<sink::s3::S3Sink, SinkError> {
    let settings = &config.s3;
    let dir = &config.persistence_path;
    let discovered = match (&settings.uid, &config.source) {
        (None, SourceConfig::Kube(kube)) if !dir.join("stream-uid").exists() => {
            source::kube::cluster_uid(kube).await
        }
        _ => None,
    };
    let uid = sink::s3::stream_uid(settings.uid.as_deref(), dir, discovered)?;
    let run = sink::s3::next_run(dir)?;
    let client = sink::s3::client(&settings.connection).await;
    // Config validation guarantees a bucket when the S3 sink is on.
    let bucket = settings.bucket.clone().unwrap_or_default();
    info!(bucket = %bucket, uid = %uid, run, format = ?settings.format, "S3 sink ready");
    let layout = sink::s3::ObjectLayout {
        prefix: settings.prefix.clone(),
        uid,
        run,
        format: settings.format,
    };
    Ok(sink::s3::S3Sink::new(client, settings, bucket, layout))
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_keys_hash_by_their_low_bits() {
        let mut set = KeySet::default();
        let a = OccurrenceKey::new("ns", "a", 1);
        set.insert(a);
        assert!(set.contains(&a));
        assert!(!set.contains(&OccurrenceKey::new("ns", "a", 2)));
    }

    fn batch(seq: u64, key: OccurrenceKey) -> Arc<batch::Batch> {
        Arc::new(batch::Batch {
            seq,
            bytes: b"{}\n".to_vec(),
            records: None,
            keys: vec![key],
            events: 1,
            opened_at: std::time::SystemTime::now(),
        })
    }

    #[test]
    fn a_batch_is_committed_only_when_every_sink_acked_it() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::open(RingConfig {
            dir: dir.path().to_path_buf(),
            generations: 2,
            capacity: 1000,
            error_rate: 1e-6,
            rotation_interval: std::time::Duration::from_secs(3600),
        })
        .unwrap();
        let (a, b) = (
            OccurrenceKey::new("d", "a", 1),
            OccurrenceKey::new("d", "b", 1),
        );
        let mut stage = DedupStage {
            ring,
            in_flight: [a, b].into_iter().collect(),
            keys: Vec::new(),
            in_ring: Vec::new(),
            flushing: None,
            priors: None,
            emit_deleted: false,
            tally: Tally::default(),
            acks: HashMap::new(),
            sinks: 2,
            acked_events: 0,
            ready_at: None,
            failed: None,
            meters: StageMeters::new("replay", 2, false),
        };
        let in_ring = |stage: &DedupStage, key| {
            let mut out = Vec::new();
            stage.ring.contains_many(&[key], &mut out);
            out[0]
        };
        let (first, second) = (batch(0, a), batch(1, b));
        // stdout has both batches, S3 only the first.
        stage.ack(BatchAck {
            sink: 0,
            batch: first.clone(),
        });
        stage.ack(BatchAck {
            sink: 0,
            batch: second.clone(),
        });
        assert!(!in_ring(&stage, a), "committed with one sink of two");
        assert_eq!(stage.acked_events, 0);
        stage.ack(BatchAck {
            sink: 1,
            batch: first,
        });
        assert!(in_ring(&stage, a) && !in_ring(&stage, b));
        assert!(!stage.in_flight.contains(&a) && stage.in_flight.contains(&b));
        assert_eq!((stage.acked_events, stage.tally.committed), (1, 1));
        stage.ack(BatchAck {
            sink: 1,
            batch: second,
        });
        assert!(in_ring(&stage, b));
        assert!(stage.acks.is_empty() && stage.in_flight.is_empty());
    }
}
