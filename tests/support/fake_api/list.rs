//! Lists of events: consistent snapshots at one resourceVersion, paginated by `limit` and
//! `continue` tokens that expire with compaction.

use std::collections::HashMap;

use axum::body::Body;
use base64::Engine as _;
use hyper::Response;

use super::Inner;
use super::http::{json_response, status};
use super::selector::Selector;
use super::store::Store;

pub(super) fn list_response(
    inner: &Inner,
    q: &HashMap<String, String>,
    sel: &Selector,
) -> Response<Body> {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<u64>().ok())
        .filter(|&l| l > 0);
    let mut s = inner.store();
    s.stats.list_requests += 1;
    s.stats.list_limits.push(limit);
    let (rv, after) = match read_point(&s, q) {
        Ok(point) => point,
        Err(refusal) => return *refusal,
    };
    let range = match &after {
        Some(k) => s.objects.range::<(String, String), _>((
            std::ops::Bound::Excluded(k),
            std::ops::Bound::Unbounded,
        )),
        None => s.objects.range::<(String, String), _>(..),
    };
    let mut items = String::new();
    let mut count = 0u64;
    let mut last_key = None;
    let mut more = false;
    for (key, versions) in range {
        let Some(obj) = Store::at(versions, rv) else {
            continue;
        };
        if !sel.matches(obj) {
            continue;
        }
        if limit.is_some_and(|l| count == l) {
            more = true;
            break;
        }
        if count > 0 {
            items.push(',');
        }
        obj.list_item(&mut items);
        count += 1;
        last_key = Some(key.clone());
    }
    let mut meta = format!("\"resourceVersion\":\"{rv}\"");
    if more && let Some((ns, name)) = last_key {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{rv}\u{1}{ns}\u{1}{name}"));
        meta.push_str(&format!(",\"continue\":\"{token}\""));
    }
    drop(s);
    json_response(format!(
        "{{\"kind\":\"EventList\",\"apiVersion\":\"v1\",\"metadata\":{{{meta}}},\"items\":[{items}]}}"
    ))
}

/// The resourceVersion a list reads at, and the key it continues after, if any.
type ReadPoint = (u64, Option<(String, String)>);

/// The resourceVersion a list reads at and the key it continues after: from the `continue`
/// token, or from `resourceVersion` and `resourceVersionMatch`, or the head.
fn read_point(s: &Store, q: &HashMap<String, String>) -> Result<ReadPoint, Box<Response<Body>>> {
    Ok(match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((rv, ns, name)) = decoded.as_deref().and_then(|d| {
                let mut parts = d.splitn(3, '\u{1}');
                Some((
                    parts.next()?.parse::<u64>().ok()?,
                    parts.next()?,
                    parts.next()?,
                ))
            }) else {
                return Err(Box::new(status(
                    400,
                    "BadRequest",
                    "continue key is not valid",
                )));
            };
            if rv < s.compacted {
                return Err(Box::new(status(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                )));
            }
            (rv, Some((ns.to_string(), name.to_string())))
        }
        None => {
            let asked = q.get("resourceVersion").and_then(|v| v.parse::<u64>().ok());
            match (asked, q.get("resourceVersionMatch").map(String::as_str)) {
                (Some(v), Some("Exact")) if v < s.compacted => {
                    return Err(Box::new(status(
                        410,
                        "Expired",
                        &format!("too old resource version: {v} ({})", s.compacted),
                    )));
                }
                (Some(v), Some("Exact")) => (v, None),
                (Some(v), _) if v > s.head => {
                    return Err(Box::new(status(
                        504,
                        "Timeout",
                        &format!("Too large resource version: {v}, current: {}", s.head),
                    )));
                }
                _ => (s.head, None),
            }
        }
    })
}
