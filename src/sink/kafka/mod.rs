//! The Kafka sink: one record per event, a batch acknowledged only when the brokers have every
//! record of it.
//!
//! The producer is librdkafka's idempotent producer with `acks=all`: the partition leader
//! answers only once every in-sync replica has the record, and the producer's sequence numbers
//! make its own retries (after a timeout or a lost connection) land once. Records wait in
//! librdkafka, which retries them until the brokers take them (`message.timeout.ms=0`: no
//! local timeout, so an outage never turns into a record sent twice by us). A batch is
//! acknowledged when every one of its records has a successful delivery report; records the
//! brokers refuse are sent again on the next attempt, the others are not.
//!
//! How a failure is told apart:
//! - no broker reachable (librdkafka's `AllBrokersDown`) or a retriable delivery error: a
//!   [`Failure::Retry`]; the records stay queued in librdkafka meanwhile.
//! - a SASL or TLS login refused, an unknown topic, a missing ACL, a record too large: a
//!   [`Failure::Refused`], logged at ERROR with the fix and retried on the slow timer.
//! - a fatal idempotence error (the brokers lost the producer's state): a new producer is made
//!   and every record not yet reported delivered is sent again (possible duplicates, never a
//!   loss).
//!
//! `config.rs` holds the settings and their validation, `problems.rs` the rules that sort
//! failures (pure, tested without a broker), `delivery.rs` the producer and its delivery
//! reports, `record.rs` each record's key and headers.

pub mod config;
mod delivery;
mod problems;
pub mod record;

use std::path::PathBuf;

use rdkafka::error::KafkaError;
use thiserror::Error;

use super::{Sink, SinkContext};
pub use config::KafkaSettings;
pub use delivery::{KafkaSink, client_config, producer};

/// Failures to set the sink up. Not retryable: they name a file or a setting to fix.
#[derive(Debug, Error)]
pub enum KafkaSetupError {
    #[error(
        "cannot read the Kafka SASL password file {path}: {source}; mount the Secret there or set KUBE_EVENT_PIPE_KAFKA_SASL_PASSWORD"
    )]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the Kafka producer: {0}; check the --kafka-property values")]
    Producer(#[source] KafkaError),
}

/// Opens the sink for the pipeline: see [`producer`].
pub fn open(settings: &KafkaSettings, ctx: &SinkContext<'_>) -> Result<Sink, super::SinkError> {
    let sink = producer(settings, ctx.cluster_name)?;
    Ok(Sink::from_async("Kafka", "kafka", sink.name(), sink))
}
