//! The dedup stage: checks each record against the filter ring and the keys in flight, hands
//! new occurrences on, counts the sinks' acknowledgements per batch and commits a batch's keys
//! when every configured sink has acknowledged it.
//!
//! It is the only place that touches the ring. Commit follows delivery, so a crash at any
//! point replays at most what was in flight and never loses an event. Acks are applied between
//! source hand-offs, never while a hand-off is being checked, so the ring's answers for a
//! hand-off stay true while it is worked through.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroUsize;

use lru::LruCache;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::replica::{Replica, Taken};
use super::{DedupError, Ring};
use crate::event::{EventRecord, OccurrenceKey, RawJson};
use crate::flow::{Accepted, AcceptedChunk, BatchAck, SourceBatch};
use crate::ha::Standing;
use crate::metrics::{
    ACKS_PENDING, DEDUP_CORRUPT_FILES, DEDUP_ESTIMATED_FP_RATE, DEDUP_FILL_RATIO,
    DEDUP_GENERATIONS, DUPLICATES_DROPPED, EVENTS_RECEIVED, LAST_EVENT_TIMESTAMP, MALFORMED_EVENTS,
    ReasonCounters,
};
use crate::source::SourceHealth;

/// Objects whose last version is remembered for eventrouter's `old_event`. Events live an hour
/// in the API server; this covers the busy part of that window in a few MiB.
const PRIOR_VERSIONS: usize = 4096;

/// What the stage is told once, at start.
#[derive(Debug, Clone, Copy)]
pub struct StageSettings {
    /// Remember each object's previous version (eventrouter's `old_event`).
    pub priors: bool,
    /// Hand DELETED records on (they carry no key and are never committed).
    pub emit_deleted: bool,
    /// How many sinks must acknowledge a batch before its keys are committed.
    pub sinks: usize,
    /// The `source` label of the received-events counter.
    pub source: &'static str,
    /// Count events per reason (`--metrics-by-reason`).
    pub by_reason: bool,
    /// Generations the ring keeps: one fill-ratio series each.
    pub generations: usize,
    /// With leader election: the source's scopes and the standby's hold bound in bytes. The
    /// stage starts standing by.
    pub replica: Option<(usize, usize)>,
    /// The most accepted events handed on in one message (at most
    /// [`crate::flow::HANDOFF_RECORDS`], at most the batch size).
    pub chunk: usize,
}

/// What a run did, for the final log line and the tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub received: u64,
    pub duplicates: u64,
    pub deleted_skipped: u64,
    pub emitted: u64,
    pub committed: u64,
    /// Emitted events every sink acknowledged; `emitted - delivered` were accepted and not
    /// delivered when the pipe ended (deletions count here too, with `--emit-deleted`).
    pub delivered: u64,
}

impl Tally {
    /// Accepted events that did not reach every sink: the next run delivers them again.
    pub fn undelivered(&self) -> u64 {
        self.emitted.saturating_sub(self.delivered)
    }
}

/// In-flight keys are already uniform hashes: use their low bits instead of hashing again.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type KeySet = HashSet<OccurrenceKey, BuildHasherDefault<KeyHasher>>;

pub struct DedupStage {
    ring: Ring,
    in_flight: KeySet,
    /// Scratch for `Ring::contains_many`, kept to avoid an allocation per hand-off.
    keys: Vec<OccurrenceKey>,
    in_ring: Vec<bool>,
    flushing: Option<tokio::task::JoinHandle<()>>,
    priors: Option<LruCache<(String, String), RawJson>>,
    emit_deleted: bool,
    tally: Tally,
    /// Acks received per batch sequence number, until every sink has acknowledged it.
    acks: HashMap<u64, usize>,
    /// How many sinks must acknowledge a batch before its keys are committed.
    sinks: usize,
    /// Events of batches every sink acknowledged. Sinks handle batches in order, so batches
    /// complete in order: everything emitted before a point is delivered once this reaches the
    /// emitted count at that point.
    acked_events: u64,
    /// The emitted count when the source's first complete list had been received.
    ready_at: Option<u64>,
    /// A commit failed because the full newest generation could not rotate: the pipe stops.
    failed: Option<DedupError>,
    /// With leader election: the watermark, and what a standby holds.
    replica: Option<Replica>,
    /// A standby's keys the leader's watermark covers, committed after each hand-off.
    covered: Vec<OccurrenceKey>,
    /// Accepted events not yet handed on: sent when it holds `chunk` of them and at the end of
    /// each hand-off.
    outbox: AcceptedChunk,
    chunk: usize,
    meters: StageMeters,
}

/// The dedup stage's metric handles, obtained once; counters move once per hand-off.
struct StageMeters {
    received: metrics::Counter,
    duplicates: metrics::Counter,
    last_event: metrics::Gauge,
    generations: metrics::Gauge,
    /// One per generation slot, newest first, so the series stay bounded across rotations.
    fill_ratio: Vec<metrics::Gauge>,
    /// Same slots as `fill_ratio`.
    estimated_fp_rate: Vec<metrics::Gauge>,
    acks_pending: metrics::Gauge,
    corrupt: metrics::Counter,
    malformed: metrics::Counter,
    by_reason: Option<ReasonCounters>,
}

impl StageMeters {
    fn new(source: &'static str, generations: usize, by_reason: bool) -> Self {
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
}

impl DedupStage {
    pub fn new(ring: Ring, settings: StageSettings) -> Self {
        let mut stage = DedupStage {
            ring,
            in_flight: KeySet::default(),
            keys: Vec::new(),
            in_ring: Vec::new(),
            flushing: None,
            priors: settings.priors.then(|| {
                LruCache::new(NonZeroUsize::new(PRIOR_VERSIONS).unwrap_or(NonZeroUsize::MIN))
            }),
            emit_deleted: settings.emit_deleted,
            tally: Tally::default(),
            acks: HashMap::new(),
            sinks: settings.sinks,
            acked_events: 0,
            ready_at: None,
            failed: None,
            replica: settings
                .replica
                .map(|(scopes, max_bytes)| Replica::new(scopes, max_bytes)),
            covered: Vec::new(),
            outbox: Vec::new(),
            chunk: settings.chunk.max(1),
            meters: StageMeters::new(settings.source, settings.generations, settings.by_reason),
        };
        stage.observe_ring();
        stage
    }

    /// What the stage did so far.
    /// The error that ends the pipe: a commit found the newest generation full and could not
    /// start the next one (see [`Ring::commit`]). Taken once.
    pub fn take_failure(&mut self) -> Option<DedupError> {
        self.failed.take()
    }

    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Accepted events not yet acknowledged by every sink.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The generations the ring holds now.
    pub fn generations(&self) -> usize {
        self.ring.generations().len()
    }

    /// Everything emitted so far becomes the point after which the pipe is ready: the source's
    /// first complete list has been received.
    pub fn mark_initial_list(&mut self, health: &SourceHealth) {
        self.ready_at = Some(self.tally.emitted);
        self.check_ready(health);
    }

    /// Sets the malformed-input counter to the sources' running total.
    pub fn observe_malformed(&self, total: u64) {
        self.meters.malformed.absolute(total);
    }
    /// Sends the new occurrences of `batch` on; returns false if shutdown interrupted it.
    pub async fn accept(
        &mut self,
        batch: SourceBatch,
        out: &mpsc::Sender<AcceptedChunk>,
        shutdown: &CancellationToken,
    ) -> bool {
        // The ring answers for the whole hand-off at once, which lets it overlap the cache
        // misses of consecutive keys. Commits only happen between hand-offs, so the answers
        // stay true while the loop runs.
        self.keys.clear();
        self.keys.extend(batch.iter().map(|r| r.key));
        let mut in_ring = std::mem::take(&mut self.in_ring);
        self.ring.contains_many(&self.keys, &mut in_ring);
        if !batch.is_empty() {
            self.meters.received.increment(batch.len() as u64);
            self.meters.last_event.set(unix_seconds());
        }
        let duplicates_before = self.tally.duplicates;
        let keep_going = self.accept_checked(batch, &in_ring, out, shutdown).await;
        self.meters
            .duplicates
            .increment(self.tally.duplicates - duplicates_before);
        self.in_ring = in_ring;
        self.commit_covered();
        keep_going
    }

    async fn accept_checked(
        &mut self,
        batch: SourceBatch,
        in_ring: &[bool],
        out: &mpsc::Sender<AcceptedChunk>,
        shutdown: &CancellationToken,
    ) -> bool {
        let standby = self.replica.as_ref().is_some_and(|r| !r.is_leading());
        for (record, &in_ring) in batch.into_iter().zip(in_ring) {
            self.tally.received += 1;
            let prior = self.remember(&record);
            if !record.is_occurrence() {
                // A standby emits nothing, deletions included.
                if !self.emit_deleted || standby {
                    self.tally.deleted_skipped += 1;
                    continue;
                }
            } else if in_ring || self.in_flight.contains(&record.key) {
                self.tally.duplicates += 1;
                continue;
            } else {
                self.in_flight.insert(record.key);
            }
            let key = record.is_occurrence().then_some(record.key);
            let version = match (&self.replica, key) {
                (Some(_), Some(_)) => record.resource_version().and_then(|v| v.parse().ok()),
                _ => None,
            };
            let accepted = Accepted {
                record,
                prior,
                enrichment: None,
            };
            if let (Some(replica), Some(key)) = (&mut self.replica, key) {
                if standby {
                    match replica.take(accepted, version) {
                        Taken::Covered => self.covered.push(key),
                        Taken::Held => {}
                        Taken::Opaque => {
                            self.in_flight.remove(&key);
                        }
                    }
                    continue;
                }
                if replica.covered_by_predecessor(version) {
                    self.covered.push(key);
                    continue;
                }
                replica.emitted(key, version);
            }
            if !self.hand_on(accepted, out, shutdown).await {
                return false;
            }
        }
        self.send_outbox(out, shutdown).await
    }

    /// Puts one accepted event in the outbox, and sends the outbox on once it is full; false
    /// if shutdown interrupted the wait for room.
    async fn hand_on(
        &mut self,
        accepted: Accepted,
        out: &mpsc::Sender<AcceptedChunk>,
        shutdown: &CancellationToken,
    ) -> bool {
        self.outbox.push(accepted);
        if self.outbox.len() < self.chunk {
            return true;
        }
        self.send_outbox(out, shutdown).await
    }

    /// Sends the outbox on as one message; false if shutdown interrupted the wait for room (its
    /// events are then forgotten, so the next run delivers them).
    async fn send_outbox(
        &mut self,
        out: &mpsc::Sender<AcceptedChunk>,
        shutdown: &CancellationToken,
    ) -> bool {
        if self.outbox.is_empty() {
            return true;
        }
        // Fast path: room in the queue. Only a full queue needs to watch for shutdown.
        let permit = match out.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Closed(())) => return false,
            Err(mpsc::error::TrySendError::Full(())) => tokio::select! {
                permit = out.reserve() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return false,
                },
                () = shutdown.cancelled() => {
                    // Never handed on: forget them so the next run delivers them. (A leader's
                    // watermark stays below them: the next leader delivers them.)
                    for accepted in self.outbox.drain(..) {
                        if accepted.record.is_occurrence() {
                            self.in_flight.remove(&accepted.record.key);
                        }
                    }
                    return false;
                }
            },
        };
        if let Some(by_reason) = &mut self.meters.by_reason {
            for accepted in self.outbox.iter().filter(|a| a.record.is_occurrence()) {
                by_reason.count(accepted.record.raw.get());
            }
        }
        self.tally.emitted += self.outbox.len() as u64;
        let chunk = std::mem::replace(&mut self.outbox, Vec::with_capacity(self.chunk));
        permit.send(chunk);
        true
    }

    /// Commits the keys a standby found covered by the leader's watermark.
    fn commit_covered(&mut self) {
        if self.covered.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.covered);
        self.commit(&keys, None);
        for key in &keys {
            self.in_flight.remove(key);
        }
        self.covered = keys;
        self.covered.clear();
    }

    /// Commits delivered (or, on a standby, covered) keys; `batch` names the batch in the log.
    fn commit(&mut self, keys: &[OccurrenceKey], batch: Option<u64>) {
        if let Err(e) = self.ring.commit(keys) {
            // Delivered but not remembered: a later run delivers these again. Never a loss; but
            // the full generation cannot take more keys without dropping events, so stop.
            error!(error = %e, batch, "cannot commit delivered events to the filters; stopping (they are delivered again by the next run)");
            self.failed.get_or_insert(e);
        } else {
            self.tally.committed += keys.len() as u64;
        }
    }

    /// Whether the stage takes the next hand-off now: a standby at its hold bound waits for
    /// the leader's watermark.
    pub fn wants_input(&self) -> bool {
        self.replica.as_ref().is_none_or(Replica::wants_input)
    }

    /// What to publish for the Lease.
    pub fn published(&self) -> crate::ha::Published {
        crate::ha::Published {
            watermark: self.replica.as_ref().and_then(Replica::watermark),
            waiting: self.replica.as_ref().is_some_and(Replica::waiting),
        }
    }

    /// A scope's progress report (see [`crate::flow::SourceMsg::Through`]).
    pub fn through(&mut self, scope: usize, version: Option<u64>) {
        if let Some(replica) = &mut self.replica
            && replica.through(scope, version)
        {
            warn!(
                "the API server's resourceVersions are not numbers: a standby cannot tell what its leader delivered, so a takeover lists again and delivers every event still in the API server once more"
            );
        }
    }

    /// The election's news. Returns false when this pipe must end: it stopped leading (its
    /// sinks are fenced; a new pipe stands by), it leads but could not follow its leader because
    /// versions are opaque (a new pipe lists again, as leader), or shutdown interrupted it.
    pub async fn standing(
        &mut self,
        standing: Standing,
        out: &mpsc::Sender<AcceptedChunk>,
        shutdown: &CancellationToken,
    ) -> bool {
        let Some(replica) = &mut self.replica else {
            return true;
        };
        if replica.is_leading() {
            return standing.leading;
        }
        self.covered = replica.leader_watermark(standing.watermark);
        let opaque = replica.is_opaque();
        self.commit_covered();
        if !standing.leading {
            return true;
        }
        if opaque {
            info!("became the leader with opaque resourceVersions: listing again");
            return false;
        }
        let Some(replica) = &mut self.replica else {
            return true;
        };
        let held = replica.lead();
        info!(
            held = held.len(),
            watermark = ?standing.watermark,
            "took over: delivering what the previous leader's watermark does not cover"
        );
        for (version, accepted) in held {
            let key = accepted.record.key;
            if let Some(replica) = &mut self.replica {
                replica.emitted(key, Some(version));
            }
            if !self.hand_on(accepted, out, shutdown).await {
                return false;
            }
        }
        self.send_outbox(out, shutdown).await
    }

    /// Whether this pipe emits: always without leader election.
    pub fn is_leading(&self) -> bool {
        self.replica.as_ref().is_none_or(Replica::is_leading)
    }

    /// Records the latest version of the record's object, returning the one before it. The
    /// copy kept is detached from the buffer the record came in: it stays for an hour, the
    /// rest of its list page must not.
    fn remember(&mut self, record: &EventRecord) -> Option<RawJson> {
        let priors = self.priors.as_mut()?;
        priors.put(
            (record.namespace().to_string(), record.name().to_string()),
            record.raw.detached(),
        )
    }

    /// Marks the pipe ready once everything of the first complete list is delivered.
    pub fn check_ready(&mut self, health: &SourceHealth) {
        if let Some(at) = self.ready_at
            && self.acked_events >= at
        {
            self.ready_at = None;
            health.set_ready();
            if self.is_leading() {
                info!(
                    delivered = self.acked_events,
                    "initial list delivered; ready"
                );
            } else {
                // A standby is ready once it follows the stream: a rolling update may then
                // take its leader down.
                info!(
                    held = self.replica.as_ref().map_or(0, Replica::held),
                    "initial list read; following the stream as a standby; ready"
                );
            }
        }
    }

    /// Counts one sink's ack; commits the batch when it was the last sink to have it.
    pub fn ack(&mut self, ack: BatchAck) {
        let seq = ack.batch.seq;
        let count = self.acks.entry(seq).or_insert(0);
        *count += 1;
        if *count < self.sinks {
            return;
        }
        self.acks.remove(&seq);
        let batch = ack.batch;
        self.acked_events += batch.events as u64;
        self.tally.delivered += batch.events as u64;
        self.commit(&batch.keys, Some(seq));
        for key in &batch.keys {
            self.in_flight.remove(key);
        }
        if let Some(replica) = &mut self.replica {
            for key in &batch.keys {
                replica.committed(key);
            }
        }
    }

    /// The sync timer: rotate if due, then msync the dirty generations on a blocking thread,
    /// so the checks never wait for the disk. One flush at a time; a tick that finds the last
    /// one still running leaves the generations dirty for the next.
    pub fn sync(&mut self) {
        if let Err(e) = self.ring.rotate_if_due() {
            error!(error = %e, "filter rotation failed; keeping the current generation");
        }
        self.observe_ring();
        if self.flushing.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let flushes = self.ring.take_flushes();
        if flushes.is_empty() {
            return;
        }
        self.flushing = Some(tokio::task::spawn_blocking(move || {
            for flush in flushes {
                if let Err(e) = flush.run() {
                    error!(file = %flush.path().display(), error = %e, "filter flush failed; delivered events may be delivered again after a power loss");
                }
            }
        }));
    }

    /// Refreshes the filter gauges and acks pending. Runs on the sync timer: the fill ratio
    /// counts the bits of every generation (a few MiB), too much for every hand-off and cheap
    /// every few seconds.
    pub fn observe_ring(&mut self) {
        let generations = self.ring.generations();
        self.meters.generations.set(generations.len() as f64);
        for (slot, (fill_gauge, fp_gauge)) in self
            .meters
            .fill_ratio
            .iter()
            .zip(&self.meters.estimated_fp_rate)
            .enumerate()
        {
            let generation = generations
                .len()
                .checked_sub(slot + 1)
                .map(|i| &generations[i]);
            fill_gauge.set(generation.map_or(0.0, |g| g.fill_ratio));
            fp_gauge.set(generation.map_or(0.0, |g| g.estimated_fp_rate));
        }
        self.meters.acks_pending.set(self.in_flight.len() as f64);
        if let Some(replica) = &mut self.replica {
            replica.observe();
        }
        self.meters.corrupt.absolute(self.ring.quarantined_total());
    }

    /// The last flush, on the way out: waits for a running one, then syncs what is left.
    pub async fn flush_all(&mut self) -> Result<(), DedupError> {
        if let Some(running) = self.flushing.take() {
            let _ = running.await;
        }
        self.ring.flush()
    }
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::RingConfig;
    use crate::flow::Batch;
    use std::sync::Arc;

    #[test]
    fn in_flight_keys_hash_by_their_low_bits() {
        let mut set = KeySet::default();
        let a = OccurrenceKey::new("ns", "a", 1);
        set.insert(a);
        assert!(set.contains(&a));
        assert!(!set.contains(&OccurrenceKey::new("ns", "a", 2)));
    }

    fn batch(seq: u64, key: OccurrenceKey) -> Arc<Batch> {
        Arc::new(Batch {
            seq,
            bytes: b"{}\n".to_vec(),
            records: None,
            keys: vec![key],
            events: 1,
            opened_at: std::time::SystemTime::now(),
        })
    }

    #[test]
    fn a_batch_is_committed_only_when_every_sink_acked_it() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::open(RingConfig {
            dir: dir.path().to_path_buf(),
            generations: 2,
            capacity: 1000,
            error_rate: 1e-6,
            rotation_interval: std::time::Duration::from_secs(3600),
        })
        .unwrap();
        let (a, b) = (
            OccurrenceKey::new("d", "a", 1),
            OccurrenceKey::new("d", "b", 1),
        );
        let mut stage = DedupStage::new(
            ring,
            StageSettings {
                priors: false,
                emit_deleted: false,
                sinks: 2,
                source: "replay",
                by_reason: false,
                generations: 2,
                replica: None,
                chunk: 256,
            },
        );
        stage.in_flight.extend([a, b]);
        let in_ring = |stage: &DedupStage, key| {
            let mut out = Vec::new();
            stage.ring.contains_many(&[key], &mut out);
            out[0]
        };
        let (first, second) = (batch(0, a), batch(1, b));
        // stdout has both batches, S3 only the first.
        stage.ack(BatchAck {
            sink: 0,
            batch: first.clone(),
        });
        stage.ack(BatchAck {
            sink: 0,
            batch: second.clone(),
        });
        assert!(!in_ring(&stage, a), "committed with one sink of two");
        assert_eq!(stage.acked_events, 0);
        stage.ack(BatchAck {
            sink: 1,
            batch: first,
        });
        assert!(in_ring(&stage, a) && !in_ring(&stage, b));
        assert!(!stage.in_flight.contains(&a) && stage.in_flight.contains(&b));
        assert_eq!((stage.acked_events, stage.tally.committed), (1, 1));
        stage.ack(BatchAck {
            sink: 1,
            batch: second,
        });
        assert!(in_ring(&stage, b));
        assert!(stage.acks.is_empty() && stage.in_flight.is_empty());
    }
}
