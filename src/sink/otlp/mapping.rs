//! Turns a batch's JSON lines into OTLP log records laid out as the OpenTelemetry Collector's
//! `k8s_events` receiver lays them out, so queries and dashboards built on it work unchanged.
//!
//! The receiver's layout (`k8s_event_to_logdata.go` in opentelemetry-collector-contrib):
//! - resource attributes `k8s.node.name` (the Event's `source.host`), `k8s.object.kind`,
//!   `k8s.object.name`, `k8s.object.uid`, `k8s.object.fieldpath`, `k8s.object.api_version`,
//!   `k8s.object.resource_version` (the involved object's);
//! - the record's time: `eventTime`, else `lastTimestamp`, else `firstTimestamp`;
//! - severity by `type`: Normal INFO, Warning WARN, Error ERROR, Critical FATAL, the type as text;
//! - body: the message;
//! - record attributes `k8s.event.reason`, `k8s.event.action`, `k8s.event.start_time` (the
//!   creation timestamp as Go prints a time: `2020-02-20 08:39:03 +0000 UTC`), `k8s.event.name`,
//!   `k8s.event.uid`, `k8s.namespace.name` (the involved object's namespace) and, when `count`
//!   is not 0, `k8s.event.count`.
//!
//! Like the receiver, string attributes are present even when empty. On top of it:
//! `k8s.cluster.name` from the line's `cluster` member (`--cluster-name`), the `enrichment`
//! member as resource attributes, the observed time (when the pipe accepted the batch), and the
//! body may be the whole line instead of the message ([`BodyMode::Event`]).
//!
//! Pure code over bytes: no I/O, so every rule is tested on literal lines.

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value as OtlpValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{Map, Value};

use crate::event::{EventView, LineView};

pub use crate::config::OtlpBody as BodyMode;

/// The instrumentation scope every record is reported under.
pub const SCOPE_NAME: &str = "kube-event-pipe";

/// One `ResourceLogs` per event, as the receiver does: the resource is the involved object, and
/// events of one batch are about many objects.
pub fn export_request(
    lines: &[u8],
    body: BodyMode,
    observed_unix_nano: u64,
) -> ExportLogsServiceRequest {
    let resource_logs = lines
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| resource_logs(line, body, observed_unix_nano))
        .collect();
    ExportLogsServiceRequest { resource_logs }
}

fn resource_logs(line: &[u8], body: BodyMode, observed_unix_nano: u64) -> ResourceLogs {
    let text = String::from_utf8_lossy(line);
    let Some(view) = LineView::parse_bytes(line) else {
        // Lines come from our own encoder, so this does not happen; if it did, the line is
        // still delivered whole rather than dropped.
        let record = LogRecord {
            observed_time_unix_nano: observed_unix_nano,
            body: Some(string_value(text.into_owned())),
            ..Default::default()
        };
        return one_record(Resource::default(), record);
    };
    let event = view.event();
    let event_type = event.event_type().unwrap_or_default();
    let severity = severity(&event_type);
    let body = match body {
        BodyMode::Message => event.message().unwrap_or_default().into_owned(),
        BodyMode::Event => text.trim_end().to_string(),
    };
    let record = LogRecord {
        time_unix_nano: event_time(event),
        observed_time_unix_nano: observed_unix_nano,
        severity_number: severity.map_or(0, |s| s as i32),
        severity_text: if severity.is_some() {
            event_type.into_owned()
        } else {
            String::new()
        },
        body: Some(string_value(body)),
        attributes: record_attributes(event),
        ..Default::default()
    };
    let resource = Resource {
        attributes: resource_attributes(&view),
        ..Default::default()
    };
    one_record(resource, record)
}

/// The `ResourceLogs` of one record under the pipe's instrumentation scope.
fn one_record(resource: Resource, record: LogRecord) -> ResourceLogs {
    let scope = Some(InstrumentationScope {
        name: SCOPE_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    });
    ResourceLogs {
        resource: Some(resource),
        scope_logs: vec![ScopeLogs {
            scope,
            log_records: vec![record],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The resource: the involved object and its node, the cluster, and the enrichment.
fn resource_attributes(line: &LineView<'_>) -> Vec<KeyValue> {
    let event = line.event();
    let involved = event.involved_object();
    let text = |v: Option<Cow<'_, str>>| v.unwrap_or_default().into_owned();
    let host = text(event.source().and_then(|s| s.host()));
    let kind = text(involved.and_then(|o| o.kind()));
    let mut resource = vec![
        kv_str("k8s.node.name", &host),
        kv_str("k8s.object.kind", &kind),
        kv_str("k8s.object.name", &text(involved.and_then(|o| o.name()))),
        kv_str("k8s.object.uid", &text(involved.and_then(|o| o.uid()))),
        kv_str(
            "k8s.object.fieldpath",
            &text(involved.and_then(|o| o.field_path())),
        ),
        kv_str(
            "k8s.object.api_version",
            &text(involved.and_then(|o| o.api_version())),
        ),
        kv_str(
            "k8s.object.resource_version",
            &text(involved.and_then(|o| o.resource_version())),
        ),
    ];
    if let Some(cluster) = line.cluster() {
        resource.push(kv_str("k8s.cluster.name", &cluster));
    }
    // The enrichment stage wrote this object itself; one that cannot be read adds nothing.
    if let Some(enrichment) = line
        .enrichment()
        .and_then(|e| serde_json::from_str::<Map<String, Value>>(e).ok())
    {
        enrichment_attributes(&enrichment, &kind, &mut resource);
    }
    resource
}

/// The record's attributes: the event's reason, action, start, name and uid, the involved
/// object's namespace, and the count when it is not 0.
fn record_attributes(event: &EventView<'_>) -> Vec<KeyValue> {
    let or_empty = |v: Option<Cow<'_, str>>| v.unwrap_or_default().into_owned();
    let namespace = event
        .involved_object()
        .and_then(|o| o.namespace())
        .unwrap_or_default();
    let start = event.creation_timestamp().unwrap_or_default();
    let mut attributes = vec![
        kv_str("k8s.event.reason", &or_empty(event.reason())),
        kv_str("k8s.event.action", &or_empty(event.action())),
        kv_str("k8s.event.start_time", &go_time_string(&start)),
        kv_str("k8s.event.name", &or_empty(event.name())),
        kv_str("k8s.event.uid", &or_empty(event.uid())),
        kv_str("k8s.namespace.name", &namespace),
    ];
    // As serde_json reads a number as an i64: integers only, in range.
    if let Some(count) = event
        .count()
        .and_then(|c| c.parse::<i64>().ok())
        .filter(|c| *c != 0)
    {
        attributes.push(KeyValue {
            key: "k8s.event.count".into(),
            value: Some(AnyValue {
                value: Some(OtlpValue::IntValue(count)),
            }),
            ..Default::default()
        });
    }
    attributes
}

/// Severity by `type`, as the receiver maps it.
fn severity(event_type: &str) -> Option<SeverityNumber> {
    match event_type.to_ascii_lowercase().as_str() {
        "normal" => Some(SeverityNumber::Info),
        "warning" => Some(SeverityNumber::Warn),
        "error" => Some(SeverityNumber::Error),
        "critical" => Some(SeverityNumber::Fatal),
        _ => None,
    }
}

/// The record's time: `eventTime`, else `lastTimestamp`, else `firstTimestamp` (the first that
/// is a readable time), else 0.
fn event_time(event: &EventView<'_>) -> u64 {
    [
        event.event_time(),
        event.last_timestamp(),
        event.first_timestamp(),
    ]
    .into_iter()
    .flatten()
    .find_map(|t| unix_nanos(&t))
    .unwrap_or(0)
}

/// The `enrichment` member as resource attributes, named as the OpenTelemetry semantic
/// conventions name them for the object's kind: `k8s.pod.label.<key>`,
/// `k8s.pod.annotation.<key>`, the owner as `k8s.<owner kind>.name` (`k8s.replicaset.name`),
/// the node as `k8s.node.name` (when `source.host` left it empty) and `k8s.node.address`.
fn enrichment_attributes(enrichment: &Map<String, Value>, kind: &str, out: &mut Vec<KeyValue>) {
    let kind = if kind.is_empty() {
        "object".to_string()
    } else {
        kind.to_ascii_lowercase()
    };
    for (member, infix) in [("labels", "label"), ("annotations", "annotation")] {
        if let Some(Value::Object(map)) = enrichment.get(member) {
            for (key, value) in map {
                if let Value::String(value) = value {
                    out.push(kv_str(&format!("k8s.{kind}.{infix}.{key}"), value));
                }
            }
        }
    }
    if let Some(owner) = enrichment.get("owner") {
        let owner_kind = text_at(Some(owner), "kind");
        let owner_name = text_at(Some(owner), "name");
        if !owner_kind.is_empty() && !owner_name.is_empty() {
            out.push(kv_str(
                &format!("k8s.{}.name", owner_kind.to_ascii_lowercase()),
                owner_name,
            ));
        }
    }
    if let Some(node) = enrichment.get("node") {
        let name = text_at(Some(node), "name");
        if !name.is_empty() {
            match out.iter_mut().find(|kv| kv.key == "k8s.node.name") {
                Some(existing) if is_empty_string(existing) => {
                    *existing = kv_str("k8s.node.name", name);
                }
                Some(_) => {}
                None => out.push(kv_str("k8s.node.name", name)),
            }
        }
        let address = text_at(Some(node), "address");
        if !address.is_empty() {
            out.push(kv_str("k8s.node.address", address));
        }
    }
    if enrichment.get("truncated") == Some(&Value::Bool(true)) {
        out.push(KeyValue {
            key: "kube_event_pipe.enrichment.truncated".into(),
            value: Some(AnyValue {
                value: Some(OtlpValue::BoolValue(true)),
            }),
            ..Default::default()
        });
    }
}

fn is_empty_string(kv: &KeyValue) -> bool {
    matches!(
        kv.value.as_ref().and_then(|v| v.value.as_ref()),
        Some(OtlpValue::StringValue(s)) if s.is_empty()
    )
}

fn string_value(text: String) -> AnyValue {
    AnyValue {
        value: Some(OtlpValue::StringValue(text)),
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(string_value(value.to_string())),
        ..Default::default()
    }
}

/// A string member of an object, or "" when it is absent, null or not a string (as Go's zero
/// value).
fn text_at<'a>(object: Option<&'a Value>, member: &str) -> &'a str {
    object
        .and_then(|o| o.get(member))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Nanoseconds since the epoch of an RFC 3339 time (`2020-02-20T08:39:03.935951Z`).
fn unix_nanos(text: &str) -> Option<u64> {
    let ts: jiff::Timestamp = text.parse().ok()?;
    u64::try_from(ts.as_nanosecond()).ok()
}

/// A time as Go's `time.Time.String()` prints it for a UTC time, which is what the receiver
/// puts in `k8s.event.start_time`: `2006-01-02 15:04:05.999999999 +0000 UTC` with trailing
/// zeros of the fraction (and the dot) left out. An absent or unreadable time is Go's zero
/// time, as the receiver would print it.
pub fn go_time_string(text: &str) -> String {
    let Ok(ts) = text.parse::<jiff::Timestamp>() else {
        return "0001-01-01 00:00:00 +0000 UTC".to_string();
    };
    let civil = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    let mut out = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        civil.year(),
        civil.month(),
        civil.day(),
        civil.hour(),
        civil.minute(),
        civil.second()
    );
    let nanos = civil.subsec_nanosecond();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
        kvs.iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(OtlpValue::StringValue(s)) => s.clone(),
                    Some(OtlpValue::IntValue(i)) => format!("int:{i}"),
                    Some(OtlpValue::BoolValue(b)) => format!("bool:{b}"),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    fn get<'a>(list: &'a [(String, String)], key: &str) -> Option<&'a str> {
        list.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    const OLD_STYLE: &str = r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"web-1.17f3a","namespace":"shop","uid":"e-uid","creationTimestamp":"2020-02-20T08:39:03Z"},"involvedObject":{"kind":"Pod","namespace":"shop","name":"web-1","uid":"p-uid","apiVersion":"v1","resourceVersion":"42","fieldPath":"spec.containers{web}"},"reason":"BackOff","message":"Back-off restarting","source":{"component":"kubelet","host":"node-3"},"firstTimestamp":"2020-02-20T08:39:03Z","lastTimestamp":"2020-02-20T08:40:00Z","count":7,"type":"Warning"}"#;

    const NEW_STYLE: &str = r#"{"cluster":"prod","action":"Binding","eventTime":"2020-02-20T08:39:03.935951Z","firstTimestamp":null,"involvedObject":{"apiVersion":"v1","kind":"Pod","name":"p","namespace":"default","resourceVersion":"535840","uid":"u"},"kind":"Event","lastTimestamp":null,"message":"Successfully assigned","metadata":{"creationTimestamp":"2020-02-20T08:39:03Z","name":"p.15f","namespace":"default","uid":"19b4"},"reason":"Scheduled","reportingComponent":"default-scheduler","source":{"component":"default-scheduler"},"type":"Normal","enrichment":{"labels":{"app":"web"},"annotations":{"team":"payments"},"owner":{"kind":"ReplicaSet","name":"web-7d9f"},"node":{"name":"node-3","address":"10.0.0.3"},"truncated":true}}"#;

    #[test]
    fn an_old_style_event_is_laid_out_as_the_k8s_events_receiver_does() {
        let lines = format!("{OLD_STYLE}\n");
        let req = export_request(lines.as_bytes(), BodyMode::Message, 5);
        assert_eq!(req.resource_logs.len(), 1);
        let rl = &req.resource_logs[0];
        let resource = attrs(&rl.resource.as_ref().unwrap().attributes);
        assert_eq!(
            resource,
            vec![
                ("k8s.node.name".into(), "node-3".into()),
                ("k8s.object.kind".into(), "Pod".into()),
                ("k8s.object.name".into(), "web-1".into()),
                ("k8s.object.uid".into(), "p-uid".into()),
                ("k8s.object.fieldpath".into(), "spec.containers{web}".into()),
                ("k8s.object.api_version".into(), "v1".into()),
                ("k8s.object.resource_version".into(), "42".into()),
            ]
        );
        let record = &rl.scope_logs[0].log_records[0];
        assert_eq!(
            attrs(&record.attributes),
            vec![
                ("k8s.event.reason".into(), "BackOff".into()),
                ("k8s.event.action".into(), "".into()),
                (
                    "k8s.event.start_time".into(),
                    "2020-02-20 08:39:03 +0000 UTC".into()
                ),
                ("k8s.event.name".into(), "web-1.17f3a".into()),
                ("k8s.event.uid".into(), "e-uid".into()),
                ("k8s.namespace.name".into(), "shop".into()),
                ("k8s.event.count".into(), "int:7".into()),
            ]
        );
        assert_eq!(record.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(record.severity_text, "Warning");
        // lastTimestamp, since there is no eventTime.
        assert_eq!(record.time_unix_nano, 1_582_188_000_000_000_000);
        assert_eq!(record.observed_time_unix_nano, 5);
        assert_eq!(
            record.body,
            Some(string_value("Back-off restarting".into()))
        );
    }

    #[test]
    fn a_new_style_event_takes_its_event_time_and_has_no_count() {
        let req = export_request(NEW_STYLE.as_bytes(), BodyMode::Event, 0);
        let rl = &req.resource_logs[0];
        let record = &rl.scope_logs[0].log_records[0];
        assert_eq!(record.time_unix_nano, 1_582_187_943_935_951_000);
        assert_eq!(record.severity_number, SeverityNumber::Info as i32);
        let attributes = attrs(&record.attributes);
        assert_eq!(get(&attributes, "k8s.event.action"), Some("Binding"));
        assert_eq!(get(&attributes, "k8s.event.count"), None);
        // The body is the whole line.
        assert_eq!(record.body, Some(string_value(NEW_STYLE.into())));
        let resource = attrs(&rl.resource.as_ref().unwrap().attributes);
        assert_eq!(get(&resource, "k8s.cluster.name"), Some("prod"));
        assert_eq!(get(&resource, "k8s.pod.label.app"), Some("web"));
        assert_eq!(get(&resource, "k8s.pod.annotation.team"), Some("payments"));
        assert_eq!(get(&resource, "k8s.replicaset.name"), Some("web-7d9f"));
        // source.host was empty: the enrichment's node fills it.
        assert_eq!(get(&resource, "k8s.node.name"), Some("node-3"));
        assert_eq!(
            resource
                .iter()
                .filter(|(k, _)| k == "k8s.node.name")
                .count(),
            1
        );
        assert_eq!(get(&resource, "k8s.node.address"), Some("10.0.0.3"));
        assert_eq!(
            get(&resource, "kube_event_pipe.enrichment.truncated"),
            Some("bool:true")
        );
    }

    #[test]
    fn an_eventrouter_line_maps_its_event() {
        let line = format!(
            r#"{{"cluster":"c","verb":"UPDATED","event":{OLD_STYLE},"old_event":{OLD_STYLE}}}"#
        );
        let req = export_request(line.as_bytes(), BodyMode::Message, 0);
        let rl = &req.resource_logs[0];
        let resource = attrs(&rl.resource.as_ref().unwrap().attributes);
        assert_eq!(get(&resource, "k8s.object.name"), Some("web-1"));
        assert_eq!(get(&resource, "k8s.cluster.name"), Some("c"));
        let record = &rl.scope_logs[0].log_records[0];
        assert_eq!(
            get(&attrs(&record.attributes), "k8s.event.reason"),
            Some("BackOff")
        );
    }

    #[test]
    fn a_line_that_is_not_json_is_delivered_whole() {
        let req = export_request(b"not json\n\n", BodyMode::Message, 0);
        assert_eq!(req.resource_logs.len(), 1);
        let record = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.body, Some(string_value("not json".into())));
    }

    #[test]
    fn times_print_as_go_prints_them() {
        assert_eq!(
            go_time_string("2020-02-20T08:39:03Z"),
            "2020-02-20 08:39:03 +0000 UTC"
        );
        assert_eq!(
            go_time_string("2020-02-20T08:39:03.500Z"),
            "2020-02-20 08:39:03.5 +0000 UTC"
        );
        assert_eq!(go_time_string(""), "0001-01-01 00:00:00 +0000 UTC");
    }
}
