//! Replicas: which of them emits. The elector task keeps trying for the Lease (see
//! [`crate::leader`]), tells the pipe whether it leads and what the leader last published, and
//! publishes the pipe's own watermark at every renewal. The fence is what keeps a leader that
//! lost its Lease from writing: it is shut the moment the renew deadline passes, before any
//! standby may take the Lease over, and every sink worker checks it before each write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::leader::{Elector, LeaderError, Role};
use crate::metrics::{LEADER, LEADER_TRANSITIONS, WATERMARK_AGE};

pub use crate::flow::{Published, Standing};

/// The pipe's side of the election: its standing, where it publishes its watermark, and the
/// fence its sinks check.
pub struct Link {
    pub standing: watch::Receiver<Standing>,
    pub watermark: watch::Sender<Published>,
    pub fence: Fence,
}

/// Whether a pipe may write to its sinks now. Without leader election it always may. With it,
/// only while this replica leads, and only the pipe that was running when it became leader: a
/// step-down ends the epoch for good, so a sink worker of a pipe that stepped down never writes
/// again, even once the replica leads anew (its batches were handed to the next leader).
#[derive(Debug, Clone, Default)]
pub struct Fence(Option<(Arc<FenceState>, u64, CancellationToken)>);

#[derive(Debug, Default)]
pub struct FenceState {
    leading: AtomicBool,
    epoch: AtomicU64,
    /// Cancelled when the current epoch ends: a pipe blocked on a full queue (its sinks fenced,
    /// so it would never drain) wakes up and ends.
    ended: Mutex<CancellationToken>,
}

impl Fence {
    pub fn may_write(&self) -> bool {
        match &self.0 {
            None => true,
            Some((state, epoch, _)) => {
                state.leading.load(Ordering::Acquire)
                    && state.epoch.load(Ordering::Acquire) == *epoch
            }
        }
    }

    /// Cancelled once this fence is shut for good (a step-down); never without an election.
    pub fn shut(&self) -> Option<CancellationToken> {
        self.0.as_ref().map(|(_, _, ended)| ended.clone())
    }
}

impl FenceState {
    /// A fence for a pipe starting now.
    pub fn fence(self: &Arc<Self>) -> Fence {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        Fence(Some((
            self.clone(),
            self.epoch.load(Ordering::Acquire),
            ended.clone(),
        )))
    }

    fn lead(&self) {
        self.leading.store(true, Ordering::Release);
    }

    /// Shuts every fence handed out so far, for good.
    fn step_down(&self) {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        self.leading.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        ended.cancel();
        *ended = CancellationToken::new();
    }
}

/// The running elector.
pub struct Election {
    pub standing: watch::Receiver<Standing>,
    pub fences: Arc<FenceState>,
    /// The pipe's watermark, published at each renewal. Each pipe started gets a sender.
    watermark: watch::Sender<Published>,
    release: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Starts trying for the Lease at once.
    pub fn start(elector: Elector) -> Self {
        let (standing_tx, standing) = watch::channel(Standing::default());
        let (watermark, watermark_rx) = watch::channel(Published::default());
        let (release, release_rx) = oneshot::channel();
        let fences = Arc::new(FenceState::default());
        metrics::gauge!(LEADER).set(0.0);
        let task = tokio::spawn(run(
            elector,
            standing_tx,
            watermark_rx,
            fences.clone(),
            release_rx,
        ));
        Election {
            standing,
            fences,
            watermark,
            release: Some(release),
            task,
        }
    }

    /// The link for a pipe starting now.
    pub fn link(&self) -> Link {
        Link {
            standing: self.standing.clone(),
            watermark: self.watermark.clone(),
            fence: self.fences.fence(),
        }
    }

    /// Stops renewing and gives the Lease up with the pipe's final watermark, so a standby
    /// takes over at its next attempt. Bounded by `timeout`: an unreachable API server must not
    /// hold the exit (the Lease then expires on its own).
    pub async fn release(mut self, timeout: Duration) {
        self.fences.step_down();
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(timeout, &mut self.task).await.is_err() {
            warn!("could not release the lease in time; a standby takes over once it expires");
            self.task.abort();
        }
    }
}

/// The elector loop: one attempt per retry period, each bounded so that a hung request cannot
/// keep a leader emitting past its renew deadline.
async fn run(
    mut elector: Elector,
    standing: watch::Sender<Standing>,
    watermark: watch::Receiver<Published>,
    fences: Arc<FenceState>,
    mut release: oneshot::Receiver<()>,
) {
    let config = elector.config().clone();
    let leader_gauge = metrics::gauge!(LEADER);
    let mut age = Age::default();
    let transitions = metrics::counter!(LEADER_TRANSITIONS);
    let mut leading = false;
    // When the last successful renewal was sent: the Lease's renew time is no earlier, so a
    // standby's expiry clock starts no earlier either.
    let mut renewed_at = Instant::now();
    let mut failing: Option<String> = None;
    loop {
        let sent = Instant::now();
        let published = *watermark.borrow();
        age.observe(published);
        // A leader's attempt may take until its deadline, a standby's a retry period or so.
        let limit = if leading {
            (renewed_at + config.renew_deadline).saturating_duration_since(sent)
        } else {
            config.renew_deadline
        };
        let attempt = tokio::select! {
            biased;
            _ = &mut release => break,
            r = tokio::time::timeout(limit, elector.try_acquire_or_renew(published.watermark)) => r,
        };
        match attempt {
            Ok(Ok(Role::Leader(previous))) => {
                renewed_at = sent;
                recovered(&mut failing);
                if !leading {
                    leading = true;
                    transitions.increment(1);
                    leader_gauge.set(1.0);
                    info!(
                        identity = %config.identity,
                        lease = %format!("{}/{}", config.namespace, config.name),
                        previous = previous.holder.as_deref().unwrap_or("none"),
                        watermark = ?previous.watermark,
                        "became the leader; emitting"
                    );
                    fences.lead();
                    standing.send_replace(Standing {
                        leading: true,
                        watermark: previous.watermark,
                    });
                }
            }
            Ok(Ok(Role::Standby(observed))) => {
                recovered(&mut failing);
                if leading {
                    leading = false;
                    fences.step_down();
                    leader_gauge.set(0.0);
                    warn!(holder = ?observed.holder, "another replica holds the lease; stopped emitting, standing by");
                }
                standing.send_if_modified(|s| {
                    let next = Standing {
                        leading: false,
                        watermark: observed.watermark.or(s.watermark),
                    };
                    std::mem::replace(s, next) != next
                });
            }
            Ok(Err(e)) => note(&mut failing, &e),
            Err(_) => note_text(&mut failing, "a lease request did not answer in time"),
        }
        if leading && renewed_at.elapsed() >= config.renew_deadline {
            leading = false;
            fences.step_down();
            leader_gauge.set(0.0);
            warn!(
                renew_deadline_secs = config.renew_deadline.as_secs_f64(),
                "could not renew the lease within the renew deadline; stopped emitting, standing by"
            );
            standing.send_replace(Standing {
                leading: false,
                watermark: watermark.borrow().watermark,
            });
        }
        // A leader renews on time; a standby's attempts are spread a little (client-go adds up to
        // 20 %), so replicas started together do not keep colliding.
        let pause = if leading {
            config.retry_period
        } else {
            config.retry_period.mul_f64(1.0 + jitter() * 0.2)
        };
        // A leader whose renewals keep failing wakes at its deadline, not after it.
        let wake = if leading {
            (sent + pause).min(renewed_at + config.renew_deadline)
        } else {
            sent + pause
        };
        tokio::select! {
            biased;
            _ = &mut release => break,
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    // Released: the pipe has delivered and committed; publish its final watermark and go.
    leader_gauge.set(0.0);
    let last = watermark.borrow().watermark;
    match elector.release(last).await {
        Ok(()) => info!(watermark = ?last, "released the lease"),
        Err(e) => {
            warn!(error = %e, "could not release the lease; a standby takes over once it expires")
        }
    }
}

/// The watermark's age: how long it has not moved while events wait for it. Kept here, beside
/// the renewals, because the pipe itself may be blocked for as long as the age grows (a leader
/// whose sink is down waits for room to hand events on).
struct Age {
    since: Option<(Instant, Option<u64>)>,
    gauge: metrics::Gauge,
}

impl Default for Age {
    fn default() -> Self {
        Age {
            since: None,
            gauge: metrics::gauge!(WATERMARK_AGE),
        }
    }
}

impl Age {
    fn observe(&mut self, now: Published) {
        self.since = match self.since {
            _ if !now.waiting => None,
            Some((at, seen)) if seen == now.watermark => Some((at, seen)),
            _ => Some((Instant::now(), now.watermark)),
        };
        self.gauge
            .set(self.since.map_or(0.0, |(at, _)| at.elapsed().as_secs_f64()));
    }
}

fn note(failing: &mut Option<String>, e: &LeaderError) {
    note_text(failing, &e.to_string());
}

/// Logs a failing attempt once per kind of failure, not once per period.
fn note_text(failing: &mut Option<String>, text: &str) {
    let kind = text.split(':').next().unwrap_or(text).to_string();
    if failing.as_deref() != Some(kind.as_str()) {
        warn!(error = %text, "leader election: attempt failed; trying again every retry period");
        *failing = Some(kind);
    }
}

fn recovered(failing: &mut Option<String>) {
    if let Some(kind) = failing.take() {
        info!(after = %kind, "leader election: the lease is reachable again");
    }
}

/// A number in [0, 1) that differs between processes and attempts.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = xxhash_rust::xxh3::xxh3_64(
        &(u64::from(nanos) ^ u64::from(std::process::id())).to_le_bytes(),
    );
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_opens_while_leading_and_a_step_down_shuts_it_for_good() {
        assert!(Fence::default().may_write(), "without election");
        let state = Arc::new(FenceState::default());
        let first = state.fence();
        assert!(!first.may_write(), "a standby writes nothing");
        state.lead();
        assert!(first.may_write());
        state.step_down();
        assert!(!first.may_write());
        assert!(first.shut().is_some_and(|t| t.is_cancelled()));
        let second = state.fence();
        assert!(second.shut().is_some_and(|t| !t.is_cancelled()));
        state.lead();
        assert!(second.may_write());
        assert!(
            !first.may_write(),
            "a pipe that stepped down never writes again"
        );
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
