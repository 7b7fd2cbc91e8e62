//! The effective configuration as one log line, with secrets kept out of it.
//!
//! Fields are listed one by one rather than derived from `Debug`, so a field added later is not
//! logged until someone decides how; and every value passes through [`redact`], which hides
//! values whose name says they are secret and the credentials a URL may carry
//! (`https://user:password@host`, presigned query strings).

use std::fmt;
use std::time::Duration;

use super::kafka::{KafkaSettings, Password};
use super::{
    Config, EnrichConfig, HaConfig, HeaderSpec, InitialList, LogFormat, OutputFormat, ReplayInput,
    S3Options, SinkConfig, SourceConfig, Sse, TlsFiles,
};

/// Names whose values are never logged, whatever they hold.
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "key",
    "auth",
    "session",
];

/// What is logged for a value that must not be.
pub const REDACTED: &str = "<redacted>";

/// The value as it may be logged under `name`.
pub fn redact(name: &str, value: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
        return REDACTED.to_string();
    }
    let Some(scheme_end) = value.find("://") else {
        return value.to_string();
    };
    let rest = &value[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("{REDACTED}@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    // A query string may be a signature (presigned URLs); keep only the path.
    let path = path.split(['?', '#']).next().unwrap_or("");
    let query = if path.len() < rest.len() - authority_end {
        format!("?{REDACTED}")
    } else {
        String::new()
    };
    format!("{}://{host}{path}{query}", &value[..scheme_end])
}

/// `Display` of the configuration for the startup log line.
pub struct Redacted<'a>(pub &'a Config);

impl Config {
    /// The configuration as it may be logged: see the module doc.
    pub fn redacted(&self) -> Redacted<'_> {
        Redacted(self)
    }
}

/// Header names only: values are credentials more often than not.
fn header_names(headers: &[HeaderSpec]) -> String {
    headers
        .iter()
        .map(|h| format!("{}={REDACTED}", h.name))
        .collect::<Vec<_>>()
        .join(",")
}

fn push_tls(push: &mut impl FnMut(&'static str, String), prefix: &str, tls: &TlsFiles) {
    let http = prefix == "http";
    for (name, value) in [
        (if http { "http_ca_file" } else { "otlp_ca_file" }, &tls.ca),
        (
            if http {
                "http_client_cert"
            } else {
                "otlp_client_cert"
            },
            &tls.client_cert,
        ),
        // The key's path is not a secret, but its name says "key": logged as redacted.
        (
            if http {
                "http_client_key"
            } else {
                "otlp_client_key"
            },
            &tls.client_key,
        ),
    ] {
        if let Some(p) = value {
            push(name, p.display().to_string());
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        let mut fields: Vec<(&str, String)> = Vec::new();
        let mut push = |name: &'static str, value: String| fields.push((name, value));
        push_source(&mut push, &c.source);
        push_sinks(&mut push, &c.sinks);
        if let Some(dir) = &c.dead_letter_dir {
            push("dead_letter_dir", dir.display().to_string());
        }
        push("refused_retry_interval", secs(c.refused_retry_interval));
        push_ha(&mut push, c.ha.as_ref());
        push_pipe(&mut push, c);
        push_enrich(&mut push, c.enrich.as_ref());
        push_s3(&mut push, &c.s3);
        for sink in &c.sinks {
            if let SinkConfig::Kafka(k) = sink {
                push_kafka(&mut push, k);
            }
        }
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={}", redact(name, value))?;
        }
        Ok(())
    }
}

fn push_source(push: &mut impl FnMut(&'static str, String), source: &SourceConfig) {
    match source {
        SourceConfig::Kube(k) => {
            push("source", "kube".into());
            if let Some(p) = &k.kubeconfig {
                push("kubeconfig", p.display().to_string());
            }
            if let Some(ctx) = &k.context {
                push("context", ctx.clone());
            }
            push(
                "namespaces",
                if k.namespaces.is_empty() {
                    "all".into()
                } else {
                    k.namespaces.join(",")
                },
            );
            if let Some(s) = &k.field_selector {
                push("field_selector", s.clone());
            }
            if let Some(s) = &k.label_selector {
                push("label_selector", s.clone());
            }
            push("list_page_size", k.list_page_size.to_string());
            push("watch_timeout", secs(k.watch_timeout));
            push(
                "initial_list",
                match k.initial_list {
                    InitialList::Auto => "auto",
                    InitialList::Stream => "stream",
                    InitialList::Paginate => "paginate",
                }
                .into(),
            );
        }
        SourceConfig::Replay(input) => {
            push("source", "replay".into());
            push(
                "replay_file",
                match input {
                    ReplayInput::Stdin => "-".into(),
                    ReplayInput::File(p) => p.display().to_string(),
                },
            );
        }
    }
}

/// The sinks by name, then the HTTP sinks' settings.
fn push_sinks(push: &mut impl FnMut(&'static str, String), sinks: &[SinkConfig]) {
    let names: Vec<String> = sinks
        .iter()
        .map(|s| match s {
            SinkConfig::Stdout => "stdout".to_string(),
            SinkConfig::File { path, fsync } => {
                format!("file:{} (fsync {fsync})", path.display())
            }
            SinkConfig::S3(_) => "s3".to_string(),
            SinkConfig::Kafka(k) => format!("kafka:{}", k.topic),
            SinkConfig::Otlp(_) => "otlp".to_string(),
            SinkConfig::Http(_) => "http".to_string(),
        })
        .collect();
    push("sinks", names.join(","));
    for sink in sinks {
        match sink {
            SinkConfig::Otlp(o) => {
                push("otlp_endpoint", o.endpoint.clone());
                if !o.headers.is_empty() {
                    push("otlp_headers", header_names(&o.headers));
                }
                push_tls(push, "otlp", &o.tls);
                push(
                    "otlp_compression",
                    format!("{:?}", o.compression).to_lowercase(),
                );
                push("otlp_timeout", secs(o.timeout));
                push("otlp_body", format!("{:?}", o.body).to_lowercase());
            }
            SinkConfig::Http(h) => {
                push("http_url", h.url.clone());
                push("http_format", format!("{:?}", h.format).to_lowercase());
                if !h.headers.is_empty() {
                    push("http_headers", header_names(&h.headers));
                }
                if let Some(p) = &h.bearer_token_file {
                    push("http_bearer_token_file", p.display().to_string());
                }
                push_tls(push, "http", &h.tls);
                push(
                    "http_compression",
                    format!("{:?}", h.compression).to_lowercase(),
                );
                push("http_timeout", secs(h.timeout));
            }
            _ => {}
        }
    }
}

fn push_ha(push: &mut impl FnMut(&'static str, String), ha: Option<&HaConfig>) {
    push("leader_elect", ha.is_some().to_string());
    if let Some(ha) = ha {
        push("lease_name", ha.lease.name.clone());
        push("lease_namespace", ha.lease.namespace.clone());
        push("lease_duration", secs(ha.lease.lease_duration));
        push("renew_deadline", secs(ha.lease.renew_deadline));
        push("retry_period", secs(ha.lease.retry_period));
        push("identity", ha.lease.identity.clone());
        push("standby_max_bytes", ha.standby_max_bytes.to_string());
    }
}

/// The line format, the filters, batching, logging and the listener.
fn push_pipe(push: &mut impl FnMut(&'static str, String), c: &Config) {
    push(
        "format",
        match c.format {
            OutputFormat::Raw => "raw",
            OutputFormat::Eventrouter => "eventrouter",
        }
        .into(),
    );
    if let Some(name) = &c.cluster_name {
        push("cluster_name", name.clone());
    }
    push("emit_deleted", c.emit_deleted.to_string());
    push("persistence_path", c.persistence_path.display().to_string());
    push("filter_capacity", c.filter_capacity.to_string());
    push("filter_error_rate", c.filter_error_rate.to_string());
    push("generations", c.generations.to_string());
    push("rotation_interval", secs(c.rotation_interval));
    push("sync_interval", secs(c.sync_interval));
    push("batch_size", c.batch_size.to_string());
    push("batch_interval", secs(c.batch_interval));
    push("shutdown_timeout", secs(c.shutdown_timeout));
    push("log_level", c.log_filter.clone());
    push(
        "log_format",
        match c.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
        .into(),
    );
    push("listen", c.listen.map_or("off".into(), |a| a.to_string()));
    push("metrics_by_reason", c.metrics_by_reason.to_string());
}

fn push_enrich(push: &mut impl FnMut(&'static str, String), enrich: Option<&EnrichConfig>) {
    push("enrich", enrich.is_some().to_string());
    if let Some(e) = enrich {
        push("enrich_labels", e.labels.join(","));
        push("enrich_annotations", e.annotations.join(","));
        push("enrich_max_bytes", e.max_bytes.to_string());
        push("enrich_timeout", secs(e.timeout));
        push("enrich_cache_ttl", secs(e.cache_ttl));
        push("enrich_cache_size", e.cache_entries.to_string());
        push("enrich_concurrency", e.concurrency.to_string());
    }
}

/// The S3 options as given, whether or not the sink is on; the rest only with a bucket.
fn push_s3(push: &mut impl FnMut(&'static str, String), s3: &S3Options) {
    for (name, value) in [
        ("uid", &s3.uid),
        ("s3_prefix", &s3.prefix),
        ("s3_bucket", &s3.bucket),
        ("aws_region", &s3.connection.region),
        ("aws_profile", &s3.connection.profile),
        ("s3_endpoint", &s3.connection.endpoint),
        ("s3_storage_class", &s3.storage_class),
    ] {
        if let Some(v) = value {
            push(name, v.clone());
        }
    }
    if s3.bucket.is_none() {
        return;
    }
    push("s3_format", format!("{:?}", s3.format).to_lowercase());
    push(
        "s3_force_path_style",
        s3.connection.force_path_style.to_string(),
    );
    push("s3_timeout", secs(s3.connection.timeout));
    if let Some(sse) = &s3.sse {
        push(
            "s3_sse",
            match sse {
                Sse::S3 => "AES256".into(),
                Sse::Kms { key_id } => {
                    format!("aws:kms {}", key_id.as_deref().unwrap_or("(default key)"))
                }
            },
        );
    }
}

/// The Kafka sink's settings. The password is never shown, wherever it comes from; a property
/// is shown as `KEY=VALUE` with the value hidden when its key names a secret
/// (`sasl.password`, `ssl.key.password`…).
fn push_kafka(push: &mut impl FnMut(&'static str, String), k: &KafkaSettings) {
    push("kafka_brokers", k.brokers.join(","));
    push("kafka_compression", k.compression.as_str().into());
    push("kafka_security_protocol", k.security_protocol().into());
    if let Some(tls) = &k.tls {
        for (name, file) in [
            ("kafka_tls_ca", &tls.ca),
            ("kafka_tls_cert", &tls.cert),
            ("kafka_tls_file_key", &tls.key),
        ] {
            if let Some(path) = file {
                push(name, path.display().to_string());
            }
        }
    }
    if let Some(sasl) = &k.sasl {
        push("kafka_sasl_mechanism", sasl.mechanism.as_str().into());
        push("kafka_sasl_username", sasl.username.clone());
        push(
            "kafka_sasl_login_from",
            match &sasl.password {
                Password::File(path) => path.display().to_string(),
                Password::Env(_) => crate::config::kafka::PASSWORD_ENV.into(),
            },
        );
    }
    for (key, value) in &k.properties {
        push("kafka_property", format!("{key}={}", redact(key, value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_and_url_credentials_are_hidden() {
        assert_eq!(redact("aws_secret_access_key", "abc"), REDACTED);
        assert_eq!(redact("bearer_token", "abc"), REDACTED);
        assert_eq!(
            redact(
                "s3_endpoint",
                "https://AKIA:s3cr3t@minio.local:9000/bucket?X-Amz-Signature=f00"
            ),
            "https://<redacted>@minio.local:9000/bucket?<redacted>"
        );
        assert_eq!(
            redact("s3_endpoint", "http://minio:9000"),
            "http://minio:9000"
        );
        assert_eq!(redact("persistence_path", "/var/lib/x"), "/var/lib/x");
    }
}
