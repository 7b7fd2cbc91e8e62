//! The text records are read from and share: a received buffer, an Event's JSON within it, and
//! where a field's value is in that JSON.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;

use crate::scan::{self, EventFields};

/// Text received in one piece (a list page, a watch line, a replay value), checked once to be
/// UTF-8, that the records read from it share instead of each copying its part.
///
/// Cloning or slicing it takes a reference count, not a copy: the records of a page or of a
/// watch read are slices of the buffer the bytes arrived in, with no allocation of their own.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedText(Bytes);

impl SharedText {
    pub fn new(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(SharedText(bytes))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: checked in `new` (or built from a `str`), and only ever sliced at char
        // boundaries (`slice` checks them).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The text at `range`, sharing this buffer. Panics if the range does not fall on char
    /// boundaries, as slicing a `str` would.
    pub(super) fn slice(&self, range: Range<usize>) -> SharedText {
        let text = self.as_str();
        assert!(text.is_char_boundary(range.start) && text.is_char_boundary(range.end));
        SharedText(self.0.slice(range))
    }

    /// Where `part`, a slice of this text, starts in it; `None` if it is not one.
    pub(super) fn offset_of(&self, part: &str) -> Option<usize> {
        let at = (part.as_ptr() as usize).checked_sub(self.0.as_ptr() as usize)?;
        (at + part.len() <= self.0.len()).then_some(at)
    }
}

impl From<String> for SharedText {
    fn from(text: String) -> Self {
        SharedText(Bytes::from(text.into_bytes()))
    }
}

impl From<&str> for SharedText {
    fn from(text: &str) -> Self {
        SharedText(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl fmt::Debug for SharedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An Event object's JSON text, exactly as received (or with the `kind` and `apiVersion` a list
/// item lacks put back), checked to be valid JSON by the scanner that read its fields.
///
/// It shares the buffer it was read from: whoever keeps one for long (the prior versions for
/// `old_event`, a standby's held events) takes a [`RawJson::detached`] copy, so that one small
/// event does not keep a whole list page in memory.
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(pub(super) SharedText);

impl RawJson {
    pub fn get(&self) -> &str {
        self.0.as_str()
    }

    /// The same text in a buffer of its own.
    pub fn detached(&self) -> RawJson {
        RawJson(SharedText::from(self.get()))
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

/// Where a string field's value is: in the record's raw text, or, in the rare case that the
/// JSON spells it with escapes, decoded on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FieldText {
    At(Range<usize>),
    Decoded(Box<str>),
}

impl FieldText {
    /// The field from the scanner's `text` inside `src`, relative to `base` (where the record's
    /// raw text starts in `src`).
    pub(super) fn new(text: &scan::Text, src: &str, base: usize) -> Self {
        match text.value(src) {
            Cow::Borrowed(_) => FieldText::At(text.range.start - base..text.range.end - base),
            Cow::Owned(decoded) => FieldText::Decoded(decoded.into_boxed_str()),
        }
    }

    pub(super) fn get<'a>(&'a self, raw: &'a RawJson) -> &'a str {
        match self {
            FieldText::At(r) => &raw.get()[r.clone()],
            FieldText::Decoded(s) => s,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            FieldText::At(r) => r.is_empty(),
            FieldText::Decoded(s) => s.is_empty(),
        }
    }
}

/// The start of a list item's object once its type fields are put back.
const TYPE_META: &str = "{\"kind\":\"Event\",\"apiVersion\":\"v1\"";

/// Puts back the `kind` and `apiVersion` that the items of a list page lack (the list carries
/// them) and watch objects have, so that lines of both look the same to whoever reads them.
///
/// The items are written one after another into one new buffer for the page, with the two
/// fields first, as a watch writes them; `items`' spans and fields are moved to point into it.
/// One copy and one allocation per page, where a copy per item would cost an allocation each.
/// An item with either field of its own is copied as it is rather than given a duplicate key.
pub fn with_type_meta(page: &str, items: &mut [(Range<usize>, EventFields)]) -> SharedText {
    let room: usize = items
        .iter()
        .map(|(span, _)| span.len() + TYPE_META.len() + 1)
        .sum();
    let mut out = String::with_capacity(room);
    for (span, fields) in items.iter_mut() {
        let object = &page[span.clone()];
        let start = out.len();
        let moved_from = if !fields.has_type_meta && object.starts_with('{') {
            let rest = &object[1..];
            out.push_str(TYPE_META);
            if !rest.trim_start().starts_with('}') {
                out.push(',');
            }
            out.push_str(rest);
            // Where the object's byte 1 (just past its `{`) went.
            span.start + 1
        } else {
            out.push_str(object);
            span.start
        };
        let moved_to = out.len() - (span.end - moved_from);
        fields.rebase(moved_from, moved_to);
        *span = start..out.len();
    }
    SharedText::from(out)
}
