//! The events as an MVCC store: every version of every event by resourceVersion, the change log
//! watches read from, and compaction, which forgets both up to the head. The rest of the
//! server's mutable state lives beside it, under the same lock, so a request sees one moment.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{StaleWatch, Stats, WatchList};

/// One stored version of an event, serialized once.
pub(super) struct Obj {
    pub(super) rv: u64,
    /// The object's JSON members without `kind` and `apiVersion` and without the braces, so a
    /// list item (`{inner}`) and a watch object (`{"kind":…,"apiVersion":…,inner}`) are both a
    /// concatenation.
    pub(super) inner: String,
    pub(super) fields: HashMap<&'static str, String>,
    pub(super) labels: BTreeMap<String, String>,
}

impl Obj {
    pub(super) fn list_item(&self, out: &mut String) {
        out.push('{');
        out.push_str(&self.inner);
        out.push('}');
    }

    pub(super) fn watch_line(&self, kind: &str, out: &mut String) {
        out.push_str("{\"type\":\"");
        out.push_str(kind);
        out.push_str("\",\"object\":{\"kind\":\"Event\",\"apiVersion\":\"v1\",");
        out.push_str(&self.inner);
        out.push_str("}}\n");
    }
}

/// The field selectors events support, each with where its value is in the object.
pub(super) const FIELDS: &[(&str, &[&str])] = &[
    ("metadata.namespace", &["metadata", "namespace"]),
    ("metadata.name", &["metadata", "name"]),
    ("involvedObject.kind", &["involvedObject", "kind"]),
    ("involvedObject.namespace", &["involvedObject", "namespace"]),
    ("involvedObject.name", &["involvedObject", "name"]),
    ("involvedObject.uid", &["involvedObject", "uid"]),
    (
        "involvedObject.apiVersion",
        &["involvedObject", "apiVersion"],
    ),
    (
        "involvedObject.resourceVersion",
        &["involvedObject", "resourceVersion"],
    ),
    ("involvedObject.fieldPath", &["involvedObject", "fieldPath"]),
    ("reason", &["reason"]),
    ("reportingComponent", &["reportingComponent"]),
    ("source", &["source", "component"]),
    ("type", &["type"]),
];

/// The versions of one event, oldest first; `None` marks a deletion.
pub(super) type Versions = Vec<(u64, Option<Arc<Obj>>)>;

pub(super) struct LogEntry {
    pub(super) kind: &'static str,
    pub(super) obj: Arc<Obj>,
}

pub(super) struct Store {
    pub(super) head: u64,
    /// History at and before this resourceVersion is gone.
    pub(super) compacted: u64,
    /// Versions of each event, oldest first; `None` marks a deletion.
    pub(super) objects: BTreeMap<(String, String), Versions>,
    /// Changes after `compacted`, in resourceVersion order.
    pub(super) log: Vec<(u64, LogEntry)>,
    pub(super) forbidden: HashSet<String>,
    /// Objects other than events, for GETs (enrichment), by their URL path.
    pub(super) objects_by_path: HashMap<String, Value>,
    /// Resources (plural names) every GET of which is answered 403.
    pub(super) forbidden_resources: HashSet<String>,
    /// How long every GET of an object waits before it is answered.
    pub(super) get_delay: Duration,
    pub(super) delay: Duration,
    pub(super) stale: StaleWatch,
    /// Every watch from a resourceVersion is answered as stale, however recent.
    pub(super) all_watches_stale: bool,
    /// When each change (by resourceVersion, ascending) became visible, once asked for.
    pub(super) visible: Option<Vec<(u64, std::time::Instant)>>,
    pub(super) watch_list: WatchList,
    pub(super) stats: Stats,
    /// `coordination.k8s.io/v1` Leases by (namespace, name), each with its resourceVersion.
    pub(super) leases: HashMap<(String, String), (u64, Value)>,
    /// The last resourceVersion given to a Lease write.
    pub(super) lease_rv: u64,
    /// Lease writes answered 409 Conflict, by the resourceVersion they carried being stale.
    pub(super) lease_conflicts: u64,
    /// Lease reads after which the Lease is written again at once, unchanged but for a new
    /// resourceVersion: a renewal its sender gave up on, landing right after someone's read.
    pub(super) late_lease_writes: u32,
}

impl Store {
    /// An empty store at resourceVersion 1, answering as a current, healthy server does.
    pub(super) fn new() -> Store {
        Store {
            head: 1,
            compacted: 0,
            objects: BTreeMap::new(),
            log: Vec::new(),
            forbidden: HashSet::new(),
            objects_by_path: HashMap::new(),
            forbidden_resources: HashSet::new(),
            get_delay: Duration::ZERO,
            delay: Duration::ZERO,
            stale: StaleWatch::Gone,
            all_watches_stale: false,
            visible: None,
            watch_list: WatchList::On,
            stats: Stats::default(),
            leases: HashMap::new(),
            lease_rv: 0,
            lease_conflicts: 0,
            late_lease_writes: 0,
        }
    }

    pub(super) fn current(&self, key: &(String, String)) -> Option<&Arc<Obj>> {
        self.objects.get(key)?.last()?.1.as_ref()
    }

    pub(super) fn at(versions: &Versions, rv: u64) -> Option<&Arc<Obj>> {
        versions
            .iter()
            .rev()
            .find(|(v, _)| *v <= rv)
            .and_then(|(_, o)| o.as_ref())
    }

    pub(super) fn put(&mut self, mut event: Value) -> u64 {
        let ns = event["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = event["metadata"]["name"]
            .as_str()
            .expect("an event needs metadata.name")
            .to_string();
        let key = (ns, name);
        let kind = if self.current(&key).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.head += 1;
        let rv = self.head;
        let meta = &mut event["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        if meta.get("uid").is_none() {
            meta["uid"] = json!(format!("00000000-0000-4000-8000-{rv:012}"));
        }
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = json!("2026-11-23T10:00:00Z");
        }
        let obj = Arc::new(make_obj(rv, event));
        self.objects
            .entry(key)
            .or_default()
            .push((rv, Some(obj.clone())));
        self.log.push((rv, LogEntry { kind, obj }));
        rv
    }

    pub(super) fn remove(&mut self, ns: &str, name: &str) -> Option<u64> {
        let key = (ns.to_string(), name.to_string());
        let last = self.current(&key)?.clone();
        self.head += 1;
        let rv = self.head;
        let mut value: Value =
            serde_json::from_str(&format!("{{{}}}", last.inner)).expect("stored JSON");
        value["metadata"]["resourceVersion"] = json!(rv.to_string());
        let obj = Arc::new(make_obj(rv, value));
        self.objects.get_mut(&key)?.push((rv, None));
        self.log.push((
            rv,
            LogEntry {
                kind: "DELETED",
                obj,
            },
        ));
        Some(rv)
    }

    pub(super) fn compact(&mut self) {
        self.compacted = self.head;
        self.log.clear();
        self.objects.retain(|_, versions| {
            let last = versions.pop();
            versions.clear();
            match last {
                Some((rv, Some(o))) => {
                    versions.push((rv, Some(o)));
                    true
                }
                _ => false,
            }
        });
    }
}

fn make_obj(rv: u64, mut event: Value) -> Obj {
    let mut fields = HashMap::new();
    for (name, path) in FIELDS {
        let mut v = &event;
        for p in *path {
            v = &v[*p];
        }
        fields.insert(*name, v.as_str().unwrap_or_default().to_string());
    }
    let labels = event["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(map) = event.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    let text = event.to_string();
    let inner = text[1..text.len() - 1].to_string();
    Obj {
        rv,
        inner,
        fields,
        labels,
    }
}
