//! The pipe's health as `/healthz` and `/readyz` report it: the source's progress and the sinks
//! that are failing right now, shared between the stages (which write it) and the HTTP
//! listener (which reads it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::source::SourceHealth;

/// What every stage shares. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub source: Arc<SourceHealth>,
    pub sinks: Arc<SinkHealth>,
}

/// How many sinks are failing. A sink marks itself failing when a write fails and keeps the
/// returned guard until a write succeeds again; dropping the guard marks the recovery, so an
/// early return cannot leave the pipe unready for good.
#[derive(Debug, Default)]
pub struct SinkHealth {
    failing: AtomicUsize,
}

impl SinkHealth {
    /// Marks one sink failing until the guard is dropped. Call on the first failure of a write,
    /// not on every retry.
    pub fn failing(self: &Arc<Self>) -> FailingSink {
        self.failing.fetch_add(1, Ordering::AcqRel);
        FailingSink {
            health: self.clone(),
        }
    }

    /// Sinks failing right now.
    pub fn failing_count(&self) -> usize {
        self.failing.load(Ordering::Acquire)
    }
}

/// A sink that is failing; dropped when it recovers.
#[derive(Debug)]
pub struct FailingSink {
    health: Arc<SinkHealth>,
}

impl Drop for FailingSink {
    fn drop(&mut self) {
        self.health.failing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Ready: the first complete list is delivered and no sink is failing. A pod that is not ready
/// is taken out of the Service and flagged by `kubectl get pods`; nothing restarts it.
pub fn readiness(health: &Health) -> Result<(), String> {
    if !health.source.is_ready() {
        return Err("initial list not delivered yet".into());
    }
    match health.sinks.failing_count() {
        0 => Ok(()),
        n => Err(format!("{n} sink(s) failing; retrying")),
    }
}

/// Alive: the source read something within `stall`, or is in a known retry state (an outage of
/// the API server, which a restart would not fix), or a sink is failing (backpressure, which a
/// restart would not fix either). `now_ms` and `started_ms` are Unix milliseconds; before the
/// first read the start time stands in for it. `stall` is `None` for sources that may rightly
/// stay silent for ever (replay from stdin). A failing liveness probe restarts the pod, so this
/// only fails when nothing explains the silence.
pub fn liveness(
    health: &Health,
    now_ms: u64,
    started_ms: u64,
    stall: Option<Duration>,
) -> Result<(), String> {
    let Some(stall) = stall else {
        return Ok(());
    };
    if health.source.is_retrying() || health.sinks.failing_count() > 0 {
        return Ok(());
    }
    let last = health.source.last_progress_ms().max(started_ms);
    let idle = Duration::from_millis(now_ms.saturating_sub(last));
    if idle <= stall {
        Ok(())
    } else {
        Err(format!(
            "no progress from the source for {} s and no retry in progress",
            idle.as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Option<Duration> = Some(Duration::from_secs(600));

    #[test]
    fn ready_needs_the_initial_list_and_no_failing_sink() {
        let health = Health::default();
        assert!(readiness(&health).is_err());
        health.source.set_ready();
        assert_eq!(readiness(&health), Ok(()));
        let guard = health.sinks.failing();
        assert_eq!(
            readiness(&health),
            Err("1 sink(s) failing; retrying".into())
        );
        drop(guard);
        assert_eq!(readiness(&health), Ok(()));
    }

    #[test]
    fn alive_while_progressing_or_retrying_and_not_after_a_silent_stall() {
        let health = Health::default();
        let start = 1_000_000;
        assert!(liveness(&health, start + 1_000, start, STALL).is_ok());
        let late = start + 601_000;
        assert!(liveness(&health, late, start, None).is_ok());
        assert!(liveness(&health, late, start, STALL).is_err());
        health.source.set_retrying(true);
        assert!(liveness(&health, late, start, STALL).is_ok());
        health.source.set_retrying(false);
        let _failing = health.sinks.failing();
        assert!(liveness(&health, late, start, STALL).is_ok());
    }
}
