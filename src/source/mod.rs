//! Where events come from. Every source feeds batches of records into one bounded channel.

pub mod replay;
pub mod split;

use std::path::PathBuf;

use thiserror::Error;

use crate::event::EventRecord;

/// Records handed from a source to the pipeline in one channel message.
pub type SourceBatch = Vec<EventRecord>;

/// Failures to start a source. Not retryable: the input or the configuration must change.
#[derive(Debug, Error)]
pub enum SourceError {
    #[error("cannot open replay file {path}: {source}; check the path given to --replay-file")]
    OpenReplay {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the replay reader thread: {0}")]
    Thread(std::io::Error),
    #[error(
        "the kube source is not available in this version; use --source replay --replay-file PATH|-"
    )]
    KubeUnavailable,
}
