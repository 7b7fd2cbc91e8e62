//! The dedup stage's control loop, as a state machine: a [`Phase`] and one [`Driver::step`]
//! from an [`Input`] to the next phase. The `select!` in [`Driver::next_input`] only turns
//! channel events into inputs; what they mean is decided in `step`, the one place that ends
//! the pipe, enters the drain, or stops leading.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::DedupError;
use super::stage::{DedupStage, Tally};
use crate::flow::{AcceptedChunk, BatchAck, Published, Standing};
use crate::source::{SourceError, SourceMsg};

/// Why the pipe stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The replay input ended and everything read was delivered.
    InputEnded,
    /// SIGTERM or SIGINT, and everything accepted was delivered.
    Signal,
    /// stdout's reader went away; what was in flight stays uncommitted for the next run.
    StdoutClosed,
    /// The shutdown timeout passed with events still in flight (they are delivered again later).
    ShutdownTimeout,
    /// This replica stopped leading: its sinks were fenced at once and what was in flight is
    /// left to the new leader. A new pipe stands by.
    SteppedDown,
    /// This replica became the leader but could not follow its leader (the API server's
    /// resourceVersions are not numbers): a new pipe lists again, as leader.
    RelistAsLeader,
}

impl EndReason {
    /// Whether the sink workers finished on their own (their joins do not wait). After a
    /// timeout, a step-down or a relist they may still be in a call that hangs until its own
    /// timeout, and nothing more is written anyway.
    pub fn sinks_finished(self) -> bool {
        !matches!(
            self,
            EndReason::ShutdownTimeout | EndReason::SteppedDown | EndReason::RelistAsLeader
        )
    }
}

/// Where the loop is.
pub enum Phase {
    /// Reading the source, checking, handing on; acks are committed as they come.
    Running,
    /// No more input: the batcher and the sinks deliver what they hold, until every sink
    /// worker is gone or the deadline passes.
    Draining { deadline: Instant },
    /// The loop is over.
    Ended(EndReason),
    /// A commit failed: nothing more can be committed.
    Failed(DedupError),
}

/// What happened, as the loop sees it.
pub enum Input {
    /// A sink's ack; `None` once every sink worker is gone.
    Ack(Option<BatchAck>),
    /// Rotate and sync the filters.
    SyncTick,
    /// SIGTERM or SIGINT.
    Shutdown,
    /// The election's news; `None` once the elector is gone.
    Standing(Option<Standing>),
    /// The source's next message; `None` once it ended.
    Source(Option<SourceMsg>),
    /// The drain's deadline passed.
    DrainDeadline,
}

/// The channels the stage sits between.
pub struct Io {
    pub source: mpsc::Receiver<SourceMsg>,
    pub accepted: mpsc::Sender<AcceptedChunk>,
    pub acks: mpsc::UnboundedReceiver<BatchAck>,
    /// With leader election: the elector's news, and where the watermark is published.
    pub standing: Option<watch::Receiver<Standing>>,
    pub published: Option<watch::Sender<Published>>,
}

/// What ends or paces the loop from outside.
pub struct Control {
    /// SIGTERM or SIGINT.
    pub shutdown: CancellationToken,
    /// Ends a wait for room in the pipe: cancelled on a signal and when this replica stepped
    /// down (its sinks are fenced, so the room would never come).
    pub interrupt: CancellationToken,
    /// Cancelled when this replica stepped down; never without leader election.
    pub stepped_down: Option<CancellationToken>,
    pub sync_interval: Duration,
    pub shutdown_timeout: Duration,
    /// The sources' running total of malformed input.
    pub malformed: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// The loop is over; the stage awaits its last flush.
pub struct Stopped {
    pub stage: DedupStage,
    pub end: EndReason,
    /// The source failed for good: the pipe ends with this error once it delivered what it had.
    pub source_failure: Option<SourceError>,
    published: Option<watch::Sender<Published>>,
    malformed: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl Stopped {
    /// The last flush, the last watermark and the run's final log line.
    pub async fn finish(&mut self, end: EndReason) -> Result<Tally, DedupError> {
        self.end = end;
        self.stage.flush_all().await?;
        publish(&self.published, &self.stage);
        let malformed = (self.malformed)();
        self.stage.observe_malformed(malformed);
        let t = self.stage.tally();
        info!(
            received = t.received,
            emitted = t.emitted,
            duplicates = t.duplicates,
            deleted_skipped = t.deleted_skipped,
            committed = t.committed,
            malformed,
            end = ?end,
            "pipeline stopped"
        );
        Ok(t.clone())
    }
}

/// Runs the stage until its phase ends. A failed commit flushes what it can and is returned.
pub async fn run(stage: DedupStage, io: Io, control: Control) -> Result<Stopped, DedupError> {
    // The standing as it is now is news to this pipe.
    let mut io = io;
    if let Some(rx) = &mut io.standing {
        rx.mark_changed();
    }
    let mut sync_timer = tokio::time::interval(control.sync_interval);
    sync_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    sync_timer.reset();
    let Io {
        source,
        accepted,
        acks,
        standing,
        published,
    } = io;
    let mut driver = Driver {
        stage,
        source,
        accepted: Some(accepted),
        acks,
        standing,
        published,
        control,
        sync_timer,
        end: EndReason::InputEnded,
        source_failure: None,
    };
    let mut phase = Phase::Running;
    let end = loop {
        let input = driver.next_input(&phase).await;
        phase = driver.step(phase, input).await;
        match phase {
            Phase::Running | Phase::Draining { .. } => {}
            Phase::Ended(end) => break end,
            Phase::Failed(e) => {
                // Nothing more can be committed: end now, as after a shutdown timeout.
                let _ = driver.stage.flush_all().await;
                return Err(e);
            }
        }
    };
    Ok(Stopped {
        stage: driver.stage,
        end,
        source_failure: driver.source_failure,
        published: driver.published,
        malformed: driver.control.malformed,
    })
}

struct Driver {
    stage: DedupStage,
    source: mpsc::Receiver<SourceMsg>,
    /// The way on to the batcher; dropped when the drain starts, so the batcher flushes and
    /// ends.
    accepted: Option<mpsc::Sender<AcceptedChunk>>,
    acks: mpsc::UnboundedReceiver<BatchAck>,
    standing: Option<watch::Receiver<Standing>>,
    published: Option<watch::Sender<Published>>,
    control: Control,
    sync_timer: Interval,
    /// What a drain that completes reports: the input ended, or a signal came.
    end: EndReason,
    source_failure: Option<SourceError>,
}

impl Driver {
    async fn next_input(&mut self, phase: &Phase) -> Input {
        let deadline = match phase {
            Phase::Draining { deadline } => Some(*deadline),
            _ => None,
        };
        let running = deadline.is_none();
        let wants_input = self.stage.wants_input();
        tokio::select! {
            biased;
            ack = self.acks.recv() => Input::Ack(ack),
            _ = self.sync_timer.tick() => Input::SyncTick,
            () = self.control.shutdown.cancelled(), if running => Input::Shutdown,
            news = changed(&mut self.standing), if running => Input::Standing(news),
            msg = self.source.recv(), if running && wants_input => Input::Source(msg),
            () = sleep_until_opt(deadline) => Input::DrainDeadline,
        }
    }

    async fn step(&mut self, phase: Phase, input: Input) -> Phase {
        match input {
            Input::Ack(Some(ack)) => {
                if let Err(e) = self.stage.ack(ack) {
                    return Phase::Failed(e);
                }
                self.stage.check_ready();
                self.publish();
                phase
            }
            // Every sink worker is gone: they drained everything, or stdout closed.
            Input::Ack(None) => Phase::Ended(self.end),
            Input::SyncTick => {
                self.stage.sync();
                self.stage.observe_malformed((self.control.malformed)());
                phase
            }
            Input::Shutdown => {
                info!("shutting down: delivering what is in flight");
                let draining = self.drain();
                // Progress reports queued right behind records already taken cover them: the
                // final watermark must not claim less than was delivered.
                while let Ok(SourceMsg::Through { scope, version }) = self.source.try_recv() {
                    self.stage.through(scope, version);
                }
                self.publish();
                draining
            }
            Input::Standing(news) => self.on_standing(phase, news).await,
            Input::Source(msg) => self.on_source(msg).await,
            Input::DrainDeadline => {
                warn!(
                    in_flight = self.stage.in_flight(),
                    "shutdown timeout passed; events in flight stay uncommitted and will be delivered again after restart"
                );
                Phase::Ended(EndReason::ShutdownTimeout)
            }
        }
    }

    async fn on_standing(&mut self, phase: Phase, news: Option<Standing>) -> Phase {
        let keep_going = match (news, &self.accepted) {
            (Some(news), Some(tx)) => {
                match self.stage.standing(news, tx, &self.control.interrupt).await {
                    Ok(keep_going) => keep_going,
                    Err(e) => return Phase::Failed(e),
                }
            }
            // The elector is gone: only at shutdown.
            _ => true,
        };
        self.publish();
        if keep_going {
            return phase;
        }
        let ended = if self.stage.is_leading() {
            Phase::Ended(EndReason::RelistAsLeader)
        } else {
            self.stopped_leading()
        };
        // A signal came meanwhile: the shutdown input drains as usual.
        if self.control.shutdown.is_cancelled() {
            phase
        } else {
            ended
        }
    }

    async fn on_source(&mut self, msg: Option<SourceMsg>) -> Phase {
        let keep_going = match (msg, &self.accepted) {
            (Some(SourceMsg::Records(batch)), Some(tx)) => {
                match self.stage.accept(batch, tx, &self.control.interrupt).await {
                    Ok(keep_going) => keep_going,
                    Err(e) => return Phase::Failed(e),
                }
            }
            (Some(SourceMsg::InitialListSent), Some(_)) => {
                self.stage.mark_initial_list();
                true
            }
            (Some(SourceMsg::Through { scope, version }), _) => {
                self.stage.through(scope, version);
                self.publish();
                true
            }
            (Some(SourceMsg::Failed(e)), _) => {
                error!(error = %e, "the source cannot go on; delivering what is in flight, then stopping");
                self.source_failure = Some(e);
                false
            }
            _ => false,
        };
        if keep_going {
            return Phase::Running;
        }
        let stepped_down = self
            .control
            .stepped_down
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled);
        if stepped_down && !self.control.shutdown.is_cancelled() {
            return self.stopped_leading();
        }
        self.drain()
    }

    /// Enters the drain: no more input; the batcher flushes its partial batch and ends, each
    /// sink delivers what it holds. A drain that completes reports a signal if one came.
    fn drain(&mut self) -> Phase {
        if self.control.shutdown.is_cancelled() {
            self.end = EndReason::Signal;
        }
        self.accepted = None;
        self.source.close();
        Phase::Draining {
            deadline: Instant::now() + self.control.shutdown_timeout,
        }
    }

    /// This replica's sinks are fenced: what is in flight is the new leader's to deliver.
    fn stopped_leading(&self) -> Phase {
        warn!(
            in_flight = self.stage.in_flight(),
            "stopped leading: events in flight are left to the new leader; standing by"
        );
        Phase::Ended(EndReason::SteppedDown)
    }

    fn publish(&self) {
        publish(&self.published, &self.stage);
    }
}

fn publish(published: &Option<watch::Sender<Published>>, stage: &DedupStage) {
    if let Some(tx) = published {
        let value = stage.published();
        tx.send_if_modified(|w| std::mem::replace(w, value) != value);
    }
}

/// The next standing, when there is an election and it changed; `None` once the elector is
/// gone; never without an election.
async fn changed(standing: &mut Option<watch::Receiver<Standing>>) -> Option<Standing> {
    match standing {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => {
                *standing = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dedup::stage::StageSettings;
    use crate::event::{Change, EventRecord};
    use crate::flow::Batch;

    struct Rig {
        source: mpsc::Sender<SourceMsg>,
        accepted: mpsc::Receiver<AcceptedChunk>,
        acks: mpsc::UnboundedSender<BatchAck>,
        shutdown: CancellationToken,
        stepped_down: CancellationToken,
        _dir: tempfile::TempDir,
    }

    fn start() -> (Rig, tokio::task::JoinHandle<Result<Stopped, DedupError>>) {
        let dir = tempfile::tempdir().unwrap();
        let ring = crate::dedup::test_ring(dir.path());
        let settings = StageSettings {
            priors: false,
            emit_deleted: false,
            sinks: 1,
            source: "replay",
            by_reason: false,
            generations: 2,
            replica: None,
            chunk: 256,
        };
        let stage = DedupStage::new(ring, settings, Arc::default());
        let (source_tx, source) = mpsc::channel(4);
        let (accepted, accepted_rx) = mpsc::channel(4);
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let stepped_down = CancellationToken::new();
        let io = Io {
            source,
            accepted,
            acks,
            standing: None,
            published: None,
        };
        let control = Control {
            shutdown: shutdown.clone(),
            interrupt: shutdown.child_token(),
            stepped_down: Some(stepped_down.clone()),
            sync_interval: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            malformed: Box::new(|| 0),
        };
        let task = tokio::spawn(run(stage, io, control));
        let rig = Rig {
            source: source_tx,
            accepted: accepted_rx,
            acks: acks_tx,
            shutdown,
            stepped_down,
            _dir: dir,
        };
        (rig, task)
    }

    fn record(name: &str) -> EventRecord {
        let text = format!(r#"{{"metadata":{{"namespace":"ns","name":"{name}"}},"count":1}}"#);
        EventRecord::from_json(Change::Added, &text).unwrap()
    }

    /// Hands two records (one a duplicate of the other) in and acks what comes out.
    async fn deliver_one(rig: &mut Rig) {
        let records = vec![record("a"), record("a")];
        rig.source.send(SourceMsg::Records(records)).await.unwrap();
        let chunk = rig.accepted.recv().await.expect("the new occurrence");
        assert_eq!(chunk.len(), 1, "the duplicate is dropped");
        let batch = Arc::new(Batch {
            seq: 0,
            bytes: b"{}\n".to_vec(),
            records: None,
            keys: chunk.iter().map(|a| a.record.key).collect(),
            events: chunk.len(),
            opened_at: std::time::SystemTime::now(),
        });
        rig.acks.send(BatchAck { sink: 0, batch }).unwrap();
    }

    #[tokio::test]
    async fn input_that_ends_drains_and_commits() {
        let (mut rig, task) = start();
        deliver_one(&mut rig).await;
        drop(rig.source);
        // The drain drops the way on to the batcher.
        assert!(rig.accepted.recv().await.is_none());
        drop(rig.acks);
        let mut stopped = task.await.unwrap().unwrap();
        assert_eq!(stopped.end, EndReason::InputEnded);
        let tally = stopped.finish(stopped.end).await.unwrap();
        assert_eq!(
            (tally.emitted, tally.duplicates, tally.committed),
            (1, 1, 1)
        );
        assert_eq!(tally.undelivered(), 0);
    }

    #[tokio::test]
    async fn a_signal_drains_and_reports_itself() {
        let (mut rig, task) = start();
        deliver_one(&mut rig).await;
        rig.shutdown.cancel();
        assert!(rig.accepted.recv().await.is_none());
        drop(rig.acks);
        let stopped = task.await.unwrap().unwrap();
        assert_eq!(stopped.end, EndReason::Signal);
        assert_eq!(stopped.stage.tally().committed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_that_outlasts_its_deadline_ends_as_a_timeout() {
        let (mut rig, task) = start();
        rig.shutdown.cancel();
        assert!(rig.accepted.recv().await.is_none());
        // A sink worker that never finishes: the ack channel stays open.
        let stopped = task.await.unwrap().unwrap();
        assert_eq!(stopped.end, EndReason::ShutdownTimeout);
        assert!(!stopped.end.sinks_finished());
        drop(rig.acks);
    }

    #[tokio::test]
    async fn a_replica_that_stepped_down_ends_without_draining() {
        let (mut rig, task) = start();
        deliver_one(&mut rig).await;
        rig.stepped_down.cancel();
        drop(rig.source);
        let stopped = task.await.unwrap().unwrap();
        assert_eq!(stopped.end, EndReason::SteppedDown);
        assert!(!stopped.end.sinks_finished());
        drop((rig.acks, rig.accepted));
    }
}
