//! Persistent deduplication: rotating memory-mapped bloom filter generations.
//!
//! The filters are the pipe's durable checkpoint: a key is in them only once every sink has
//! its event. `header` and `filter` are pure code over bytes; `store` maps one file; `ring`
//! rotates generations; `inspect` reads them without taking the lock.

pub mod checker;
pub mod drive;
pub mod filter;
pub mod header;
pub mod inspect;
pub mod ledger;
mod meters;
pub mod replica;
pub mod ring;
pub mod stage;
pub mod store;
pub mod watermark;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use thiserror::Error;

pub use drive::EndReason;
pub use inspect::{GenerationReport, inspect, render_json, render_table};
pub use ring::{GenerationInfo, Ring};
pub use stage::Tally;

/// Where and how big the filters are. The configuration owns the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RingConfig {
    /// Persistence directory: the filter volume.
    pub dir: PathBuf,
    /// Generations kept. More means a longer memory and more files to check.
    pub generations: usize,
    /// Keys per generation before it rotates.
    pub capacity: u64,
    /// Target false-positive rate per generation; each false positive drops an event, and
    /// `contains` over G full generations errs at up to G times this rate.
    pub error_rate: f64,
    /// Age at which the newest generation retires.
    pub rotation_interval: Duration,
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

/// Failures of the filter store. `Locked`, `NotWritable`, `NotADirectory` and `NoSpace` at
/// startup need the operator. During a run, `Io` from a flush or an age-due rotation is logged
/// and retried at the next occasion; a rotation that fails when the newest generation is full
/// (`NoSpace` or `Io` from [`Ring::commit`]) ends the pipe, since committing on into the full
/// generation would raise its false-positive rate, and each false positive drops an event.
#[derive(Debug, Error)]
pub enum DedupError {
    #[error(
        "persistence path {dir} is not a directory; set KUBE_EVENT_PIPE_PERSISTENCE_PATH (--persistence-path) to a directory on the filter volume"
    )]
    NotADirectory { dir: PathBuf },
    #[error(
        "cannot {action} {path}: {needed} bytes needed, {free} bytes free on the volume ({space}); each generation of {capacity} keys at error rate {error_rate} takes {per_generation} bytes, and the ring needs room for generations + 1 of them; mount a larger volume at the persistence path, or lower KUBE_EVENT_PIPE_FILTER_CAPACITY (--filter-capacity) or raise KUBE_EVENT_PIPE_FILTER_ERROR_RATE (--filter-error-rate)",
        space = Mib(*needed, *free)
    )]
    NoSpace {
        path: PathBuf,
        action: &'static str,
        needed: u64,
        free: u64,
        per_generation: u64,
        capacity: u64,
        error_rate: f64,
    },
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

/// "3.4 MiB needed, 1.0 MiB free": the byte counts of a space error, for a person.
struct Mib(u64, u64);

impl std::fmt::Display for Mib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: f64 = 1024.0 * 1024.0;
        write!(
            f,
            "{:.1} MiB needed, {:.1} MiB free",
            self.0 as f64 / MIB,
            self.1 as f64 / MIB
        )
    }
}

/// A small ring in `dir`, for the stage's tests.
#[cfg(test)]
pub(crate) fn test_ring(dir: &std::path::Path) -> Ring {
    Ring::open(RingConfig {
        dir: dir.to_path_buf(),
        generations: 2,
        capacity: 1000,
        error_rate: 1e-6,
        rotation_interval: Duration::from_secs(3600),
    })
    .expect("a ring in a temporary directory")
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
