//! The previous version of each object, for `--format eventrouter`'s `old_event`.
//!
//! eventrouter's wrapper carries the version an update replaced. The API server sends only the
//! new one, so the versions seen are remembered here, for every record received (duplicates
//! included: the prior of the next version is the last one seen, delivered or not).

use std::num::NonZeroUsize;

use lru::LruCache;

use crate::event::{EventRecord, RawJson};

/// Objects whose last version is remembered. Events live an hour in the API server; this
/// covers the busy part of that window in a few MiB.
const PRIOR_VERSIONS: usize = 4096;

pub struct PriorVersions(LruCache<(String, String), RawJson>);

impl Default for PriorVersions {
    fn default() -> Self {
        PriorVersions(LruCache::new(
            NonZeroUsize::new(PRIOR_VERSIONS).unwrap_or(NonZeroUsize::MIN),
        ))
    }
}

impl PriorVersions {
    /// Records the latest version of the record's object, returning the one before it. The
    /// copy kept is detached from the buffer the record came in: it stays for an hour, the
    /// rest of its list page must not.
    pub fn remember(&mut self, record: &EventRecord) -> Option<RawJson> {
        self.0.put(
            (record.namespace().to_string(), record.name().to_string()),
            record.raw.detached(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Change;

    fn version(name: &str, count: u64) -> EventRecord {
        let text =
            format!(r#"{{"metadata":{{"namespace":"ns","name":"{name}"}},"count":{count}}}"#);
        EventRecord::from_json(Change::Modified, &text).unwrap()
    }

    #[test]
    fn each_version_returns_the_one_before_it_of_the_same_object() {
        let mut priors = PriorVersions::default();
        assert!(priors.remember(&version("a", 1)).is_none());
        assert!(
            priors.remember(&version("b", 1)).is_none(),
            "another object"
        );
        let prior = priors
            .remember(&version("a", 2))
            .expect("the first version");
        assert!(prior.get().contains(r#""count":1"#));
        let prior = priors
            .remember(&version("a", 3))
            .expect("the second version");
        assert!(prior.get().contains(r#""count":2"#));
    }
}
