//! The S3 worker: one object per `batch_size` events, `batch_max_bytes` or `batch_interval`,
//! whichever comes first, however small the batches it receives.
//!
//! The batcher closes a batch as soon as its input goes idle, so that a file or stdout gets a
//! lone event at once. An archive must not pay for that: at ten events a second it would be one
//! PUT per event. So the S3 worker gathers the batches it receives into one object and uploads
//! it when the object is full or its first batch has waited `batch_interval`, then acknowledges
//! every batch in it, in order. What it gathers is at most one batch's worth of events beyond
//! its queue, which the duplicate bound after a crash counts (docs/architecture.md).

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::upload::S3Sink;
use crate::batch::Limits;
use crate::flow::Batch;
use crate::sink::{SinkEnd, SinkIo, deliver_retrying};

/// Runs until the queue closes, uploading what it gathered before it returns.
pub async fn run(mut sink: S3Sink, limits: Limits, mut io: SinkIo) -> SinkEnd {
    let mut gathered: Vec<Arc<Batch>> = Vec::new();
    let (mut events, mut bytes) = (0, 0);
    let mut deadline: Option<Instant> = None;
    loop {
        let (arrived, closed) = tokio::select! {
            batch = io.queue.recv() => match batch {
                Some(batch) => (Some(batch), false),
                None => (None, true),
            },
            () = sleep_until(deadline) => (None, false),
        };
        if let Some(batch) = arrived {
            io.policy.queue_depth(io.queue.len());
            // A batch that would take the object past a bound starts the next object.
            let overflows = events + batch.events > limits.max_events
                || bytes + payload_len(&batch) > limits.max_bytes;
            if overflows && !gathered.is_empty() {
                if let Err(end) = upload(&mut sink, &mut gathered, &mut io).await {
                    return end;
                }
                (events, bytes) = (0, 0);
            }
            if gathered.is_empty() {
                deadline = Some(Instant::now() + limits.max_wait);
            }
            events += batch.events;
            bytes += payload_len(&batch);
            gathered.push(batch);
        }
        let due = closed
            || events >= limits.max_events
            || bytes >= limits.max_bytes
            || deadline.is_some_and(|d| Instant::now() >= d);
        if due && !gathered.is_empty() {
            if let Err(end) = upload(&mut sink, &mut gathered, &mut io).await {
                return end;
            }
            (events, bytes) = (0, 0);
            deadline = None;
        }
        if closed {
            return SinkEnd::Drained;
        }
    }
}

/// Uploads the gathered batches as one object, then acknowledges each of them, in order.
async fn upload(
    sink: &mut S3Sink,
    gathered: &mut Vec<Arc<Batch>>,
    io: &mut SinkIo,
) -> Result<(), SinkEnd> {
    let started = std::time::Instant::now();
    let object = match gathered.as_slice() {
        [only] => only.clone(),
        many => Arc::new(merge(many)),
    };
    deliver_retrying(sink, &object, &mut io.policy).await?;
    io.policy.delivered(object.events, started.elapsed());
    for batch in gathered.drain(..) {
        if !io.acks.ack(batch) {
            return Err(SinkEnd::Drained);
        }
    }
    Ok(())
}

/// What a batch adds to an object before gzip.
fn payload_len(batch: &Batch) -> usize {
    batch.records.as_ref().map_or(batch.bytes.len(), Vec::len)
}

/// One batch holding the gathered ones, in order: it names its object after the first one
/// (its number and the time its first event was accepted), so a retried PUT overwrites only
/// itself and a restart never reuses a key.
fn merge(batches: &[Arc<Batch>]) -> Batch {
    let first = batches.first();
    let mut merged = Batch {
        seq: first.map_or(0, |b| b.seq),
        bytes: Vec::with_capacity(batches.iter().map(|b| b.bytes.len()).sum()),
        records: first.and_then(|b| b.records.as_ref()).map(|_| Vec::new()),
        // The keys are committed through the batches' own acks, not the object's.
        keys: Vec::new(),
        events: 0,
        opened_at: first.map_or_else(SystemTime::now, |b| b.opened_at),
    };
    for batch in batches {
        merged.bytes.extend_from_slice(&batch.bytes);
        if let (Some(out), Some(records)) = (merged.records.as_mut(), batch.records.as_ref()) {
            out.extend_from_slice(records);
        }
        merged.events += batch.events;
    }
    merged
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64, line: &str) -> Arc<Batch> {
        Arc::new(Batch {
            seq,
            bytes: format!("{line}\n").into_bytes(),
            records: Some(vec![line.len() as u8]),
            keys: Vec::new(),
            events: 1,
            opened_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(seq),
        })
    }

    #[test]
    fn an_object_is_its_batches_in_order_named_after_the_first() {
        let merged = merge(&[batch(7, "a"), batch(8, "bb"), batch(9, "c")]);
        assert_eq!(merged.seq, 7);
        assert_eq!(merged.bytes, b"a\nbb\nc\n");
        assert_eq!(merged.records, Some(vec![1, 2, 1]));
        assert_eq!(merged.events, 3);
        assert_eq!(
            merged.opened_at,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7)
        );
    }
}
