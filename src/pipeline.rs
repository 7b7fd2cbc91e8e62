//! Wiring: source → dedup → enrich → batcher → sinks, and acks back into the filters; the run
//! loop and its shutdown. The stages themselves live in their own modules (the dedup stage,
//! which owns the filter ring and commits after every sink acknowledged, in `dedup::stage`);
//! this module builds their queues, starts them, and never names a particular sink.
//!
//! Queues, their bounds and what happens when one is full:
//! - source → dedup: `SOURCE_QUEUE` hand-offs of up to 256 records. Full: the source blocks
//!   (the replay reader stops reading; a watch stops pulling from the API server).
//! - dedup → batcher: at most `batch_size` records, in chunks of up to 256 (one per source
//!   hand-off, so the batcher wakes once per read rather than once per event). Full: the dedup
//!   stage waits, so the source queue fills.
//! - with `--enrich`, dedup → enrichment → batcher: at most `batch_size` records, then at most
//!   `enrich_concurrency` being looked up, then `batch_size` more. Full: as above.
//! - batcher → each sink: `sink::SINK_QUEUE` (4) batches per sink, shared between sinks as
//!   `Arc<Batch>`. Full: the batcher waits on that sink, so a healthy sink runs at most four
//!   batches ahead of a failing one (stdout keeps flowing while S3 is down until then), then
//!   the whole pipe pauses. Nothing accepted is dropped.
//! - sinks → dedup (acks): unbounded, but never longer than the batches in flight.
//!
//! Hence at most `SINK_QUEUE + 7` batches of events await their last ack: in the dedup → batcher
//! queue, in the open batch, the batch the batcher is handing over, the slowest sink's queue,
//! and what that sink holds (one batch being written, or up to four written and awaiting a
//! group fdatasync in the file sink). Acks are applied between source hand-offs, so
//! accepted-but-uncommitted events stay within `(SINK_QUEUE + 7) × batch_size` + one hand-off
//! (256), 5,756 at the defaults: the bound on duplicates after a crash. Memory: each sink
//! queue holds up to `SINK_QUEUE` batches of at most `batch_max_bytes` encoded bytes (plus the
//! protobuf records when S3 writes protobuf), shared, so about `(SINK_QUEUE + 2) ×
//! min(batch_size × event size, batch_max_bytes)` in all: about 3 MB at the defaults with 1 KiB
//! events, at most 48 MiB however large the events. Enrichment adds its queue and the events
//! it holds (`batch_size` + `enrich_concurrency`) to the duplicate bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::batch::{self, Encoders, Fanout, Limits};
use crate::config::{Config, OutputFormat, SourceConfig};
use crate::dedup::stage::{DedupStage, StageSettings};
use crate::dedup::{DedupError, Ring, RingConfig};
use crate::encode::json::LineEncoder;
use crate::encode::proto::ProtoEncoder;
use crate::enrich::Enricher;
use crate::flow::{AcceptedChunk, HANDOFF_RECORDS, SourceMsg};
use crate::ha::{Link, Standing};
use crate::health::Health;
use crate::sink::{self, SinkContext, SinkEnd, SinkError};
use crate::source::{self, SourceError, replay::ReplayStats};

pub use crate::dedup::stage::Tally;

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
    Enrich(String),
}

impl PipelineError {
    /// The API server could not be reached: an outage, which a later attempt may get past.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PipelineError::Source(SourceError::Unreachable { .. }))
    }
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
    /// This replica stopped leading: its sinks were fenced at once and what was in flight is
    /// left to the new leader. A new pipe stands by.
    SteppedDown,
    /// This replica became the leader but could not follow its leader (the API server's
    /// resourceVersions are not numbers): a new pipe lists again, as leader.
    RelistAsLeader,
}

#[derive(Debug)]
pub struct Report {
    pub end: EndReason,
    pub tally: Tally,
}

/// The dedup stage's phases. Draining: no more input; waiting for the last acks.
enum Phase {
    Running,
    Draining { deadline: Instant },
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
    let sinks = health.sinks.clone();
    sinks.reset();
    let health = health.source;
    let (mut standing, published, fence) = match link {
        Some(l) => (Some(l.standing), Some(l.watermark), l.fence),
        None => (None, None, crate::ha::Fence::default()),
    };
    // The source first: a wrong input path or an unreachable cluster must not leave a new
    // filter file behind.
    let (source_tx, mut source_rx) = mpsc::channel::<SourceMsg>(SOURCE_QUEUE);
    let replay_stats = Arc::new(ReplayStats::default());
    let mut cluster = None;
    match &config.source {
        SourceConfig::Replay(input) => {
            source::replay::spawn(input, source_tx, replay_stats.clone())?
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
            cluster = Some(connected);
        }
    }

    let ring = Ring::open(RingConfig {
        dir: config.persistence_path.clone(),
        generations: config.generations,
        capacity: config.filter_capacity,
        error_rate: config.filter_error_rate,
        rotation_interval: config.rotation_interval,
    })?;
    // The estimated-rate alert compares each generation with this.
    metrics::gauge!(crate::metrics::DEDUP_TARGET_FP_RATE).set(config.filter_error_rate);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let ctx = SinkContext {
        state_dir: &config.persistence_path,
        cluster_name: config.cluster_name.as_deref(),
        limits: Limits {
            max_events: config.batch_size,
            max_bytes: config.batch_max_bytes,
            max_wait: config.batch_interval,
        },
        dead_letter_dir: config.dead_letter_dir.as_deref(),
        refused_retry_interval: config.refused_retry_interval,
        reopen: &reopen,
        cluster_uid: cluster.as_ref().map(|c| {
            let client = c.client.clone();
            Box::new(
                move || -> futures::future::BoxFuture<'static, Option<String>> {
                    let client = client.clone();
                    Box::pin(async move { source::kube::cluster_uid(&client).await })
                },
            ) as Box<sink::ClusterUid>
        }),
    };
    let mut queues = Vec::with_capacity(config.sinks.len());
    let mut workers = Vec::with_capacity(config.sinks.len());
    let mut protobuf = false;
    for (index, sink_config) in config.sinks.iter().enumerate() {
        let sink = sink::open(sink_config, &ctx).await?;
        protobuf |= sink.wants_protobuf();
        let (tx, rx) = mpsc::channel(sink::SINK_QUEUE);
        queues.push(tx);
        workers.push(sink.start(index, rx, ack_tx.clone(), &sinks, fence.clone())?);
    }
    // Only the workers hold ack senders now: the channel closes when the last one ends.
    drop(ack_tx);

    // Chunks no larger than a batch, and no more of them queued than one batch holds.
    let chunk = config.batch_size.clamp(1, HANDOFF_RECORDS);
    let chunks_queued = (config.batch_size / chunk).max(1);
    let (accepted_tx, accepted_rx) = mpsc::channel::<AcceptedChunk>(chunks_queued);
    // Enrichment sits between the dedup stage and the batcher, in order, when it is on.
    let mut enrich_task = None;
    let accepted_rx = match (&config.enrich, &cluster) {
        (Some(enrich), Some(cluster)) => {
            let client = cluster.client.clone();
            let (enriched_tx, enriched_rx) = mpsc::channel::<AcceptedChunk>(chunks_queued);
            let enricher = Arc::new(Enricher::new(client, enrich));
            enrich_task = Some(tokio::spawn(enricher.run(accepted_rx, enriched_tx, chunk)));
            enriched_rx
        }
        _ => accepted_rx,
    };
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

    let mut stage = DedupStage::new(
        ring,
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
        },
    );
    let publish = |stage: &DedupStage| {
        if let Some(tx) = &published {
            let value = stage.published();
            tx.send_if_modified(|w| std::mem::replace(w, value) != value);
        }
    };
    let mut sync_timer = tokio::time::interval(config.sync_interval);
    sync_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    sync_timer.reset();

    // What ends a wait for room in the pipe: a signal, or this replica stepping down (its
    // sinks are fenced, so the room would never come).
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
    let _interrupt_ends = interrupt.clone().drop_guard();
    let stepped_down = || fence.shut().is_some_and(|t| t.is_cancelled());
    // The standing as it is now is news to this pipe.
    if let Some(rx) = &mut standing {
        rx.mark_changed();
    }
    let mut phase = Phase::Running;
    let mut accepted_tx = Some(accepted_tx);
    let mut end = EndReason::InputEnded;
    let mut source_failure: Option<SourceError> = None;
    // Once the source and sinks are open: a start that fails prints its one error line alone.
    info!(config = %config.redacted(), "effective configuration");
    info!(generations = stage.generations(), "pipeline running");
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
                    if stage.has_failed() {
                        break;
                    }
                    stage.check_ready(&health);
                    publish(&stage);
                }
                // Every sink worker is gone: they drained everything, or stdout closed.
                None => break,
            },
            _ = sync_timer.tick() => {
                stage.sync();
                stage.observe_malformed(
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
                // Progress reports queued right behind records already taken cover them: the
                // final watermark must not claim less than was delivered.
                while let Ok(SourceMsg::Through { scope, version }) = source_rx.try_recv() {
                    stage.through(scope, version);
                }
                publish(&stage);
            }
            news = changed(&mut standing), if draining_deadline.is_none() => {
                let keep_going = match (news, &accepted_tx) {
                    (Some(news), Some(tx)) => stage.standing(news, tx, &interrupt).await,
                    // The elector is gone: only at shutdown.
                    _ => true,
                };
                publish(&stage);
                if !keep_going {
                    end = if stage.is_leading() {
                        EndReason::RelistAsLeader
                    } else {
                        warn!(
                            in_flight = stage.in_flight(),
                            "stopped leading: events in flight are left to the new leader; standing by"
                        );
                        EndReason::SteppedDown
                    };
                    if shutdown.is_cancelled() {
                        end = EndReason::Signal;
                    } else {
                        break;
                    }
                }
            }
            msg = source_rx.recv(), if draining_deadline.is_none() && stage.wants_input() => {
                let keep_going = match (msg, &accepted_tx) {
                    (Some(SourceMsg::Records(batch)), Some(tx)) => {
                        stage.accept(batch, tx, &interrupt).await
                    }
                    (Some(SourceMsg::InitialListSent), Some(_)) => {
                        stage.mark_initial_list(&health);
                        true
                    }
                    (Some(SourceMsg::Through { scope, version }), _) => {
                        stage.through(scope, version);
                        publish(&stage);
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
                    if stepped_down() && !shutdown.is_cancelled() {
                        warn!(
                            in_flight = stage.in_flight(),
                            "stopped leading: events in flight are left to the new leader; standing by"
                        );
                        end = EndReason::SteppedDown;
                        break;
                    }
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
                    in_flight = stage.in_flight(),
                    "shutdown timeout passed; events in flight stay uncommitted and will be delivered again after restart"
                );
                end = EndReason::ShutdownTimeout;
                break;
            }
        }
    }
    drop(accepted_tx);
    if let Some(e) = stage.take_failure() {
        // Nothing more can be committed: end now, as after a shutdown timeout.
        let _ = stage.flush_all().await;
        return Err(e.into());
    }

    // After a step-down nothing more is written (the fence is shut) and a sink call may hang
    // until its timeout: the workers are not waited for.
    if !matches!(
        end,
        EndReason::ShutdownTimeout | EndReason::SteppedDown | EndReason::RelistAsLeader
    ) {
        // Both have finished (the ack channel closed), so these joins do not wait.
        let _ = batcher.await;
        for worker in workers {
            if let Some(SinkEnd::StdoutClosed) = worker.join().await {
                info!(
                    in_flight = stage.in_flight(),
                    "stdout closed by its reader; events in flight stay uncommitted"
                );
                end = EndReason::StdoutClosed;
            }
        }
    }
    stage.flush_all().await?;
    publish(&stage);
    let malformed = replay_stats.malformed.load(Ordering::Relaxed);
    stage.observe_malformed(malformed + health.malformed.load(Ordering::Relaxed));
    let t = stage.tally();
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
        tally: stage.tally().clone(),
    })
}

/// The next standing, when there is an election and it changed; `None` once the elector is
/// gone; never without an election.
async fn changed(
    standing: &mut Option<tokio::sync::watch::Receiver<Standing>>,
) -> Option<Standing> {
    match standing {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => {
                *standing = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
