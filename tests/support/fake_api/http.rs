//! The HTTP side: listeners that can be closed and reopened on the same ports, the accept
//! loop, routing of a request to its handler, and the Status answers every handler shares.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::discovery::{document, get_object};
use super::lease::lease_request;
use super::list::list_response;
use super::selector::Selector;
use super::watch::watch_response;
use super::{ADMIN_TOKEN, ApiServer, Inner, VIEWER_TOKEN};

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

pub(super) fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
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

pub(super) fn json_response(body: String) -> Response<Body> {
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
    let path = path.trim_end_matches('/');
    let response = if let Some(body) = document(path) {
        json_response(body.to_string())
    } else if !path.ends_with("/events") {
        get_object(&inner, path, user).await
    } else {
        events_request(inner, path, &q, user)
    };
    Ok(response)
}

/// A list or watch of events, cluster-wide or in one namespace.
fn events_request(
    inner: Arc<Inner>,
    path: &str,
    q: &HashMap<String, String>,
    user: &str,
) -> Response<Body> {
    let namespace = if path == "/api/v1/events" {
        None
    } else if let Some(ns) = path
        .strip_prefix("/api/v1/namespaces/")
        .and_then(|r| r.strip_suffix("/events"))
        .filter(|ns| !ns.contains('/'))
    {
        Some(ns.to_string())
    } else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let watching = matches!(q.get("watch").map(String::as_str), Some("1" | "true"));
    let verb = if watching { "watch" } else { "list" };
    if inner.store().forbidden.contains(user) {
        let scope = match &namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        return status(
            403,
            "Forbidden",
            &format!(
                "events is forbidden: User \"{user}\" cannot {verb} resource \"events\" in API group \"\" {scope}"
            ),
        );
    }
    let selector = match Selector::parse(
        q.get("fieldSelector").map(String::as_str),
        q.get("labelSelector").map(String::as_str),
    ) {
        Ok(s) => s.within(namespace.as_ref()),
        Err(e) => return status(400, "BadRequest", &e),
    };
    if watching {
        watch_response(inner, q, selector)
    } else {
        list_response(&inner, q, &selector)
    }
}

/// A listener that can take its port back right after it was closed (SO_REUSEADDR).
pub(super) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
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

pub(super) struct Listening {
    pub(super) stop: CancellationToken,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ApiServer {
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

    pub(super) fn lock_listening(&self) -> MutexGuard<'_, Option<Listening>> {
        self.listening.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn serve(&self, http: TcpListener, https: TcpListener) {
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
}
