//! The fence is what keeps a leader that lost its Lease from writing: it is shut the moment the
//! renew deadline passes, before any standby may take the Lease over, and every sink worker
//! checks it (as its [`WriteGate`]) before each write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::sink::gate::WriteGate;

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

impl WriteGate for Fence {
    fn may_write(&self) -> bool {
        Fence::may_write(self)
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

    pub(super) fn lead(&self) {
        self.leading.store(true, Ordering::Release);
    }

    /// Shuts every fence handed out so far, for good.
    pub(super) fn step_down(&self) {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        self.leading.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        ended.cancel();
        *ended = CancellationToken::new();
    }
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
    fn a_fence_is_a_write_gate() {
        let state = Arc::new(FenceState::default());
        let gate: Arc<dyn WriteGate> = Arc::new(state.fence());
        assert!(!gate.may_write());
        state.lead();
        assert!(gate.may_write());
    }
}
