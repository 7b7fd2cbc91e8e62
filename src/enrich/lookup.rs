//! Looking objects up: the caches in front of the API server and the calls behind them.
//!
//! Three memories, each with its own rule: objects (found or gone) for a TTL, bounded by
//! entries; kinds resolved through discovery, once per kind and TTL; and kinds refused with
//! 403, per namespace, for a TTL. The rules are in [`ObjectCache`] and [`Refusals`], which hold
//! no client.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use thiserror::Error;
use tracing::warn;

use super::render::{ObjectInfo, Selection};
use crate::config::EnrichConfig;
use crate::event::EventView;
use crate::metrics::ENRICH_GETS;

/// An object an event names.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// The object an event is about: `involvedObject`, else `regarding` (events.k8s.io). `None`
    /// when it has no kind or no name; an absent `apiVersion` is the core group's `v1`.
    pub fn about(event: &EventView<'_>) -> Option<ObjectRef> {
        let involved = event.involved_object().or(event.regarding())?;
        let text = |v: Option<std::borrow::Cow<'_, str>>| v.unwrap_or_default().into_owned();
        let target = ObjectRef {
            api_version: text(involved.api_version()),
            kind: text(involved.kind()),
            namespace: text(involved.namespace()),
            name: text(involved.name()),
        };
        if target.kind.is_empty() || target.name.is_empty() {
            return None;
        }
        if target.api_version.is_empty() {
            return Some(ObjectRef {
                api_version: "v1".into(),
                ..target
            });
        }
        Some(target)
    }

    /// The core `v1` Node named `name`.
    pub fn node(name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: "Node".into(),
            namespace: String::new(),
            name: name.to_string(),
        }
    }

    /// `apiVersion/kind`: how refusals and their warning name a kind.
    fn kind_key(&self) -> String {
        format!("{}/{}", self.api_version, self.kind)
    }
}

/// What a lookup found: the object's useful parts, or that it does not exist.
#[derive(Clone, Debug)]
pub(super) enum Lookup {
    Found(Arc<ObjectInfo>),
    Missing,
}

/// Why a lookup gave nothing to cache.
#[derive(Debug, Clone, Error)]
pub(super) enum LookupError {
    /// The pipe may not read this kind.
    #[error("enrichment may not read this kind")]
    Forbidden,
    /// A timeout, a 5xx, a broken connection: tried again by a later event.
    #[error(transparent)]
    Failed(Arc<kube::Error>),
    #[error("lookup task: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
}

/// A kind resolved through discovery, or unknown to the cluster.
type Resolved = Option<(ApiResource, bool)>;

fn cache<K, V>(entries: u64, ttl: Duration) -> moka::future::Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    moka::future::Cache::builder()
        .max_capacity(entries)
        .time_to_live(ttl)
        .build()
}

/// Objects by reference, found or gone: at most `entries`, each for the TTL. A `Missing` is
/// remembered like a find (a deleted pod costs one GET per TTL); a failure is not (the next
/// event tries again). Concurrent callers for one object share one fetch.
pub(super) struct ObjectCache(moka::future::Cache<ObjectRef, Lookup>);

impl ObjectCache {
    pub fn new(entries: u64, ttl: Duration) -> Self {
        ObjectCache(cache(entries, ttl))
    }

    /// The cached answer for `target`, else what `fetch` finds (cached unless it fails).
    pub async fn get_or_fetch(
        &self,
        target: &ObjectRef,
        fetch: impl Future<Output = Result<Lookup, LookupError>>,
    ) -> Result<Lookup, LookupError> {
        self.0
            .try_get_with_by_ref(target, fetch)
            .await
            .map_err(|e| (*e).clone())
    }
}

/// Kinds refused (403) per namespace, and when: skipped for a TTL. Per namespace, because RBAC
/// may grant a kind in some namespaces only; for a TTL, because it may be granted later.
#[derive(Debug)]
pub(super) struct Refusals {
    ttl: Duration,
    refused: HashMap<(String, String), Instant>,
}

impl Refusals {
    pub fn new(ttl: Duration) -> Self {
        Refusals {
            ttl,
            refused: HashMap::new(),
        }
    }

    /// Whether `kind_key` was refused in `namespace` within the TTL before `now`; an expired
    /// refusal is forgotten.
    pub fn is_refused(&mut self, kind_key: &str, namespace: &str, now: Instant) -> bool {
        let key = (kind_key.to_string(), namespace.to_string());
        match self.refused.get(&key) {
            Some(at) if now.saturating_duration_since(*at) < self.ttl => true,
            Some(_) => {
                self.refused.remove(&key);
                false
            }
            None => false,
        }
    }

    pub fn refuse(&mut self, kind_key: &str, namespace: &str, now: Instant) {
        self.refused
            .insert((kind_key.to_string(), namespace.to_string()), now);
    }
}

/// The caches and the client behind them.
pub(super) struct Lookups {
    client: kube::Client,
    objects: ObjectCache,
    kinds: moka::future::Cache<(String, String), Resolved>,
    refusals: Mutex<Refusals>,
    /// Kinds whose 403 was logged: once per kind.
    warned: Mutex<HashSet<String>>,
    selection: Selection,
}

impl Lookups {
    pub fn new(client: kube::Client, config: &EnrichConfig) -> Self {
        Lookups {
            client,
            objects: ObjectCache::new(config.cache_entries, config.cache_ttl),
            kinds: cache(1024, config.cache_ttl),
            refusals: Mutex::new(Refusals::new(config.cache_ttl)),
            warned: Mutex::new(HashSet::new()),
            selection: Selection::new(config),
        }
    }

    /// Looks an object up through the cache; concurrent callers for one object share one GET.
    /// The lookup runs as a task of its own: an event that stops waiting (its timeout) must not
    /// cancel a GET other events share, and the answer is cached when it comes.
    pub async fn object(self: &Arc<Self>, target: ObjectRef) -> Result<Lookup, LookupError> {
        let kind_key = target.kind_key();
        if self.is_refused(&kind_key, &target.namespace) {
            return Err(LookupError::Forbidden);
        }
        let this = self.clone();
        let lookup = tokio::spawn(async move {
            this.objects
                .get_or_fetch(&target, this.fetch(&target, &kind_key))
                .await
        });
        lookup
            .await
            .unwrap_or_else(|e| Err(LookupError::Task(Arc::new(e))))
    }

    fn is_refused(&self, kind_key: &str, namespace: &str) -> bool {
        self.refusals
            .lock()
            .is_ok_and(|mut r| r.is_refused(kind_key, namespace, Instant::now()))
    }

    async fn fetch(&self, target: &ObjectRef, kind_key: &str) -> Result<Lookup, LookupError> {
        // Asked again here, not only before the lookup was queued: a lookup queued while the
        // first one was being refused runs after it (the cache runs one at a time per object,
        // and a refusal is not cached), and must not GET again.
        if self.is_refused(kind_key, &target.namespace) {
            return Err(LookupError::Forbidden);
        }
        let Some((resource, namespaced)) = self.resolve(target).await? else {
            // A kind the cluster does not serve (a CRD since removed): nothing to find.
            return Ok(Lookup::Missing);
        };
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(self.client.clone(), &target.namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        };
        metrics::counter!(ENRICH_GETS, "resource" => resource.plural.clone()).increment(1);
        match api.get_opt(&target.name).await {
            Ok(Some(object)) => Ok(Lookup::Found(Arc::new(self.selection.info(&object)))),
            Ok(None) => Ok(Lookup::Missing),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                self.refused(target, kind_key, &resource);
                Err(LookupError::Forbidden)
            }
            Err(e) => Err(LookupError::Failed(Arc::new(e))),
        }
    }

    /// Remembers a 403, and says so once per kind.
    fn refused(&self, target: &ObjectRef, kind_key: &str, resource: &ApiResource) {
        if let Ok(mut refusals) = self.refusals.lock() {
            refusals.refuse(kind_key, &target.namespace, Instant::now());
        }
        let first = self
            .warned
            .lock()
            .map(|mut w| w.insert(kind_key.to_string()))
            .unwrap_or(false);
        if first {
            warn!(
                kind = kind_key,
                resource = %resource.plural,
                "enrichment may not get {}: events about them go out unenriched; grant get on them (deploy/kustomize/components/enrichment)",
                resource.plural
            );
        }
    }

    /// The resource for a kind, through discovery, once per kind (and TTL).
    async fn resolve(&self, target: &ObjectRef) -> Result<Resolved, LookupError> {
        let key = (target.api_version.clone(), target.kind.clone());
        let client = self.client.clone();
        self.kinds
            .try_get_with(key, async move {
                let (group, version) = match target.api_version.split_once('/') {
                    Some((g, v)) => (g.to_string(), v.to_string()),
                    None => (String::new(), target.api_version.clone()),
                };
                let gvk = GroupVersionKind::gvk(&group, &version, &target.kind);
                match kube::discovery::pinned_kind(&client, &gvk).await {
                    Ok((resource, caps)) => {
                        Ok(Some((resource, matches!(caps.scope, Scope::Namespaced))))
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                    Err(kube::Error::Discovery(_)) => Ok(None),
                    Err(e) => Err(LookupError::Failed(Arc::new(e))),
                }
            })
            .await
            .map_err(|e| (*e).clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::event::{Change, EventRecord};

    fn target(name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    /// Fetches that count themselves and answer `answer`.
    async fn fetch(
        calls: &AtomicUsize,
        answer: Result<Lookup, LookupError>,
    ) -> Result<Lookup, LookupError> {
        calls.fetch_add(1, Ordering::SeqCst);
        answer
    }

    #[tokio::test]
    async fn a_missing_object_is_remembered_and_a_failure_is_not() {
        let cache = ObjectCache::new(100, Duration::from_secs(60));
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            let got = cache
                .get_or_fetch(&target("gone"), fetch(&calls, Ok(Lookup::Missing)))
                .await;
            assert!(matches!(got, Ok(Lookup::Missing)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        for _ in 0..2 {
            let got = cache
                .get_or_fetch(&target("p"), fetch(&calls, Err(LookupError::Forbidden)))
                .await;
            assert!(matches!(got, Err(LookupError::Forbidden)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let cache = ObjectCache::new(100, Duration::from_millis(50));
        let calls = AtomicUsize::new(0);
        let found = || Ok(Lookup::Found(Arc::new(ObjectInfo::default())));
        cache
            .get_or_fetch(&target("p"), fetch(&calls, found()))
            .await
            .unwrap();
        cache
            .get_or_fetch(&target("p"), fetch(&calls, found()))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(120)).await;
        cache
            .get_or_fetch(&target("p"), fetch(&calls, found()))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_cache_is_bounded_by_entries() {
        let cache = ObjectCache::new(10, Duration::from_secs(60));
        let calls = AtomicUsize::new(0);
        for i in 0..200 {
            let name = format!("p{i}");
            cache
                .get_or_fetch(&target(&name), fetch(&calls, Ok(Lookup::Missing)))
                .await
                .unwrap();
        }
        cache.0.run_pending_tasks().await;
        assert!(cache.0.entry_count() <= 10, "{}", cache.0.entry_count());
    }

    #[test]
    fn refusals_hold_per_namespace_for_the_ttl() {
        let t0 = Instant::now();
        let mut r = Refusals::new(Duration::from_secs(30));
        assert!(!r.is_refused("v1/Pod", "a", t0));
        r.refuse("v1/Pod", "a", t0);
        assert!(r.is_refused("v1/Pod", "a", t0 + Duration::from_secs(29)));
        assert!(!r.is_refused("v1/Pod", "b", t0));
        assert!(!r.is_refused("apps/v1/Deployment", "a", t0));
        assert!(!r.is_refused("v1/Pod", "a", t0 + Duration::from_secs(30)));
        // Expired, so forgotten: the next check does not see it either.
        assert!(!r.is_refused("v1/Pod", "a", t0));
    }

    fn about(json: &str) -> Option<ObjectRef> {
        let record = EventRecord::from_json(Change::Added, json).unwrap();
        ObjectRef::about(&EventView::of(&record))
    }

    #[test]
    fn an_event_is_about_its_involved_object_or_what_it_regards() {
        let t = about(
            r#"{"metadata":{"name":"e"},"involvedObject":{"kind":"Pod","namespace":"shop","name":"web-1"}}"#,
        );
        assert_eq!(
            t,
            Some(ObjectRef {
                api_version: "v1".into(),
                ..target("web-1")
            })
        );
        let t = about(r#"{"metadata":{"name":"e"},"regarding":{"apiVersion":"apps/v1","kind":"Deployment","name":"d"}}"#)
            .unwrap();
        assert_eq!(
            (t.api_version.as_str(), t.kind.as_str()),
            ("apps/v1", "Deployment")
        );
        assert_eq!(
            about(r#"{"metadata":{"name":"e"},"involvedObject":{"kind":"Pod"}}"#),
            None
        );
        assert_eq!(about(r#"{"metadata":{"name":"e"}}"#), None);
    }
}
