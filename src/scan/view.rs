//! The view pass: the same validating scan, reading every member that a reader of an Event
//! takes, for `event::view`. Apart from the sources' pass so that building a record, done for
//! every event received, finds only what the key needs.

use std::ops::Range;

use super::{ScanError, Scanner, Text};

/// Where an object reference's string members are (`involvedObject`, `regarding`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectRefFields {
    pub api_version: Option<Text>,
    pub kind: Option<Text>,
    pub namespace: Option<Text>,
    pub name: Option<Text>,
    pub uid: Option<Text>,
    pub resource_version: Option<Text>,
    pub field_path: Option<Text>,
}

/// Where `source`'s members are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceFields {
    pub component: Option<Text>,
    pub host: Option<Text>,
}

/// Every member that a reader of an Event takes (the encoders, the sinks' mappings, the
/// enrichment, the counters by reason), for a view over the text.
///
/// Not read by the sources' pass ([`super::event`]), which finds only what the key needs: a record is
/// built for every event received, a view only where a reader wants more than the key. String
/// members hold `None` when absent or not a string, objects when not an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewFields {
    pub name: Option<Text>,
    pub namespace: Option<Text>,
    pub uid: Option<Text>,
    pub resource_version: Option<Text>,
    pub creation_timestamp: Option<Text>,
    pub involved_object: Option<ObjectRefFields>,
    /// events.k8s.io's name for the involved object.
    pub regarding: Option<ObjectRefFields>,
    pub source: Option<SourceFields>,
    pub reason: Option<Text>,
    pub message: Option<Text>,
    pub event_type: Option<Text>,
    pub action: Option<Text>,
    pub reporting_component: Option<Text>,
    pub reporting_instance: Option<Text>,
    pub first_timestamp: Option<Text>,
    pub last_timestamp: Option<Text>,
    pub event_time: Option<Text>,
    /// `count` as written, if it is a number.
    pub count: Option<Range<usize>>,
}

/// An encoded line: the Event's members at its top level, and what the encoders add around
/// it (eventrouter's wrapper, the cluster name, the enrichment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineFields {
    /// The members of the line's own object, read as an Event's.
    pub top: ViewFields,
    /// Whether `verb` is a string: with `wrapped`, the line is eventrouter's wrapper.
    pub verb: bool,
    /// The `event` member, when it is an object.
    pub wrapped: Option<ViewFields>,
    pub cluster: Option<Text>,
    /// The `enrichment` member's span, when it is an object.
    pub enrichment: Option<Range<usize>>,
}

/// Scans `text` as one JSON object holding an Event, reading every member a view offers.
pub fn event_view(text: &str) -> Result<ViewFields, ScanError> {
    let mut s = Scanner::new(text);
    s.ws();
    let fields = s.view_object()?;
    s.end()?;
    Ok(fields)
}

/// Scans an encoded line: an Event, or eventrouter's `{"verb", "event", "old_event"}`, with
/// the `cluster` and `enrichment` members the encoders add.
pub fn line(text: &str) -> Result<LineFields, ScanError> {
    let mut s = Scanner::new(text);
    s.ws();
    let mut out = LineFields::default();
    s.object(0, |s, key| {
        match key {
            b"verb" if s.at_string() => {
                s.string()?;
                out.verb = true;
            }
            b"event" if s.at_object() => out.wrapped = Some(s.view_object()?),
            b"cluster" if s.at_string() => out.cluster = Some(s.string()?),
            b"enrichment" if s.at_object() => {
                let start = s.i;
                s.value(1)?;
                out.enrichment = Some(start..s.i);
            }
            _ => s.view_member(&mut out.top, key)?,
        }
        Ok(())
    })?;
    s.end()?;
    Ok(out)
}

impl Scanner<'_> {
    /// An Event object read for a view: see [`ViewFields`].
    fn view_object(&mut self) -> Result<ViewFields, ScanError> {
        let mut f = ViewFields::default();
        self.object(0, |s, key| s.view_member(&mut f, key))?;
        Ok(f)
    }

    /// One member of an Event's object, at depth 1, for a view.
    fn view_member(&mut self, f: &mut ViewFields, key: &[u8]) -> Result<(), ScanError> {
        let object = self.at_object();
        let slot = match key {
            b"metadata" if object => {
                return self.object(1, |s, key| {
                    let slot = match key {
                        b"name" => &mut f.name,
                        b"namespace" => &mut f.namespace,
                        b"uid" => &mut f.uid,
                        b"resourceVersion" => &mut f.resource_version,
                        b"creationTimestamp" => &mut f.creation_timestamp,
                        _ => return s.value(2),
                    };
                    *slot = s.string_or_skip(2)?;
                    Ok(())
                });
            }
            b"involvedObject" if object => {
                f.involved_object = Some(self.object_ref()?);
                return Ok(());
            }
            b"regarding" if object => {
                f.regarding = Some(self.object_ref()?);
                return Ok(());
            }
            b"source" if object => {
                let mut source = SourceFields::default();
                self.object(1, |s, key| {
                    let slot = match key {
                        b"component" => &mut source.component,
                        b"host" => &mut source.host,
                        _ => return s.value(2),
                    };
                    *slot = s.string_or_skip(2)?;
                    Ok(())
                })?;
                f.source = Some(source);
                return Ok(());
            }
            b"count" => {
                f.count = self.number_or_skip(1)?;
                return Ok(());
            }
            b"reason" => &mut f.reason,
            b"message" => &mut f.message,
            b"type" => &mut f.event_type,
            b"action" => &mut f.action,
            b"reportingComponent" => &mut f.reporting_component,
            b"reportingInstance" => &mut f.reporting_instance,
            b"firstTimestamp" => &mut f.first_timestamp,
            b"lastTimestamp" => &mut f.last_timestamp,
            b"eventTime" => &mut f.event_time,
            _ => return self.value(1),
        };
        *slot = self.string_or_skip(1)?;
        Ok(())
    }

    /// An object reference's members, at depth 1.
    fn object_ref(&mut self) -> Result<ObjectRefFields, ScanError> {
        let mut o = ObjectRefFields::default();
        self.object(1, |s, key| {
            let slot = match key {
                b"apiVersion" => &mut o.api_version,
                b"kind" => &mut o.kind,
                b"namespace" => &mut o.namespace,
                b"name" => &mut o.name,
                b"uid" => &mut o.uid,
                b"resourceVersion" => &mut o.resource_version,
                b"fieldPath" => &mut o.field_path,
                _ => return s.value(2),
            };
            *slot = s.string_or_skip(2)?;
            Ok(())
        })?;
        Ok(o)
    }

    /// A string's contents, or `None` (after skipping it) for any other value.
    fn string_or_skip(&mut self, depth: usize) -> Result<Option<Text>, ScanError> {
        if self.at_string() {
            self.string().map(Some)
        } else {
            self.value(depth).map(|()| None)
        }
    }
}
