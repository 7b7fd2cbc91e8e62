//! What enrichment keeps of an object, and the `enrichment` object written from it.
//!
//! Pure: no client, no cache. The selection runs when an object is fetched, so the cache holds
//! only what will be written (a cache full of objects with huge annotations stays small).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use kube::api::DynamicObject;

use crate::config::EnrichConfig;

/// The parts of an object that enrichment copies, already filtered and encoded.
#[derive(Debug, Default)]
pub(super) struct ObjectInfo {
    /// `"key":"value"` members, sorted by key.
    pub labels: Vec<String>,
    pub annotations: Vec<String>,
    /// Some labels or annotations were left out for the byte budget.
    pub truncated: bool,
    /// Kind and name of the controlling owner (or the first owner).
    pub owner: Option<(String, String)>,
    /// Pods: the node they run on.
    pub node_name: Option<String>,
    /// Nodes: their InternalIP.
    pub internal_ip: Option<String>,
}

/// Which labels and annotations are kept, within how many bytes.
#[derive(Debug)]
pub(super) struct Selection {
    labels: GlobSet,
    annotations: GlobSet,
    max_bytes: usize,
}

fn glob_set(globs: &[String]) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for g in globs {
        // Validated with the configuration; one that still fails matches nothing.
        if let Ok(glob) = Glob::new(g) {
            builder.add(glob);
        }
    }
    builder.build().unwrap_or_else(|_| GlobSet::empty())
}

impl Selection {
    pub fn new(config: &EnrichConfig) -> Self {
        Selection {
            labels: glob_set(&config.labels),
            annotations: glob_set(&config.annotations),
            max_bytes: config.max_bytes,
        }
    }

    /// What is cached of an object: labels and annotations only up to the byte budget (labels
    /// first), the owner, a pod's node and a node's InternalIP.
    pub fn info(&self, object: &DynamicObject) -> ObjectInfo {
        let meta = &object.metadata;
        let mut budget = self.max_bytes;
        let mut truncated = false;
        let mut members = |map: &Option<BTreeMap<String, String>>, globs: &GlobSet| {
            let mut kept = Vec::new();
            for (k, v) in map.iter().flatten() {
                if !globs.is_match(k.as_str()) {
                    continue;
                }
                let member = format!("{}:{}", json_string(k), json_string(v));
                if member.len() + 1 > budget {
                    truncated = true;
                    continue;
                }
                budget -= member.len() + 1;
                kept.push(member);
            }
            kept
        };
        let labels = members(&meta.labels, &self.labels);
        let annotations = members(&meta.annotations, &self.annotations);
        let owner = meta.owner_references.as_ref().and_then(|owners| {
            owners
                .iter()
                .find(|o| o.controller == Some(true))
                .or(owners.first())
                .map(|o| (o.kind.clone(), o.name.clone()))
        });
        let node_name = object.data["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let internal_ip = object.data["status"]["addresses"]
            .as_array()
            .and_then(|addrs| {
                addrs
                    .iter()
                    .find(|a| a["type"] == "InternalIP")
                    .and_then(|a| a["address"].as_str())
            })
            .map(str::to_string);
        ObjectInfo {
            labels,
            annotations,
            truncated,
            owner,
            node_name,
            internal_ip,
        }
    }
}

/// The `enrichment` object: labels and annotations within the byte budget (labels first),
/// the owner, and the node. `None` when there is neither an object nor a node to tell of.
pub(super) fn render(
    object: Option<&ObjectInfo>,
    node: Option<(String, Arc<ObjectInfo>)>,
) -> Option<Box<str>> {
    if object.is_none() && node.is_none() {
        return None;
    }
    let mut out = String::from("{");
    let mut truncated = false;
    if let Some(info) = object {
        truncated = info.truncated;
        for (name, members) in [("labels", &info.labels), ("annotations", &info.annotations)] {
            if !members.is_empty() {
                push_member(&mut out, name, &format!("{{{}}}", members.join(",")));
            }
        }
        if let Some((kind, name)) = &info.owner {
            let owner = format!(
                "{{\"kind\":{},\"name\":{}}}",
                json_string(kind),
                json_string(name)
            );
            push_member(&mut out, "owner", &owner);
        }
    }
    if let Some((name, info)) = node {
        let mut value = format!("{{\"name\":{}", json_string(&name));
        if let Some(ip) = &info.internal_ip {
            let _ = write!(value, ",\"address\":{}", json_string(ip));
        }
        value.push('}');
        push_member(&mut out, "node", &value);
    }
    if truncated {
        push_member(&mut out, "truncated", "true");
    }
    out.push('}');
    Some(out.into_boxed_str())
}

fn push_member(out: &mut String, name: &str, value: &str) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    out.push_str(value);
}

fn json_string(s: &str) -> String {
    // Serializing a string cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(max_bytes: usize, annotations: &[&str]) -> Selection {
        Selection::new(&EnrichConfig {
            annotations: annotations.iter().map(|a| a.to_string()).collect(),
            max_bytes,
            ..EnrichConfig::default()
        })
    }

    fn pod() -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop",
                "labels": {"app": "web", "app.kubernetes.io/part-of": "shop"},
                "annotations": {"note": "x", "kubectl.kubernetes.io/last-applied-configuration": "{\"big\":true}"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Other", "name": "o", "uid": "1"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9", "uid": "2", "controller": true}]},
            "spec": {"nodeName": "node-a"}
        }))
        .unwrap()
    }

    fn node() -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "node-a"},
                {"type": "InternalIP", "address": "10.0.0.7"}]}
        }))
        .unwrap()
    }

    #[test]
    fn renders_labels_annotations_owner_and_node() {
        let s = selection(4096, &["note"]);
        let info = s.info(&pod());
        assert_eq!(info.node_name.as_deref(), Some("node-a"));
        let node = s.info(&node());
        assert_eq!(node.internal_ip.as_deref(), Some("10.0.0.7"));
        let json = render(Some(&info), Some(("node-a".into(), Arc::new(node)))).unwrap();
        assert_eq!(
            &*json,
            r#"{"labels":{"app":"web","app.kubernetes.io/part-of":"shop"},"annotations":{"note":"x"},"owner":{"kind":"ReplicaSet","name":"web-7d9"},"node":{"name":"node-a","address":"10.0.0.7"}}"#
        );
    }

    #[test]
    fn the_default_selection_keeps_no_annotations() {
        let info = selection(4096, &[]).info(&pod());
        assert!(info.annotations.is_empty());
        assert_eq!(info.labels.len(), 2);
        assert!(!info.truncated);
    }

    #[test]
    fn the_byte_budget_keeps_labels_first_and_says_so() {
        let s = selection(40, &["*"]);
        let info = s.info(&pod());
        let v: serde_json::Value =
            serde_json::from_str(&render(Some(&info), None).unwrap()).unwrap();
        assert_eq!(v["labels"]["app"], "web");
        assert!(
            v.get("annotations").is_none()
                || v["annotations"]
                    .get("kubectl.kubernetes.io/last-applied-configuration")
                    .is_none()
        );
        assert_eq!(v["truncated"], true);
    }

    #[test]
    fn nothing_found_renders_nothing_and_a_node_alone_renders_its_name() {
        assert!(render(None, None).is_none());
        let json = render(None, Some(("n1".into(), Arc::new(ObjectInfo::default())))).unwrap();
        assert_eq!(&*json, r#"{"node":{"name":"n1"}}"#);
        let json = render(Some(&ObjectInfo::default()), None).unwrap();
        assert_eq!(&*json, "{}");
    }
}
