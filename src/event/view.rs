//! A borrowed view of an Event's members, for every reader that wants more than the key: the
//! protobuf encoder, the counters by reason, the enrichment, and the sinks' mappings (Kafka's
//! key and headers, OTLP's attributes).
//!
//! One pass of the validating scanner finds every member's place; a value is decoded only when
//! it is asked for, and only if it holds escapes. The records themselves keep only the key's
//! fields: a view is built where it is read, so the sources' hot path pays nothing for it.

use std::borrow::Cow;
use std::ops::Range;

use super::EventRecord;
use crate::scan::{self, ObjectRefFields, ScanError, SourceFields, Text, ViewFields};

/// An Event's members, read in place. Every member is `None` when absent, null or not of the
/// expected type (a string where a string belongs, an object where an object does): a reader
/// leaves it empty rather than losing the event.
#[derive(Debug, Clone)]
pub struct EventView<'a> {
    src: &'a str,
    fields: ViewFields,
}

/// Reads a string member's value out of `src`.
fn text<'a>(src: &'a str, t: &Option<Text>) -> Option<Cow<'a, str>> {
    t.as_ref().map(|t| t.value(src))
}

impl<'a> EventView<'a> {
    /// Scans `text`, one JSON object holding an Event.
    pub fn parse(text: &'a str) -> Result<Self, ScanError> {
        Ok(EventView {
            src: text,
            fields: scan::event_view(text)?,
        })
    }

    /// The view of a record's Event. Its text was validated when the record was built, so the
    /// scan cannot fail; if it did, every member reads as absent.
    pub fn of(record: &'a EventRecord) -> Self {
        let text = record.raw.get();
        Self::parse(text).unwrap_or(EventView {
            src: text,
            fields: ViewFields::default(),
        })
    }

    pub fn name(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.name)
    }
    pub fn namespace(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.namespace)
    }
    /// `metadata.uid`.
    pub fn uid(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.uid)
    }
    pub fn resource_version(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.resource_version)
    }
    pub fn creation_timestamp(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.creation_timestamp)
    }
    pub fn reason(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.reason)
    }
    pub fn message(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.message)
    }
    /// `type`: `Normal`, `Warning`…
    pub fn event_type(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.event_type)
    }
    pub fn action(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.action)
    }
    pub fn reporting_component(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.reporting_component)
    }
    pub fn reporting_instance(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.reporting_instance)
    }
    pub fn first_timestamp(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.first_timestamp)
    }
    pub fn last_timestamp(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.last_timestamp)
    }
    pub fn event_time(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.fields.event_time)
    }

    /// `count` as written, when it is a number (not necessarily a positive integer).
    pub fn count(&self) -> Option<&'a str> {
        self.fields.count.clone().map(|r| &self.src[r])
    }

    /// `involvedObject`, when it is an object.
    pub fn involved_object(&self) -> Option<ObjectRef<'_>> {
        self.object_ref(&self.fields.involved_object)
    }

    /// `regarding`, events.k8s.io's name for the involved object.
    pub fn regarding(&self) -> Option<ObjectRef<'_>> {
        self.object_ref(&self.fields.regarding)
    }

    /// `source`, when it is an object.
    pub fn source(&self) -> Option<Source<'_>> {
        self.fields.source.as_ref().map(|fields| Source {
            src: self.src,
            fields,
        })
    }

    fn object_ref<'v>(&'v self, fields: &'v Option<ObjectRefFields>) -> Option<ObjectRef<'v>> {
        fields.as_ref().map(|fields| ObjectRef {
            src: self.src,
            fields,
        })
    }
}

/// An object reference inside an Event (`involvedObject`, `regarding`).
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'v> {
    src: &'v str,
    fields: &'v ObjectRefFields,
}

impl<'v> ObjectRef<'v> {
    pub fn api_version(&self) -> Option<Cow<'v, str>> {
        text(self.src, &self.fields.api_version)
    }
    pub fn kind(&self) -> Option<Cow<'v, str>> {
        text(self.src, &self.fields.kind)
    }
    pub fn namespace(&self) -> Option<Cow<'v, str>> {
        text(self.src, &self.fields.namespace)
    }
    pub fn name(&self) -> Option<Cow<'v, str>> {
        text(self.src, &self.fields.name)
    }
    pub fn uid(&self) -> Option<Cow<'v, str>> {
        text(self.src, &self.fields.uid)
    }
    pub fn resource_version(&self) -> Option<Cow<'v, str>> {
        text(self.src, &self.fields.resource_version)
    }
    pub fn field_path(&self) -> Option<Cow<'v, str>> {
        text(self.src, &self.fields.field_path)
    }
}

/// An Event's `source`: the component and host that reported it.
#[derive(Debug, Clone, Copy)]
pub struct Source<'v> {
    src: &'v str,
    fields: &'v SourceFields,
}

impl<'v> Source<'v> {
    pub fn component(&self) -> Option<Cow<'v, str>> {
        text(self.src, &self.fields.component)
    }
    pub fn host(&self) -> Option<Cow<'v, str>> {
        text(self.src, &self.fields.host)
    }
}

/// A view of one encoded line: the Event it carries (inside eventrouter's wrapper or not) and
/// the members the encoders add around it.
#[derive(Debug, Clone)]
pub struct LineView<'a> {
    src: &'a str,
    event: EventView<'a>,
    cluster: Option<Text>,
    enrichment: Option<Range<usize>>,
}

impl<'a> LineView<'a> {
    /// Scans a line as the encoders write it. eventrouter's wrapper (`verb` a string, `event`
    /// an object) is read inside; any other object is read as the Event itself.
    pub fn parse(line: &'a str) -> Result<Self, ScanError> {
        let fields = scan::line(line)?;
        let event = match fields.wrapped {
            Some(wrapped) if fields.verb => wrapped,
            _ => fields.top,
        };
        Ok(LineView {
            src: line,
            event: EventView {
                src: line,
                fields: event,
            },
            cluster: fields.cluster,
            enrichment: fields.enrichment,
        })
    }

    /// [`LineView::parse`] of bytes, which must be UTF-8.
    pub fn parse_bytes(line: &'a [u8]) -> Option<Self> {
        Self::parse(std::str::from_utf8(line).ok()?).ok()
    }

    pub fn event(&self) -> &EventView<'a> {
        &self.event
    }

    /// The line's `cluster` member (`--cluster-name`).
    pub fn cluster(&self) -> Option<Cow<'a, str>> {
        text(self.src, &self.cluster)
    }

    /// The line's `enrichment` object, as written.
    pub fn enrichment(&self) -> Option<&'a str> {
        self.enrichment.clone().map(|r| &self.src[r])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Change;

    #[test]
    fn a_records_view_reads_its_members_and_decodes_escapes() {
        let json = r#"{"metadata":{"name":"p.1","namespace":"d","uid":"u-1"},"involvedObject":{"kind":"Pod","name":"p\u0041"},"reason":"Pulled","source":{"host":"n1"},"count":3}"#;
        let rec = EventRecord::from_json(Change::Added, json).unwrap();
        let v = EventView::of(&rec);
        assert_eq!(v.uid().as_deref(), Some("u-1"));
        assert_eq!(v.reason().as_deref(), Some("Pulled"));
        assert_eq!(v.message(), None);
        let involved = v.involved_object().unwrap();
        assert_eq!(involved.name().as_deref(), Some("pA"));
        assert_eq!(involved.namespace(), None);
        assert!(v.regarding().is_none());
        assert_eq!(v.source().unwrap().host().as_deref(), Some("n1"));
        assert_eq!(v.count(), Some("3"));
    }

    #[test]
    fn a_line_view_reads_the_wrapped_event_and_the_added_members() {
        let event = r#"{"metadata":{"name":"a"},"reason":"R","type":"Warning"}"#;
        let line = format!(
            r#"{{"verb":"ADDED","cluster":"c\u0031","event":{event},"old_event":{{"reason":"old"}},"enrichment":{{"node":{{"name":"n"}}}}}}"#
        );
        let v = LineView::parse(&line).unwrap();
        assert_eq!(v.event().reason().as_deref(), Some("R"));
        assert_eq!(v.cluster().as_deref(), Some("c1"));
        assert_eq!(v.enrichment(), Some(r#"{"node":{"name":"n"}}"#));
        let v = LineView::parse(event).unwrap();
        assert_eq!(v.event().event_type().as_deref(), Some("Warning"));
        assert_eq!((v.cluster(), v.enrichment()), (None, None));
        assert!(LineView::parse_bytes(b"not json").is_none());
        assert!(LineView::parse_bytes(b"{\"reason\":\"\xff\"}").is_none());
    }
}
