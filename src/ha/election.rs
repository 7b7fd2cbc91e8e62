//! The pipe's side of the election: what the elector tells a pipe, what a pipe publishes back,
//! and the running elector that a supervisor starts and finally releases.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tracing::warn;

use super::elector::{self, Elector};
use super::fence::FenceState;
pub use crate::flow::{Published, Standing};
use crate::metrics::LEADER;
pub use crate::pipeline::Link;

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
        let task = tokio::spawn(elector::run(
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
        let fence = self.fences.fence();
        Link {
            standing: self.standing.clone(),
            watermark: self.watermark.clone(),
            shut: fence.shut().unwrap_or_default(),
            gate: Arc::new(fence),
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
