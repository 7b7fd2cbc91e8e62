//! kube-event-pipe: delivers each Kubernetes Event occurrence once, with deduplication that
//! survives restarts.
//!
//! Data flows one way: `source` → `event` (record and key) → `dedup` → `enrich` → `batch` →
//! `sink`, and the sinks' acknowledgements flow back to `dedup` as commits. The messages between
//! the stages live in `flow`; `pipeline` is the only module that wires the stages together.

pub mod batch;
pub mod config;
pub mod dedup;
pub mod encode;
pub mod enrich;
pub mod errors;
pub mod event;
pub mod flow;
pub mod ha;
pub mod health;
pub mod metrics;
pub mod outage;
pub mod pipeline;
pub mod scan;
pub mod signals;
pub mod sink;
pub mod source;
pub mod synth;
pub mod telemetry;
