//! The check and the commit over the ring, and the keys in flight between them.
//!
//! A key is new when neither the filters nor the in-flight set has it: the in-flight set is
//! what makes a duplicate that arrives before its first copy is acknowledged a duplicate too.
//! The ring answers for a whole hand-off at once, which overlaps the cache misses of
//! consecutive keys; commits happen only between hand-offs, so those answers stay true while a
//! hand-off is worked through.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use super::{DedupError, GenerationInfo, Ring};
use crate::event::OccurrenceKey;

/// In-flight keys are already uniform hashes: use their low bits instead of hashing again.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type KeySet = HashSet<OccurrenceKey, BuildHasherDefault<KeyHasher>>;

pub struct Checker {
    ring: Ring,
    in_flight: KeySet,
    /// Scratch for `Ring::contains_many`, kept to avoid an allocation per hand-off.
    keys: Vec<OccurrenceKey>,
}

impl Checker {
    pub fn new(ring: Ring) -> Self {
        Checker {
            ring,
            in_flight: KeySet::default(),
            keys: Vec::new(),
        }
    }

    /// The ring's answer for each key, in order, into `in_ring`.
    pub fn check_many(
        &mut self,
        keys: impl Iterator<Item = OccurrenceKey>,
        in_ring: &mut Vec<bool>,
    ) {
        self.keys.clear();
        self.keys.extend(keys);
        self.ring.contains_many(&self.keys, in_ring);
    }

    /// Whether a key the ring does not have (`in_ring` false) is new; a new key is in flight
    /// from now on.
    pub fn admit(&mut self, key: OccurrenceKey, in_ring: bool) -> bool {
        !in_ring && self.in_flight.insert(key)
    }

    /// The key will not be delivered by this run (the next run or the next leader does).
    pub fn forget(&mut self, key: &OccurrenceKey) {
        self.in_flight.remove(key);
    }

    /// Remembers delivered (or, on a standby, covered) keys for good and forgets them as in
    /// flight. A failure means the full newest generation could not rotate: the keys stay in
    /// flight, and the next run delivers them again.
    pub fn commit(&mut self, keys: &[OccurrenceKey]) -> Result<(), DedupError> {
        self.ring.commit(keys)?;
        for key in keys {
            self.in_flight.remove(key);
        }
        Ok(())
    }

    /// Accepted events not yet acknowledged by every sink.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn generations(&self) -> Vec<GenerationInfo> {
        self.ring.generations()
    }

    pub fn ring_mut(&mut self) -> &mut Ring {
        &mut self.ring
    }

    pub fn quarantined_total(&self) -> u64 {
        self.ring.quarantined_total()
    }

    #[cfg(test)]
    pub fn contains(&self, key: OccurrenceKey) -> bool {
        self.ring.contains(key)
    }

    #[cfg(test)]
    pub fn is_in_flight(&self, key: &OccurrenceKey) -> bool {
        self.in_flight.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_keys_hash_by_their_low_bits() {
        let mut set = KeySet::default();
        let a = OccurrenceKey::new("ns", "a", 1);
        set.insert(a);
        assert!(set.contains(&a));
        assert!(!set.contains(&OccurrenceKey::new("ns", "a", 2)));
    }
}
