//! Every configured sink opened and started, each with its own bounded queue: what the batcher
//! fans batches out to.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::gate::WriteGate;
use super::{SINK_QUEUE, SinkContext, SinkError, SinkHealth, Worker};
use crate::config::SinkConfig;
use crate::flow::{Batch, BatchAck};

/// The started sinks: each one's queue, its worker, and whether any wants protobuf records.
pub struct Started {
    pub queues: Vec<mpsc::Sender<Arc<Batch>>>,
    pub workers: Vec<Worker>,
    pub protobuf: bool,
}

/// Opens every sink in `configs`, gives each its own queue, and starts it as sink number
/// `index` of the list. Only the workers hold ack senders afterwards: the ack channel closes
/// when the last one ends.
pub async fn start_all(
    configs: &[SinkConfig],
    ctx: &SinkContext<'_>,
    acks: mpsc::UnboundedSender<BatchAck>,
    health: &SinkHealth,
    gate: &Arc<dyn WriteGate>,
) -> Result<Started, SinkError> {
    let mut started = Started {
        queues: Vec::with_capacity(configs.len()),
        workers: Vec::with_capacity(configs.len()),
        protobuf: false,
    };
    for (index, config) in configs.iter().enumerate() {
        let sink = super::open(config, ctx).await?;
        started.protobuf |= sink.wants_protobuf();
        let (tx, rx) = mpsc::channel(SINK_QUEUE);
        started.queues.push(tx);
        let worker = sink.start(index, rx, acks.clone(), health, gate.clone())?;
        started.workers.push(worker);
    }
    Ok(started)
}
