//! The batcher: groups accepted events so a write, a flush and a commit serve many events.
//!
//! A batch closes when it holds `max_events` events or when `max_wait` has passed since its
//! first event, whichever comes first; an idle pipe writes nothing. Batches are encoded here,
//! once, so every sink gets the same bytes.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::encode::json::LineEncoder;
use crate::event::{EventRecord, OccurrenceKey, RawJson};

/// An event accepted by the dedup stage, with the prior version of its object when the output
/// format wants one.
#[derive(Debug)]
pub struct Accepted {
    pub record: EventRecord,
    pub prior: Option<RawJson>,
    /// The `enrichment` object, when enrichment is on and found something.
    pub enrichment: Option<Box<str>>,
}

/// Encoded lines and the occurrence keys they deliver.
#[derive(Debug)]
pub struct Batch {
    pub seq: u64,
    pub bytes: Vec<u8>,
    /// Keys to commit once every sink has the bytes. DELETED records (when emitted) have none.
    pub keys: Vec<OccurrenceKey>,
    pub events: usize,
}

/// Runs until `input` closes, then sends the last partial batch and returns.
pub async fn run(
    mut input: mpsc::Receiver<Accepted>,
    output: mpsc::Sender<Batch>,
    encoder: LineEncoder,
    max_events: usize,
    max_wait: Duration,
) {
    let mut seq = 0u64;
    let mut current = new_batch(seq, max_events);
    // One timer, re-armed when a batch opens, rather than a new one per event.
    let timer = tokio::time::sleep(max_wait);
    tokio::pin!(timer);
    let mut received = Vec::with_capacity(max_events.min(1024));
    loop {
        let open = current.events > 0;
        let closed_by_timer = tokio::select! {
            n = input.recv_many(&mut received, max_events - current.events) => {
                if n == 0 {
                    if current.events > 0 {
                        let _ = output.send(current).await;
                    }
                    return;
                }
                false
            }
            () = &mut timer, if open => true,
        };
        if !closed_by_timer {
            if current.events == 0 {
                timer.as_mut().reset(Instant::now() + max_wait);
            }
            for accepted in received.drain(..) {
                encoder.encode(
                    &accepted.record,
                    accepted.prior.as_ref(),
                    accepted.enrichment.as_deref(),
                    &mut current.bytes,
                );
                if accepted.record.is_occurrence() {
                    current.keys.push(accepted.record.key);
                }
                current.events += 1;
            }
            if current.events < max_events {
                continue;
            }
        }
        seq += 1;
        let full = std::mem::replace(&mut current, new_batch(seq, max_events));
        if output.send(full).await.is_err() {
            return;
        }
    }
}

fn new_batch(seq: u64, max_events: usize) -> Batch {
    Batch {
        seq,
        // About 1 KiB per event is typical; the cap avoids reserving for huge configured sizes.
        bytes: Vec::with_capacity(max_events.min(1024) * 1024),
        keys: Vec::with_capacity(max_events.min(1024)),
        events: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutputFormat;
    use crate::event::Change;

    fn accepted(i: u64) -> Accepted {
        let json = format!(r#"{{"metadata":{{"name":"e{i}","namespace":"d"}}}}"#);
        Accepted {
            record: EventRecord::from_json(Change::Added, &json).unwrap(),
            prior: None,
            enrichment: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_on_size_or_interval_whichever_first() {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let enc = LineEncoder::new(OutputFormat::Raw, None);
        let task = tokio::spawn(run(in_rx, out_tx, enc, 3, Duration::from_secs(5)));
        for i in 0..4 {
            in_tx.send(accepted(i)).await.unwrap();
        }
        let first = out_rx.recv().await.unwrap();
        assert_eq!((first.events, first.keys.len()), (3, 3));
        assert_eq!(first.bytes.iter().filter(|&&b| b == b'\n').count(), 3);
        // The fourth event waits for the interval (time is paused: this does not sleep).
        let second = out_rx.recv().await.unwrap();
        assert_eq!(second.events, 1);
        assert!(second.seq > first.seq);
        drop(in_tx);
        task.await.unwrap();
        assert!(out_rx.recv().await.is_none(), "an idle pipe writes nothing");
    }

    #[tokio::test]
    async fn closing_the_input_flushes_the_partial_batch() {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let enc = LineEncoder::new(OutputFormat::Raw, None);
        let task = tokio::spawn(run(in_rx, out_tx, enc, 100, Duration::from_secs(3600)));
        in_tx.send(accepted(1)).await.unwrap();
        drop(in_tx);
        assert_eq!(out_rx.recv().await.unwrap().events, 1);
        task.await.unwrap();
    }
}
