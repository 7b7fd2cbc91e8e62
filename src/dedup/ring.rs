//! The generation ring: every generation answers `contains`, only the newest takes commits.
//!
//! A generation retires when it is older than the rotation interval or holds `capacity` keys
//! (so the false-positive rate stays at its target during a burst); the ring keeps the newest
//! `generations` files and deletes older ones, only after the new one is durable.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{error, info, warn};

use super::filter;
use super::header::Header;
use super::store::{FilterFile, Flush, OpenFileError, free_bytes, is_no_space, sync_dir};
use super::{Clock, DedupError, RingConfig, SystemClock};
use crate::event::OccurrenceKey;

pub const LOCK_FILE: &str = "kube-event-pipe.lock";
const PREFIX: &str = "kep-";
const SUFFIX: &str = ".filter";
/// How many keys ahead of the one being worked on a batch prefetches: far enough for the
/// loads to arrive in time, near enough that they are still cached when used.
const LOOKAHEAD: usize = 4;
/// Probes prefetched per generation for a check: a new key usually fails on the first or
/// second, and a key that is present will need the rest anyway.
const CHECK_PREFETCH: u32 = 2;
/// After an age-due rotation failed, the next attempt (and its ERROR line) waits this long.
const ROTATION_RETRY: Duration = Duration::from_secs(60);
/// The allocation unit assumed when counting a file's space on the volume.
const BLOCK: u64 = 4096;

/// What the ring reports about one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationInfo {
    pub path: PathBuf,
    pub created_at: u64,
    pub inserted: u64,
    pub capacity: u64,
    pub fill_ratio: f64,
    pub estimated_fp_rate: f64,
}

pub struct Ring {
    config: RingConfig,
    clock: Arc<dyn Clock>,
    /// Oldest first; never empty after `open`.
    generations: Vec<FilterFile>,
    quarantined: u64,
    /// The largest creation time (unix millis) of any generation name seen in the directory,
    /// quarantined ones included: a new generation is named after it, so no name is reused.
    newest_name: u64,
    /// Set when an age-due rotation failed: no new attempt before then.
    rotation_retry_at: Option<SystemTime>,
    /// Held for the ring's life: the lock is released when the file closes.
    _lock: File,
}

/// Generation file names sort by creation time: `kep-<unix millis, 16 digits>.filter`.
pub fn generation_name(millis: u64) -> String {
    format!("{PREFIX}{millis:016}{SUFFIX}")
}

pub fn is_generation_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|r| r.strip_suffix(SUFFIX))
        .is_some_and(|d| d.len() == 16 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The creation time in a generation file name (quarantined or not).
fn name_millis(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?.get(..16)?.parse().ok()
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Ring {
    pub fn open(config: RingConfig) -> Result<Ring, DedupError> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Takes the directory lock first, then loads, repairs and completes the ring.
    pub fn open_with_clock(config: RingConfig, clock: Arc<dyn Clock>) -> Result<Ring, DedupError> {
        let dir = config.dir.clone();
        let not_writable = |source| DedupError::NotWritable {
            dir: dir.clone(),
            source,
        };
        if std::fs::metadata(&dir).is_ok_and(|m| !m.is_dir()) {
            return Err(DedupError::NotADirectory { dir });
        }
        std::fs::create_dir_all(&dir).map_err(not_writable)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(not_writable)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DedupError::Locked { dir: dir.clone() });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(not_writable(source)),
        }

        let mut ring = Ring {
            config,
            clock,
            generations: Vec::new(),
            quarantined: 0,
            newest_name: 0,
            rotation_retry_at: None,
            _lock: lock,
        };
        for path in ring.scan()? {
            match FilterFile::open(&path) {
                Ok(g) => ring.generations.push(g),
                Err(OpenFileError::NoSpace(source)) => {
                    let needed = std::fs::metadata(&path).map_or(0, |m| m.len());
                    return Err(ring.no_space(&path, "reserve the blocks of", needed, source));
                }
                Err(reason) => ring.quarantine(&path, &reason.to_string())?,
            }
        }
        ring.check_space()?;
        if ring.generations.is_empty() || ring.newest_is_due() {
            ring.rotate()?;
        } else {
            ring.retire_oldest()?;
        }
        info!(
            dir = %ring.config.dir.display(),
            generations = ring.generations.len(),
            "filter generations loaded"
        );
        Ok(ring)
    }

    /// Lists generation files oldest first; removes half-created ones and reports the Python
    /// tool's filters once (they are left alone: that tool may still own them).
    fn scan(&mut self) -> Result<Vec<PathBuf>, DedupError> {
        let dir = self.config.dir.clone();
        let dir = &dir;
        let entries = std::fs::read_dir(dir).map_err(|source| DedupError::NotWritable {
            dir: dir.clone(),
            source,
        })?;
        let mut found = Vec::new();
        let mut foreign = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(millis) = name_millis(name) {
                self.newest_name = self.newest_name.max(millis);
            }
            if is_generation_name(name) {
                found.push(entry.path());
            } else if name.starts_with(PREFIX) && name.ends_with(".filter.tmp") {
                // A creation interrupted by a crash: never renamed into place, holds nothing.
                let _ = std::fs::remove_file(entry.path());
            } else if name.ends_with(".bloom") {
                foreign += 1;
            }
        }
        if foreign > 0 {
            warn!(
                dir = %dir.display(),
                files = foreign,
                "found *.bloom files of the Python kube-event-pipe; they are not read and are left in place"
            );
        }
        found.sort();
        Ok(found)
    }

    /// Renames a bad file aside, so it can be examined and is never read again. The name
    /// `<file>.corrupt-<unix ms>` gets a `-2`, `-3`… when taken: a file damaged again within the
    /// same millisecond must not replace the earlier one (the directory lock keeps other
    /// processes from racing for the name).
    fn quarantine(&mut self, path: &Path, reason: &str) -> Result<(), DedupError> {
        let now = unix_millis(self.clock.now());
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{now}"));
        let mut n = 1;
        while std::fs::symlink_metadata(&aside).is_ok() {
            n += 1;
            aside = path.as_os_str().to_owned();
            aside.push(format!(".corrupt-{now}-{n}"));
        }
        std::fs::rename(path, &aside).map_err(|source| DedupError::Io {
            path: path.to_path_buf(),
            action: "rename a corrupt filter aside",
            source,
        })?;
        self.quarantined += 1;
        error!(
            file = %path.display(),
            moved_to = %Path::new(&aside).display(),
            reason,
            "corrupt filter generation quarantined; a fresh generation replaces it (events it remembered may be delivered again)"
        );
        Ok(())
    }

    fn newest_is_due(&self) -> bool {
        let Some(newest) = self.generations.last() else {
            return true;
        };
        let age = (unix_millis(self.clock.now()) / 1000).saturating_sub(newest.header().created_at);
        newest.is_full() || Duration::from_secs(age) >= self.config.rotation_interval
    }

    #[inline]
    pub fn contains(&self, key: OccurrenceKey) -> bool {
        // Newest first: a duplicate is most likely a recent event.
        self.generations.iter().rev().any(|g| g.contains(key))
    }

    /// `contains` for each key of a batch, into `out` (cleared first). Faster per key than
    /// single calls: the next keys' probes are prefetched while the current one is checked.
    pub fn contains_many(&self, keys: &[OccurrenceKey], out: &mut Vec<bool>) {
        out.clear();
        out.reserve(keys.len());
        for (i, &key) in keys.iter().enumerate() {
            if let Some(&ahead) = keys.get(i + LOOKAHEAD) {
                for g in &self.generations {
                    g.prefetch(ahead, CHECK_PREFETCH);
                }
            }
            out.push(self.contains(key));
        }
    }

    /// Remembers delivered keys. Rotates first whenever the newest generation is full; when
    /// that rotation fails (a full volume), the keys from there on are not committed and the
    /// error is returned: the full generation never takes more than its capacity. Rotation by
    /// age is the timer's ([`Ring::rotate_if_due`]).
    pub fn commit(&mut self, keys: &[OccurrenceKey]) -> Result<(), DedupError> {
        let mut i = 0;
        while i < keys.len() {
            if self.newest_mut().is_full() {
                self.rotate()?;
            }
            let newest = self.newest_mut();
            // No prefetch here: measured, it gained nothing, as the CPU already overlaps the
            // independent stores of the probes (docs/performance.md).
            while i < keys.len() && !newest.is_full() {
                newest.insert(keys[i]);
                i += 1;
            }
            newest.store_inserted();
        }
        Ok(())
    }

    /// The timer's check: rotates when the newest generation has aged out. After a failure
    /// the next attempt waits a minute, so a full volume costs one ERROR line per minute while
    /// the generation, not yet full, keeps taking keys.
    pub fn rotate_if_due(&mut self) -> Result<bool, DedupError> {
        let now = self.clock.now();
        if self.rotation_retry_at.is_some_and(|at| now < at) || !self.newest_is_due() {
            return Ok(false);
        }
        match self.rotate() {
            Ok(()) => {
                self.rotation_retry_at = None;
                Ok(true)
            }
            Err(e) => {
                self.rotation_retry_at = Some(now + ROTATION_RETRY);
                Err(e)
            }
        }
    }

    /// The size of a new generation file with the configured parameters.
    pub fn generation_len(&self) -> u64 {
        let (bit_count, hash_count) =
            filter::size_for(self.config.capacity, self.config.error_rate);
        Header {
            hash_count,
            bit_count,
            capacity: self.config.capacity,
            error_rate: self.config.error_rate,
            created_at: 0,
            seed: 0,
            inserted: 0,
        }
        .file_len()
    }

    /// Fails fast when the volume cannot hold `generations + 1` generation files (the ring at
    /// its size plus the one being created during a rotation), counting the generations already
    /// there; and always when it cannot hold the next one.
    fn check_space(&self) -> Result<(), DedupError> {
        let dir = &self.config.dir;
        let per_generation = self.generation_len().div_ceil(BLOCK) * BLOCK;
        let held: u64 = self
            .generations
            .iter()
            .map(|g| g.header().file_len().div_ceil(BLOCK) * BLOCK)
            .sum();
        let files = self.config.generations.max(1) as u64 + 1;
        let needed = files
            .saturating_mul(per_generation)
            .saturating_sub(held)
            .max(per_generation);
        let free = free_bytes(dir).map_err(|source| DedupError::NotWritable {
            dir: dir.clone(),
            source,
        })?;
        if free < needed {
            return Err(DedupError::NoSpace {
                path: dir.clone(),
                action: "keep the filter generations in",
                needed,
                free,
                per_generation: self.generation_len(),
                capacity: self.config.capacity,
                error_rate: self.config.error_rate,
            });
        }
        Ok(())
    }

    /// The error for an allocation the volume refused (or another I/O error, as such).
    fn no_space(
        &self,
        path: &Path,
        action: &'static str,
        needed: u64,
        source: std::io::Error,
    ) -> DedupError {
        if !is_no_space(&source) {
            return DedupError::Io {
                path: path.to_path_buf(),
                action: "create a filter generation",
                source,
            };
        }
        DedupError::NoSpace {
            path: path.to_path_buf(),
            action,
            needed,
            free: free_bytes(&self.config.dir).unwrap_or(0),
            per_generation: self.generation_len(),
            capacity: self.config.capacity,
            error_rate: self.config.error_rate,
        }
    }

    /// Flushes of the generations with unsynced bits, to run off the dedup stage's thread (the
    /// pipeline's timer, and right after a rotation: the retired generation's last bits).
    pub fn take_flushes(&mut self) -> Vec<Flush> {
        self.generations
            .iter_mut()
            .filter_map(FilterFile::take_flush)
            .collect()
    }

    /// Synchronous flush of every generation with unsynced bits.
    pub fn flush(&mut self) -> Result<(), DedupError> {
        for g in &mut self.generations {
            g.flush().map_err(|source| DedupError::Io {
                path: g.path().to_path_buf(),
                action: "flush",
                source,
            })?;
        }
        Ok(())
    }

    pub fn generations(&self) -> Vec<GenerationInfo> {
        self.generations
            .iter()
            .map(|g| {
                let fill = g.fill_ratio();
                GenerationInfo {
                    path: g.path().to_path_buf(),
                    created_at: g.header().created_at,
                    inserted: g.header().inserted,
                    capacity: g.header().capacity,
                    fill_ratio: fill,
                    estimated_fp_rate: filter::estimated_fp_rate(fill, g.header().hash_count),
                }
            })
            .collect()
    }

    pub fn quarantined_total(&self) -> u64 {
        self.quarantined
    }

    fn newest_mut(&mut self) -> &mut FilterFile {
        let last = self.generations.len() - 1;
        &mut self.generations[last]
    }

    /// Starts a new generation with the current parameters. The new one is durable (file and
    /// directory synced) before the oldest is deleted. The previous newest is not flushed here,
    /// which would stall the checks for the time of an msync of a whole dirty generation
    /// (~13 ms at 1M/1e-6); `take_flushes` hands it to the pipeline's flush thread.
    fn rotate(&mut self) -> Result<(), DedupError> {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        // Names must sort in creation order even if the clock stepped back, and never reuse
        // the name of a file seen here before (a quarantined one, say).
        let millis = unix_millis(now).max(self.newest_name.saturating_add(1));
        let path = self.config.dir.join(generation_name(millis));
        let (bit_count, hash_count) =
            filter::size_for(self.config.capacity, self.config.error_rate);
        let header = Header {
            hash_count,
            bit_count,
            capacity: self.config.capacity,
            error_rate: self.config.error_rate,
            created_at: unix_millis(now) / 1000,
            seed: millis ^ 0x6b65_702d_7365_6564,
            inserted: 0,
        };
        let generation = FilterFile::create(&path, header).map_err(|source| {
            self.no_space(
                &path,
                "create the filter generation",
                header.file_len(),
                source,
            )
        })?;
        self.newest_name = millis;
        self.generations.push(generation);
        self.retire_oldest()?;
        info!(
            file = %path.display(),
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            "started a new filter generation"
        );
        Ok(())
    }

    fn retire_oldest(&mut self) -> Result<(), DedupError> {
        let keep = self.config.generations.max(1);
        if self.generations.len() <= keep {
            return Ok(());
        }
        let excess = self.generations.len() - keep;
        for old in self.generations.drain(..excess) {
            let path = old.path().to_path_buf();
            drop(old);
            std::fs::remove_file(&path).map_err(|source| DedupError::Io {
                path: path.clone(),
                action: "delete a retired generation",
                source,
            })?;
        }
        sync_dir(&self.config.dir).map_err(|source| DedupError::Io {
            path: self.config.dir.clone(),
            action: "sync the directory",
            source,
        })
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;
    use crate::dedup::ManualClock;

    #[test]
    fn contains_many_answers_as_contains_does_across_generations() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let mut ring = Ring::open_with_clock(
            RingConfig {
                dir: dir.path().to_path_buf(),
                generations: 3,
                capacity: 10_000,
                error_rate: 1e-6,
                rotation_interval: Duration::from_secs(60),
            },
            clock.clone(),
        )
        .unwrap();
        let key = |i: u64| OccurrenceKey::new("ns", "event.1", i);
        for g in 0..3 {
            let keys: Vec<_> = (g * 100..g * 100 + 50).map(key).collect();
            ring.commit(&keys).unwrap();
            if g < 2 {
                clock.advance(Duration::from_secs(61));
                ring.rotate_if_due().unwrap();
            }
        }
        assert_eq!(ring.generations().len(), 3);
        let probe: Vec<_> = (0..300).map(key).collect();
        let mut many = Vec::new();
        ring.contains_many(&probe, &mut many);
        let single: Vec<_> = probe.iter().map(|&k| ring.contains(k)).collect();
        assert_eq!(many, single);
        let present = (0..300).filter(|i| i % 100 < 50).count();
        assert_eq!(many.iter().filter(|&&b| b).count(), present);
        ring.contains_many(&probe[..3], &mut many);
        assert_eq!(many.len(), 3, "the output is cleared first");
    }

    #[test]
    fn flushes_are_handed_out_once_per_dirtying_and_run_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let config = RingConfig {
            dir: dir.path().to_path_buf(),
            capacity: 1_000,
            rotation_interval: Duration::from_secs(60),
            generations: 3,
            error_rate: 1e-6,
        };
        let mut ring = Ring::open_with_clock(config.clone(), clock.clone()).unwrap();
        assert!(ring.take_flushes().is_empty(), "nothing set yet");
        let key = |i: u64| OccurrenceKey::new("ns", "event.1", i);
        ring.commit(&[key(1)]).unwrap();
        clock.advance(Duration::from_secs(61));
        assert!(ring.rotate_if_due().unwrap());
        ring.commit(&[key(2)]).unwrap();
        // The retired generation's last bits and the new one's.
        let flushes = ring.take_flushes();
        assert_eq!(flushes.len(), 2);
        assert!(ring.take_flushes().is_empty(), "handed out once");
        std::thread::spawn(move || flushes.iter().try_for_each(Flush::run))
            .join()
            .unwrap()
            .unwrap();
        drop(ring);
        let ring = Ring::open_with_clock(config, clock).unwrap();
        assert!(ring.contains(key(1)) && ring.contains(key(2)));
    }
}
