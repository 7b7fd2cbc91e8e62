//! The delivery interface every sink implements (stand-in until the shared driver lands).

use std::future::Future;
use std::time::Duration;

use crate::batch::Batch;

/// A sink that delivers one batch per call; the shared driver retries and acknowledges.
pub trait Deliver: Send + 'static {
    /// Delivers one batch durably; Ok means it may be acknowledged.
    fn deliver(&mut self, batch: &Batch) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// Why a batch was not delivered.
#[derive(Debug)]
pub enum Failure {
    /// Transient: retried with capped exponential backoff, at least `retry_after` when the
    /// peer asked for it.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Refused for good: dead-lettered when a dead-letter directory is set, else logged at
    /// ERROR once and retried on the slow timer.
    Refused { error: String },
    /// stdout's reader went away: the pipe winds down.
    Closed,
}
