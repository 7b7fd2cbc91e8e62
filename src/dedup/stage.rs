//! The dedup stage: checks each record against the filter ring and the keys in flight, hands
//! new occurrences on, and commits a batch's keys once every sink has acknowledged it.
//!
//! It is the only place that touches the ring, through its parts: the [`Checker`] (the ring
//! and the keys in flight), the [`AckLedger`] (which batches every sink has), the standby hold
//! ([`Replica`], with leader election), and readiness. Commit follows delivery, so a crash at
//! any point replays at most what was in flight and never loses an event. Acks are applied
//! between source hand-offs, never while a hand-off is being checked, so the ring's answers
//! for a hand-off stay true while it is worked through. The loop that feeds it is
//! [`super::drive`].

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::checker::Checker;
use super::ledger::AckLedger;
use super::meters::StageMeters;
use super::replica::{Replica, Taken};
use super::{DedupError, Ring};
use crate::encode::priors::PriorVersions;
use crate::event::{EventView, OccurrenceKey};
use crate::flow::{Accepted, AcceptedChunk, BatchAck, Published, SourceBatch, Standing};
use crate::source::SourceHealth;

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

/// When the pipe is ready: once everything of the source's first complete list is delivered.
struct Readiness {
    health: Arc<SourceHealth>,
    /// The emitted count when the first complete list had been received.
    at: Option<u64>,
}

pub struct DedupStage {
    checker: Checker,
    /// Scratch for the ring's answers, kept to avoid an allocation per hand-off.
    in_ring: Vec<bool>,
    flushing: Option<tokio::task::JoinHandle<()>>,
    priors: Option<PriorVersions>,
    emit_deleted: bool,
    tally: Tally,
    ledger: AckLedger,
    readiness: Readiness,
    /// With leader election: the watermark, and what a standby holds.
    replica: Option<Replica>,
    /// A standby's keys the leader's watermark covers, committed after each hand-off.
    covered: Vec<OccurrenceKey>,
    /// Accepted events not yet handed on: sent when it holds `chunk` of them and at the end of
    /// each hand-off.
    outbox: AcceptedChunk,
    chunk: usize,
    meters: StageMeters,
    /// With `--metrics-by-reason`: the series each handed-on occurrence counts in once every
    /// sink has it.
    reasons: HashMap<OccurrenceKey, metrics::Counter>,
}

impl DedupStage {
    /// `health` is where readiness is reported.
    pub fn new(ring: Ring, settings: StageSettings, health: Arc<SourceHealth>) -> Self {
        let mut stage = DedupStage {
            checker: Checker::new(ring),
            in_ring: Vec::new(),
            flushing: None,
            priors: settings.priors.then(PriorVersions::default),
            emit_deleted: settings.emit_deleted,
            tally: Tally::default(),
            ledger: AckLedger::new(settings.sinks),
            readiness: Readiness { health, at: None },
            replica: settings
                .replica
                .map(|(scopes, max_bytes)| Replica::new(scopes, max_bytes)),
            covered: Vec::new(),
            outbox: Vec::new(),
            chunk: settings.chunk.max(1),
            meters: StageMeters::new(settings.source, settings.generations, settings.by_reason),
            reasons: HashMap::new(),
        };
        stage.observe_ring();
        stage
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Accepted events not yet acknowledged by every sink.
    pub fn in_flight(&self) -> usize {
        self.checker.in_flight()
    }

    /// The generations the ring holds now.
    pub fn generations(&self) -> usize {
        self.checker.generations().len()
    }

    /// Everything emitted so far becomes the point after which the pipe is ready: the source's
    /// first complete list has been received.
    pub fn mark_initial_list(&mut self) {
        self.readiness.at = Some(self.tally.emitted);
        self.check_ready();
    }

    /// Sets the malformed-input counter to the sources' running total.
    pub fn observe_malformed(&self, total: u64) {
        self.meters.malformed.absolute(total);
    }

    /// Sends the new occurrences of `batch` on; `Ok(false)` if shutdown interrupted it or the
    /// next stage is gone.
    pub async fn accept(
        &mut self,
        batch: SourceBatch,
        out: &mpsc::Sender<AcceptedChunk>,
        shutdown: &CancellationToken,
    ) -> Result<bool, DedupError> {
        let mut in_ring = std::mem::take(&mut self.in_ring);
        self.checker
            .check_many(batch.iter().map(|r| r.key), &mut in_ring);
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
        self.commit_covered()?;
        Ok(keep_going)
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
            let prior = self.priors.as_mut().and_then(|p| p.remember(&record));
            if !record.is_occurrence() {
                // A standby emits nothing, deletions included.
                if !self.emit_deleted || standby {
                    self.tally.deleted_skipped += 1;
                    continue;
                }
            } else if !self.checker.admit(record.key, in_ring) {
                self.tally.duplicates += 1;
                continue;
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
                        Taken::Opaque => self.checker.forget(&key),
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
                            self.checker.forget(&accepted.record.key);
                        }
                    }
                    return false;
                }
            },
        };
        if let Some(by_reason) = &mut self.meters.by_reason {
            for accepted in self.outbox.iter().filter(|a| a.record.is_occurrence()) {
                let counter = by_reason.counter_of(&EventView::of(&accepted.record));
                self.reasons.insert(accepted.record.key, counter);
            }
        }
        self.tally.emitted += self.outbox.len() as u64;
        let chunk = std::mem::replace(&mut self.outbox, Vec::with_capacity(self.chunk));
        permit.send(chunk);
        true
    }

    /// Commits the keys a standby found covered by the leader's watermark.
    fn commit_covered(&mut self) -> Result<(), DedupError> {
        if self.covered.is_empty() {
            return Ok(());
        }
        let mut keys = std::mem::take(&mut self.covered);
        let committed = self.commit(&keys, None);
        keys.clear();
        self.covered = keys;
        committed
    }

    /// Commits delivered (or, on a standby, covered) keys; `batch` names the batch in the log.
    fn commit(&mut self, keys: &[OccurrenceKey], batch: Option<u64>) -> Result<(), DedupError> {
        match self.checker.commit(keys) {
            Ok(()) => {
                self.tally.committed += keys.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Delivered but not remembered: a later run delivers these again. Never a loss;
                // but the full generation cannot take more keys without dropping events, so
                // stop.
                error!(error = %e, batch, "cannot commit delivered events to the filters; stopping (they are delivered again by the next run)");
                Err(e)
            }
        }
    }

    /// Whether the stage takes the next hand-off now: a standby at its hold bound waits for
    /// the leader's watermark.
    pub fn wants_input(&self) -> bool {
        self.replica.as_ref().is_none_or(Replica::wants_input)
    }

    /// What to publish for the Lease.
    pub fn published(&self) -> Published {
        Published {
            watermark: self.replica.as_ref().and_then(Replica::watermark),
            waiting: self.replica.as_ref().is_some_and(Replica::waiting),
        }
    }

    /// A scope's progress report (see [`crate::source::SourceMsg::Through`]).
    pub fn through(&mut self, scope: usize, version: Option<u64>) {
        if let Some(replica) = &mut self.replica
            && replica.through(scope, version)
        {
            warn!(
                "the API server's resourceVersions are not numbers: a standby cannot tell what its leader delivered, so a takeover lists again and delivers every event still in the API server once more"
            );
        }
    }

    /// The election's news. `Ok(false)` when this pipe must end: it stopped leading (its sinks
    /// are fenced; a new pipe stands by), it leads but could not follow its leader because
    /// versions are opaque (a new pipe lists again, as leader), or shutdown interrupted it.
    pub async fn standing(
        &mut self,
        standing: Standing,
        out: &mpsc::Sender<AcceptedChunk>,
        shutdown: &CancellationToken,
    ) -> Result<bool, DedupError> {
        let Some(replica) = &mut self.replica else {
            return Ok(true);
        };
        if replica.is_leading() {
            return Ok(standing.leading);
        }
        self.covered = replica.leader_watermark(standing.watermark);
        let opaque = replica.is_opaque();
        self.commit_covered()?;
        if !standing.leading {
            return Ok(true);
        }
        if opaque {
            info!("became the leader with opaque resourceVersions: listing again");
            return Ok(false);
        }
        Ok(self.take_over(standing, out, shutdown).await)
    }

    /// Leads from now on: delivers what the previous leader's watermark does not cover.
    async fn take_over(
        &mut self,
        standing: Standing,
        out: &mpsc::Sender<AcceptedChunk>,
        shutdown: &CancellationToken,
    ) -> bool {
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

    /// Marks the pipe ready once everything of the first complete list is delivered.
    pub fn check_ready(&mut self) {
        let delivered = self.ledger.delivered();
        if self.readiness.at.is_none_or(|at| delivered < at) {
            return;
        }
        self.readiness.at = None;
        self.readiness.health.set_ready();
        if self.is_leading() {
            info!(delivered, "initial list delivered; ready");
        } else {
            // A standby is ready once it follows the stream: a rolling update may then take
            // its leader down.
            info!(
                held = self.replica.as_ref().map_or(0, Replica::held),
                "initial list read; following the stream as a standby; ready"
            );
        }
    }

    /// Counts one sink's ack; commits the batch when it was the last sink to have it.
    pub fn ack(&mut self, ack: BatchAck) -> Result<(), DedupError> {
        let Some(batch) = self.ledger.ack(ack) else {
            return Ok(());
        };
        self.tally.delivered += batch.events as u64;
        // Events by reason count once delivered, not when accepted.
        if !self.reasons.is_empty() {
            for key in &batch.keys {
                if let Some(counter) = self.reasons.remove(key) {
                    counter.increment(1);
                }
            }
        }
        self.commit(&batch.keys, Some(batch.seq))?;
        if let Some(replica) = &mut self.replica {
            for key in &batch.keys {
                replica.committed(key);
            }
        }
        Ok(())
    }

    /// The sync timer: rotate if due, then msync the dirty generations on a blocking thread,
    /// so the checks never wait for the disk. One flush at a time; a tick that finds the last
    /// one still running leaves the generations dirty for the next.
    pub fn sync(&mut self) {
        if let Err(e) = self.checker.ring_mut().rotate_if_due() {
            error!(error = %e, "filter rotation failed; keeping the current generation");
        }
        self.observe_ring();
        if self.flushing.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let flushes = self.checker.ring_mut().take_flushes();
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
        self.meters.observe_ring(
            &self.checker.generations(),
            self.checker.in_flight(),
            self.checker.quarantined_total(),
        );
        if let Some(replica) = &mut self.replica {
            replica.observe();
        }
    }

    /// The last flush, on the way out: waits for a running one, then syncs what is left.
    pub async fn flush_all(&mut self) -> Result<(), DedupError> {
        if let Some(running) = self.flushing.take() {
            let _ = running.await;
        }
        self.checker.ring_mut().flush()
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
    use crate::flow::Batch;

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
        let ring = crate::dedup::test_ring(dir.path());
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
            Arc::default(),
        );
        assert!(stage.checker.admit(a, false) && stage.checker.admit(b, false));
        let in_ring = |stage: &DedupStage, key| stage.checker.contains(key);
        let (first, second) = (batch(0, a), batch(1, b));
        // stdout has both batches, S3 only the first.
        let ack = |sink, batch: &Arc<Batch>| BatchAck {
            sink,
            batch: batch.clone(),
        };
        stage.ack(ack(0, &first)).unwrap();
        stage.ack(ack(0, &second)).unwrap();
        assert!(!in_ring(&stage, a), "committed with one sink of two");
        assert_eq!(stage.ledger.delivered(), 0);
        stage.ack(ack(1, &first)).unwrap();
        assert!(in_ring(&stage, a) && !in_ring(&stage, b));
        assert!(!stage.checker.is_in_flight(&a) && stage.checker.is_in_flight(&b));
        assert_eq!((stage.ledger.delivered(), stage.tally.committed), (1, 1));
        stage.ack(ack(1, &second)).unwrap();
        assert!(in_ring(&stage, b));
        assert!(stage.ledger.partial() == 0 && stage.in_flight() == 0);
    }
}
