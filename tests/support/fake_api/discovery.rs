//! What the server says about itself (version, API groups, resource lists) and the objects
//! other than events it serves for GETs, which enrichment looks up.

use axum::body::Body;
use hyper::Response;
use serde_json::{Value, json};

use super::Inner;
use super::http::{json_response, status};

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

/// The discovery documents, by path (without a trailing slash).
pub(super) fn document(path: &str) -> Option<Value> {
    Some(match path {
        "/version" => {
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "0000000",
                   "gitTreeState": "clean", "buildDate": "2026-11-01T00:00:00Z",
                   "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64"})
        }
        "/api" => {
            json!({"kind": "APIVersions", "versions": ["v1"],
                   "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]})
        }
        "/apis" => {
            let groups: Vec<Value> = ["apps", "batch"]
                .iter()
                .map(|g| {
                    let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        "/api/v1" => resource_list("v1"),
        "/apis/apps/v1" => resource_list("apps/v1"),
        "/apis/batch/v1" => resource_list("batch/v1"),
        _ => return None,
    })
}

/// A GET of one object at `path`, after the configured delay: the stored object, 403 for a
/// forbidden resource, 404 for one not stored.
pub(super) async fn get_object(inner: &Inner, path: &str, user: &str) -> Response<Body> {
    let delay = inner.store().get_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let s = inner.store();
    let plural = path.rsplit('/').nth(1).unwrap_or_default();
    if s.forbidden_resources.contains(plural) {
        return status(
            403,
            "Forbidden",
            &format!("{plural} is forbidden: User \"{user}\" cannot get resource \"{plural}\""),
        );
    }
    match s.objects_by_path.get(path) {
        Some(object) => json_response(object.to_string()),
        None => status(
            404,
            "NotFound",
            &format!(
                "{plural} \"{}\" not found",
                path.rsplit('/').next().unwrap_or_default()
            ),
        ),
    }
}
