//! The connection to the API server: loading the client configuration, the one `Client` the
//! source, enrichment and the Lease share, the startup probe, and the messages an operator needs
//! when the cluster cannot be reached or refuses the identity.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use kube::Client;
use kube::client::Body;
use kube::config::{InferConfigError, KubeConfigOptions, KubeconfigError};
use kube::core::params::ListParams;
use kube::core::{Request, Status};

use super::Scope;
use crate::config::KubeConfig;
use crate::source::SourceError;

/// Where the RBAC for the source lives, for the message of a 403.
const RBAC_HINT: &str = "grant get, list and watch on events (deploy/kustomize/base/rbac.yaml)";

/// The kube-system namespace's UID: a stable id of the cluster, used to name the S3 stream when
/// no `--uid` is given. `None` when it cannot be read within a few seconds (no RBAC to get
/// namespaces, an unreachable API server); the caller then falls back to a stored UUID.
pub async fn cluster_uid(client: &Client) -> Option<String> {
    let lookup = async {
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
        api.get("kube-system").await.ok()?.metadata.uid
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), lookup)
        .await
        .ok()
        .flatten()
}

/// One connection to the API server, shared by the source, enrichment, the S3 sink's stream id
/// lookup and the Lease (one client: one connection pool, one token refresh).
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// The API server's URL, for messages.
    pub url: Arc<str>,
}

/// Why no client configuration could be loaded: the cause of [`SourceError::KubeConfig`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("the kubeconfig path is empty")]
    EmptyPath,
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    #[error(transparent)]
    Infer(#[from] InferConfigError),
    #[error(transparent)]
    Client(#[from] kube::Error),
}

impl From<ConfigError> for SourceError {
    fn from(e: ConfigError) -> Self {
        SourceError::KubeConfig(e)
    }
}

/// The client from `--kubeconfig`/`--context`, KUBECONFIG, ~/.kube/config or the pod's
/// service account, in that order. Fails when the kubeconfig is unusable.
pub async fn connect(config: &KubeConfig) -> Result<Cluster, SourceError> {
    let kube_config = load_config(config).await?;
    let url: Arc<str> = kube_config.cluster_url.to_string().into();
    let client = Client::try_from(kube_config).map_err(ConfigError::from)?;
    Ok(Cluster { client, url })
}

async fn load_config(config: &KubeConfig) -> Result<kube::Config, ConfigError> {
    let options = KubeConfigOptions {
        context: config.context.clone(),
        ..KubeConfigOptions::default()
    };
    match (&config.kubeconfig, &config.context) {
        (Some(paths), _) => {
            // KUBECONFIG may list several files, merged in order, as kubectl does.
            let mut merged: Option<kube::config::Kubeconfig> = None;
            for path in std::env::split_paths(paths.as_os_str()) {
                let one = kube::config::Kubeconfig::read_from(&path)
                    .map_err(|source| ConfigError::File { path, source })?;
                merged = Some(match merged {
                    Some(m) => m.merge(one)?,
                    None => one,
                });
            }
            let merged = merged.ok_or(ConfigError::EmptyPath)?;
            Ok(kube::Config::from_custom_kubeconfig(merged, &options).await?)
        }
        (None, Some(_)) => Ok(kube::Config::from_kubeconfig(&options).await?),
        (None, None) => Ok(kube::Config::infer().await?),
    }
}

/// One list of a single event, to fail at startup with a clear message rather than retry
/// forever in a pod that can never work.
pub(super) async fn probe(
    client: &Client,
    scope: &Scope,
    config: &KubeConfig,
    url: &str,
) -> Result<(), SourceError> {
    let params = ListParams {
        limit: Some(1),
        field_selector: config.field_selector.clone(),
        label_selector: config.label_selector.clone(),
        ..ListParams::default()
    };
    let request =
        Request::new(scope.path())
            .list(&params)
            .map_err(|source| SourceError::Request {
                verb: "list",
                scope: scope.to_string(),
                source,
            })?;
    match request_bytes(client, request).await {
        Ok(_) => Ok(()),
        Err(e) => Err(startup_error(e, "list", scope, url)),
    }
}

/// Sends a request and returns the response's body as it arrives, or the API server's refusal
/// as `kube::Error::Api`, as `Client::request_stream` does. The body is kept as hyper's frames
/// rather than read through a byte reader, so that records can share them instead of copying.
pub(super) async fn request_body(
    client: &Client,
    request: http::Request<Vec<u8>>,
) -> Result<Body, kube::Error> {
    let response = client.send(request.map(Body::from)).await?;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return Ok(response.into_body());
    }
    let bytes = response.into_body().collect_bytes().await?;
    let text = String::from_utf8(bytes.to_vec()).map_err(kube::Error::FromUtf8)?;
    // Not every refusal is a JSON Status: a proxy or an ingress in front of the API server
    // answers in plain text or HTML.
    let status = serde_json::from_str::<Status>(&text).unwrap_or_else(|_| {
        Status::failure(text.trim(), "Failed to parse error data").with_code(status.as_u16())
    });
    Err(kube::Error::Api(Box::new(status)))
}

/// Sends a request and returns the whole response body in one buffer: one copy out of
/// hyper's frames at most (none when the body came in one), where `Client::request_text` makes
/// three.
pub(super) async fn request_bytes(
    client: &Client,
    request: http::Request<Vec<u8>>,
) -> Result<Bytes, kube::Error> {
    request_body(client, request).await?.collect_bytes().await
}

/// Turns a failure at startup into the message an operator needs.
pub(super) fn startup_error(
    e: kube::Error,
    verb: &'static str,
    scope: &Scope,
    url: &str,
) -> SourceError {
    match e {
        kube::Error::Api(status) if status.code == 403 => SourceError::Forbidden {
            verb,
            scope: scope.to_string(),
            message: status.message.clone(),
            hint: RBAC_HINT,
        },
        kube::Error::Api(status) if status.code == 401 => {
            SourceError::Unauthorized(status.message.clone())
        }
        kube::Error::Api(status) => SourceError::Refused {
            verb,
            scope: scope.to_string(),
            code: status.code,
            message: status.message.clone(),
        },
        source => SourceError::Unreachable {
            url: url.to_string(),
            source,
        },
    }
}
