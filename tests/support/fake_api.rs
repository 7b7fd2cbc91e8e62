//! A Kubernetes API server for core/v1 Events, over HTTPS (self-signed) and HTTP, speaking the
//! real list/watch protocol: paginated lists that are consistent snapshots (MVCC by
//! resourceVersion), chunked watch streams of envelopes, bookmarks, `timeoutSeconds`, 410 Gone
//! after compaction, field and label selectors, bearer-token identities and 403s. Test hooks
//! change events, compact history, drop watches, refuse connections, slow the stream, and
//! answer stale watches the way the real server does for events (200 and an empty stream).
//! Streaming lists (WatchList: `sendInitialEvents=true`) as kube-apiserver serves them, or, by
//! a switch, as a server with the feature gate off (422) or one that predates the parameters
//! (ignored). On request it stamps when each change becomes visible to watchers, for latency
//! benchmarks.
//!
//! Used by the integration tests (a synchronous handle; the server runs its own runtime) and by
//! `examples/apiserver.rs` for benchmarks.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "admin-token-7f3a";
pub const VIEWER_TOKEN: &str = "viewer-token-19c2";

/// How a watch from a resourceVersion older than the retained history is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleWatch {
    /// A `410 Gone` ERROR event, then the end of the stream (the watch cache's answer).
    Gone,
    /// HTTP 200 and an immediately closed, empty stream (events bypass the watch cache,
    /// kubernetes issue 104171).
    EmptyOk,
}

/// How the server answers a streaming list (a watch with `sendInitialEvents=true`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchList {
    /// The WatchList feature on (the default since Kubernetes 1.32): the current state as ADDED
    /// events, then a BOOKMARK annotated `k8s.io/initial-events-end: "true"` at the state's
    /// resourceVersion, then the changes after it.
    On,
    /// The feature gate off: 422 Invalid, "sendInitialEvents is forbidden for watch unless the
    /// WatchList feature gate is enabled".
    GateOff,
    /// A server that predates the parameters and ignores them: a plain watch, which from an
    /// empty resourceVersion starts with the current state as ADDED but never says where the
    /// state ends.
    Ignored,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub list_requests: u64,
    pub watch_requests: u64,
    /// Every request by path (no query), discovery included.
    pub requests_by_path: BTreeMap<String, u64>,
    /// The `limit` of every list request, in order.
    pub list_limits: Vec<Option<u64>>,
    /// Watch envelopes written (events, bookmarks, errors).
    pub watch_events_sent: u64,
    /// Watch requests that asked for the initial events (`sendInitialEvents=true`).
    pub streaming_list_requests: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct ServerOptions {
    pub bookmark_interval: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// One stored version of an event, serialized once.
struct Obj {
    rv: u64,
    /// The object's JSON members without `kind` and `apiVersion` and without the braces, so a
    /// list item (`{inner}`) and a watch object (`{"kind":…,"apiVersion":…,inner}`) are both a
    /// concatenation.
    inner: String,
    fields: HashMap<&'static str, String>,
    labels: BTreeMap<String, String>,
}

impl Obj {
    fn list_item(&self, out: &mut String) {
        out.push('{');
        out.push_str(&self.inner);
        out.push('}');
    }

    fn watch_line(&self, kind: &str, out: &mut String) {
        out.push_str("{\"type\":\"");
        out.push_str(kind);
        out.push_str("\",\"object\":{\"kind\":\"Event\",\"apiVersion\":\"v1\",");
        out.push_str(&self.inner);
        out.push_str("}}\n");
    }
}

const FIELDS: &[(&str, &[&str])] = &[
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

/// Kinds served for GETs: apiVersion, kind, plural, namespaced.
pub const KINDS: &[(&str, &str, &str, bool)] = &[
    ("v1", "Pod", "pods", true),
    ("v1", "Node", "nodes", false),
    ("v1", "Service", "services", true),
    (
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    ("apps/v1", "Deployment", "deployments", true),
    ("apps/v1", "ReplicaSet", "replicasets", true),
    ("apps/v1", "StatefulSet", "statefulsets", true),
    ("apps/v1", "DaemonSet", "daemonsets", true),
    ("batch/v1", "Job", "jobs", true),
    ("batch/v1", "CronJob", "cronjobs", true),
];

/// The URL path of an object of a served kind.
pub fn object_path(api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<String> {
    let (_, _, plural, namespaced) = KINDS
        .iter()
        .find(|(v, k, _, _)| *v == api_version && *k == kind)?;
    let base = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    Some(if *namespaced {
        format!("{base}/namespaces/{namespace}/{plural}/{name}")
    } else {
        format!("{base}/{plural}/{name}")
    })
}

/// The discovery document of one group version, with the served kinds (and events in v1).
fn resource_list(group_version: &str) -> Value {
    let mut resources: Vec<Value> = KINDS
        .iter()
        .filter(|(v, _, _, _)| *v == group_version)
        .map(|(_, kind, plural, namespaced)| {
            json!({"name": plural, "singularName": kind.to_lowercase(), "namespaced": namespaced,
                   "kind": kind, "verbs": ["get", "list", "watch"]})
        })
        .collect();
    if group_version == "v1" {
        resources.push(json!({
            "name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": ["ev"]}));
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
           "resources": resources})
}

/// The versions of one event, oldest first; `None` marks a deletion.
type Versions = Vec<(u64, Option<Arc<Obj>>)>;

struct LogEntry {
    kind: &'static str,
    obj: Arc<Obj>,
}

struct Store {
    head: u64,
    /// History at and before this resourceVersion is gone.
    compacted: u64,
    /// Versions of each event, oldest first; `None` marks a deletion.
    objects: BTreeMap<(String, String), Versions>,
    /// Changes after `compacted`, in resourceVersion order.
    log: Vec<(u64, LogEntry)>,
    forbidden: HashSet<String>,
    /// Objects other than events, for GETs (enrichment), by their URL path.
    objects_by_path: HashMap<String, Value>,
    /// Resources (plural names) every GET of which is answered 403.
    forbidden_resources: HashSet<String>,
    /// How long every GET of an object waits before it is answered.
    get_delay: Duration,
    delay: Duration,
    stale: StaleWatch,
    /// Every watch from a resourceVersion is answered as stale, however recent.
    all_watches_stale: bool,
    /// When each change (by resourceVersion, ascending) became visible, once asked for.
    visible: Option<Vec<(u64, std::time::Instant)>>,
    watch_list: WatchList,
    stats: Stats,
    /// `coordination.k8s.io/v1` Leases by (namespace, name), each with its resourceVersion.
    leases: HashMap<(String, String), (u64, Value)>,
    /// The last resourceVersion given to a Lease write.
    lease_rv: u64,
    /// Lease writes answered 409 Conflict, by the resourceVersion they carried being stale.
    lease_conflicts: u64,
    /// Lease reads after which the Lease is written again at once, unchanged but for a new
    /// resourceVersion: a renewal its sender gave up on, landing right after someone's read.
    late_lease_writes: u32,
}

impl Store {
    fn current(&self, key: &(String, String)) -> Option<&Arc<Obj>> {
        self.objects.get(key)?.last()?.1.as_ref()
    }

    fn at(versions: &Versions, rv: u64) -> Option<&Arc<Obj>> {
        versions
            .iter()
            .rev()
            .find(|(v, _)| *v <= rv)
            .and_then(|(_, o)| o.as_ref())
    }

    fn put(&mut self, mut event: Value) -> u64 {
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

    fn remove(&mut self, ns: &str, name: &str) -> Option<u64> {
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

    fn compact(&mut self) {
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

/// A parsed `fieldSelector` and `labelSelector`.
#[derive(Default, Clone)]
struct Selector {
    fields: Vec<(&'static str, bool, String)>,
    labels: Vec<LabelReq>,
}

#[derive(Clone)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Selector {
    fn parse(field: Option<&str>, label: Option<&str>) -> Result<Selector, String> {
        let mut s = Selector::default();
        for term in field
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            let (name, eq, value) = if let Some((n, v)) = term.split_once("!=") {
                (n, false, v)
            } else if let Some((n, v)) = term.split_once("==") {
                (n, true, v)
            } else if let Some((n, v)) = term.split_once('=') {
                (n, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            let known = FIELDS
                .iter()
                .find(|(f, _)| *f == name.trim())
                .map(|(f, _)| *f)
                .ok_or_else(|| format!("field label not supported: {}", name.trim()))?;
            s.fields.push((known, eq, value.trim().to_string()));
        }
        for term in split_label_terms(label.unwrap_or_default()) {
            let term = term.trim();
            let req = if let Some((k, rest)) = term.split_once(" notin ") {
                LabelReq::NotIn(k.trim().into(), set_values(rest)?)
            } else if let Some((k, rest)) = term.split_once(" in ") {
                LabelReq::In(k.trim().into(), set_values(rest)?)
            } else if let Some((k, v)) = term.split_once("!=") {
                LabelReq::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some(k) = term.strip_prefix('!') {
                LabelReq::Absent(k.trim().into())
            } else {
                LabelReq::Exists(term.into())
            };
            s.labels.push(req);
        }
        Ok(s)
    }

    fn matches(&self, o: &Obj) -> bool {
        self.fields
            .iter()
            .all(|(f, eq, v)| (o.fields.get(f).map(String::as_str) == Some(v.as_str())) == *eq)
            && self.labels.iter().all(|r| match r {
                LabelReq::Eq(k, v) => o.labels.get(k) == Some(v),
                LabelReq::Ne(k, v) => o.labels.get(k) != Some(v),
                LabelReq::Exists(k) => o.labels.contains_key(k),
                LabelReq::Absent(k) => !o.labels.contains_key(k),
                LabelReq::In(k, vs) => o.labels.get(k).is_some_and(|v| vs.contains(v)),
                LabelReq::NotIn(k, vs) => o.labels.get(k).is_none_or(|v| !vs.contains(v)),
            })
    }
}

/// Commas separate terms, except inside the parentheses of `in (a,b)`.
fn split_label_terms(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

fn set_values(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("invalid label selector set: {rest}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

/// Percent-decoding of one query component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(req: &Request<hyper::body::Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

struct Inner {
    store: Mutex<Store>,
    head_tx: watch::Sender<u64>,
    /// Raised to end every open watch.
    drop_tx: watch::Sender<u64>,
    options: ServerOptions,
}

impl Inner {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    });
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("response")
}

fn json_response(body: String) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("response")
}

fn user_of(req: &Request<hyper::body::Incoming>) -> Option<&'static str> {
    let auth = req.headers().get("authorization")?.to_str().ok()?;
    match auth.strip_prefix("Bearer ")? {
        ADMIN_TOKEN => Some("admin"),
        VIEWER_TOKEN => Some("viewer"),
        _ => None,
    }
}

async fn handle(
    inner: Arc<Inner>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    {
        let mut s = inner.store();
        *s.stats.requests_by_path.entry(path.clone()).or_default() += 1;
    }
    let Some(user) = user_of(&req) else {
        return Ok(status(401, "Unauthorized", "Unauthorized"));
    };
    if let Some(rest) = path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/") {
        let rest = rest.to_string();
        return Ok(lease_request(&inner, req, &rest, user).await);
    }
    let q = query(&req);
    let response = match path.trim_end_matches('/') {
        "/version" => json_response(
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "0000000",
                   "gitTreeState": "clean", "buildDate": "2026-11-01T00:00:00Z",
                   "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64"})
            .to_string(),
        ),
        "/api" => json_response(
            json!({"kind": "APIVersions", "versions": ["v1"],
                   "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]})
            .to_string(),
        ),
        "/apis" => {
            let groups: Vec<Value> = ["apps", "batch"]
                .iter()
                .map(|g| {
                    let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            json_response(
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}).to_string(),
            )
        }
        "/api/v1" => json_response(resource_list("v1").to_string()),
        "/apis/apps/v1" => json_response(resource_list("apps/v1").to_string()),
        "/apis/batch/v1" => json_response(resource_list("batch/v1").to_string()),
        p if !p.ends_with("/events") => {
            let delay = inner.store().get_delay;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let s = inner.store();
            let plural = p.rsplit('/').nth(1).unwrap_or_default();
            if s.forbidden_resources.contains(plural) {
                return Ok(status(
                    403,
                    "Forbidden",
                    &format!("{plural} is forbidden: User \"{user}\" cannot get resource \"{plural}\""),
                ));
            }
            match s.objects_by_path.get(p) {
                Some(object) => json_response(object.to_string()),
                None => status(
                    404,
                    "NotFound",
                    &format!("{plural} \"{}\" not found", p.rsplit('/').next().unwrap_or_default()),
                ),
            }
        }
        p => {
            let namespace = if p == "/api/v1/events" {
                None
            } else if let Some(ns) = p
                .strip_prefix("/api/v1/namespaces/")
                .and_then(|r| r.strip_suffix("/events"))
                .filter(|ns| !ns.contains('/'))
            {
                Some(ns.to_string())
            } else {
                return Ok(status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ));
            };
            let watching = matches!(q.get("watch").map(String::as_str), Some("1" | "true"));
            let verb = if watching { "watch" } else { "list" };
            if inner.store().forbidden.contains(user) {
                let scope = match &namespace {
                    Some(ns) => format!("in the namespace \"{ns}\""),
                    None => "at the cluster scope".to_string(),
                };
                return Ok(status(
                    403,
                    "Forbidden",
                    &format!(
                        "events is forbidden: User \"{user}\" cannot {verb} resource \"events\" in API group \"\" {scope}"
                    ),
                ));
            }
            let selector = match Selector::parse(
                q.get("fieldSelector").map(String::as_str),
                q.get("labelSelector").map(String::as_str),
            ) {
                Ok(s) => s,
                Err(e) => return Ok(status(400, "BadRequest", &e)),
            };
            let selector = Selector {
                fields: {
                    let mut f = selector.fields.clone();
                    if let Some(ns) = &namespace {
                        f.push(("metadata.namespace", true, ns.clone()));
                    }
                    f
                },
                ..selector
            };
            if watching {
                watch_response(inner, &q, selector)
            } else {
                list_response(&inner, &q, &selector)
            }
        }
    };
    Ok(response)
}

/// Leases with the real optimistic concurrency: a create of an existing name is 409
/// AlreadyExists, an update whose `metadata.resourceVersion` is not the current one is 409
/// Conflict, and every write gets a new resourceVersion.
async fn lease_request(
    inner: &Inner,
    req: Request<hyper::body::Incoming>,
    rest: &str,
    user: &str,
) -> Response<Body> {
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let (namespace, name) = match parts.as_slice() {
        [ns, "leases"] => (ns.to_string(), None),
        [ns, "leases", name] => (ns.to_string(), Some(name.to_string())),
        _ => {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
    };
    let method = req.method().clone();
    let verb = match method.as_str() {
        "GET" => "get",
        "POST" => "create",
        _ => "update",
    };
    if inner.store().forbidden_resources.contains("leases") {
        return status(
            403,
            "Forbidden",
            &format!(
                "leases.coordination.k8s.io is forbidden: User \"{user}\" cannot {verb} resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"{namespace}\""
            ),
        );
    }
    let body = match axum::body::to_bytes(Body::new(req.into_body()), 1 << 20).await {
        Ok(b) => b,
        Err(e) => return status(400, "BadRequest", &e.to_string()),
    };
    let mut s = inner.store();
    let not_found = |name: &str| {
        status(
            404,
            "NotFound",
            &format!("leases.coordination.k8s.io \"{name}\" not found"),
        )
    };
    match (method.as_str(), name) {
        ("GET", Some(name)) => {
            let key = (namespace, name.clone());
            let Some((_, lease)) = s.leases.get(&key) else {
                return not_found(&name);
            };
            let response = json_response(lease.to_string());
            if s.late_lease_writes > 0 {
                s.late_lease_writes -= 1;
                s.lease_rv += 1;
                let rv = s.lease_rv;
                if let Some((stored_rv, lease)) = s.leases.get_mut(&key) {
                    *stored_rv = rv;
                    lease["metadata"]["resourceVersion"] = json!(rv.to_string());
                }
            }
            response
        }
        ("POST", None) | ("PUT", Some(_)) => {
            let Ok(mut lease) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "the body is not a Lease");
            };
            let Some(name) = lease["metadata"]["name"].as_str().map(str::to_string) else {
                return status(422, "Invalid", "metadata.name: Required value");
            };
            let key = (namespace.clone(), name.clone());
            let existing = s.leases.get(&key).map(|(rv, _)| *rv);
            match (method.as_str(), existing) {
                ("POST", Some(_)) => {
                    return status(
                        409,
                        "AlreadyExists",
                        &format!("leases.coordination.k8s.io \"{name}\" already exists"),
                    );
                }
                ("PUT", None) => return not_found(&name),
                ("PUT", Some(rv))
                    if lease["metadata"]["resourceVersion"].as_str()
                        != Some(rv.to_string().as_str()) =>
                {
                    s.lease_conflicts += 1;
                    return status(
                        409,
                        "Conflict",
                        &format!(
                            "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                        ),
                    );
                }
                _ => {}
            }
            s.lease_rv += 1;
            let rv = s.lease_rv;
            lease["apiVersion"] = json!("coordination.k8s.io/v1");
            lease["kind"] = json!("Lease");
            lease["metadata"]["namespace"] = json!(namespace);
            lease["metadata"]["resourceVersion"] = json!(rv.to_string());
            s.leases.insert(key, (rv, lease.clone()));
            let mut response = json_response(lease.to_string());
            if method == hyper::Method::POST {
                *response.status_mut() = hyper::StatusCode::CREATED;
            }
            response
        }
        _ => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method",
        ),
    }
}

fn list_response(inner: &Inner, q: &HashMap<String, String>, sel: &Selector) -> Response<Body> {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<u64>().ok())
        .filter(|&l| l > 0);
    let mut s = inner.store();
    s.stats.list_requests += 1;
    s.stats.list_limits.push(limit);
    let (rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((rv, ns, name)) = decoded.as_deref().and_then(|d| {
                let mut parts = d.splitn(3, '\u{1}');
                Some((
                    parts.next()?.parse::<u64>().ok()?,
                    parts.next()?,
                    parts.next()?,
                ))
            }) else {
                return status(400, "BadRequest", "continue key is not valid");
            };
            if rv < s.compacted {
                return status(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                );
            }
            (rv, Some((ns.to_string(), name.to_string())))
        }
        None => {
            let asked = q.get("resourceVersion").and_then(|v| v.parse::<u64>().ok());
            match (asked, q.get("resourceVersionMatch").map(String::as_str)) {
                (Some(v), Some("Exact")) if v < s.compacted => {
                    return status(
                        410,
                        "Expired",
                        &format!("too old resource version: {v} ({})", s.compacted),
                    );
                }
                (Some(v), Some("Exact")) => (v, None),
                (Some(v), _) if v > s.head => {
                    return status(
                        504,
                        "Timeout",
                        &format!("Too large resource version: {v}, current: {}", s.head),
                    );
                }
                _ => (s.head, None),
            }
        }
    };
    let range = match &after {
        Some(k) => s.objects.range::<(String, String), _>((
            std::ops::Bound::Excluded(k),
            std::ops::Bound::Unbounded,
        )),
        None => s.objects.range::<(String, String), _>(..),
    };
    let mut items = String::new();
    let mut count = 0u64;
    let mut last_key = None;
    let mut more = false;
    for (key, versions) in range {
        let Some(obj) = Store::at(versions, rv) else {
            continue;
        };
        if !sel.matches(obj) {
            continue;
        }
        if limit.is_some_and(|l| count == l) {
            more = true;
            break;
        }
        if count > 0 {
            items.push(',');
        }
        obj.list_item(&mut items);
        count += 1;
        last_key = Some(key.clone());
    }
    let mut meta = format!("\"resourceVersion\":\"{rv}\"");
    if more && let Some((ns, name)) = last_key {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{rv}\u{1}{ns}\u{1}{name}"));
        meta.push_str(&format!(",\"continue\":\"{token}\""));
    }
    drop(s);
    json_response(format!(
        "{{\"kind\":\"EventList\",\"apiVersion\":\"v1\",\"metadata\":{{{meta}}},\"items\":[{items}]}}"
    ))
}

fn watch_response(inner: Arc<Inner>, q: &HashMap<String, String>, sel: Selector) -> Response<Body> {
    let bookmarks = matches!(
        q.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let asked = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse::<u64>().ok());
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(8);
    let mut initial = String::new();
    let start;
    {
        let mut s = inner.store();
        s.stats.watch_requests += 1;
        let send_initial = q.get("sendInitialEvents").map(String::as_str);
        if send_initial.is_some() {
            s.stats.streaming_list_requests += 1;
        }
        if s.watch_list != WatchList::Ignored {
            let problems = watch_list_problems(
                send_initial,
                q.get("resourceVersionMatch").map(String::as_str),
                s.watch_list == WatchList::On,
            );
            if !problems.is_empty() {
                let listed = if problems.len() == 1 {
                    problems[0].clone()
                } else {
                    format!("[{}]", problems.join(", "))
                };
                return status(
                    422,
                    "Invalid",
                    &format!("ListOptions.meta.k8s.io \"\" is invalid: {listed}"),
                );
            }
            if send_initial == Some("true") {
                // The state at the newest resourceVersion at or after the one asked for.
                if let Some(v) = asked
                    && v > s.head
                {
                    return status(
                        504,
                        "Timeout",
                        &format!("Too large resource version: {v}, current: {}", s.head),
                    );
                }
                for versions in s.objects.values() {
                    if let Some(o) = versions.last().and_then(|(_, o)| o.as_ref())
                        && sel.matches(o)
                    {
                        o.watch_line("ADDED", &mut initial);
                    }
                }
                // Without bookmarks the end of the initial events is not announced.
                if bookmarks {
                    initial.push_str(&format!(
                        "{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"Event\",\"apiVersion\":\"v1\",\"metadata\":{{\"resourceVersion\":\"{}\",\"creationTimestamp\":null,\"annotations\":{{\"k8s.io/initial-events-end\":\"true\"}}}},\"involvedObject\":{{}},\"reportingComponent\":\"\",\"reportingInstance\":\"\",\"source\":{{}},\"firstTimestamp\":null,\"lastTimestamp\":null,\"eventTime\":null}}}}\n",
                        s.head
                    ));
                }
                start = s.head;
                drop(s);
                let inner2 = inner.clone();
                tokio::spawn(async move {
                    stream_watch(inner2, tx, start, sel, bookmarks, timeout, initial).await;
                });
                let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
                return Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from_stream(stream))
                    .expect("response");
            }
        }
        match asked {
            Some(v) if v < s.compacted || s.all_watches_stale => match s.stale {
                StaleWatch::EmptyOk => {
                    return Response::builder()
                        .header("content-type", "application/json")
                        .body(Body::empty())
                        .expect("response");
                }
                StaleWatch::Gone => {
                    s.stats.watch_events_sent += 1;
                    let line = format!(
                        "{}\n",
                        json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                            "metadata": {}, "status": "Failure",
                            "message": format!("too old resource version: {v} ({})", s.compacted),
                            "reason": "Expired", "code": 410}})
                    );
                    return Response::builder()
                        .header("content-type", "application/json")
                        .body(Body::from(line))
                        .expect("response");
                }
            },
            Some(v) => start = v,
            None => {
                // No resourceVersion: the current state first, as ADDED, then what follows.
                for versions in s.objects.values() {
                    if let Some(o) = versions.last().and_then(|(_, o)| o.as_ref())
                        && sel.matches(o)
                    {
                        o.watch_line("ADDED", &mut initial);
                    }
                }
                start = s.head;
            }
        }
    }
    let inner2 = inner.clone();
    tokio::spawn(async move {
        stream_watch(inner2, tx, start, sel, bookmarks, timeout, initial).await;
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .expect("response")
}

/// What kube-apiserver's validation of watch options says about the streaming-list parameters
/// (`validateWatchOptions`), one "field: Reason: detail" per problem.
fn watch_list_problems(
    send_initial: Option<&str>,
    version_match: Option<&str>,
    feature_on: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let version_match = version_match.filter(|m| !m.is_empty());
    if send_initial.is_some() {
        if version_match != Some("NotOlderThan") {
            problems.push("resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".to_string());
        }
        if !feature_on {
            problems.push("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled".to_string());
        }
    }
    if let Some(m) = version_match {
        if send_initial.is_none() {
            problems.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided".to_string());
        }
        if m != "NotOlderThan" {
            problems.push(format!("resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"NotOlderThan\""));
        }
    }
    problems
}

async fn stream_watch(
    inner: Arc<Inner>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    mut pos: u64,
    sel: Selector,
    bookmarks: bool,
    timeout: Duration,
    initial: String,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut head_rx = inner.head_tx.subscribe();
    let mut drop_rx = inner.drop_tx.subscribe();
    let mut bookmark = tokio::time::interval(inner.options.bookmark_interval);
    bookmark.tick().await;
    if !initial.is_empty() && tx.send(Ok(Bytes::from(initial))).await.is_err() {
        return;
    }
    loop {
        // Everything after `pos`, a slice at a time.
        let (chunk, lines, delay, gone) = {
            let mut s = inner.store();
            if pos < s.compacted {
                let line = format!(
                    "{}\n",
                    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                        "metadata": {}, "status": "Failure",
                        "message": format!("too old resource version: {pos} ({})", s.compacted),
                        "reason": "Expired", "code": 410}})
                );
                s.stats.watch_events_sent += 1;
                (line, 1, Duration::ZERO, true)
            } else {
                let from = s.log.partition_point(|(rv, _)| *rv <= pos);
                let delay = s.delay;
                let max = if delay.is_zero() { 2000 } else { 1 };
                let mut out = String::new();
                let mut lines = 0u64;
                for (rv, entry) in s.log[from..].iter().take(max) {
                    pos = *rv;
                    if sel.matches(&entry.obj) {
                        entry.obj.watch_line(entry.kind, &mut out);
                        lines += 1;
                    }
                }
                s.stats.watch_events_sent += lines;
                (out, lines, delay, false)
            }
        };
        if lines > 0 {
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
            if gone {
                return;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if drop_rx.has_changed().unwrap_or(true) {
                return;
            }
            continue;
        }
        if pos < *head_rx.borrow_and_update() {
            continue;
        }
        tokio::select! {
            changed = head_rx.changed() => if changed.is_err() { return },
            _ = drop_rx.changed() => return,
            () = tokio::time::sleep_until(deadline) => return,
            _ = bookmark.tick(), if bookmarks => {
                let line = format!(
                    "{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"Event\",\"apiVersion\":\"v1\",\"metadata\":{{\"resourceVersion\":\"{pos}\"}}}}}}\n"
                );
                inner.store().stats.watch_events_sent += 1;
                if tx.send(Ok(Bytes::from(line))).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A listener that can take its port back right after it was closed (SO_REUSEADDR).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections until `stop` is cancelled; every connection ends with it too.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    inner: Arc<Inner>,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            () = stop.cancelled() => return,
        };
        let (inner, stop, tls) = (inner.clone(), stop.clone(), tls.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(inner.clone(), req));
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        () = stop.cancelled() => {}
                    }
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        () = stop.cancelled() => {}
                    }
                }
            }
        });
    }
}

struct Listening {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub struct ApiServer {
    runtime: Option<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
    http: SocketAddr,
    https: SocketAddr,
    tls: TlsAcceptor,
    listening: Arc<Mutex<Option<Listening>>>,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl ApiServer {
    pub fn start() -> ApiServer {
        Self::start_with(ServerOptions::default())
    }

    pub fn start_with(options: ServerOptions) -> ApiServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("fake-api")
            .build()
            .expect("runtime");
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .expect("certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
            )
            .expect("TLS config");
        let tls = TlsAcceptor::from(Arc::new(config));
        let inner = Arc::new(Inner {
            store: Mutex::new(Store {
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
            }),
            head_tx: watch::channel(1).0,
            drop_tx: watch::channel(0).0,
            options,
        });
        // Kept open from here on: dropping and rebinding would let a parallel test take the port.
        let (first_http, first_https) = runtime.block_on(async {
            let any = SocketAddr::from(([127, 0, 0, 1], 0));
            (listen(any).expect("bind"), listen(any).expect("bind"))
        });
        let (http, https) = (
            first_http.local_addr().unwrap(),
            first_https.local_addr().unwrap(),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let ca = base64::engine::general_purpose::STANDARD.encode(cert.cert.pem());
        let kc = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [
                {"name": "test", "cluster": {"server": format!("https://{https}"), "certificate-authority-data": ca}},
                {"name": "test-http", "cluster": {"server": format!("http://{http}")}}
            ],
            "users": [
                {"name": "admin", "user": {"token": ADMIN_TOKEN}},
                {"name": "viewer", "user": {"token": VIEWER_TOKEN}}
            ],
            "contexts": [
                {"name": "test", "context": {"cluster": "test", "user": "admin"}},
                {"name": "test-http", "context": {"cluster": "test-http", "user": "admin"}},
                {"name": "forbidden", "context": {"cluster": "test", "user": "viewer"}}
            ]
        });
        std::fs::write(&kubeconfig, serde_json::to_string_pretty(&kc).unwrap()).unwrap();
        let server = ApiServer {
            runtime: Some(runtime),
            inner,
            http,
            https,
            tls,
            listening: Arc::new(Mutex::new(None)),
            _dir: dir,
            kubeconfig,
        };
        server.serve(first_http, first_https);
        server
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("runtime")
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.https)
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Wakes the watches; the changes from `first` to `head` are visible from here on.
    fn changed(&self, head: u64) {
        self.changed_since(head, head);
    }

    fn changed_since(&self, first: u64, head: u64) {
        let at = std::time::Instant::now();
        self.inner.head_tx.send_replace(head);
        if let Some(visible) = self.inner.store().visible.as_mut() {
            visible.extend((first..=head).map(|rv| (rv, at)));
        }
    }

    /// From now on, stamps when each change becomes visible (see [`Self::visible_at`]).
    pub fn stamp_visibility(&self) {
        self.inner.store().visible.get_or_insert_with(Vec::new);
    }

    /// When each change since [`Self::stamp_visibility`] became visible to watchers (the store
    /// unlocked and the watches woken), by resourceVersion, ascending.
    pub fn visible_at(&self) -> Vec<(u64, std::time::Instant)> {
        self.inner.store().visible.clone().unwrap_or_default()
    }

    /// Creates or replaces several events at once (one lock, one wake-up); returns the last
    /// resourceVersion.
    pub fn add_all(&self, events: impl IntoIterator<Item = Value>) -> u64 {
        let (first, head) = {
            let mut s = self.inner.store();
            let first = s.head + 1;
            for event in events {
                s.put(event);
            }
            (first, s.head)
        };
        // An empty range when nothing changed: the watches wake, nothing is stamped.
        self.changed_since(first, head);
        head
    }

    /// Creates or replaces an event (ADDED or MODIFIED); returns its resourceVersion.
    pub fn add(&self, event: Value) -> u64 {
        let rv = self.inner.store().put(event);
        self.changed(rv);
        rv
    }

    /// Applies watch envelopes, one JSON per line: ADDED/MODIFIED upsert, DELETED deletes.
    pub fn add_envelopes(&self, jsonl: &str) -> u64 {
        let mut s = self.inner.store();
        let first = s.head + 1;
        for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
            let mut envelope: Value = serde_json::from_str(line).expect("an envelope per line");
            let object = envelope["object"].take();
            if envelope["type"] == "DELETED" {
                let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = object["metadata"]["name"].as_str().unwrap_or_default();
                s.remove(ns, name);
            } else {
                s.put(object);
            }
        }
        let head = s.head;
        drop(s);
        // An empty range when nothing changed: the watches wake, nothing is stamped.
        self.changed_since(first, head);
        head
    }

    pub fn modify(&self, namespace: &str, name: &str, f: impl FnOnce(&mut Value)) -> u64 {
        let mut s = self.inner.store();
        let key = (namespace.to_string(), name.to_string());
        let current = s.current(&key).expect("no such event").clone();
        let mut value: Value = serde_json::from_str(&format!("{{{}}}", current.inner)).unwrap();
        f(&mut value);
        let rv = s.put(value);
        drop(s);
        self.changed(rv);
        rv
    }

    pub fn delete(&self, namespace: &str, name: &str) -> Option<u64> {
        let rv = self.inner.store().remove(namespace, name);
        if let Some(rv) = rv {
            self.changed(rv);
        }
        rv
    }

    /// Stores an object of a served kind (see `KINDS`) for GETs; returns its path.
    pub fn put_object(&self, object: Value) -> String {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let path = object_path(
            &text(&object["apiVersion"]),
            &text(&object["kind"]),
            &text(&object["metadata"]["namespace"]),
            &text(&object["metadata"]["name"]),
        )
        .expect("an object of a served kind");
        self.inner
            .store()
            .objects_by_path
            .insert(path.clone(), object);
        path
    }

    pub fn remove_object(&self, path: &str) {
        self.inner.store().objects_by_path.remove(path);
    }

    /// Delays the answer to every GET of an object (a slow or stalled API server).
    pub fn set_get_delay(&self, delay: Duration) {
        self.inner.store().get_delay = delay;
    }

    /// Answers every GET of this resource (plural, e.g. `deployments`) with 403.
    pub fn forbid_resource(&self, plural: &str) {
        self.inner
            .store()
            .forbidden_resources
            .insert(plural.to_string());
    }

    pub fn resource_version(&self) -> u64 {
        self.inner.store().head
    }

    /// The current events, with `kind` and `apiVersion`.
    pub fn events(&self) -> Vec<Value> {
        let s = self.inner.store();
        s.objects
            .values()
            .filter_map(|v| v.last().and_then(|(_, o)| o.as_ref()))
            .map(|o| {
                serde_json::from_str(&format!(
                    "{{\"kind\":\"Event\",\"apiVersion\":\"v1\",{}}}",
                    o.inner
                ))
                .unwrap()
            })
            .collect()
    }

    /// Forgets all history up to the head.
    pub fn compact(&self) {
        let head = {
            let mut s = self.inner.store();
            s.compact();
            s.head
        };
        // Nothing new to stamp: compaction only forgets.
        self.inner.head_tx.send_replace(head);
    }

    pub fn drop_watches(&self) {
        self.inner.drop_tx.send_modify(|n| *n += 1);
    }

    /// Closes both listeners and every open connection: connects are refused until
    /// [`Self::resume_listening`].
    pub fn stop_listening(&self) {
        let current = self.lock_listening().take();
        if let Some(l) = current {
            l.stop.cancel();
            self.rt().block_on(async {
                for t in l.tasks {
                    let _ = t.await;
                }
            });
        }
    }

    /// Listens again on the same ports.
    pub fn resume_listening(&self) {
        if self.lock_listening().is_some() {
            return;
        }
        let (h, s) = self.rt().block_on(async {
            (
                listen(self.http).expect("rebind the HTTP port"),
                listen(self.https).expect("rebind the HTTPS port"),
            )
        });
        self.serve(h, s);
    }

    fn lock_listening(&self) -> MutexGuard<'_, Option<Listening>> {
        self.listening.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self, http: TcpListener, https: TcpListener) {
        let stop = CancellationToken::new();
        let tasks = vec![
            self.rt()
                .spawn(accept_loop(http, None, self.inner.clone(), stop.clone())),
            self.rt().spawn(accept_loop(
                https,
                Some(self.tls.clone()),
                self.inner.clone(),
                stop.clone(),
            )),
        ];
        *self.lock_listening() = Some(Listening { stop, tasks });
    }

    /// Refuses connections for `period`, then listens again; returns at once.
    pub fn refuse_connections(&self, period: Duration) {
        self.stop_listening();
        let listening = self.listening.clone();
        let (inner, tls, http, https) =
            (self.inner.clone(), self.tls.clone(), self.http, self.https);
        let handle = self.rt().handle().clone();
        handle.clone().spawn(async move {
            tokio::time::sleep(period).await;
            let h = listen(http).expect("rebind the HTTP port");
            let s = listen(https).expect("rebind the HTTPS port");
            let stop = CancellationToken::new();
            let tasks = vec![
                handle.spawn(accept_loop(h, None, inner.clone(), stop.clone())),
                handle.spawn(accept_loop(s, Some(tls), inner, stop.clone())),
            ];
            *listening.lock().unwrap_or_else(|e| e.into_inner()) = Some(Listening { stop, tasks });
        });
    }

    pub fn forbid_user(&self, user: &str) {
        self.inner.store().forbidden.insert(user.to_string());
    }

    pub fn set_stream_delay(&self, per_event: Duration) {
        self.inner.store().delay = per_event;
    }

    pub fn set_stale_watch(&self, mode: StaleWatch) {
        self.inner.store().stale = mode;
    }

    /// Answers every watch that names a resourceVersion as stale (as `set_stale_watch` says),
    /// as if each list's version were compacted away before its watch starts.
    pub fn set_all_watches_stale(&self, on: bool) {
        self.inner.store().all_watches_stale = on;
    }

    /// How streaming lists are answered from now on (default [`WatchList::On`]).
    pub fn set_watch_list(&self, mode: WatchList) {
        self.inner.store().watch_list = mode;
    }

    /// The Lease `namespace/name` as stored, if any.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        let s = self.inner.store();
        s.leases
            .get(&(namespace.to_string(), name.to_string()))
            .map(|(_, v)| v.clone())
    }

    /// The next `n` Lease reads are each followed at once by another write of the Lease (a new
    /// resourceVersion, nothing else changed), as a renewal that landed late would be: an
    /// update based on that read then meets a 409.
    pub fn late_lease_writes(&self, n: u32) {
        self.inner.store().late_lease_writes = n;
    }

    /// Lease updates refused with 409 Conflict so far.
    pub fn lease_conflicts(&self) -> u64 {
        self.inner.store().lease_conflicts
    }

    pub fn stats(&self) -> Stats {
        self.inner.store().stats.clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(l) = self.lock_listening().take() {
            l.stop.cancel();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
