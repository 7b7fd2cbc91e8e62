//! The pipe's health as `/healthz` and `/readyz` report it: the source's progress and the sinks
//! that are failing right now, shared between the stages (which write it) and the HTTP
//! listener (which reads it).

use std::sync::Arc;
use std::time::Duration;

use crate::sink::SinkHealth;
use crate::source::SourceHealth;

/// What every stage shares. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub source: Arc<SourceHealth>,
    pub sinks: Arc<SinkHealth>,
}

/// Ready: the first complete list is delivered and no sink is failing. A pod that is not ready
/// is taken out of the Service and flagged by `kubectl get pods`; nothing restarts it.
pub fn readiness(health: &Health) -> Result<(), String> {
    if !health.source.is_ready() {
        return Err("initial list not delivered yet".into());
    }
    let failing = health.sinks.failing();
    if failing.is_empty() {
        Ok(())
    } else {
        Err(format!("sink(s) failing, retrying: {}", failing.join(", ")))
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
    if health.source.is_retrying() || !health.sinks.all_accepting() {
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
        let s3 = health.sinks.register("s3");
        s3.set_failing(true);
        assert_eq!(
            readiness(&health),
            Err("sink(s) failing, retrying: s3".into())
        );
        s3.set_failing(false);
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
        health.sinks.register("file").set_failing(true);
        assert!(liveness(&health, late, start, STALL).is_ok());
    }
}
