//! The operations surface: logging to stderr (stdout belongs to events; nothing else may write
//! there), the Prometheus recorder, and the HTTP listener serving `/metrics`, `/healthz` and
//! `/readyz`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::health::{self, Health};
use crate::metrics::{self as names, BATCH_FLUSH_SECONDS};

/// Installs the global subscriber. `filter` is a validated directive from the config.
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = EnvFilter::builder()
        .parse(filter)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into a log collector's file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Failures to start the listener. Not retryable: the address must change.
#[derive(Debug, Error)]
pub enum TelemetryError {
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(#[source] metrics_exporter_prometheus::BuildError),
    #[error(
        "cannot listen on {addr} for /metrics, /healthz and /readyz: {source}; choose another --listen address, or --listen off"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Batch flush durations span a page-cache write (sub-millisecond) to an S3 PUT under retries.
const FLUSH_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide Prometheus recorder and registers every metric's HELP text.
/// Without it (listener off) the `metrics` macros record into nothing, at no cost.
pub fn install_recorder() -> Result<PrometheusHandle, TelemetryError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(BATCH_FLUSH_SECONDS.into()), FLUSH_BUCKETS)
        .map_err(TelemetryError::Recorder)?
        .install_recorder()
        .map_err(TelemetryError::Recorder)?;
    names::describe();
    Ok(handle)
}

/// What the handlers read.
#[derive(Clone)]
struct Surface {
    metrics: PrometheusHandle,
    health: Health,
    started_ms: u64,
    stall: Option<Duration>,
}

/// Binds `addr` and serves the three endpoints until `shutdown`; returns the bound address
/// (the port is chosen by the system when `addr` has port 0). `stall` is how long the source
/// may stay silent before `/healthz` fails, `None` for a source that may idle for ever.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    health: Health,
    stall: Option<Duration>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, TelemetryError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    let surface = Surface {
        metrics,
        health,
        started_ms: unix_ms(),
        stall,
    };
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(surface);
    // Its own task: a slow scraper never holds up the pipe, and the pipe's shutdown drain
    // keeps answering probes until the process exits.
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            error!(error = %e, "the telemetry listener stopped; /metrics and the probes are gone");
        }
    });
    info!(address = %bound, "telemetry listening: /metrics, /healthz, /readyz");
    Ok(bound)
}

async fn metrics_text(State(s): State<Surface>) -> Response {
    // Histogram and summary upkeep happens here rather than on a timer: only scrapes read it.
    s.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz(State(s): State<Surface>) -> Response {
    verdict(health::liveness(
        &s.health,
        unix_ms(),
        s.started_ms,
        s.stall,
    ))
}

async fn readyz(State(s): State<Surface>) -> Response {
    verdict(health::readiness(&s.health))
}

fn verdict(result: Result<(), String>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
