//! Every metric the pipe exports: its name, its HELP text and its labels, in one place.
//!
//! Code that records a metric uses the name constants here with the `metrics` macros, so a
//! name is spelled once and `describe` never misses one. Handles are obtained once (per stage,
//! per sink) and incremented per hand-off or per batch, never looked up per event.
//!
//! One naming scheme: `kube_event_pipe_<thing>_<unit>`, counters end in `_total`, labels are
//! `source` (kube, replay), `sink` (stdout, file, s3, kafka) and `generation` (0 = newest).

use std::collections::HashMap;

use metrics::{Counter, Unit, describe_counter, describe_gauge, describe_histogram};

use crate::event::EventView;

pub const EVENTS_RECEIVED: &str = "kube_event_pipe_events_received_total";
pub const EVENTS_EMITTED: &str = "kube_event_pipe_events_emitted_total";
pub const DUPLICATES_DROPPED: &str = "kube_event_pipe_duplicates_dropped_total";
pub const SINK_ERRORS: &str = "kube_event_pipe_sink_errors_total";
pub const SINK_QUEUE_DEPTH: &str = "kube_event_pipe_sink_queue_depth";
pub const BATCH_FLUSH_SECONDS: &str = "kube_event_pipe_batch_flush_seconds";
pub const DEDUP_GENERATIONS: &str = "kube_event_pipe_dedup_generations";
pub const DEDUP_FILL_RATIO: &str = "kube_event_pipe_dedup_fill_ratio";
pub const DEDUP_ESTIMATED_FP_RATE: &str = "kube_event_pipe_dedup_estimated_fp_rate";
pub const DEDUP_TARGET_FP_RATE: &str = "kube_event_pipe_dedup_target_fp_rate";
pub const ACKS_PENDING: &str = "kube_event_pipe_acks_pending";
pub const DEDUP_CORRUPT_FILES: &str = "kube_event_pipe_dedup_corrupt_files_total";
pub const WATCH_RESTARTS: &str = "kube_event_pipe_watch_restarts_total";
pub const LAST_EVENT_TIMESTAMP: &str = "kube_event_pipe_last_event_timestamp_seconds";
pub const MALFORMED_EVENTS: &str = "kube_event_pipe_malformed_events_total";
pub const EVENTS_BY_REASON: &str = "kube_event_pipe_events_by_reason_total";
pub const ENRICH_GETS: &str = "kube_event_pipe_enrich_gets_total";
pub const ENRICH_SKIPPED: &str = "kube_event_pipe_enrich_skipped_total";
pub const DEAD_LETTERS: &str = "kube_event_pipe_dead_letters_total";
pub const OTLP_REJECTED_RECORDS: &str = "kube_event_pipe_otlp_rejected_records_total";
pub const LEADER: &str = "kube_event_pipe_leader";
pub const LEADER_TRANSITIONS: &str = "kube_event_pipe_leader_transitions_total";
pub const WATERMARK_AGE: &str = "kube_event_pipe_watermark_age_seconds";
pub const STANDBY_HELD: &str = "kube_event_pipe_standby_held_events";

/// Every exported name with its kind and HELP text; `describe` registers them and the docs
/// test checks `docs/operations.md` lists each one.
pub const ALL: &[(&str, Kind, &str)] = &[
    (
        EVENTS_RECEIVED,
        Kind::Counter,
        "Events read from the source, before deduplication (label source).",
    ),
    (
        EVENTS_EMITTED,
        Kind::Counter,
        "Events a sink has durably written (label sink).",
    ),
    (
        DUPLICATES_DROPPED,
        Kind::Counter,
        "Events dropped because their occurrence was already delivered or in flight.",
    ),
    (
        SINK_ERRORS,
        Kind::Counter,
        "Failed write attempts per sink; each is retried with backoff (label sink).",
    ),
    (
        SINK_QUEUE_DEPTH,
        Kind::Gauge,
        "Batches waiting for a sink (label sink).",
    ),
    (
        BATCH_FLUSH_SECONDS,
        Kind::Histogram,
        "Time to write and flush one batch to a sink, retries included (label sink).",
    ),
    (
        DEDUP_GENERATIONS,
        Kind::Gauge,
        "Filter generations currently open.",
    ),
    (
        DEDUP_FILL_RATIO,
        Kind::Gauge,
        "Fraction of bits set per filter generation (label generation, 0 = newest).",
    ),
    (
        DEDUP_ESTIMATED_FP_RATE,
        Kind::Gauge,
        "Estimated false-positive rate of a check per filter generation, from its fill (label generation, 0 = newest).",
    ),
    (
        DEDUP_TARGET_FP_RATE,
        Kind::Gauge,
        "The configured false-positive rate each filter generation is sized for.",
    ),
    (
        ACKS_PENDING,
        Kind::Gauge,
        "Occurrences handed to the sinks that not every sink has acknowledged yet (not yet committed).",
    ),
    (
        DEDUP_CORRUPT_FILES,
        Kind::Counter,
        "Filter files quarantined as corrupt and replaced by fresh ones since start.",
    ),
    (
        WATCH_RESTARTS,
        Kind::Counter,
        "Watches restarted after an error (reason=error) or relisted after the history expired (reason=relist).",
    ),
    (
        LAST_EVENT_TIMESTAMP,
        Kind::Gauge,
        "Unix time at which the pipe last received an event from its source.",
    ),
    (
        MALFORMED_EVENTS,
        Kind::Counter,
        "Input values or objects skipped because they are not Events the pipe can key.",
    ),
    (
        EVENTS_BY_REASON,
        Kind::Counter,
        "Delivered occurrences by Event type and reason; only with --metrics-by-reason.",
    ),
    (
        ENRICH_GETS,
        Kind::Counter,
        "Objects fetched from the API server for enrichment, cache misses only (label resource).",
    ),
    (
        ENRICH_SKIPPED,
        Kind::Counter,
        "Events sent without enrichment (label reason: timeout, forbidden, error).",
    ),
    (
        DEAD_LETTERS,
        Kind::Counter,
        "Events a sink refused for good, written to the dead-letter directory and then committed (label sink).",
    ),
    (
        OTLP_REJECTED_RECORDS,
        Kind::Counter,
        "Log records an OTLP receiver accepted the export of but rejected (partial success); not retried.",
    ),
    (
        LEADER,
        Kind::Gauge,
        "1 while this replica holds the Lease and emits, 0 while it stands by; only with --leader-elect.",
    ),
    (
        LEADER_TRANSITIONS,
        Kind::Counter,
        "Times this process became the leader.",
    ),
    (
        WATERMARK_AGE,
        Kind::Gauge,
        "Seconds the watermark has not moved while events wait for it: on the leader, accepted events not yet committed; on a standby, held occurrences the leader's watermark does not cover. 0 when nothing waits.",
    ),
    (
        STANDBY_HELD,
        Kind::Gauge,
        "Occurrences a standby holds that the leader's watermark does not cover yet (bounded by --standby-max-bytes).",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Registers the HELP text of every metric with the installed recorder. Call once, after the
/// recorder is installed and before the pipe records anything.
pub fn describe() {
    for &(name, kind, help) in ALL {
        match kind {
            Kind::Counter => describe_counter!(name, help),
            Kind::Gauge if name == LAST_EVENT_TIMESTAMP => {
                describe_gauge!(name, Unit::Seconds, help)
            }
            Kind::Gauge => describe_gauge!(name, help),
            Kind::Histogram => describe_histogram!(name, Unit::Seconds, help),
        }
    }
}

/// Distinct (type, reason) pairs counted before the rest share `reason="other"`. Reasons are
/// free text written by every controller in the cluster; the cap keeps one noisy operator from
/// growing the scrape without bound.
pub const MAX_REASONS: usize = 200;

/// The opt-in split of delivered occurrences by Event `type` and `reason` (eventrouter's
/// `normal_total`/`warnings_total`), with one counter handle per pair.
#[derive(Default)]
pub struct ReasonCounters {
    counters: HashMap<(String, String), Counter>,
}

impl ReasonCounters {
    /// Counts one occurrence of the raw Event JSON. Fields that are missing count as empty;
    /// text that is not an Event object counts nothing.
    pub fn count(&mut self, raw: &str) {
        if let Ok(event) = EventView::parse(raw) {
            self.count_event(&event);
        }
    }

    /// Counts one occurrence of the Event `event` views (of a record, or of a delivered line).
    pub fn count_event(&mut self, event: &EventView<'_>) {
        self.counter_of(event).increment(1);
    }

    /// The series an occurrence counts in, for counting it later: when it is delivered.
    pub fn counter_of(&mut self, event: &EventView<'_>) -> Counter {
        let kind = event.event_type().unwrap_or_default();
        let reason = event.reason().unwrap_or_default();
        self.counter(&kind, &reason).clone()
    }

    fn counter(&mut self, kind: &str, reason: &str) -> &Counter {
        let known = self
            .counters
            .contains_key(&(kind.to_string(), reason.to_string()));
        let key = if known || self.counters.len() < MAX_REASONS {
            (kind.to_string(), reason.to_string())
        } else {
            (kind.to_string(), "other".to_string())
        };
        self.counters.entry(key).or_insert_with_key(|(kind, reason)| {
            metrics::counter!(EVENTS_BY_REASON, "type" => kind.clone(), "reason" => reason.clone())
        })
    }

    /// Pairs with a handle, for tests.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_follows_the_scheme_and_has_help() {
        let mut seen = std::collections::HashSet::new();
        for &(name, kind, help) in ALL {
            assert!(name.starts_with("kube_event_pipe_"), "{name}");
            assert_eq!(name.ends_with("_total"), kind == Kind::Counter, "{name}");
            assert!(help.len() > 20, "{name} needs HELP text");
            assert!(seen.insert(name), "{name} twice");
        }
    }

    #[test]
    fn reasons_beyond_the_cap_share_one_series() {
        let mut counters = ReasonCounters::default();
        for i in 0..MAX_REASONS + 50 {
            counters.count(&format!(r#"{{"type":"Warning","reason":"R{i}"}}"#));
        }
        // The cap, plus the one shared `other` series.
        assert_eq!(counters.len(), MAX_REASONS + 1);
        counters.count(r#"{"type":"Warning","reason":"R0"}"#);
        counters.count("not json");
        assert_eq!(counters.len(), MAX_REASONS + 1);
    }
}
