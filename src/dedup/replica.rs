//! The dedup stage's part in leader election: what a leader tracks to publish its watermark,
//! and what a standby holds against its leader's.
//!
//! A standby checks and keys every record exactly as a leader does, then, instead of emitting,
//! commits to its own filters what the leader's watermark covers and holds the rest. So when it
//! takes over its filters know what the leader delivered, and what it holds is exactly what the
//! leader may not have delivered.

use std::collections::HashMap;

use super::watermark::{Held, Watermark};
use crate::event::OccurrenceKey;
use crate::flow::Accepted;
use crate::metrics::STANDBY_HELD;

/// What a standby did with one new occurrence.
pub enum Taken {
    /// The leader committed it: commit its key, emit nothing.
    Covered,
    /// Held for the leader's watermark, or for a takeover.
    Held,
    /// Its version cannot be compared: neither held nor committed (a takeover relists).
    Opaque,
}

pub struct Replica {
    leading: bool,
    /// This pipe's own watermark: what it received, and what of that is committed.
    own: Watermark,
    /// The versions of this pipe's emitted occurrences until they are committed.
    versions: HashMap<OccurrenceKey, u64>,
    /// The leader's last published watermark, while standing by.
    leader: Option<u64>,
    held: Held<Accepted>,
    /// The API server's resourceVersions are not numbers: nothing can be compared.
    opaque: bool,
    held_gauge: metrics::Gauge,
}

impl Replica {
    pub fn new(scopes: usize, max_bytes: usize) -> Self {
        Replica {
            leading: false,
            own: Watermark::new(scopes),
            versions: HashMap::new(),
            leader: None,
            held: Held::new(max_bytes),
            opaque: false,
            held_gauge: metrics::gauge!(STANDBY_HELD),
        }
    }

    pub fn is_leading(&self) -> bool {
        self.leading
    }

    pub fn is_opaque(&self) -> bool {
        self.opaque
    }

    /// A standby at its hold bound takes no input until the watermark frees room.
    pub fn wants_input(&self) -> bool {
        self.leading || !self.held.is_full()
    }

    /// The watermark this pipe publishes: while it leads, its own; while it stands by (a
    /// renewal at the moment it acquires the Lease), its leader's, never its own, which would
    /// claim that what it holds was delivered.
    pub fn watermark(&self) -> Option<u64> {
        match (self.leading, self.opaque) {
            (_, true) => None,
            (true, false) => self.own.value(),
            (false, false) => self.leader,
        }
    }

    /// A scope handed over everything up to `version`; `None`: versions are not numbers.
    /// Returns true when versions just turned out to be opaque.
    pub fn through(&mut self, scope: usize, version: Option<u64>) -> bool {
        match version {
            Some(v) => {
                self.own.through(scope, v);
                false
            }
            None => !std::mem::replace(&mut self.opaque, true),
        }
    }

    /// The leader emits `key` at `version`.
    pub fn emitted(&mut self, key: OccurrenceKey, version: Option<u64>) {
        match version {
            Some(v) => {
                self.own.accepted(v);
                self.versions.insert(key, v);
            }
            None => self.opaque = true,
        }
    }

    /// Every sink has `key`.
    pub fn committed(&mut self, key: &OccurrenceKey) {
        if let Some(v) = self.versions.remove(key) {
            self.own.committed(v);
        }
    }

    /// Whether the previous leader's watermark covers a new occurrence at `version`: a new
    /// leader still lagging behind its predecessor's stream must not emit again what that one
    /// committed.
    pub fn covered_by_predecessor(&self, version: Option<u64>) -> bool {
        matches!((version, self.leader), (Some(v), Some(w)) if v <= w)
    }

    /// A standby's new occurrence. What is held is detached from the buffer it came in, so the
    /// bound on held bytes bounds the memory they take: a few new events scattered over many
    /// list pages would otherwise keep every one of those pages.
    pub fn take(&mut self, mut accepted: Accepted, version: Option<u64>) -> Taken {
        let Some(v) = version.filter(|_| !self.opaque) else {
            self.opaque = true;
            return Taken::Opaque;
        };
        if self.leader.is_some_and(|w| v <= w) {
            return Taken::Covered;
        }
        let key = accepted.record.key;
        accepted.record.raw = accepted.record.raw.detached();
        let size = accepted.record.raw.get().len();
        self.held.hold(v, key, accepted, size);
        Taken::Held
    }

    /// The leader published `watermark`: the keys it covers, to commit.
    pub fn leader_watermark(&mut self, watermark: Option<u64>) -> Vec<OccurrenceKey> {
        if watermark.is_some() {
            self.leader = watermark.max(self.leader);
        }
        match self.leader {
            Some(w) => self.held.covered(w),
            None => Vec::new(),
        }
    }

    /// This replica now leads: what it holds, oldest first, to emit (after the previous
    /// leader's last watermark was applied with [`Replica::leader_watermark`]).
    pub fn lead(&mut self) -> Vec<(u64, Accepted)> {
        self.leading = true;
        self.held.take()
    }

    /// Whether events wait for the watermark to move: accepted and not committed on a leader,
    /// held on a standby.
    pub fn waiting(&self) -> bool {
        if self.leading {
            self.own.has_pending()
        } else {
            !self.held.is_empty()
        }
    }

    /// Refreshes the held-events gauge.
    pub fn observe(&self) {
        self.held_gauge.set(self.held.len() as f64);
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Change, EventRecord};

    fn accepted(name: &str, rv: u64) -> Accepted {
        let json = format!(
            r#"{{"metadata":{{"namespace":"ns","name":"{name}","resourceVersion":"{rv}"}},"count":1}}"#
        );
        Accepted {
            record: EventRecord::from_json(Change::Added, &json).unwrap(),
            prior: None,
            enrichment: None,
        }
    }

    #[test]
    fn a_standby_commits_what_the_leader_covers_and_emits_the_rest_on_takeover() {
        let mut r = Replica::new(1, 1 << 20);
        assert!(matches!(r.take(accepted("a", 10), Some(10)), Taken::Held));
        assert!(matches!(r.take(accepted("b", 20), Some(20)), Taken::Held));
        let covered = r.leader_watermark(Some(15));
        assert_eq!(covered, vec![OccurrenceKey::new("ns", "a", 1)]);
        // Once the leader is past it, a new occurrence is committed, not held.
        assert!(matches!(
            r.take(accepted("c", 12), Some(12)),
            Taken::Covered
        ));
        // A lower watermark read later (an older record) never moves it back.
        assert!(r.leader_watermark(Some(5)).is_empty());
        let rest = r.lead();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].0, 20);
        assert!(r.is_leading() && r.wants_input());
    }

    #[test]
    fn the_published_watermark_follows_the_scopes_and_the_commits() {
        let mut r = Replica::new(1, 1 << 20);
        r.lead();
        assert_eq!(
            r.watermark(),
            None,
            "nothing promised before the first report"
        );
        let key = OccurrenceKey::new("ns", "a", 1);
        r.emitted(key, Some(30));
        r.through(0, Some(40));
        assert_eq!(r.watermark(), Some(29));
        r.committed(&key);
        assert_eq!(r.watermark(), Some(40));
        assert!(r.through(0, None), "opaque versions are reported once");
        assert!(!r.through(0, None));
        assert_eq!(r.watermark(), None);
    }

    #[test]
    fn a_standby_at_its_bound_wants_no_input_until_the_watermark_frees_room() {
        let mut r = Replica::new(1, 1 << 20);
        let mut rv = 0;
        while r.wants_input() {
            rv += 1;
            r.take(accepted(&format!("e{rv}"), rv), Some(rv));
        }
        assert!(r.held() > 1000);
        r.leader_watermark(Some(rv / 2));
        assert!(r.wants_input());
    }
}
