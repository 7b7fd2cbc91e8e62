//! `--sink`: the sinks named, each with the settings its own `config` module validated.

use super::{ConfigError, Get, S3Options, SinkConfig, parse};
use crate::sink::{file, kafka, otlp, s3, webhook};

/// The sinks in the order named (default: the file when a destination is given, else
/// stdout), and the S3 options as given, which the startup line shows whether or not the S3
/// sink is on. Every sink's settings are validated whether or not it is on, so a typo is caught
/// before it is switched on.
pub(super) fn sinks(get: &Get<'_>) -> Result<(Vec<SinkConfig>, S3Options), ConfigError> {
    let fsync = file::config::fsync(get)?;
    let file_path = file::config::path(get)?;
    let kafka = kafka::config::settings(get, std::env::var(kafka::config::PASSWORD_ENV).ok())?;
    let otlp = otlp::config::settings(get)?;
    let webhook = webhook::config::settings(get)?;
    let s3 = s3::config::options(get)?;
    let Some(raw) = get("sink", &["sink"]) else {
        let only = match file_path {
            Some(path) => SinkConfig::File { path, fsync },
            None => SinkConfig::Stdout,
        };
        return Ok((vec![only], s3));
    };
    let mut sinks = Vec::new();
    // A missing bucket is reported after the other sinks' problems, as it always was.
    let mut no_bucket = false;
    for name in raw.parse(parse::sink_list)? {
        let missing = |what: &str| ConfigError::Conflict(what.to_string());
        sinks.push(match name {
            "stdout" => SinkConfig::Stdout,
            "file" => match &file_path {
                Some(path) => SinkConfig::File {
                    path: path.clone(),
                    fsync,
                },
                None => return Err(raw.invalid(file::config::MISSING)),
            },
            "kafka" => match &kafka {
                Some(settings) => SinkConfig::Kafka(Box::new(settings.clone())),
                None => return Err(raw.invalid(kafka::config::MISSING)),
            },
            "otlp" => match &otlp {
                Some(settings) => SinkConfig::Otlp(settings.clone()),
                None => return Err(missing(otlp::config::MISSING)),
            },
            "http" => match &webhook {
                Some(settings) => SinkConfig::Http(settings.clone()),
                None => return Err(missing(webhook::config::MISSING)),
            },
            _ => match s3.settings() {
                Some(settings) => SinkConfig::S3(Box::new(settings)),
                None => {
                    no_bucket = true;
                    continue;
                }
            },
        });
    }
    if no_bucket {
        return Err(ConfigError::Conflict(s3::config::MISSING.into()));
    }
    Ok((sinks, s3))
}
