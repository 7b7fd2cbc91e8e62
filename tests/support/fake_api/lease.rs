//! `coordination.k8s.io/v1` Leases, for leader election, and the hooks that make their writes
//! race.

use axum::body::Body;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};

use super::http::{json_response, status};
use super::store::Store;
use super::{ApiServer, Inner};

/// Leases with the real optimistic concurrency: a create of an existing name is 409
/// AlreadyExists, an update whose `metadata.resourceVersion` is not the current one is 409
/// Conflict, and every write gets a new resourceVersion.
pub(super) async fn lease_request(
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
    match (method.as_str(), name) {
        ("GET", Some(name)) => read(&mut s, namespace, name),
        ("POST", None) | ("PUT", Some(_)) => write(&mut s, &method, namespace, &body),
        _ => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method",
        ),
    }
}

fn not_found(name: &str) -> Response<Body> {
    status(
        404,
        "NotFound",
        &format!("leases.coordination.k8s.io \"{name}\" not found"),
    )
}

/// A GET, after which a late write may land (see [`ApiServer::late_lease_writes`]).
fn read(s: &mut Store, namespace: String, name: String) -> Response<Body> {
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

/// A create (POST) or an update (PUT) of the Lease in `body`.
fn write(s: &mut Store, method: &Method, namespace: String, body: &[u8]) -> Response<Body> {
    let Ok(mut lease) = serde_json::from_slice::<Value>(body) else {
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
            if lease["metadata"]["resourceVersion"].as_str() != Some(rv.to_string().as_str()) =>
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
    if method == Method::POST {
        *response.status_mut() = hyper::StatusCode::CREATED;
    }
    response
}

impl ApiServer {
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
}
