//! `inspect`: what the filters hold, read without the lock and without changing anything.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::DedupError;
use super::filter::{FilterView, estimated_fp_rate};
use super::ring::is_generation_name;

/// One row of `inspect`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GenerationReport {
    pub file: String,
    /// When the generation was created, as an RFC 3339 UTC date (`2027-01-15T08:00:00Z`).
    pub created_at: Option<String>,
    pub age_seconds: Option<u64>,
    pub inserted: Option<u64>,
    pub capacity: Option<u64>,
    pub target_fp_rate: Option<f64>,
    pub fill_ratio: Option<f64>,
    pub estimated_fp_rate: Option<f64>,
    /// `ok`, or `corrupt: <reason>`.
    pub state: String,
}

/// Reads every generation in `dir`, oldest first. Files are read, not mapped, so a file
/// truncated under a running pipe cannot crash the inspector.
pub fn inspect(dir: &Path, now: SystemTime) -> Result<Vec<GenerationReport>, DedupError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DedupError::Io {
        path: dir.to_path_buf(),
        action: "read the persistence directory",
        source,
    })?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| is_generation_name(n))
        .collect();
    names.sort();
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(names
        .into_iter()
        .map(|name| {
            let empty = GenerationReport {
                file: name.clone(),
                created_at: None,
                age_seconds: None,
                inserted: None,
                capacity: None,
                target_fp_rate: None,
                fill_ratio: None,
                estimated_fp_rate: None,
                state: String::new(),
            };
            let bytes = match std::fs::read(dir.join(&name)) {
                Ok(b) => b,
                Err(e) => {
                    return GenerationReport {
                        state: format!("unreadable: {e}"),
                        ..empty
                    };
                }
            };
            match FilterView::parse(&bytes) {
                Ok(view) => {
                    let h = view.header;
                    let fill = view.fill_ratio();
                    GenerationReport {
                        created_at: Some(utc_date(h.created_at)),
                        age_seconds: Some(now.saturating_sub(h.created_at)),
                        inserted: Some(h.inserted),
                        capacity: Some(h.capacity),
                        target_fp_rate: Some(h.error_rate),
                        fill_ratio: Some(fill),
                        estimated_fp_rate: Some(estimated_fp_rate(fill, h.hash_count)),
                        state: "ok".into(),
                        ..empty
                    }
                }
                Err(e) => GenerationReport {
                    state: format!("corrupt: {e}"),
                    ..empty
                },
            }
        })
        .collect())
}

/// The chance that `contains` wrongly reports a new key as seen, over all healthy generations.
pub fn combined_fp_rate(rows: &[GenerationReport]) -> f64 {
    1.0 - rows
        .iter()
        .filter_map(|r| r.estimated_fp_rate)
        .map(|p| 1.0 - p)
        .product::<f64>()
}

/// Unix seconds as an RFC 3339 UTC date. A header's creation time is any 64-bit value a
/// damaged file holds; one past the dates a calendar can print shows as the raw number.
fn utc_date(unix_seconds: u64) -> String {
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .map_or_else(|| format!("@{unix_seconds}"), |t| t.to_string())
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

pub fn render_table(rows: &[GenerationReport]) -> String {
    let mut table: Vec<[String; 8]> = vec![[
        "FILE".into(),
        "CREATED".into(),
        "AGE".into(),
        "INSERTED".into(),
        "CAPACITY".into(),
        "FILL".into(),
        "EST_FP_RATE".into(),
        "STATE".into(),
    ]];
    for r in rows {
        table.push([
            r.file.clone(),
            r.created_at.clone().unwrap_or_else(|| "-".into()),
            r.age_seconds
                .map_or_else(|| "-".into(), |s| format!("{}m{:02}s", s / 60, s % 60)),
            opt(r.inserted),
            opt(r.capacity),
            r.fill_ratio
                .map_or_else(|| "-".into(), |f| format!("{:.2}%", f * 100.0)),
            r.estimated_fp_rate
                .map_or_else(|| "-".into(), |p| format!("{p:.2e}")),
            r.state.clone(),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no filter generations in this directory)\n");
    } else {
        out.push_str(&format!(
            "combined false-positive rate of a check: {:.2e}\n",
            combined_fp_rate(rows)
        ));
    }
    out.trim_end().to_string()
}

pub fn render_json(rows: &[GenerationReport]) -> String {
    serde_json::json!({
        "generations": rows,
        "combined_fp_rate": combined_fp_rate(rows),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::utc_date;

    #[test]
    fn creation_times_print_as_utc_dates_and_impossible_ones_as_numbers() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(utc_date(u64::MAX), format!("@{}", u64::MAX));
    }
}
