//! Enrichment: the involved object's labels, annotations and owner, and its node's name and
//! InternalIP, added to each event under its own top-level `enrichment` key.
//!
//! Events name a few objects many times (a crash-looping pod reports every few seconds), so
//! every lookup goes through a cache bounded by entries and by age, which also remembers
//! objects that are gone (404) so a deleted pod costs one GET per TTL, not one per event.
//! Concurrent events about one object share one GET (the cache's single-flight). An event
//! never waits longer than the timeout: it goes out unenriched and a counter says so. The stage
//! holds at most `concurrency` events, so a slow API server turns into backpressure, not memory.
//!
//! Kinds are resolved to resources through discovery once each; a kind the pipe may not read
//! (403) is logged once and skipped from then on.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use globset::{Glob, GlobSet, GlobSetBuilder};
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use metrics::Counter;
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::config::EnrichConfig;
use crate::event::EventRecord;
use crate::flow::AcceptedChunk;
use crate::metrics::{ENRICH_GETS, ENRICH_SKIPPED};

/// An object an event names.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ObjectRef {
    api_version: String,
    kind: String,
    namespace: String,
    name: String,
}

/// What a lookup found: the object's useful parts, or that it does not exist.
#[derive(Clone, Debug)]
enum Lookup {
    Found(Arc<ObjectInfo>),
    Missing,
}

/// The parts of an object that enrichment copies, already filtered and encoded.
#[derive(Debug, Default)]
struct ObjectInfo {
    /// `"key":"value"` members, sorted by key.
    labels: Vec<String>,
    annotations: Vec<String>,
    /// Some labels or annotations were left out for the byte budget.
    truncated: bool,
    /// Kind and name of the controlling owner (or the first owner).
    owner: Option<(String, String)>,
    /// Pods: the node they run on.
    node_name: Option<String>,
    /// Nodes: their InternalIP.
    internal_ip: Option<String>,
}

/// Why a lookup gave nothing to cache.
#[derive(Debug, Clone)]
enum LookupError {
    /// The pipe may not read this kind.
    Forbidden,
    /// A timeout, a 5xx, a broken connection: tried again by a later event.
    Failed(String),
}

/// A kind resolved through discovery, or unknown to the cluster.
type Resolved = Option<(ApiResource, bool)>;

pub struct Enricher {
    client: kube::Client,
    objects: moka::future::Cache<ObjectRef, Lookup>,
    kinds: moka::future::Cache<(String, String), Resolved>,
    /// (`apiVersion/kind`, namespace) refused with 403, and when: skipped for a TTL.
    forbidden: Mutex<HashMap<(String, String), std::time::Instant>>,
    /// Kinds whose 403 was logged: once per kind.
    warned: Mutex<HashSet<String>>,
    cache_ttl: Duration,
    labels: GlobSet,
    annotations: GlobSet,
    max_bytes: usize,
    timeout: Duration,
    concurrency: usize,
    skipped_timeout: Counter,
    skipped_forbidden: Counter,
    skipped_error: Counter,
}

/// The fields of an Event that name what it is about.
#[derive(Deserialize)]
struct About<'a> {
    #[serde(rename = "involvedObject", borrow, default)]
    involved: Option<Involved<'a>>,
    /// events.k8s.io's name for it.
    #[serde(borrow, default)]
    regarding: Option<Involved<'a>>,
    #[serde(borrow, default)]
    source: Option<Source<'a>>,
}

#[derive(Deserialize)]
struct Involved<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Source<'a> {
    #[serde(borrow, default)]
    host: Option<std::borrow::Cow<'a, str>>,
}

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

fn glob_set(globs: &[String]) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for g in globs {
        // Validated with the configuration; one that still fails matches nothing.
        if let Ok(glob) = Glob::new(g) {
            builder.add(glob);
        }
    }
    builder.build().unwrap_or_else(|_| GlobSet::empty())
}

impl Enricher {
    pub fn new(client: kube::Client, config: &EnrichConfig) -> Self {
        let skipped = |reason: &'static str| metrics::counter!(ENRICH_SKIPPED, "reason" => reason);
        Enricher {
            client,
            objects: cache(config.cache_entries, config.cache_ttl),
            kinds: cache(1024, config.cache_ttl),
            forbidden: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
            cache_ttl: config.cache_ttl,
            labels: glob_set(&config.labels),
            annotations: glob_set(&config.annotations),
            max_bytes: config.max_bytes,
            timeout: config.timeout,
            concurrency: config.concurrency,
            skipped_timeout: skipped("timeout"),
            skipped_forbidden: skipped("forbidden"),
            skipped_error: skipped("error"),
        }
    }

    /// Enriches events from `input` in order and sends them on, `concurrency` at a time, until
    /// `input` closes (shutdown) or `output` does. What is enriched is handed on in chunks of
    /// up to `chunk`, whatever is done when the batcher can take it.
    pub async fn run(
        self: Arc<Self>,
        mut input: mpsc::Receiver<AcceptedChunk>,
        output: mpsc::Sender<AcceptedChunk>,
        chunk: usize,
    ) {
        let concurrency = self.concurrency;
        let events =
            futures::stream::poll_fn(move |cx| input.poll_recv(cx)).flat_map(futures::stream::iter);
        let enriched = events
            .map(|mut accepted| {
                let this = self.clone();
                async move {
                    accepted.enrichment = Enricher::enrich(&this, &accepted.record).await;
                    accepted
                }
            })
            .buffered(concurrency)
            .ready_chunks(chunk.max(1));
        let mut enriched = std::pin::pin!(enriched);
        while let Some(done) = enriched.next().await {
            if output.send(done).await.is_err() {
                return;
            }
        }
    }

    /// The `enrichment` object for one event, or `None` if nothing could be found in time.
    pub async fn enrich(self: &Arc<Self>, record: &EventRecord) -> Option<Box<str>> {
        match tokio::time::timeout(self.timeout, self.lookup_all(record)).await {
            Ok(Ok(json)) => json,
            Ok(Err(LookupError::Forbidden)) => {
                self.skipped_forbidden.increment(1);
                None
            }
            Ok(Err(LookupError::Failed(e))) => {
                debug!(event = %record.name(), error = %e, "event sent without enrichment");
                self.skipped_error.increment(1);
                None
            }
            Err(_) => {
                self.skipped_timeout.increment(1);
                None
            }
        }
    }

    async fn lookup_all(
        self: &Arc<Self>,
        record: &EventRecord,
    ) -> Result<Option<Box<str>>, LookupError> {
        let Ok(about) = serde_json::from_str::<About<'_>>(record.raw.get()) else {
            return Ok(None);
        };
        let text = |v: &Option<std::borrow::Cow<'_, str>>| v.as_deref().unwrap_or("").to_string();
        let Some(involved) = about.involved.or(about.regarding) else {
            return Ok(None);
        };
        let target = ObjectRef {
            api_version: text(&involved.api_version),
            kind: text(&involved.kind),
            namespace: text(&involved.namespace),
            name: text(&involved.name),
        };
        if target.kind.is_empty() || target.name.is_empty() {
            return Ok(None);
        }
        let api_version = if target.api_version.is_empty() {
            "v1".to_string()
        } else {
            target.api_version.clone()
        };
        let target = ObjectRef {
            api_version,
            ..target
        };
        let object = self.object(target.clone()).await?;
        let info = match &object {
            Lookup::Found(info) => Some(info.clone()),
            Lookup::Missing => None,
        };
        // The node: the object itself, the pod's node, or the host that reported the event.
        let node_name = if target.kind == "Node" && target.api_version == "v1" {
            Some(target.name.clone())
        } else {
            info.as_ref().and_then(|i| i.node_name.clone()).or_else(|| {
                about
                    .source
                    .and_then(|s| s.host.map(|h| h.into_owned()))
                    .filter(|h| !h.is_empty())
            })
        };
        let node = match &node_name {
            Some(name) if target.kind == "Node" => info.clone().map(|i| (name.clone(), i)),
            Some(name) => {
                let node_ref = ObjectRef {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    namespace: String::new(),
                    name: name.clone(),
                };
                match self.object(node_ref).await {
                    Ok(Lookup::Found(n)) => Some((name.clone(), n)),
                    // The node's name is still worth having without its address.
                    Ok(Lookup::Missing) | Err(_) => {
                        Some((name.clone(), Arc::new(ObjectInfo::default())))
                    }
                }
            }
            None => None,
        };
        Ok(self.render(info.as_deref(), node))
    }

    /// Looks an object up through the cache; concurrent callers for one object share one GET.
    /// The lookup runs as a task of its own: an event that stops waiting (its timeout) must not
    /// cancel a GET other events share, and the answer is cached when it comes.
    async fn object(self: &Arc<Self>, target: ObjectRef) -> Result<Lookup, LookupError> {
        let kind_key = format!("{}/{}", target.api_version, target.kind);
        if self.is_forbidden(&kind_key, &target.namespace) {
            return Err(LookupError::Forbidden);
        }
        let this = self.clone();
        let lookup = tokio::spawn(async move {
            this.objects
                .try_get_with_by_ref(&target, this.fetch(&target, &kind_key))
                .await
                .map_err(|e| (*e).clone())
        });
        lookup
            .await
            .unwrap_or_else(|e| Err(LookupError::Failed(format!("lookup task: {e}"))))
    }

    /// Whether this kind was refused in this namespace within the last TTL. Per namespace,
    /// because RBAC may grant a kind in some namespaces only; for a TTL, because it may be
    /// granted later.
    fn is_forbidden(&self, kind_key: &str, namespace: &str) -> bool {
        let Ok(mut refused) = self.forbidden.lock() else {
            return false;
        };
        let key = (kind_key.to_string(), namespace.to_string());
        match refused.get(&key) {
            Some(at) if at.elapsed() < self.cache_ttl => true,
            Some(_) => {
                refused.remove(&key);
                false
            }
            None => false,
        }
    }

    async fn fetch(&self, target: &ObjectRef, kind_key: &str) -> Result<Lookup, LookupError> {
        // Asked again here, not only before the lookup was queued: a lookup queued while the
        // first one was being refused runs after it (the cache runs one at a time per object,
        // and a refusal is not cached), and must not GET again.
        if self.is_forbidden(kind_key, &target.namespace) {
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
            Ok(Some(object)) => Ok(Lookup::Found(Arc::new(self.info(&object)))),
            Ok(None) => Ok(Lookup::Missing),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                if let Ok(mut refused) = self.forbidden.lock() {
                    refused.insert(
                        (kind_key.to_string(), target.namespace.clone()),
                        std::time::Instant::now(),
                    );
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
                Err(LookupError::Forbidden)
            }
            Err(e) => Err(LookupError::Failed(e.to_string())),
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
                    Err(e) => Err(LookupError::Failed(e.to_string())),
                }
            })
            .await
            .map_err(|e| (*e).clone())
    }

    /// What is cached of an object: labels and annotations only up to the byte budget (labels
    /// first), so a cache full of objects with huge annotations stays small.
    fn info(&self, object: &DynamicObject) -> ObjectInfo {
        let meta = &object.metadata;
        let mut budget = self.max_bytes;
        let mut truncated = false;
        let mut members = |map: &Option<std::collections::BTreeMap<String, String>>,
                           globs: &GlobSet| {
            let mut kept = Vec::new();
            for (k, v) in map.iter().flatten() {
                if !globs.is_match(k.as_str()) {
                    continue;
                }
                let member = format!("{}:{}", json_string(k), json_string(v));
                if member.len() + 1 > budget {
                    truncated = true;
                    continue;
                }
                budget -= member.len() + 1;
                kept.push(member);
            }
            kept
        };
        let labels = members(&meta.labels, &self.labels);
        let annotations = members(&meta.annotations, &self.annotations);
        let owner = meta.owner_references.as_ref().and_then(|owners| {
            owners
                .iter()
                .find(|o| o.controller == Some(true))
                .or(owners.first())
                .map(|o| (o.kind.clone(), o.name.clone()))
        });
        let node_name = object.data["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let internal_ip = object.data["status"]["addresses"]
            .as_array()
            .and_then(|addrs| {
                addrs
                    .iter()
                    .find(|a| a["type"] == "InternalIP")
                    .and_then(|a| a["address"].as_str())
            })
            .map(str::to_string);
        ObjectInfo {
            labels,
            annotations,
            truncated,
            owner,
            node_name,
            internal_ip,
        }
    }

    /// The `enrichment` object: labels and annotations within the byte budget (labels first),
    /// the owner, and the node.
    fn render(
        &self,
        object: Option<&ObjectInfo>,
        node: Option<(String, Arc<ObjectInfo>)>,
    ) -> Option<Box<str>> {
        if object.is_none() && node.is_none() {
            return None;
        }
        let mut out = String::from("{");
        let mut truncated = false;
        if let Some(info) = object {
            truncated = info.truncated;
            for (name, members) in [("labels", &info.labels), ("annotations", &info.annotations)] {
                if !members.is_empty() {
                    push_member(&mut out, name, &format!("{{{}}}", members.join(",")));
                }
            }
            if let Some((kind, name)) = &info.owner {
                let owner = format!(
                    "{{\"kind\":{},\"name\":{}}}",
                    json_string(kind),
                    json_string(name)
                );
                push_member(&mut out, "owner", &owner);
            }
        }
        if let Some((name, info)) = node {
            let mut value = format!("{{\"name\":{}", json_string(&name));
            if let Some(ip) = &info.internal_ip {
                let _ = write!(value, ",\"address\":{}", json_string(ip));
            }
            value.push('}');
            push_member(&mut out, "node", &value);
        }
        if truncated {
            push_member(&mut out, "truncated", "true");
        }
        out.push('}');
        Some(out.into_boxed_str())
    }
}

fn push_member(out: &mut String, name: &str, value: &str) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    out.push_str(value);
}

fn json_string(s: &str) -> String {
    // Serializing a string cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enricher(max_bytes: usize, annotations: &[&str]) -> Enricher {
        // The client is never used by these tests: they exercise rendering only.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        Enricher::new(
            client,
            &EnrichConfig {
                annotations: annotations.iter().map(|a| a.to_string()).collect(),
                max_bytes,
                ..EnrichConfig::default()
            },
        )
    }

    fn pod() -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop",
                "labels": {"app": "web", "app.kubernetes.io/part-of": "shop"},
                "annotations": {"note": "x", "kubectl.kubernetes.io/last-applied-configuration": "{\"big\":true}"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Other", "name": "o", "uid": "1"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9", "uid": "2", "controller": true}]},
            "spec": {"nodeName": "node-a"}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn renders_labels_annotations_owner_and_node() {
        let e = enricher(4096, &["note"]);
        let info = e.info(&pod());
        assert_eq!(info.node_name.as_deref(), Some("node-a"));
        let node = ObjectInfo {
            internal_ip: Some("10.0.0.7".into()),
            ..ObjectInfo::default()
        };
        let json = e
            .render(Some(&info), Some(("node-a".into(), Arc::new(node))))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["labels"]["app"], "web");
        assert_eq!(v["annotations"], serde_json::json!({"note": "x"}));
        assert_eq!(
            v["owner"],
            serde_json::json!({"kind": "ReplicaSet", "name": "web-7d9"})
        );
        assert_eq!(
            v["node"],
            serde_json::json!({"name": "node-a", "address": "10.0.0.7"})
        );
        assert!(v.get("truncated").is_none());
    }

    #[tokio::test]
    async fn the_byte_budget_keeps_labels_first_and_says_so() {
        let e = enricher(40, &["*"]);
        let info = e.info(&pod());
        let v: serde_json::Value =
            serde_json::from_str(&e.render(Some(&info), None).unwrap()).unwrap();
        assert_eq!(v["labels"]["app"], "web");
        assert!(
            v.get("annotations").is_none()
                || v["annotations"]
                    .get("kubectl.kubernetes.io/last-applied-configuration")
                    .is_none()
        );
        assert_eq!(v["truncated"], true);
        assert!(e.render(None, None).is_none());
    }
}
