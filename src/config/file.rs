//! The config file layer: JSON or YAML, our keys and k8stream's, flattened to strings.
//!
//! Values become strings so that one set of parsers (and one set of error messages) serves
//! flags, environment and file alike.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::ConfigError;

/// Every key a config file may hold. Unknown keys are rejected: a typo that silently falls back
/// to a default is worse than a failed start.
const KNOWN_KEYS: &[&str] = &[
    // ours (the long flag names with underscores)
    "source",
    "replay_file",
    "emit_deleted",
    "destination",
    "format",
    "cluster_name",
    "file_fsync",
    "persistence_path",
    "filter_capacity",
    "filter_error_rate",
    "generations",
    "rotation_interval",
    "sync_interval",
    "batch_size",
    "batch_interval",
    "batch_max_bytes",
    "shutdown_timeout",
    "log_level",
    "log_format",
    "listen",
    "metrics_by_reason",
    "context",
    "namespace",
    "namespaces",
    "field_selector",
    "label_selector",
    "list_page_size",
    "enrich",
    "enrich_labels",
    "enrich_annotations",
    "enrich_max_bytes",
    "enrich_timeout",
    "enrich_cache_ttl",
    "enrich_cache_size",
    "enrich_concurrency",
    "watch_timeout",
    "initial_list",
    "leader_elect",
    "lease_name",
    "lease_namespace",
    "lease_duration",
    "renew_deadline",
    "retry_period",
    "identity",
    "standby_max_bytes",
    "dead_letter_dir",
    "refused_retry_interval",
    "otlp_endpoint",
    "otlp_header",
    "otlp_headers",
    "otlp_ca_file",
    "otlp_client_cert",
    "otlp_client_key",
    "otlp_compression",
    "otlp_timeout",
    "otlp_body",
    "http_url",
    "http_format",
    "http_header",
    "http_headers",
    "http_bearer_token_file",
    "http_ca_file",
    "http_client_cert",
    "http_client_key",
    "http_compression",
    "http_timeout",
    // the Python kube-event-pipe's names, lower-cased
    "batch_count",
    "batch_duration_sec",
    // k8stream's
    "uid",
    "file_sink_dir",
    "prefix",
    "aws_region",
    "aws_bucket",
    "aws_profile",
    "sink",
    "kubeconfig",
    "cluster",
    "s3_prefix",
    "s3_bucket",
    "s3_endpoint",
    "s3_force_path_style",
    "s3_timeout",
    "s3_format",
    "s3_storage_class",
    "s3_sse",
    "s3_sse_kms_key_id",
    "kafka_brokers",
    "kafka_topic",
    "kafka_compression",
    "kafka_tls",
    "kafka_tls_ca",
    "kafka_tls_cert",
    "kafka_tls_key",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password_file",
    "kafka_property",
    "kafka_properties",
];

pub(super) struct FileLayer {
    pub(super) path: PathBuf,
    values: BTreeMap<String, String>,
}

impl FileLayer {
    pub(super) fn load(path: PathBuf) -> Result<Self, ConfigError> {
        let fail = |reason: String| ConfigError::File {
            path: path.clone(),
            reason,
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let values = parse(&text).map_err(fail)?;
        Ok(FileLayer { path, values })
    }

    pub(super) fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }
}

/// JSON when the text starts with `{`, YAML otherwise.
fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let doc: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?
    } else if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?
    };
    let map = match doc {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => return Ok(BTreeMap::new()),
        _ => return Err("must be a mapping of keys to values".into()),
    };
    let mut out = BTreeMap::new();
    for (key, value) in map {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "unknown key {key:?}; known keys: {}",
                KNOWN_KEYS.join(", ")
            ));
        }
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            // k8stream's `sink` may be a list; every list is joined for the comma parsers.
            serde_json::Value::Array(items) => {
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        serde_json::Value::String(s) => parts.push(s),
                        other => {
                            return Err(format!(
                                "key {key:?}: list items must be strings, found {other}"
                            ));
                        }
                    }
                }
                parts.join(",")
            }
            serde_json::Value::Object(_) => {
                return Err(format!("key {key:?} must be a single value, not a mapping"));
            }
        };
        out.insert(key, text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_and_yaml_alike() {
        let json = parse(
            r#"{"batch_size": 100, "sink": ["file", "stdout"], "uid": "c1", "aws_region": null}"#,
        )
        .unwrap();
        let yaml = parse("batch_size: 100\nsink: [file, stdout]\nuid: c1\naws_region:\n").unwrap();
        assert_eq!(json, yaml);
        assert_eq!(json["sink"], "file,stdout");
        assert!(!json.contains_key("aws_region"));
    }

    #[test]
    fn rejects_unknown_keys_and_nested_values() {
        assert!(
            parse("batch_sise: 1")
                .unwrap_err()
                .starts_with("unknown key \"batch_sise\"")
        );
        assert_eq!(
            parse("uid: {a: 1}").unwrap_err(),
            "key \"uid\" must be a single value, not a mapping"
        );
        assert_eq!(
            parse("- a\n- b").unwrap_err(),
            "must be a mapping of keys to values"
        );
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# only a comment\n").unwrap().is_empty());
    }
}
