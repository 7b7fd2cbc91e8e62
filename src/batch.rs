//! The batcher: groups accepted events so a write, a flush, an upload and a commit serve many
//! events, and hands each batch to every sink's queue.
//!
//! A batch closes when it holds `max_events` events, when its encoded lines reach `max_bytes`,
//! when the input goes idle (everything queued is in the batch and nothing more is waiting), or
//! when `max_wait` has passed since its first event, whichever comes first; an idle pipe writes
//! nothing. Batches are encoded here, once, and shared (`Arc`) by every sink.
//!
//! Closing on idle input is what keeps latency low without a tiny interval: a lone event goes
//! out as soon as it is encoded instead of waiting for `max_wait`. Under load it costs nothing:
//! while a sink is busy its queue fills, the batcher waits to hand over, events pile up in the
//! input queue meanwhile, and the next batches fill to `max_events` (batching adapts to what the
//! slowest sink can take, as a group commit does). `max_wait` stays the upper bound for a batch
//! whose input never runs dry.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::encode::json::LineEncoder;
use crate::encode::proto::ProtoEncoder;
use crate::flow::{AcceptedChunk, Batch};

/// What closes a batch, whichever is reached first.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

/// Everything that turns accepted events into a batch's bytes.
#[derive(Debug, Clone)]
pub struct Encoders {
    pub lines: LineEncoder,
    pub proto: Option<ProtoEncoder>,
}

/// Every sink's queue. A batch goes to each in turn; a full queue makes the batcher wait, which
/// fills the dedup stage's queue and then the source's: backpressure, never a dropped batch.
pub struct Fanout(pub Vec<mpsc::Sender<Arc<Batch>>>);

impl Fanout {
    /// False when a sink has stopped taking batches (stdout closed): the pipe then winds down.
    async fn send(&self, batch: Batch) -> bool {
        let batch = Arc::new(batch);
        for queue in &self.0 {
            if queue.send(batch.clone()).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Runs until `input` closes, then sends the last partial batch and returns. Returns early when
/// a sink queue is closed. A batch goes out when it is full (events or bytes), when nothing more
/// is queued behind it, or `max_wait` after its first event.
pub async fn run(
    mut input: mpsc::Receiver<AcceptedChunk>,
    output: Fanout,
    encoders: Encoders,
    limits: Limits,
) {
    let Limits {
        max_events,
        max_bytes,
        max_wait,
    } = limits;
    let mut seq = 0u64;
    let mut current = new_batch(seq, max_events, encoders.proto.is_some());
    // One timer, re-armed when a batch opens, rather than a new one per event.
    let timer = tokio::time::sleep(max_wait);
    tokio::pin!(timer);
    let mut received = Vec::new();
    loop {
        let open = current.events > 0;
        let closed_by_timer = tokio::select! {
            n = input.recv_many(&mut received, RECEIVE_CHUNKS) => {
                if n == 0 {
                    if current.events > 0 {
                        output.send(current).await;
                    }
                    return;
                }
                false
            }
            () = &mut timer, if open => true,
        };
        if closed_by_timer {
            let full = close(&mut current, &mut seq, max_events, encoders.proto.is_some());
            if !output.send(full).await {
                return;
            }
            continue;
        }
        for accepted in received.drain(..).flatten() {
            if current.events == 0 {
                timer.as_mut().reset(Instant::now() + max_wait);
                current.opened_at = SystemTime::now();
            }
            encoders.lines.encode(
                &accepted.record,
                accepted.prior.as_ref(),
                accepted.enrichment.as_deref(),
                &mut current.bytes,
            );
            if let (Some(proto), Some(out)) = (&encoders.proto, current.records.as_mut()) {
                proto.encode(&accepted.record, accepted.enrichment.as_deref(), out);
            }
            if accepted.record.is_occurrence() {
                current.keys.push(accepted.record.key);
            }
            current.events += 1;
            if current.events >= max_events || current.bytes.len() >= max_bytes {
                let full = close(&mut current, &mut seq, max_events, encoders.proto.is_some());
                // Whatever is left of `received` waits with the batcher; the dedup stage has
                // already counted it as in flight.
                if !output.send(full).await {
                    return;
                }
            }
        }
        // Idle input: everything that was queued is encoded and nothing more is waiting, so
        // holding the batch open would only add latency. (A stage in front that is still
        // handing over finds the batcher waiting on a busy sink, and the next batch fills.)
        if current.events > 0 && input.is_empty() {
            let ready = close(&mut current, &mut seq, max_events, encoders.proto.is_some());
            if !output.send(ready).await {
                return;
            }
        }
    }
}

/// Chunks taken from the input at once: whatever is queued, in practice.
const RECEIVE_CHUNKS: usize = 16;

/// Takes the open batch and opens the next, numbered one higher.
fn close(current: &mut Batch, seq: &mut u64, max_events: usize, proto: bool) -> Batch {
    *seq += 1;
    std::mem::replace(current, new_batch(*seq, max_events, proto))
}

fn new_batch(seq: u64, max_events: usize, proto: bool) -> Batch {
    Batch {
        seq,
        // About 1 KiB per event is typical; the cap avoids reserving for huge configured sizes.
        bytes: Vec::with_capacity(max_events.min(1024) * 1024),
        records: proto.then(Vec::new),
        keys: Vec::with_capacity(max_events.min(1024)),
        events: 0,
        opened_at: SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutputFormat;
    use crate::event::{Change, EventRecord};
    use crate::flow::Accepted;

    fn accepted(i: u64) -> Accepted {
        let json = format!(r#"{{"metadata":{{"name":"e{i}","namespace":"d"}}}}"#);
        Accepted {
            record: EventRecord::from_json(Change::Added, &json).unwrap(),
            prior: None,
            enrichment: None,
        }
    }

    fn start(
        max_events: usize,
        max_bytes: usize,
        max_wait: Duration,
        proto: bool,
    ) -> (
        mpsc::Sender<AcceptedChunk>,
        mpsc::Receiver<Arc<Batch>>,
        tokio::task::JoinHandle<()>,
    ) {
        start_with_queue(max_events, max_bytes, max_wait, proto, 64)
    }

    /// Like `start`, with the sink's queue bounded at `sink_queue` batches.
    fn start_with_queue(
        max_events: usize,
        max_bytes: usize,
        max_wait: Duration,
        proto: bool,
        sink_queue: usize,
    ) -> (
        mpsc::Sender<AcceptedChunk>,
        mpsc::Receiver<Arc<Batch>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (in_tx, in_rx) = mpsc::channel(64);
        let (out_tx, out_rx) = mpsc::channel(sink_queue);
        let encoders = Encoders {
            lines: LineEncoder::new(OutputFormat::Raw, None),
            proto: proto.then(|| ProtoEncoder::new(None)),
        };
        let limits = Limits {
            max_events,
            max_bytes,
            max_wait,
        };
        let task = tokio::spawn(run(in_rx, Fanout(vec![out_tx]), encoders, limits));
        (in_tx, out_rx, task)
    }

    /// Lets the batcher run (on this single-threaded test runtime) until `done` holds.
    async fn run_until(mut done: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the batcher did not get there in 1000 turns");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_on_size_and_the_rest_goes_out_when_the_input_is_idle() {
        let (in_tx, mut out_rx, task) = start(3, usize::MAX, Duration::from_secs(5), false);
        let began = Instant::now();
        // One hand-off larger than a batch: it is split across two.
        in_tx.send((0..4).map(accepted).collect()).await.unwrap();
        let first = out_rx.recv().await.unwrap();
        assert_eq!((first.events, first.keys.len()), (3, 3));
        assert_eq!(first.bytes.iter().filter(|&&b| b == b'\n').count(), 3);
        assert!(first.records.is_none(), "no protobuf unless asked for");
        // The fourth event is all that is left: it goes out without waiting for the interval
        // (time is paused and advances only when every task waits for a timer).
        let second = out_rx.recv().await.unwrap();
        assert_eq!(second.events, 1);
        assert!(second.seq > first.seq);
        assert_eq!(
            began.elapsed(),
            Duration::ZERO,
            "nothing waited for the interval"
        );
        drop(in_tx);
        task.await.unwrap();
        assert!(out_rx.recv().await.is_none(), "an idle pipe writes nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_event_goes_out_at_once_however_long_the_interval() {
        let (in_tx, mut out_rx, task) = start(500, usize::MAX, Duration::from_secs(3600), false);
        for i in 0..3 {
            let sent = Instant::now();
            in_tx.send(vec![accepted(i)]).await.unwrap();
            let batch = out_rx.recv().await.unwrap();
            assert_eq!((batch.seq, batch.events), (i, 1));
            assert_eq!(sent.elapsed(), Duration::ZERO, "event {i} waited");
        }
        drop(in_tx);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn while_the_sink_is_busy_the_next_batch_fills() {
        // The sink takes one batch at a time and is not reading yet.
        let (in_tx, mut out_rx, task) =
            start_with_queue(100, usize::MAX, Duration::from_secs(3600), false, 1);
        in_tx.send(vec![accepted(0)]).await.unwrap();
        run_until(|| out_rx.len() == 1).await;
        // The second lone event is closed at once too, but its hand-over waits for the sink.
        in_tx.send(vec![accepted(1)]).await.unwrap();
        run_until(|| in_tx.capacity() == in_tx.max_capacity()).await;
        // Meanwhile a burst arrives: it piles up in the input queue.
        for i in 2..40 {
            in_tx.send(vec![accepted(i)]).await.unwrap();
        }
        drop(in_tx);
        let mut sizes = Vec::new();
        while let Some(b) = out_rx.recv().await {
            sizes.push(b.events);
        }
        assert_eq!(sizes, vec![1, 1, 38], "the burst went out as one batch");
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_when_its_lines_reach_the_byte_bound() {
        // Each line is 43 bytes: a 100-byte bound closes a batch at its third.
        let (in_tx, mut out_rx, task) = start(1000, 100, Duration::from_secs(3600), true);
        for i in 0..7 {
            in_tx.send(vec![accepted(i)]).await.unwrap();
        }
        drop(in_tx);
        let mut sizes = Vec::new();
        while let Some(b) = out_rx.recv().await {
            assert!(b.records.as_ref().is_some_and(|r| !r.is_empty()));
            sizes.push(b.events);
        }
        assert_eq!(sizes, vec![3, 3, 1]);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn closing_the_input_flushes_the_partial_batch() {
        let (in_tx, mut out_rx, task) = start(100, usize::MAX, Duration::from_secs(3600), false);
        in_tx.send(vec![accepted(1)]).await.unwrap();
        drop(in_tx);
        assert_eq!(out_rx.recv().await.unwrap().events, 1);
        task.await.unwrap();
    }
}
