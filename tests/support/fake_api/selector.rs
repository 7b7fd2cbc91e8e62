//! `fieldSelector` and `labelSelector` as the API server parses and applies them to events,
//! errors worded as it words them.

use super::store::{FIELDS, Obj};

/// A parsed `fieldSelector` and `labelSelector`.
#[derive(Default, Clone)]
pub(super) struct Selector {
    fields: Vec<(&'static str, bool, String)>,
    labels: Vec<LabelReq>,
}

#[derive(Clone)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Selector {
    pub(super) fn parse(field: Option<&str>, label: Option<&str>) -> Result<Selector, String> {
        let mut s = Selector::default();
        for term in field
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            let (name, eq, value) = if let Some((n, v)) = term.split_once("!=") {
                (n, false, v)
            } else if let Some((n, v)) = term.split_once("==") {
                (n, true, v)
            } else if let Some((n, v)) = term.split_once('=') {
                (n, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            let known = FIELDS
                .iter()
                .find(|(f, _)| *f == name.trim())
                .map(|(f, _)| *f)
                .ok_or_else(|| format!("field label not supported: {}", name.trim()))?;
            s.fields.push((known, eq, value.trim().to_string()));
        }
        for term in split_label_terms(label.unwrap_or_default()) {
            let term = term.trim();
            let req = if let Some((k, rest)) = term.split_once(" notin ") {
                LabelReq::NotIn(k.trim().into(), set_values(rest)?)
            } else if let Some((k, rest)) = term.split_once(" in ") {
                LabelReq::In(k.trim().into(), set_values(rest)?)
            } else if let Some((k, v)) = term.split_once("!=") {
                LabelReq::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some(k) = term.strip_prefix('!') {
                LabelReq::Absent(k.trim().into())
            } else {
                LabelReq::Exists(term.into())
            };
            s.labels.push(req);
        }
        Ok(s)
    }

    /// The selector of a request to a namespace's events: its own terms and the namespace's.
    pub(super) fn within(mut self, namespace: Option<&String>) -> Selector {
        if let Some(ns) = namespace {
            self.fields.push(("metadata.namespace", true, ns.clone()));
        }
        self
    }

    pub(super) fn matches(&self, o: &Obj) -> bool {
        self.fields
            .iter()
            .all(|(f, eq, v)| (o.fields.get(f).map(String::as_str) == Some(v.as_str())) == *eq)
            && self.labels.iter().all(|r| match r {
                LabelReq::Eq(k, v) => o.labels.get(k) == Some(v),
                LabelReq::Ne(k, v) => o.labels.get(k) != Some(v),
                LabelReq::Exists(k) => o.labels.contains_key(k),
                LabelReq::Absent(k) => !o.labels.contains_key(k),
                LabelReq::In(k, vs) => o.labels.get(k).is_some_and(|v| vs.contains(v)),
                LabelReq::NotIn(k, vs) => o.labels.get(k).is_none_or(|v| !vs.contains(v)),
            })
    }
}

/// Commas separate terms, except inside the parentheses of `in (a,b)`.
fn split_label_terms(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

fn set_values(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("invalid label selector set: {rest}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}
