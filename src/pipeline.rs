//! Wiring: source → dedup → enrich → batcher → sinks, and acks back into the filters. The
//! stages live in their own modules (the dedup stage, which owns the filter ring and commits
//! after every sink acknowledged, in `dedup::stage`, its control loop and shutdown in
//! `dedup::drive`); this module opens them, connects their queues, and returns the report. It
//! never names a particular sink.
//!
//! Every queue is bounded, so a slow sink's backpressure reaches the source and nothing accepted
//! is dropped; the bounds, what happens when each is full, and the duplicate bound after a crash
//! that follows from them (`(SINK_QUEUE + 7) × batch_size` + one hand-off) are in
//! docs/architecture.md ("Queues and what happens when they are full").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{error, info};

use crate::batch::{self, Encoders, Fanout, Limits};
use crate::config::{Config, OutputFormat, SourceConfig};
use crate::dedup::drive::{self, Control, Io};
use crate::dedup::stage::{DedupStage, StageSettings};
use crate::dedup::{DedupError, Ring, RingConfig};
use crate::encode::json::LineEncoder;
use crate::encode::proto::ProtoEncoder;
use crate::enrich::Enricher;
use crate::flow::{AcceptedChunk, Batch, BatchAck, HANDOFF_RECORDS};
use crate::ha::{Fence, Link};
use crate::health::Health;
use crate::sink::{self, SinkContext, SinkEnd, SinkError, SinkHealth, Worker};
use crate::source::{self, SourceError, SourceHealth, SourceMsg, replay::ReplayStats};

pub use crate::dedup::{EndReason, Tally};

/// Hand-offs queued between the source and the dedup stage. Few: a hand-off's records are
/// slices of the list page or watch read they came in, so each queued one can keep a page's
/// buffer (about half a MiB) alive. Four keep the peak RSS about 4 MiB lower than sixteen did,
/// at the same CPU per event (docs/performance.md), and still absorb a rotation's stall.
const SOURCE_QUEUE: usize = 4;

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
    Enrich(#[source] tokio::task::JoinError),
}

impl PipelineError {
    /// The API server could not be reached: an outage, which a later attempt may get past.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PipelineError::Source(SourceError::Unreachable { .. }))
    }
}

#[derive(Debug)]
pub struct Report {
    pub end: EndReason,
    pub tally: Tally,
}

/// Runs the pipe until its input ends, `shutdown` is cancelled, stdout closes or the source
/// fails for good. `reopen` is raised by SIGHUP and read by the file sinks; `health.source` is
/// marked ready once the source's first complete list is delivered; every sink registers its
/// state in `health.sinks` (failing or accepting) when it starts.
///
/// With leader election (`link`), the pipe starts standing by and follows its standing: it
/// emits only while it leads, publishes its watermark, and ends when it stops leading.
pub async fn run(
    config: &Config,
    shutdown: CancellationToken,
    reopen: Arc<AtomicBool>,
    health: Health,
    shared_cluster: Option<&source::kube::Cluster>,
    link: Option<Link>,
) -> Result<Report, PipelineError> {
    health.sinks.reset();
    let (standing, published, fence) = match link {
        Some(l) => (Some(l.standing), Some(l.watermark), l.fence),
        None => (None, None, Fence::default()),
    };
    // The source first: a wrong input path or an unreachable cluster must not leave a new
    // filter file behind.
    let (source_tx, source_rx) = mpsc::channel::<SourceMsg>(SOURCE_QUEUE);
    let replay_stats = Arc::new(ReplayStats::default());
    let cluster = open_source(
        config,
        source_tx,
        &health.source,
        &replay_stats,
        shared_cluster,
    )
    .await?;
    let ring = open_ring(config)?;
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let ctx = sink_context(config, &reopen, cluster.as_ref());
    let sinks = open_sinks(config, &ctx, ack_tx, &health.sinks, &fence).await?;

    // Chunks no larger than a batch, and no more of them queued than one batch holds.
    let chunk = config.batch_size.clamp(1, HANDOFF_RECORDS);
    let chunks_queued = (config.batch_size / chunk).max(1);
    let (accepted_tx, accepted_rx) = mpsc::channel::<AcceptedChunk>(chunks_queued);
    let (accepted_rx, enrich_task) =
        start_enrich(config, cluster.as_ref(), accepted_rx, chunk, chunks_queued);
    let batcher = start_batcher(config, accepted_rx, sinks.queues, sinks.protobuf);
    let stage = DedupStage::new(ring, stage_settings(config, chunk), health.source.clone());
    let (interrupt, _interrupt_ends) = interrupt(&shutdown, &fence);

    // Once the source and sinks are open: a start that fails prints its one error line alone.
    info!(config = %config.redacted(), "effective configuration");
    info!(generations = stage.generations(), "pipeline running");
    let source_health = health.source.clone();
    let io = Io {
        source: source_rx,
        accepted: accepted_tx,
        acks: ack_rx,
        standing,
        published,
    };
    let control = Control {
        shutdown,
        interrupt,
        stepped_down: fence.shut(),
        sync_interval: config.sync_interval,
        shutdown_timeout: config.shutdown_timeout,
        malformed: Box::new(move || malformed(&replay_stats, &source_health)),
    };
    let mut stopped = drive::run(stage, io, control).await?;
    let end = join(stopped.end, batcher, sinks.workers, &stopped.stage).await;
    let tally = stopped.finish(end).await?;
    if let Some(e) = stopped.source_failure.take() {
        return Err(e.into());
    }
    enrichment_outcome(enrich_task).await?;
    Ok(Report { end, tally })
}

/// Starts the source; returns the cluster it watches, if any.
async fn open_source(
    config: &Config,
    source_tx: mpsc::Sender<SourceMsg>,
    health: &Arc<SourceHealth>,
    replay_stats: &Arc<ReplayStats>,
    shared_cluster: Option<&source::kube::Cluster>,
) -> Result<Option<source::kube::Cluster>, PipelineError> {
    match &config.source {
        SourceConfig::Replay(input) => {
            source::replay::spawn(input, source_tx, replay_stats.clone())?;
            Ok(None)
        }
        SourceConfig::Kube(kube) => {
            let connected = match shared_cluster {
                Some(c) => c.clone(),
                None => source::kube::connect(kube).await?,
            };
            source::kube::start(
                kube,
                &connected,
                source_tx,
                health.clone(),
                config.ha.is_some(),
            )
            .await?;
            Ok(Some(connected))
        }
    }
}

fn open_ring(config: &Config) -> Result<Ring, DedupError> {
    let ring = Ring::open(RingConfig {
        dir: config.persistence_path.clone(),
        generations: config.generations,
        capacity: config.filter_capacity,
        error_rate: config.filter_error_rate,
        rotation_interval: config.rotation_interval,
    })?;
    // The estimated-rate alert compares each generation with this.
    metrics::gauge!(crate::metrics::DEDUP_TARGET_FP_RATE).set(config.filter_error_rate);
    Ok(ring)
}

/// What the sinks are opened with. The cluster's UID (S3 object keys) is asked of the API
/// server only when a sink needs it.
fn sink_context<'a>(
    config: &'a Config,
    reopen: &'a Arc<AtomicBool>,
    cluster: Option<&source::kube::Cluster>,
) -> SinkContext<'a> {
    SinkContext {
        state_dir: &config.persistence_path,
        cluster_name: config.cluster_name.as_deref(),
        limits: Limits {
            max_events: config.batch_size,
            max_bytes: config.batch_max_bytes,
            max_wait: config.batch_interval,
        },
        dead_letter_dir: config.dead_letter_dir.as_deref(),
        refused_retry_interval: config.refused_retry_interval,
        reopen,
        cluster_uid: cluster.map(|c| {
            let client = c.client.clone();
            Box::new(
                move || -> futures::future::BoxFuture<'static, Option<String>> {
                    let client = client.clone();
                    Box::pin(async move { source::kube::cluster_uid(&client).await })
                },
            ) as Box<sink::ClusterUid>
        }),
    }
}

/// The started sinks: each one's queue, its worker, and whether any wants protobuf records.
struct Sinks {
    queues: Vec<mpsc::Sender<Arc<Batch>>>,
    workers: Vec<Worker>,
    protobuf: bool,
}

/// Opens every configured sink, gives it its own queue, and starts it. Only the workers hold
/// ack senders afterwards: the ack channel closes when the last one ends.
async fn open_sinks(
    config: &Config,
    ctx: &SinkContext<'_>,
    ack_tx: mpsc::UnboundedSender<BatchAck>,
    health: &SinkHealth,
    fence: &Fence,
) -> Result<Sinks, SinkError> {
    let mut sinks = Sinks {
        queues: Vec::with_capacity(config.sinks.len()),
        workers: Vec::with_capacity(config.sinks.len()),
        protobuf: false,
    };
    for (index, sink_config) in config.sinks.iter().enumerate() {
        let sink = sink::open(sink_config, ctx).await?;
        sinks.protobuf |= sink.wants_protobuf();
        let (tx, rx) = mpsc::channel(sink::SINK_QUEUE);
        sinks.queues.push(tx);
        let worker = sink.start(index, rx, ack_tx.clone(), health, fence.clone())?;
        sinks.workers.push(worker);
    }
    Ok(sinks)
}

/// Enrichment sits between the dedup stage and the batcher, in order, when it is on.
fn start_enrich(
    config: &Config,
    cluster: Option<&source::kube::Cluster>,
    accepted_rx: mpsc::Receiver<AcceptedChunk>,
    chunk: usize,
    chunks_queued: usize,
) -> (mpsc::Receiver<AcceptedChunk>, Option<JoinHandle<()>>) {
    let (Some(enrich), Some(cluster)) = (&config.enrich, cluster) else {
        return (accepted_rx, None);
    };
    let (enriched_tx, enriched_rx) = mpsc::channel::<AcceptedChunk>(chunks_queued);
    let enricher = Arc::new(Enricher::new(cluster.client.clone(), enrich));
    let task = tokio::spawn(enricher.run(accepted_rx, enriched_tx, chunk));
    (enriched_rx, Some(task))
}

fn start_batcher(
    config: &Config,
    accepted_rx: mpsc::Receiver<AcceptedChunk>,
    queues: Vec<mpsc::Sender<Arc<Batch>>>,
    protobuf: bool,
) -> JoinHandle<()> {
    let encoders = Encoders {
        lines: LineEncoder::new(config.format, config.cluster_name.as_deref()),
        proto: protobuf.then(|| ProtoEncoder::new(config.cluster_name.as_deref())),
    };
    tokio::spawn(batch::run(
        accepted_rx,
        Fanout(queues),
        encoders,
        Limits {
            max_events: config.batch_size,
            max_bytes: config.batch_max_bytes,
            max_wait: config.batch_interval,
        },
    ))
}

fn stage_settings(config: &Config, chunk: usize) -> StageSettings {
    StageSettings {
        priors: config.format == OutputFormat::Eventrouter,
        emit_deleted: config.emit_deleted,
        sinks: config.sinks.len(),
        source: match config.source {
            SourceConfig::Kube(_) => "kube",
            SourceConfig::Replay(_) => "replay",
        },
        by_reason: config.metrics_by_reason,
        generations: config.generations,
        replica: match (&config.ha, &config.source) {
            (Some(ha), SourceConfig::Kube(kube)) => {
                Some((kube.namespaces.len().max(1), ha.standby_max_bytes))
            }
            _ => None,
        },
        chunk,
    }
}

/// What ends a wait for room in the pipe: a signal, or this replica stepping down (its sinks
/// are fenced, so the room would never come). The guard cancels it when the pipe ends.
fn interrupt(shutdown: &CancellationToken, fence: &Fence) -> (CancellationToken, DropGuard) {
    let interrupt = shutdown.child_token();
    if let Some(shut) = fence.shut() {
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shut.cancelled() => interrupt.cancel(),
                () = interrupt.cancelled() => {}
            }
        });
    }
    let guard = interrupt.clone().drop_guard();
    (interrupt, guard)
}

/// Waits for the batcher and the sink workers when they finished on their own (the ack
/// channel closed, so the joins do not wait); a closed stdout ends the run as such.
async fn join(
    end: EndReason,
    batcher: JoinHandle<()>,
    workers: Vec<Worker>,
    stage: &DedupStage,
) -> EndReason {
    if !end.sinks_finished() {
        return end;
    }
    let _ = batcher.await;
    let mut end = end;
    for worker in workers {
        if let Some(SinkEnd::StdoutClosed) = worker.join().await {
            info!(
                in_flight = stage.in_flight(),
                "stdout closed by its reader; events in flight stay uncommitted"
            );
            end = EndReason::StdoutClosed;
        }
    }
    end
}

/// A stage that panicked looks to the batcher like input that ended: say so instead.
async fn enrichment_outcome(task: Option<JoinHandle<()>>) -> Result<(), PipelineError> {
    if let Some(task) = task.filter(|t| t.is_finished())
        && let Err(e) = task.await
        && e.is_panic()
    {
        error!(error = %e, "the enrichment stage failed; undelivered events stay uncommitted");
        return Err(PipelineError::Enrich(e));
    }
    Ok(())
}

fn malformed(replay: &ReplayStats, source: &SourceHealth) -> u64 {
    replay.malformed.load(Ordering::Relaxed) + source.malformed.load(Ordering::Relaxed)
}
