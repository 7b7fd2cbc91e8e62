//! Protobuf records (`proto/kube_event_pipe.proto`) for S3 objects: the Event's main fields,
//! typed, and its raw JSON, so a reader can query without parsing JSON and still lose nothing.
//!
//! Building a record reads the Event's view (one more scan of its JSON), which the JSON-lines
//! path never does; the pipeline builds an encoder only when an S3 sink writes protobuf.

use std::borrow::Cow;

use prost::Message;
use serde::Deserialize;

use crate::encode::json::write_compact;
use crate::event::{Change, EventRecord, EventView};

/// The generated types of `proto/kube_event_pipe.proto`.
pub mod schema {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/kube_event_pipe.v1.rs"));
}

/// Builds length-delimited records.
#[derive(Debug, Clone)]
pub struct ProtoEncoder {
    cluster: Option<String>,
}

fn text(v: Option<Cow<'_, str>>) -> String {
    v.map(Cow::into_owned).unwrap_or_default()
}

impl ProtoEncoder {
    pub fn new(cluster: Option<&str>) -> Self {
        ProtoEncoder {
            cluster: cluster.map(str::to_owned),
        }
    }

    /// The record for one event. Fields the Event lacks, or holds with an unexpected type, are
    /// left empty rather than failing: `raw_json` still carries everything.
    pub fn record(&self, record: &EventRecord) -> schema::EventRecord {
        let view = EventView::of(record);
        let mut raw_json = Vec::with_capacity(record.raw.get().len());
        write_compact(record.raw.get(), &mut raw_json);
        schema::EventRecord {
            uid: text(view.uid()),
            namespace: record.namespace().to_string(),
            name: record.name().to_string(),
            resource_version: text(view.resource_version()),
            first_timestamp: text(view.first_timestamp()),
            last_timestamp: text(view.last_timestamp()),
            event_time: text(view.event_time()),
            creation_timestamp: text(view.creation_timestamp()),
            reason: text(view.reason()),
            message: text(view.message()),
            r#type: text(view.event_type()),
            involved_object: view.involved_object().map(|o| schema::ObjectReference {
                kind: text(o.kind()),
                namespace: text(o.namespace()),
                name: text(o.name()),
                uid: text(o.uid()),
                api_version: text(o.api_version()),
                resource_version: text(o.resource_version()),
                field_path: text(o.field_path()),
            }),
            source: view.source().map(|s| schema::EventSource {
                component: text(s.component()),
                host: text(s.host()),
            }),
            count: record.count,
            reporting_controller: text(view.reporting_component()),
            reporting_instance: text(view.reporting_instance()),
            action: text(view.action()),
            change: match record.change {
                Change::Added => "ADDED",
                Change::Modified => "MODIFIED",
                Change::Deleted => "DELETED",
            }
            .to_owned(),
            cluster: self.cluster.clone(),
            involved_object_labels: Default::default(),
            involved_object_annotations: Default::default(),
            owner_kind: None,
            owner_name: None,
            node_name: None,
            node_ip: None,
            raw_json,
        }
    }

    /// Appends the event's record, with its enrichment when it has one, preceded by its length
    /// as a varint.
    pub fn encode(&self, record: &EventRecord, enrichment: Option<&str>, out: &mut Vec<u8>) {
        let mut r = self.record(record);
        // The enrichment stage wrote this JSON itself; one it could not read adds nothing.
        if let Some(e) = enrichment.and_then(|e| serde_json::from_str::<Enrichment>(e).ok()) {
            r.involved_object_labels = e.labels;
            r.involved_object_annotations = e.annotations;
            r.owner_kind = e.owner.as_ref().map(|o| o.kind.clone());
            r.owner_name = e.owner.map(|o| o.name);
            r.node_name = e.node.as_ref().map(|n| n.name.clone());
            r.node_ip = e.node.and_then(|n| n.address);
        }
        // Writing into a Vec cannot run out of space.
        let _ = r.encode_length_delimited(out);
    }
}

/// The `enrichment` object as the enrichment stage renders it.
#[derive(Deserialize, Default)]
struct Enrichment {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    owner: Option<Owner>,
    #[serde(default)]
    node: Option<Node>,
}

#[derive(Deserialize)]
struct Owner {
    kind: String,
    name: String,
}

#[derive(Deserialize)]
struct Node {
    name: String,
    #[serde(default)]
    address: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_the_typed_fields_and_the_raw_json() {
        let json = r#"{"metadata":{"name":"p.1","namespace":"d","uid":"u-1","resourceVersion":"7"},
            "involvedObject":{"kind":"Pod","name":"p","namespace":"d"},"reason":"Pulled",
            "message":"ok","type":"Normal","count":3,"firstTimestamp":"2024-01-02T03:04:05Z",
            "source":{"component":"kubelet","host":"n1"},"extra":[1]}"#;
        let rec = EventRecord::from_json(Change::Modified, json).unwrap();
        let enc = ProtoEncoder::new(Some("c1"));
        let mut out = Vec::new();
        enc.encode(&rec, None, &mut out);
        enc.encode(&rec, None, &mut out);
        let mut buf = out.as_slice();
        let first = schema::EventRecord::decode_length_delimited(&mut buf).unwrap();
        let second = schema::EventRecord::decode_length_delimited(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(first, second);
        assert_eq!((first.uid.as_str(), first.count), ("u-1", 3));
        assert_eq!(first.involved_object.unwrap().kind, "Pod");
        assert_eq!(first.source.unwrap().host, "n1");
        assert_eq!(first.change, "MODIFIED");
        assert_eq!(first.cluster.as_deref(), Some("c1"));
        let raw: serde_json::Value = serde_json::from_slice(&first.raw_json).unwrap();
        assert_eq!(raw["extra"][0], 1);
        assert!(!first.raw_json.contains(&b'\n'));
    }

    #[test]
    fn enrichment_fills_its_fields() {
        let rec = EventRecord::from_json(Change::Added, r#"{"metadata":{"name":"p.1"}}"#).unwrap();
        let enrichment = r#"{"labels":{"app":"web"},"owner":{"kind":"ReplicaSet","name":"web-1"},"node":{"name":"n1","address":"10.0.0.1"}}"#;
        let mut out = Vec::new();
        ProtoEncoder::new(None).encode(&rec, Some(enrichment), &mut out);
        let r = schema::EventRecord::decode_length_delimited(out.as_slice()).unwrap();
        assert_eq!(
            r.involved_object_labels.get("app").map(String::as_str),
            Some("web")
        );
        assert!(r.involved_object_annotations.is_empty());
        assert_eq!(r.owner_kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(r.owner_name.as_deref(), Some("web-1"));
        assert_eq!(r.node_name.as_deref(), Some("n1"));
        assert_eq!(r.node_ip.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn odd_field_types_leave_fields_empty_instead_of_failing() {
        let json = r#"{"metadata":{"name":"x"},"reason":5,"source":"kubelet"}"#;
        let rec = EventRecord::from_json(Change::Added, json).unwrap();
        let r = ProtoEncoder::new(None).record(&rec);
        assert_eq!((r.name.as_str(), r.reason.as_str()), ("x", ""));
        assert_eq!(r.raw_json, json.as_bytes());
    }
}
