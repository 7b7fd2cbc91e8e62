//! Which batches every sink has: the acknowledgements counted per batch, and the batches that
//! are complete and may be committed.
//!
//! Sinks acknowledge batches in order, each on its own schedule; a batch's keys may enter the
//! filters only once the last sink that must have it says so. Sinks handle batches in order, so
//! batches complete in order and "delivered up to event N" is a running sum.

use std::collections::HashMap;
use std::sync::Arc;

use crate::flow::{Batch, BatchAck};

pub struct AckLedger {
    /// Acks received per batch sequence number, until every sink has acknowledged it.
    acks: HashMap<u64, usize>,
    /// How many sinks must acknowledge a batch.
    sinks: usize,
    /// Events of batches every sink acknowledged.
    delivered: u64,
}

impl AckLedger {
    pub fn new(sinks: usize) -> Self {
        AckLedger {
            acks: HashMap::new(),
            sinks,
            delivered: 0,
        }
    }

    /// Counts one sink's ack; returns the batch when that sink was the last to have it.
    pub fn ack(&mut self, ack: BatchAck) -> Option<Arc<Batch>> {
        let seq = ack.batch.seq;
        let count = self.acks.entry(seq).or_insert(0);
        *count += 1;
        if *count < self.sinks {
            return None;
        }
        self.acks.remove(&seq);
        self.delivered += ack.batch.events as u64;
        Some(ack.batch)
    }

    /// Events of every batch all sinks have acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Batches some sink acknowledged and another has not yet.
    pub fn partial(&self) -> usize {
        self.acks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::OccurrenceKey;

    fn batch(seq: u64, events: usize) -> Arc<Batch> {
        Arc::new(Batch {
            seq,
            bytes: b"{}\n".to_vec(),
            records: None,
            keys: vec![OccurrenceKey::new("d", &seq.to_string(), 1)],
            events,
            opened_at: std::time::SystemTime::now(),
        })
    }

    fn ack(sink: usize, batch: &Arc<Batch>) -> BatchAck {
        BatchAck {
            sink,
            batch: batch.clone(),
        }
    }

    #[test]
    fn a_batch_completes_when_its_last_sink_acks() {
        let mut ledger = AckLedger::new(2);
        let (first, second) = (batch(0, 3), batch(1, 2));
        assert!(ledger.ack(ack(0, &first)).is_none());
        assert!(ledger.ack(ack(0, &second)).is_none());
        assert_eq!((ledger.delivered(), ledger.partial()), (0, 2));
        let done = ledger
            .ack(ack(1, &first))
            .expect("complete with both sinks");
        assert_eq!(done.seq, 0);
        assert_eq!((ledger.delivered(), ledger.partial()), (3, 1));
        assert_eq!(ledger.ack(ack(1, &second)).map(|b| b.seq), Some(1));
        assert_eq!((ledger.delivered(), ledger.partial()), (5, 0));
    }

    #[test]
    fn one_sink_completes_every_batch_at_once() {
        let mut ledger = AckLedger::new(1);
        assert!(ledger.ack(ack(0, &batch(7, 1))).is_some());
        assert_eq!(ledger.delivered(), 1);
    }
}
