//! The dedup stage's metric handles, obtained once: counters move once per hand-off, the
//! filter gauges on the sync timer.

use super::GenerationInfo;
use crate::metrics::{
    ACKS_PENDING, DEDUP_CORRUPT_FILES, DEDUP_ESTIMATED_FP_RATE, DEDUP_FILL_RATIO,
    DEDUP_GENERATIONS, DUPLICATES_DROPPED, EVENTS_RECEIVED, LAST_EVENT_TIMESTAMP, MALFORMED_EVENTS,
    ReasonCounters,
};

pub struct StageMeters {
    pub received: metrics::Counter,
    pub duplicates: metrics::Counter,
    pub last_event: metrics::Gauge,
    generations: metrics::Gauge,
    /// One per generation slot, newest first, so the series stay bounded across rotations.
    fill_ratio: Vec<metrics::Gauge>,
    /// Same slots as `fill_ratio`.
    estimated_fp_rate: Vec<metrics::Gauge>,
    acks_pending: metrics::Gauge,
    corrupt: metrics::Counter,
    pub malformed: metrics::Counter,
    pub by_reason: Option<ReasonCounters>,
}

impl StageMeters {
    pub fn new(source: &'static str, generations: usize, by_reason: bool) -> Self {
        StageMeters {
            received: metrics::counter!(EVENTS_RECEIVED, "source" => source),
            duplicates: metrics::counter!(DUPLICATES_DROPPED),
            last_event: metrics::gauge!(LAST_EVENT_TIMESTAMP),
            generations: metrics::gauge!(DEDUP_GENERATIONS),
            fill_ratio: (0..generations)
                .map(|g| metrics::gauge!(DEDUP_FILL_RATIO, "generation" => g.to_string()))
                .collect(),
            estimated_fp_rate: (0..generations)
                .map(|g| metrics::gauge!(DEDUP_ESTIMATED_FP_RATE, "generation" => g.to_string()))
                .collect(),
            acks_pending: metrics::gauge!(ACKS_PENDING),
            corrupt: metrics::counter!(DEDUP_CORRUPT_FILES),
            malformed: metrics::counter!(MALFORMED_EVENTS),
            by_reason: by_reason.then(ReasonCounters::default),
        }
    }

    /// The filter gauges for the generations as they are now (oldest first), the keys awaiting
    /// acks, and the running total of quarantined files.
    pub fn observe_ring(&self, generations: &[GenerationInfo], in_flight: usize, corrupt: u64) {
        self.generations.set(generations.len() as f64);
        for (slot, (fill_gauge, fp_gauge)) in self
            .fill_ratio
            .iter()
            .zip(&self.estimated_fp_rate)
            .enumerate()
        {
            let generation = generations
                .len()
                .checked_sub(slot + 1)
                .map(|i| &generations[i]);
            fill_gauge.set(generation.map_or(0.0, |g| g.fill_ratio));
            fp_gauge.set(generation.map_or(0.0, |g| g.estimated_fp_rate));
        }
        self.acks_pending.set(in_flight as f64);
        self.corrupt.absolute(corrupt);
    }
}
