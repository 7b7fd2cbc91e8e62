//! Every default, once. The configuration builder, the ring's and the sources' `Default`s, the
//! `--help` text and the configuration reference's Default column all come from here, or, for
//! a sink's options, from its `sink/<name>/config.rs`; `tests/docs.rs` checks the reference
//! against [`documented`], so changing a default is one edit that the docs test then holds the
//! reference to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::sink::{file, kafka, otlp, s3, transport, webhook};

/// `--source`: watch the cluster.
pub const SOURCE: &str = "kube";
/// `--persistence-path`: the working directory; a persistent volume in production, or every
/// restart replays the last hour of events.
pub const PERSISTENCE_PATH: &str = ".";
/// `--filter-capacity`: keys per generation before it rotates; about 3.6 MB at 1e-6.
pub const FILTER_CAPACITY: u64 = 1_000_000;
/// `--filter-error-rate`: not the Python tool's 1e-2, because each false positive drops a real
/// event.
pub const FILTER_ERROR_RATE: f64 = 0.000_001;
/// `--generations`: an hour each, so three hours of memory at the default rotation.
pub const GENERATIONS: usize = 3;
/// `--rotation-interval`: the API server's default event TTL.
pub const ROTATION_INTERVAL: Duration = Duration::from_secs(3600);
/// `--sync-interval`: between msyncs of the filters.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(5);
/// `--batch-size`: larger batches mean fewer writes and fsyncs, more events in flight.
pub const BATCH_SIZE: usize = 500;
/// `--batch-max-bytes`: bounds memory and S3 object size with large events.
pub const BATCH_MAX_BYTES: usize = 8 << 20;
/// `--batch-interval`: the longest a partial batch waits under a steady trickle.
pub const BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// `--shutdown-timeout`: keep it below the pod's termination grace period.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// `--log-level`, as a tracing filter.
pub const LOG_LEVEL: &str = "info";
/// `--listen` in a pod, where the kubelet probes it; off elsewhere.
pub const LISTEN_IN_POD: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9090);
/// `--list-page-size`, as kubectl and client-go: an unpaginated list of a large cluster's events
/// is how watchers reach gigabytes at startup.
pub const LIST_PAGE_SIZE: u32 = 500;
/// `--watch-timeout`: below kube-apiserver's minimum request timeout (1800 s), so the client
/// decides when a watch is renewed, and a silently dead connection is noticed.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(290);
/// `--initial-list`: a streaming list where the API server serves one (one pass over its state
/// instead of a request per page), pages where it does not.
pub const INITIAL_LIST: super::InitialList = super::InitialList::Auto;
/// `--enrich-labels` and `--enrich-annotations`: every key.
pub const ENRICH_KEYS: &str = "*";
/// `--enrich-max-bytes`: one `last-applied-configuration` can be hundreds of kilobytes.
pub const ENRICH_MAX_BYTES: usize = 4096;
/// `--enrich-timeout`: an event never waits longer for its lookups.
pub const ENRICH_TIMEOUT: Duration = Duration::from_secs(2);
/// `--enrich-cache-ttl`.
pub const ENRICH_CACHE_TTL: Duration = Duration::from_secs(300);
/// `--enrich-cache-size`: objects remembered.
pub const ENRICH_CACHE_ENTRIES: u64 = 10_000;
/// `--enrich-concurrency`: events in the enrichment stage at once.
pub const ENRICH_CONCURRENCY: usize = 64;
/// `--refused-retry-interval`: a fixed credential or policy is noticed within it, and a peer
/// that keeps refusing is not hammered.
pub const REFUSED_RETRY_INTERVAL: Duration = Duration::from_secs(30);

/// `--lease-name`.
pub const LEASE_NAME: &str = "kube-event-pipe";
/// `--lease-duration`, `--renew-deadline`, `--retry-period`: client-go's leader election
/// defaults, which kube-controller-manager and most operators use.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// `--standby-max-bytes`: about a minute of a busy cluster's events at 1 KiB each and 1,000/s,
/// far more than the one renewal period a healthy leader's watermark lags.
pub const STANDBY_MAX_BYTES: usize = 64 << 20;

/// The defaults as the configuration reference's Default column shows them, by flag.
pub fn documented() -> Vec<(&'static str, String)> {
    let code = |v: &dyn std::fmt::Display| format!("`{v}`");
    let secs = |d: Duration| code(&d.as_secs_f64());
    vec![
        ("--source", code(&SOURCE)),
        ("--persistence-path", code(&PERSISTENCE_PATH)),
        ("--filter-capacity", code(&FILTER_CAPACITY)),
        ("--filter-error-rate", code(&FILTER_ERROR_RATE)),
        ("--generations", code(&GENERATIONS)),
        ("--rotation-interval", secs(ROTATION_INTERVAL)),
        ("--sync-interval", secs(SYNC_INTERVAL)),
        ("--batch-size", code(&BATCH_SIZE)),
        ("--batch-max-bytes", code(&BATCH_MAX_BYTES)),
        ("--batch-interval", secs(BATCH_INTERVAL)),
        ("--shutdown-timeout", secs(SHUTDOWN_TIMEOUT)),
        ("--log-level", code(&LOG_LEVEL.to_uppercase())),
        ("--file-fsync", code(&file::config::FSYNC)),
        ("--list-page-size", code(&LIST_PAGE_SIZE)),
        ("--watch-timeout", secs(WATCH_TIMEOUT)),
        ("--initial-list", code(&"auto")),
        ("--s3-timeout", secs(s3::config::TIMEOUT)),
        ("--enrich-labels", code(&ENRICH_KEYS)),
        ("--enrich-annotations", code(&ENRICH_KEYS)),
        ("--enrich-max-bytes", code(&ENRICH_MAX_BYTES)),
        ("--enrich-timeout", secs(ENRICH_TIMEOUT)),
        ("--enrich-cache-ttl", secs(ENRICH_CACHE_TTL)),
        ("--enrich-cache-size", code(&ENRICH_CACHE_ENTRIES)),
        ("--enrich-concurrency", code(&ENRICH_CONCURRENCY)),
        ("--kafka-topic", code(&kafka::config::TOPIC)),
        ("--kafka-compression", code(&kafka::config::COMPRESSION)),
        ("--otlp-compression", code(&otlp::config::COMPRESSION)),
        ("--otlp-timeout", secs(transport::config::TIMEOUT)),
        ("--otlp-body", code(&otlp::config::BODY)),
        ("--http-format", code(&webhook::config::FORMAT)),
        ("--http-compression", code(&webhook::config::COMPRESSION)),
        ("--http-timeout", secs(transport::config::TIMEOUT)),
        ("--refused-retry-interval", secs(REFUSED_RETRY_INTERVAL)),
        ("--lease-name", code(&LEASE_NAME)),
        ("--lease-duration", secs(LEASE_DURATION)),
        ("--renew-deadline", secs(RENEW_DEADLINE)),
        ("--retry-period", secs(RETRY_PERIOD)),
        ("--standby-max-bytes", code(&STANDBY_MAX_BYTES)),
    ]
}
