//! The enrichment stage: the task between the dedup stage and the batcher, which gives each
//! event its `enrichment` (or none) within the timeout, in order.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use metrics::Counter;
use tokio::sync::mpsc;
use tracing::debug;

use super::lookup::{Lookup, LookupError, Lookups, ObjectRef};
use super::render::{self, ObjectInfo};
use crate::config::EnrichConfig;
use crate::event::{EventRecord, EventView};
use crate::flow::AcceptedChunk;
use crate::metrics::ENRICH_SKIPPED;

pub struct Enricher {
    lookups: Arc<Lookups>,
    timeout: Duration,
    concurrency: usize,
    skipped_timeout: Counter,
    skipped_forbidden: Counter,
    skipped_error: Counter,
}

impl Enricher {
    pub fn new(client: kube::Client, config: &EnrichConfig) -> Self {
        let skipped = |reason: &'static str| metrics::counter!(ENRICH_SKIPPED, "reason" => reason);
        Enricher {
            lookups: Arc::new(Lookups::new(client, config)),
            timeout: config.timeout,
            concurrency: config.concurrency,
            skipped_timeout: skipped("timeout"),
            skipped_forbidden: skipped("forbidden"),
            skipped_error: skipped("error"),
        }
    }

    /// Enriches events from `input` in order and sends them on, `concurrency` at a time, until
    /// `input` closes (shutdown) or `output` does. What is enriched is handed on in chunks of
    /// up to `chunk`, whatever is done when the batcher can take it.
    pub async fn run(
        self: Arc<Self>,
        mut input: mpsc::Receiver<AcceptedChunk>,
        output: mpsc::Sender<AcceptedChunk>,
        chunk: usize,
    ) {
        let concurrency = self.concurrency;
        let events =
            futures::stream::poll_fn(move |cx| input.poll_recv(cx)).flat_map(futures::stream::iter);
        let enriched = events
            .map(|mut accepted| {
                let this = self.clone();
                async move {
                    accepted.enrichment = Enricher::enrich(&this, &accepted.record).await;
                    accepted
                }
            })
            .buffered(concurrency)
            .ready_chunks(chunk.max(1));
        let mut enriched = std::pin::pin!(enriched);
        while let Some(done) = enriched.next().await {
            if output.send(done).await.is_err() {
                return;
            }
        }
    }

    /// The `enrichment` object for one event, or `None` if nothing could be found in time.
    pub async fn enrich(self: &Arc<Self>, record: &EventRecord) -> Option<Box<str>> {
        match tokio::time::timeout(self.timeout, self.lookup_all(record)).await {
            Ok(Ok(json)) => json,
            Ok(Err(LookupError::Forbidden)) => {
                self.skipped_forbidden.increment(1);
                None
            }
            Ok(Err(e)) => {
                debug!(event = %record.name(), error = %e, "event sent without enrichment");
                self.skipped_error.increment(1);
                None
            }
            Err(_) => {
                self.skipped_timeout.increment(1);
                None
            }
        }
    }

    /// Looks up what the event is about and its node, and renders what was found.
    async fn lookup_all(&self, record: &EventRecord) -> Result<Option<Box<str>>, LookupError> {
        let (target, host) = {
            let event = EventView::of(record);
            let Some(target) = ObjectRef::about(&event) else {
                return Ok(None);
            };
            let host = event
                .source()
                .and_then(|s| s.host())
                .map(|h| h.into_owned());
            (target, host)
        };
        let info = match self.lookups.object(target.clone()).await? {
            Lookup::Found(info) => Some(info),
            Lookup::Missing => None,
        };
        let node = match node_name(&target, info.as_deref(), host) {
            Some(name) if target.kind == "Node" => info.clone().map(|i| (name, i)),
            Some(name) => {
                let found = match self.lookups.object(ObjectRef::node(&name)).await {
                    Ok(Lookup::Found(n)) => n,
                    // The node's name is still worth having without its address.
                    Ok(Lookup::Missing) | Err(_) => Arc::new(ObjectInfo::default()),
                };
                Some((name, found))
            }
            None => None,
        };
        Ok(render::render(info.as_deref(), node))
    }
}

/// The node an event is about: the object itself when it is a core Node, else the pod's node,
/// else the host that reported the event.
fn node_name(
    target: &ObjectRef,
    info: Option<&ObjectInfo>,
    host: Option<String>,
) -> Option<String> {
    if target.kind == "Node" && target.api_version == "v1" {
        return Some(target.name.clone());
    }
    info.and_then(|i| i.node_name.clone())
        .or_else(|| host.filter(|h| !h.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(api_version: &str, kind: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: String::new(),
            name: name.into(),
        }
    }

    #[test]
    fn the_node_is_the_object_the_pods_node_or_the_reporting_host() {
        let host = || Some("host-1".to_string());
        assert_eq!(
            node_name(&target("v1", "Node", "n1"), None, host()).as_deref(),
            Some("n1")
        );
        let pod = ObjectInfo {
            node_name: Some("node-a".into()),
            ..ObjectInfo::default()
        };
        let p = target("v1", "Pod", "web");
        assert_eq!(node_name(&p, Some(&pod), host()).as_deref(), Some("node-a"));
        assert_eq!(
            node_name(&p, Some(&ObjectInfo::default()), host()).as_deref(),
            Some("host-1")
        );
        assert_eq!(node_name(&p, None, Some(String::new())), None);
        // A Node of another group is not the core Node.
        assert_eq!(
            node_name(&target("x/v1", "Node", "n1"), None, host()).as_deref(),
            Some("host-1")
        );
    }
}
