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

mod discovery;
mod http;
mod lease;
mod list;
mod selector;
mod store;
mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

pub use discovery::object_path;
// Not named by every user of this module.
#[allow(unused_imports)]
pub use discovery::KINDS;
use http::{Listening, listen};
use store::Store;

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

struct Inner {
    store: Mutex<Store>,
    head_tx: tokio::sync::watch::Sender<u64>,
    /// Raised to end every open watch.
    drop_tx: tokio::sync::watch::Sender<u64>,
    options: ServerOptions,
}

impl Inner {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
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
        let (tls, cert_pem) = tls_acceptor();
        let inner = Arc::new(Inner {
            store: Mutex::new(Store::new()),
            head_tx: tokio::sync::watch::channel(1).0,
            drop_tx: tokio::sync::watch::channel(0).0,
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
        write_kubeconfig(&kubeconfig, &cert_pem, http, https);
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

    /// Stores an object of a served kind (see [`KINDS`]) for GETs; returns its path.
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

/// A self-signed certificate for 127.0.0.1 and localhost, and its PEM for clients to trust.
fn tls_acceptor() -> (TlsAcceptor, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
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
    (tls, cert.cert.pem())
}

/// A kubeconfig with a context per way in: `test` (HTTPS, admin), `test-http` (HTTP, admin)
/// and `forbidden` (HTTPS, viewer).
fn write_kubeconfig(path: &Path, cert_pem: &str, http: SocketAddr, https: SocketAddr) {
    let ca = base64::engine::general_purpose::STANDARD.encode(cert_pem);
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
    std::fs::write(path, serde_json::to_string_pretty(&kc).unwrap()).unwrap();
}
