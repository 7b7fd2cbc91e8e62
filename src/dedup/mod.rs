//! Persistent deduplication: rotating memory-mapped bloom filter generations.
//!
//! The filters are the pipe's durable checkpoint: a key is in them only once every sink has
//! its event. `header` and `filter` are pure code over bytes; `store` maps one file; `ring`
//! rotates generations; `inspect` reads them without taking the lock.

pub mod filter;
pub mod header;
pub mod inspect;
pub mod ring;
pub mod stage;
pub mod store;
pub mod watermark;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use thiserror::Error;

pub use inspect::{GenerationReport, inspect, render_json, render_table};
pub use ring::{GenerationInfo, Ring};

use crate::config::defaults;

/// Where and how big the filters are.
#[derive(Debug, Clone, PartialEq)]
pub struct RingConfig {
    /// Persistence directory (default [`defaults::PERSISTENCE_PATH`]).
    pub dir: PathBuf,
    /// Generations kept (default [`defaults::GENERATIONS`]). More means a longer memory and
    /// more files to check.
    pub generations: usize,
    /// Keys per generation before it rotates (default [`defaults::FILTER_CAPACITY`]).
    pub capacity: u64,
    /// Target false-positive rate per generation (default [`defaults::FILTER_ERROR_RATE`]);
    /// each false positive drops an event, and `contains` over G full generations errs at up
    /// to G times this rate.
    pub error_rate: f64,
    /// Age at which the newest generation retires (default [`defaults::ROTATION_INTERVAL`]).
    pub rotation_interval: Duration,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            dir: PathBuf::from(defaults::PERSISTENCE_PATH),
            generations: defaults::GENERATIONS,
            capacity: defaults::FILTER_CAPACITY,
            error_rate: defaults::FILTER_ERROR_RATE,
            rotation_interval: defaults::ROTATION_INTERVAL,
        }
    }
}

/// Time as the ring sees it, so rotation can be tested without waiting an hour.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        ManualClock(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.0.lock().map_or(SystemTime::UNIX_EPOCH, |t| *t)
    }
}

/// Failures of the filter store. `Locked` and `NotWritable` at startup need the operator;
/// `Io` during rotation or flush is logged by the pipeline and retried at the next occasion.
#[derive(Debug, Error)]
pub enum DedupError {
    #[error(
        "persistence directory {dir} is not usable: {source}; mount a writable volume there or set KUBE_EVENT_PIPE_PERSISTENCE_PATH"
    )]
    NotWritable {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "persistence directory {dir} is locked by another running kube-event-pipe; run one replica per volume (Deployment strategy Recreate)"
    )]
    Locked { dir: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
