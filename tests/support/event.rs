//! core/v1 Events for the tests to feed the pipe, built in one place so a test states only how
//! its events differ from an ordinary one.

use serde_json::{Value, json};

/// When the events happened, unless a test removes the timestamps.
pub const EVENT_TIME: &str = "2026-11-23T10:00:00Z";

/// The `lastObservedTime` of a series.
pub const SERIES_TIME: &str = "2026-11-23T10:00:00.000000Z";

/// An Event under construction. [`EventBuilder::new`] starts from what the kubelet writes when a
/// container starts; [`EventBuilder::bare`] from nothing but the identity.
#[derive(Clone, Debug)]
pub struct EventBuilder {
    namespace: String,
    name: String,
    /// apiVersion, kind and name of the involved object, in the event's namespace.
    involved: Option<(String, String, String)>,
    reason: Option<String>,
    message: Option<String>,
    /// component and, if any, host.
    source: Option<(String, Option<String>)>,
    timestamps: bool,
    count: Option<u64>,
    series: Option<u64>,
    event_type: Option<String>,
    /// reportingComponent and reportingInstance.
    reporting: Option<(String, String)>,
}

impl EventBuilder {
    /// A Normal `Started` event from the kubelet on node-1 about the pod `{name}-pod`, counted
    /// once, first and last seen at [`EVENT_TIME`].
    pub fn new(namespace: &str, name: &str) -> EventBuilder {
        EventBuilder {
            involved: Some(("v1".into(), "Pod".into(), format!("{name}-pod"))),
            reason: Some("Started".into()),
            message: Some(format!("Started container for {name}")),
            source: Some(("kubelet".into(), Some("node-1".into()))),
            timestamps: true,
            count: Some(1),
            event_type: Some("Normal".into()),
            ..EventBuilder::bare(namespace, name)
        }
    }

    /// Only `kind`, `apiVersion` and the name and namespace: what the pipe needs to key it.
    pub fn bare(namespace: &str, name: &str) -> EventBuilder {
        EventBuilder {
            namespace: namespace.into(),
            name: name.into(),
            involved: None,
            reason: None,
            message: None,
            source: None,
            timestamps: false,
            count: None,
            series: None,
            event_type: None,
            reporting: None,
        }
    }

    /// The object the event is about, in the event's namespace.
    pub fn involved(mut self, api_version: &str, kind: &str, name: &str) -> Self {
        self.involved = Some((api_version.into(), kind.into(), name.into()));
        self
    }

    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// `Normal` or `Warning`.
    pub fn event_type(mut self, event_type: &str) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    pub fn count(mut self, count: u64) -> Self {
        self.count = Some(count);
        self
    }

    /// No `count` at all, as new-style events that repeat in `series` have.
    pub fn no_count(mut self) -> Self {
        self.count = None;
        self
    }

    /// A new-style repetition: `series.count`, last observed at [`SERIES_TIME`].
    pub fn series(mut self, count: u64) -> Self {
        self.series = Some(count);
        self
    }

    /// `source.component`, and `source.host` if given.
    pub fn source(mut self, component: &str, host: Option<&str>) -> Self {
        self.source = Some((component.into(), host.map(Into::into)));
        self
    }

    /// `reportingComponent` and `reportingInstance`.
    pub fn reported_by(mut self, component: &str, instance: &str) -> Self {
        self.reporting = Some((component.into(), instance.into()));
        self
    }

    /// No `firstTimestamp` and `lastTimestamp`.
    pub fn no_timestamps(mut self) -> Self {
        self.timestamps = false;
        self
    }

    pub fn build(self) -> Value {
        let mut e = json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": self.name, "namespace": self.namespace},
        });
        if let Some((api_version, kind, name)) = self.involved {
            e["involvedObject"] = json!({"kind": kind, "namespace": self.namespace,
                                         "name": name, "apiVersion": api_version});
        }
        if let Some(reason) = self.reason {
            e["reason"] = json!(reason);
        }
        if let Some(message) = self.message {
            e["message"] = json!(message);
        }
        if let Some((component, host)) = self.source {
            e["source"] = match host {
                Some(host) => json!({"component": component, "host": host}),
                None => json!({"component": component}),
            };
        }
        if self.timestamps {
            e["firstTimestamp"] = json!(EVENT_TIME);
            e["lastTimestamp"] = json!(EVENT_TIME);
        }
        if let Some(count) = self.count {
            e["count"] = json!(count);
        }
        if let Some(count) = self.series {
            e["series"] = json!({"count": count, "lastObservedTime": SERIES_TIME});
        }
        if let Some(event_type) = self.event_type {
            e["type"] = json!(event_type);
        }
        if let Some((component, instance)) = self.reporting {
            e["reportingComponent"] = json!(component);
            e["reportingInstance"] = json!(instance);
        }
        e
    }

    /// The event as one line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        self.clone().build().to_string()
    }
}
