//! The delivery watermark a leader publishes and the occurrences a standby holds against it.
//!
//! The watermark is the highest resourceVersion R such that every event the leader received
//! with a resourceVersion ≤ R is committed. Two facts make it computable without remembering
//! every event: a watch stream hands events over in resourceVersion order, and a list is a
//! snapshot at its own resourceVersion. So each scope (one watch each) knows the version up to
//! which it has handed over everything it ever will (`through`: the last watch event or
//! bookmark, or a completed list's version), and the pipe knows which accepted events still
//! wait for their acks (`pending`). The watermark is the lowest scope's `through`, lowered to
//! just below the oldest pending event. Scopes interleave (a lagging namespace's watch may still
//! deliver version 70 after another delivered 100), which is why the lowest scope counts.
//!
//! The standby holds, in memory and bounded, the occurrences it received but did not emit; it
//! commits to its own filters those the leader's watermark covers, and on taking over emits the
//! rest.

use std::collections::{BTreeMap, VecDeque};

use crate::event::OccurrenceKey;

/// The leader's side: what is handed over and what is still pending.
#[derive(Debug, Clone)]
pub struct Watermark {
    /// Per scope, the version up to which it handed over everything; `None` until it first
    /// reports (a scope still in its first list has promised nothing).
    scopes: Vec<Option<u64>>,
    /// Versions of accepted events not yet committed, with their multiplicity.
    pending: BTreeMap<u64, u32>,
}

impl Watermark {
    pub fn new(scopes: usize) -> Self {
        Watermark {
            scopes: vec![None; scopes],
            pending: BTreeMap::new(),
        }
    }

    /// Scope `scope` has handed over everything at or below `rv` (a watch event, a bookmark,
    /// or the end of a list at its version). Never moves back: a relist's version is newer.
    pub fn through(&mut self, scope: usize, rv: u64) {
        if let Some(slot) = self.scopes.get_mut(scope) {
            *slot = Some(slot.map_or(rv, |old| old.max(rv)));
        }
    }

    /// An event at `rv` was accepted and waits for its acks.
    pub fn accepted(&mut self, rv: u64) {
        *self.pending.entry(rv).or_insert(0) += 1;
    }

    /// An event at `rv` is committed (every sink acknowledged it).
    pub fn committed(&mut self, rv: u64) {
        if let Some(n) = self.pending.get_mut(&rv) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(&rv);
            }
        }
    }

    /// Accepted events still wait for their acks.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The version up to which everything received is committed; `None` while a scope has not
    /// reported yet.
    pub fn value(&self) -> Option<u64> {
        let mut lowest = u64::MAX;
        for scope in &self.scopes {
            lowest = lowest.min((*scope)?);
        }
        if self.scopes.is_empty() {
            return None;
        }
        match self.pending.keys().next() {
            Some(&oldest) => Some(lowest.min(oldest.saturating_sub(1))),
            None => Some(lowest),
        }
    }
}

/// The standby's side: occurrences received and not emitted, oldest version first.
#[derive(Debug)]
pub struct Held<T> {
    /// Version, key, the occurrence, its size in bytes.
    items: VecDeque<(u64, OccurrenceKey, T, usize)>,
    bytes: usize,
    max_bytes: usize,
}

impl<T> Held<T> {
    pub fn new(max_bytes: usize) -> Self {
        Held {
            items: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Holds one occurrence of `size` bytes. Nothing is ever dropped: past the bound the
    /// standby stops taking input instead ([`Held::is_full`]), so a leader that is stuck costs
    /// the standby its place in the stream, never an event.
    pub fn hold(&mut self, rv: u64, key: OccurrenceKey, item: T, size: usize) {
        self.items.push_back((rv, key, item, size));
        self.bytes += size;
    }

    /// At or past the bound: take no more input until the watermark frees room.
    pub fn is_full(&self) -> bool {
        self.bytes >= self.max_bytes
    }

    /// Takes out every occurrence the leader's `watermark` covers: the leader committed them,
    /// so the standby commits their keys to its own filters and forgets them.
    pub fn covered(&mut self, watermark: u64) -> Vec<OccurrenceKey> {
        let mut keys = Vec::new();
        let mut kept = VecDeque::with_capacity(self.items.len());
        for (rv, key, item, size) in self.items.drain(..) {
            if rv <= watermark {
                keys.push(key);
                self.bytes -= size;
            } else {
                kept.push_back((rv, key, item, size));
            }
        }
        self.items = kept;
        keys
    }

    /// Everything still held, with its version, for the new leader to emit.
    pub fn take(&mut self) -> Vec<(u64, T)> {
        self.bytes = 0;
        self.items
            .drain(..)
            .map(|(rv, _, item, _)| (rv, item))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_waits_for_every_scope_and_the_oldest_pending_event() {
        let mut w = Watermark::new(2);
        assert_eq!(w.value(), None);
        w.through(0, 100);
        assert_eq!(w.value(), None, "scope 1 has promised nothing yet");
        w.through(1, 60);
        assert_eq!(w.value(), Some(60), "the lagging scope counts");
        w.accepted(55);
        w.accepted(55);
        w.accepted(58);
        assert_eq!(w.value(), Some(54));
        w.committed(55);
        assert_eq!(w.value(), Some(54), "one of two at 55 is still pending");
        w.committed(55);
        assert_eq!(w.value(), Some(57));
        w.committed(58);
        w.through(1, 120);
        assert_eq!(w.value(), Some(100));
        // A relist never moves a scope back.
        w.through(0, 90);
        assert_eq!(w.value(), Some(100));
    }

    #[test]
    fn a_commit_of_an_unknown_version_changes_nothing() {
        let mut w = Watermark::new(1);
        w.through(0, 10);
        w.committed(7);
        assert_eq!(w.value(), Some(10));
    }

    fn key(i: u64) -> OccurrenceKey {
        OccurrenceKey::new("ns", &format!("e{i}"), 1)
    }

    #[test]
    fn a_standby_commits_what_the_watermark_covers_and_emits_the_rest() {
        let mut held = Held::new(1 << 20);
        for rv in [10, 11, 12, 13] {
            held.hold(rv, key(rv), rv, 100);
        }
        assert_eq!(held.covered(11), vec![key(10), key(11)]);
        assert_eq!((held.len(), held.bytes()), (2, 200));
        assert_eq!(held.take(), vec![(12, 12), (13, 13)]);
        assert!(held.is_empty());
    }

    #[test]
    fn a_full_standby_says_so_and_drops_nothing() {
        let mut held = Held::new(1000);
        for rv in 0..9 {
            held.hold(rv, key(rv), rv, 100);
        }
        assert!(!held.is_full());
        held.hold(9, key(9), 9, 100);
        assert!(held.is_full());
        held.hold(10, key(10), 10, 100);
        assert_eq!(held.len(), 11, "nothing is dropped");
        assert_eq!(held.covered(5).len(), 6);
        assert!(!held.is_full());
    }
}
