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
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{Config, SourceConfig};
use crate::dedup::DedupError;
use crate::dedup::drive::{self, Control, Io};
use crate::dedup::stage::DedupStage;
use crate::enrich;
use crate::flow::{AcceptedChunk, HANDOFF_RECORDS, Published, Standing};
use crate::health::Health;
use crate::sink::gate::{self, WriteGate};
use crate::sink::{self, SinkEnd, SinkError, Worker};
use crate::source::{self, SourceError, SourceHealth, SourceMsg, replay::ReplayStats};

mod settings;

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

/// With leader election, the pipe's side of it: its standing, where it publishes its
/// watermark, the gate its sinks check before each write, and the token cancelled when that
/// gate shuts for good (a step-down). The elector hands one to each pipe it supervises.
pub struct Link {
    pub standing: watch::Receiver<Standing>,
    pub watermark: watch::Sender<Published>,
    pub gate: Arc<dyn WriteGate>,
    pub shut: CancellationToken,
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
    let (standing, published, gate, shut) = match link {
        Some(l) => (Some(l.standing), Some(l.watermark), l.gate, Some(l.shut)),
        None => (None, None, gate::open(), None),
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
    let ring = settings::open_ring(config)?;
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let ctx = settings::sink_context(config, &reopen, cluster.as_ref());
    let sinks = sink::fanout::start_all(&config.sinks, &ctx, ack_tx, &health.sinks, &gate).await?;

    // Chunks no larger than a batch, and no more of them queued than one batch holds.
    let chunk = config.batch_size.clamp(1, HANDOFF_RECORDS);
    let chunks_queued = (config.batch_size / chunk).max(1);
    let (accepted_tx, accepted_rx) = mpsc::channel::<AcceptedChunk>(chunks_queued);
    // Enrichment sits between the dedup stage and the batcher, in order, when it is on.
    let (accepted_rx, enrich_task) = match (&config.enrich, &cluster) {
        (Some(enrich), Some(cluster)) => {
            let client = cluster.client.clone();
            let (rx, task) = enrich::start(client, enrich, accepted_rx, chunk, chunks_queued);
            (rx, Some(task))
        }
        _ => (accepted_rx, None),
    };
    let batcher = settings::start_batcher(config, accepted_rx, sinks.queues, sinks.protobuf);
    let stage_settings = settings::stage_settings(config, chunk);
    let stage = DedupStage::new(ring, stage_settings, health.source.clone());
    let (interrupt, _interrupt_ends) = settings::interrupt(&shutdown, shut.clone());

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
        stepped_down: shut,
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
