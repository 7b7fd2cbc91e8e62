//! The restart policy of a replica: with `--leader-elect`, a pipe that stops leading ends and a
//! new one stands by, until a signal or the input ends; then the Lease is released with the
//! final watermark. Without it, the pipe runs once.
//!
//! This is the one file of `ha` above the pipe: it starts pipes, the rest of `ha` is what a
//! pipe is handed.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::{Election, Elector};
use crate::config::{Config, SourceConfig};
use crate::health::Health;
use crate::pipeline::{self, EndReason, PipelineError, Report};
use crate::source::SourceError;

/// Why the replicas could not run.
#[derive(Debug, Error)]
pub enum SupervisorError {
    /// The cluster the elector needs could not be reached.
    #[error(transparent)]
    Connect(#[from] SourceError),
    #[error(transparent)]
    Pipe(#[from] PipelineError),
}

/// Runs the pipe; with `--leader-elect`, under the elector (see the module's documentation).
pub async fn run(
    config: &Config,
    shutdown: CancellationToken,
    reopen: Arc<AtomicBool>,
    health: Health,
) -> Result<Report, SupervisorError> {
    let (Some(ha), SourceConfig::Kube(kube)) = (&config.ha, &config.source) else {
        return Ok(pipeline::run(config, shutdown, reopen, health, None, None).await?);
    };
    let cluster = crate::source::kube::connect(kube).await?;
    let elector = Elector::new(cluster.client.clone(), ha.lease.clone());
    let election = Election::start(elector);
    let mut restarted = false;
    let outcome = loop {
        let report = pipeline::run(
            config,
            shutdown.clone(),
            reopen.clone(),
            health.clone(),
            Some(&cluster),
            Some(election.link()),
        )
        .await;
        match report {
            Ok(r)
                if matches!(r.end, EndReason::SteppedDown | EndReason::RelistAsLeader)
                    && !shutdown.is_cancelled() =>
            {
                restarted = true;
            }
            // A replica that stepped down because it lost the API server cannot list either:
            // it waits for the server rather than exit, as its elector does.
            Err(e) if restarted && e.is_unreachable() && !shutdown.is_cancelled() => {
                tracing::warn!(error = %e, "standing by: cannot start the pipe yet; trying again every retry period");
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(ha.lease.retry_period) => {}
                }
                if shutdown.is_cancelled() {
                    break Err(e);
                }
            }
            other => break other,
        }
    };
    election.release(ha.lease.retry_period * 2).await;
    Ok(outcome?)
}
