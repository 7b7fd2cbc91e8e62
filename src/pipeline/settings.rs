//! What each stage is opened with, read from the configuration: the ring's files, the dedup
//! stage's settings, the sinks' context, the batcher's encoders and limits, and the token that
//! ends a wait for room in the pipe.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::batch::{self, Encoders, Fanout, Limits};
use crate::config::{Config, OutputFormat, SourceConfig};
use crate::dedup::stage::StageSettings;
use crate::dedup::{DedupError, Ring, RingConfig};
use crate::encode::json::LineEncoder;
use crate::encode::proto::ProtoEncoder;
use crate::flow::{AcceptedChunk, Batch};
use crate::sink::{self, SinkContext};
use crate::source;

pub(super) fn open_ring(config: &Config) -> Result<Ring, DedupError> {
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
pub(super) fn sink_context<'a>(
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

pub(super) fn start_batcher(
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

pub(super) fn stage_settings(config: &Config, chunk: usize) -> StageSettings {
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
pub(super) fn interrupt(
    shutdown: &CancellationToken,
    shut: Option<CancellationToken>,
) -> (CancellationToken, DropGuard) {
    let interrupt = shutdown.child_token();
    if let Some(shut) = shut {
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
