//! Enrichment: the involved object's labels, annotations and owner, and its node's name and
//! InternalIP, added to each event under its own top-level `enrichment` key.
//!
//! Events name a few objects many times (a crash-looping pod reports every few seconds), so
//! every lookup goes through a cache bounded by entries and by age, which also remembers
//! objects that are gone (404) so a deleted pod costs one GET per TTL, not one per event.
//! Concurrent events about one object share one GET (the cache's single-flight). An event
//! never waits longer than the timeout: it goes out unenriched and a counter says so. The stage
//! holds at most `concurrency` events, so a slow API server turns into backpressure, not memory.
//!
//! Kinds are resolved to resources through discovery once each; a kind the pipe may not read
//! (403) is logged once and skipped from then on.
//!
//! - [`stage`]: the task between the dedup stage and the batcher, and what to look up for an
//!   event;
//! - [`lookup`]: the caches (objects with their negative entries, kinds, refusals) and the API
//!   calls behind them;
//! - [`render`]: what of an object is kept, and the `enrichment` object written from it.

mod lookup;
mod render;
mod stage;

pub use stage::Enricher;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::EnrichConfig;
use crate::flow::AcceptedChunk;

/// Starts enrichment between the dedup stage (`accepted`) and the batcher: the batcher reads
/// the returned queue, which holds at most `queued` chunks of at most `chunk` events.
pub fn start(
    client: kube::Client,
    config: &EnrichConfig,
    accepted: mpsc::Receiver<AcceptedChunk>,
    chunk: usize,
    queued: usize,
) -> (mpsc::Receiver<AcceptedChunk>, JoinHandle<()>) {
    let (enriched_tx, enriched_rx) = mpsc::channel::<AcceptedChunk>(queued);
    let enricher = Arc::new(Enricher::new(client, config));
    let task = tokio::spawn(enricher.run(accepted, enriched_tx, chunk));
    (enriched_rx, task)
}
