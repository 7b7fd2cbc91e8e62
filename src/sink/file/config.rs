//! The file sink's settings, defaults and validation.

use std::path::PathBuf;

use crate::config::{ConfigError, Get, parse};

/// `--file-fsync`: a batch counts as delivered only once it is on the disk.
pub const FSYNC: bool = true;

/// Why `--sink file` cannot be used without a path (said of the `--sink` value).
pub const MISSING: &str =
    "the file sink needs --destination PATH (or file_sink_dir in the config file)";

/// `--file-fsync`.
pub(crate) fn fsync(get: &Get<'_>) -> Result<bool, ConfigError> {
    match get("file_fsync", &["file_fsync"]) {
        Some(raw) => raw.parse(parse::boolean),
        None => Ok(FSYNC),
    }
}

/// The file to append to: `--destination` unless it is `-` (stdout), else k8stream's
/// `file_sink_dir`, a directory in which one file is appended to.
pub(crate) fn path(get: &Get<'_>) -> Result<Option<PathBuf>, ConfigError> {
    let destination = match get("destination", &["destination"]) {
        Some(raw) if raw.value.trim().is_empty() => {
            return Err(raw.invalid("must be - for stdout, or a file path"));
        }
        Some(raw) => Some(raw.value),
        None => get("file_sink_dir", &["file_sink_dir"]).map(|raw| {
            PathBuf::from(raw.value)
                .join("events.jsonl")
                .to_string_lossy()
                .into_owned()
        }),
    };
    Ok(destination
        .as_deref()
        .filter(|d| *d != "-")
        .map(PathBuf::from))
}
